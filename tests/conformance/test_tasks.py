"""create_future / create_task / task factories / current_task."""

import asyncio
import contextvars
import re
import sys

import pytest

needs_312 = pytest.mark.skipif(sys.version_info < (3, 12), reason="new in 3.12")


async def _return(value):
    await asyncio.sleep(0)
    return value


def test_create_future(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert not fut.done()
    loop.call_soon(fut.set_result, "r")
    assert loop.run_until_complete(fut) == "r"


def test_future_done_callback_scheduled_not_immediate(loop):
    calls = []
    fut = loop.create_future()
    fut.add_done_callback(lambda f: calls.append(f.result()))
    fut.set_result(3)
    # Done callbacks are scheduled with call_soon, never run synchronously.
    assert calls == []
    loop.stop()
    loop.run_forever()
    assert calls == [3]


def test_create_task_basic(loop):
    task = loop.create_task(_return(5))
    assert isinstance(task, asyncio.Task)
    assert task.get_loop() is loop
    assert loop.run_until_complete(task) == 5
    assert task.done()


def test_create_task_starts_on_next_iteration(loop):
    started = []

    async def coro():
        started.append(True)

    task = loop.create_task(coro())
    assert started == []
    loop.run_until_complete(task)
    assert started == [True]


def test_create_task_name(loop):
    task = loop.create_task(_return(1), name="my-task")
    assert task.get_name() == "my-task"
    loop.run_until_complete(task)


def test_create_task_default_name(loop):
    task = loop.create_task(_return(1))
    assert re.fullmatch(r"Task-\d+", task.get_name())
    loop.run_until_complete(task)


def test_create_task_rejects_non_coroutine(loop):
    with pytest.raises(TypeError):
        loop.create_task(42)


def test_create_task_with_context(loop):
    var = contextvars.ContextVar("v", default=None)
    ctx = contextvars.Context()
    ctx.run(var.set, "ctx")

    async def read():
        return var.get()

    task = loop.create_task(read(), context=ctx)
    assert loop.run_until_complete(task) == "ctx"


def test_current_task_and_running_loop(loop):
    async def main():
        task = asyncio.current_task()
        return task, asyncio.get_running_loop(), asyncio.current_task(loop)

    task = loop.create_task(main())
    current, running, current_for_loop = loop.run_until_complete(task)
    assert current is task
    assert current_for_loop is task
    assert running is loop
    assert asyncio.current_task(loop) is None


def test_current_task_none_in_plain_callback(loop):
    seen = []
    loop.call_soon(lambda: seen.append(asyncio.current_task()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [None]


def test_all_tasks(loop):
    async def main():
        blocker = loop.create_future()

        async def wait_blocker():
            await blocker

        others = [loop.create_task(wait_blocker(), name=f"t{i}") for i in range(3)]
        tasks = asyncio.all_tasks()
        assert asyncio.current_task() in tasks
        assert set(others) <= tasks
        assert asyncio.all_tasks(loop) == tasks
        blocker.set_result(None)
        await asyncio.gather(*others)
        return len(asyncio.all_tasks())

    assert loop.run_until_complete(main()) == 1
    assert asyncio.all_tasks(loop) == set()


def test_task_cancel(loop):
    async def sleeper():
        await asyncio.sleep(3600)

    async def main():
        task = loop.create_task(sleeper())
        await asyncio.sleep(0)
        task.cancel("why")
        with pytest.raises(asyncio.CancelledError):
            await task
        return task

    task = loop.run_until_complete(main())
    assert task.cancelled()


def test_task_awaits_future_from_same_loop(loop):
    async def main():
        fut = loop.create_future()
        loop.call_later(0.001, fut.set_result, "from-timer")
        return await fut

    assert loop.run_until_complete(main()) == "from-timer"


def test_task_awaiting_foreign_future_fails(loop, loop_factory):
    other = loop_factory()

    async def main():
        fut = other.create_future()
        try:
            await fut
        finally:
            fut.cancel()

    try:
        with pytest.raises(RuntimeError):
            loop.run_until_complete(main())
    finally:
        other.close()


# -- task factories ---------------------------------------------------------


def test_task_factory_default_none(loop):
    assert loop.get_task_factory() is None


def test_task_factory_called_without_context(loop):
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append((lp, kwargs))
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory
    task = loop.create_task(_return("x"))
    assert loop.run_until_complete(task) == "x"
    assert calls[0] == (loop, {})


def test_task_factory_two_positional_args_only(loop):
    # The legacy two-argument signature must keep working.
    def factory(lp, coro):
        return asyncio.Task(coro, loop=lp)

    loop.set_task_factory(factory)
    assert loop.run_until_complete(_return("legacy")) == "legacy"


def test_task_factory_called_with_context(loop):
    calls = []
    ctx = contextvars.copy_context()

    def factory(lp, coro, **kwargs):
        calls.append((lp, kwargs))
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    task = loop.create_task(_return("y"), context=ctx)
    assert loop.run_until_complete(task) == "y"
    assert calls[0][0] is loop
    assert calls[0][1] == {"context": ctx}
    assert calls[0][1]["context"] is ctx


def test_task_factory_name_applied_after_factory(loop):
    def factory(lp, coro, **kwargs):
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    task = loop.create_task(_return(1), name="named-by-loop")
    assert task.get_name() == "named-by-loop"
    loop.run_until_complete(task)


class _Nameless:
    """A task factory's result without `set_name`."""


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="3.13 calls set_name always")
def test_task_factory_result_without_set_name_warns_before_313(loop):
    loop.set_task_factory(lambda lp, coro: (coro.close(), _Nameless())[1])
    assert isinstance(loop.create_task(_return(1)), _Nameless)
    with pytest.warns(DeprecationWarning, match="set_name"):
        assert isinstance(loop.create_task(_return(1), name="n"), _Nameless)
    loop.set_task_factory(None)


@pytest.mark.skipif(sys.version_info < (3, 13), reason="before 3.13 only a name is set")
def test_task_factory_result_without_set_name_fails_from_313(loop):
    loop.set_task_factory(lambda lp, coro: (coro.close(), _Nameless())[1])
    with pytest.raises(AttributeError):
        loop.create_task(_return(1))
    loop.set_task_factory(None)


def test_task_factory_sets_no_name_unless_given_before_313(loop):
    names = []

    class Named(asyncio.Task):
        def set_name(self, value):
            names.append(value)
            super().set_name(value)

    loop.set_task_factory(lambda lp, coro: Named(coro, loop=lp))
    loop.run_until_complete(loop.create_task(_return(1)))
    loop.run_until_complete(loop.create_task(_return(2), name="two"))
    assert names == ([None, "two"] if sys.version_info >= (3, 13) else ["two"])


def test_task_factory_used_by_run_until_complete(loop):
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append(coro)
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    assert loop.run_until_complete(_return(9)) == 9
    assert len(calls) == 1


def test_task_factory_reset(loop):
    loop.set_task_factory(lambda lp, coro: asyncio.Task(coro, loop=lp))
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    assert loop.run_until_complete(_return(1)) == 1


def test_task_factory_non_callable(loop):
    with pytest.raises(TypeError):
        loop.set_task_factory(42)
    assert loop.get_task_factory() is None


def test_task_subclass_factory(loop):
    class MyTask(asyncio.Task):
        pass

    loop.set_task_factory(lambda lp, coro, **kw: MyTask(coro, loop=lp, **kw))
    task = loop.create_task(_return(1))
    assert isinstance(task, MyTask)
    assert loop.run_until_complete(task) == 1


@needs_312
def test_eager_task_factory_completes_synchronously(loop):
    loop.set_task_factory(asyncio.eager_task_factory)
    order = []

    async def immediate():
        order.append("immediate-body")
        return "eager"

    async def main():
        task = loop.create_task(immediate())
        order.append("after-create")
        # A coroutine that never suspends is already finished.
        assert task.done()
        return task.result()

    assert loop.run_until_complete(main()) == "eager"
    assert order == ["immediate-body", "after-create"]


@needs_312
def test_eager_task_factory_suspending_task(loop):
    loop.set_task_factory(asyncio.eager_task_factory)

    async def suspending():
        await asyncio.sleep(0.001)
        return asyncio.current_task()

    async def main():
        task = loop.create_task(suspending())
        assert not task.done()
        assert task in asyncio.all_tasks()
        return task, await task

    task, current = loop.run_until_complete(main())
    assert current is task


@needs_312
def test_eager_task_factory_with_gather(loop):
    loop.set_task_factory(asyncio.eager_task_factory)

    async def child(i):
        if i % 2:
            await asyncio.sleep(0)
        return i * i

    async def main():
        return await asyncio.gather(*(child(i) for i in range(50)))

    assert loop.run_until_complete(main()) == [i * i for i in range(50)]


@needs_312
def test_create_eager_task_factory_custom_class(loop):
    class MyTask(asyncio.Task):
        pass

    loop.set_task_factory(asyncio.create_eager_task_factory(MyTask))

    async def main():
        task = loop.create_task(_return(4))
        assert isinstance(task, MyTask)
        return await task

    assert loop.run_until_complete(main()) == 4
