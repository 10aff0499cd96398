"""Helpers shared by the library tests: serving an aiohttp app, payloads, ports."""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket

from aiohttp import web


@contextlib.asynccontextmanager
async def serve_app(app, *, ssl_context=None, host="127.0.0.1", shutdown_timeout=5.0):
    """Serve ``app`` on ``host`` and an ephemeral port; yields the base URL (no trailing slash)."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
        await site.start()
        port = runner.addresses[0][1]
        scheme = "https" if ssl_context is not None else "http"
        yield f"{scheme}://{host}:{port}"
    finally:
        await runner.cleanup()


def payload(size, seed=0):
    """``size`` reproducible pseudo-random bytes (incompressible, every byte value present)."""
    return random.Random(seed).randbytes(size)


def split(data, seed=0, low=1, high=256 * 1024):
    """``data`` cut into pieces of random sizes between ``low`` and ``high`` bytes."""
    rng = random.Random(seed)
    pieces = []
    pos = 0
    while pos < len(data):
        step = rng.randint(low, high)
        pieces.append(data[pos : pos + step])
        pos += step
    return pieces


def digest(data):
    return hashlib.sha256(data).hexdigest()


def unused_port(host="127.0.0.1"):
    """A TCP port nothing listens on (bound, then released again)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
