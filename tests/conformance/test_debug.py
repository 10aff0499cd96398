"""Debug mode: get/set_debug, environment, slow callbacks, extra checks."""

import asyncio
import logging
import os
import re
import sys
import threading
import time

import pytest
from _looputil import run_briefly, shifted_clock_loop


def _debug_from_environment():
    return sys.flags.dev_mode or (
        not sys.flags.ignore_environment and bool(os.environ.get("PYTHONASYNCIODEBUG"))
    )


def test_debug_default_follows_environment(loop):
    # Off unless -X dev or PYTHONASYNCIODEBUG (the suite also runs under it).
    assert loop.get_debug() is _debug_from_environment()


def test_set_debug_roundtrip(loop):
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_slow_callback_duration_default(loop):
    assert loop.slow_callback_duration == pytest.approx(0.1)


def test_slow_callback_warning(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow():
        time.sleep(0.03)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(slow)
        run_briefly(loop)
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    matching = [m for m in messages if re.search(r"Executing .* took \d+\.\d{3} seconds", m)]
    assert len(matching) == 1, messages
    assert "slow" in matching[0]
    [record] = [r for r in caplog.records if r.name == "asyncio" and "Executing" in r.getMessage()]
    assert record.levelno == logging.WARNING


def test_slow_callbacks_are_timed_by_the_loops_clock(loop_type, caplog):
    # A callback is timed with loop.time(): a subclass whose clock jumps while the callback runs
    # makes an instant callback slow.
    loop = shifted_clock_loop(loop_type)
    try:
        loop.set_debug(True)

        def jump():
            loop.shift += 5.0

        with caplog.at_level(logging.WARNING, logger="asyncio"):
            loop.call_soon(jump)
            run_briefly(loop)
        messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
        assert [m for m in messages if re.search(r"Executing .*jump.* took 5\.\d{3} seconds", m)], messages
    finally:
        loop.close()


def test_no_slow_callback_warning_for_fast_callbacks(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.5
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        for _ in range(10):
            loop.call_soon(lambda: None)
        run_briefly(loop)
    assert not [r for r in caplog.records if "Executing" in r.getMessage()]


def test_no_slow_callback_warning_without_debug(loop, caplog):
    loop.set_debug(False)
    loop.slow_callback_duration = 0.001
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(time.sleep, 0.01)
        run_briefly(loop)
    assert not [r for r in caplog.records if "Executing" in r.getMessage()]


def test_debug_call_soon_rejects_coroutine(loop):
    async def coro_fn():
        pass

    loop.set_debug(True)
    coro = coro_fn()
    try:
        with pytest.raises(TypeError):
            loop.call_soon(coro)
    finally:
        coro.close()
    with pytest.raises(TypeError):
        loop.call_soon(coro_fn)


def test_debug_call_later_rejects_coroutine_function(loop):
    async def coro_fn():
        pass

    loop.set_debug(True)
    with pytest.raises(TypeError):
        loop.call_later(0.01, coro_fn)
    with pytest.raises(TypeError):
        loop.call_at(loop.time() + 0.01, coro_fn)


def test_debug_call_soon_rejects_non_callable(loop):
    loop.set_debug(True)
    with pytest.raises(TypeError):
        loop.call_soon(42)


def test_debug_call_soon_from_other_thread_raises(loop):
    loop.set_debug(True)
    errors = []

    def worker():
        try:
            loop.call_soon(lambda: None)
        except RuntimeError as exc:
            errors.append(exc)

    async def main():
        t = threading.Thread(target=worker)
        t.start()
        while t.is_alive():
            await asyncio.sleep(0.001)

    loop.run_until_complete(main())
    assert len(errors) == 1
    assert "thread" in str(errors[0])


def test_debug_call_soon_threadsafe_from_other_thread_ok(loop):
    loop.set_debug(True)
    calls = []

    def worker():
        loop.call_soon_threadsafe(calls.append, "ok")

    async def main():
        t = threading.Thread(target=worker)
        t.start()
        while not calls:
            await asyncio.sleep(0.001)
        t.join()

    loop.run_until_complete(asyncio.wait_for(main(), 5))
    assert calls == ["ok"]


def test_debug_coroutine_origin_tracking(loop):
    loop.set_debug(True)
    before = sys.get_coroutine_origin_tracking_depth()

    async def main():
        return sys.get_coroutine_origin_tracking_depth()

    depth = loop.run_until_complete(main())
    assert depth > 0
    assert sys.get_coroutine_origin_tracking_depth() == before


def test_no_coroutine_origin_tracking_without_debug(loop):
    loop.set_debug(False)

    async def main():
        return sys.get_coroutine_origin_tracking_depth()

    assert loop.run_until_complete(main()) == 0


def test_debug_flag_visible_to_futures(loop):
    loop.set_debug(True)
    fut = loop.create_future()
    # A Future created on a debug loop records where it was created.
    assert fut._source_traceback is not None
    fut.cancel()


@pytest.mark.parametrize(
    "env, python_args, expected",
    [
        ({"PYTHONASYNCIODEBUG": "1"}, (), True),
        ({}, ("-X", "dev"), True),
        ({}, (), False),
    ],
    ids=["env", "devmode", "none"],
)
def test_debug_from_environment(script, env, python_args, expected):
    result = script.run(
        """
        loop = new_loop()
        try:
            assert isinstance(loop, LOOP_TYPE), type(loop)
            print("debug", loop.get_debug())
        finally:
            loop.close()

        async def running_debug():
            return asyncio.get_running_loop().get_debug()

        print("run-debug", run(running_debug()))
        """,
        via_main=False,
        python_args=python_args,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == [f"debug {expected}", f"run-debug {expected}"]


def test_run_with_debug_true(run_entry):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert run_entry(main(), debug=True) is True
    assert run_entry(main(), debug=False) is False


def test_debug_handle_repr_shows_arguments_and_cancelled(loop):
    loop.set_debug(True)

    def cb(x):
        pass

    handle = loop.call_soon(cb, 42)
    assert "cb(42)" in repr(handle)
    handle.cancel()
    assert "cancelled" in repr(handle)
    assert "cb(42)" in repr(handle)
    loop.set_debug(False)


def test_debug_handles_of_callbacks_whose_repr_is_any_str(loop):
    """A repr may hold anything a `str` can, lone surrogates included (an undecodable path, as
    `os.fsdecode` gives it): cancelling and removing such handles works in debug mode."""
    loop.set_debug(True)

    class Odd:
        def __repr__(self):
            return "<Odd \udcff>"

    r, w = os.pipe()
    try:
        handles = [loop.call_soon(print, Odd()), loop.call_later(10, print, Odd())]
        loop.add_reader(r, print, Odd())
        for handle in handles:
            handle.cancel()
            assert "cancelled" in repr(handle)
            assert "print(<Odd \udcff>)" in repr(handle)
        assert loop.remove_reader(r) is True
    finally:
        os.close(r)
        os.close(w)
        loop.set_debug(False)
