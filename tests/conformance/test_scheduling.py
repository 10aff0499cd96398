"""call_soon / call_later / call_at / time() and Handle objects."""

import asyncio
import contextvars
import decimal
import fractions
import gc
import sys
import threading
import time
import weakref

import pytest
from _looputil import run_briefly, shifted_clock_loop


def test_call_soon_fifo_with_args(loop):
    calls = []
    for i in range(200):
        loop.call_soon(calls.append, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == list(range(200))


def test_call_soon_multiple_args(loop):
    calls = []

    def cb(*args):
        calls.append(args)

    handles = [
        loop.call_soon(cb),
        loop.call_soon(cb, 1),
        loop.call_soon(cb, 1, "two"),
        loop.call_soon(cb, 1, "two", None),
    ]
    assert [h._args for h in handles] == [(), (1,), (1, "two"), (1, "two", None)]
    run_briefly(loop)
    assert calls == [(), (1,), (1, "two"), (1, "two", None)]


def test_call_soon_returns_handle(loop):
    handle = loop.call_soon(lambda: None)
    assert hasattr(handle, "cancel")
    assert hasattr(handle, "cancelled")
    assert not handle.cancelled()
    run_briefly(loop)


def test_handles_are_handle_instances(loop):
    soon = loop.call_soon(lambda: None)
    later = loop.call_later(10, lambda: None)
    at = loop.call_at(loop.time() + 10, lambda: None)
    try:
        assert isinstance(soon, asyncio.Handle)
        assert isinstance(later, asyncio.TimerHandle)
        assert isinstance(at, asyncio.TimerHandle)
    finally:
        for h in (soon, later, at):
            h.cancel()


def test_callbacks_queued_during_iteration_run_next_iteration(loop):
    calls = []

    def outer(n):
        calls.append(("outer", n))
        loop.call_soon(calls.append, ("inner", n))

    loop.call_soon(outer, 1)
    loop.call_soon(outer, 2)
    run_briefly(loop)
    assert calls == [("outer", 1), ("outer", 2)]
    run_briefly(loop)
    assert calls == [("outer", 1), ("outer", 2), ("inner", 1), ("inner", 2)]


def test_self_rescheduling_callback_does_not_starve_timers(loop):
    spins = 0
    fired = []

    def spin():
        nonlocal spins
        spins += 1
        if not fired:
            loop.call_soon(spin)

    def timer():
        fired.append(loop.time())
        loop.stop()

    loop.call_soon(spin)
    loop.call_later(0.02, timer)
    t0 = time.monotonic()
    loop.run_forever()
    assert fired
    assert time.monotonic() - t0 < 2
    assert spins > 1


def test_call_later_ordering(loop):
    calls = []
    loop.call_later(0.03, calls.append, 3)
    loop.call_later(0.01, calls.append, 1)
    loop.call_later(0.02, calls.append, 2)
    loop.call_later(0.04, loop.stop)
    loop.run_forever()
    assert calls == [1, 2, 3]


def test_call_at_ordering(loop):
    calls = []
    base = loop.time()
    for i in (5, 1, 4, 2, 3):
        loop.call_at(base + i * 0.005, calls.append, i)
    loop.call_at(base + 0.03, loop.stop)
    loop.run_forever()
    assert calls == [1, 2, 3, 4, 5]


def test_call_later_args(loop):
    calls = []
    loop.call_later(0.001, lambda *a: calls.append(a), 1, 2, 3)
    loop.call_later(0.002, lambda *a: calls.append(a), 1, 2)
    loop.call_at(loop.time() + 0.003, lambda *a: calls.append(a), "x", None)
    loop.call_later(0.005, loop.stop)
    loop.run_forever()
    assert calls == [(1, 2, 3), (1, 2), ("x", None)]


def test_timers_do_not_fire_early(loop):
    results = []

    def fired(start, delay):
        results.append((delay, time.monotonic() - start))

    for delay in (0.0001, 0.0003, 0.0007, 0.002, 0.005):
        loop.call_later(delay, fired, time.monotonic(), delay)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert [d for d, _ in results] == [0.0001, 0.0003, 0.0007, 0.002, 0.005]
    for delay, elapsed in results:
        assert elapsed >= delay - 1e-6, (delay, elapsed)


def test_sub_millisecond_timer_fires(loop):
    fired = []
    start = time.monotonic()
    loop.call_later(0.0003, lambda: (fired.append(time.monotonic() - start), loop.stop()))
    loop.run_forever()
    assert len(fired) == 1
    assert 0.0003 - 1e-6 <= fired[0] < 0.5


def test_call_at_fires_at_or_after_deadline(loop):
    fired = []
    when = loop.time() + 0.002
    loop.call_at(when, lambda: (fired.append(loop.time()), loop.stop()))
    loop.run_forever()
    assert fired[0] >= when - 1e-6


def test_equal_deadlines_fire_in_same_iteration(loop):
    calls = []
    when = loop.time() + 0.005

    def first(name):
        calls.append(name)
        # stop() lets the current iteration finish: the other timer with the
        # same deadline must already be part of it.
        loop.stop()

    loop.call_at(when, first, "a")
    loop.call_at(when, first, "b")
    loop.call_at(when, first, "c")
    loop.run_forever()
    assert sorted(calls) == ["a", "b", "c"]


def test_equal_deadlines_order(loop, loop_kind):
    # All run; asyncio promises no order among them. ferroloop runs them as scheduled (its
    # README says so), the stdlib loop as its heap gives them.
    calls = []
    when = loop.time() + 0.005
    for i in range(8):
        loop.call_at(when, calls.append, i)
    loop.call_at(when + 0.001, loop.stop)
    loop.run_forever()
    assert sorted(calls) == list(range(8))
    if loop_kind == "ferroloop":
        assert calls == list(range(8))


def test_cancelling_timer_due_in_same_iteration(loop):
    calls = []
    when = loop.time() + 0.005
    handles = {}

    def cb(name):
        calls.append(name)
        other = handles["b" if name == "a" else "a"]
        other.cancel()
        loop.call_soon(loop.stop)

    handles["a"] = loop.call_at(when, cb, "a")
    handles["b"] = loop.call_at(when, cb, "b")
    loop.run_forever()
    assert len(calls) == 1


def test_negative_delay_runs_asap(loop):
    calls = []
    loop.call_later(-1, calls.append, "negative")
    loop.call_at(loop.time() - 5, calls.append, "past")
    run_briefly(loop)
    assert sorted(calls) == ["negative", "past"]


def test_zero_delay_runs(loop):
    calls = []
    loop.call_later(0, calls.append, "zero")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert calls == ["zero"]


def test_call_later_none_delay_raises(loop):
    with pytest.raises(TypeError):
        loop.call_later(None, lambda: None)


def test_call_at_none_when_raises(loop):
    with pytest.raises(TypeError):
        loop.call_at(None, lambda: None)


def test_call_later_accepts_int_delay(loop):
    handle = loop.call_later(1, lambda: None)
    assert abs(handle.when() - (loop.time() + 1)) < 0.5
    handle.cancel()


def test_call_later_delay_is_added_to_the_time(loop):
    # `loop.time() + delay`: a Fraction adds to a float; a Decimal or an object that only has
    # `__index__` does not.
    handle = loop.call_later(fractions.Fraction(1, 2), lambda: None)
    assert abs(handle.when() - (loop.time() + 0.5)) < 0.25
    handle.cancel()

    class Index:
        def __index__(self):
            return 1

    for delay in (decimal.Decimal(1), Index(), "1", b"1"):
        with pytest.raises(TypeError):
            loop.call_later(delay, lambda: None)


def test_a_clock_that_answers_nan_makes_every_timer_due(loop, loop_kind):
    # The stdlib keeps a timer waiting while `when >= time() + resolution`, which is never true
    # of NaN: with `loop.time` replaced by a clock that answers NaN, timers run at once, in
    # the order of their (NaN) deadlines, as scheduled.
    if loop_kind == "asyncio" and sys.version_info[:3] == (3, 13, 0):
        pytest.skip("the stdlib's 3.13.0 loop fails on it (ValueError: NaN to integer)")
    loop.time = lambda: float("nan")
    order = []
    loop.call_later(0.5, order.append, "first")
    loop.call_later(0.1, order.append, "second")
    loop.call_at(float("inf"), order.append, "third")
    # Had the loop spun instead, it is stopped (and the test fails) after 10 s.
    guard = threading.Timer(10, loop.call_soon_threadsafe, (loop.stop,))
    guard.start()
    try:
        assert loop.run_until_complete(asyncio.sleep(0.05, "done")) == "done"
    finally:
        guard.cancel()
    assert order == ["first", "second", "third"]


def test_timer_handles_compare_by_deadline(loop):
    def cb():
        pass

    t = loop.time() + 1000.0
    a, b, c = loop.call_at(t, cb), loop.call_at(t, cb), loop.call_at(t + 100, cb)
    assert a == b and hash(a) == hash(b) and a <= b and a >= b and not a < b and not a > b
    assert a < c and c > a and a <= c and c >= a and a != c
    assert sorted([c, b, a]) == [b, a, c]  # a stable sort: equal ones keep order
    others = [loop.call_at(t, print), loop.call_at(t, cb, 1)]
    assert others[0] != a  # another callback
    assert others[1] != a  # other arguments
    b.cancel()
    assert a != b and b <= c  # a cancelled timer still orders by its deadline
    # Against the stdlib's own TimerHandle, both ways.
    other = asyncio.TimerHandle(t + 50, cb, (), loop)
    assert a < other < c and other > a and c >= other
    assert a != other and other != a
    # Not against anything else.
    assert a != t and not (a == t)
    with pytest.raises(TypeError):
        a < t  # noqa: B015
    soon = loop.call_soon(cb)
    with pytest.raises(TypeError):
        soon < a  # noqa: B015
    for handle in (a, c, soon, *others):
        handle.cancel()


def test_timer_handle_repr_has_the_deadline_as_python_writes_it(loop):
    for when in (100.0, 1e-07, loop.time() + 1000.0):
        timer = loop.call_at(when, print)
        assert f"when={when!r} " in repr(timer)
        timer.cancel()


def test_handle_of_a_none_callback_shows_no_callback(loop, caplog):
    # Outside debug mode `call_soon(None)` is accepted; the handle's repr names no callback,
    # in the exception handler's log too.
    loop.set_debug(False)
    loop.set_exception_handler(None)
    handle = loop.call_soon(None)
    timer = loop.call_later(1000, None)
    assert repr(handle) == "<Handle>"
    assert repr(timer).startswith("<TimerHandle when=") and repr(timer).endswith(">")
    assert " None" not in repr(timer)
    timer.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    [record] = [r for r in caplog.records if r.name == "asyncio"]
    assert record.getMessage() == "Exception in callback None()\nhandle: <Handle>"


def test_time_is_monotonic_clock(loop):
    before = time.monotonic()
    t = loop.time()
    after = time.monotonic()
    assert isinstance(t, float)
    assert before - 1e-3 <= t <= after + 1e-3


def test_time_advances(loop):
    t1 = loop.time()
    time.sleep(0.01)
    t2 = loop.time()
    assert t2 - t1 >= 0.009


def test_timer_when_matches_call_at(loop):
    when = loop.time() + 3.5
    handle = loop.call_at(when, lambda: None)
    assert handle.when() == when
    handle.cancel()


@pytest.mark.parametrize("when", [10**9, True, fractions.Fraction(10**10, 3)])
def test_timer_keeps_a_deadline_that_is_not_a_float(loop, when):
    # call_at(int) keeps the int: when(), _when, the repr and the hash are the given object's.
    handle = loop.call_at(when, print)
    assert type(handle.when()) is type(when) and handle.when() == when
    assert type(handle._when) is type(when)
    assert f"when={when} " in repr(handle)
    assert hash(handle) == hash(when)
    assert handle < loop.call_at(float(when) + 1, print)
    handle.cancel()


def test_timer_when_for_call_later(loop):
    before = loop.time()
    handle = loop.call_later(2.0, lambda: None)
    after = loop.time()
    assert before + 2.0 <= handle.when() <= after + 2.0
    handle.cancel()


def test_cancelled_call_soon_never_runs(loop):
    calls = []
    handle = loop.call_soon(calls.append, "cancelled")
    loop.call_soon(calls.append, "kept")
    handle.cancel()
    assert handle.cancelled()
    run_briefly(loop)
    assert calls == ["kept"]


def test_cancel_is_idempotent(loop):
    handle = loop.call_soon(lambda: None)
    handle.cancel()
    handle.cancel()
    assert handle.cancelled()
    timer = loop.call_later(1, lambda: None)
    timer.cancel()
    timer.cancel()
    assert timer.cancelled()
    run_briefly(loop)


def test_cancel_from_earlier_callback_same_iteration(loop):
    calls = []
    handles = []
    loop.call_soon(lambda: handles[0].cancel())
    handles.append(loop.call_soon(calls.append, "victim"))
    run_briefly(loop)
    assert calls == []


def test_cancelled_timer_never_runs(loop):
    calls = []
    handle = loop.call_later(0.001, calls.append, "cancelled")
    handle.cancel()
    assert handle.cancelled()
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert calls == []


def test_cancel_timer_from_callback(loop):
    calls = []
    victim = loop.call_later(0.01, calls.append, "victim")
    loop.call_later(0.001, victim.cancel)
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert calls == []


def test_cancelling_many_timers(loop):
    calls = []
    handles = [loop.call_later(0.001 + i * 1e-5, calls.append, i) for i in range(500)]
    for h in handles[::2]:
        h.cancel()
    loop.call_later(0.03, loop.stop)
    loop.run_forever()
    assert calls == list(range(1, 500, 2))


def test_cancelled_timers_due_behind_live_timer(loop):
    # A live timer is at the head of the queue and a large batch of cancelled
    # timers becomes due right behind it in the same iteration, while many
    # live far-future timers stay queued: the loop's bookkeeping of cancelled
    # timers must survive the batch leaving the queue.
    calls = []
    when = loop.time() + 0.001
    batch = 150
    loop.call_at(when, calls.append, "live")
    cancelled = [loop.call_at(when + 1e-6, calls.append, "cancelled") for _ in range(batch)]
    # Exactly as many timers stay queued as there are cancelled ones, minus one.
    far = [loop.call_later(3600, calls.append, "far") for _ in range(batch - 2)]
    loop.call_later(0.01, loop.stop)
    for h in cancelled:
        h.cancel()
    # The live timer and the cancelled batch are already due when the loop starts.
    time.sleep(0.005)
    loop.run_forever()
    assert calls == ["live"]
    for h in far:
        h.cancel()
    assert loop.run_until_complete(asyncio.sleep(0.001, "still-working")) == "still-working"


def test_cancelled_after_running_is_harmless(loop):
    calls = []
    handle = loop.call_soon(calls.append, 1)
    run_briefly(loop)
    handle.cancel()
    assert calls == [1]


def test_long_timer_does_not_block_short_one(loop):
    calls = []
    long = loop.call_later(3600, calls.append, "long")
    loop.call_later(0.001, calls.append, "short")
    loop.call_later(0.01, loop.stop)
    t0 = time.monotonic()
    loop.run_forever()
    assert calls == ["short"]
    assert time.monotonic() - t0 < 1
    long.cancel()


def test_many_timers_all_fire(loop):
    calls = []
    for i in range(1000):
        loop.call_later((i % 10) * 0.001, calls.append, i)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert sorted(calls) == list(range(1000))


def test_timer_scheduled_from_callback(loop):
    calls = []

    def first():
        calls.append("first")
        loop.call_later(0.002, second)

    def second():
        calls.append("second")
        loop.stop()

    loop.call_soon(first)
    loop.run_forever()
    assert calls == ["first", "second"]


def test_run_forever_sleeps_until_timer(loop):
    # With nothing else to do the loop waits for the next timer instead of
    # returning or spinning forever.
    start = time.monotonic()
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert 0.05 - 1e-3 <= time.monotonic() - start < 1


def test_handles_made_after_others_were_freed_start_fresh(loop):
    # Thousands of handles made, run or cancelled, and freed, in waves: each new one starts out
    # as a new object (not cancelled, its own callback, arguments and context, no weak
    # references), and a weak reference to a freed one stays dead.
    seen = []
    expected = []
    dead = []
    for wave in range(3):
        handles = [loop.call_soon(seen.append, (wave, i)) for i in range(1500)]
        timers = [loop.call_later(0, seen.append, (wave, -i)) for i in range(1, 1501)]
        for h in handles + timers:
            assert not h.cancelled()
            assert weakref.getweakrefcount(h) == 0
        for h in handles[::2] + timers[::2]:
            h.cancel()
        expected += [(wave, i) for i in range(1, 1500, 2)] + [(wave, -i) for i in range(2, 1501, 2)]
        dead.extend(weakref.ref(h) for h in handles[:10] + timers[:10])
        if sys.version_info >= (3, 12):
            assert [h.get_context() is not None for h in handles[1:4]] == [True] * 3
        assert timers[1].when() <= loop.time()
        del handles, timers
        run_briefly(loop)
        gc.collect()
        assert all(ref() is None for ref in dead)
    assert sorted(seen) == sorted(expected)
    fresh = loop.call_soon(seen.append, "last")
    assert repr(fresh).startswith("<Handle list.append(") and not fresh.cancelled()
    assert fresh._args == ("last",)


class _Held:
    """An argument a handle holds, to watch it being let go of."""


def test_handles_freed_before_they_run_let_go_of_what_they_hold(loop):
    # Handles that never run, freed once the loop that held them is closed, and handles made
    # directly: each lets go of its callback, arguments, context and deadline (no collection
    # needed), and weak references to it are cleared with their callbacks called. Three waves,
    # so that later handles are made from the blocks of earlier ones.
    handle_type = type(loop.call_soon(print))
    for wave in range(3):
        held = _Held()
        when = 10**9 + wave
        when_refs = sys.getrefcount(when)
        lp = loop if wave == 0 else type(loop)()
        handles = [
            lp.call_soon(print, held),
            lp.call_soon(print, held, 1, 2),
            lp.call_later(3600, print, held),
            lp.call_at(when, print, held, 1, 2),
            lp.call_soon(print, held, context=contextvars.copy_context()),
            handle_type(print, (held,), lp),
        ]
        assert handles[3].when() is when
        assert sys.getrefcount(when) > when_refs
        freed = []
        refs = [weakref.ref(h, lambda _, i=i, f=freed: f.append(i)) for i, h in enumerate(handles)]
        held_ref = weakref.ref(held)
        lp.close()
        del held
        handles.clear()
        assert held_ref() is None
        assert sorted(freed) == list(range(6))
        assert all(r() is None for r in refs)
        assert sys.getrefcount(when) == when_refs
    # Made directly, with nothing run or closed: freeing it is what lets go of the arguments.
    held = _Held()
    held_ref = weakref.ref(held)
    handle = handle_type(print, (held,), loop)
    del held
    assert held_ref() is not None
    del handle
    assert held_ref() is None


def test_a_python_subclass_of_the_handle_type_is_freed_whole(loop):
    # A subclass made in Python of the type call_soon returns: its instances carry a dict and
    # weak references of their own, and freeing one lets go of its callback and arguments.
    handle_type = type(loop.call_soon(print))

    class Mine(handle_type):
        pass

    for _ in range(3):
        held = _Held()
        mine = Mine(print, (held,), loop)
        mine.note = held
        freed = []
        ref = weakref.ref(mine, lambda _, f=freed: f.append(True))
        held_ref = weakref.ref(held)
        assert mine._args == (held,)
        del held, mine
        assert held_ref() is None
        assert ref() is None and freed == [True]
    run_briefly(loop)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Handle.get_context is new in 3.12")
def test_handle_get_context_explicit(loop):
    ctx = contextvars.copy_context()
    handle = loop.call_soon(lambda: None, context=ctx)
    timer = loop.call_later(10, lambda: None, context=ctx)
    assert handle.get_context() is ctx
    assert timer.get_context() is ctx
    timer.cancel()
    run_briefly(loop)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Handle.get_context is new in 3.12")
def test_handle_get_context_implicit_copy(loop):
    var = contextvars.ContextVar("var")
    token = var.set("value")
    try:
        handle = loop.call_soon(lambda: None)
    finally:
        var.reset(token)
    ctx = handle.get_context()
    assert isinstance(ctx, contextvars.Context)
    assert ctx[var] == "value"
    run_briefly(loop)


def test_scheduling_methods_accept_their_parameters_as_keywords(loop):
    calls = []
    loop.call_soon(callback=lambda: calls.append("soon"), context=None)
    loop.call_later(delay=0, callback=lambda: calls.append("later"))
    loop.call_at(when=loop.time(), callback=lambda: calls.append("at"))
    loop.call_soon_threadsafe(callback=lambda: calls.append("threadsafe"))
    loop.run_until_complete(asyncio.sleep(0.01))
    assert sorted(calls) == ["at", "later", "soon", "threadsafe"]
    with pytest.raises(TypeError):
        loop.call_soon(calls.append, callback=calls.append)
    with pytest.raises(TypeError):
        loop.call_later(0, calls.append, bogus=1)


def test_nan_deadline_does_not_break_the_loop(loop):
    ran = []
    loop.call_at(float("nan"), ran.append, 1)
    try:
        loop.run_until_complete(asyncio.sleep(0.01))
    except ValueError:
        # 3.13's selector loop rejects it while computing the poll timeout.
        pass
    loop.call_soon(ran.append, 2)
    run = loop.run_until_complete(asyncio.sleep(0, "alive"))
    assert run == "alive"
    assert 2 in ran


def test_handle_run_reports_what_the_callback_raises(loop, handler_calls):
    # Code that runs a handle itself (handle._run(), as the loop does) gets the loop's reporting:
    # the exception goes to the exception handler with the handle, not to the caller.
    def failing(x):
        raise ZeroDivisionError(x)

    async def main():
        handle = loop.call_soon(failing, 42)
        handle._run()
        handle.cancel()  # the loop itself must not run it as well
        ran = []
        timer = loop.call_later(10, ran.append, "timer")
        timer._run()
        timer.cancel()
        return handle, ran

    handle, ran = loop.run_until_complete(main())
    assert ran == ["timer"]
    assert len(handler_calls) == 1
    context = handler_calls[0]
    assert context["message"].startswith("Exception in callback ")
    assert isinstance(context["exception"], ZeroDivisionError) and context["handle"] is handle


def test_a_patched_clock_drives_the_timers(loop):
    # The scheduler asks loop.time(), so a test that moves the clock on with mock.patch.object
    # makes due timers fire (and call_later counts from the patched clock).
    from unittest import mock

    fired = []

    async def main():
        loop.call_later(3600, fired.append, "hour")
        far = loop.call_later(7200, fired.append, "two hours")
        now = loop.time()
        with mock.patch.object(loop, "time", return_value=now + 3601):
            later = loop.call_later(10, print)
            assert later.when() == now + 3611
            later.cancel()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        assert fired == ["hour"]
        assert not far.cancelled()
        far.cancel()

    loop.run_until_complete(main())


def test_a_subclass_clock_drives_the_timers(loop_type):
    loop = shifted_clock_loop(loop_type)
    try:
        fired = []

        async def main():
            loop.call_later(3600, fired.append, "hour")
            loop.shift = 3601.0
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            return fired

        assert loop.run_until_complete(main()) == ["hour"]
    finally:
        loop.close()


def test_scheduled_lists_pending_timers_for_fast_forward_helpers(loop):
    # Test helpers (zeroconf's, Home Assistant's) fast-forward time by walking `loop._scheduled`
    # and running the due timers with `_run()` then `cancel()`.
    fired = []

    async def main():
        cancelled = loop.call_later(50, fired.append, "cancelled")
        late = loop.call_later(3600, fired.append, "late")
        soon = loop.call_later(60, fired.append, "soon")
        cancelled.cancel()
        pending = [h for h in loop._scheduled if not h.cancelled()]
        assert sorted(pending, key=lambda h: h.when()) == [soon, late]
        # A heap: the first is the earliest (here the cancelled one, not purged yet on either loop).
        assert loop._scheduled[0].when() == min(h.when() for h in loop._scheduled)
        assert all(isinstance(h, asyncio.TimerHandle) for h in loop._scheduled)
        horizon = loop.time() + 120
        for h in list(loop._scheduled):
            if not h.cancelled() and h.when() <= horizon:
                h._run()
                h.cancel()
        await asyncio.sleep(0)
        assert fired == ["soon"]
        assert [h for h in loop._scheduled if not h.cancelled()] == [late]
        late.cancel()

    loop.run_until_complete(main())
    assert fired == ["soon"]


# `asyncio.futures._set_result_unless_cancelled`, the callback of `asyncio.sleep`'s timer and of a
# transport's waiter: what it does when the loop runs it, on every kind of future.


def test_set_result_unless_cancelled_sets_the_result(loop):
    from asyncio import futures

    fut = loop.create_future()
    timed = loop.create_future()
    loop.call_soon(futures._set_result_unless_cancelled, fut, 42)
    loop.call_later(0.001, futures._set_result_unless_cancelled, timed, "later")
    assert loop.run_until_complete(fut) == 42
    assert loop.run_until_complete(timed) == "later"


def test_set_result_unless_cancelled_leaves_a_cancelled_future(loop):
    from asyncio import futures

    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    fut = loop.create_future()
    fut.cancel()
    loop.call_soon(futures._set_result_unless_cancelled, fut, 1)
    run_briefly(loop)
    assert fut.cancelled()
    assert errors == []


def test_set_result_unless_cancelled_on_a_done_future_reports_the_error(loop):
    from asyncio import futures

    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    fut = loop.create_future()
    fut.set_result("first")
    loop.call_soon(futures._set_result_unless_cancelled, fut, "second")
    run_briefly(loop)
    assert fut.result() == "first"
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], asyncio.InvalidStateError)
    assert "handle" in errors[0]
    assert errors[0]["message"].startswith("Exception in callback")


class _RecordingFuture(asyncio.Future):
    """A future whose `cancelled` answers what it is told to and records what is asked."""

    def __init__(self, *, loop, cancelled_answer):
        super().__init__(loop=loop)
        self.answer = cancelled_answer
        self.calls = []

    def cancelled(self):
        self.calls.append("cancelled")
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def set_result(self, result):
        self.calls.append(("set_result", result))
        super().set_result(result)


@pytest.mark.parametrize("answer, calls", [(False, 2), (0, 2), ([], 2), (True, 1), ("yes", 1)])
def test_set_result_unless_cancelled_asks_the_future_itself(loop, answer, calls):
    from asyncio import futures

    fut = _RecordingFuture(loop=loop, cancelled_answer=answer)
    loop.call_soon(futures._set_result_unless_cancelled, fut, "r")
    run_briefly(loop)
    assert fut.calls == ["cancelled", ("set_result", "r")][:calls]
    assert fut.done() == (calls == 2)


def test_set_result_unless_cancelled_reports_what_cancelled_raises(loop):
    from asyncio import futures

    class Boom(Exception):
        pass

    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    fut = _RecordingFuture(loop=loop, cancelled_answer=Boom("no answer"))
    loop.call_soon(futures._set_result_unless_cancelled, fut, "r")
    run_briefly(loop)
    assert fut.calls == ["cancelled"]
    assert [type(ctx["exception"]) for ctx in errors] == [Boom]


def test_a_replaced_set_result_unless_cancelled_is_called(loop, monkeypatch):
    from asyncio import futures

    original = futures._set_result_unless_cancelled
    seen = []

    def replacement(fut, result):
        seen.append(result)
        original(fut, result)

    monkeypatch.setattr(futures, "_set_result_unless_cancelled", replacement)
    assert loop.run_until_complete(asyncio.sleep(0.001, "slept")) == "slept"
    assert seen == ["slept"]
