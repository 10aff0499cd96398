"""create_datagram_endpoint and the datagram transport."""

import asyncio
import errno
import os
import pathlib
import socket
import stat
import sys
import uuid

import pytest
from _netutil import DatagramRecorder, wait
from _sockutil import closing, free_port


async def _endpoint(loop, **kwargs):
    return await wait(loop.create_datagram_endpoint(DatagramRecorder, **kwargs))


@pytest.fixture
def peer():
    """A raw, non-blocking UDP socket on 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    with sock:
        yield sock


def test_local_addr(loop, peer):
    async def main():
        transport, proto = await _endpoint(loop, local_addr=("127.0.0.1", 0))
        assert isinstance(transport, asyncio.BaseTransport)
        if sys.version_info >= (3, 12):  # 3.11's selector transport lacks the DatagramTransport base
            assert isinstance(transport, asyncio.DatagramTransport)
        assert proto.transport is transport and proto.events == ["made"]
        address = transport.get_extra_info("sockname")
        assert address[0] == "127.0.0.1" and address[1] != 0
        assert transport.get_extra_info("peername") is None
        sock = transport.get_extra_info("socket")
        assert sock.type == socket.SOCK_DGRAM and sock.getsockname() == address

        peer.sendto(b"first", address)
        peer.sendto(b"second", address)
        assert await wait(proto.queue.get()) == (b"first", peer.getsockname())
        assert await wait(proto.queue.get()) == (b"second", peer.getsockname())

        transport.sendto(b"back", peer.getsockname())
        transport.sendto(bytearray(b"array"), peer.getsockname())
        transport.sendto(memoryview(b"view"), peer.getsockname())
        got = [await wait(loop.sock_recvfrom(peer, 100)) for _ in range(3)]
        assert got == [(b"back", address), (b"array", address), (b"view", address)]
        assert transport.get_write_buffer_size() == 0

        transport.close()
        assert transport.is_closing()
        assert await wait(proto.lost) is None
        assert proto.events == ["made", "lost"]

    loop.run_until_complete(main())


def test_remote_addr(loop, peer):
    async def main():
        transport, proto = await wait(
            loop.create_datagram_endpoint(DatagramRecorder, remote_addr=peer.getsockname())
        )
        assert transport.get_extra_info("peername") == peer.getsockname()
        transport.sendto(b"to default")
        transport.sendto(b"explicit", peer.getsockname())
        data, addr = await wait(loop.sock_recvfrom(peer, 100))
        assert data == b"to default" and addr == transport.get_extra_info("sockname")
        assert (await wait(loop.sock_recvfrom(peer, 100)))[0] == b"explicit"
        with pytest.raises(ValueError):
            transport.sendto(b"elsewhere", ("127.0.0.1", free_port()))
        peer.sendto(b"reply", addr)
        assert await wait(proto.queue.get()) == (b"reply", peer.getsockname())
        transport.close()
        await wait(proto.lost)

    loop.run_until_complete(main())


def test_sendto_rejects_non_bytes(loop, peer):
    async def main():
        transport, proto = await _endpoint(loop, local_addr=("127.0.0.1", 0))
        with pytest.raises(TypeError, match="^data argument must be a bytes-like object, not 'str'$"):
            transport.sendto("text", peer.getsockname())
        assert not transport.is_closing()
        transport.close()
        await wait(proto.lost)

    loop.run_until_complete(main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="3.13 sends zero-length datagrams")
def test_sendto_empty_datagram(loop, peer):
    async def main():
        transport, proto = await _endpoint(loop, remote_addr=peer.getsockname())
        transport.sendto(b"")
        assert await wait(loop.sock_recvfrom(peer, 10)) == (b"", transport.get_extra_info("sockname"))
        peer.sendto(b"", transport.get_extra_info("sockname"))
        assert await wait(proto.queue.get()) == (b"", peer.getsockname())
        transport.close()

    loop.run_until_complete(main())


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="before 3.13 sendto(b'') sends nothing")
def test_sendto_empty_is_ignored_before_313(loop, peer):
    async def main():
        transport, proto = await _endpoint(loop, remote_addr=peer.getsockname())
        transport.sendto(b"")
        transport.sendto(b"marker")
        assert await wait(loop.sock_recvfrom(peer, 10)) == (b"marker", transport.get_extra_info("sockname"))
        transport.close()

    loop.run_until_complete(main())


def test_error_received_on_refused_port(loop):
    async def main():
        transport, proto = await wait(
            loop.create_datagram_endpoint(DatagramRecorder, remote_addr=("127.0.0.1", free_port()))
        )
        transport.sendto(b"anyone?")
        exc = await wait(proto.errors.get())
        assert isinstance(exc, ConnectionRefusedError)
        # The error is reported, not fatal.
        assert not transport.is_closing()
        assert not proto.lost.done()
        transport.close()
        assert await wait(proto.lost) is None

    loop.run_until_complete(main())


def test_allow_broadcast(loop):
    async def main():
        transport, _ = await wait(
            loop.create_datagram_endpoint(DatagramRecorder, local_addr=("127.0.0.1", 0), allow_broadcast=True)
        )
        assert transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) != 0
        transport.close()
        plain, _ = await _endpoint(loop, local_addr=("127.0.0.1", 0))
        assert plain.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 0
        plain.close()

    loop.run_until_complete(main())


def test_reuse_port(loop):
    async def main():
        first, _ = await wait(
            loop.create_datagram_endpoint(DatagramRecorder, local_addr=("127.0.0.1", 0), reuse_port=True)
        )
        address = first.get_extra_info("sockname")
        second, _ = await _endpoint(loop, local_addr=address, reuse_port=True)
        for transport in (first, second):
            assert transport.get_extra_info("sockname") == address
            assert transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        with pytest.raises(OSError) as info:
            await loop.create_datagram_endpoint(DatagramRecorder, local_addr=address)
        assert info.value.errno == errno.EADDRINUSE
        first.close()
        second.close()

    loop.run_until_complete(main())


def test_sock_argument(loop, peer):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(ValueError):
            await loop.create_datagram_endpoint(DatagramRecorder, local_addr=("127.0.0.1", 0), sock=sock)
        transport, proto = await wait(loop.create_datagram_endpoint(DatagramRecorder, sock=sock))
        assert transport.get_extra_info("socket").fileno() == sock.fileno()
        assert sock.gettimeout() == 0
        peer.sendto(b"via sock", sock.getsockname())
        assert await wait(proto.queue.get()) == (b"via sock", peer.getsockname())
        transport.close()
        await wait(proto.lost)
        assert sock.fileno() == -1

    loop.run_until_complete(main())


def test_sock_argument_must_be_datagram(loop):
    async def main():
        with closing(socket.socket()) as (tcp,):
            with pytest.raises(ValueError):
                await loop.create_datagram_endpoint(DatagramRecorder, sock=tcp)

    loop.run_until_complete(main())


def test_abort(loop, peer):
    async def main():
        transport, proto = await _endpoint(loop, local_addr=("127.0.0.1", 0))
        transport.abort()
        assert transport.is_closing()
        assert await wait(proto.lost) is None
        transport.close()  # after abort: no second connection_lost
        transport.abort()
        await asyncio.sleep(0.01)
        assert proto.events == ["made", "lost"]

    loop.run_until_complete(main())


def test_sendto_after_close_is_dropped(loop, peer):
    async def main():
        transport, proto = await _endpoint(loop, remote_addr=peer.getsockname())
        transport.close()
        transport.sendto(b"late")  # no exception
        await wait(proto.lost)
        transport.sendto(b"later")
        await asyncio.sleep(0.02)
        with pytest.raises(BlockingIOError):
            peer.recvfrom(10)

    loop.run_until_complete(main())


@pytest.fixture
def unix_dgram_paths():
    base = pathlib.Path("/tmp")
    paths = [base / f"fl-{uuid.uuid4().hex[:12]}.dgram" for _ in range(2)]
    yield paths
    for path in paths:
        if path.exists():
            path.unlink()


def test_unix_datagram(loop, unix_dgram_paths):
    mine, theirs = (str(p) for p in unix_dgram_paths)

    async def main():
        with closing(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)) as (raw,):
            raw.bind(theirs)
            raw.setblocking(False)
            transport, proto = await wait(
                loop.create_datagram_endpoint(DatagramRecorder, local_addr=mine, family=socket.AF_UNIX)
            )
            assert transport.get_extra_info("sockname") == mine
            raw.sendto(b"unix dgram", mine)
            assert await wait(proto.queue.get()) == (b"unix dgram", theirs)
            transport.sendto(b"answer", theirs)
            assert await wait(loop.sock_recvfrom(raw, 100)) == (b"answer", mine)
            transport.close()
            await wait(proto.lost)

    loop.run_until_complete(main())


def test_unix_datagram_replaces_stale_socket_file(loop, unix_dgram_paths):
    path = str(unix_dgram_paths[0])
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(path)
    stale.close()

    async def main():
        transport, proto = await wait(
            loop.create_datagram_endpoint(DatagramRecorder, local_addr=path, family=socket.AF_UNIX)
        )
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        with closing(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)) as (raw,):
            raw.sendto(b"ping", path)
            data, _ = await wait(proto.queue.get())
            assert data == b"ping"
        transport.close()

    loop.run_until_complete(main())


def test_unix_datagram_remote_addr(loop, unix_dgram_paths):
    theirs = str(unix_dgram_paths[1])

    async def main():
        with closing(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)) as (raw,):
            raw.bind(theirs)
            raw.setblocking(False)
            transport, proto = await wait(
                loop.create_datagram_endpoint(DatagramRecorder, remote_addr=theirs, family=socket.AF_UNIX)
            )
            assert transport.get_extra_info("peername") == theirs
            transport.sendto(b"connected")
            data, _ = await wait(loop.sock_recvfrom(raw, 100))
            assert data == b"connected"
            transport.close()

    loop.run_until_complete(main())
