"""contextvars propagation through callbacks, timers, threads and tasks."""

import asyncio
import contextvars
import gc
import sys
import threading
import weakref

import pytest
from _looputil import run_briefly

var = contextvars.ContextVar("conformance_var", default="default")


@pytest.fixture
def outer_value():
    token = var.set("outer")
    yield "outer"
    var.reset(token)


def _scheduler(loop, kind):
    if kind == "call_soon":
        return lambda cb, *a, **kw: loop.call_soon(cb, *a, **kw)
    if kind == "call_later":
        return lambda cb, *a, **kw: loop.call_later(0.001, cb, *a, **kw)
    if kind == "call_at":
        return lambda cb, *a, **kw: loop.call_at(loop.time() + 0.001, cb, *a, **kw)
    if kind == "call_soon_threadsafe":
        return lambda cb, *a, **kw: loop.call_soon_threadsafe(cb, *a, **kw)
    raise AssertionError(kind)


def _drain(loop):
    loop.call_later(0.01, loop.stop)
    loop.run_forever()


SCHEDULERS = ["call_soon", "call_later", "call_at", "call_soon_threadsafe"]


@pytest.mark.parametrize("kind", SCHEDULERS)
def test_context_copied_at_schedule_time(loop, outer_value, kind):
    seen = []
    schedule = _scheduler(loop, kind)
    schedule(lambda: seen.append(var.get()))
    var.set("changed-after-scheduling")
    _drain(loop)
    assert seen == ["outer"]


@pytest.mark.parametrize("kind", SCHEDULERS)
def test_callback_changes_do_not_leak(loop, outer_value, kind):
    seen = []
    schedule = _scheduler(loop, kind)
    schedule(lambda: var.set("set-in-callback"))
    schedule(lambda: seen.append(var.get()))
    _drain(loop)
    # Each callback got its own copy: the second one cannot see the first's set().
    assert seen == ["outer"]
    assert var.get() == "outer"


@pytest.mark.parametrize("kind", SCHEDULERS)
def test_values_at_each_scheduling_and_no_leaks_between_many_callbacks(loop, outer_value, kind):
    # Runs of handles scheduled with the same values, then others, each setting the variable.
    seen = []
    schedule = _scheduler(loop, kind)

    def callback(i):
        seen.append((i, var.get()))
        var.set(f"set-by-{i}")

    for i in range(30):
        if i % 10 == 0:
            var.set(f"value-{i // 10}")
        schedule(callback, i)
    _drain(loop)
    assert sorted(seen) == [(i, f"value-{i // 10}") for i in range(30)]
    assert var.get() == "value-2"


def test_callback_scheduled_from_a_callback_sees_its_values(loop, outer_value):
    seen = []

    def first():
        var.set("set-in-first")
        loop.call_soon(lambda: seen.append(("inner", var.get())))

    loop.call_soon(first)
    loop.call_soon(lambda: seen.append(("sibling", var.get())))
    _drain(loop)
    # A later turn: the snapshot the two handles above ran in must not have changed.
    loop.call_soon(lambda: seen.append(("later", var.get())))
    _drain(loop)
    assert seen == [("sibling", "outer"), ("inner", "set-in-first"), ("later", "outer")]


@pytest.mark.parametrize("kind", SCHEDULERS)
def test_set_after_scheduling_from_a_lone_callback(loop, outer_value, kind):
    # The callback's context is the one it scheduled `inner` in: changing it afterwards must not
    # reach `inner`.
    seen = []
    schedule = _scheduler(loop, kind)

    def inner():
        seen.append(var.get())
        loop.stop()

    def first():
        schedule(inner)
        var.set("set-after-scheduling")

    # The only handle scheduled: nothing else shares the context snapshot it runs in.
    schedule(first)
    loop.run_forever()
    assert seen == ["outer"]


@pytest.mark.parametrize("kind", SCHEDULERS)
def test_scheduled_inside_another_contexts_run(loop, outer_value, kind):
    # Inside `ctx.run()` the current context is `ctx`, not the one the loop entered for the
    # callback: handles scheduled there see ctx's values, and what they set reaches neither.
    seen = []
    schedule = _scheduler(loop, kind)
    other = contextvars.copy_context()
    other.run(var.set, "other")
    same = contextvars.copy_context()

    def record(tag):
        seen.append((tag, var.get()))
        var.set(f"set-by-{tag}")

    def first():
        schedule(record, "before")
        other.run(schedule, record, "in-other")
        same.run(schedule, record, "in-same")
        other.run(var.set, "other-changed")
        schedule(record, "after")

    schedule(first)
    _drain(loop)
    assert sorted(seen) == sorted(
        [("before", "outer"), ("in-other", "other"), ("in-same", "outer"), ("after", "outer")]
    )
    assert other[var] == "other-changed"
    assert same[var] == "outer"
    assert var.get() == "outer"


@pytest.mark.parametrize("kind", SCHEDULERS)
def test_a_chain_of_callbacks_each_setting_after_scheduling(loop, outer_value, kind):
    # Each callback schedules the next and then sets the variable, some twice and some back
    # with reset(): every callback sees what was set when it was scheduled.
    seen = []
    schedule = _scheduler(loop, kind)

    def step(n):
        seen.append((n, var.get()))
        if n == 0:
            loop.stop()
            return
        if n % 3 == 0:
            var.set(f"before-{n}")
        schedule(step, n - 1)
        token = var.set(f"after-{n}")
        if n % 2 == 0:
            var.reset(token)
        elif n % 5 == 0:
            var.set(f"again-{n}")

    schedule(step, 12)
    loop.run_forever()
    expected = [(12, "outer")]
    value = "outer"
    for n in range(12, 0, -1):
        if n % 3 == 0:
            value = f"before-{n}"
        expected.append((n - 1, value))
    assert seen == expected
    assert var.get() == "outer"


@pytest.mark.parametrize("kind", SCHEDULERS)
def test_handles_scheduled_around_sets_in_one_callback(loop, outer_value, kind):
    # One callback schedules, sets, schedules again, and so on, also from inside a copy of its
    # context made along the way: each handle sees the values of its own scheduling, however
    # the contexts involved hold the same values.
    seen = []
    contexts = {}
    schedule = _scheduler(loop, kind)

    def record(tag):
        seen.append((tag, var.get()))
        var.set(f"set-by-{tag}")

    def first():
        handles = [schedule(record, "a"), schedule(record, "b")]
        var.set("one")
        copy = contextvars.copy_context()
        handles.append(schedule(record, "c"))
        handles.append(copy.run(schedule, record, "d"))
        var.set("two")
        handles.append(copy.run(schedule, record, "e"))
        handles.append(schedule(record, "f"))
        if sys.version_info >= (3, 12):
            contexts.update((tag, h.get_context()[var]) for tag, h in zip("abcdef", handles, strict=True))
        var.set("three")
        loop.call_later(0.01, loop.stop)

    # The only handle scheduled: nothing else shares the context snapshot it runs in.
    schedule(first)
    loop.run_forever()
    expected = {"a": "outer", "b": "outer", "c": "one", "d": "one", "e": "one", "f": "two"}
    assert sorted(seen) == sorted(expected.items())
    if sys.version_info >= (3, 12):
        assert contexts == expected
    assert var.get() == "outer"


@pytest.mark.parametrize("kind", ["call_soon", "call_soon_threadsafe"])
def test_a_cancelled_handles_context_values_are_freed(loop, kind):
    class Value:
        pass

    value = Value()
    gone = weakref.ref(value)
    token = var.set(value)
    handle = _scheduler(loop, kind)(lambda: None)
    var.reset(token)
    handle.cancel()
    del value, handle
    run_briefly(loop)
    run_briefly(loop)
    gc.collect()
    assert gone() is None


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Handle.get_context() is new in 3.12")
@pytest.mark.parametrize("kind", SCHEDULERS)
def test_each_handle_has_a_context_of_its_own(loop, outer_value, kind):
    schedule = _scheduler(loop, kind)
    first = schedule(var.set, "set-by-first")
    second = schedule(lambda: None)
    one, other = first.get_context(), second.get_context()
    assert one is not other
    assert one is first.get_context()
    assert one[var] == other[var] == "outer"
    _drain(loop)
    # The first handle ran in the context it handed out.
    assert one[var] == "set-by-first"
    assert other[var] == "outer"


@pytest.mark.parametrize("kind", SCHEDULERS)
def test_explicit_context(loop, outer_value, kind):
    ctx = contextvars.Context()
    seen = []
    schedule = _scheduler(loop, kind)

    def cb():
        seen.append(var.get())
        var.set("written-into-ctx")

    schedule(cb, context=ctx)
    _drain(loop)
    assert seen == ["default"]
    # The callback ran via ctx.run(): its writes stay in ctx.
    assert ctx[var] == "written-into-ctx"
    assert var.get() == "outer"


@pytest.mark.parametrize("kind", SCHEDULERS)
def test_explicit_context_shared_between_callbacks(loop, kind):
    ctx = contextvars.copy_context()
    seen = []
    schedule = _scheduler(loop, kind)
    schedule(lambda: var.set("first"), context=ctx)
    schedule(lambda: seen.append(var.get()), context=ctx)
    _drain(loop)
    assert seen == ["first"]


def test_explicit_context_with_args(loop):
    ctx = contextvars.Context()
    ctx.run(var.set, "in-ctx")
    seen = []
    loop.call_soon(lambda a, b: seen.append((a, b, var.get())), 1, 2, context=ctx)
    run_briefly(loop)
    assert seen == [(1, 2, "in-ctx")]


def test_call_soon_threadsafe_from_thread_uses_thread_context(loop, outer_value):
    seen = []
    done = threading.Event()

    def worker():
        var.set("thread")
        loop.call_soon_threadsafe(lambda: seen.append(var.get()))
        ctx = contextvars.Context()
        ctx.run(var.set, "explicit")
        loop.call_soon_threadsafe(lambda: seen.append(var.get()), context=ctx)
        loop.call_soon_threadsafe(loop.stop)
        done.set()

    t = threading.Thread(target=worker)
    loop.call_soon(t.start)
    loop.run_forever()
    t.join()
    assert done.is_set()
    assert seen == ["thread", "explicit"]


def test_task_copies_context(loop, outer_value):
    async def child():
        seen = var.get()
        var.set("set-in-task")
        return seen

    async def main():
        var.set("main")
        task = asyncio.get_running_loop().create_task(child())
        var.set("main-after-create")
        result = await task
        return result, var.get()

    assert loop.run_until_complete(main()) == ("main", "main-after-create")
    assert var.get() == "outer"


def test_task_context_persists_across_awaits(loop):
    async def main():
        var.set("a")
        await asyncio.sleep(0)
        first = var.get()
        var.set("b")
        await asyncio.sleep(0.001)
        return first, var.get()

    assert loop.run_until_complete(main()) == ("a", "b")


def test_create_task_with_context(loop):
    ctx = contextvars.Context()
    ctx.run(var.set, "explicit")

    async def child():
        before = var.get()
        var.set("changed-by-task")
        return before

    async def main():
        task = asyncio.get_running_loop().create_task(child(), context=ctx)
        return await task

    assert loop.run_until_complete(main()) == "explicit"
    assert ctx[var] == "changed-by-task"


def test_future_callbacks_run_in_registration_context(loop):
    seen = []

    async def main():
        fut = loop.create_future()
        var.set("registered")
        fut.add_done_callback(lambda f: seen.append(var.get()))
        ctx = contextvars.Context()
        ctx.run(var.set, "explicit")
        fut.add_done_callback(lambda f: seen.append(var.get()), context=ctx)
        var.set("resolved")
        fut.set_result(None)
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert seen == ["registered", "explicit"]


def test_to_thread_propagates_context(loop):
    async def main():
        var.set("to-thread")
        return await asyncio.to_thread(var.get)

    assert loop.run_until_complete(main()) == "to-thread"


def test_gather_children_see_parent_context(loop):
    async def child(i):
        await asyncio.sleep(0)
        v = var.get()
        var.set(f"child-{i}")
        return v

    async def main():
        var.set("parent")
        results = await asyncio.gather(*(child(i) for i in range(5)))
        return results, var.get()

    results, parent = loop.run_until_complete(main())
    assert results == ["parent"] * 5
    assert parent == "parent"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Handle.get_context() is new in 3.12")
@pytest.mark.parametrize("kind", SCHEDULERS)
def test_a_handles_context_handed_out_is_collectable(loop, kind):
    handle = _scheduler(loop, kind)(lambda: None)
    context = handle.get_context()
    assert gc.is_tracked(context)
    # A reference cycle through the context, once the handle has run, is found and freed.
    context.run(var.set, context)
    gone = weakref.ref(context)
    _drain(loop)
    del handle, context
    gc.collect()
    assert gone() is None


def test_pending_contexts_through_collections_cancelling_and_closing(loop, outer_value):
    # Contexts of handles waiting in the loop, cancelled, run, failed or dropped at close,
    # with collections in between: each path releases them without harm.
    seen = []
    errors = []
    loop.set_exception_handler(lambda loop, ctx: errors.append(ctx["exception"]))
    probe = loop.call_soon(lambda: None)
    probe.cancel()
    make = type(probe)  # the loop's handle class, to make handles directly below
    handles = []
    for i in range(300):
        handles.append(loop.call_soon(lambda i=i: seen.append((i, var.get()))))
        handles.append(loop.call_later(0.001 * (i % 3), var.set, i))
        handles.append(loop.call_later(3600, seen.append, "never"))
        handles.append(loop.call_soon(lambda: 1 / 0))
    gc.collect()
    for handle in handles[::5]:
        handle.cancel()
    gc.collect()
    _drain(loop)
    gc.collect()
    # Every fifth handle was cancelled: 60 of each kind.
    assert all(value == "outer" for _, value in seen) and "never" not in seen
    assert len(seen) == 240
    assert len(errors) == 240 and all(isinstance(e, ZeroDivisionError) for e in errors)
    del handles
    loop.close()
    gc.collect()
    # Handles made directly, never scheduled, are dropped with their contexts.
    unscheduled = [make(print, (), loop) for _ in range(100)]
    gc.collect()
    del unscheduled
    gc.collect()


@pytest.mark.parametrize("kind", SCHEDULERS)
def test_a_fired_handle_kept_by_its_callbacks_owner_does_not_keep_it_alive(loop, kind):
    # `self.timer = loop.call_later(..., self.method)`: the owner holds the handle and the handle
    # held the owner's method. Once the handle has run, the owner must still be freed.
    class Owner:
        fired = False

        def fire(self):
            self.fired = True

    owner = Owner()
    owner.handle = _scheduler(loop, kind)(owner.fire)
    _drain(loop)
    assert owner.fired
    gone = weakref.ref(owner)
    del owner
    gc.collect()
    assert gone() is None


def test_context_argument_is_used_through_its_run_method(loop):
    # The stdlib runs a handle as `context.run(callback, *args)`: an object with a `run` method
    # serves as the context, and one without fails when the callback is due, with the
    # AttributeError of that lookup.
    calls = []
    errors = []

    class Recording:
        def run(self, callback, *args):
            calls.append(args)
            return callback(*args)

    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx["exception"]))
    manual = loop.call_soon(calls.append, "manual", context=Recording())
    manual._run()
    manual.cancel()
    assert calls == [("manual",), "manual"]
    calls.clear()
    loop.call_soon(calls.append, "direct", context=Recording())
    loop.call_later(0, calls.append, "timer", context=Recording())
    loop.call_soon(print, "never", context=1)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert calls == [("direct",), "direct", ("timer",), "timer"]
    [error] = errors
    assert type(error) is AttributeError
    assert "'int' object has no attribute 'run'" in str(error)
