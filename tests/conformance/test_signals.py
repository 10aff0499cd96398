"""add_signal_handler / remove_signal_handler."""

import asyncio
import os
import signal
import socket
import threading
import time

import pytest


@pytest.fixture(autouse=True)
def _restore_signals():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)


def test_signal_delivered_to_handler(loop):
    calls = []

    def handler(*args):
        calls.append((args, asyncio.get_running_loop() is loop, threading.get_ident()))
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, handler, "arg1", 2)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert calls == [(("arg1", 2), True, threading.get_ident())]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


def test_signal_handler_runs_as_loop_callback_not_synchronously(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "sig")

    async def main():
        os.kill(os.getpid(), signal.SIGUSR1)
        # The handler is dispatched by the loop, not from inside os.kill().
        immediately = list(calls)
        for _ in range(100):
            if calls:
                break
            await asyncio.sleep(0.001)
        return immediately

    assert loop.run_until_complete(main()) == []
    assert calls == ["sig"]


def test_signal_from_other_thread_wakes_loop(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, lambda: (calls.append("sig"), loop.stop()))
    long = loop.call_later(30, loop.stop)

    def worker():
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR1)

    t = threading.Thread(target=worker)
    t.start()
    start = time.monotonic()
    try:
        loop.run_forever()
    finally:
        t.join()
    long.cancel()
    assert calls == ["sig"]
    assert time.monotonic() - start < 2


def test_signal_received_before_run_is_delivered(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "early")
    os.kill(os.getpid(), signal.SIGUSR1)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert calls == ["early"]


def test_two_signals_two_handlers(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "usr1")
    loop.add_signal_handler(signal.SIGUSR2, calls.append, "usr2")

    async def main():
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        for _ in range(200):
            if len(calls) == 2:
                break
            await asyncio.sleep(0.001)

    loop.run_until_complete(main())
    assert sorted(calls) == ["usr1", "usr2"]


def test_add_signal_handler_replaces(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "first")
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "second")

    async def main():
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(200):
            if calls:
                break
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.005)

    loop.run_until_complete(main())
    assert calls == ["second"]


def test_handler_called_for_each_signal(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "sig")

    async def main():
        for i in range(3):
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(200):
                if len(calls) == i + 1:
                    break
                await asyncio.sleep(0.001)

    loop.run_until_complete(main())
    assert calls == ["sig"] * 3


def test_remove_signal_handler_return_value(loop):
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_remove_signal_handler_restores_default(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    # The stdlib's own no-op handler, which code may compare the installed one with.
    assert signal.getsignal(signal.SIGUSR1) is asyncio.unix_events._sighandler_noop
    loop.remove_signal_handler(signal.SIGUSR1)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_remove_sigint_handler_restores_default_int_handler(loop):
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    assert loop.remove_signal_handler(signal.SIGINT) is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_removed_handler_not_called(loop):
    calls = []
    # Keep a second handler installed so the loop still listens for signals.
    loop.add_signal_handler(signal.SIGUSR2, calls.append, "usr2")
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "usr1")
    loop.remove_signal_handler(signal.SIGUSR1)
    # SIGUSR1 is back to SIG_DFL (which would kill us): ignore it instead.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)

    async def main():
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        for _ in range(200):
            if calls:
                break
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.005)

    loop.run_until_complete(main())
    assert calls == ["usr2"]


def test_close_removes_signal_handlers(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.add_signal_handler(signal.SIGUSR2, lambda: None)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL


def test_add_signal_handler_rejects_coroutine_function(loop):
    async def coro_fn():
        pass

    with pytest.raises(TypeError):
        loop.add_signal_handler(signal.SIGUSR1, coro_fn)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_add_signal_handler_rejects_coroutine_object(loop):
    async def coro_fn():
        pass

    coro = coro_fn()
    try:
        with pytest.raises(TypeError):
            loop.add_signal_handler(signal.SIGUSR1, coro)
    finally:
        coro.close()


@pytest.mark.parametrize("sig", [0, -1, 1000])
def test_add_signal_handler_invalid_signal(loop, sig):
    with pytest.raises(ValueError):
        loop.add_signal_handler(sig, lambda: None)


@pytest.mark.parametrize("sig", [0, 1000])
def test_remove_signal_handler_invalid_signal(loop, sig):
    with pytest.raises(ValueError):
        loop.remove_signal_handler(sig)


def test_add_signal_handler_non_int(loop):
    with pytest.raises(TypeError):
        loop.add_signal_handler("SIGUSR1", lambda: None)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_add_signal_handler_uncatchable(loop, sig):
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(sig, lambda: None)
    # A failed add leaves nothing to remove.
    assert loop.remove_signal_handler(sig) is False


def test_add_signal_handler_after_close(loop):
    loop.close()
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)


def test_add_signal_handler_from_non_main_thread(loop):
    errors = []

    def worker():
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert len(errors) == 1
    # Raised while handling set_wakeup_fd's ValueError, which stays its context.
    assert isinstance(errors[0].__context__, ValueError)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_signal_handler_exception_goes_to_handler(loop, handler_calls):
    def bad():
        loop.call_soon(loop.stop)
        raise ValueError("in signal handler")

    loop.add_signal_handler(signal.SIGUSR1, bad)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert len(handler_calls) == 1
    assert isinstance(handler_calls[0]["exception"], ValueError)


def test_signal_handler_can_stop_run_until_complete(loop):
    async def main():
        fut = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, fut.set_result, "signalled")
        loop.call_later(0.01, os.kill, os.getpid(), signal.SIGUSR1)
        return await asyncio.wait_for(fut, 5)

    assert loop.run_until_complete(main()) == "signalled"


def _wakeup_fd():
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd


@pytest.fixture
def _no_wakeup_fd():
    previous = signal.set_wakeup_fd(-1)
    yield
    signal.set_wakeup_fd(previous)


def test_last_handler_removed_clears_wakeup_fd(loop, _no_wakeup_fd):
    # As on the stdlib loop, removing the last handler sets no wakeup fd (-1), whatever was set
    # before the first one: the fd set before may be closed, or another file's, by then.
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        signal.set_wakeup_fd(a.fileno())
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        assert _wakeup_fd() not in (-1, a.fileno())
        assert loop.remove_signal_handler(signal.SIGUSR1) is True
        assert _wakeup_fd() == -1
    finally:
        a.close()
        b.close()


def test_loops_closed_in_creation_order_leave_no_wakeup_fd(loop_factory, _no_wakeup_fd):
    first = loop_factory()
    second = loop_factory()
    try:
        first.add_signal_handler(signal.SIGUSR1, lambda: None)
        second.add_signal_handler(signal.SIGUSR2, lambda: None)
    finally:
        first.close()
        second.close()
    # Neither loop's (closed) socket is where the next signal would be written.
    assert _wakeup_fd() == -1


def test_failed_add_of_only_handler_clears_wakeup_fd(loop, _no_wakeup_fd):
    with pytest.raises(RuntimeError) as info:
        loop.add_signal_handler(signal.SIGKILL, lambda: None)
    # The stdlib raises it while handling the OSError (EINVAL), which stays its context.
    assert isinstance(info.value.__context__, OSError)
    assert _wakeup_fd() == -1
