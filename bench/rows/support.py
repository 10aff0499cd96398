"""Shared pieces of the server rows: servers, load-generator drivers, CPU accounting, certificates.

The server runs on the loop under test in the worker process.  The load generator is a
separate process (the Rust echo client in ``bench/loadgen`` or ``wrk``) pinned to
``CONTEXT.client_cpu``.  It is started and read by a plain thread, not through the loop,
so the only loop feature the driver relies on is ``call_soon_threadsafe``.  The thread
samples the worker's CPU time (all threads, user + system) exactly at the edges of the
load generator's measured window, and, where ``perf`` is installed and allowed to count, the
instructions the worker retires in it and the cycles it spends in user space and in the kernel
(``PerfCounter``): unlike time, the instruction count hardly moves with what else the machine
runs, and the cycles show which side of the system-call boundary the time went to.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import CONTEXT, Measurement

BENCH_DIR = Path(__file__).resolve().parent.parent
LOADGEN = BENCH_DIR / "loadgen" / "target" / "release" / "loadgen"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_summary.lua"
CERT_DIR = BENCH_DIR / ".certs"
HOST = "127.0.0.1"

# Echo rows: concurrent connections of the load generator.
ECHO_CONNECTIONS = 10
# HTTP rows: wrk connections and threads.
WRK_CONNECTIONS = 100
WRK_THREADS = 1
# A server that leaves a connection unanswered this long fails the row instead of hanging it.
CLIENT_IO_TIMEOUT_MS = 10_000
# How long to wait for a closed server's connections to go away before giving up on it.
CLOSE_TIMEOUT = 5.0

T = TypeVar("T")


class ClientError(RuntimeError):
    """The load generator failed or reported something wrong."""


@dataclass(frozen=True)
class PerfCounts:
    """What ``perf stat`` counted for this process over a measured window."""

    instructions: float  # retired, user + kernel
    user_cycles: float | None  # CPU cycles in user space (None: not counted)
    kernel_cycles: float | None  # CPU cycles in the kernel (None: not counted)


class PerfCounter:
    """Counts the instructions (user + kernel) this process retires, and the CPU cycles it spends
    in user space and in the kernel, between ``start`` and ``stop`` with ``perf stat`` attached to
    it; ``stop`` returns ``None`` when perf is missing or may not count instructions (cycles
    alone may be missing, on a machine without that counter). Attaching takes a few
    milliseconds, which the count misses at the start of a window of seconds (the same for
    every loop)."""

    EVENTS = ("instructions:u", "instructions:k", "cycles:u", "cycles:k")

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        perf = shutil.which("perf")
        if perf is None:
            return
        argv = [perf, "stat", "-x", ",", "-e", ",".join(self.EVENTS), "-p", str(os.getpid())]
        try:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
        except OSError:
            self._proc = None

    def stop(self) -> PerfCounts | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return None
        counts: dict[str, float] = {}
        for line in err.splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[2] in self.EVENTS:
                try:
                    counts[fields[2]] = float(fields[0])
                except ValueError:  # "<not supported>", "<not counted>"
                    pass
        if "instructions:u" not in counts or "instructions:k" not in counts:
            return None
        return PerfCounts(
            counts["instructions:u"] + counts["instructions:k"],
            counts.get("cycles:u"),
            counts.get("cycles:k"),
        )


def cpu_now(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds used so far by this process (all threads, no children).

    With ``resource.RUSAGE_CHILDREN``: by its children that have been waited for.
    """
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


def children_cpu_now() -> float:
    return cpu_now(resource.RUSAGE_CHILDREN)


@dataclass(frozen=True)
class ClientRun:
    ops: int  # requests (round-trips) completed in the measured window
    seconds: float  # length of the measured window, as timed by the load generator
    cpu_seconds: float  # CPU time of this (server) process in the measured window
    client_busy: float  # load generator's CPU time / wall time of its whole run (1.0 = one core)
    info: dict[str, Any]
    perf: PerfCounts | None = None  # counted for this process in the measured window, if perf could

    def measurement(self) -> Measurement:
        if self.ops <= 0:
            raise ClientError(f"no requests completed in the measured window: {self.info}")
        perf = self.perf
        return Measurement(
            self.ops,
            self.seconds,
            self.cpu_seconds,
            self.client_busy,
            perf.instructions if perf else None,
            perf.user_cycles if perf else None,
            perf.kernel_cycles if perf else None,
        )


def _pin(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def _popen(argv: list[str]) -> subprocess.Popen[str]:
    # Same process group as the worker: if the runner kills a hung worker's group, this goes too.
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_pin(CONTEXT.client_cpu),
    )


def _reap(proc: subprocess.Popen[str]) -> str:
    """Kill the process if it is still running; return its stderr."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    assert proc.stderr is not None
    return proc.stderr.read()


def _stderr_tail(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


async def in_thread(func: Callable[..., T], *args: Any) -> T:
    """Run a blocking function in a new thread and await its result on the running loop."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def target() -> None:
        try:
            value = func(*args)
        except BaseException as exc:  # handed over to the awaiting coroutine
            loop.call_soon_threadsafe(settle, False, exc)
        else:
            loop.call_soon_threadsafe(settle, True, value)

    threading.Thread(target=target, name="bench-client", daemon=True).start()
    return await fut


# --- the Rust echo load generator -------------------------------------------------------------


def _drive_loadgen(argv: list[str]) -> ClientRun:
    if not LOADGEN.exists():
        raise ClientError(f"{LOADGEN} not built; run bench/setup.sh")
    client_cpu0, t0 = children_cpu_now(), time.perf_counter()
    proc = _popen(argv)
    counter = PerfCounter()
    cpu_start = cpu_end = None
    perf: PerfCounts | None = None
    done: dict[str, Any] | None = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            kind = event.get("event")
            if kind == "measure":
                cpu_start = cpu_now()
                counter.start()
            elif kind == "done":
                cpu_end = cpu_now()
                perf = counter.stop()
                done = event
        proc.wait()
    finally:
        counter.stop()
        err = _reap(proc)
    if proc.returncode != 0:
        raise ClientError(f"loadgen exit status {proc.returncode}: {_stderr_tail(err)}")
    if done is None or cpu_start is None or cpu_end is None:
        raise ClientError(f"loadgen printed no result: {_stderr_tail(err)}")
    busy = (children_cpu_now() - client_cpu0) / (time.perf_counter() - t0)
    return ClientRun(int(done["round_trips"]), float(done["seconds"]), cpu_end - cpu_start, busy, done, perf)


async def run_loadgen(port: int, size: int, duration_ms: int, *, tls_ca: Path | None = None) -> ClientRun:
    """Drive an echo server on HOST:port with the Rust load generator."""
    argv = [
        str(LOADGEN),
        "--addr",
        f"{HOST}:{port}",
        "--conns",
        str(ECHO_CONNECTIONS),
        "--size",
        str(size),
        "--warmup-ms",
        str(CONTEXT.warmup),
        "--duration-ms",
        str(duration_ms),
        "--io-timeout-ms",
        str(CLIENT_IO_TIMEOUT_MS),
    ]
    if tls_ca is not None:
        argv += ["--tls", "--ca", str(tls_ca), "--server-name", "localhost"]
    return await in_thread(_drive_loadgen, argv)


# --- wrk ---------------------------------------------------------------------------------------


def _wrk_once(url: str, seconds: int) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise ClientError("wrk not found; run bench/setup.sh (apt-get install wrk)")
    argv = [
        wrk,
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{seconds}s",
        "--timeout",
        f"{CLIENT_IO_TIMEOUT_MS // 1000}s",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    proc = _popen(argv)
    try:
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise ClientError(f"wrk exit status {proc.returncode}: {_stderr_tail(err) or _stderr_tail(out)}")
    match = re.search(r"^WRK_SUMMARY (\{.*\})$", out, re.MULTILINE)
    if match is None:
        raise ClientError(f"wrk printed no summary: {_stderr_tail(out)}")
    summary = json.loads(match.group(1))
    errors = {k: v for k, v in summary["errors"].items() if v}
    if errors:
        raise ClientError(f"wrk saw errors: {errors}")
    return summary


def _drive_wrk(url: str, warmup_s: int, duration_s: int) -> ClientRun:
    if warmup_s:
        _wrk_once(url, warmup_s)
    counter = PerfCounter()
    counter.start()
    try:
        cpu_start, client_cpu0, t0 = cpu_now(), children_cpu_now(), time.perf_counter()
        summary = _wrk_once(url, duration_s)
        cpu_seconds = cpu_now() - cpu_start
    finally:
        perf = counter.stop()
    busy = (children_cpu_now() - client_cpu0) / (time.perf_counter() - t0)
    return ClientRun(int(summary["requests"]), summary["duration_us"] / 1e6, cpu_seconds, busy, summary, perf)


async def run_wrk(url: str, duration_ms: int) -> ClientRun:
    """Load an HTTP(S) server with wrk (whole seconds: wrk takes no finer durations).

    The warm-up is a separate wrk run, so the measured run opens its connections (and
    TLS sessions) inside the measured window; with keep-alive that is a small share.
    """
    warmup_s = math.ceil(CONTEXT.warmup / 1000) if CONTEXT.warmup else 0
    return await in_thread(_drive_wrk, url, warmup_s, max(1, round(duration_ms / 1000)))


# --- servers -----------------------------------------------------------------------------------


class EchoProtocol(asyncio.Protocol):
    """Writes back every chunk as it arrives."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


HTTP_BODY = b"Hello, world!\n"
HTTP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
    + str(len(HTTP_BODY)).encode()
    + b"\r\n\r\n"
    + HTTP_BODY
)


def http_protocol_factory() -> tuple[Callable[[], asyncio.Protocol], list[int]]:
    """Return (protocol factory, response counter) for a minimal httptools keep-alive server."""
    import httptools  # imported here so rows without HTTP do not need it

    served = [0]

    class HttpProtocol(asyncio.Protocol):
        transport: asyncio.Transport

        def __init__(self) -> None:
            self.parser = httptools.HttpRequestParser(self)

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.write(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                self.transport.close()

        def on_message_complete(self) -> None:
            self.transport.write(HTTP_RESPONSE)
            served[0] += 1
            if not self.parser.should_keep_alive():
                self.transport.close()

    return HttpProtocol, served


async def close_server(server: asyncio.AbstractServer) -> None:
    server.close()
    try:
        await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)
    except TimeoutError:
        pass  # the measurement is complete; a lingering connection does not invalidate it


def server_port(server: asyncio.AbstractServer) -> int:
    sockets = getattr(server, "sockets", None)
    if not sockets:
        raise RuntimeError("server has no listening sockets")
    return int(sockets[0].getsockname()[1])


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def http_row(duration_ms: int, *, tls: bool) -> Measurement:
    protocol, served = http_protocol_factory()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, HOST, 0, ssl=server_ssl_context() if tls else None)
    try:
        run = await run_wrk(f"{'https' if tls else 'http'}://{HOST}:{server_port(server)}/", duration_ms)
    finally:
        await close_server(server)
    if served[0] < run.ops:
        raise ClientError(f"wrk counted {run.ops} responses but the server sent {served[0]}")
    return run.measurement()


# --- TLS certificates --------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path  # CA certificate the client trusts
    cert: Path  # server certificate (CN=localhost, SAN localhost + 127.0.0.1), signed by the CA
    key: Path


def ensure_certs() -> Certs:
    """Create a throw-away CA and server certificate under bench/.certs (once) with the openssl CLI."""
    certs = Certs(CERT_DIR / "ca.pem", CERT_DIR / "server.pem", CERT_DIR / "server.key")
    if all(p.exists() for p in (certs.ca, certs.cert, certs.key)):
        return certs
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to create the TLS test certificates")
    CERT_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CERT_DIR) as tmp_name:
        tmp = Path(tmp_name)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        (tmp / "server.ext").write_text(
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature\n"
            "extendedKeyUsage = serverAuth\n"
            "subjectAltName = DNS:localhost, IP:127.0.0.1\n"
        )
        steps = [
            [openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3650"]
            + ["-subj", "/CN=ferroloop bench CA", "-addext", "basicConstraints=critical,CA:TRUE"]
            + ["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            [openssl, "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
            [openssl, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key"]
            + ["-CAcreateserial", "-days", "3650", "-extfile", "server.ext", "-out", "server.pem"],
        ]
        for argv in steps:
            proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(argv[:2])} failed: {_stderr_tail(proc.stderr)}")
        for name in ("server.key", "server.pem", "ca.pem"):  # ca.pem last: its presence marks completion
            os.replace(tmp / name, CERT_DIR / name)
    return certs


def server_ssl_context() -> ssl.SSLContext:
    certs = ensure_certs()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.cert, certs.key)
    return ctx
