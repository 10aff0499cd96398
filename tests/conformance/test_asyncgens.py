"""Async generator hooks and shutdown_asyncgens."""

import asyncio
import gc
import sys

import pytest


def test_asyncgen_hooks_installed_while_running(loop):
    before = sys.get_asyncgen_hooks()

    async def main():
        return sys.get_asyncgen_hooks()

    during = loop.run_until_complete(main())
    assert during.firstiter is not None
    assert during.finalizer is not None
    assert during != before
    assert sys.get_asyncgen_hooks() == before


def test_asyncgen_hooks_restored_after_base_exception(loop):
    before = sys.get_asyncgen_hooks()

    def raiser():
        raise KeyboardInterrupt

    loop.call_soon(raiser)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert sys.get_asyncgen_hooks() == before


def test_asyncgen_hooks_restore_previous_custom_hooks(loop):
    def firstiter(agen):
        pass

    def finalizer(agen):
        pass

    old = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=finalizer)
    try:
        loop.run_until_complete(asyncio.sleep(0))
        hooks = sys.get_asyncgen_hooks()
        assert hooks.firstiter is firstiter
        assert hooks.finalizer is finalizer
    finally:
        sys.set_asyncgen_hooks(*old)


def test_shutdown_asyncgens_finalizes_unfinished_generator(loop):
    events = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append(("finally", asyncio.get_running_loop() is loop))
            await asyncio.sleep(0)
            events.append("after-await-in-finally")

    gen = agen()

    async def main():
        assert await gen.__anext__() == 1

    loop.run_until_complete(main())
    assert events == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert events == [("finally", True), "after-await-in-finally"]


def test_shutdown_asyncgens_many_generators(loop):
    closed = []

    async def agen(i):
        try:
            yield i
        finally:
            closed.append(i)

    gens = [agen(i) for i in range(20)]

    async def main():
        for g in gens:
            await g.__anext__()

    loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert sorted(closed) == list(range(20))


def test_shutdown_asyncgens_ignores_finished_and_unstarted(loop):
    events = []

    async def agen():
        try:
            yield 1
        finally:
            events.append("finally")

    finished = agen()
    unstarted = agen()

    async def main():
        async for _ in finished:
            pass

    loop.run_until_complete(main())
    assert events == ["finally"]
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert events == ["finally"]
    del unstarted


def test_shutdown_asyncgens_error_reported(loop, handler_calls):
    async def agen():
        try:
            yield 1
        finally:
            raise ValueError("error while closing")

    gen = agen()

    async def main():
        await gen.__anext__()

    loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert len(handler_calls) == 1
    ctx = handler_calls[0]
    assert isinstance(ctx["exception"], ValueError)
    assert ctx["asyncgen"] is gen
    assert "asynchronous generator" in ctx["message"]


def test_garbage_collected_asyncgen_is_aclosed(loop):
    events = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append(("finally", asyncio.get_running_loop() is loop))
            await asyncio.sleep(0)
            events.append("awaited-in-finally")

    async def main():
        gen = agen()
        assert await gen.__anext__() == 1
        del gen
        gc.collect()
        for _ in range(20):
            if len(events) == 2:
                break
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert events == [("finally", True), "awaited-in-finally"]


def test_break_out_of_async_for_finalizes(loop):
    events = []

    async def agen():
        try:
            for i in range(10):
                yield i
        finally:
            events.append("finally")

    async def main():
        async for i in agen():
            if i == 2:
                break
        gc.collect()
        for _ in range(20):
            if events:
                break
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert events == ["finally"]


def test_asyncgen_first_iteration_after_shutdown_warns(loop):
    async def agen():
        yield 1

    loop.run_until_complete(loop.shutdown_asyncgens())

    async def main():
        gen = agen()
        try:
            return await gen.__anext__()
        finally:
            await gen.aclose()

    with pytest.warns(ResourceWarning):
        assert loop.run_until_complete(main()) == 1
