"""Subprocess rows: spawn and reap short-lived child processes."""

from __future__ import annotations

import asyncio
import time

from . import Measurement, row
from .support import cpu_now

CONCURRENCY = 50
PROGRAM = "/bin/true"


@row(
    name="subprocess_true",
    group="proc",
    unit="procs/s",
    cpu_unit="procs/CPU-s",
    n=1_000,
    n_quick=100,
    description=(
        f"asyncio.create_subprocess_exec({PROGRAM!r}) + await proc.wait(), n times, {CONCURRENCY} at a time; "
        "CPU-s counts the parent process only (not the children)."
    ),
)
async def subprocess_true(n: int) -> Measurement:
    remaining = n
    failures: list[int | None] = []

    async def spawner() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            proc = await asyncio.create_subprocess_exec(PROGRAM)
            code = await proc.wait()
            if code != 0:
                failures.append(code)

    cpu0 = cpu_now()
    t0 = time.perf_counter()
    await asyncio.gather(*(spawner() for _ in range(min(CONCURRENCY, n))))
    elapsed = time.perf_counter() - t0
    cpu = cpu_now() - cpu0
    if failures:
        raise AssertionError(f"{len(failures)} of {n} children failed, e.g. exit status {failures[0]}")
    return Measurement(n, elapsed, cpu)
