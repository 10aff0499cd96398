"""asyncio streams (open_connection / start_server and the Unix variants) on top of the loop."""

import asyncio
import contextlib
import pathlib
import socket
import uuid

import pytest
from _netutil import MIXED_SIZES, payload, wait


async def _echo(reader, writer):
    try:
        while data := await reader.read(64 * 1024):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    except OSError:
        pass  # the client went away first
    finally:
        writer.close()
        await writer.wait_closed()


@contextlib.asynccontextmanager
async def _closing(server):
    """Close the server on the way out; wait for its connections only after a clean exit, and not
    forever (a hung connection must not hide the assertion that failed)."""
    try:
        yield server
    finally:
        server.close()
    await wait(server.wait_closed())


async def _echo_server(**kwargs):
    server = await asyncio.start_server(_echo, "127.0.0.1", 0, **kwargs)
    return server, server.sockets[0].getsockname()


def test_echo_with_readline_readexactly_readuntil(loop):
    async def main():
        server, (host, port) = await _echo_server()
        async with _closing(server):
            reader, writer = await wait(asyncio.open_connection(host, port))
            assert writer.get_extra_info("peername") == (host, port)
            assert isinstance(writer.transport, asyncio.Transport)
            writer.write(b"line one\nline two\n")
            writer.writelines([b"exact", b"ly|", b"until\r\n", b"rest"])
            await writer.drain()
            assert await wait(reader.readline()) == b"line one\n"
            assert await wait(reader.readline()) == b"line two\n"
            assert await wait(reader.readexactly(8)) == b"exactly|"
            assert await wait(reader.readuntil(b"\r\n")) == b"until\r\n"
            assert writer.can_write_eof()
            writer.write_eof()
            assert await wait(reader.read(-1)) == b"rest"
            assert reader.at_eof()
            assert await reader.read(10) == b""
            writer.close()
            await wait(writer.wait_closed())
            assert writer.is_closing()

    loop.run_until_complete(main())


def test_readexactly_incomplete(loop):
    async def main():
        server, address = await _echo_server()
        async with _closing(server):
            reader, writer = await wait(asyncio.open_connection(*address))
            writer.write(b"short")
            writer.write_eof()
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await wait(reader.readexactly(10))
            assert info.value.partial == b"short"
            assert info.value.expected == 10
            writer.close()
            await writer.wait_closed()

    loop.run_until_complete(main())


def test_readuntil_limit(loop):
    async def main():
        server, address = await _echo_server()
        async with _closing(server):
            reader, writer = await wait(asyncio.open_connection(*address, limit=16))
            writer.write(b"x" * 40 + b"\n")
            with pytest.raises((asyncio.LimitOverrunError, ValueError)):
                await wait(reader.readuntil(b"\n"))
            writer.close()
            await writer.wait_closed()

    loop.run_until_complete(main())


def test_large_payload_intact(loop):
    data = payload(8 * 1024 * 1024)

    async def main():
        server, address = await _echo_server()
        async with _closing(server):
            reader, writer = await wait(asyncio.open_connection(*address))

            async def send():
                for i in range(0, len(data), 1024 * 1024):
                    writer.write(data[i : i + 1024 * 1024])
                    await writer.drain()
                writer.write_eof()

            sender = asyncio.ensure_future(send())
            received = await wait(reader.read(-1), timeout=20)
            await sender
            assert len(received) == len(data)
            assert received == data
            writer.close()
            await writer.wait_closed()

    loop.run_until_complete(main())


def test_readexactly_of_mixed_sizes(loop):
    # Each message is read before the next is sent, so large reads and small ones alternate.
    data = payload(sum(MIXED_SIZES))

    async def main():
        server, accepted, (reader, writer) = await _accept_one()
        async with _closing(server):
            server_reader, server_writer = await wait(accepted)
            sent = 0
            for size in MIXED_SIZES:
                writer.write(data[sent : sent + size])
                await writer.drain()
                assert await wait(server_reader.readexactly(size)) == data[sent : sent + size]
                sent += size
            writer.write_eof()
            assert await wait(server_reader.read()) == b""
            server_writer.close()
            writer.close()
            await writer.wait_closed()

    loop.run_until_complete(main())


def test_data_after_tcp_urgent_data_is_read(loop):
    async def main():
        server, accepted, (reader, writer) = await _accept_one()
        async with _closing(server):
            server_reader, server_writer = await wait(accepted)
            sock = writer.get_extra_info("socket")
            raw = socket.socket(sock.family, sock.type, fileno=sock.fileno())
            try:
                raw.send(b"abc")
                raw.send(b"!", socket.MSG_OOB)
                raw.send(b"def")
            finally:
                raw.detach()
            assert await wait(server_reader.readexactly(6), timeout=2) == b"abcdef"
            server_writer.close()
            writer.close()
            await writer.wait_closed()

    loop.run_until_complete(main())


def test_drain_waits_for_a_slow_reader(loop):
    async def main():
        accepted = loop.create_future()

        async def hold(reader, writer):
            accepted.set_result((reader, writer))

        server = await asyncio.start_server(hold, "127.0.0.1", 0)
        async with _closing(server):
            reader, writer = await wait(asyncio.open_connection(*server.sockets[0].getsockname()))
            server_reader, server_writer = await wait(accepted)
            writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
            data = payload(4 * 1024 * 1024)
            writer.write(data)
            drain = asyncio.ensure_future(writer.drain())
            await asyncio.sleep(0.05)
            assert not drain.done()  # the peer reads nothing yet: the buffer stays above the limit
            assert await wait(server_reader.readexactly(len(data)), timeout=20) == data
            await wait(drain)
            writer.close()
            assert await wait(server_reader.read()) == b""
            server_writer.close()
            await writer.wait_closed()
            await server_writer.wait_closed()

    loop.run_until_complete(main())


def test_wait_closed_after_close(loop):
    async def main():
        server, address = await _echo_server()
        async with _closing(server):
            reader, writer = await wait(asyncio.open_connection(*address))
            writer.write(b"x")
            writer.close()
            assert writer.is_closing()
            await wait(writer.wait_closed())
            assert writer.transport.is_closing()
            # Writing to a closed stream drops the data; drain() then reports the lost connection.
            writer.write(b"after")
            with pytest.raises(ConnectionResetError):
                await writer.drain()

    loop.run_until_complete(main())


def test_start_server_client_connected_cb_sees_data(loop):
    async def main():
        lines = []
        done = loop.create_future()

        async def handler(reader, writer):
            async for line in reader:
                lines.append(line)
            writer.close()
            await writer.wait_closed()
            done.set_result(None)

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        async with _closing(server):
            reader, writer = await wait(asyncio.open_connection(*server.sockets[0].getsockname()))
            writer.write(b"a\nb\nc")
            writer.write_eof()
            await wait(done)
            assert lines == [b"a\n", b"b\n", b"c"]
            assert await wait(reader.read()) == b""
            writer.close()
            await writer.wait_closed()

    loop.run_until_complete(main())


def test_unix_streams(loop):
    path = str(pathlib.Path("/tmp") / f"fl-{uuid.uuid4().hex[:12]}.sock")

    async def main():
        server = await asyncio.start_unix_server(_echo, path)
        try:
            async with _closing(server):
                reader, writer = await wait(asyncio.open_unix_connection(path))
                assert writer.get_extra_info("peername") == path
                data = payload(3 * 1024 * 1024)
                writer.write(data)
                writer.write_eof()
                assert await wait(reader.read(), timeout=20) == data
                writer.close()
                await writer.wait_closed()
        finally:
            pathlib.Path(path).unlink(missing_ok=True)

    loop.run_until_complete(main())


def test_open_connection_with_sock(loop):
    async def main():
        server, address = await _echo_server()
        async with _closing(server):
            sock = socket.socket()
            sock.setblocking(False)
            await wait(loop.sock_connect(sock, address))
            reader, writer = await wait(asyncio.open_connection(sock=sock))
            writer.write(b"hello\n")
            assert await wait(reader.readline()) == b"hello\n"
            writer.close()
            await writer.wait_closed()

    loop.run_until_complete(main())


async def _accept_one(**start_kwargs):
    """A server that hands over its first connection's (reader, writer); returns the server, a
    future of that pair and the client's (reader, writer)."""
    accepted = asyncio.get_running_loop().create_future()

    async def hold(reader, writer):
        accepted.set_result((reader, writer))

    server = await asyncio.start_server(hold, "127.0.0.1", 0, **start_kwargs)
    client = await wait(asyncio.open_connection(*server.sockets[0].getsockname()))
    return server, accepted, client


async def _until(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def test_reader_over_its_limit_pauses_the_transport(loop):
    data = payload(256 * 1024)

    async def main():
        server, accepted, (reader, writer) = await _accept_one(limit=4096)
        async with _closing(server):
            server_reader, server_writer = await wait(accepted)
            writer.write(data)
            # Nothing reads on the server: once the reader holds more than twice its limit, its
            # transport stops reading.
            await _until(lambda: not server_writer.transport.is_reading())
            await asyncio.sleep(0.05)
            assert not server_writer.transport.is_reading()
            received = await wait(server_reader.readexactly(len(data)), timeout=20)
            assert received == data
            assert server_writer.transport.is_reading()
            writer.close()
            server_writer.close()
            await writer.wait_closed()
            await server_writer.wait_closed()

    loop.run_until_complete(main())


@pytest.mark.allow_exception_handler_calls
def test_reader_buffer_that_cannot_grow_is_a_fatal_error(loop, handler_calls):
    async def main():
        server, accepted, (reader, writer) = await _accept_one()
        async with _closing(server):
            server_reader, server_writer = await wait(accepted)
            # A live export of the reader's buffer: appending to it raises BufferError.
            view = memoryview(server_reader._buffer)
            writer.write(b"data")
            with pytest.raises(BufferError):
                await wait(server_reader.read(10))
            view.release()
            assert server_writer.transport.is_closing()
            assert await wait(reader.read()) == b""
            writer.close()
            await writer.wait_closed()

    loop.run_until_complete(main())
    assert [(c["message"], type(c["exception"])) for c in handler_calls] == [
        ("Fatal error: protocol.data_received() call failed.", BufferError)
    ]


def test_reader_buffer_that_cannot_grow_after_large_reads_is_a_fatal_error(loop, handler_calls):
    big = payload(300_000)

    async def main():
        server, accepted, (reader, writer) = await _accept_one()
        async with _closing(server):
            server_reader, server_writer = await wait(accepted)
            writer.write(big)
            await writer.drain()
            assert await wait(server_reader.readexactly(len(big))) == big
            view = memoryview(server_reader._buffer)
            writer.write(big)
            with pytest.raises(BufferError):
                await wait(server_reader.read(10))
            view.release()
            assert server_writer.transport.is_closing()
            # Closed with the rest of the message unread: the kernel resets the connection.
            with pytest.raises(ConnectionResetError):
                await wait(reader.read())
            writer.close()

    loop.run_until_complete(main())
    assert [(c["message"], type(c["exception"])) for c in handler_calls] == [
        ("Fatal error: protocol.data_received() call failed.", BufferError)
    ]


def test_reader_subclass_and_patched_feed_data_are_called(loop, monkeypatch):
    fed = []

    class CountingReader(asyncio.StreamReader):
        def feed_data(self, data):
            fed.append(("subclass", bytes(data)))
            super().feed_data(data)

    async def main():
        loop_ = asyncio.get_running_loop()
        server, _ = await _echo_server()
        async with _closing(server):
            address = server.sockets[0].getsockname()
            reader = CountingReader(loop=loop_)
            transport, _ = await loop_.create_connection(
                lambda: asyncio.StreamReaderProtocol(reader, loop=loop_), *address
            )
            transport.write(b"one")
            assert await wait(reader.readexactly(3)) == b"one"
            transport.close()

            original = asyncio.StreamReader.feed_data

            def patched(self, data):
                fed.append(("patched", bytes(data)))
                original(self, data)

            reader, writer = await wait(asyncio.open_connection(*address))
            await wait(writer.drain())
            # Replaced while the connection is open: the next reads go through it.
            monkeypatch.setattr(asyncio.StreamReader, "feed_data", patched)
            writer.write(b"two")
            assert await wait(reader.readexactly(3)) == b"two"
            writer.close()
            await writer.wait_closed()

    loop.run_until_complete(main())
    assert b"".join(data for kind, data in fed if kind == "subclass") == b"one"
    # Both ends read through the patched method: the echo server, then the client.
    assert b"".join(data for kind, data in fed if kind == "patched") == b"twotwo"


@pytest.mark.parametrize("replaced", ["reader.feed_data", "protocol.data_received"])
def test_read_method_replaced_on_the_instance_is_called(loop, replaced):
    # As `mock.patch.object(reader, "feed_data")` does: the replacement sees every read.
    async def main():
        async def handler(reader, writer):
            await reader.readline()  # once the client has replaced the method
            writer.write(b"one\n")
            await writer.drain()
            await reader.read()
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        async with server:
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            seen = []
            owner = reader if replaced == "reader.feed_data" else writer.transport.get_protocol()
            name = replaced.split(".")[1]
            original = getattr(owner, name)

            def spy(data):
                seen.append(bytes(data))
                original(data)

            setattr(owner, name, spy)
            writer.write(b"go\n")
            assert await wait(reader.readline()) == b"one\n"
            assert seen == [b"one\n"]
            delattr(owner, name)
            writer.close()
            await writer.wait_closed()

    loop.run_until_complete(main())
