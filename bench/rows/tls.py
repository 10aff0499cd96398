"""TLS rows: the Protocol echo server and the httptools HTTP server behind ``ssl=``.

Certificates: a throw-away CA and a server certificate for localhost/127.0.0.1, created
once under ``bench/.certs`` with the openssl CLI.  The echo client is the Rust load
generator with rustls (verifying the server against that CA); HTTPS is loaded with wrk.
"""

from __future__ import annotations

import asyncio

from . import Measurement, row
from .net import SERVER_ROW
from .support import (
    ECHO_CONNECTIONS,
    HOST,
    WRK_CONNECTIONS,
    EchoProtocol,
    close_server,
    ensure_certs,
    http_row,
    run_loadgen,
    server_port,
    server_ssl_context,
)

TLS_ROW = SERVER_ROW | {"group": "tls"}


async def tls_echo(duration_ms: int, size: int) -> Measurement:
    loop = asyncio.get_running_loop()
    certs = ensure_certs()
    server = await loop.create_server(EchoProtocol, HOST, 0, ssl=server_ssl_context())
    try:
        run = await run_loadgen(server_port(server), size, duration_ms, tls_ca=certs.ca)
    finally:
        await close_server(server)
    return run.measurement()


def _register(label: str, size: int) -> None:
    async def tls_echo_row(n: int) -> Measurement:
        return await tls_echo(n, size)

    row(
        name=f"tls_echo_{label}",
        description=(
            f"TLS echo server (asyncio.Protocol, ssl=server context); {ECHO_CONNECTIONS} rustls connections "
            f"of the Rust load generator, each repeating round-trips of {size:,} bytes."
        ),
        **TLS_ROW,
    )(tls_echo_row)


_register("1k", 1024)
_register("100k", 100 * 1024)


@row(
    name="https_httptools",
    description=(
        "The http_httptools server over TLS (ssl=server context); wrk -t1 "
        f"-c{WRK_CONNECTIONS} https://..., handshakes of the measured run's connections included."
    ),
    **TLS_ROW,
)
async def https_httptools(n: int) -> Measurement:
    return await http_row(n, tls=True)
