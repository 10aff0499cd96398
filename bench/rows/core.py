"""Core scheduling rows: callbacks, timers, tasks and sleeps (no I/O)."""

from __future__ import annotations

import asyncio
import random
import time

from . import Measurement, row


@row(
    name="call_soon_chain",
    group="core",
    unit="callbacks/s",
    n=1_000_000,
    n_quick=50_000,
    description="A chain of call_soon callbacks: each callback schedules the next one.",
)
async def call_soon_chain(n: int) -> Measurement:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    call_soon = loop.call_soon

    def step(remaining: int) -> None:
        if remaining:
            call_soon(step, remaining - 1)
        else:
            done.set_result(None)

    t0 = time.perf_counter()
    call_soon(step, n - 1)
    await done
    return Measurement(n, time.perf_counter() - t0)


@row(
    name="call_later_timers",
    group="core",
    unit="timers/s",
    n=200_000,
    n_quick=10_000,
    description="Schedule n call_later timers with random delays in [0, 10 ms] and wait for all to fire.",
)
async def call_later_timers(n: int) -> Measurement:
    loop = asyncio.get_running_loop()
    rng = random.Random(0xF3)
    delays = [rng.uniform(0.0, 0.010) for _ in range(n)]
    done = loop.create_future()
    call_later = loop.call_later
    fired = 0

    def on_timer() -> None:
        nonlocal fired
        fired += 1
        if fired == n:
            done.set_result(None)

    t0 = time.perf_counter()
    for delay in delays:
        call_later(delay, on_timer)
    await done
    elapsed = time.perf_counter() - t0
    if fired != n:
        raise AssertionError(f"{fired} of {n} timers fired")
    # The last timer must not fire before the longest delay has elapsed (1 ms slack for clock rounding).
    if elapsed < max(delays) - 0.001:
        raise AssertionError(
            f"all timers fired after {elapsed:.4f}s, before the longest delay {max(delays):.4f}s"
        )
    return Measurement(n, elapsed)


SHORT_SLEEP_SECONDS = 0.0002


@row(
    name="short_sleeps",
    group="core",
    unit="sleeps/s",
    n=2_000,
    n_quick=200,
    description=(
        f"One task awaiting asyncio.sleep({SHORT_SLEEP_SECONDS}) n times in a row, so the loop sleeps "
        "in its poller until each deadline: how soon after a sub-millisecond deadline it wakes "
        f"(at most {1 / SHORT_SLEEP_SECONDS:,.0f}/s). A sleep that ends before its delay fails the row."
    ),
)
async def short_sleeps(n: int) -> Measurement:
    monotonic = time.monotonic
    early = 0
    t0 = time.perf_counter()
    for _ in range(n):
        start = monotonic()
        await asyncio.sleep(SHORT_SLEEP_SECONDS)
        if monotonic() - start < SHORT_SLEEP_SECONDS:
            early += 1
    elapsed = time.perf_counter() - t0
    if early:
        raise AssertionError(f"{early} of {n} sleeps of {SHORT_SLEEP_SECONDS}s ended before their delay")
    return Measurement(n, elapsed)


async def _sleep_zero(i: int) -> int:
    await asyncio.sleep(0)
    return i


@row(
    name="gather_tasks",
    group="core",
    unit="tasks/s",
    n=100_000,
    n_quick=5_000,
    description="asyncio.gather over n tasks that each await asyncio.sleep(0) once (creation included).",
)
async def gather_tasks(n: int) -> Measurement:
    t0 = time.perf_counter()
    results = await asyncio.gather(*[_sleep_zero(i) for i in range(n)])
    elapsed = time.perf_counter() - t0
    if len(results) != n or results[-1] != n - 1:
        raise AssertionError("gather returned wrong results")
    return Measurement(n, elapsed)


SLEEPS_PER_TASK = 5
SLEEP_SECONDS = 0.001


async def _sleeper(k: int, delay: float) -> int:
    for _ in range(k):
        await asyncio.sleep(delay)
    return k


@row(
    name="task_sleeps",
    group="core",
    unit="sleeps/s",
    n=20_000,
    n_quick=1_000,
    description=(
        f"n concurrent tasks each doing {SLEEPS_PER_TASK} x asyncio.sleep({SLEEP_SECONDS}); "
        "ops = completed sleeps."
    ),
)
async def task_sleeps(n: int) -> Measurement:
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    tasks = [loop.create_task(_sleeper(SLEEPS_PER_TASK, SLEEP_SECONDS)) for _ in range(n)]
    results = await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    total = sum(results)
    if total != n * SLEEPS_PER_TASK:
        raise AssertionError(f"{total} sleeps completed, expected {n * SLEEPS_PER_TASK}")
    return Measurement(total, elapsed)
