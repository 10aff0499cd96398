"""Cross-thread entry points: call_soon_threadsafe, run_coroutine_threadsafe."""

import asyncio
import collections
import concurrent.futures
import contextvars
import os
import random
import signal
import socket
import threading
import time

import pytest


def test_call_soon_threadsafe_wakes_loop_blocked_on_long_timer(loop):
    calls = []
    long = loop.call_later(30, loop.stop)

    def worker():
        time.sleep(0.05)
        loop.call_soon_threadsafe(calls.append, "woken")
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=worker)
    t.start()
    start = time.monotonic()
    try:
        loop.run_forever()
    finally:
        t.join()
    elapsed = time.monotonic() - start
    long.cancel()
    assert calls == ["woken"]
    assert elapsed < 2


def test_call_soon_threadsafe_wakes_idle_loop(loop):
    # No timers at all: the loop blocks indefinitely in its poll.
    calls = []

    def worker():
        time.sleep(0.05)
        loop.call_soon_threadsafe(lambda: (calls.append(threading.get_ident()), loop.stop()))

    t = threading.Thread(target=worker)
    t.start()
    start = time.monotonic()
    try:
        loop.run_forever()
    finally:
        t.join()
    assert calls == [threading.get_ident()]
    assert time.monotonic() - start < 2


def test_call_soon_threadsafe_returns_handle(loop):
    handle = loop.call_soon_threadsafe(lambda: None)
    assert not handle.cancelled()
    handle.cancel()
    assert handle.cancelled()
    loop.stop()
    loop.run_forever()


def test_call_soon_threadsafe_cancelled_handle_not_run(loop):
    calls = []
    handle = loop.call_soon_threadsafe(calls.append, "x")
    handle.cancel()
    loop.stop()
    loop.run_forever()
    assert calls == []


def test_call_soon_threadsafe_from_many_threads(loop):
    n_threads, per_thread = 4, 250
    calls = []
    barrier = threading.Barrier(n_threads)

    def worker(tid):
        barrier.wait()
        for i in range(per_thread):
            loop.call_soon_threadsafe(calls.append, (tid, i))

    async def main():
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
        for t in threads:
            t.start()
        while len(calls) < n_threads * per_thread:
            await asyncio.sleep(0.001)
        for t in threads:
            t.join()

    loop.run_until_complete(asyncio.wait_for(main(), 10))
    assert len(calls) == n_threads * per_thread
    # FIFO per producing thread.
    for tid in range(n_threads):
        assert [i for t, i in calls if t == tid] == list(range(per_thread))


def test_call_soon_threadsafe_order_from_one_thread(loop):
    calls = []

    def worker():
        for i in range(100):
            loop.call_soon_threadsafe(calls.append, i)
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=worker)
    loop.call_soon(t.start)
    loop.run_forever()
    t.join()
    assert calls == list(range(100))


def test_run_coroutine_threadsafe(loop):
    results = []

    async def add(a, b):
        await asyncio.sleep(0.001)
        assert asyncio.get_running_loop() is loop
        return a + b

    def worker():
        fut = asyncio.run_coroutine_threadsafe(add(2, 3), loop)
        assert isinstance(fut, concurrent.futures.Future)
        results.append(fut.result(timeout=5))
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=worker)
    loop.call_soon(t.start)
    loop.run_forever()
    t.join()
    assert results == [5]


def test_run_coroutine_threadsafe_exception(loop):
    errors = []

    async def fail():
        raise KeyError("k")

    def worker():
        fut = asyncio.run_coroutine_threadsafe(fail(), loop)
        try:
            fut.result(timeout=5)
        except KeyError as exc:
            errors.append(exc)
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=worker)
    loop.call_soon(t.start)
    loop.run_forever()
    t.join()
    assert len(errors) == 1


def test_wrap_future_from_thread_pool(loop):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        cf = pool.submit(lambda: (time.sleep(0.01), "pool")[1])

        async def main():
            return await asyncio.wrap_future(cf)

        assert loop.run_until_complete(main()) == "pool"


def test_loop_in_other_thread(loop_factory):
    results = []

    def thread_main():
        lp = loop_factory()
        try:
            results.append(lp.run_until_complete(asyncio.sleep(0.001, threading.get_ident())))
        finally:
            lp.close()

    t = threading.Thread(target=thread_main)
    t.start()
    t.join(10)
    assert not t.is_alive()
    assert results == [t.ident]


def test_loops_in_two_threads_concurrently(loop, loop_factory):
    # A loop running in a worker thread does not count as "another loop is
    # running" for this thread.
    other_result = []
    ready = threading.Event()
    release = threading.Event()

    def thread_main():
        lp = loop_factory()

        async def waiter():
            ready.set()
            while not release.is_set():
                await asyncio.sleep(0.001)
            return "thread-loop"

        try:
            other_result.append(lp.run_until_complete(waiter()))
        finally:
            lp.close()

    t = threading.Thread(target=thread_main)
    t.start()
    try:
        assert ready.wait(5)

        async def main():
            await asyncio.sleep(0.001)
            return "main-loop"

        assert loop.run_until_complete(main()) == "main-loop"
    finally:
        release.set()
        t.join(10)
    assert other_result == ["thread-loop"]


def test_stop_from_other_thread_via_threadsafe(loop):
    def worker():
        time.sleep(0.02)
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=worker)
    t.start()
    loop.run_forever()
    t.join()
    assert not loop.is_running()


@pytest.mark.parametrize("n", [1, 10])
def test_threadsafe_before_run(loop, n):
    calls = []
    for i in range(n):
        loop.call_soon_threadsafe(calls.append, i)
    loop.stop()
    loop.run_forever()
    assert calls == list(range(n))


@pytest.mark.parametrize("with_fd", [False, True], ids=["no-fd", "fd"])
def test_thread_gets_the_gil_while_the_loop_stays_busy(loop, with_fd):
    # A busy loop (its ready queue never empty) whose callbacks let go of the GIL briefly every
    # millisecond, as a log handler's write does. A thread that sleeps and then wants the GIL
    # back must get it while the loop is still busy, as on the stdlib's loop, which lets go of
    # the GIL on every turn. Handing the GIL back only to the loop's thread each time restarts
    # the interpreter's switch interval for the waiting thread: it could wait for as long as the
    # loop stayed busy (the cap here).
    r, w = os.pipe()
    os.set_blocking(r, False)
    if with_fd:
        other_r, other_w = socket.socketpair()
        loop.add_reader(other_r, other_r.recv, 100)

    def job():
        time.sleep(0.001)
        return threading.get_ident()

    async def busy_until(fut, cap):
        end = time.monotonic() + cap
        last = 0.0
        while not fut.done() and time.monotonic() < end:
            await asyncio.sleep(0)
            now = time.monotonic()
            if now - last > 0.001:
                os.write(w, b"log line\n")
                os.read(r, 4096)
                last = now
        return fut.done()

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            await loop.run_in_executor(pool, job)  # the worker thread exists from here on
            done_while_busy = []
            for _ in range(3):
                fut = loop.run_in_executor(pool, job)
                done_while_busy.append(await busy_until(fut, cap=2.0))
                assert await fut != threading.get_ident()
            return done_while_busy

    try:
        assert loop.run_until_complete(main()) == [True, True, True]
    finally:
        os.close(r)
        os.close(w)
        if with_fd:
            loop.remove_reader(other_r)
            other_r.close()
            other_w.close()


# A worker thread's first call_soon_threadsafe() in a fresh process, while the loop is busy:
# everything the loop looks up lazily on that path (the current context, interned names) must be
# ready without letting go of the GIL, or the loop thread runs in the middle of it.
_FIRST_THREADSAFE_CALL = """
import operator, threading
from functools import partial

loop = new_loop()
hits = []

def from_thread():
    # Only C calls, so no switch to the loop thread in between: a long computation (the busy
    # loop thread asks for the GIL meanwhile), then two calls into the loop.
    list(map(operator.call, [
        partial(sum, range(3_000_000)),
        partial(loop.call_soon_threadsafe, hits.append, 1),
        partial(loop.call_soon_threadsafe, hits.append, 2),
    ]))

async def main():
    loop.call_soon(hits.clear)
    await asyncio.sleep(0)
    thread = threading.Thread(target=from_thread)
    thread.start()
    while len(hits) < 2:
        await asyncio.sleep(0)
    thread.join()

loop.run_until_complete(main())
loop.close()
print(hits)
"""


@pytest.mark.parametrize("attempt", range(3))
def test_first_call_soon_threadsafe_of_a_process_while_the_loop_is_busy(script, attempt):
    out = script.run(_FIRST_THREADSAFE_CALL, via_main=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1, 2]"


def test_threads_scheduling_into_a_busy_loop_lose_nothing(loop):
    # Four threads schedule callbacks and coroutines, and cancel some of them, while the loop runs
    # tasks, timers and futures: every callback not cancelled runs exactly once (a cancelled one at
    # most once: it may run before the thread cancels it), in the context it was given, and every
    # coroutine's future gets its result.
    var = contextvars.ContextVar("var", default=None)
    ran = collections.Counter()
    contexts_seen = []
    expected = collections.Counter()
    in_context = set()
    cancelled = set()  # cancelled from the thread: each may have run before it was cancelled
    futures = []

    def callback(key):
        ran[key] += 1
        contexts_seen.append((key, var.get()))

    async def square(i):
        await asyncio.sleep(0)
        return i * i

    def worker(n):
        rnd = random.Random(n)
        for i in range(600):
            key = (n, i)
            op = rnd.randrange(4)
            if op == 0:
                loop.call_soon_threadsafe(callback, key)
                expected[key] += 1
            elif op == 1:
                ctx = contextvars.copy_context()
                ctx.run(var.set, key)
                loop.call_soon_threadsafe(callback, key, context=ctx)
                expected[key] += 1
                in_context.add(key)
            elif op == 2:
                loop.call_soon_threadsafe(callback, key).cancel()
                cancelled.add(key)
            else:
                futures.append((i, asyncio.run_coroutine_threadsafe(square(i), loop)))
            if rnd.random() < 0.05:
                sum(range(20_000))  # hold the GIL in C for a while

    async def busy():
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            await asyncio.gather(*(asyncio.sleep(0) for _ in range(5)))
            loop.call_later(0.001, lambda: None)
            fut = loop.create_future()
            loop.call_soon(fut.set_result, None)
            await fut
        for _ in range(10):
            await asyncio.sleep(0)

    loop.run_until_complete(busy())
    assert all(ran[key] == 1 for key in expected)
    assert all(n == 1 and (key in expected or key in cancelled) for key, n in ran.items())
    assert in_context
    assert all(seen == (key if key in in_context else None) for key, seen in contexts_seen)
    assert len(futures) > 0
    assert all(f.result(timeout=5) == i * i for i, f in futures)


class _EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


def test_threads_flooding_call_soon_threadsafe_do_not_starve_the_loop(loop):
    """Threads that add callbacks as fast as they can leave the loop its turns: its timers fire
    on time and its tasks keep stepping (on the stdlib loop each call writes to the self-pipe,
    letting go of the GIL)."""
    stop = []
    ran = []

    def producer():
        while not stop:
            loop.call_soon_threadsafe(ran.append, None)

    async def main():
        steps = 0

        async def ticker():
            nonlocal steps
            while True:
                await asyncio.sleep(0)
                steps += 1

        task = asyncio.ensure_future(ticker())
        t0 = time.monotonic()
        await asyncio.sleep(0.2)
        elapsed = time.monotonic() - t0
        task.cancel()
        return elapsed, steps

    threads = [threading.Thread(target=producer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        elapsed, steps = loop.run_until_complete(main())
    finally:
        stop.append(True)
        for t in threads:
            t.join()
    # Unthrottled, the sleep took 2-17 s here, in one or two loop turns.
    assert elapsed < 2.0
    assert steps >= 10
    assert ran


def test_loops_in_several_threads_serve_each_other_spawn_children_and_take_signals(loop, loop_factory):
    # Three loops, each in its own thread, each serving TCP echo and connecting to the others'
    # servers, spawning children, calling into the others' loops and into the default executor,
    # while this thread's loop handles signals sent from yet another thread: every echo comes
    # back whole, every child is reaped by the loop that spawned it, every cross-loop call runs
    # exactly once in the loop it was sent to, and every signal sent reaches the handler.
    n_loops, rounds = 3, 12
    loops, ports = [None] * n_loops, [None] * n_loops
    ready = threading.Barrier(n_loops + 1, timeout=30)
    done_sending = threading.Barrier(n_loops, timeout=60)
    errors, echoes, children = [], collections.Counter(), collections.Counter()
    calls_made, calls_run = collections.Counter(), collections.Counter()
    lock = threading.Lock()

    def cross_call(sender, target):
        with lock:
            calls_run[(sender, target, threading.get_ident() == loops[target][1])] += 1

    async def client(i, rnd):
        for _ in range(rounds):
            j = rnd.randrange(n_loops)
            reader, writer = await asyncio.open_connection("127.0.0.1", ports[j])
            payload = os.urandom(rnd.choice((1, 1000, 70_000)))
            writer.write(payload)
            if await reader.readexactly(len(payload)) != payload:
                errors.append(f"echo {i}->{j} came back changed")
            writer.close()
            await writer.wait_closed()
            k = rnd.randrange(n_loops)
            with lock:
                calls_made[(i, k, True)] += 1
            loops[k][0].call_soon_threadsafe(cross_call, i, k)
            if rnd.random() < 0.3:
                proc = await asyncio.create_subprocess_exec(
                    "/bin/echo", str(i), stdout=asyncio.subprocess.PIPE
                )
                out, _ = await proc.communicate()
                if (out, proc.returncode) != (f"{i}\n".encode(), 0):
                    errors.append(f"child of loop {i}: {out!r} {proc.returncode}")
                children[i] += 1
            await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.0005)
            with lock:
                echoes[i] += 1

    def thread_main(i):
        lp = loop_factory()
        loops[i] = (lp, threading.get_ident())

        async def main():
            server = await lp.create_server(_EchoProtocol, "127.0.0.1", 0)
            ports[i] = server.sockets[0].getsockname()[1]
            ready.wait()
            await asyncio.gather(*(client(i, random.Random(i * 10 + c)) for c in range(2)))
            await lp.run_in_executor(None, done_sending.wait)  # the others may still connect
            await asyncio.sleep(0.05)
            server.close()
            await server.wait_closed()

        try:
            lp.run_until_complete(main())
        except Exception as exc:  # reported below, with the thread's number
            errors.append(f"loop {i}: {exc!r}")
            ready.abort()
            done_sending.abort()
        finally:
            lp.close()

    signals = []
    loop.add_signal_handler(signal.SIGUSR1, signals.append, 1)
    threads = [threading.Thread(target=thread_main, args=(i,)) for i in range(n_loops)]
    sent = 0
    try:
        for t in threads:
            t.start()
        ready.wait()

        async def main():
            nonlocal sent
            while any(t.is_alive() for t in threads):
                await loop.run_in_executor(None, os.kill, os.getpid(), signal.SIGUSR1)
                sent += 1
                deadline = loop.time() + 10
                while len(signals) < sent and loop.time() < deadline:
                    await asyncio.sleep(0.001)
                assert signals == [1] * sent

        loop.run_until_complete(asyncio.wait_for(main(), 120))
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert echoes == {i: 2 * rounds for i in range(n_loops)}
    assert sum(children.values()) > 0
    assert calls_run == calls_made
    assert sent > 0 and signals == [1] * sent
