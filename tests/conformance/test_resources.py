"""What a loop holds on to: objects (reference cycles through handles), fds, and a forked child's
view of the parent's poller. Every test runs on both loops; the stdlib loop is the reference."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import subprocess
import sys
import textwrap
import warnings
import weakref

import pytest
from _looputil import run_briefly


class Holder:
    def method(self):
        pass


def collected(ref):
    gc.collect()
    return ref() is None


def _untracked_loop(kind):
    # Not through the loop_factory fixture, which keeps the loops it makes for teardown.
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    import ferroloop

    return ferroloop.new_event_loop()


def test_unclosed_dropped_loop_with_sleeping_task_is_collected(loop_kind):
    lp = _untracked_loop(loop_kind)

    async def main():
        asyncio.get_running_loop().create_task(asyncio.sleep(100))
        await asyncio.sleep(0)

    lp.run_until_complete(main())
    ref = weakref.ref(lp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        del lp
        assert collected(ref)
        gc.collect()  # the pending task's "destroyed but pending" report happens here


def test_closed_loop_that_ran_tasks_is_freed_with_its_last_reference(loop_kind):
    # Freed by reference counting, not left for a collection of cycles: code that checks
    # for reference cycles (tornado's tests do) sees none from the loop.
    lp = _untracked_loop(loop_kind)

    async def main():
        await asyncio.gather(*(asyncio.sleep(0) for _ in range(3)))
        return 1

    assert lp.run_until_complete(main()) == 1
    lp.create_future()
    lp.create_task(asyncio.sleep(0)).cancel()
    lp.run_until_complete(asyncio.sleep(0))
    lp.close()
    lp.create_future()
    ref = weakref.ref(lp)
    gc.disable()
    try:
        del lp
        assert ref() is None
    finally:
        gc.enable()


def test_cycle_through_fired_handle_held_by_its_object_is_collected(loop):
    obj = Holder()
    obj.handle = loop.call_soon(obj.method)
    ref = weakref.ref(obj)
    del obj
    run_briefly(loop)
    run_briefly(loop)
    assert collected(ref)


def test_cycle_through_fired_timer_arguments_is_collected(loop):
    obj = Holder()
    obj.handle = loop.call_later(0, Holder.method, obj)
    ref = weakref.ref(obj)
    del obj
    loop.run_until_complete(asyncio.sleep(0.01))
    run_briefly(loop)
    assert collected(ref)


def test_cycle_through_cancelled_timer_context_is_collected(loop):
    import contextvars

    var = contextvars.ContextVar("request")
    obj = Holder()
    ctx = contextvars.copy_context()
    ctx.run(var.set, obj)
    obj.handle = loop.call_later(10, obj.method, context=ctx)
    obj.handle.cancel()
    ref = weakref.ref(obj)
    del obj, ctx
    run_briefly(loop)
    loop.close()
    assert collected(ref)


def test_pending_timer_keeps_its_callback_alive_until_close(loop):
    obj = Holder()
    loop.call_later(10, obj.method)
    ref = weakref.ref(obj)
    del obj
    assert not collected(ref)
    loop.close()
    assert collected(ref)


def test_collection_inside_a_running_loop_keeps_queued_cycles_alive(loop):
    # Objects in reference cycles whose only outside reference is a queued callback or timer:
    # a collection while the loop runs must leave them whole, and a loop dropped once it has
    # stopped must still give them up.
    seen = []

    class Node:
        def __init__(self, name):
            self.name = name
            self.me = self

        def fire(self):
            seen.append(self.me.name)

    def collect_then_check():
        gc.collect()
        seen.append("collected")

    loop.call_soon(collect_then_check)
    loop.call_soon(Node("soon").fire)
    loop.call_later(0.001, Node("later").fire)
    waiter = loop.create_future()
    loop.call_later(0.01, waiter.set_result, None)
    loop.run_until_complete(waiter)
    assert seen == ["collected", "soon", "later"]


def test_stopped_unclosed_loop_gives_up_queued_cycles(loop_kind):
    lp = _untracked_loop(loop_kind)
    obj = Holder()
    obj.me = obj
    lp.call_later(100, obj.method)
    lp.run_until_complete(asyncio.sleep(0))
    ref, loop_ref = weakref.ref(obj), weakref.ref(lp)
    del obj
    assert not collected(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        del lp
        assert collected(loop_ref)
        assert collected(ref)


def _open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_close_releases_the_loops_fds(loop_factory):
    before = _open_fds()
    loops = [loop_factory() for _ in range(5)]
    for lp in loops:
        lp.close()
    assert _open_fds() - before == set()


def test_fd_number_reused_after_close_does_not_inherit_the_old_reader(loop):
    a, b = socket.socketpair()
    calls = []
    loop.add_reader(a, calls.append, "stale")
    a.close()  # without remove_reader
    c, d = socket.socketpair()
    try:
        try:
            loop.add_writer(c, lambda: None)
        except FileNotFoundError:
            # The stdlib loop reports the stale registration once; the retry then works.
            loop.add_writer(c, lambda: None)
        d.send(b"data for c")
        for _ in range(5):
            run_briefly(loop)
        assert calls == []
        loop.remove_writer(c)
    finally:
        for s in (b, c, d):
            s.close()


_FORK_CLOSE = """
import asyncio, os, socket, sys
kind = sys.argv[1]
if kind == "asyncio":
    loop = asyncio.SelectorEventLoop()
else:
    import ferroloop
    loop = ferroloop.new_event_loop()
r, w = socket.socketpair()
got = []
loop.add_reader(r, lambda: got.append(r.recv(10)))
pid = os.fork()
if pid == 0:
    loop.close()
    os._exit(0)
os.waitpid(pid, 0)
w.send(b"x")
loop.run_until_complete(asyncio.sleep(0.05))
print(got)
loop.close()
"""


def test_child_closing_an_inherited_loop_leaves_the_parents_readers_working(loop_kind):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE")}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_FORK_CLOSE), loop_kind],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[b'x']"


def test_cancel_releases_the_callback_and_arguments(loop):
    def callback(arg):
        pass

    arg = object()
    before = (sys.getrefcount(callback), sys.getrefcount(arg))
    for handle in (
        loop.call_soon(callback, arg),
        loop.call_later(10, callback, arg),
        loop.call_at(loop.time() + 10, callback, arg),
    ):
        handle.cancel()
    del handle
    run_briefly(loop)
    assert (sys.getrefcount(callback), sys.getrefcount(arg)) == before


def test_loop_left_open_at_interpreter_exit_does_not_crash(script):
    # The loop's finalizer runs while the interpreter shuts down: a warning at most, never a crash.
    result = script.run(
        """
        loop = new_loop()
        loop.call_soon(print, "scheduled")
        print("done")
        """,
        via_main=False,
        python_args=("-W", "always::ResourceWarning"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert "Traceback" not in result.stderr


async def _open_idle_transport(kind):
    """A datagram or pipe transport, with the fd it owns and the pipe's other end (or None)."""
    loop = asyncio.get_running_loop()
    if kind == "udp":
        tr, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        return tr, tr.get_extra_info("socket").fileno(), None
    r, w = os.pipe()
    if kind == "read_pipe":
        tr, _ = await loop.connect_read_pipe(asyncio.Protocol, open(r, "rb", buffering=0))
        return tr, r, w
    tr, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, open(w, "wb", buffering=0))
    return tr, w, r


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize(
    ("kind", "when"),
    [
        ("udp", "paused"),
        ("read_pipe", "paused"),
        ("udp", "loop_closed"),
        ("read_pipe", "loop_closed"),
        ("write_pipe", "loop_closed"),
    ],
)
def test_dropped_idle_transport_is_finalized_with_its_last_reference(loop, kind, when):
    # With nothing registered for it (reading paused, or its loop closed), a datagram or pipe
    # transport is held only by its user: dropping it closes its fd at once, with the
    # "unclosed transport" warning, without waiting for the garbage collector.
    tr, fd, other = loop.run_until_complete(_open_idle_transport(kind))
    try:
        if when == "paused":
            tr.pause_reading()
            loop.run_until_complete(asyncio.sleep(0))
        else:
            loop.close()
        gc.disable()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                del tr
                # Closed. (Not looked up in /proc/self/fd: listing it takes the lowest free fd,
                # maybe the one just closed.)
                with pytest.raises(OSError):
                    os.fstat(fd)
        finally:
            gc.enable()
        messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert len(messages) == 1, messages
        assert messages[0].startswith("unclosed transport <"), messages
    finally:
        if other is not None:
            os.close(other)
