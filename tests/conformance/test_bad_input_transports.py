"""Bad input to transport methods gets the stdlib's answer.

Like test_bad_input.py, for the objects the loop hands out rather than the loop itself: each case
makes a fresh transport of one kind on a fresh loop, calls one of its methods with one odd argument
and records what happens: the exception type raised at once (or "ok"), and a few loop iterations
later whether the transport is closing, what the protocol's ``connection_lost`` got and which
exceptions the loop's exception handler was given. The expected record is the same case on a
fresh stdlib loop, so on the stdlib param these tests check that the records are reproducible,
and on the ferroloop param that ferroloop's match.

Left out is an input where the stdlib's own answer is an accident of its implementation:
``writelines()`` of an ``array`` of wider items (the stdlib's transport fails fatally, counting
items as bytes).
"""

import asyncio
import os
import socket
import sys

import pytest
from _netutil import wait
from _tlsutil import make_certs
from loopkinds import loop_factory as factory_of


class BadBuffer:
    """Convertible with ``bytes()``, but not a buffer: transports do not take it."""

    def __bytes__(self):
        raise ZeroDivisionError("__bytes__")


class Unhashable:
    __hash__ = None


BAD = {
    "None": None,
    "minus_one": -1,
    "huge": 2**70,
    "fraction": 1.5,
    "nan": float("nan"),
    "str": "x",
    "empty_bytes": b"",
    "bytes": b"x",
    "memoryview": memoryview(b"xy"),
    "list_of_str": ["x"],
    "list_of_bytes": [b"x", bytearray(b"y")],
    "tuple": (),
    "dict": {},
    "object": object(),
    "bad_buffer": BadBuffer(),
    "unhashable": Unhashable(),
    # A buffer that cannot be read whole: refused, or accepted and then fatal, as the stdlib does.
    "strided": memoryview(b"abcdef")[::2],
    "empty_strided": memoryview(b"")[::2],
    "list_of_strided": [b"x", memoryview(b"abcdef")[::2]],
}
if sys.version_info >= (3, 12):
    # No length from 3.12 on (3.11's transports send it, then fail to slice it).
    BAD["zero_dim"] = memoryview(b"abcd").cast("i", shape=[])


class Probe(asyncio.Protocol, asyncio.DatagramProtocol, asyncio.SubprocessProtocol):
    """Records how the connection ended (every protocol kind at once)."""

    def __init__(self):
        self.lost = "open"
        self.exited = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc):
        self.lost = "lost" if exc is None else f"lost({type(exc).__name__})"

    def process_exited(self):
        self.exited.set_result(None)


class Endpoint:
    """A transport of one kind, its protocol, and what the far side needs kept until the end."""

    def __init__(self, transport, protocol, peer=None, close=None):
        self.transport, self.protocol, self.peer, self._close = transport, protocol, peer, close

    async def close(self):
        self.transport.close()
        if self._close is not None:
            await self._close()
        await asyncio.sleep(0)


async def _tcp(loop, certs):
    lsock = socket.create_server(("127.0.0.1", 0))
    with lsock:
        sock = socket.create_connection(lsock.getsockname())
        peer, _ = lsock.accept()
    transport, protocol = await loop.create_connection(Probe, sock=sock)

    async def close():
        peer.close()

    return Endpoint(transport, protocol, close=close)


async def _tls(loop, certs):
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=certs.server_context())
    port = server.sockets[0].getsockname()[1]
    transport, protocol = await loop.create_connection(
        Probe, "127.0.0.1", port, ssl=certs.client_context(), server_hostname="localhost"
    )

    async def close():
        server.close()
        await wait(server.wait_closed())

    return Endpoint(transport, protocol, close=close)


async def _udp(loop, certs):
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    transport, protocol = await loop.create_datagram_endpoint(Probe, local_addr=("127.0.0.1", 0))

    async def close():
        peer.close()

    return Endpoint(transport, protocol, peer=peer.getsockname(), close=close)


async def _write_pipe(loop, certs):
    rfd, wfd = os.pipe()
    transport, protocol = await loop.connect_write_pipe(Probe, os.fdopen(wfd, "wb", buffering=0))

    async def close():
        os.close(rfd)

    return Endpoint(transport, protocol, close=close)


async def _subprocess(loop, certs):
    # The child waits for its stdin to close, which closing the transport does.
    transport, protocol = await loop.subprocess_exec(
        Probe, sys.executable, "-c", "import sys; sys.stdin.read()", stdout=None, stderr=None
    )

    async def close():
        await wait(protocol.exited)

    return Endpoint(transport, protocol, close=close)


MAKERS = {"tcp": _tcp, "tls": _tls, "udp": _udp, "write_pipe": _write_pipe, "subprocess": _subprocess}

STREAM_CALLS = {
    "write": lambda t, bad, peer: t.write(bad),
    "writelines": lambda t, bad, peer: t.writelines(bad),
    "set_write_buffer_limits_high": lambda t, bad, peer: t.set_write_buffer_limits(high=bad),
    "set_write_buffer_limits_low": lambda t, bad, peer: t.set_write_buffer_limits(low=bad),
    "get_extra_info": lambda t, bad, peer: t.get_extra_info(bad),
}

CASES = {
    **{("tcp", name): call for name, call in STREAM_CALLS.items()},
    **{("tls", name): call for name, call in STREAM_CALLS.items()},
    **{("write_pipe", name): call for name, call in STREAM_CALLS.items()},
    ("udp", "sendto_data"): lambda t, bad, peer: t.sendto(bad, peer),
    ("udp", "sendto_addr"): lambda t, bad, peer: t.sendto(b"x", bad),
    ("udp", "set_write_buffer_limits_high"): lambda t, bad, peer: t.set_write_buffer_limits(high=bad),
    ("udp", "get_extra_info"): lambda t, bad, peer: t.get_extra_info(bad),
    ("subprocess", "get_pipe_transport"): lambda t, bad, peer: t.get_pipe_transport(bad),
    ("subprocess", "send_signal"): lambda t, bad, peer: t.send_signal(bad),
    ("subprocess", "get_extra_info"): lambda t, bad, peer: t.get_extra_info(bad),
}


def _records(make_loop, kind, call, certs):
    """{bad value's name: (outcome, closing, lost, handled)} for `call` on fresh transports of
    `kind`; `handled` lists the exceptions the loop's exception handler was given."""
    loop = make_loop()
    handled = []
    loop.set_exception_handler(lambda loop, context: handled.append(type(context.get("exception")).__name__))

    async def one(bad):
        handled.clear()
        end = await MAKERS[kind](loop, certs)
        try:
            try:
                call(end.transport, bad, end.peer)
                outcome = "ok"
            except Exception as exc:  # the point is which one
                outcome = type(exc).__name__
            # Long enough for a write that fails inside the loop to fail there.
            for _ in range(5):
                await asyncio.sleep(0)
            return outcome, end.transport.is_closing(), end.protocol.lost, tuple(handled)
        finally:
            await end.close()

    try:
        return {name: loop.run_until_complete(one(bad)) for name, bad in BAD.items()}
    finally:
        loop.close()


@pytest.fixture(scope="module")
def certs():
    return make_certs()


@pytest.mark.parametrize(("kind", "method"), sorted(CASES), ids=[f"{k}-{m}" for k, m in sorted(CASES)])
def test_transport_bad_input_gets_the_stdlibs_answer(loop_kind, kind, method, certs):
    call = CASES[kind, method]
    expected = _records(asyncio.SelectorEventLoop, kind, call, certs)
    got = _records(factory_of(loop_kind), kind, call, certs)
    differ = {
        name: f"{got[name]} (the stdlib: {expected[name]})" for name in BAD if got[name] != expected[name]
    }
    assert not differ
