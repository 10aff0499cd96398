"""create_connection / create_server / connect_accepted_socket over TCP."""

import asyncio
import errno
import socket
import sys

import pytest
from _netutil import Recorder, accept, recv_exactly, wait
from _sockutil import TrackedSocket, closing, free_port, listener


def test_create_connection_host_port(loop):
    async def main():
        with listener() as lsock:
            host, port = lsock.getsockname()
            transport, proto = await wait(loop.create_connection(Recorder, host, port))
            assert isinstance(proto, Recorder)
            assert proto.transport is transport
            assert proto.events == ["made"]
            with await accept(loop, lsock) as conn:
                assert transport.get_extra_info("peername") == (host, port)
                assert transport.get_extra_info("sockname") == conn.getpeername()
                transport.write(b"hello")
                assert await recv_exactly(loop, conn, 5) == b"hello"
                await loop.sock_sendall(conn, b"world")
                assert await proto.read(5) == b"world"
            transport.close()
            assert await wait(proto.lost) is None

    loop.run_until_complete(main())


def test_create_connection_resolves_names(loop):
    async def main():
        with listener() as lsock:
            port = lsock.getsockname()[1]
            transport, proto = await wait(loop.create_connection(Recorder, "localhost", str(port)))
            with await accept(loop, lsock):
                assert transport.get_extra_info("peername")[1] == port
            transport.close()

    loop.run_until_complete(main())


def test_create_connection_sock(loop):
    async def main():
        with listener() as lsock, closing(socket.socket()) as (sock,):
            sock.setblocking(False)
            await loop.sock_connect(sock, lsock.getsockname())
            transport, proto = await wait(loop.create_connection(Recorder, sock=sock))
            assert transport.get_extra_info("socket").fileno() == sock.fileno()
            with await accept(loop, lsock) as conn:
                transport.write(b"via sock")
                assert await recv_exactly(loop, conn, 8) == b"via sock"
            transport.close()
            await wait(proto.lost)
            assert sock.fileno() == -1  # the transport owns and closes the socket

    loop.run_until_complete(main())


def test_socket_subclass_reads_and_writes_through_its_methods(loop):
    async def echo(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        sock = TrackedSocket()
        sock.setblocking(False)
        await loop.sock_connect(sock, server.sockets[0].getsockname())
        reader, writer = await wait(asyncio.open_connection(sock=sock))
        writer.write(b"Hello!\n")
        got = await wait(reader.readline())
        assert await wait(reader.read()) == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return got, sorted(sock.used), sock.fileno()

    assert loop.run_until_complete(main()) == (b"Hello!\n", ["recv", "send"], -1)


def test_create_connection_argument_errors(loop):
    async def main():
        with closing(socket.socket()) as (sock,):
            with pytest.raises(ValueError):
                await loop.create_connection(Recorder, "127.0.0.1", 1, sock=sock)
            with pytest.raises(ValueError):
                await loop.create_connection(Recorder)
        with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as (udp,):
            with pytest.raises(ValueError):
                await loop.create_connection(Recorder, sock=udp)

    loop.run_until_complete(main())


def test_create_connection_local_addr(loop):
    async def main():
        with listener() as lsock:
            local = ("127.0.0.1", free_port())
            transport, _ = await wait(
                loop.create_connection(Recorder, *lsock.getsockname(), local_addr=local)
            )
            with await accept(loop, lsock) as conn:
                assert transport.get_extra_info("sockname") == local
                assert conn.getpeername() == local
            transport.close()

    loop.run_until_complete(main())


def test_create_connection_local_addr_in_use(loop):
    async def main():
        with listener() as lsock, listener() as busy:
            with pytest.raises(OSError) as info:
                await loop.create_connection(Recorder, *lsock.getsockname(), local_addr=busy.getsockname())
            assert info.value.errno == errno.EADDRINUSE

    loop.run_until_complete(main())


def test_create_connection_happy_eyeballs_arguments(loop):
    async def main():
        with listener() as lsock:
            transport, proto = await wait(
                loop.create_connection(Recorder, *lsock.getsockname(), happy_eyeballs_delay=0.1, interleave=1)
            )
            with await accept(loop, lsock) as conn:
                transport.write(b"ok")
                assert await recv_exactly(loop, conn, 2) == b"ok"
            transport.close()
            await wait(proto.lost)

    loop.run_until_complete(main())


def _fake_resolver(monkeypatch, name, hosts):
    """Make ``name`` resolve to each of ``hosts`` (IPv4 literals), in order."""
    real = socket.getaddrinfo

    def fake(host, port, family=0, type=0, proto=0, flags=0):
        if host != name:
            return real(host, port, family, type, proto, flags)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (h, int(port))) for h in hosts]

    monkeypatch.setattr(socket, "getaddrinfo", fake)


@pytest.mark.parametrize("delay", [None, 0.05])
def test_create_connection_tries_every_address(loop, monkeypatch, delay):
    _fake_resolver(monkeypatch, "two.example.invalid", ["127.0.0.2", "127.0.0.1"])

    async def main():
        with listener() as lsock:  # on 127.0.0.1 only: the first address is refused
            port = lsock.getsockname()[1]
            transport, proto = await wait(
                loop.create_connection(Recorder, "two.example.invalid", port, happy_eyeballs_delay=delay)
            )
            with await accept(loop, lsock):
                assert transport.get_extra_info("peername") == lsock.getsockname()
            transport.close()

    loop.run_until_complete(main())


def test_create_connection_several_addresses_fail(loop, monkeypatch):
    _fake_resolver(monkeypatch, "two.example.invalid", ["127.0.0.2", "127.0.0.1"])

    async def main():
        with pytest.raises(OSError) as info:
            await loop.create_connection(Recorder, "two.example.invalid", free_port())
        # Different messages per address: one combined OSError rather than either of them.
        assert type(info.value) is OSError
        assert "Multiple exceptions" in str(info.value)
        assert "127.0.0.2" in str(info.value) and "127.0.0.1" in str(info.value)

    loop.run_until_complete(main())


@pytest.mark.skipif(sys.version_info < (3, 12), reason="all_errors is new in 3.12")
def test_create_connection_all_errors(loop, monkeypatch):
    _fake_resolver(monkeypatch, "two.example.invalid", ["127.0.0.2", "127.0.0.1"])

    async def main():
        port = free_port()
        with pytest.raises(ExceptionGroup) as info:
            await loop.create_connection(Recorder, "two.example.invalid", port, all_errors=True)
        errors = info.value.exceptions
        assert len(errors) == 2
        assert all(isinstance(e, ConnectionRefusedError) for e in errors)
        assert {e.errno for e in errors} == {errno.ECONNREFUSED}

        # Even a single failed address comes as a group.
        with pytest.raises(ExceptionGroup) as info:
            await loop.create_connection(Recorder, "127.0.0.1", port, all_errors=True)
        assert [type(e) for e in info.value.exceptions] == [ConnectionRefusedError]

    loop.run_until_complete(main())


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="all_errors is new in 3.12")
@pytest.mark.parametrize("value", [False, 0])
def test_create_connection_has_no_all_errors_before_3_12(loop, value):
    async def main():
        with listener() as lsock:
            with pytest.raises(TypeError, match="all_errors"):
                await loop.create_connection(Recorder, *lsock.getsockname(), all_errors=value)

    loop.run_until_complete(main())


# -- create_server ------------------------------------------------------------------------------


async def _connect_and_echo_check(loop, server_protos, address, message):
    with closing(socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)) as (client,):
        client.setblocking(False)
        await wait(loop.sock_connect(client, address))
        await loop.sock_sendall(client, message)
        for _ in range(200):
            if server_protos and server_protos[-1].data == message:
                break
            await asyncio.sleep(0.01)
        assert server_protos[-1].data == message
        assert server_protos[-1].transport.get_extra_info("peername") == client.getsockname()


def _factory():
    protos = []

    def make():
        proto = Recorder()
        protos.append(proto)
        return proto

    return protos, make


def test_create_server_one_host(loop):
    async def main():
        protos, make = _factory()
        server = await loop.create_server(make, "127.0.0.1", 0)
        try:
            assert server.is_serving()
            [sock] = server.sockets
            assert sock.family == socket.AF_INET
            host, port = sock.getsockname()
            assert host == "127.0.0.1" and port != 0
            await _connect_and_echo_check(loop, protos, (host, port), b"one")
            assert len(protos) == 1
            transport = protos[0].transport
            assert transport.get_extra_info("sockname") == (host, port)
            transport.close()
            await wait(protos[0].lost)
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


def test_create_server_list_of_hosts(loop):
    async def main():
        protos, make = _factory()
        server = await loop.create_server(make, ["127.0.0.1", "127.0.0.2"], 0)
        try:
            names = sorted(s.getsockname() for s in server.sockets)
            assert [h for h, _ in names] == ["127.0.0.1", "127.0.0.2"]
            for i, address in enumerate(names):
                await _connect_and_echo_check(loop, protos, address, b"host%d" % i)
            assert len(protos) == 2
            for proto in protos:
                proto.transport.close()
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


@pytest.mark.parametrize("host", [None, ""])
def test_create_server_all_interfaces(loop, host):
    async def main():
        protos, make = _factory()
        server = await loop.create_server(make, host, 0)
        try:
            by_family = {s.family: s.getsockname() for s in server.sockets}
            assert by_family[socket.AF_INET][0] == "0.0.0.0"
            if socket.AF_INET6 in by_family:
                assert by_family[socket.AF_INET6][0] == "::"
                v6 = [s for s in server.sockets if s.family == socket.AF_INET6][0]
                assert v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
            port = by_family[socket.AF_INET][1]
            await _connect_and_echo_check(loop, protos, ("127.0.0.1", port), b"any")
            protos[0].transport.close()
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


def test_create_server_reuse_port(loop):
    async def main():
        first = await loop.create_server(Recorder, "127.0.0.1", 0, reuse_port=True)
        port = first.sockets[0].getsockname()[1]
        second = await loop.create_server(Recorder, "127.0.0.1", port, reuse_port=True)
        try:
            for server in (first, second):
                [sock] = server.sockets
                assert sock.getsockname() == ("127.0.0.1", port)
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        finally:
            for server in (first, second):
                server.close()
                await server.wait_closed()

    loop.run_until_complete(main())


def test_create_server_address_in_use(loop):
    async def main():
        with listener() as busy:
            with pytest.raises(OSError) as info:
                await loop.create_server(Recorder, *busy.getsockname())
            assert info.value.errno == errno.EADDRINUSE

    loop.run_until_complete(main())


def test_create_server_sets_reuse_address(loop):
    async def main():
        server = await loop.create_server(Recorder, "127.0.0.1", 0)
        try:
            assert server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
        finally:
            server.close()

    loop.run_until_complete(main())


def test_create_server_backlog(loop):
    async def main():
        protos, make = _factory()
        server = await loop.create_server(make, "127.0.0.1", 0, backlog=1)
        address = server.sockets[0].getsockname()
        clients = [socket.socket() for _ in range(8)]
        try:
            for client in clients:
                client.setblocking(False)
                await wait(loop.sock_connect(client, address))
            for _ in range(200):
                if len(protos) == len(clients):
                    break
                await asyncio.sleep(0.01)
            assert len(protos) == len(clients)
            await wait(asyncio.gather(*(p.made for p in protos)))
            assert {p.transport.get_extra_info("peername") for p in protos} == {
                c.getsockname() for c in clients
            }
        finally:
            for client in clients:
                client.close()
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


def test_create_server_sock(loop):
    async def main():
        protos, make = _factory()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = await loop.create_server(make, sock=sock)
        try:
            [tsock] = server.sockets
            assert tsock.fileno() == sock.fileno()
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
            await _connect_and_echo_check(loop, protos, sock.getsockname(), b"sock")
            protos[0].transport.close()
        finally:
            server.close()
            await server.wait_closed()
        assert sock.fileno() == -1

    loop.run_until_complete(main())


def test_create_server_start_serving_false(loop):
    async def main():
        protos, make = _factory()
        server = await loop.create_server(make, "127.0.0.1", 0, start_serving=False)
        try:
            [sock] = server.sockets
            address = sock.getsockname()
            assert not server.is_serving()
            # Not even listening yet: a connect is refused.
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
            with closing(socket.socket()) as (probe,):
                probe.setblocking(False)
                with pytest.raises(ConnectionRefusedError):
                    await wait(loop.sock_connect(probe, address))
            await server.start_serving()
            assert server.is_serving()
            await server.start_serving()  # a second call is a no-op
            await _connect_and_echo_check(loop, protos, address, b"late")
            protos[0].transport.close()
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


def test_create_server_start_serving_false_then_serve_forever(loop):
    async def main():
        protos, make = _factory()
        server = await loop.create_server(make, "127.0.0.1", 0, start_serving=False)
        address = server.sockets[0].getsockname()
        forever = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        assert server.is_serving()
        await _connect_and_echo_check(loop, protos, address, b"forever")
        protos[0].transport.close()
        forever.cancel()
        with pytest.raises(asyncio.CancelledError):
            await forever
        assert not server.is_serving()
        assert server.sockets == ()

    loop.run_until_complete(main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="keep_alive is new in 3.13")
@pytest.mark.parametrize("keep_alive", [True, False])
def test_create_server_keep_alive(loop, keep_alive):
    async def main():
        protos, make = _factory()
        server = await loop.create_server(make, "127.0.0.1", 0, keep_alive=keep_alive)
        try:
            assert bool(server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)) is keep_alive
            await _connect_and_echo_check(loop, protos, server.sockets[0].getsockname(), b"ka")
            accepted = protos[0].transport.get_extra_info("socket")
            assert bool(accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)) is keep_alive
            protos[0].transport.close()
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


def test_nodelay_only_for_sockets_made_as_tcp(loop):
    # The stdlib sets TCP_NODELAY only when `sock.proto == IPPROTO_TCP`; sockets made with
    # `socket.socket()` (proto 0), and those they accept, keep Nagle's algorithm.
    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        client = socket.socket()
        client.setblocking(False)
        await loop.sock_connect(client, listener.getsockname())
        conn, _ = await loop.sock_accept(listener)
        listener.close()
        accepted, _ = await loop.connect_accepted_socket(asyncio.Protocol, conn)
        connected, _ = await loop.create_connection(asyncio.Protocol, sock=client)
        try:
            for transport in (accepted, connected):
                sock = transport.get_extra_info("socket")
                assert sock.proto == 0
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        finally:
            accepted.close()
            connected.close()
            await asyncio.sleep(0)

    loop.run_until_complete(main())


def test_accepted_connection_sets_nodelay(loop):
    async def main():
        protos, make = _factory()
        server = await loop.create_server(make, "127.0.0.1", 0)
        try:
            await _connect_and_echo_check(loop, protos, server.sockets[0].getsockname(), b"x")
            accepted = protos[0].transport.get_extra_info("socket")
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            transport, _ = await wait(loop.create_connection(Recorder, *server.sockets[0].getsockname()))
            assert transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            transport.close()
            for proto in protos:
                proto.transport.close()
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


# -- connect_accepted_socket ------------------------------------------------------------------------


def test_connect_accepted_socket(loop):
    async def main():
        with listener() as lsock, closing(socket.socket()) as (client,):
            client.setblocking(False)
            await loop.sock_connect(client, lsock.getsockname())
            conn = await accept(loop, lsock)
            transport, proto = await wait(loop.connect_accepted_socket(Recorder, conn))
            assert isinstance(transport, asyncio.Transport)
            assert transport.get_extra_info("peername") == client.getsockname()
            assert transport.get_extra_info("socket").fileno() == conn.fileno()
            await loop.sock_sendall(client, b"to server")
            assert await proto.read(9) == b"to server"
            transport.write(b"to client")
            assert await recv_exactly(loop, client, 9) == b"to client"
            client.close()
            await wait(proto.lost)
            assert proto.events == ["made", "data", "eof", "lost"]

    loop.run_until_complete(main())


def test_connect_accepted_socket_rejects_non_stream(loop):
    async def main():
        with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as (udp,):
            with pytest.raises(ValueError):
                await loop.connect_accepted_socket(Recorder, udp)

    loop.run_until_complete(main())
