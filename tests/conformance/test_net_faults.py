"""Network failures: refused and reset connections, writing to a dead peer, cancellation while
connecting or reading, running out of fds on accept, and fd hygiene."""

import asyncio
import errno
import gc
import json
import os
import socket

import pytest
from _netutil import Recorder, accept, payload, reset_on_close, shrink_buffers, stalled_listener, wait
from _sockutil import free_port, listener, open_fds


async def _pair(loop, factory=Recorder):
    with listener() as lsock:
        transport, proto = await wait(loop.create_connection(factory, *lsock.getsockname()))
        peer = await accept(loop, lsock)
    return transport, proto, peer


def test_create_connection_refused(loop):
    async def main():
        port = free_port()
        with pytest.raises(ConnectionRefusedError) as info:
            await loop.create_connection(Recorder, "127.0.0.1", port)
        assert info.value.errno == errno.ECONNREFUSED
        assert str(port) in str(info.value)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

    loop.run_until_complete(main())


def test_peer_reset_reaches_connection_lost(loop):
    async def main():
        transport, proto, peer = await _pair(loop)
        reset_on_close(peer)
        peer.close()
        exc = await wait(proto.lost)
        assert isinstance(exc, ConnectionResetError)
        assert exc.errno == errno.ECONNRESET
        assert exc.__traceback__ is not None  # caught by the loop, as a raised error is
        assert transport.is_closing()
        assert proto.events == ["made", "lost"]
        # Writing to the dead transport is silently ignored.
        transport.write(b"into the void")
        transport.write(b"twice")
        await asyncio.sleep(0.01)
        assert proto.events == ["made", "lost"]

    loop.run_until_complete(main())


def test_peer_reset_reaches_stream_reader(loop):
    async def main():
        with listener() as lsock:
            reader, writer = await wait(asyncio.open_connection(*lsock.getsockname()))
            peer = await accept(loop, lsock)
        reset_on_close(peer)
        peer.close()
        with pytest.raises(ConnectionResetError):
            await wait(reader.read(100))
        writer.close()
        with pytest.raises(ConnectionResetError):
            await writer.wait_closed()

    loop.run_until_complete(main())


def _frames_from(tb):
    frame = tb.tb_frame
    while frame is not None:
        yield frame.f_code
        frame = frame.f_back


def test_write_error_has_the_traceback_of_the_write(loop):
    # The stdlib catches a failed send inside `transport.write()`: the error the protocol gets
    # has a traceback, and through it the frames that called `write()` (which code that logs or
    # keeps the error sees).
    async def main():
        transport, proto, peer = await _pair(loop)
        transport.pause_reading()  # so the reset is found by the write, not by a read
        reset_on_close(peer)
        peer.close()
        await asyncio.sleep(0.05)
        write_here = main.__code__
        transport.write(b"into a reset connection")
        exc = await wait(proto.lost)
        assert isinstance(exc, (BrokenPipeError, ConnectionResetError))
        assert exc.__traceback__ is not None
        assert write_here in set(_frames_from(exc.__traceback__))

    loop.run_until_complete(main())


def test_peer_closes_during_a_large_write(loop):
    async def main():
        transport, proto, peer = await _pair(loop)
        shrink_buffers(peer, transport.get_extra_info("socket"))
        transport.write(payload(8 * 1024 * 1024))
        assert transport.get_write_buffer_size() > 0
        await wait(loop.sock_recv(peer, 1000))
        peer.close()  # with unread data: the kernel answers further segments with RST
        exc = await wait(proto.lost)
        assert isinstance(exc, (BrokenPipeError, ConnectionResetError))
        assert transport.is_closing()
        assert transport.get_write_buffer_size() == 0
        transport.write(b"more")  # no exception after the connection is gone
        assert proto.events.count("lost") == 1

    loop.run_until_complete(main())


def test_write_after_close_is_dropped(loop):
    async def main():
        transport, proto, peer = await _pair(loop)
        with peer:
            transport.write(b"before")
            await asyncio.sleep(0.01)  # flushed: the buffer is empty again
            transport.close()
            transport.write(b"after close")  # silently dropped
            transport.write(b"still dropped")
            assert await wait(proto.lost) is None
            transport.write(b"after lost")
            received = bytearray()
            while chunk := await wait(loop.sock_recv(peer, 1000)):
                received += chunk
            assert received == b"before"

    loop.run_until_complete(main())


def test_cancel_create_connection(loop):
    async def main():
        with stalled_listener() as lsock:
            gc.collect()  # finalize whatever earlier tests left behind first
            before = open_fds()
            task = asyncio.ensure_future(loop.create_connection(Recorder, *lsock.getsockname()))
            await asyncio.sleep(0.1)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.01)
            gc.collect()
            assert open_fds() == before

    loop.run_until_complete(main())


def test_timeout_on_open_connection(loop):
    async def main():
        with stalled_listener() as lsock:
            gc.collect()  # finalize whatever earlier tests left behind first
            before = open_fds()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.open_connection(*lsock.getsockname()), 0.1)
            await asyncio.sleep(0.01)
            gc.collect()
            assert open_fds() == before

    loop.run_until_complete(main())


def test_cancel_sock_connect(loop):
    async def main():
        with stalled_listener() as lsock, socket.socket() as sock:
            sock.setblocking(False)
            task = asyncio.ensure_future(loop.sock_connect(sock, lsock.getsockname()))
            await asyncio.sleep(0.1)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0)
            assert loop.remove_writer(sock.fileno()) is False

    loop.run_until_complete(main())


def test_cancel_readexactly_keeps_the_stream_usable(loop):
    async def main():
        with listener() as lsock:
            reader, writer = await wait(asyncio.open_connection(*lsock.getsockname()))
            peer = await accept(loop, lsock)
        with peer:
            await loop.sock_sendall(peer, b"12345")
            task = asyncio.ensure_future(reader.readexactly(10))
            await asyncio.sleep(0.05)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The partial data stays in the reader.
            await loop.sock_sendall(peer, b"67890")
            assert await wait(reader.readexactly(10)) == b"1234567890"
            writer.close()
            await writer.wait_closed()

    loop.run_until_complete(main())


@pytest.mark.allow_exception_handler_calls
def test_accept_emfile_keeps_serving(loop, script, handler_calls):
    result = script.run(
        """
        import asyncio, errno, json, os, resource, socket

        async def main():
            loop = asyncio.get_running_loop()
            handled = []
            loop.set_exception_handler(lambda lp, ctx: handled.append(ctx))
            made = []

            class P(asyncio.Protocol):
                def connection_made(self, transport):
                    made.append(transport)

            server = await loop.create_server(P, "127.0.0.1", 0)
            address = server.sockets[0].getsockname()
            clients = [socket.socket() for _ in range(3)]
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            # No fd is free below the limit any more: the next accept() fails with EMFILE.
            top = max(int(name) for name in os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, hard))
            fillers = []
            try:
                while True:
                    fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
            for c in clients:
                c.setblocking(False)
                c.connect_ex(address)
            for _ in range(30):
                await asyncio.sleep(0.01)
            during = len(made)
            for fd in fillers:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            for _ in range(300):
                if len(made) == len(clients):
                    break
                await asyncio.sleep(0.01)
            errors = [getattr(ctx.get("exception"), "errno", None) for ctx in handled]
            serving = server.is_serving()
            for t in made:
                t.close()
            for c in clients:
                c.close()
            server.close()
            await server.wait_closed()
            print(json.dumps({"during": during, "after": len(made), "errors": errors, "serving": serving}))

        run(main())
        """
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["during"] == 0
    assert outcome["after"] == 3
    assert outcome["serving"] is True
    assert outcome["errors"] and set(outcome["errors"]) == {errno.EMFILE}
    assert not handler_calls


def test_no_fd_leak_after_connections(loop):
    async def main():
        # One round first: lazily created loop internals (executor, self-pipe) are not leaks.
        await _server_round(loop)
        gc.collect()
        before = open_fds()
        for _ in range(3):
            await _server_round(loop)
        gc.collect()
        assert open_fds() == before

    loop.run_until_complete(main())


async def _server_round(loop):
    protos = []
    server = await loop.create_server(lambda: protos.append(Recorder()) or protos[-1], "127.0.0.1", 0)
    reader, writer = await wait(asyncio.open_connection(*server.sockets[0].getsockname()))
    writer.write(b"ping")
    await writer.drain()
    for _ in range(500):
        if protos and protos[0].data:
            break
        await asyncio.sleep(0.01)
    protos[0].transport.write(b"pong")
    assert await wait(reader.readexactly(4)) == b"pong"
    writer.close()
    await writer.wait_closed()
    await wait(protos[0].lost)
    server.close()
    await server.wait_closed()
    # A refused connection and a UDP endpoint as well.
    with pytest.raises(ConnectionRefusedError):
        await loop.create_connection(Recorder, "127.0.0.1", free_port())
    transport, proto = await wait(
        loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    )
    transport.close()
    await asyncio.sleep(0.01)


def test_no_fd_leak_after_pipes(loop):
    async def main():
        gc.collect()
        before = open_fds()
        for _ in range(3):
            r, w = os.pipe()
            rt, rp = await wait(loop.connect_read_pipe(Recorder, open(r, "rb", buffering=0)))
            wt, wp = await wait(loop.connect_write_pipe(Recorder, open(w, "wb", buffering=0)))
            wt.write(b"data")
            wt.close()
            assert await rp.read(4) == b"data"
            await wait(rp.lost)
            await wait(wp.lost)
        gc.collect()
        assert open_fds() == before

    loop.run_until_complete(main())
