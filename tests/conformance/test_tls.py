"""TLS transports: ssl= on the connection/server creators, start_tls, certificate verification,
ALPN, the ssl extra info, close_notify shutdown, the handshake and shutdown timeouts, flow control
through TLS and the streams API over TLS."""

import asyncio
import os
import socket
import ssl
import time

import pytest
from _netutil import wait
from _sockutil import TrackedSocket, closing, listener
from _tlsutil import SERVER_NAME, make_certs

# Not a multiple of any TLS record or read size.
BIG = os.urandom(1 << 16) * 64 + b"tail"


@pytest.fixture(scope="module")
def certs():
    return make_certs()


@pytest.fixture
def failed_server_handshakes(handler_calls, loop):
    """For tests whose server side fails its handshake: in debug mode the loop reports that to its
    exception handler (the stdlib does, from the task that accepted the connection); nothing else
    may be reported."""
    yield handler_calls
    messages = {ctx.get("message") for ctx in handler_calls}
    if loop.get_debug():
        assert messages <= {"Error on transport creation for incoming connection"}, handler_calls
    else:
        assert not handler_calls, handler_calls


class Peer(asyncio.Protocol):
    """Records every callback; futures for connection_made and connection_lost."""

    def __init__(self, echo=False):
        loop = asyncio.get_running_loop()
        self.echo = echo
        self.transport = None
        self.events = []
        self.data = bytearray()
        self.made = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")
        self.made.set_result(transport)
        if self.echo and self.data:
            # start_tls: data may arrive before the caller hands the protocol its transport.
            transport.write(bytes(self.data))

    def data_received(self, data):
        if not self.data:
            self.events.append("data")
        self.data += data
        if self.echo and self.transport is not None:
            self.transport.write(data)

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)

    async def wait_for_data(self, size, timeout=10):
        async with asyncio.timeout(timeout):
            while len(self.data) < size:
                await asyncio.sleep(0.005)


class Collect:
    """A protocol factory remembering the protocols it made."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.made = []

    def __call__(self):
        proto = Peer(**self.kwargs)
        self.made.append(proto)
        return proto

    async def first(self, timeout=10):
        async with asyncio.timeout(timeout):
            while not self.made:
                await asyncio.sleep(0.005)
        await asyncio.wait_for(self.made[0].made, timeout)
        return self.made[0]


async def _tls_server(loop, certs, factory, **kwargs):
    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=certs.server_context(), **kwargs)
    return server, server.sockets[0].getsockname()[1]


async def _close_server(server):
    server.close()
    await server.wait_closed()


async def _tls_streams(certs, handler, **server_kwargs):
    """A streams server over TLS running ``handler``, and a client connected to it with
    verification: (server, client reader, client writer)."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=certs.server_context(), **server_kwargs)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=certs.client_context(), server_hostname=SERVER_NAME
    )
    return server, reader, writer


async def _connected(loop, certs, client_factory=Peer, *, echo=False, server_hostname=SERVER_NAME):
    """A TLS server and one client connected to it: (server, client transport, client protocol,
    server-side protocol)."""
    servers = Collect(echo=echo)
    server, port = await _tls_server(loop, certs, servers)
    transport, client = await loop.create_connection(
        client_factory, "127.0.0.1", port, ssl=certs.client_context(), server_hostname=server_hostname
    )
    server_side = await servers.first()
    return server, transport, client, server_side


# ---------------------------------------------------------------------------
# Connection creators with ssl=
# ---------------------------------------------------------------------------


def test_create_connection_to_create_server(loop, certs):
    async def main():
        servers = Collect(echo=True)
        server, port = await _tls_server(loop, certs, servers)
        transport, client = await loop.create_connection(
            Peer, "127.0.0.1", port, ssl=certs.client_context(), server_hostname=SERVER_NAME
        )
        assert client.events == ["made"]
        transport.write(b"hello ")
        transport.writelines([b"over ", b"tls"])
        await client.wait_for_data(14)
        transport.close()
        assert await asyncio.wait_for(client.lost, 10) is None
        await _close_server(server)
        return bytes(client.data), isinstance(transport, asyncio.Transport)

    assert loop.run_until_complete(main()) == (b"hello over tls", True)


def test_server_hostname_defaults_to_host(loop, certs):
    # The certificate names 127.0.0.1 as well, so verifying against the host succeeds.
    async def main():
        server, port = await _tls_server(loop, certs, Collect())
        transport, _ = await loop.create_connection(Peer, "127.0.0.1", port, ssl=certs.client_context())
        name = transport.get_extra_info("ssl_object").server_hostname
        transport.close()
        await _close_server(server)
        return name

    assert loop.run_until_complete(main()) == "127.0.0.1"


def test_ssl_true_uses_default_context(loop, certs, failed_server_handshakes):
    # ssl=True means the system's default verification: the test CA is unknown to it.
    async def main():
        server, port = await _tls_server(loop, certs, Collect())
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                await loop.create_connection(Peer, "127.0.0.1", port, ssl=True, server_hostname=SERVER_NAME)
        finally:
            await _close_server(server)

    loop.run_until_complete(main())


async def _ping(server, connecting):
    """Awaits ``connecting`` (a client connection to the echoing ``server``), writes b"ping",
    waits for the echo, closes the connection and the server; returns what came back."""
    transport, client = await connecting
    transport.write(b"ping")
    await client.wait_for_data(4)
    transport.close()
    await client.lost
    await _close_server(server)
    return bytes(client.data)


def _over(loop, certs, sock):
    """A verified TLS connection over the connected ``sock``."""
    return loop.create_connection(Peer, sock=sock, ssl=certs.client_context(), server_hostname=SERVER_NAME)


def test_create_connection_over_given_socket(loop, certs):
    async def main():
        server, port = await _tls_server(loop, certs, Collect(echo=True))
        sock = socket.create_connection(("127.0.0.1", port))
        with pytest.raises(ValueError):
            # Without a host there is nothing to verify against.
            await loop.create_connection(Peer, sock=sock, ssl=certs.client_context())
        return await _ping(server, _over(loop, certs, sock))

    assert loop.run_until_complete(main()) == b"ping"


def test_socket_subclass_reads_and_writes_through_its_methods(loop, certs):
    async def main():
        server, port = await _tls_server(loop, certs, Collect(echo=True))
        sock = TrackedSocket()
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        return await _ping(server, _over(loop, certs, sock)), sorted(sock.used)

    assert loop.run_until_complete(main()) == (b"ping", ["recv", "send"])


def test_unix_connection_and_server(loop, certs, tmp_path):
    path = str(tmp_path / "tls.sock")

    async def main():
        servers = Collect(echo=True)
        server = await loop.create_unix_server(servers, path, ssl=certs.server_context())
        with pytest.raises(ValueError):
            await loop.create_unix_connection(Peer, path, ssl=certs.client_context())
        transport, client = await loop.create_unix_connection(
            Peer, path, ssl=certs.client_context(), server_hostname=SERVER_NAME
        )
        transport.write(b"unix tls")
        await client.wait_for_data(8)
        server_transport = (await servers.first()).transport
        info = (
            isinstance(transport.get_extra_info("ssl_object"), ssl.SSLObject),
            server_transport.get_extra_info("sslcontext").verify_mode,
        )
        transport.close()
        await client.lost
        await _close_server(server)
        return bytes(client.data), info

    assert loop.run_until_complete(main()) == (b"unix tls", (True, ssl.CERT_NONE))


def test_connect_accepted_socket(loop, certs):
    async def main():
        with listener() as lsock:
            port = lsock.getsockname()[1]
            connecting = asyncio.ensure_future(
                loop.create_connection(Peer, "127.0.0.1", port, ssl=certs.client_context())
            )
            accepted, _ = await loop.sock_accept(lsock)
        server_transport, server = await loop.connect_accepted_socket(
            lambda: Peer(echo=True), accepted, ssl=certs.server_context()
        )
        transport, client = await connecting
        assert server.events == ["made"]
        transport.write(b"accepted")
        await client.wait_for_data(8)
        transport.close()
        assert await asyncio.wait_for(server.lost, 10) is None
        return bytes(client.data), server_transport.get_extra_info("ssl_object").server_side

    assert loop.run_until_complete(main()) == (b"accepted", True)


def test_ssl_only_arguments_need_ssl(loop):
    async def main():
        errors = []
        with listener() as lsock:
            port = lsock.getsockname()[1]
            for kwargs in (
                {"server_hostname": SERVER_NAME},
                {"ssl_handshake_timeout": 1.0},
                {"ssl_shutdown_timeout": 1.0},
            ):
                with pytest.raises(ValueError) as info:
                    await loop.create_connection(Peer, "127.0.0.1", port, **kwargs)
                errors.append(info.type)
            for kwargs in ({"ssl_handshake_timeout": 1.0}, {"ssl_shutdown_timeout": 1.0}):
                with pytest.raises(ValueError):
                    await loop.create_server(Peer, "127.0.0.1", 0, **kwargs)
                errors.append(ValueError)
        return errors

    assert loop.run_until_complete(main()) == [ValueError] * 5


# ---------------------------------------------------------------------------
# start_tls
# ---------------------------------------------------------------------------


class StartTLSServer(asyncio.Protocol):
    """Plain text until a STARTTLS line, then upgrades itself and echoes over TLS."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.upgraded = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        assert data == b"STARTTLS\n"
        # Stop reading before answering, so that the ClientHello reaches the TLS layer.
        self.transport.pause_reading()
        self.transport.write(b"OK\n")
        asyncio.ensure_future(self._upgrade())

    async def _upgrade(self):
        loop = asyncio.get_running_loop()
        tls_proto = Peer(echo=True)
        try:
            tls = await loop.start_tls(self.transport, tls_proto, self.ctx, server_side=True)
        except BaseException as exc:
            self.upgraded.set_exception(exc)
            raise
        tls_proto.connection_made(tls)
        self.upgraded.set_result((self.transport, tls, tls_proto))

    def connection_lost(self, exc):
        pass


def test_start_tls_both_sides(loop, certs):
    async def main():
        servers = []

        def factory():
            servers.append(StartTLSServer(certs.server_context()))
            return servers[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        plain, client = await loop.create_connection(Peer, "127.0.0.1", port)
        plain.write(b"STARTTLS\n")
        await client.wait_for_data(3)
        assert bytes(client.data) == b"OK\n"
        assert plain.get_extra_info("ssl_object") is None
        client.data.clear()
        tls = await loop.start_tls(plain, client, certs.client_context(), server_hostname=SERVER_NAME)
        server_plain, server_tls, server_proto = await asyncio.wait_for(servers[0].upgraded, 10)
        tls.write(b"secret")
        await client.wait_for_data(6)
        result = (
            bytes(client.data),
            bytes(server_proto.data),
            tls is not plain,
            tls.get_extra_info("ssl_object").server_side,
            server_tls.get_extra_info("ssl_object").server_side,
            tls.get_protocol() is client,
        )
        tls.close()
        assert await asyncio.wait_for(server_proto.lost, 10) is None
        await _close_server(server)
        return result

    assert loop.run_until_complete(main()) == (b"secret", b"secret", True, False, True, True)


def test_stream_writer_start_tls(loop, certs):
    async def main():
        servers = []

        def factory():
            servers.append(StartTLSServer(certs.server_context()))
            return servers[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"OK\n"
        await writer.start_tls(certs.client_context(), server_hostname=SERVER_NAME)
        writer.write(b"line over tls\n")
        line = await asyncio.wait_for(reader.readline(), 10)
        ssl_object = writer.get_extra_info("ssl_object")
        writer.close()
        await writer.wait_closed()
        await _close_server(server)
        return line, isinstance(ssl_object, ssl.SSLObject)

    assert loop.run_until_complete(main()) == (b"line over tls\n", True)


# ---------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["hostname_mismatch", "unknown_ca"])
def test_verification_failure(loop, certs, case, failed_server_handshakes):
    async def main():
        server, port = await _tls_server(loop, certs, Collect())
        if case == "hostname_mismatch":
            ctx, name = certs.client_context(), "other.example"
        else:
            # Verification on, but no CA trusted at all.
            ctx, name = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), SERVER_NAME
        try:
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                await loop.create_connection(Peer, "127.0.0.1", port, ssl=ctx, server_hostname=name)
        finally:
            await _close_server(server)
        return info.value.verify_code

    # X509_V_ERR_HOSTNAME_MISMATCH / X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert loop.run_until_complete(main()) == {"hostname_mismatch": 62, "unknown_ca": 20}[case]


def test_verification_disabled(loop, certs):
    async def main():
        server, port = await _tls_server(loop, certs, Collect())
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        transport, _ = await loop.create_connection(
            Peer, "127.0.0.1", port, ssl=ctx, server_hostname="x.example"
        )
        # Nothing was verified, so the decoded peer certificate is not available.
        peercert = transport.get_extra_info("peercert")
        transport.close()
        await _close_server(server)
        return peercert

    assert loop.run_until_complete(main()) == {}


def test_client_certificate_required_and_given(loop, certs):
    async def main():
        servers = Collect(echo=True)
        server = await loop.create_server(
            servers, "127.0.0.1", 0, ssl=certs.server_context(require_client_cert=True)
        )
        port = server.sockets[0].getsockname()[1]
        transport, client = await loop.create_connection(
            Peer, "127.0.0.1", port, ssl=certs.client_context(with_cert=True), server_hostname=SERVER_NAME
        )
        transport.write(b"x")
        await client.wait_for_data(1)
        peer = (await servers.first()).transport.get_extra_info("peercert")
        transport.close()
        await _close_server(server)
        return peer["subjectAltName"]

    assert loop.run_until_complete(main()) == (("email", "client@example.org"),)


def test_client_certificate_required_but_missing(loop, certs, failed_server_handshakes):
    async def main():
        handled = []

        async def handler(reader, writer):
            handled.append(writer)
            writer.write(b"welcome\n")

        server = await asyncio.start_server(
            handler, "127.0.0.1", 0, ssl=certs.server_context(require_client_cert=True)
        )
        port = server.sockets[0].getsockname()[1]
        try:
            # With TLS 1.3 the client finishes its side of the handshake before the server
            # rejects it, so the refusal may show up on connect or on the first read.
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=certs.client_context(), server_hostname=SERVER_NAME
            )
            received = await asyncio.wait_for(reader.read(), 10)
            writer.close()
        except OSError:
            received = b""
        await asyncio.sleep(0.05)
        await _close_server(server)
        return received, handled

    assert loop.run_until_complete(main()) == (b"", [])


# ---------------------------------------------------------------------------
# ALPN and extra info
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "expected"),
    [(["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1"), (["spdy/3"], None), (None, None)],
)
def test_alpn(loop, certs, offered, expected):
    async def main():
        servers = Collect()
        server = await loop.create_server(
            servers, "127.0.0.1", 0, ssl=certs.server_context(alpn=["h2", "http/1.1"])
        )
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(
            Peer, "127.0.0.1", port, ssl=certs.client_context(alpn=offered), server_hostname=SERVER_NAME
        )
        server_transport = (await servers.first()).transport
        chosen = (
            transport.get_extra_info("ssl_object").selected_alpn_protocol(),
            server_transport.get_extra_info("ssl_object").selected_alpn_protocol(),
        )
        transport.close()
        await _close_server(server)
        return chosen

    assert loop.run_until_complete(main()) == (expected, expected)


def test_extra_info(loop, certs):
    client_ctx = certs.client_context()
    server_ctx = certs.server_context()

    async def main():
        servers = Collect()
        server = await loop.create_server(servers, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(
            Peer, "127.0.0.1", port, ssl=client_ctx, server_hostname=SERVER_NAME
        )
        server_transport = (await servers.first()).transport
        sslobj = transport.get_extra_info("ssl_object")
        info = {
            "sslcontext": transport.get_extra_info("sslcontext") is client_ctx,
            "server sslcontext": server_transport.get_extra_info("sslcontext") is server_ctx,
            "ssl_object": type(sslobj),
            "cipher": transport.get_extra_info("cipher") == sslobj.cipher() and len(sslobj.cipher()) == 3,
            "compression": transport.get_extra_info("compression") == sslobj.compression(),
            "peercert": ("DNS", SERVER_NAME) in transport.get_extra_info("peercert")["subjectAltName"],
            "server peercert": server_transport.get_extra_info("peercert"),
            "peername": transport.get_extra_info("peername") == ("127.0.0.1", port),
            "socket": transport.get_extra_info("socket").family,
            "missing": transport.get_extra_info("no such key", "dflt"),
            "version": sslobj.version(),
        }
        transport.close()
        await _close_server(server)
        return info

    info = loop.run_until_complete(main())
    assert info == {
        "sslcontext": True,
        "server sslcontext": True,
        "ssl_object": ssl.SSLObject,
        "cipher": True,
        "compression": True,
        "peercert": True,
        "server peercert": None,
        "peername": True,
        "socket": socket.AF_INET,
        "missing": "dflt",
        "version": "TLSv1.3",
    }


def test_ssl_transport_has_no_half_close(loop, certs):
    async def main():
        server, port = await _tls_server(loop, certs, Collect())
        transport, _ = await loop.create_connection(Peer, "127.0.0.1", port, ssl=certs.client_context())
        try:
            assert transport.can_write_eof() is False
            with pytest.raises(NotImplementedError):
                transport.write_eof()
        finally:
            transport.close()
            await _close_server(server)

    loop.run_until_complete(main())


# ---------------------------------------------------------------------------
# Shutdown and timeouts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("closer", ["client", "server"])
def test_close_notify_shutdown(loop, certs, closer):
    async def main():
        servers = Collect()
        server, port = await _tls_server(loop, certs, servers)
        transport, client = await loop.create_connection(
            Peer, "127.0.0.1", port, ssl=certs.client_context(), ssl_shutdown_timeout=5.0
        )
        server_side = await servers.first()
        transport.write(b"last words")
        await server_side.wait_for_data(10)
        closing_side, other = (client, server_side) if closer == "client" else (server_side, client)
        closing_side.transport.close()
        lost = await asyncio.wait_for(asyncio.gather(closing_side.lost, other.lost), 10)
        await _close_server(server)
        return lost, closing_side.events, other.events

    lost, closing_events, other_events = loop.run_until_complete(main())
    assert lost == [None, None]
    assert closing_events[0] == "made" and closing_events[-1] == "lost"
    assert other_events[-2:] == ["eof", "lost"]


def test_abort_skips_close_notify(loop, certs):
    async def main():
        server, transport, client, server_side = await _connected(loop, certs, server_hostname=None)
        transport.write(b"partial")
        await server_side.wait_for_data(7)
        transport.abort()
        assert transport.is_closing()
        lost = await asyncio.wait_for(asyncio.gather(client.lost, server_side.lost), 10)
        await _close_server(server)
        return lost, client.events, server_side.events

    # The TCP EOF without close_notify reaches the peer as a plain EOF.
    assert loop.run_until_complete(main()) == (
        [None, None],
        ["made", "lost"],
        ["made", "data", "eof", "lost"],
    )


def test_close_flushes_pending_writes(loop, certs):
    async def main():
        server, transport, client, server_side = await _connected(loop, certs, server_hostname=None)
        transport.write(BIG)
        transport.close()
        assert transport.is_closing()
        transport.write(b"after close")  # dropped, not an error
        exc = await asyncio.wait_for(server_side.lost, 20)
        await _close_server(server)
        return exc, server_side.data == BIG, server_side.events

    assert loop.run_until_complete(main()) == (None, True, ["made", "data", "eof", "lost"])


def test_pause_and_resume_reading(loop, certs):
    async def main():
        server, transport, client, server_side = await _connected(loop, certs, server_hostname=None)
        server_side.transport.pause_reading()
        assert not server_side.transport.is_reading()
        transport.write(b"held back")
        await asyncio.sleep(0.2)
        held = bytes(server_side.data)
        server_side.transport.resume_reading()
        assert server_side.transport.is_reading()
        await server_side.wait_for_data(9)
        transport.close()
        await client.lost
        await _close_server(server)
        return held, bytes(server_side.data)

    assert loop.run_until_complete(main()) == (b"", b"held back")


def test_handshake_timeout_client(loop):
    # The peer accepts the TCP connection but never says anything.
    async def main():
        with listener() as lsock:
            start = time.monotonic()
            with pytest.raises(ConnectionAbortedError):
                await loop.create_connection(
                    Peer, *lsock.getsockname(), ssl=ssl.create_default_context(), ssl_handshake_timeout=0.2
                )
            return time.monotonic() - start

    assert 0.15 <= loop.run_until_complete(main()) < 5


def test_handshake_timeout_server(loop, certs, failed_server_handshakes):
    # A plain TCP client that never starts the handshake is dropped after the timeout, and
    # the application protocol never sees a connection.
    async def main():
        servers = Collect()
        server, port = await _tls_server(loop, certs, servers, ssl_handshake_timeout=0.2)
        with closing(socket.create_connection(("127.0.0.1", port))) as (sock,):
            sock.setblocking(False)
            start = time.monotonic()
            received = await asyncio.wait_for(loop.sock_recv(sock, 100), 10)
            elapsed = time.monotonic() - start
        await _close_server(server)
        return received, elapsed, [proto.events for proto in servers.made]

    received, elapsed, events = loop.run_until_complete(main())
    assert received == b""
    assert 0.15 <= elapsed < 5
    assert events in ([], [[]])


def test_handshake_timeout_must_be_positive(loop, certs):
    async def main():
        with listener() as lsock:
            with pytest.raises(ValueError):
                await loop.create_connection(
                    Peer, *lsock.getsockname(), ssl=certs.client_context(), ssl_handshake_timeout=0
                )

    loop.run_until_complete(main())


def test_shutdown_timeout_when_peer_never_answers(loop, certs):
    # The server stops reading, so it never answers the client's close_notify.
    async def main():
        servers = Collect()
        server, port = await _tls_server(loop, certs, servers, ssl_shutdown_timeout=5.0)
        transport, client = await loop.create_connection(
            Peer, "127.0.0.1", port, ssl=certs.client_context(), ssl_shutdown_timeout=0.3
        )
        server_side = await servers.first()
        server_side.transport.pause_reading()
        start = time.monotonic()
        transport.close()
        exc = await asyncio.wait_for(client.lost, 10)
        elapsed = time.monotonic() - start
        server_side.transport.abort()
        await _close_server(server)
        return exc, elapsed

    exc, elapsed = loop.run_until_complete(main())
    assert isinstance(exc, TimeoutError)
    assert 0.25 <= elapsed < 5


# ---------------------------------------------------------------------------
# Flow control and large payloads
# ---------------------------------------------------------------------------


class FlowClient(Peer):
    def __init__(self):
        super().__init__()
        self.paused = asyncio.get_running_loop().create_future()
        self.resumed = asyncio.get_running_loop().create_future()

    def pause_writing(self):
        self.events.append("pause")
        self.paused.set_result(self.transport.get_write_buffer_size())

    def resume_writing(self):
        self.events.append("resume")
        self.resumed.set_result(self.transport.get_write_buffer_size())


def test_flow_control_through_tls(loop, certs):
    chunk = BIG[: 1 << 16]

    async def main():
        server, transport, client, server_side = await _connected(loop, certs, FlowClient)
        server_side.transport.pause_reading()
        transport.set_write_buffer_limits(high=64 * 1024)
        assert transport.get_write_buffer_limits()[1] == 64 * 1024
        sent = bytearray()
        # The peer reads nothing: once the kernel buffers are full the writes back up.
        while not client.paused.done() and len(sent) < 64 << 20:
            transport.write(chunk)
            sent += chunk
        buffered_when_paused = client.paused.result()
        assert not client.resumed.done()
        server_side.transport.resume_reading()
        buffered_when_resumed = await asyncio.wait_for(client.resumed, 10)
        await server_side.wait_for_data(len(sent))
        transport.close()
        await client.lost
        await _close_server(server)
        return buffered_when_paused, buffered_when_resumed, server_side.data == sent, client.events

    paused, resumed, intact, events = loop.run_until_complete(main())
    assert paused >= 64 * 1024
    assert resumed <= 64 * 1024
    assert intact
    assert events[:3] == ["made", "pause", "resume"] and events[-1] == "lost"


def test_large_payload_echo_streams(loop, certs):
    async def handler(reader, writer):
        size = int(await reader.readline())
        writer.write(await reader.readexactly(size))
        await writer.drain()
        writer.close()

    async def main():
        server, reader, writer = await _tls_streams(certs, handler)
        writer.write(b"%d\n" % len(BIG))
        writer.write(BIG)
        await writer.drain()
        echoed = await asyncio.wait_for(reader.read(), 20)
        writer.close()
        await writer.wait_closed()
        await _close_server(server)
        return echoed

    echoed = loop.run_until_complete(main())
    assert len(echoed) == len(BIG)
    assert echoed == BIG


def test_streams_over_tls(loop, certs):
    async def handler(reader, writer):
        peer_ssl = writer.get_extra_info("ssl_object")
        line = await reader.readline()
        writer.write(line.upper() + peer_ssl.version().encode() + b"\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server, reader, writer = await _tls_streams(certs, handler)
        writer.write(b"hello\n")
        lines = [await reader.readline(), await reader.readline(), await reader.read()]
        writer.close()
        await writer.wait_closed()
        await _close_server(server)
        return lines

    assert loop.run_until_complete(main()) == [b"HELLO\n", b"TLSv1.3\n", b""]


# ---------------------------------------------------------------------------
# Records in the steady state
# ---------------------------------------------------------------------------


def test_many_small_records_arrive_whole_and_in_order(loop, certs):
    # Each write is its own record; many of them arrive in one read of the socket.
    pieces = [b"%05d;" % i for i in range(2000)]

    async def main():
        server, transport, client, server_side = await _connected(loop, certs)
        for piece in pieces:
            transport.write(piece)
        await server_side.wait_for_data(sum(map(len, pieces)))
        transport.close()
        await client.lost
        await server_side.lost
        await _close_server(server)
        return bytes(server_side.data), server_side.events

    data, events = loop.run_until_complete(main())
    assert data == b"".join(pieces)
    assert events == ["made", "data", "eof", "lost"]


def test_data_then_close_notify_in_one_burst(loop, certs):
    # The server writes and closes at once: the client sees all of the data, then EOF.
    async def main():
        async def on_connect(reader, writer):
            writer.write(b"x" * 100_000)
            writer.close()

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=certs.server_context())
        port = server.sockets[0].getsockname()[1]
        transport, client = await loop.create_connection(
            Peer, "127.0.0.1", port, ssl=certs.client_context(), server_hostname=SERVER_NAME
        )
        exc = await asyncio.wait_for(client.lost, 10)
        await _close_server(server)
        return len(client.data), client.events, exc

    size, events, exc = loop.run_until_complete(main())
    assert size == 100_000
    assert events[0] == "made" and events[-2:] == ["eof", "lost"]
    assert exc is None


def test_error_in_data_received_is_fatal(loop, certs, handler_calls):
    class Failing(Peer):
        def data_received(self, data):
            raise ZeroDivisionError("bad data")

    async def main():
        servers = Collect(echo=True)
        server, port = await _tls_server(loop, certs, servers)
        transport, client = await loop.create_connection(
            Failing, "127.0.0.1", port, ssl=certs.client_context(), server_hostname=SERVER_NAME
        )
        transport.write(b"ping")
        exc = await asyncio.wait_for(client.lost, 10)
        await _close_server(server)
        return exc, transport.is_closing()

    exc, closing = loop.run_until_complete(main())
    assert isinstance(exc, ZeroDivisionError)
    assert closing
    reported = [ctx for ctx in handler_calls if ctx.get("message") == "Fatal error on SSL protocol"]
    assert len(reported) == 1
    assert isinstance(reported[0]["exception"], ZeroDivisionError)


def test_context_sslobject_class_is_used_for_records(loop, certs):
    calls = {"read": 0, "write": 0}
    read_args = set()

    class CountingSSLObject(ssl.SSLObject):
        def read(self, *args, **kwargs):
            calls["read"] += 1
            read_args.add((args, tuple(kwargs.items())))
            return super().read(*args, **kwargs)

        def write(self, data):
            calls["write"] += 1
            return super().write(data)

    async def main():
        servers = Collect(echo=True)
        server, port = await _tls_server(loop, certs, servers)
        ctx = certs.client_context()
        ctx.sslobject_class = CountingSSLObject
        connecting = loop.create_connection(Peer, "127.0.0.1", port, ssl=ctx, server_hostname=SERVER_NAME)
        return await _ping(server, connecting)

    assert loop.run_until_complete(main()) == b"ping"
    assert calls["write"] >= 1
    assert calls["read"] >= 1
    # Asked exactly what the stdlib's protocol asks: its max_size.
    assert read_args == {((asyncio.sslproto.SSLProtocol.max_size,), ())}


def test_app_transport_write_checks_and_writes_after_close(loop, certs, caplog):
    async def main():
        server, transport, client, server_side = await _connected(loop, certs)
        assert isinstance(transport, asyncio.sslproto._SSLProtocolTransport)
        with pytest.raises(TypeError) as err:
            transport.write("text")
        transport.write(b"")
        transport.write(bytearray(b"ab"))
        transport.write(memoryview(b"cd"))
        await server_side.wait_for_data(4)
        transport.close()
        await client.lost
        for _ in range(6):
            transport.write(b"late")  # dropped, and logged once enough of them pile up
        await _close_server(server)
        return str(err.value), bytes(server_side.data)

    message, data = loop.run_until_complete(main())
    assert message == "data: expecting a bytes-like instance, got str"
    assert data == b"abcd"
    assert "SSL connection is closed" in caplog.text


def test_write_after_second_close_fails_as_the_stdlib_does(loop, certs):
    # A second close() lets the application transport drop its protocol; a write after it
    # fails with AttributeError on the stdlib's transport.
    async def main():
        servers = Collect()
        server, port = await _tls_server(loop, certs, servers)
        transport, client = await loop.create_connection(
            Peer, "127.0.0.1", port, ssl=certs.client_context(), server_hostname=SERVER_NAME
        )
        transport.write(b"before")
        server_side = await servers.first()
        await server_side.wait_for_data(6)
        transport.close()
        transport.close()
        with pytest.raises(AttributeError):
            transport.write(b"after")
        await client.lost
        await _close_server(server)
        return bytes(server_side.data)

    assert loop.run_until_complete(main()) == b"before"


class BufferedPeer(asyncio.BufferedProtocol):
    def __init__(self, peer, size):
        self.peer = peer
        self.buffer = bytearray(size)
        self.sizes = []

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        self.sizes.append(nbytes)
        self.peer.data += self.buffer[:nbytes]

    def eof_received(self):
        self.peer.eof_received()

    def connection_lost(self, exc):
        self.peer.connection_lost(exc)


def test_set_protocol_switches_between_plain_and_buffered_mid_stream(loop, certs):
    # Records after each switch reach the protocol set last, in order, through its own
    # interface; the small buffer makes one record take several buffer_updated calls.
    async def main():
        server, transport, client, server_side = await _connected(loop, certs)
        server_side.transport.write(b"plain-1;")
        await client.wait_for_data(8)
        buffered = BufferedPeer(client, 7)
        transport.set_protocol(buffered)
        server_side.transport.write(b"buffered-" * 10)
        await client.wait_for_data(8 + 90)
        transport.set_protocol(client)
        server_side.transport.write(b"plain-2;")
        await client.wait_for_data(8 + 90 + 8)
        server_side.transport.close()
        await asyncio.wait_for(client.lost, 10)
        await _close_server(server)
        return bytes(client.data), buffered.sizes, client.events

    data, sizes, events = loop.run_until_complete(main())
    assert data == b"plain-1;" + b"buffered-" * 10 + b"plain-2;"
    assert sum(sizes) == 90 and max(sizes) <= 7
    assert events == ["made", "data", "eof", "lost"]


def test_app_transport_write_in_data_received_while_peer_reads_nothing(loop, certs):
    # An echo whose peer stops reading: the echoed records back up in the socket transport,
    # the application is paused through the TLS layer, and nothing is lost once reading resumes.
    chunk = BIG[: 1 << 14]

    async def main():
        server, transport, client, server_side = await _connected(loop, certs, echo=True)
        server_side.transport.set_write_buffer_limits(high=1 << 16)
        transport.pause_reading()
        total = 0
        for _ in range(256):
            transport.write(chunk)
            total += len(chunk)
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)
        received_while_paused = len(client.data)
        transport.resume_reading()
        await client.wait_for_data(total, timeout=20)
        transport.close()
        await client.lost
        await _close_server(server)
        return received_while_paused, bytes(client.data) == (chunk * 256)

    received_while_paused, intact = loop.run_until_complete(main())
    assert received_while_paused == 0
    assert intact


def test_random_writes_and_read_pauses_keep_both_directions_intact(loop, certs):
    # Both sides write pieces of random sizes (a few bytes to several records) while the
    # receiving side pauses and resumes reading at random: every byte arrives, in order.
    import random

    rng = random.Random(1234)
    up = [os.urandom(rng.choice((1, 7, 100, 1500, 16384, 40000))) for _ in range(300)]
    down = [os.urandom(rng.choice((3, 500, 17000, 70000))) for _ in range(120)]

    async def main():
        server, transport, client, server_side = await _connected(loop, certs)

        async def writer(tr, pieces):
            for piece in pieces:
                tr.write(piece)
                if rng.random() < 0.3:
                    await asyncio.sleep(0)

        async def toggler(tr, done):
            while not done.is_set():
                tr.pause_reading()
                await asyncio.sleep(rng.random() * 0.002)
                tr.resume_reading()
                await asyncio.sleep(rng.random() * 0.002)

        done = asyncio.Event()
        toggles = [
            asyncio.create_task(toggler(server_side.transport, done)),
            asyncio.create_task(toggler(transport, done)),
        ]
        await asyncio.gather(writer(transport, up), writer(server_side.transport, down))
        await server_side.wait_for_data(sum(map(len, up)), timeout=30)
        await client.wait_for_data(sum(map(len, down)), timeout=30)
        done.set()
        await asyncio.gather(*toggles)
        transport.close()
        await client.lost
        await _close_server(server)
        return bytes(server_side.data) == b"".join(up), bytes(client.data) == b"".join(down)

    assert loop.run_until_complete(main()) == (True, True)


def test_stream_reader_over_its_limit_pauses_tls_reading(loop, certs):
    data = bytes(range(256)) * 1024

    async def main():
        accepted = loop.create_future()

        async def hold(reader, writer):
            accepted.set_result((reader, writer))

        server, reader, writer = await _tls_streams(certs, hold, limit=4096)
        server_reader, server_writer = await wait(accepted)
        writer.write(data)
        # Nothing reads on the server: past twice the reader's limit, the TLS transport pauses.
        for _ in range(1000):
            if not server_writer.transport.is_reading():
                break
            await asyncio.sleep(0.005)
        paused = not server_writer.transport.is_reading()
        received = await wait(server_reader.readexactly(len(data)), timeout=20)
        resumed = server_writer.transport.is_reading()
        for w in (writer, server_writer):
            w.close()
        await wait(writer.wait_closed())
        await _close_server(server)
        return paused, received == data, resumed

    assert loop.run_until_complete(main()) == (True, True, True)


def test_patched_stream_reader_feed_data_is_called_over_tls(loop, certs, monkeypatch):
    fed = []
    original = asyncio.StreamReader.feed_data

    def patched(self, data):
        fed.append(bytes(data))
        original(self, data)

    async def handler(reader, writer):
        writer.write(await reader.readexactly(4))
        await writer.drain()
        writer.close()

    async def main():
        server, reader, writer = await _tls_streams(certs, handler)
        # Replaced once both ends are connected: the next reads go through it.
        monkeypatch.setattr(asyncio.StreamReader, "feed_data", patched)
        writer.write(b"ping")
        echoed = await wait(reader.read())
        writer.close()
        await writer.wait_closed()
        await _close_server(server)
        return echoed

    assert loop.run_until_complete(main()) == b"ping"
    # Both ends read through the patched method: the server, then the client.
    assert b"".join(fed) == b"pingping"
