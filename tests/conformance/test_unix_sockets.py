"""create_unix_server / create_unix_connection: path kinds, abstract names, stale files, clean-up."""

import asyncio
import errno
import os
import pathlib
import socket
import stat
import sys
import uuid

import pytest
from _netutil import Recorder, wait
from _sockutil import closing


@pytest.fixture
def sock_path(tmp_path):
    # AF_UNIX paths are limited to ~108 bytes; pytest's tmp_path can be longer than that.
    short = pathlib.Path("/tmp") / f"fl-{uuid.uuid4().hex[:12]}.sock"
    yield short
    if short.exists() or short.is_symlink():
        short.unlink()


class Collect:
    def __init__(self):
        self.protos = []

    def __call__(self):
        proto = Recorder()
        self.protos.append(proto)
        return proto


async def _round_trip(loop, factory, path, message):
    transport, proto = await wait(loop.create_unix_connection(Recorder, path))
    try:
        transport.write(message)
        for _ in range(500):
            if factory.protos and factory.protos[-1].data == message:
                break
            await asyncio.sleep(0.01)
        server_side = factory.protos[-1]
        assert server_side.data == message
        server_side.transport.write(message[::-1])
        assert await proto.read(len(message)) == message[::-1]
        return transport, server_side.transport
    finally:
        transport.close()


@pytest.mark.parametrize("kind", [str, bytes, pathlib.Path])
def test_unix_round_trip(loop, sock_path, kind):
    path = kind(os.fsencode(sock_path)) if kind is bytes else kind(sock_path)

    async def main():
        factory = Collect()
        server = await loop.create_unix_server(factory, path)
        try:
            assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
            [sock] = server.sockets
            assert sock.family == socket.AF_UNIX
            assert sock.getsockname() == str(sock_path)
            client, accepted = await _round_trip(loop, factory, path, b"over unix")
            assert client.get_extra_info("peername") == str(sock_path)
            assert accepted.get_extra_info("sockname") == str(sock_path)
            assert accepted.get_extra_info("peername") == ""
            accepted.close()
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract names are Linux-only")
def test_unix_abstract_name(loop):
    name = f"\0ferroloop-{uuid.uuid4().hex}"

    async def main():
        factory = Collect()
        server = await loop.create_unix_server(factory, name)
        try:
            assert server.sockets[0].getsockname() == name.encode()
            assert not os.path.exists(name[1:])
            _, accepted = await _round_trip(loop, factory, name, b"abstract")
            accepted.close()
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


def test_unix_server_replaces_stale_socket_file(loop, sock_path):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock_path))
    stale.close()
    assert stat.S_ISSOCK(os.stat(sock_path).st_mode)

    async def main():
        factory = Collect()
        server = await loop.create_unix_server(factory, str(sock_path))
        try:
            _, accepted = await _round_trip(loop, factory, str(sock_path), b"fresh")
            accepted.close()
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


def test_unix_server_does_not_remove_regular_file(loop, sock_path):
    sock_path.write_text("not a socket")

    async def main():
        with pytest.raises(OSError) as info:
            await loop.create_unix_server(Recorder, str(sock_path))
        assert info.value.errno == errno.EADDRINUSE
        assert sock_path.read_text() == "not a socket"

    loop.run_until_complete(main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="cleanup_socket is new in 3.13")
def test_unix_server_removes_socket_file_on_close(loop, sock_path):
    async def main():
        server = await loop.create_unix_server(Recorder, str(sock_path))
        assert sock_path.exists()
        server.close()
        await server.wait_closed()
        assert not sock_path.exists()

        kept = await loop.create_unix_server(Recorder, str(sock_path), cleanup_socket=False)
        kept.close()
        await kept.wait_closed()
        assert stat.S_ISSOCK(os.stat(sock_path).st_mode)

    loop.run_until_complete(main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="cleanup_socket is new in 3.13")
def test_unix_server_cleanup_spares_replaced_file(loop, sock_path):
    async def main():
        server = await loop.create_unix_server(Recorder, str(sock_path))
        os.unlink(sock_path)
        sock_path.write_text("someone else's")
        server.close()
        await server.wait_closed()
        assert sock_path.read_text() == "someone else's"

    loop.run_until_complete(main())


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="3.13 removes the socket file on close")
def test_unix_server_leaves_socket_file_before_313(loop, sock_path):
    async def main():
        server = await loop.create_unix_server(Recorder, str(sock_path))
        server.close()
        await server.wait_closed()
        assert stat.S_ISSOCK(os.stat(sock_path).st_mode)

    loop.run_until_complete(main())


def test_unix_server_and_connection_with_sock(loop, sock_path):
    async def main():
        lsock = socket.socket(socket.AF_UNIX)
        lsock.bind(str(sock_path))
        factory = Collect()
        server = await loop.create_unix_server(factory, sock=lsock)
        try:
            assert server.sockets[0].fileno() == lsock.fileno()
            client = socket.socket(socket.AF_UNIX)
            client.setblocking(False)
            await wait(loop.sock_connect(client, str(sock_path)))
            transport, proto = await wait(loop.create_unix_connection(Recorder, sock=client))
            assert transport.get_extra_info("socket").fileno() == client.fileno()
            transport.write(b"sock=")
            for _ in range(500):
                if factory.protos and factory.protos[0].data == b"sock=":
                    break
                await asyncio.sleep(0.01)
            assert factory.protos[0].data == b"sock="
            transport.close()
            assert await wait(proto.lost) is None
            await wait(factory.protos[0].eof)
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(main())


def test_unix_argument_errors(loop, sock_path):
    async def main():
        with closing(socket.socket(socket.AF_UNIX)) as (sock,):
            with pytest.raises(ValueError):
                await loop.create_unix_connection(Recorder, str(sock_path), sock=sock)
            with pytest.raises(ValueError):
                await loop.create_unix_server(Recorder, str(sock_path), sock=sock)
        with pytest.raises(ValueError):
            await loop.create_unix_connection(Recorder)
        with closing(socket.socket()) as (tcp,):
            with pytest.raises(ValueError):
                await loop.create_unix_connection(Recorder, sock=tcp)

    loop.run_until_complete(main())


def test_unix_connect_missing_and_stale(loop, sock_path):
    async def main():
        with pytest.raises(FileNotFoundError):
            await loop.create_unix_connection(Recorder, str(sock_path))
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(sock_path))
        stale.close()
        with pytest.raises(ConnectionRefusedError):
            await loop.create_unix_connection(Recorder, str(sock_path))

    loop.run_until_complete(main())


def test_unix_transport_eof_and_half_close(loop):
    async def main():
        a, b = socket.socketpair()
        with closing(b):
            b.setblocking(False)
            transport, proto = await wait(loop.create_unix_connection(Recorder, sock=a))
            assert transport.can_write_eof()
            transport.write(b"req")
            transport.write_eof()
            assert await wait(loop.sock_recv(b, 10)) == b"req"
            assert await wait(loop.sock_recv(b, 10)) == b""
            await loop.sock_sendall(b, b"resp")
            assert await proto.read(4) == b"resp"
            b.close()
            assert await wait(proto.lost) is None
            assert proto.events == ["made", "data", "eof", "lost"]

    loop.run_until_complete(main())
