"""connect_read_pipe / connect_write_pipe over os.pipe()."""

import asyncio
import errno
import gc
import logging
import os
import resource
import sys
import warnings

import pytest
from _netutil import PAUSE_RESUME_CLOSE_LOG, Recorder, pause_resume_close_logged, payload, wait


@pytest.fixture
def pipe():
    r, w = os.pipe()
    rfile = open(r, "rb", buffering=0)
    wfile = open(w, "wb", buffering=0)
    with rfile, wfile:
        yield rfile, wfile


def test_read_pipe_pause_and_resume_log_changes_only(loop, pipe, caplog):
    loop.set_debug(True)

    async def main():
        transport, proto = await wait(loop.connect_read_pipe(Recorder, pipe[0]))
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            logged = pause_resume_close_logged(transport, caplog.records)
        await wait(proto.lost)
        return logged

    assert loop.run_until_complete(main()) == PAUSE_RESUME_CLOSE_LOG


def test_read_pipe_data_and_eof(loop, pipe):
    rfile, wfile = pipe

    async def main():
        transport, proto = await wait(loop.connect_read_pipe(Recorder, rfile))
        assert isinstance(transport, asyncio.ReadTransport)
        assert not isinstance(transport, asyncio.WriteTransport)
        assert transport.get_extra_info("pipe") is rfile
        assert os.get_blocking(rfile.fileno()) is False
        assert transport.is_reading()
        os.write(wfile.fileno(), b"through the pipe")
        assert await proto.read(16) == b"through the pipe"
        wfile.close()
        assert await wait(proto.lost) is None
        assert proto.events == ["made", "data", "eof", "lost"]
        assert rfile.closed

    loop.run_until_complete(main())


def test_read_pipe_pause_resume(loop, pipe):
    rfile, wfile = pipe

    async def main():
        transport, proto = await wait(loop.connect_read_pipe(Recorder, rfile))
        transport.pause_reading()
        assert not transport.is_reading() and transport._paused is True
        transport.pause_reading()  # idempotent
        os.write(wfile.fileno(), b"held")
        await asyncio.sleep(0.05)
        assert proto.data == b""
        transport.resume_reading()
        assert transport.is_reading() and transport._paused is False
        assert await proto.read(4) == b"held"
        transport.close()
        assert transport.is_closing()
        assert await wait(proto.lost) is None
        assert not transport.is_reading()

    loop.run_until_complete(main())


def test_read_pipe_close_closes_the_file(loop, pipe):
    rfile, wfile = pipe

    async def main():
        transport, proto = await wait(loop.connect_read_pipe(Recorder, rfile))
        transport.close()
        transport.close()
        await wait(proto.lost)
        await asyncio.sleep(0.01)
        assert rfile.closed
        assert proto.events == ["made", "lost"]
        with pytest.raises(BrokenPipeError):
            os.write(wfile.fileno(), b"x")

    loop.run_until_complete(main())


def test_read_pipe_rejects_regular_file(loop, tmp_path):
    path = tmp_path / "plain"
    path.write_bytes(b"data")

    async def main():
        with open(path, "rb") as f:
            with pytest.raises(ValueError):
                await loop.connect_read_pipe(Recorder, f)

    loop.run_until_complete(main())


def test_write_pipe_data(loop, pipe):
    rfile, wfile = pipe

    async def main():
        transport, proto = await wait(loop.connect_write_pipe(Recorder, wfile))
        assert isinstance(transport, asyncio.WriteTransport)
        assert transport.get_extra_info("pipe") is wfile
        assert os.get_blocking(wfile.fileno()) is False
        transport.write(b"abc")
        transport.writelines([b"d", bytearray(b"e"), memoryview(b"f")])
        assert transport.get_write_buffer_size() == 0  # an empty pipe takes it all at once
        assert os.read(rfile.fileno(), 100) == b"abcdef"
        assert transport.can_write_eof()
        transport.write_eof()
        assert transport.is_closing()
        assert await wait(proto.lost) is None
        assert os.read(rfile.fileno(), 100) == b""
        assert wfile.closed

    loop.run_until_complete(main())


def test_write_pipe_flow_control(loop, pipe):
    rfile, wfile = pipe
    data = payload(1024 * 1024)

    async def main():
        transport, proto = await wait(loop.connect_write_pipe(Recorder, wfile))
        transport.set_write_buffer_limits(high=16 * 1024)
        assert transport.get_write_buffer_limits() == (4 * 1024, 16 * 1024)
        transport.write(data)
        # Nobody reads: the pipe fills, the rest is buffered and the protocol paused at once.
        assert proto.events == ["made", "pause"]
        assert transport.get_write_buffer_size() > 16 * 1024
        received = bytearray()
        while proto.resumes == 0 or len(received) < len(data):
            try:
                received += os.read(rfile.fileno(), 64 * 1024)
            except BlockingIOError:
                pass
            await asyncio.sleep(0)
        assert received == data
        assert proto.events == ["made", "pause", "resume"]
        assert transport.get_write_buffer_size() == 0
        transport.close()
        await wait(proto.lost)

    os.set_blocking(rfile.fileno(), False)
    loop.run_until_complete(main())


def test_write_pipe_close_flushes(loop, pipe):
    rfile, wfile = pipe
    data = payload(512 * 1024)

    async def main():
        transport, proto = await wait(loop.connect_write_pipe(Recorder, wfile))
        transport.write(data)
        transport.close()
        assert transport.is_closing()
        transport.write(b"dropped")  # after close(): ignored, no exception
        received = bytearray()
        while chunk := await loop.run_in_executor(None, os.read, rfile.fileno(), 1 << 20):
            received += chunk
        assert received == data
        assert await wait(proto.lost) is None

    loop.run_until_complete(main())


def test_write_pipe_buffered_writes_of_every_kind_arrive_whole_and_in_order(loop, pipe):
    # Many writes while the pipe is full: bytes (which ferroloop keeps by reference), bytearray
    # and memoryview (copied), a bytes subclass; more than one gathering write takes.
    rfile, wfile = pipe

    class Tagged(bytes):
        pass

    big = payload(300 * 1024)
    pieces = [big, bytearray(b"mutable" * 100), memoryview(big)[7:70_000], Tagged(b"sub" * 300), b""]
    pieces += [bytes([i % 251]) * 64 for i in range(3000)]
    expected = b"".join(bytes(p) for p in pieces)

    async def main():
        transport, proto = await wait(loop.connect_write_pipe(Recorder, wfile))
        for piece in pieces:
            transport.write(piece)
        assert 0 < transport.get_write_buffer_size() <= len(expected)
        transport.close()
        received = bytearray()
        while chunk := await loop.run_in_executor(None, os.read, rfile.fileno(), 1 << 20):
            received += chunk
        assert received == expected
        assert await wait(proto.lost) is None

    loop.run_until_complete(main())


def test_write_pipe_abort_drops_buffer(loop, pipe):
    rfile, wfile = pipe

    async def main():
        transport, proto = await wait(loop.connect_write_pipe(Recorder, wfile))
        transport.write(b"x" * (1024 * 1024))
        assert transport.get_write_buffer_size() > 0
        transport.abort()
        assert await wait(proto.lost) is None
        assert wfile.closed
        total = 0
        while chunk := os.read(rfile.fileno(), 1 << 20):
            total += len(chunk)
        assert 0 < total < 1024 * 1024

    loop.run_until_complete(main())


def test_write_pipe_reader_closes(loop, pipe):
    rfile, wfile = pipe

    async def main():
        transport, proto = await wait(loop.connect_write_pipe(Recorder, wfile))
        rfile.close()
        # With nothing buffered, the loop notices the closed read end by itself.
        assert await wait(proto.lost) is None
        assert transport.is_closing()

    loop.run_until_complete(main())


def test_write_pipe_broken_pipe(loop, pipe):
    rfile, wfile = pipe

    async def main():
        transport, proto = await wait(loop.connect_write_pipe(Recorder, wfile))
        rfile.close()
        transport.write(b"nobody listens")
        assert isinstance(await wait(proto.lost), BrokenPipeError)

    loop.run_until_complete(main())


def test_pipe_pair_round_trip(loop):
    r, w = os.pipe()

    async def main():
        rtransport, rproto = await wait(loop.connect_read_pipe(Recorder, open(r, "rb", buffering=0)))
        wtransport, wproto = await wait(loop.connect_write_pipe(Recorder, open(w, "wb", buffering=0)))
        data = payload(3 * 1024 * 1024)
        wtransport.write(data)
        wtransport.close()
        assert await rproto.read(len(data)) == data
        assert await wait(rproto.lost) is None
        assert await wait(wproto.lost) is None
        assert rproto.events == ["made", "data", "eof", "lost"]
        assert rtransport.is_closing()

    loop.run_until_complete(main())


def test_read_pipe_data_received_error_goes_to_the_exception_handler(loop, pipe, handler_calls):
    rfile, wfile = pipe

    class Failing(Recorder):
        def data_received(self, data):
            if data == b"boom":
                raise ZeroDivisionError("from data_received")
            super().data_received(data)

    async def main():
        transport, proto = await wait(loop.connect_read_pipe(Failing, rfile))
        os.write(wfile.fileno(), b"boom")
        for _ in range(100):
            if handler_calls:
                break
            await asyncio.sleep(0.01)
        # The pipe stays open and goes on reading.
        assert not transport.is_closing()
        os.write(wfile.fileno(), b"after")
        assert await proto.read(5) == b"after"
        transport.close()
        assert await wait(proto.lost) is None

    loop.run_until_complete(main())
    assert len(handler_calls) == 1
    assert isinstance(handler_calls[0]["exception"], ZeroDivisionError)


def test_read_pipe_max_size_bounds_each_read(loop, pipe):
    rfile, wfile = pipe

    class Sizes(Recorder):
        sizes = ()

        def data_received(self, data):
            self.sizes += (len(data),)
            super().data_received(data)

    async def main():
        transport, proto = await wait(loop.connect_read_pipe(Sizes, rfile))
        assert transport.max_size == type(transport).max_size == 256 * 1024
        transport.max_size = 300
        assert transport.max_size == 300
        data = payload(1000)
        os.write(wfile.fileno(), data)
        assert await proto.read(1000) == data
        assert max(proto.sizes) <= 300 and len(proto.sizes) >= 4
        transport.close()
        await wait(proto.lost)

    loop.run_until_complete(main())


def test_read_pipe_negative_max_size_is_a_fatal_read_error(loop, pipe, handler_calls):
    rfile, wfile = pipe

    async def main():
        transport, proto = await wait(loop.connect_read_pipe(Recorder, rfile))
        transport.max_size = -1
        os.write(wfile.fileno(), b"data")
        exc = await wait(proto.lost)
        assert isinstance(exc, OSError) and exc.errno == errno.EINVAL
        assert proto.data == b""

    loop.run_until_complete(main())
    assert len(handler_calls) == 1
    assert handler_calls[0]["message"] == "Fatal read error on pipe transport"


def test_read_pipe_set_protocol(loop, pipe):
    rfile, wfile = pipe

    async def main():
        transport, first = await wait(loop.connect_read_pipe(Recorder, rfile))
        os.write(wfile.fileno(), b"one")
        assert await first.read(3) == b"one"
        second = Recorder()
        transport.set_protocol(second)
        assert transport.get_protocol() is second
        os.write(wfile.fileno(), b"two")
        assert await second.read(3) == b"two"
        assert first.data == b"one"
        transport.close()
        assert await wait(second.lost) is None

    loop.run_until_complete(main())


def test_write_pipe_rejects_non_bytes(loop, pipe):
    rfile, wfile = pipe

    async def main():
        transport, proto = await wait(loop.connect_write_pipe(Recorder, wfile))
        with pytest.raises(AssertionError):
            transport.write("text")
        transport.write(b"")  # empty: nothing to do
        transport.write(bytearray(b"ok"))
        assert os.read(rfile.fileno(), 10) == b"ok"
        transport.close()
        await wait(proto.lost)

    loop.run_until_complete(main())


def test_write_pipe_writes_after_close_are_dropped_and_logged(loop, pipe, caplog):
    rfile, wfile = pipe

    async def main():
        transport, proto = await wait(loop.connect_write_pipe(Recorder, wfile))
        transport.close()
        await wait(proto.lost)
        with caplog.at_level("WARNING", logger="asyncio"):
            for _ in range(8):
                transport.write(b"late")
        warnings = [r for r in caplog.records if "pipe closed by peer" in r.getMessage()]
        assert len(warnings) == 3  # from the sixth write on
        assert os.read(rfile.fileno(), 100) == b""

    loop.run_until_complete(main())


def test_pipe_transport_repr(loop, pipe):
    rfile, wfile = pipe

    async def main():
        rtransport, rproto = await wait(loop.connect_read_pipe(Recorder, rfile))
        wtransport, wproto = await wait(loop.connect_write_pipe(Recorder, wfile))
        await asyncio.sleep(0)
        assert f"fd={rfile.fileno()} polling" in repr(rtransport)
        assert f"fd={wfile.fileno()} idle bufsize=0" in repr(wtransport)
        wtransport.close()
        await wait(wproto.lost)
        assert "closed" in repr(wtransport)
        await wait(rproto.lost)
        assert "closed" in repr(rtransport)

    loop.run_until_complete(main())


def test_write_pipe_non_contiguous_buffer_is_a_fatal_error(loop, pipe, handler_calls):
    rfile, wfile = pipe

    async def main():
        transport, proto = await wait(loop.connect_write_pipe(Recorder, wfile))
        transport.write(memoryview(b"abcdef")[::2])
        assert isinstance(await wait(proto.lost), BufferError)
        transport.write(memoryview(b"abcdef")[::2])  # after the loss: dropped, no exception

    loop.run_until_complete(main())
    assert [c["message"] for c in handler_calls] == ["Fatal write error on pipe transport"]


def test_write_pipe_non_contiguous_buffer_behind_buffered_data_is_a_type_error(loop, pipe, handler_calls):
    rfile, wfile = pipe

    async def main():
        transport, proto = await wait(loop.connect_write_pipe(Recorder, wfile))
        transport.write(b"x" * (1024 * 1024))  # fills the pipe: the rest is buffered
        buffered = transport.get_write_buffer_size()
        assert buffered > 0
        # Raised to the caller (the stdlib's `bytearray += data`); the transport goes on.
        with pytest.raises(TypeError, match="can't concat memoryview to bytearray"):
            transport.write(memoryview(b"abcdef")[::2])
        assert transport.get_write_buffer_size() == buffered
        assert not transport.is_closing()
        transport.abort()
        assert await wait(proto.lost) is None

    loop.run_until_complete(main())
    assert handler_calls == []


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.11's memoryview gives a 0-dim view a length")
def test_write_pipe_0_dim_memoryview_is_refused(loop, pipe):
    rfile, wfile = pipe

    async def main():
        transport, proto = await wait(loop.connect_write_pipe(Recorder, wfile))
        with pytest.raises(TypeError, match="0-dim"):
            transport.write(memoryview(b"abcd").cast("i", shape=[]))
        assert not transport.is_closing()
        transport.write(b"end")
        transport.close()
        await wait(proto.lost)

    loop.run_until_complete(main())
    assert rfile.read() == b"end"


class _PipeWithClosedFd:
    """A pipe object whose descriptor is not open: the transport takes it, then fails to start."""

    def __init__(self):
        # The highest descriptor the process may have, which nothing here opens.
        self.fd = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 1
        with pytest.raises(OSError):
            os.fstat(self.fd)
        self.closed = False

    def fileno(self):
        return self.fd

    def close(self):
        self.closed = True


@pytest.mark.parametrize("method", ["connect_read_pipe", "connect_write_pipe"])
def test_a_pipe_transport_that_fails_to_start_warns_and_closes_the_pipe(loop, method):
    pipe = _PipeWithClosedFd()

    async def main():
        with pytest.raises(OSError) as raised:
            await getattr(loop, method)(Recorder, pipe)
        return raised.value.errno

    unraisable = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = loop.run_until_complete(main())
            gc.collect()
    finally:
        sys.unraisablehook = hook
    assert code == errno.EBADF
    assert [u.exc_value for u in unraisable] == []
    assert pipe.closed
    unclosed = [str(w.message) for w in caught if w.category is ResourceWarning]
    assert len(unclosed) == 1
    assert unclosed[0].startswith("unclosed transport <")
    assert f"fd={pipe.fd} idle" in unclosed[0]
