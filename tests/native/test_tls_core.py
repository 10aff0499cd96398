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
