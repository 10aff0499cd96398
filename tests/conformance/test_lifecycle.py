"""run_forever / run_until_complete / stop / close / is_running / is_closed."""

import asyncio
import gc
import threading
import weakref

import loopkinds
import pytest


def test_loop_is_abstract_event_loop(loop, loop_type):
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert isinstance(loop, loop_type)


def test_fresh_loop_state(loop):
    assert not loop.is_running()
    assert not loop.is_closed()


def test_is_running_inside_and_outside(loop):
    seen = []
    loop.call_soon(lambda: seen.append(loop.is_running()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [True]
    assert not loop.is_running()


def test_thread_id_names_the_running_thread(loop):
    # `_thread_id` is what `is_running()` answers from in the stdlib; code reads and sets it.
    seen = []
    loop.call_soon(lambda: seen.append((loop._thread_id, loop.is_running())))
    loop.call_soon(loop.stop)
    assert loop._thread_id is None
    loop.run_forever()
    assert seen == [(threading.get_ident(), True)]
    assert loop._thread_id is None
    loop._thread_id = 12345
    assert loop.is_running()
    loop._thread_id = None
    assert not loop.is_running()


def test_run_until_complete_returns_result(loop):
    async def main():
        await asyncio.sleep(0)
        return 42

    assert loop.run_until_complete(main()) == 42
    assert not loop.is_running()


def test_run_until_complete_accepts_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "done")
    assert loop.run_until_complete(fut) == "done"


def test_run_until_complete_raises_coroutine_exception(loop):
    async def main():
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        loop.run_until_complete(main())
    # The loop is still usable afterwards.
    assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"


def test_run_until_complete_cancelled_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.cancel)
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(fut)


def test_run_until_complete_can_be_called_repeatedly(loop):
    async def add(a, b):
        await asyncio.sleep(0)
        return a + b

    results = [loop.run_until_complete(add(i, i)) for i in range(20)]
    assert results == [2 * i for i in range(20)]


def test_run_until_complete_already_done_future(loop):
    fut = loop.create_future()
    fut.set_result(7)
    assert loop.run_until_complete(fut) == 7


def test_run_until_complete_future_of_other_loop(loop, loop_factory):
    other = loop_factory()
    try:
        fut = other.create_future()
        with pytest.raises(ValueError):
            loop.run_until_complete(fut)
        assert not loop.is_running()
    finally:
        other.close()


def test_run_until_complete_stopped_before_done(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed."):
        loop.run_until_complete(fut)
    assert not fut.done()
    fut.cancel()


def test_run_until_complete_rejects_non_awaitable(loop):
    with pytest.raises(TypeError):
        loop.run_until_complete(42)
    assert not loop.is_running()


def test_stop_before_run_forever_runs_exactly_one_iteration(loop):
    calls = []

    def first():
        calls.append("first")
        # Queued during the iteration: must wait for the next one.
        loop.call_soon(calls.append, "next-iteration")

    loop.call_soon(first)
    loop.call_soon(calls.append, "second")
    loop.stop()
    loop.run_forever()
    assert calls == ["first", "second"]

    # The callback queued during that iteration runs on the next run.
    loop.stop()
    loop.run_forever()
    assert calls == ["first", "second", "next-iteration"]


def test_stop_before_run_forever_with_nothing_queued(loop):
    loop.stop()
    loop.run_forever()  # must return, not block
    assert not loop.is_running()


def test_stop_lets_current_iteration_finish(loop):
    calls = []

    def stopper():
        calls.append("stopper")
        loop.stop()
        loop.call_soon(calls.append, "queued-by-stopper")

    loop.call_soon(stopper)
    loop.call_soon(calls.append, "after-stopper")
    loop.run_forever()
    assert calls == ["stopper", "after-stopper"]

    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["stopper", "after-stopper", "queued-by-stopper"]


def test_stop_flag_is_cleared_after_run_forever(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()
    # A second run must not stop immediately because of a stale flag.
    calls = []
    loop.call_later(0.01, calls.append, "timer")
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert calls == ["timer"]


def test_stop_twice_in_one_iteration(loop):
    loop.call_soon(loop.stop)
    loop.call_soon(loop.stop)
    loop.run_forever()
    calls = []
    loop.call_soon(calls.append, 1)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == [1]


def test_run_forever_after_run_until_complete(loop):
    loop.run_until_complete(asyncio.sleep(0))
    calls = []
    loop.call_soon(calls.append, "x")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["x"]


def test_close_is_idempotent(loop):
    assert loop._closed is False  # the stdlib's attribute, which some code reads
    loop.close()
    assert loop.is_closed() and loop._closed is True
    loop.close()
    assert loop.is_closed()


def test_close_while_running_raises(loop):
    errors = []

    def try_close():
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(exc)
        loop.stop()

    loop.call_soon(try_close)
    loop.run_forever()
    assert len(errors) == 1
    assert not loop.is_closed()


def test_close_drops_pending_callbacks(loop):
    calls = []
    loop.call_soon(calls.append, "soon")
    loop.call_later(0.001, calls.append, "later")
    loop.close()
    assert calls == []


def _closed_error():
    return pytest.raises(RuntimeError, match="Event loop is closed")


def test_call_soon_after_close(loop):
    loop.close()
    with _closed_error():
        loop.call_soon(lambda: None)


def test_call_later_after_close(loop):
    loop.close()
    with _closed_error():
        loop.call_later(0.1, lambda: None)


def test_call_at_after_close(loop):
    loop.close()
    with _closed_error():
        loop.call_at(loop.time() + 0.1, lambda: None)


def test_call_soon_threadsafe_after_close(loop):
    loop.close()
    with _closed_error():
        loop.call_soon_threadsafe(lambda: None)


def test_create_task_after_close(loop):
    async def coro():
        pass

    c = coro()
    loop.close()
    try:
        with _closed_error():
            loop.create_task(c)
    finally:
        c.close()


def test_run_forever_after_close(loop):
    loop.close()
    with _closed_error():
        loop.run_forever()


def test_run_until_complete_after_close(loop):
    async def coro():
        pass

    c = coro()
    loop.close()
    try:
        with _closed_error():
            loop.run_until_complete(c)
    finally:
        c.close()


def test_run_in_executor_after_close(loop):
    loop.close()
    with _closed_error():
        loop.run_in_executor(None, lambda: None)


def test_time_and_create_future_after_close(loop):
    # Neither needs an open loop in the reference implementation.
    loop.close()
    assert isinstance(loop.time(), float)
    fut = loop.create_future()
    assert not fut.done()


def test_run_forever_inside_itself_raises(loop):
    errors = []

    def nested():
        try:
            loop.run_forever()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(nested)
    loop.run_forever()
    assert len(errors) == 1
    assert "already running" in errors[0]
    assert not loop.is_running()


def test_run_until_complete_inside_itself_raises(loop):
    errors = []

    async def main():
        fut = loop.create_future()
        try:
            loop.run_until_complete(fut)
        except RuntimeError as exc:
            errors.append(exc)
        fut.cancel()

    loop.run_until_complete(main())
    assert len(errors) == 1


def test_run_other_loop_while_one_runs_raises(loop, loop_factory):
    other = loop_factory()
    errors = []

    def nested():
        try:
            other.run_forever()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    try:
        loop.call_soon(nested)
        loop.run_forever()
        assert len(errors) == 1
        assert "another loop is running" in errors[0]
        assert not other.is_running()
        # Both loops remain usable.
        assert other.run_until_complete(asyncio.sleep(0, "other")) == "other"
        assert loop.run_until_complete(asyncio.sleep(0, "loop")) == "loop"
    finally:
        other.close()


def test_stdlib_and_other_loop_nested_raises(loop):
    # Whatever the implementation, a stdlib loop cannot run inside it either.
    other = asyncio.SelectorEventLoop()
    errors = []

    def nested():
        try:
            other.run_forever()
        except RuntimeError as exc:
            errors.append(exc)
        loop.stop()

    try:
        loop.call_soon(nested)
        loop.run_forever()
        assert len(errors) == 1
    finally:
        other.close()


def test_loops_can_run_one_after_another(loop_factory):
    loops = [loop_factory() for _ in range(3)]
    try:
        for i, lp in enumerate(loops):
            assert lp.run_until_complete(asyncio.sleep(0, i)) == i
    finally:
        for lp in loops:
            lp.close()


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_callback_propagates(loop, exc_type):
    def raiser():
        raise exc_type()

    calls = []
    loop.call_soon(raiser)
    loop.call_soon(calls.append, "after")
    with pytest.raises(exc_type):
        loop.run_forever()
    assert not loop.is_running()
    assert asyncio._get_running_loop() is None

    # The loop stays usable.
    assert loop.run_until_complete(asyncio.sleep(0.001, "ok")) == "ok"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_coroutine_propagates(loop, exc_type):
    async def main():
        await asyncio.sleep(0)
        raise exc_type()

    with pytest.raises(exc_type):
        loop.run_until_complete(main())
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"


def test_base_exception_in_timer_callback_propagates(loop):
    def raiser():
        raise KeyboardInterrupt

    loop.call_later(0.001, raiser)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, 1)) == 1


def test_running_loop_reset_after_run(loop):
    seen = []

    async def main():
        seen.append(asyncio.get_running_loop())

    loop.run_until_complete(main())
    assert seen == [loop]
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_get_event_loop_inside_running_loop(loop):
    async def main():
        return asyncio.get_event_loop()

    assert loop.run_until_complete(main()) is loop


def test_loop_is_hashable(loop):
    assert hash(loop) == hash(loop)
    assert {loop: 1}[loop] == 1


def test_exception_in_callback_does_not_stop_loop(loop, handler_calls):
    calls = []

    def bad():
        raise ValueError("in callback")

    loop.call_soon(bad)
    loop.call_soon(calls.append, "next")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["next"]
    assert len(handler_calls) == 1
    assert isinstance(handler_calls[0]["exception"], ValueError)


def test_closed_loop_that_made_futures_and_tasks_is_collected(loop_kind):
    # Futures and tasks are made with the loop as a keyword argument; whatever the loop keeps to
    # make them must not keep it alive once it is closed and let go.
    loop = loopkinds.loop_factory(loop_kind)()

    async def main():
        running = asyncio.get_running_loop()
        fut = running.create_future()
        running.call_soon(fut.set_result, 7)
        value = await fut
        return await running.create_task(asyncio.sleep(0, value))

    assert loop.run_until_complete(main()) == 7
    loop.close()
    ref = weakref.ref(loop)
    del loop
    gc.collect()
    assert ref() is None


def _count_to_three(loop, seen):
    def step(i):
        seen.append(i)
        if i < 3:
            loop.call_soon(step, i + 1)
        else:
            loop.stop()

    loop.call_soon(step, 0)


def test_stopping_attribute_can_be_set_and_cleared(loop):
    # Some servers reset `loop._stopping` after `run_forever` returns (sanic does). Setting it
    # is `stop()`; clearing it cancels a stop that has not been acted on yet.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert loop._stopping is False
    loop._stopping = False

    loop.stop()
    loop._stopping = False
    seen = []
    _count_to_three(loop, seen)
    loop.run_forever()
    assert seen == [0, 1, 2, 3]

    loop._stopping = True
    seen = []
    _count_to_three(loop, seen)
    loop.run_forever()
    assert seen == [0]
    loop.run_forever()  # the rest of the chain
    assert seen == [0, 1, 2, 3]


def test_debug_attribute_can_be_set(loop):
    loop._debug = True
    assert loop.get_debug()
    loop._debug = False
    assert not loop.get_debug()
