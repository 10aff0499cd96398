"""The stream transport API (on TCP): types, writing, closing, reading control, flow control,
extra info, protocol switching, BufferedProtocol and half-close."""

import asyncio
import gc
import socket
import sys
import warnings

import pytest
from _netutil import (
    MIXED_SIZES,
    Recorder,
    accept,
    payload,
    recv_exactly,
    recv_until_eof,
    shrink_buffers,
    wait,
)
from _sockutil import listener


async def transport_pair(loop, factory=Recorder):
    """A transport over a fresh TCP connection, and the raw (non-blocking) peer socket.

    The transport owns its socket; the caller closes the peer."""
    with listener() as lsock:
        client = socket.socket()
        client.setblocking(False)
        await wait(loop.sock_connect(client, lsock.getsockname()))
        peer = await accept(loop, lsock)
    transport, proto = await wait(loop.create_connection(factory, sock=client))
    return transport, proto, peer


async def fill_until_paused(transport, proto, chunk=256 * 1024, limit=64 * 1024 * 1024):
    """Write to a non-reading peer until the protocol is paused; return the bytes written."""
    written = bytearray()
    while proto.pauses == 0:
        assert len(written) < limit, "pause_writing() never called"
        data = payload(chunk)
        transport.write(data)
        written += data
    return bytes(written)


def test_transport_types(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            assert isinstance(transport, asyncio.Transport)
            assert isinstance(transport, asyncio.ReadTransport)
            assert isinstance(transport, asyncio.WriteTransport)
            assert isinstance(transport, asyncio.BaseTransport)
            assert not isinstance(transport, asyncio.DatagramTransport)
            assert not transport.is_closing()
            assert transport.is_reading()
            assert transport.get_protocol() is proto
            transport.close()

    loop.run_until_complete(main())


def test_transport_fd_is_off_limits(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            fd = transport.get_extra_info("socket").fileno()
            for method in (loop.add_reader, loop.add_writer):
                with pytest.raises(RuntimeError):
                    method(fd, lambda: None)
            for method in (loop.remove_reader, loop.remove_writer):
                with pytest.raises(RuntimeError):
                    method(fd)
            # The transport still works.
            await loop.sock_sendall(peer, b"fine")
            assert await proto.read(4) == b"fine"
            transport.close()
            await wait(proto.lost)
            # Once the transport is closed the fd is free again.
            assert loop.remove_reader(fd) is False

    loop.run_until_complete(main())


def test_write_and_writelines(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            transport.write(b"bytes,")
            transport.write(bytearray(b"bytearray,"))
            transport.write(memoryview(b"..memoryview,")[2:])
            transport.write(b"")
            transport.writelines([b"one,", bytearray(b"two,"), memoryview(b"three")])
            transport.writelines([])
            expected = b"bytes,bytearray,memoryview,one,two,three"
            assert await recv_exactly(loop, peer, len(expected)) == expected
            with pytest.raises(TypeError, match="^data argument must be a bytes-like object, not 'str'$"):
                transport.write("text")
            with pytest.raises(TypeError, match="not 'int'$"):
                transport.write(42)
            assert not transport.is_closing()
            transport.close()
            assert await recv_until_eof(loop, peer) == b""

    loop.run_until_complete(main())


def test_methods_called_through_the_class(loop):
    # Code that calls a transport's methods through its class reaches the same behaviour.
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            cls = type(transport)
            cls.write(transport, b"one,")
            cls.writelines(transport, [b"two,", b"three"])
            assert cls.get_write_buffer_size(transport) == 0
            assert not cls.is_closing(transport)
            assert cls.is_reading(transport)
            cls.write_eof(transport)
            assert await recv_until_eof(loop, peer) == b"one,two,three"
            transport.close()
            assert cls.is_closing(transport)

    loop.run_until_complete(main())


def test_write_of_a_non_contiguous_buffer_is_a_fatal_error(loop, handler_calls):
    # The type check passes (a memoryview), but its bytes cannot be sent: the transport fails.
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            transport.write(memoryview(b"abcdef")[::2])
            assert transport.is_closing()
            await wait(proto.lost)
            assert isinstance(proto.lost_exc, BufferError)
            assert [ctx["message"] for ctx in handler_calls] == ["Fatal write error on socket transport"]

    loop.run_until_complete(main())


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.11's memoryview gives a 0-dim view a length")
def test_write_of_a_0_dim_memoryview_is_refused(loop):
    # The stdlib's `if not data:` asks the view for its length, which a 0-dim view has not.
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            scalar = memoryview(b"abcd").cast("i", shape=[])
            with pytest.raises(TypeError, match="0-dim"):
                transport.write(scalar)
            assert not transport.is_closing()
            transport.write(b"end")
            transport.close()
            assert await recv_until_eof(loop, peer) == b"end"

    loop.run_until_complete(main())


def test_writelines_of_a_non_contiguous_buffer(loop, handler_calls):
    # 3.11 joins the pieces first, which refuses the view; 3.12+ takes it and fails to send it.
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            pieces = [b"abc", memoryview(b"abcdef")[::2]]
            if sys.version_info < (3, 12):
                with pytest.raises(TypeError):
                    transport.writelines(pieces)
                assert not transport.is_closing()
                transport.close()
                assert await recv_until_eof(loop, peer) == b""
                assert handler_calls == []
                return
            transport.writelines(pieces)
            assert transport.is_closing()
            await wait(proto.lost)
            assert isinstance(proto.lost_exc, BufferError)
            assert [ctx["message"] for ctx in handler_calls] == ["Fatal write error on socket transport"]
            assert await recv_until_eof(loop, peer) == b""

    loop.run_until_complete(main())


@pytest.mark.parametrize("piece", ["text", 7, None])
def test_writelines_of_a_piece_that_is_not_a_buffer(loop, piece):
    # 3.11 joins the pieces; 3.12+ takes a memoryview of each, which words the refusal.
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            name = type(piece).__name__
            if sys.version_info >= (3, 12):
                message = f"^memoryview: a bytes-like object is required, not '{name}'$"
            else:
                message = f"^sequence item 1: expected a bytes-like object, {name} found$"
            with pytest.raises(TypeError, match=message):
                transport.writelines([b"ok", piece])
            assert not transport.is_closing()
            transport.close()
            assert await recv_until_eof(loop, peer) == b""

    loop.run_until_complete(main())


def test_writelines_of_nothing(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            for nothing in ([], ()):
                transport.writelines(nothing)
            if sys.version_info >= (3, 12):
                transport.writelines(None)  # falsy: returns before looking at it
            else:
                with pytest.raises(TypeError):
                    transport.writelines(None)  # 3.11 joins first
                with pytest.raises(TypeError):
                    transport.writelines(0)
            transport.write(b"end")
            transport.close()
            assert await recv_until_eof(loop, peer) == b"end"

    loop.run_until_complete(main())


def test_write_eof_half_close(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            assert transport.can_write_eof()
            transport.write(b"request")
            transport.write_eof()
            transport.write_eof()  # twice is fine
            assert not transport.is_closing()
            assert await recv_until_eof(loop, peer) == b"request"
            with pytest.raises(RuntimeError):
                transport.write(b"more")
            # The read side is still open.
            await loop.sock_sendall(peer, b"response")
            assert await proto.read(8) == b"response"
            peer.shutdown(socket.SHUT_WR)
            assert await wait(proto.lost) is None
            assert proto.events == ["made", "data", "eof", "lost"]

    loop.run_until_complete(main())


def test_close_flushes_then_loses_connection_once(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            shrink_buffers(peer, transport.get_extra_info("socket"))
            data = payload(4 * 1024 * 1024)
            transport.write(data)
            assert transport.get_write_buffer_size() > 0
            transport.close()
            assert transport.is_closing()
            assert not transport.is_reading()
            transport.close()
            await asyncio.sleep(0.01)
            assert not proto.lost.done()  # still flushing
            assert await recv_until_eof(loop, peer) == data
            assert await wait(proto.lost) is None
            await asyncio.sleep(0.01)
            assert proto.events.count("lost") == 1
            assert transport.get_write_buffer_size() == 0

    loop.run_until_complete(main())


def test_buffered_writes_of_every_kind_arrive_whole_and_in_order(loop):
    # Writes that the socket cannot take at once are buffered: bytes (which ferroloop keeps by
    # reference), bytearray and memoryview (copied), a bytes subclass, and writelines.
    class Tagged(bytes):
        pass

    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            shrink_buffers(peer, transport.get_extra_info("socket"))
            big = payload(3 * 1024 * 1024)
            pieces = [
                big,
                bytearray(b"mutable" * 1000),
                memoryview(big)[1000:200_000],
                Tagged(b"subclass" * 5000),
                b"",
                big[::-1],
            ]
            for piece in pieces:
                transport.write(piece)
            transport.writelines([b"tail-", bytearray(b"lines")])
            expected = b"".join(bytes(p) for p in pieces) + b"tail-lines"
            size = transport.get_write_buffer_size()
            assert 0 < size <= len(expected)
            transport.close()
            assert await recv_until_eof(loop, peer) == expected
            assert await wait(proto.lost) is None
            assert transport.get_write_buffer_size() == 0

    loop.run_until_complete(main())


def test_reads_of_mixed_sizes_arrive_whole_and_in_order(loop):
    class Chunks(Recorder):
        def data_received(self, data):
            assert type(data) is bytes
            super().data_received(data)

    async def main():
        transport, proto, peer = await transport_pair(loop, Chunks)
        with peer:
            data = payload(sum(MIXED_SIZES))
            sent = 0
            for size in MIXED_SIZES:
                await wait(loop.sock_sendall(peer, data[sent : sent + size]))
                sent += size
                assert await proto.read(sent) == data[:sent]
            transport.close()
            await wait(proto.lost)

    loop.run_until_complete(main())


class ChunkSizes(Recorder):
    def __init__(self):
        super().__init__()
        self.sizes = []

    def data_received(self, data):
        self.sizes.append(len(data))
        super().data_received(data)


@pytest.mark.parametrize("max_size", [1000, 300 * 1024])
def test_max_size_set_on_a_transport_bounds_each_read(loop, max_size):
    async def main():
        transport, proto, peer = await transport_pair(loop, ChunkSizes)
        with peer:
            assert transport.max_size == type(transport).max_size == 256 * 1024
            transport.max_size = max_size
            assert transport.max_size == max_size
            assert type(transport).max_size == 256 * 1024
            data = payload(5 * max_size + 7)
            await wait(loop.sock_sendall(peer, data))
            assert await proto.read(len(data)) == data
            assert max(proto.sizes) <= max_size
            assert len(proto.sizes) >= 6
            transport.close()
            await wait(proto.lost)

    loop.run_until_complete(main())


def test_max_size_set_on_a_stream_transport(loop):
    async def main():
        with listener() as lsock:
            client = socket.create_connection(lsock.getsockname())
            reader, writer = await wait(asyncio.open_connection(sock=client))
            peer, _ = lsock.accept()
        with peer:
            writer.transport.max_size = 100
            data = payload(100_000)
            peer.sendall(data)
            assert await wait(reader.readexactly(len(data))) == data
            writer.close()
            await wait(writer.wait_closed())

    loop.run_until_complete(main())


def test_negative_max_size_is_a_fatal_read_error(loop, handler_calls):
    async def main():
        transport, proto, peer = await transport_pair(loop, ChunkSizes)
        with peer:
            transport.max_size = -1
            await wait(loop.sock_sendall(peer, b"data"))
            exc = await wait(proto.lost)
            assert isinstance(exc, ValueError)
            assert proto.data == b""

    loop.run_until_complete(main())
    assert len(handler_calls) == 1
    assert handler_calls[0]["message"] == "Fatal read error on socket transport"
    assert isinstance(handler_calls[0]["exception"], ValueError)


def test_max_size_too_large_to_allocate_is_a_fatal_read_error(loop, handler_calls):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            transport.max_size = 1 << 50  # more than a process can address
            await wait(loop.sock_sendall(peer, b"data"))
            assert isinstance(await wait(proto.lost), MemoryError)
            assert proto.data == b""

    loop.run_until_complete(main())
    assert [c["message"] for c in handler_calls] == ["Fatal read error on socket transport"]


def test_close_does_not_deliver_more_data(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            transport.close()
            await loop.sock_sendall(peer, b"too late")
            assert await wait(proto.lost) is None
            await asyncio.sleep(0.01)
            assert proto.data == b""
            assert proto.events == ["made", "lost"]

    loop.run_until_complete(main())


def test_abort_drops_buffer(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            shrink_buffers(peer, transport.get_extra_info("socket"))
            transport.write(b"x" * (4 * 1024 * 1024))
            transport.abort()
            assert transport.is_closing()
            assert await wait(proto.lost) is None
            transport.close()
            transport.abort()
            await asyncio.sleep(0.01)
            assert proto.events == ["made", "pause", "lost"]
            received = 0
            try:
                while chunk := await wait(loop.sock_recv(peer, 1 << 20)):
                    received += len(chunk)
            except ConnectionResetError:
                pass
            assert received < 4 * 1024 * 1024

    loop.run_until_complete(main())


def test_pause_and_resume_reading(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            assert transport._paused is False  # the stdlib's attribute, which some code reads
            transport.pause_reading()
            assert not transport.is_reading() and transport._paused is True
            transport.pause_reading()  # idempotent
            await loop.sock_sendall(peer, b"waiting")
            await asyncio.sleep(0.05)
            assert proto.data == b""
            transport.resume_reading()
            assert transport.is_reading() and transport._paused is False
            transport.resume_reading()
            assert await proto.read(7) == b"waiting"
            # EOF is held back while paused as well.
            transport.pause_reading()
            peer.shutdown(socket.SHUT_WR)
            await asyncio.sleep(0.05)
            assert not proto.eof.done()
            transport.resume_reading()
            await wait(proto.eof)
            assert await wait(proto.lost) is None
            assert not transport.is_reading()

    loop.run_until_complete(main())


def test_data_waiting_when_reading_resumes_comes_after_queued_callbacks(loop):
    # The stdlib's reader runs once the next poll reports the fd: after the callbacks already
    # queued (here, the task going on after sleep(0)) and in turn order with later ones.
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            transport.pause_reading()
            await loop.sock_sendall(peer, b"waiting")
            await asyncio.sleep(0.05)
            transport.resume_reading()
            proto.events.append("resumed")
            loop.call_soon(proto.events.append, "queued")
            await asyncio.sleep(0)
            proto.events.append("after sleep(0)")
            assert await proto.read(7) == b"waiting"
            transport.close()
            await wait(proto.lost)
        return proto.events

    events = loop.run_until_complete(main())
    assert events.index("data") > events.index("after sleep(0)") > events.index("queued")


def test_write_buffer_limits(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            transport.set_write_buffer_limits(high=1000)
            assert transport.get_write_buffer_limits() == (250, 1000)
            transport.set_write_buffer_limits(high=1000, low=10)
            assert transport.get_write_buffer_limits() == (10, 1000)
            transport.set_write_buffer_limits(low=100)
            assert transport.get_write_buffer_limits() == (100, 400)
            transport.set_write_buffer_limits(high=0)
            assert transport.get_write_buffer_limits() == (0, 0)
            with pytest.raises(ValueError):
                transport.set_write_buffer_limits(high=10, low=20)
            with pytest.raises(ValueError):
                transport.set_write_buffer_limits(high=-1)
            transport.set_write_buffer_limits()
            assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            assert transport.get_write_buffer_size() == 0
            # Any number is a limit, as in the stdlib.
            transport.set_write_buffer_limits(high=2**70)
            assert transport.get_write_buffer_limits() == (2**68, 2**70)
            transport.set_write_buffer_limits(high=float("inf"), low=1.5)
            assert transport.get_write_buffer_limits() == (1.5, float("inf"))
            with pytest.raises(ValueError):
                transport.set_write_buffer_limits(high=float("nan"))
            transport.close()

    loop.run_until_complete(main())


def test_pause_and_resume_writing(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            shrink_buffers(peer, transport.get_extra_info("socket"))
            written = await fill_until_paused(transport, proto)
            # pause_writing() ran inside write(), before any loop iteration.
            assert proto.events == ["made", "pause"]
            assert transport.get_write_buffer_size() > 64 * 1024
            received = bytearray()
            while proto.resumes == 0:
                received += await wait(loop.sock_recv(peer, 1 << 20))
            assert proto.events == ["made", "pause", "resume"]
            assert transport.get_write_buffer_size() <= 16 * 1024
            received += await recv_exactly(loop, peer, len(written) - len(received))
            assert received == written
            assert transport.get_write_buffer_size() == 0
            transport.close()

    loop.run_until_complete(main())


def test_fractional_limits_compare_as_numbers(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            shrink_buffers(peer, transport.get_extra_info("socket"))
            transport.set_write_buffer_limits(high=float("inf"), low=0)
            transport.write(b"y" * (2 * 1024 * 1024))
            size = transport.get_write_buffer_size()
            assert size > 1024 and proto.pauses == 0
            # A buffer of `size` bytes is past `size - 0.5`, and at most `size + 0.5`.
            transport.set_write_buffer_limits(high=size + 0.5, low=0.5)
            assert proto.pauses == 0
            transport.set_write_buffer_limits(high=size - 0.5, low=0.5)
            assert proto.events == ["made", "pause"]
            # Resumed only once the buffer is empty: no whole number of bytes is <= 0.5 but 0.
            received = bytearray()
            while transport.get_write_buffer_size():
                assert proto.resumes == 0
                received += await wait(loop.sock_recv(peer, 1 << 20))
            await asyncio.sleep(0)
            assert proto.events == ["made", "pause", "resume"]
            transport.close()
            received += await recv_until_eof(loop, peer)
            assert len(received) == 2 * 1024 * 1024

    loop.run_until_complete(main())


def test_lowering_limits_pauses_at_once(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            shrink_buffers(peer, transport.get_extra_info("socket"))
            transport.set_write_buffer_limits(high=64 * 1024 * 1024)
            transport.write(b"y" * (2 * 1024 * 1024))
            size = transport.get_write_buffer_size()
            assert size > 1024 and proto.pauses == 0
            transport.set_write_buffer_limits(high=1024)
            assert proto.events == ["made", "pause"]
            transport.abort()
            await wait(proto.lost)
            # Closing a paused transport does not resume it.
            assert proto.resumes == 0

    loop.run_until_complete(main())


def test_extra_info(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            assert transport.get_extra_info("peername") == peer.getsockname()
            assert transport.get_extra_info("sockname") == peer.getpeername()
            sock = transport.get_extra_info("socket")
            assert isinstance(sock, asyncio.trsock.TransportSocket)
            assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
            assert sock.getpeername() == peer.getsockname()
            assert transport.get_extra_info("no-such-key") is None
            assert transport.get_extra_info("no-such-key", "dflt") == "dflt"
            assert transport.get_extra_info("sslcontext") is None
            transport.close()
            await wait(proto.lost)
            # Still answered after the connection is gone.
            assert transport.get_extra_info("peername") == peer.getsockname()

    loop.run_until_complete(main())


def test_set_protocol(loop):
    async def main():
        transport, first, peer = await transport_pair(loop)
        with peer:
            await loop.sock_sendall(peer, b"for first")
            assert await first.read(9) == b"for first"
            second = Recorder()
            transport.set_protocol(second)
            assert transport.get_protocol() is second
            await loop.sock_sendall(peer, b"for second")
            assert await second.read(10) == b"for second"
            assert first.data == b"for first"
            peer.close()
            assert await wait(second.lost) is None
            assert not first.lost.done()
            assert second.events == ["data", "eof", "lost"]

    loop.run_until_complete(main())


class Buffered(asyncio.BufferedProtocol):
    def __init__(self, size=10):
        loop = asyncio.get_running_loop()
        self.buf = bytearray(size)
        self.hints = []
        self.received = bytearray()
        self.updates = 0
        self.eof = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.hints.append(sizehint)
        return self.buf

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= len(self.buf)
        self.received += self.buf[:nbytes]
        self.updates += 1

    def eof_received(self):
        self.eof.set_result(None)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_buffered_protocol(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop, Buffered)
        with peer:
            data = payload(1000)
            await loop.sock_sendall(peer, data)
            peer.shutdown(socket.SHUT_WR)
            await wait(proto.eof)
            assert proto.received == data
            assert proto.updates >= 100  # never more than the 10-byte buffer at a time
            assert set(proto.hints) == {-1}
            assert await wait(proto.lost) is None

    loop.run_until_complete(main())


def test_buffered_protocol_is_asked_for_a_buffer_only_when_the_socket_is_readable(loop):
    """`get_buffer()` comes before each read of data or of the EOF, and at no other time: not
    after a read that filled the buffer when nothing more came, nor on `resume_reading()` with
    nothing waiting. (A protocol that returns an empty buffer when it expects nothing more would
    otherwise lose its connection.)"""

    async def turns(n=10):
        for _ in range(n):
            await asyncio.sleep(0)

    async def until(condition):
        while not condition():
            await asyncio.sleep(0.001)

    async def main():
        transport, proto, peer = await transport_pair(loop, lambda: Buffered(4))
        with peer:
            peer.send(b"abcd")  # exactly the buffer's size
            await wait(until(lambda: len(proto.received) == 4))
            await turns()
            assert len(proto.hints) == 1
            transport.pause_reading()
            await turns()
            transport.resume_reading()
            await turns()
            assert len(proto.hints) == 1
            peer.send(b"ef")
            await wait(until(lambda: len(proto.received) == 6))
            await turns()
            assert len(proto.hints) == 2
            peer.shutdown(socket.SHUT_WR)
            await wait(proto.eof)
            assert len(proto.hints) == 3  # asked for before the read that finds the EOF
            assert proto.received == b"abcdef"
            assert await wait(proto.lost) is None

    loop.run_until_complete(main())


@pytest.mark.parametrize("factory", [Recorder, Buffered], ids=["protocol", "buffered"])
def test_data_after_tcp_urgent_data_is_read(loop, factory):
    # A read stops at the urgent byte's mark (which, not inline, is left out of the stream): the
    # data after it must still be delivered without more arriving.
    async def main():
        transport, proto, peer = await transport_pair(loop, factory)
        with peer:
            peer.send(b"abc")
            peer.send(b"!", socket.MSG_OOB)
            peer.send(b"def")

            async def received():
                got = lambda: bytes(proto.received if factory is Buffered else proto.data)  # noqa: E731
                while len(got()) < 6:
                    await asyncio.sleep(0.01)
                return got()

            assert await wait(received(), timeout=2) == b"abcdef"
            transport.close()
            await wait(proto.lost)

    loop.run_until_complete(main())


def test_buffered_protocol_large_buffer(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop, lambda: Buffered(1 << 20))
        with peer:
            data = payload(3 * 1024 * 1024)
            sender = asyncio.ensure_future(loop.sock_sendall(peer, data))
            await wait(sender)
            peer.shutdown(socket.SHUT_WR)
            await wait(proto.eof)
            assert proto.received == data

    loop.run_until_complete(main())


def test_switch_between_plain_and_buffered_protocols(loop):
    async def main():
        transport, plain, peer = await transport_pair(loop)
        with peer:
            await loop.sock_sendall(peer, b"plain")
            assert await plain.read(5) == b"plain"
            buffered = Buffered(64)
            transport.set_protocol(buffered)
            await loop.sock_sendall(peer, b"buffered")
            for _ in range(500):
                if buffered.received == b"buffered":
                    break
                await asyncio.sleep(0.01)
            assert buffered.received == b"buffered"
            back = Recorder()
            transport.set_protocol(back)
            await loop.sock_sendall(peer, b"plain again")
            assert await back.read(11) == b"plain again"
            transport.close()

    loop.run_until_complete(main())


@pytest.mark.allow_exception_handler_calls
def test_buffered_protocol_empty_buffer_is_fatal(loop, handler_calls):
    async def main():
        transport, proto, peer = await transport_pair(loop, lambda: Buffered(0))
        with peer:
            await loop.sock_sendall(peer, b"data")
            exc = await wait(proto.lost)
            assert isinstance(exc, RuntimeError)
            assert transport.is_closing()
            assert [c.get("exception") for c in handler_calls] == [exc]

    loop.run_until_complete(main())


@pytest.mark.allow_exception_handler_calls
@pytest.mark.parametrize("buffer", [b"0123456789", memoryview(bytearray(20))[::2]], ids=["bytes", "strided"])
def test_buffered_protocol_unwritable_buffer_is_fatal(loop, handler_calls, buffer):
    # Refused as `sock.recv_into(buffer)` refuses it.
    class Unwritable(Buffered):
        def get_buffer(self, sizehint):
            return buffer

    async def main():
        transport, proto, peer = await transport_pair(loop, Unwritable)
        with peer:
            await loop.sock_sendall(peer, b"data")
            exc = await wait(proto.lost)
            assert isinstance(exc, TypeError)
            assert str(exc) == (
                f"recv_into() argument 1 must be read-write bytes-like object, not {type(buffer).__name__}"
            )
            assert transport.is_closing()
            assert [(c["message"], c.get("exception")) for c in handler_calls] == [
                ("Fatal read error on socket transport", exc)
            ]

    loop.run_until_complete(main())


@pytest.mark.parametrize("result", [True, 1])
def test_eof_received_true_keeps_half_open(loop, result):
    async def main():
        transport, proto, peer = await transport_pair(loop, lambda: Recorder(eof_result=result))
        with peer:
            await loop.sock_sendall(peer, b"question")
            peer.shutdown(socket.SHUT_WR)
            await wait(proto.eof)
            assert proto.data == b"question"
            await asyncio.sleep(0.02)
            assert not transport.is_closing()
            assert not proto.lost.done()
            transport.write(b"answer")
            assert await recv_exactly(loop, peer, 6) == b"answer"
            transport.close()
            assert await recv_until_eof(loop, peer) == b""
            assert await wait(proto.lost) is None
            assert proto.events == ["made", "data", "eof", "lost"]

    loop.run_until_complete(main())


@pytest.mark.parametrize("result", [None, False])
def test_eof_received_false_closes(loop, result):
    async def main():
        transport, proto, peer = await transport_pair(loop, lambda: Recorder(eof_result=result))
        with peer:
            peer.shutdown(socket.SHUT_WR)
            assert await wait(proto.lost) is None
            assert transport.is_closing()
            assert proto.events == ["made", "eof", "lost"]
            assert await recv_until_eof(loop, peer) == b""

    loop.run_until_complete(main())


def test_connection_lost_once_with_peer_close_and_local_close(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        peer.close()
        transport.close()
        transport.abort()
        assert await wait(proto.lost) is None
        await asyncio.sleep(0.02)
        transport.close()
        await asyncio.sleep(0.01)
        assert proto.events.count("lost") == 1
        assert proto.events[0] == "made"

    loop.run_until_complete(main())


def test_callbacks_run_from_the_loop_not_from_transport_methods(loop):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            transport.close()
            assert proto.events == ["made"]  # connection_lost() is scheduled, never called inline
            await wait(proto.lost)

    loop.run_until_complete(main())


@pytest.mark.allow_exception_handler_calls
def test_data_received_error_is_fatal(loop, handler_calls):
    class Failing(Recorder):
        def data_received(self, data):
            raise ZeroDivisionError("protocol bug")

    async def main():
        transport, proto, peer = await transport_pair(loop, Failing)
        with peer:
            await loop.sock_sendall(peer, b"boom")
            exc = await wait(proto.lost)
            assert isinstance(exc, ZeroDivisionError)
            assert [c.get("exception") for c in handler_calls] == [exc]
            assert handler_calls[0].get("transport") is transport
            assert handler_calls[0].get("protocol") is proto
            assert await recv_until_eof(loop, peer) == b""

    loop.run_until_complete(main())


@pytest.mark.allow_exception_handler_calls
def test_connection_made_error_is_reported(loop, handler_calls):
    class Failing(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            raise ZeroDivisionError("no")

    async def main():
        protos = []
        server = await loop.create_server(lambda: protos.append(Failing()) or protos[-1], "127.0.0.1", 0)
        client = socket.socket()
        client.setblocking(False)
        with client:
            await wait(loop.sock_connect(client, server.sockets[0].getsockname()))
            for _ in range(500):
                if handler_calls:
                    break
                await asyncio.sleep(0.01)
            assert [type(c.get("exception")) for c in handler_calls] == [ZeroDivisionError]
            # Reported through the handler only: the connection itself stays up.
            await loop.sock_sendall(client, b"still open")
            assert await protos[0].read(10) == b"still open"
            assert server.is_serving()
            protos[0].transport.close()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def test_writes_after_the_connection_is_lost_are_dropped_and_logged(loop, caplog):
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            transport.abort()
            await wait(proto.lost)
            with caplog.at_level("WARNING", logger="asyncio"):
                for _ in range(8):
                    transport.write(b"late")
            warnings = [r for r in caplog.records if r.getMessage() == "socket.send() raised exception."]
            assert len(warnings) == 4  # from the fifth write on
            assert await wait(recv_until_eof(loop, peer)) == b""

    loop.run_until_complete(main())


@pytest.mark.parametrize("where", ["get_buffer", "data_received", "eof_received"])
def test_keyboard_interrupt_in_a_read_callback_leaves_the_rest_readable(loop, where):
    # Ctrl-C arriving while a protocol reads leaves the loop; when the loop runs again, what the
    # socket still holds (or its EOF) is read, as the stdlib's selector reports the fd again.
    events = []

    class Interrupted(asyncio.BufferedProtocol):
        raised = False

        def interrupt_once(self, at):
            if where == at and not self.raised:
                self.raised = True
                raise KeyboardInterrupt

        def get_buffer(self, sizehint):
            self.interrupt_once("get_buffer")
            self.buf = bytearray(64 * 1024)
            return self.buf

        def buffer_updated(self, nbytes):
            events.append(bytes(self.buf[:nbytes]))
            self.interrupt_once("data_received")

        def eof_received(self):
            events.append("eof")
            self.interrupt_once("eof_received")

        def connection_lost(self, exc):
            events.append("lost")

    transport, proto, peer = loop.run_until_complete(transport_pair(loop, Interrupted))
    with peer:
        peer.sendall(b"hello")
        peer.shutdown(socket.SHUT_WR)
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(asyncio.sleep(5))
        loop.run_until_complete(asyncio.sleep(0.05))
    expected = {
        "get_buffer": [b"hello", "eof", "lost"],
        # The bytes went to the protocol before the interrupt; what follows is the EOF.
        "data_received": [b"hello", "eof", "lost"],
        # EOF is reported again: eof_received() runs a second time, then the transport closes.
        "eof_received": [b"hello", "eof", "eof", "lost"],
    }
    assert events == expected[where]


def test_write_after_the_loop_closed(loop):
    # What the socket takes at once is sent; what would have to wait for the loop fails as
    # watching the fd fails, and nothing is kept.
    transport, proto, peer = loop.run_until_complete(transport_pair(loop))
    with peer:
        loop.close()
        transport.write(b"small")
        assert recv_blocking(peer, 5) == b"small"
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            transport.write(payload(64 * 1024 * 1024))
        assert transport.get_write_buffer_size() == 0
    # With its loop closed the transport cannot close either; it is dropped, as it warns.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del transport, proto
        gc.collect()


@pytest.mark.parametrize("buffered", [False, True], ids=["idle", "writing"])
def test_resume_reading_after_the_loop_closed(loop, buffered):
    # It fails as watching the fd fails, whether or not the fd is watched for writing already;
    # the transport counts as reading again, as on the stdlib loop.
    transport, proto, peer = loop.run_until_complete(transport_pair(loop))
    with peer:
        if buffered:
            loop.run_until_complete(fill_until_paused(transport, proto))  # the peer reads nothing
            assert transport.get_write_buffer_size() > 0
        transport.pause_reading()
        loop.close()
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            transport.resume_reading()
        assert transport.is_reading()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del transport, proto
        gc.collect()


def recv_blocking(sock, n):
    sock.setblocking(True)
    sock.settimeout(10)
    data = b""
    while len(data) < n:
        data += sock.recv(n - len(data))
    return data


def test_write_of_a_non_contiguous_buffer_while_data_waits(loop, handler_calls):
    # 3.11 appends to its bytearray buffer, which refuses the view at once (the transport lives
    # on); 3.12+ queues it and fails the transport when it comes to send it.
    async def main():
        transport, proto, peer = await transport_pair(loop)
        with peer:
            shrink_buffers(transport.get_extra_info("socket"), peer)
            waiting = await fill_until_paused(transport, proto)
            assert transport.get_write_buffer_size() > 0
            if sys.version_info < (3, 12):
                with pytest.raises(TypeError, match="^can't set bytearray slice from memoryview$"):
                    transport.write(memoryview(b"abcdef")[::2])
                assert not transport.is_closing()
                transport.close()
                assert await recv_until_eof(loop, peer) == waiting
                assert handler_calls == []
                return
            transport.write(memoryview(b"abcdef")[::2])
            # The stdlib's transport fails when the socket takes more, so the peer reads.
            drained = asyncio.ensure_future(recv_until_eof(loop, peer))
            await wait(proto.lost)
            assert isinstance(proto.lost_exc, BufferError)
            assert [ctx["message"] for ctx in handler_calls] == ["Fatal write error on socket transport"]
            assert waiting.startswith(await wait(drained))

    loop.run_until_complete(main())
