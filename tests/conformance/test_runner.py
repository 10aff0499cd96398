"""asyncio.run(loop_factory=), asyncio.Runner, the run() entry point, policies."""

import asyncio
import contextvars
import gc
import sys
import unittest
import warnings

import pytest

needs_312 = pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is new in 3.12")


@pytest.fixture
def install_fn(loop_kind):
    if loop_kind == "asyncio":
        return lambda: asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    import ferroloop

    return ferroloop.install


async def _describe():
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0)
    return loop, asyncio.current_task()


@needs_312
def test_run_with_loop_factory(loop_factory, loop_type):
    loop, task = asyncio.run(_describe(), loop_factory=loop_factory)
    assert isinstance(loop, loop_type)
    assert task is not None
    assert loop.is_closed()


@needs_312
def test_run_with_loop_factory_exception(loop_factory):
    async def fail():
        raise LookupError("from main")

    with pytest.raises(LookupError):
        asyncio.run(fail(), loop_factory=loop_factory)


def test_runner_with_loop_factory(loop_factory, loop_type):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, loop_type)
        got_loop, _ = runner.run(_describe())
        assert got_loop is loop
        # A second run reuses the same loop.
        got_loop2, _ = runner.run(_describe())
        assert got_loop2 is loop
    assert loop.is_closed()


def test_runner_shares_context_between_runs(loop_factory):
    var = contextvars.ContextVar("runner_var", default="unset")

    async def setter():
        var.set("from-first-run")

    async def getter():
        return var.get()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(setter())
        assert runner.run(getter()) == "from-first-run"
    assert var.get() == "unset"


def test_runner_explicit_context(loop_factory):
    var = contextvars.ContextVar("runner_var2", default="unset")
    ctx = contextvars.Context()
    ctx.run(var.set, "explicit")

    async def getter():
        return var.get()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(getter(), context=ctx) == "explicit"


def test_runner_debug(loop_factory):
    async def debug():
        return asyncio.get_running_loop().get_debug()

    with asyncio.Runner(loop_factory=loop_factory, debug=True) as runner:
        assert runner.run(debug()) is True


def test_runner_cancels_leftover_tasks(loop_factory):
    events = []

    async def leftover():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def main():
        asyncio.get_running_loop().create_task(leftover())
        await asyncio.sleep(0)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert events == ["cancelled"]


def test_runner_finalizes_asyncgens(loop_factory):
    events = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append("finalized")

    gen = agen()

    async def main():
        await gen.__anext__()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert events == ["finalized"]


def test_runner_from_running_loop_raises(loop, loop_factory):
    async def inner():
        pass

    async def main():
        coro = inner()
        try:
            with pytest.raises(RuntimeError):
                asyncio.Runner(loop_factory=loop_factory).run(coro)
        finally:
            coro.close()

    loop.run_until_complete(main())


def test_run_entry_basic(run_entry, loop_type):
    loop, task = run_entry(_describe())
    assert isinstance(loop, loop_type)
    assert task is not None
    assert loop.is_closed()


def test_run_entry_returns_value_and_raises(run_entry):
    async def value():
        await asyncio.sleep(0.001)
        return {"a": 1}

    async def fail():
        raise ArithmeticError("main failed")

    assert run_entry(value()) == {"a": 1}
    with pytest.raises(ArithmeticError):
        run_entry(fail())


def test_run_entry_cancels_leftover_tasks(run_entry):
    events = []

    async def leftover():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def main():
        asyncio.get_running_loop().create_task(leftover())
        await asyncio.sleep(0)

    run_entry(main())
    assert events == ["cancelled"]


def test_run_entry_shuts_down_default_executor(run_entry):
    async def main():
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: None)
        return loop

    loop = run_entry(main())
    assert loop.is_closed()
    with pytest.raises(RuntimeError):
        loop.run_in_executor(None, lambda: None)


def test_run_entry_rejects_non_coroutine(run_entry):
    with pytest.raises((TypeError, ValueError)):
        run_entry(42)


def test_run_entry_from_running_loop_raises(loop, run_entry):
    async def inner():
        pass

    async def main():
        coro = inner()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with pytest.raises(RuntimeError):
                    run_entry(coro)
            finally:
                coro.close()
            gc.collect()
        # It refuses up front: no loop or coroutine is created and left behind.
        return [str(w.message) for w in caught if issubclass(w.category, (RuntimeWarning, ResourceWarning))]

    assert loop.run_until_complete(main()) == []


def test_run_entry_does_not_leave_running_loop(run_entry):
    run_entry(asyncio.sleep(0))
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_policy_new_event_loop(policy_class, loop_type):
    policy = policy_class()
    lp = policy.new_event_loop()
    try:
        assert isinstance(lp, loop_type)
    finally:
        lp.close()


def test_install_sets_policy(install_fn, policy_class, loop_type, restore_policy):
    install_fn()
    assert isinstance(asyncio.get_event_loop_policy(), policy_class)
    lp = asyncio.new_event_loop()
    try:
        assert isinstance(lp, loop_type)
        assert lp.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
    finally:
        lp.close()


def test_stdlib_run_uses_installed_policy(install_fn, loop_type, restore_policy):
    install_fn()
    loop, _ = asyncio.run(_describe())
    assert isinstance(loop, loop_type)


def test_policy_get_event_loop_after_set(install_fn, loop_type, restore_policy):
    install_fn()
    lp = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(lp)
        assert asyncio.get_event_loop_policy().get_event_loop() is lp
    finally:
        asyncio.set_event_loop(None)
        lp.close()


def _run_test_case(case_cls, *names):
    result = unittest.TestResult()
    suite = unittest.TestSuite(case_cls(name) for name in names)
    suite.run(result)
    return result


def test_isolated_test_case_with_installed_policy(install_fn, loop_type, restore_policy):
    seen = []

    class Case(unittest.IsolatedAsyncioTestCase):
        async def asyncSetUp(self):
            self.setup_loop = asyncio.get_running_loop()

        async def test_loop(self):
            loop = asyncio.get_running_loop()
            seen.append(loop)
            self.assertIs(loop, self.setup_loop)
            await asyncio.sleep(0.001)

        async def test_task(self):
            task = asyncio.create_task(asyncio.sleep(0, "t"))
            self.assertEqual(await task, "t")

    install_fn()
    result = _run_test_case(Case, "test_loop", "test_task")
    assert result.errors == [] and result.failures == []
    assert result.testsRun == 2
    assert len(seen) == 1 and isinstance(seen[0], loop_type)


@pytest.mark.skipif(sys.version_info < (3, 13), reason="IsolatedAsyncioTestCase.loop_factory is new in 3.13")
def test_isolated_test_case_loop_factory(loop_factory, loop_type):
    seen = []
    factory = staticmethod(loop_factory)

    class Case(unittest.IsolatedAsyncioTestCase):
        loop_factory = factory

        async def test_loop(self):
            seen.append(asyncio.get_running_loop())

    result = _run_test_case(Case, "test_loop")
    assert result.errors == [] and result.failures == []
    assert isinstance(seen[0], loop_type)
