"""Resident memory and open file descriptors of a process that churns through a loop's resources.

    python bench/soak.py [--loops ferroloop,asyncio,uvloop,rloop] [--seconds 20] [--python PATH]
                         [--out FILE.md]

Each loop runs in a fresh interpreter (the same one as run.py's workers) that repeats one round
for --seconds: TCP echo through a `Protocol` server at 10 B, 5 KB and 200 KB; a 70 KB echo
over TLS through streams; a connection aborted with data unsent; a refused connection; a UDP
datagram; an echo over a Unix socket; 50 timers scheduled and cancelled; a `wait_for` that
times out; a `TaskGroup` of 20 tasks; an executor call; `sock_connect`/`sock_sendall`/
`sock_recv`; and every fifth round a child process fed and drained through pipes. A part the
loop does not offer (rloop: TLS, Unix sockets) is left out of that loop's rounds and listed.

Every 200 rounds, after `gc.collect()`, it samples the process's resident set size and open fds.
The table gives the rounds run, the RSS at the first sample after the first fifth of the run
(warm-up: allocator pools, caches and the executor's threads settle) and at the last, the growth
between the two per 1,000 rounds, and the fds at the same two samples. A loop that keeps
something per connection, timer, task or child grows by about the same amount every round.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from loops import ALL_LOOPS, loop_factory, loop_version  # noqa: E402
from rows.support import HOST, EchoProtocol, close_server, ensure_certs, server_port, server_ssl_context  # noqa: E402
from run import DEFAULT_PYTHON  # noqa: E402

SAMPLE_EVERY = 200


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def stream_echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def check_echo(reader, writer, size):
    payload = os.urandom(size)
    writer.write(payload)
    await writer.drain()
    if await reader.readexactly(size) != payload:
        raise AssertionError(f"{size}-byte echo came back changed")


class Soak:
    def __init__(self, loop):
        self.loop = loop
        self.skipped: dict[str, str] = {}

    async def start(self):
        loop = self.loop
        certs = ensure_certs()
        self.client_ctx = ssl.create_default_context(cafile=str(certs.ca))
        self.tmp = tempfile.mkdtemp(prefix="ferroloop-soak-")
        self.server = await loop.create_server(EchoProtocol, HOST, 0)
        self.port = server_port(self.server)
        self.tls_server = await self.optional(
            "tls", asyncio.start_server(stream_echo, HOST, 0, ssl=server_ssl_context())
        )
        self.unix_path = os.path.join(self.tmp, "echo.sock")
        self.unix_server = await self.optional("unix", asyncio.start_unix_server(stream_echo, self.unix_path))
        self.udp, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=(HOST, 0))
        self.udp_port = self.udp.get_extra_info("sockname")[1]

    async def optional(self, part, coro):
        try:
            return await coro
        except NotImplementedError as exc:
            self.skipped[part] = str(exc) or "NotImplementedError"
            return None

    async def stop(self):
        for server in (self.server, self.tls_server, self.unix_server):
            if server is not None:
                await close_server(server)
        self.udp.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    async def round(self, i):
        loop = self.loop
        for size in (10, 5000, 200_000):
            reader, writer = await asyncio.open_connection(HOST, self.port)
            await check_echo(reader, writer, size)
            writer.close()
            await writer.wait_closed()
        if self.tls_server is not None:
            port = server_port(self.tls_server)
            reader, writer = await asyncio.open_connection(
                HOST, port, ssl=self.client_ctx, server_hostname="localhost"
            )
            await check_echo(reader, writer, 70_000)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass
        reader, writer = await asyncio.open_connection(HOST, self.port)
        writer.write(b"z" * 100_000)
        writer.transport.abort()
        try:
            await asyncio.open_connection(HOST, 1)
        except OSError:
            pass
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=(HOST, self.udp_port)
        )
        transport.sendto(b"ping")
        transport.close()
        if self.unix_server is not None:
            reader, writer = await asyncio.open_unix_connection(self.unix_path)
            await check_echo(reader, writer, 3000)
            writer.close()
            await writer.wait_closed()
        for handle in [loop.call_later(0.5, lambda: None) for _ in range(50)]:
            handle.cancel()
        try:
            await asyncio.wait_for(asyncio.sleep(1), 0.0005)
        except TimeoutError:
            pass
        async with asyncio.TaskGroup() as tg:
            for _ in range(20):
                tg.create_task(asyncio.sleep(0))
        if await loop.run_in_executor(None, sum, (1, 2)) != 3:
            raise AssertionError("executor call returned a wrong result")
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (HOST, self.port))
            await loop.sock_sendall(sock, b"q" * 1000)
            got = 0
            while got < 1000:
                got += len(await loop.sock_recv(sock, 4096))
        finally:
            sock.close()
        if i % 5 == 0:
            echo_stdin = "import sys; sys.stdout.write(sys.stdin.read())"
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", echo_stdin, stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            out, _ = await proc.communicate(b"hello" * 1000)
            if out != b"hello" * 1000 or proc.returncode != 0:
                raise AssertionError(f"child returned {proc.returncode} and {len(out)} bytes")


async def soak(seconds: float) -> dict:
    soaker = Soak(asyncio.get_running_loop())
    await soaker.start()
    samples = []
    start = time.monotonic()
    rounds = 0
    try:
        while time.monotonic() - start < seconds:
            await soaker.round(rounds)
            rounds += 1
            if rounds % SAMPLE_EVERY == 0:
                await asyncio.sleep(0.05)  # let closing transports finish
                gc.collect()
                samples.append((rounds, time.monotonic() - start, rss_kib(), open_fds()))
    finally:
        await soaker.stop()
    return {"rounds": rounds, "samples": samples, "skipped": soaker.skipped}


def worker(loop_name: str, seconds: float) -> int:
    loop = loop_factory(loop_name)()
    try:
        result = loop.run_until_complete(soak(seconds))
    finally:
        loop.close()
    result["version"] = loop_version(loop_name)
    print(json.dumps(result))
    return 0


def summarize(result: dict, seconds: float) -> dict:
    samples = [s for s in result["samples"] if s[1] >= seconds / 5]
    if len(samples) < 2:
        return {"rounds": result["rounds"], "error": "too few samples after warm-up; run longer"}
    (r0, _, rss0, fd0), (r1, _, rss1, fd1) = samples[0], samples[-1]
    return {
        "rounds": result["rounds"],
        "rss_first": rss0,
        "rss_last": rss1,
        "growth_per_1000": (rss1 - rss0) * 1000 / (r1 - r0),
        "fds_first": fd0,
        "fds_last": fd1,
        "skipped": result["skipped"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", default=",".join(ALL_LOOPS))
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--python", type=Path, default=DEFAULT_PYTHON)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.seconds)

    lines = [
        "# Memory and fds under churn",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- python: {args.python}",
        f"- {args.seconds:g} s per loop; samples every {SAMPLE_EVERY} rounds after gc.collect(),"
        " the first fifth of the run left out",
        "",
        "| loop | rounds | RSS first (KiB) | RSS last (KiB) | growth per 1,000 rounds (KiB)"
        " | fds first | fds last | left out |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    failed = False
    for name in args.loops.split(","):
        cmd = [str(args.python), __file__, "--worker", name, "--seconds", str(args.seconds)]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.seconds * 4 + 120, check=False
        )
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            print(f"{name}: {tail}", file=sys.stderr)
            lines.append(f"| {name} | error: {tail} | | | | | | |")
            failed = True
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        s = summarize(result, args.seconds)
        if "error" in s:
            lines.append(f"| {name} | {s['rounds']:,} | {s['error']} | | | | | |")
            failed = True
            continue
        left_out = ", ".join(sorted(s["skipped"])) or "-"
        lines.append(
            f"| {name} {result['version']} | {s['rounds']:,} | {s['rss_first']:,} | {s['rss_last']:,} |"
            f" {s['growth_per_1000']:,.1f} | {s['fds_first']} | {s['fds_last']} | {left_out} |"
        )
        print(lines[-1], file=sys.stderr)
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
