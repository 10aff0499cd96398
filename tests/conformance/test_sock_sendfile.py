"""sock_sendfile: os.sendfile() when the file allows it, the read-and-send fallback otherwise, the
argument checks, and the file position afterwards; and loop.sendfile() on a transport, which
runs it on the transport's socket."""

import asyncio
import errno
import io
import os
import socket
import struct
from unittest import mock

import pytest
from _sockutil import closing, tcp_pair

# Much larger than the shrunken send buffer below, and not a multiple of any chunk size.
DATA = bytes(range(256)) * 4096 + b"tail"


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "payload.bin"
    path.write_bytes(DATA)
    with open(path, "rb") as f:
        yield f


class NoFileno(io.RawIOBase):
    """A readable, seekable binary file that sendfile() cannot use (no fileno())."""

    def __init__(self, data):
        self._inner = io.BytesIO(data)
        self.mode = "rb"

    def readable(self):
        return True

    def readinto(self, buf):
        return self._inner.readinto(buf)

    def seek(self, pos, whence=io.SEEK_SET):
        return self._inner.seek(pos, whence)

    def tell(self):
        return self._inner.tell()


async def _read_until_eof(loop, sock):
    received = bytearray()
    while True:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            return bytes(received)
        received += chunk


async def _send_and_collect(loop, send):
    """Run ``send(client)`` over a TCP pair with a small send buffer, so that the transfer waits
    for the socket many times; return (result, bytes received)."""
    with tcp_pair() as (client, server):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        reader = asyncio.ensure_future(_read_until_eof(loop, server))
        result = await send(client)
        client.shutdown(socket.SHUT_WR)
        return result, await asyncio.wait_for(reader, 10)


def test_sendfile_native(loop, data_file):
    async def main():
        return await _send_and_collect(loop, lambda sock: loop.sock_sendfile(sock, data_file))

    sent, received = loop.run_until_complete(main())
    assert sent == len(DATA)
    assert received == DATA
    assert data_file.tell() == len(DATA)


def test_sendfile_native_offset_and_count(loop, data_file):
    async def main():
        return await _send_and_collect(loop, lambda sock: loop.sock_sendfile(sock, data_file, 1000, 300_000))

    sent, received = loop.run_until_complete(main())
    assert sent == 300_000
    assert received == DATA[1000:301_000]
    assert data_file.tell() == 301_000


def test_sendfile_native_count_past_end(loop, data_file):
    async def main():
        return await _send_and_collect(
            loop, lambda sock: loop.sock_sendfile(sock, data_file, len(DATA) - 10, 1000)
        )

    sent, received = loop.run_until_complete(main())
    assert sent == 10
    assert received == DATA[-10:]
    assert data_file.tell() == len(DATA)


def test_sendfile_empty_file(loop, tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")

    async def main():
        with open(path, "rb") as f:
            result = await _send_and_collect(loop, lambda sock: loop.sock_sendfile(sock, f))
            return result, f.tell()

    (sent, received), position = loop.run_until_complete(main())
    assert (sent, received, position) == (0, b"", 0)


def test_sendfile_between_sendalls(loop, data_file):
    head = b"head" * 16384

    async def send(sock):
        await loop.sock_sendall(sock, head)
        sent = await loop.sock_sendfile(sock, data_file)
        await loop.sock_sendall(sock, b"after")
        return sent

    sent, received = loop.run_until_complete(_send_and_collect(loop, send))
    assert sent == len(DATA)
    assert received == head + DATA + b"after"
    assert data_file.tell() == len(DATA)


@pytest.mark.parametrize("offset, count", [(0, None), (1000, 2000), (5, 100_000), (len(DATA) - 3, None)])
def test_sendfile_fallback(loop, offset, count):
    f = NoFileno(DATA)

    async def main():
        return await _send_and_collect(loop, lambda sock: loop.sock_sendfile(sock, f, offset, count))

    sent, received = loop.run_until_complete(main())
    expected = DATA[offset:] if count is None else DATA[offset : offset + count]
    assert sent == len(expected)
    assert received == expected
    assert f.tell() == offset + len(expected)


def test_sendfile_fallback_bytesio(loop):
    f = io.BytesIO(DATA)

    async def main():
        return await _send_and_collect(loop, lambda sock: loop.sock_sendfile(sock, f))

    sent, received = loop.run_until_complete(main())
    assert (sent, received, f.tell()) == (len(DATA), DATA, len(DATA))


def test_sendfile_without_fallback_raises(loop):
    f = NoFileno(DATA)

    async def main():
        async def send(sock):
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await loop.sock_sendfile(sock, f, fallback=False)

        return await _send_and_collect(loop, send)

    _, received = loop.run_until_complete(main())
    assert received == b""
    assert f.tell() == 0


def test_sendfile_to_reset_peer(loop, data_file):
    async def main():
        with tcp_pair() as (client, server):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            sender = asyncio.ensure_future(loop.sock_sendfile(client, data_file))
            await asyncio.sleep(0.05)
            assert not sender.done()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            server.close()
            with pytest.raises(ConnectionError) as info:
                await sender
            assert info.value.errno in (errno.ECONNRESET, errno.EPIPE)
            assert loop.remove_writer(client.fileno()) is False
        # The position follows what was sent before the error.
        assert 0 < data_file.tell() < len(DATA)

    loop.run_until_complete(main())


def test_cancel_pending_sendfile_unregisters(loop, data_file):
    async def main():
        with tcp_pair() as (client, server):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            sender = asyncio.ensure_future(loop.sock_sendfile(client, data_file))
            await asyncio.sleep(0.05)
            assert not sender.done()
            sender.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sender
            for _ in range(3):
                await asyncio.sleep(0)
            assert loop.remove_writer(client.fileno()) is False
            # The socket is usable for the next operation.
            reader = asyncio.ensure_future(_read_until_eof(loop, server))
            await loop.sock_sendall(client, b"END")
            client.shutdown(socket.SHUT_WR)
            received = await asyncio.wait_for(reader, 10)
            assert received.endswith(b"END")
            assert DATA.startswith(received[:-3])

    loop.run_until_complete(main())


def test_sendfile_blocking_socket_in_debug_mode(loop, data_file):
    loop.set_debug(True)
    with closing(socket.socket()) as (sock,):
        with pytest.raises(ValueError, match="must be non-blocking"):
            loop.run_until_complete(loop.sock_sendfile(sock, data_file))


def test_sendfile_argument_checks(loop, data_file, tmp_path):
    text_path = tmp_path / "text.txt"
    text_path.write_text("text")
    with closing(socket.socket(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as (sock, udp):
        sock.setblocking(False)
        udp.setblocking(False)
        with open(text_path, encoding="utf-8") as text:
            with pytest.raises(ValueError, match="binary mode"):
                loop.run_until_complete(loop.sock_sendfile(sock, text))
        with pytest.raises(ValueError, match="only SOCK_STREAM type"):
            loop.run_until_complete(loop.sock_sendfile(udp, data_file))
        with pytest.raises(TypeError, match="count must be a positive integer"):
            loop.run_until_complete(loop.sock_sendfile(sock, data_file, 0, "count"))
        with pytest.raises(ValueError, match="count must be a positive integer"):
            loop.run_until_complete(loop.sock_sendfile(sock, data_file, 0, 0))
        with pytest.raises(ValueError, match="count must be a positive integer"):
            loop.run_until_complete(loop.sock_sendfile(sock, data_file, 0, -1))
        with pytest.raises(TypeError, match="offset must be a non-negative integer"):
            loop.run_until_complete(loop.sock_sendfile(sock, data_file, "offset"))
        with pytest.raises(ValueError, match="offset must be a non-negative integer"):
            loop.run_until_complete(loop.sock_sendfile(sock, data_file, -1))
    assert data_file.tell() == 0


def test_sendfile_native_uses_os_sendfile(loop, data_file):
    with mock.patch("os.sendfile", wraps=os.sendfile) as spy:
        sent, received = loop.run_until_complete(
            _send_and_collect(loop, lambda sock: loop.sock_sendfile(sock, data_file))
        )
    assert (sent, received) == (len(DATA), DATA)
    assert spy.call_count > 1


def test_sendfile_fallback_does_not_use_os_sendfile(loop):
    with mock.patch("os.sendfile", wraps=os.sendfile) as spy:
        sent, _ = loop.run_until_complete(
            _send_and_collect(loop, lambda sock: loop.sock_sendfile(sock, NoFileno(DATA)))
        )
    assert sent == len(DATA)
    assert spy.call_count == 0


def test_sendfile_failing_before_sending_anything_falls_back(loop, data_file):
    # sendfile() refusing the file outright (EINVAL: not mmap-able) means "use the fallback".
    with mock.patch("os.sendfile", side_effect=OSError(errno.EINVAL, "Invalid argument")):
        sent, received = loop.run_until_complete(
            _send_and_collect(loop, lambda sock: loop.sock_sendfile(sock, data_file, 10, 5000))
        )
        assert (sent, received, data_file.tell()) == (5000, DATA[10:5010], 5010)
        data_file.seek(0)

        async def no_fallback(sock):
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await loop.sock_sendfile(sock, data_file, fallback=False)

        _, received = loop.run_until_complete(_send_and_collect(loop, no_fallback))
    assert received == b""
    assert data_file.tell() == 0


class _Counting(asyncio.Protocol):
    def __init__(self):
        self.received = bytearray()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.received += data


@pytest.mark.parametrize("resume", ["never", "at_once", "after_a_turn", "while_draining"])
def test_transport_sendfile_with_reading_resumed_meanwhile(loop, data_file, resume):
    # loop.sendfile() pauses the transport's reading; resuming it while the file goes out must
    # neither stall the transfer nor the transport's reading and writing afterwards.
    async def main():
        server_side = []
        server = await loop.create_server(
            lambda: server_side.append(_Counting()) or server_side[-1], "127.0.0.1", 0
        )
        async with server:
            transport, client = await loop.create_connection(_Counting, *server.sockets[0].getsockname())
            before = b"b" * (4 * 1024 * 1024) if resume == "while_draining" else b""
            transport.write(before)
            sending = asyncio.ensure_future(loop.sendfile(transport, data_file))
            if resume != "never":
                for _ in range(5 if resume == "while_draining" else 1 if resume == "after_a_turn" else 0):
                    await asyncio.sleep(0)
                transport.resume_reading()
            assert await asyncio.wait_for(sending, 10) == len(DATA)
            after = b"a" * (4 * 1024 * 1024)
            transport.write(after)
            server_side[0].transport.write(b"reply")
            expected = before + DATA + after
            for _ in range(1000):
                if len(server_side[0].received) >= len(expected) and client.received == b"reply":
                    break
                await asyncio.sleep(0.01)
            assert server_side[0].received == expected
            assert client.received == b"reply"
            transport.close()

    loop.run_until_complete(main())
