"""Lock / Event / Condition / Semaphore / Barrier / Queue basic flows."""

import asyncio

import pytest


def test_lock_mutual_exclusion(loop):
    async def main():
        lock = asyncio.Lock()
        inside = 0
        max_inside = 0
        order = []

        async def worker(i):
            nonlocal inside, max_inside
            async with lock:
                inside += 1
                max_inside = max(max_inside, inside)
                order.append(i)
                await asyncio.sleep(0.001)
                inside -= 1

        await asyncio.gather(*(worker(i) for i in range(10)))
        return max_inside, order, lock.locked()

    max_inside, order, locked = loop.run_until_complete(main())
    assert max_inside == 1
    # Waiters acquire in FIFO order.
    assert order == list(range(10))
    assert locked is False


def test_lock_cancelled_waiter(loop):
    async def main():
        lock = asyncio.Lock()
        await lock.acquire()
        waiter = loop.create_task(lock.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        lock.release()
        # The lock is free again and can be taken.
        await asyncio.wait_for(lock.acquire(), 1)
        lock.release()

    loop.run_until_complete(main())


def test_event(loop):
    async def main():
        event = asyncio.Event()
        woken = []

        async def waiter(i):
            await event.wait()
            woken.append(i)

        tasks = [loop.create_task(waiter(i)) for i in range(5)]
        await asyncio.sleep(0.001)
        assert woken == []
        event.set()
        await asyncio.gather(*tasks)
        assert event.is_set()
        event.clear()
        assert not event.is_set()
        return sorted(woken)

    assert loop.run_until_complete(main()) == list(range(5))


def test_event_set_from_thread_via_threadsafe(loop):
    import threading

    async def main():
        event = asyncio.Event()
        t = threading.Thread(target=lambda: loop.call_soon_threadsafe(event.set))
        t.start()
        await asyncio.wait_for(event.wait(), 5)
        t.join()
        return event.is_set()

    assert loop.run_until_complete(main()) is True


def test_condition(loop):
    async def main():
        cond = asyncio.Condition()
        items = []
        consumed = []

        async def consumer():
            async with cond:
                await cond.wait_for(lambda: items)
                consumed.append(items.pop())

        tasks = [loop.create_task(consumer()) for _ in range(3)]
        await asyncio.sleep(0.001)
        for i in range(3):
            async with cond:
                items.append(i)
                cond.notify()
            await asyncio.sleep(0.001)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return sorted(consumed)

    assert loop.run_until_complete(main()) == [0, 1, 2]


def test_condition_notify_all(loop):
    async def main():
        cond = asyncio.Condition()
        woken = 0

        async def waiter():
            nonlocal woken
            async with cond:
                await cond.wait()
                woken += 1

        tasks = [loop.create_task(waiter()) for _ in range(4)]
        await asyncio.sleep(0.001)
        async with cond:
            cond.notify_all()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return woken

    assert loop.run_until_complete(main()) == 4


def test_semaphore_limits_concurrency(loop):
    async def main():
        sem = asyncio.Semaphore(3)
        active = 0
        peak = 0

        async def worker():
            nonlocal active, peak
            async with sem:
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(0.002)
                active -= 1

        await asyncio.gather(*(worker() for _ in range(12)))
        return peak

    assert loop.run_until_complete(main()) == 3


def test_bounded_semaphore_over_release(loop):
    async def main():
        sem = asyncio.BoundedSemaphore(1)
        async with sem:
            pass
        with pytest.raises(ValueError):
            sem.release()

    loop.run_until_complete(main())


def test_barrier(loop):
    async def main():
        barrier = asyncio.Barrier(3)
        passed = []

        async def party(i):
            await barrier.wait()
            passed.append(i)

        tasks = [loop.create_task(party(i)) for i in range(3)]
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return sorted(passed)

    assert loop.run_until_complete(main()) == [0, 1, 2]


def test_queue_producer_consumer(loop):
    async def main():
        q = asyncio.Queue(maxsize=2)
        received = []

        async def producer():
            for i in range(20):
                await q.put(i)
            await q.put(None)

        async def consumer():
            while (item := await q.get()) is not None:
                received.append(item)
                q.task_done()
            q.task_done()

        await asyncio.wait_for(asyncio.gather(producer(), consumer()), 5)
        await asyncio.wait_for(q.join(), 5)
        return received

    assert loop.run_until_complete(main()) == list(range(20))


def test_queue_put_blocks_when_full(loop):
    async def main():
        q = asyncio.Queue(maxsize=1)
        await q.put("a")
        assert q.full()
        with pytest.raises(asyncio.QueueFull):
            q.put_nowait("b")
        blocked = loop.create_task(q.put("b"))
        await asyncio.sleep(0.001)
        assert not blocked.done()
        assert await q.get() == "a"
        await asyncio.wait_for(blocked, 1)
        return q.get_nowait()

    assert loop.run_until_complete(main()) == "b"


def test_queue_get_timeout(loop):
    async def main():
        q = asyncio.Queue()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(q.get(), 0.01)
        with pytest.raises(asyncio.QueueEmpty):
            q.get_nowait()

    loop.run_until_complete(main())


def test_priority_and_lifo_queues(loop):
    async def main():
        pq = asyncio.PriorityQueue()
        for item in (3, 1, 2):
            await pq.put(item)
        lq = asyncio.LifoQueue()
        for item in (1, 2, 3):
            await lq.put(item)
        return [await pq.get() for _ in range(3)], [await lq.get() for _ in range(3)]

    assert loop.run_until_complete(main()) == ([1, 2, 3], [3, 2, 1])


def test_primitives_reusable_across_run_until_complete(loop):
    lock = asyncio.Lock()
    q = asyncio.Queue()

    async def first():
        async with lock:
            await q.put(1)

    async def second():
        async with lock:
            return await q.get()

    loop.run_until_complete(first())
    assert loop.run_until_complete(second()) == 1
