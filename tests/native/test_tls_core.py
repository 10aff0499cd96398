"""ferroloop-only: the native fields of ferroloop's SSLProtocol behave as the attributes they
replace, and the garbage collector sees through them.

That TLS connections behave as the stdlib's is checked on both loops in
tests/conformance/test_tls.py; these check what only ferroloop's class has.
"""

import asyncio
import gc
import ssl
import weakref

import ferroloop
import pytest
from ferroloop._tls import SSLProtocol


@pytest.fixture
def loop():
    lp = ferroloop.new_event_loop()
    yield lp
    lp.close()


def _protocol(loop, app):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return SSLProtocol(loop, app, ctx, None, server_hostname="localhost")


def test_fields_read_back_what_was_set(loop):
    proto = _protocol(loop, asyncio.Protocol())
    assert proto._state is asyncio.sslproto.SSLProtocolState.UNWRAPPED
    assert proto._write_buffer_size == 0 and proto._app_reading_paused is False
    assert isinstance(proto._incoming, ssl.MemoryBIO) and isinstance(proto._sslobj, ssl.SSLObject)
    marker = object()
    proto._transport = marker
    assert proto._transport is marker
    proto._write_buffer_size = 1 << 70  # too big for the native fast path; still an attribute
    assert proto._write_buffer_size == 1 << 70
    proto._outgoing_high_water = 2.5
    assert proto._outgoing_high_water == 2.5
    assert "_state" not in vars(proto)  # held natively, not in the instance dict


class App(asyncio.Protocol):
    back = None


def test_cycle_through_native_fields_is_collected(loop):
    app = App()
    proto = _protocol(loop, app)
    app.back = proto  # proto -> _app_protocol -> app -> proto
    proto._transport = [proto]  # and one through another native field
    ref = weakref.ref(proto)
    del proto, app
    gc.collect()
    assert ref() is None


def test_start_tls_makes_the_native_protocol(loop):
    # Connections upgraded with start_tls take the same native path as ssl= connections.
    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client_ctx)

    async def main():
        async def handler(reader, writer):
            await writer.start_tls(server_ctx)
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await writer.start_tls(client_ctx, server_hostname="localhost")
        protocol_type = type(writer.transport._ssl_protocol)
        writer.write(b"upgraded\n")
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return protocol_type, line

    protocol_type, line = loop.run_until_complete(main())
    assert protocol_type is SSLProtocol
    assert line == b"UPGRADED\n"
