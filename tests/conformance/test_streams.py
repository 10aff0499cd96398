"""asyncio streams (open_connection / start_server and the Unix variants) on top of the loop."""

import asyncio
import contextlib
import pathlib
import socket
import uuid

import pytest
from _netutil import payload, wait


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
