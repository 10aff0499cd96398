"""ferroloop-only: a loop that sleeps until a timer wakes at the timer's deadline, to the clock's
resolution. The poller's own timeout is whole milliseconds (rounded up), so with it alone, as on
the stdlib loop, a timer 0.2 ms away fires a millisecond or more after it was set, and one 2.3 ms
away after 3 ms or more. Timing on a busy machine varies, so each check takes the best of several
tries: one wake-up on time is enough to show the resolution, none could come early."""

import asyncio
import os
import time

import ferroloop
import pytest


@pytest.fixture
def loop():
    lp = ferroloop.new_event_loop()
    yield lp
    lp.close()


def _best_sleep(loop, delay, tries=50):
    async def main():
        waits = []
        for _ in range(tries):
            start = time.monotonic()
            await asyncio.sleep(delay)
            waits.append(time.monotonic() - start)
        return waits

    waits = loop.run_until_complete(main())
    assert min(waits) >= delay - 1e-6, waits
    return min(waits)


@pytest.mark.parametrize("delay, whole_ms", [(0.0002, 0.001), (0.0023, 0.003)])
def test_a_sleeping_loop_wakes_between_milliseconds(loop, delay, whole_ms):
    assert _best_sleep(loop, delay) < whole_ms - 0.0001


def test_timers_stay_precise_after_a_poll_woken_before_its_deadline(loop):
    # A poll woken by I/O before its timer's deadline leaves that deadline set for later polls to
    # replace or clear.
    r, w = os.pipe()
    try:
        woke = []

        def readable():
            os.read(r, 1)
            woke.append(loop.time())

        loop.add_reader(r, readable)
        loop.call_later(0.0005, lambda: None)
        loop.call_soon(os.write, w, b"x")
        loop.run_until_complete(asyncio.sleep(0.002))
        loop.remove_reader(r)
        assert len(woke) == 1
        assert _best_sleep(loop, 0.0003) < 0.0009
    finally:
        os.close(r)
        os.close(w)
