"""Protocols and helpers shared by the transport, server and stream tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

# Upper bound for any single wait on a network event: a loop that never delivers it fails the
# test quickly instead of hanging until the per-test watchdog fires.
WAIT = 5


async def wait(aw, timeout=WAIT):
    return await asyncio.wait_for(aw, timeout)


class Recorder(asyncio.Protocol):
    """Records every protocol callback, in order, and exposes futures to wait on."""

    def __init__(self, eof_result=None):
        loop = asyncio.get_running_loop()
        self.transport = None
        self.events: list[str] = []
        self.data = bytearray()
        self.lost_exc = None
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.eof_result = eof_result
        self.pauses = 0
        self.resumes = 0
        self._data_waiter = None

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")
        self.made.set_result(transport)

    def data_received(self, data):
        assert type(data) is bytes
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data
        if self._data_waiter is not None and not self._data_waiter.done():
            self._data_waiter.set_result(None)

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(None)
        return self.eof_result

    def pause_writing(self):
        self.events.append("pause")
        self.pauses += 1

    def resume_writing(self):
        self.events.append("resume")
        self.resumes += 1

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost_exc = exc
        # A second call makes set_result() raise, which the loop reports to its handler.
        self.lost.set_result(exc)
        if self._data_waiter is not None and not self._data_waiter.done():
            self._data_waiter.set_result(None)

    async def read(self, n, timeout=WAIT):
        """Wait until at least ``n`` bytes arrived in total; return everything so far."""

        async def more():
            while len(self.data) < n:
                if self.lost.done():
                    raise AssertionError(f"connection lost after {len(self.data)} of {n} bytes")
                self._data_waiter = asyncio.get_running_loop().create_future()
                await self._data_waiter

        await asyncio.wait_for(more(), timeout)
        return bytes(self.data)


class DatagramRecorder(asyncio.DatagramProtocol):
    def __init__(self):
        self.transport = None
        self.queue: asyncio.Queue = asyncio.Queue()
        self.errors: asyncio.Queue = asyncio.Queue()
        self.lost = asyncio.get_running_loop().create_future()
        self.events: list[str] = []

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def datagram_received(self, data, addr):
        assert type(data) is bytes
        self.queue.put_nowait((data, addr))

    def error_received(self, exc):
        self.errors.put_nowait(exc)

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


async def accept(loop, lsock):
    """Accept one connection on a raw listening socket; the result is non-blocking."""
    conn, _ = await wait(loop.sock_accept(lsock))
    return conn


async def recv_exactly(loop, sock, n):
    """Read exactly ``n`` bytes from a raw socket (fails on an early EOF)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = await wait(loop.sock_recv(sock, n - len(buf)))
        assert chunk, f"EOF after {len(buf)} of {n} bytes"
        buf += chunk
    return bytes(buf)


async def recv_until_eof(loop, sock):
    buf = bytearray()
    while chunk := await wait(loop.sock_recv(sock, 256 * 1024)):
        buf += chunk
    return bytes(buf)


def shrink_buffers(*socks, size=16 * 1024):
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def reset_on_close(sock):
    """Make ``sock.close()`` send a RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@contextlib.contextmanager
def stalled_listener():
    """A listening socket whose accept queue is full: a new connect() to it stays pending."""
    lsock = socket.socket()
    fillers = []
    try:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(0)
        for _ in range(4):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            filler.connect_ex(lsock.getsockname())
        yield lsock
    finally:
        for filler in fillers:
            filler.close()
        lsock.close()


# Message sizes that, each received before the next is sent, make large reads and small ones
# follow each other in every order.
MIXED_SIZES = [1, 200_000, 3, 40_000, 33_000, 2, 300_000, 300_000, 10, 65_536, 1, 100_000]


def payload(size):
    """``size`` bytes that are not a short repeating pattern (reordering would show)."""
    block = bytes(range(256))
    out = bytearray()
    i = 0
    while len(out) < size:
        out += struct.pack("!I", i) + block
        i += 1
    return bytes(out[:size])


def pause_resume_close_logged(transport, records):
    """Pauses and resumes ``transport`` twice each, pauses, closes and resumes it, in debug mode;
    returns what the loop logged about reading (only a change is logged; a closing transport
    does not resume)."""
    transport.pause_reading()
    transport.pause_reading()
    transport.resume_reading()
    transport.resume_reading()
    transport.pause_reading()
    transport.close()
    transport.resume_reading()
    assert not transport.is_reading()
    return [r.getMessage().split()[-2:] for r in records if r.getMessage().endswith(" reading")]


PAUSE_RESUME_CLOSE_LOG = [["pauses", "reading"], ["resumes", "reading"], ["pauses", "reading"]]
