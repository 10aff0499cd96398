"""run_in_executor / default executors / to_thread / shutdown_default_executor."""

import asyncio
import concurrent.futures
import contextvars
import sys
import threading
import time

import pytest


def test_run_in_executor_default(loop):
    main_ident = threading.get_ident()

    async def main():
        fut = loop.run_in_executor(None, lambda a, b: (a * b, threading.get_ident()), 6, 7)
        assert isinstance(fut, asyncio.Future)
        assert fut.get_loop() is loop
        return await fut

    value, ident = loop.run_until_complete(main())
    assert value == 42
    assert ident != main_ident


def test_run_in_executor_default_thread_name(loop):
    name = loop.run_until_complete(loop.run_in_executor(None, lambda: threading.current_thread().name))
    assert name.startswith("asyncio")


def test_run_in_executor_exception(loop):
    def fail():
        raise ZeroDivisionError("x")

    with pytest.raises(ZeroDivisionError):
        loop.run_until_complete(loop.run_in_executor(None, fail))


def test_run_in_executor_explicit_executor(loop):
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="explicit") as pool:
        name = loop.run_until_complete(loop.run_in_executor(pool, lambda: threading.current_thread().name))
    assert name.startswith("explicit")


def test_run_in_executor_many(loop):
    async def main():
        futs = [loop.run_in_executor(None, pow, i, 2) for i in range(100)]
        return await asyncio.gather(*futs)

    assert loop.run_until_complete(main()) == [i * i for i in range(100)]


def test_run_in_executor_wakes_waiting_loop(loop):
    async def main():
        start = time.monotonic()
        await loop.run_in_executor(None, time.sleep, 0.05)
        return time.monotonic() - start

    elapsed = loop.run_until_complete(main())
    assert 0.05 - 1e-3 <= elapsed < 2


def test_set_default_executor(loop):
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="custom-default")
    loop.set_default_executor(pool)
    name = loop.run_until_complete(loop.run_in_executor(None, lambda: threading.current_thread().name))
    assert name.startswith("custom-default")
    loop.run_until_complete(loop.shutdown_default_executor())
    # shutdown_default_executor shut down the executor we supplied.
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_set_default_executor_rejects_non_thread_pool(loop):
    class NotAThreadPool(concurrent.futures.Executor):
        def submit(self, fn, /, *args, **kwargs):
            raise AssertionError("must not be used")

    with pytest.raises(TypeError):
        loop.set_default_executor(NotAThreadPool())


def test_to_thread(loop):
    async def main():
        return await asyncio.to_thread(lambda x, *, y: (x + y, threading.get_ident()), 1, y=2)

    value, ident = loop.run_until_complete(main())
    assert value == 3
    assert ident != threading.get_ident()


def test_to_thread_context(loop):
    var = contextvars.ContextVar("v")

    async def main():
        var.set("ctx")
        return await asyncio.to_thread(var.get)

    assert loop.run_until_complete(main()) == "ctx"


def test_shutdown_default_executor_without_executor(loop):
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, lambda: None)


def test_shutdown_default_executor_waits_for_jobs(loop):
    done = []

    def job():
        time.sleep(0.05)
        done.append(True)

    async def main():
        loop.run_in_executor(None, job)
        await asyncio.sleep(0)
        await loop.shutdown_default_executor()

    loop.run_until_complete(main())
    assert done == [True]
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, lambda: None)


def test_run_in_executor_explicit_after_default_shutdown(loop):
    loop.run_until_complete(loop.shutdown_default_executor())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert loop.run_until_complete(loop.run_in_executor(pool, lambda: 5)) == 5


@pytest.mark.skipif(sys.version_info < (3, 12), reason="timeout argument is new in 3.12")
def test_shutdown_default_executor_timeout_argument(loop):
    loop.run_until_complete(loop.run_in_executor(None, lambda: None))
    loop.run_until_complete(loop.shutdown_default_executor(5))
    loop.run_until_complete(loop.shutdown_default_executor(timeout=5))


@pytest.mark.skipif(sys.version_info < (3, 13), reason="3.12 joins the workers before the timeout applies")
def test_shutdown_default_executor_timeout_expires(loop):
    release = threading.Event()

    async def main():
        loop.run_in_executor(None, release.wait, 5)
        await asyncio.sleep(0.01)
        start = time.monotonic()
        with pytest.warns(RuntimeWarning, match="did not finishing joining"):
            await loop.shutdown_default_executor(timeout=0.05)
        return time.monotonic() - start

    try:
        elapsed = loop.run_until_complete(main())
    finally:
        release.set()
    assert elapsed < 2


def test_close_shuts_down_default_executor_without_waiting(loop):
    calls = []

    class RecordingPool(concurrent.futures.ThreadPoolExecutor):
        def shutdown(self, wait=True, **kwargs):
            calls.append(wait)
            super().shutdown(wait=wait, **kwargs)

    pool = RecordingPool(1)
    loop.set_default_executor(pool)
    loop.run_until_complete(loop.run_in_executor(None, lambda: None))
    loop.close()
    assert calls == [False]
    pool.shutdown(wait=True)


def test_run_in_executor_debug_rejects_coroutine_function(loop):
    async def coro_fn():
        pass

    loop.set_debug(True)
    with pytest.raises(TypeError):
        loop.run_in_executor(None, coro_fn)
