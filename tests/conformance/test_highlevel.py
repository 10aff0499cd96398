"""High-level asyncio APIs that are built on the loop core."""

import asyncio
import time

import pytest


def test_sleep_zero_yields(loop):
    order = []

    async def a():
        order.append("a1")
        await asyncio.sleep(0)
        order.append("a2")

    async def b():
        order.append("b1")
        await asyncio.sleep(0)
        order.append("b2")

    async def main():
        await asyncio.gather(a(), b())

    loop.run_until_complete(main())
    assert order == ["a1", "b1", "a2", "b2"]


def test_sleep_duration(loop):
    async def main():
        start = time.monotonic()
        result = await asyncio.sleep(0.05, result="slept")
        return result, time.monotonic() - start

    result, elapsed = loop.run_until_complete(main())
    assert result == "slept"
    assert 0.05 - 1e-3 <= elapsed < 1


def test_gather_many_tasks(loop):
    async def work(i):
        await asyncio.sleep(0.001 * (i % 5))
        return i

    async def main():
        return await asyncio.gather(*(work(i) for i in range(1000)))

    assert loop.run_until_complete(main()) == list(range(1000))


def test_gather_return_exceptions(loop):
    async def ok():
        return "ok"

    async def bad():
        raise ValueError("bad")

    async def main():
        return await asyncio.gather(ok(), bad(), ok(), return_exceptions=True)

    results = loop.run_until_complete(main())
    assert results[0] == "ok" and results[2] == "ok"
    assert isinstance(results[1], ValueError)


def test_gather_propagates_first_exception(loop):
    async def bad():
        await asyncio.sleep(0)
        raise KeyError("first")

    async def slow():
        await asyncio.sleep(0.01)
        return "slow"

    async def main():
        with pytest.raises(KeyError):
            await asyncio.gather(bad(), slow())
        await asyncio.sleep(0.02)

    loop.run_until_complete(main())


def test_gather_cancel_cancels_children(loop):
    async def main():
        children = [loop.create_task(asyncio.sleep(3600)) for _ in range(3)]
        g = asyncio.gather(*children)
        await asyncio.sleep(0)
        g.cancel()
        with pytest.raises(asyncio.CancelledError):
            await g
        return children

    children = loop.run_until_complete(main())
    assert all(c.cancelled() for c in children)


def test_taskgroup_success(loop):
    async def work(i):
        await asyncio.sleep(0.001)
        return i * 2

    async def main():
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(work(i)) for i in range(10)]
        return [t.result() for t in tasks]

    assert loop.run_until_complete(main()) == [i * 2 for i in range(10)]


def test_taskgroup_failure_cancels_siblings(loop):
    sibling_cancelled = []

    async def failing():
        await asyncio.sleep(0.001)
        raise ValueError("tg failure")

    async def sibling():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            sibling_cancelled.append(True)
            raise

    async def main():
        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(failing())
                tg.create_task(sibling())
        return info.value

    eg = loop.run_until_complete(main())
    assert len(eg.exceptions) == 1
    assert isinstance(eg.exceptions[0], ValueError)
    assert sibling_cancelled == [True]


def test_timeout_expires(loop):
    async def main():
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02) as cm:
                await asyncio.sleep(3600)
        return cm.expired(), time.monotonic() - start

    expired, elapsed = loop.run_until_complete(main())
    assert expired
    assert 0.02 - 1e-3 <= elapsed < 1


def test_timeout_not_expired(loop):
    async def main():
        async with asyncio.timeout(1) as cm:
            await asyncio.sleep(0)
        return cm.expired()

    assert loop.run_until_complete(main()) is False


def test_timeout_reschedule(loop):
    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(None) as cm:
                assert cm.when() is None
                cm.reschedule(asyncio.get_running_loop().time() + 0.01)
                await asyncio.sleep(3600)
        return cm.expired()

    assert loop.run_until_complete(main()) is True


def test_nested_timeouts_with_equal_deadline(loop):
    # Both deadlines expire in the same loop iteration: the inner context
    # manager must not swallow the outer cancellation.
    async def main():
        deadline = asyncio.get_running_loop().time() + 0.01
        inner_saw_cancel = False
        with pytest.raises(TimeoutError):
            async with asyncio.timeout_at(deadline) as outer:
                try:
                    async with asyncio.timeout_at(deadline) as inner:
                        await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    inner_saw_cancel = True
                    raise
        return inner_saw_cancel, outer.expired(), inner.expired()

    assert loop.run_until_complete(main()) == (True, True, True)


def test_wait_for_timeout_cancels_inner(loop):
    inner_cancelled = []

    async def inner():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            inner_cancelled.append(True)
            raise

    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(inner(), 0.01)

    loop.run_until_complete(main())
    assert inner_cancelled == [True]


def test_wait_for_success(loop):
    async def main():
        return await asyncio.wait_for(asyncio.sleep(0.001, "value"), 1)

    assert loop.run_until_complete(main()) == "value"


def test_wait_for_none_timeout(loop):
    async def main():
        return await asyncio.wait_for(asyncio.sleep(0.001, "none"), None)

    assert loop.run_until_complete(main()) == "none"


def test_shield(loop):
    inner_done = []

    async def inner():
        await asyncio.sleep(0.02)
        inner_done.append(True)
        return "shielded"

    async def main():
        inner_task = loop.create_task(inner())

        async def shielded():
            return await asyncio.shield(inner_task)

        outer = loop.create_task(shielded())
        await asyncio.sleep(0.001)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        return await inner_task

    assert loop.run_until_complete(main()) == "shielded"
    assert inner_done == [True]


def test_wait_first_completed(loop):
    async def main():
        fast = loop.create_task(asyncio.sleep(0.001, "fast"))
        slow = loop.create_task(asyncio.sleep(3600))
        done, pending = await asyncio.wait({fast, slow}, return_when=asyncio.FIRST_COMPLETED)
        slow.cancel()
        return done == {fast}, pending == {slow}

    assert loop.run_until_complete(main()) == (True, True)


def test_wait_timeout(loop):
    async def main():
        slow = loop.create_task(asyncio.sleep(3600))
        done, pending = await asyncio.wait({slow}, timeout=0.01)
        slow.cancel()
        return done, pending == {slow}

    assert loop.run_until_complete(main()) == (set(), True)


def test_as_completed_order(loop):
    async def main():
        coros = [asyncio.sleep(d, d) for d in (0.03, 0.01, 0.02)]
        return [await f for f in asyncio.as_completed(coros)]

    assert loop.run_until_complete(main()) == [0.01, 0.02, 0.03]


def test_cancellation_propagates_through_await_chain(loop):
    events = []

    async def leaf():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("leaf")
            raise

    async def middle():
        try:
            await leaf()
        except asyncio.CancelledError:
            events.append("middle")
            raise

    async def main():
        task = loop.create_task(middle())
        await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    loop.run_until_complete(main())
    assert events == ["leaf", "middle"]


def test_many_concurrent_sleepers(loop):
    async def sleeper(i):
        await asyncio.sleep(0.01)
        return i

    async def main():
        start = time.monotonic()
        results = await asyncio.gather(*(sleeper(i) for i in range(2000)))
        return results, time.monotonic() - start

    results, elapsed = loop.run_until_complete(main())
    assert results == list(range(2000))
    assert elapsed < 2
