"""Network rows: TCP echo servers (three APIs x three message sizes) and an HTTP/1.1 server.

Each row runs its server on the loop under test and measures it from a load generator in
another process on another CPU (see ``support.py``).  ``n`` is the measured duration in
milliseconds; ops are request/response round-trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

from . import Measurement, row
from .support import (
    CLOSE_TIMEOUT,
    ECHO_CONNECTIONS,
    HOST,
    WRK_CONNECTIONS,
    EchoProtocol,
    close_server,
    http_row,
    listening_socket,
    run_loadgen,
    server_port,
)

DURATION_MS = 2_000
DURATION_MS_QUICK = 300
SIZES = {"1k": 1024, "10k": 10 * 1024, "100k": 100 * 1024}
RECV_SIZE = 256 * 1024

SERVER_ROW = dict(
    group="net",
    unit="req/s",
    cpu_unit="req/CPU-s",
    n=DURATION_MS,
    n_quick=DURATION_MS_QUICK,
    size_unit="ms",
    client=True,
    self_warmup=True,
    warmup_ratio=0.25,
)


async def echo_protocol(duration_ms: int, size: int) -> Measurement:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, HOST, 0)
    try:
        run = await run_loadgen(server_port(server), size, duration_ms)
    finally:
        await close_server(server)
    return run.measurement()


async def echo_streams(duration_ms: int, size: int) -> Measurement:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.readexactly(size)
                writer.write(data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, HOST, 0)
    try:
        run = await run_loadgen(server_port(server), size, duration_ms)
    finally:
        await close_server(server)
    return run.measurement()


async def echo_sockets(duration_ms: int, size: int) -> Measurement:
    loop = asyncio.get_running_loop()
    handlers: set[asyncio.Task[None]] = set()

    async def handle(conn: socket.socket) -> None:
        try:
            while True:
                data = await loop.sock_recv(conn, RECV_SIZE)
                if not data:
                    break
                await loop.sock_sendall(conn, data)
        except ConnectionError:
            pass
        finally:
            conn.close()

    async def accept(lsock: socket.socket) -> None:
        while True:
            conn, _ = await loop.sock_accept(lsock)
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(handle(conn))
            handlers.add(task)
            task.add_done_callback(handlers.discard)

    lsock = listening_socket()
    acceptor = loop.create_task(accept(lsock))
    try:
        run = await run_loadgen(lsock.getsockname()[1], size, duration_ms)
    finally:
        acceptor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acceptor
        lsock.close()
        # The client has exited, so every handler sees EOF and returns; cancel any straggler.
        if handlers:
            _, pending = await asyncio.wait(set(handlers), timeout=CLOSE_TIMEOUT)
            for task in pending:
                task.cancel()
    if acceptor.done() and not acceptor.cancelled() and acceptor.exception() is not None:
        raise acceptor.exception()  # type: ignore[misc]
    return run.measurement()


def _register_echo(api: str, impl, label: str, size: int, what: str) -> None:
    async def echo_row(n: int) -> Measurement:
        return await impl(n, size)

    row(
        name=f"echo_{api}_{label}",
        description=(
            f"TCP echo server using {what}; {ECHO_CONNECTIONS} connections of the Rust load generator, "
            f"each repeating round-trips of {size:,} bytes (send, read back, compare)."
        ),
        **SERVER_ROW,
    )(echo_row)


for _api, _impl, _what in (
    ("proto", echo_protocol, "loop.create_server + asyncio.Protocol (write each chunk back)"),
    ("streams", echo_streams, "asyncio.start_server + readexactly/write/drain"),
    ("sock", echo_sockets, "loop.sock_accept + sock_recv/sock_sendall on non-blocking sockets"),
):
    for _label, _size in SIZES.items():
        _register_echo(_api, _impl, _label, _size, _what)


@row(
    name="http_httptools",
    description=(
        "HTTP/1.1 keep-alive server: asyncio.Protocol + httptools parser, fixed 14-byte response; "
        f"wrk -t1 -c{WRK_CONNECTIONS}, measured for whole seconds."
    ),
    **SERVER_ROW,
)
async def http_httptools(n: int) -> Measurement:
    return await http_row(n, tls=False)


@row(
    name="tcp_connect_close",
    group="net",
    unit="conns/s",
    n=5_000,
    n_quick=300,
    description=(
        "One process on one CPU, both ends on the loop under test: asyncio.open_connection to a "
        "loop.create_server + asyncio.Protocol echo server, a 10-byte round-trip, close and "
        "wait_closed, n times in a row (connection set-up and teardown, client and server side)."
    ),
)
async def tcp_connect_close(n: int) -> Measurement:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, HOST, 0)
    port = server_port(server)
    message = b"0123456789"
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(message)
            if await reader.readexactly(len(message)) != message:
                raise AssertionError("the echo came back changed")
            writer.close()
            await writer.wait_closed()
        elapsed = time.perf_counter() - t0
    finally:
        await close_server(server)
    return Measurement(n, elapsed)
