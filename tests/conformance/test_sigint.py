"""Ctrl-C: SIGINT interrupts a loop blocked in its poll, promptly."""

import os
import selectors
import signal
import subprocess
import sys
import time

import pytest

# SIGINT may be ignored in the environment running the suite (background jobs
# inherit SIG_IGN); the child restores Python's default behaviour first.
_SCRIPT = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)

async def main():
    try:
        print("READY", flush=True)
        await asyncio.sleep(30)
    finally:
        print("FINALLY", flush=True)

mode = sys.argv[1]
if mode == "stdlib-run":
    asyncio.run(main())
elif mode == "entry-run":
    run(main())
elif mode == "factory-run":
    asyncio.run(main(), loop_factory=new_loop)
elif mode == "runner":
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(main())
elif mode == "run-until-complete":
    loop = new_loop()
    try:
        loop.run_until_complete(main())
    except KeyboardInterrupt:
        print("CAUGHT", flush=True)
        print("REUSABLE", loop.run_until_complete(asyncio.sleep(0, "yes")), flush=True)
        loop.close()
        sys.exit(0)
elif mode == "run-forever":
    loop = new_loop()
    loop.call_soon(lambda: print("READY", flush=True))
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        print("CAUGHT", flush=True)
        loop.call_soon(loop.stop)
        loop.run_forever()
        print("REUSABLE yes", flush=True)
        loop.close()
        sys.exit(0)
"""


def _interrupt(script, mode, *, via_main=None):
    proc = script.popen(_SCRIPT, [mode], via_main=via_main)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=15)
        sel.close()
        assert ready, "child never became ready"
        first = proc.stdout.readline()
        assert first.strip() == "READY", first + proc.stderr.read()
        # Give the loop a moment to block in its poll.
        time.sleep(0.1)
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"child did not react to SIGINT within 5 s\nstdout={out!r}\nstderr={err!r}")
        return proc.returncode, first + out, err, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _assert_keyboard_interrupt(rc, out, err, elapsed):
    assert rc != 0, (out, err)
    assert "KeyboardInterrupt" in err, err
    # The main task was cancelled (its finally block ran) before the
    # KeyboardInterrupt was re-raised.
    assert "FINALLY" in out, (out, err)
    assert elapsed < 5


def test_sigint_stdlib_run(script):
    # asyncio.run() under the policy the launcher installs (python -m ferroloop).
    _assert_keyboard_interrupt(*_interrupt(script, "stdlib-run"))


def test_sigint_run_entry(script):
    _assert_keyboard_interrupt(*_interrupt(script, "entry-run", via_main=False))


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is new in 3.12")
def test_sigint_run_with_loop_factory(script):
    _assert_keyboard_interrupt(*_interrupt(script, "factory-run", via_main=False))


def test_sigint_runner(script):
    _assert_keyboard_interrupt(*_interrupt(script, "runner", via_main=False))


def test_sigint_run_until_complete_loop_reusable(script):
    rc, out, err, elapsed = _interrupt(script, "run-until-complete", via_main=False)
    assert rc == 0, (out, err)
    assert "CAUGHT" in out
    assert "REUSABLE yes" in out
    assert elapsed < 5


def test_sigint_run_forever_loop_reusable(script):
    rc, out, err, elapsed = _interrupt(script, "run-forever", via_main=False)
    assert rc == 0, (out, err)
    assert "CAUGHT" in out
    assert "REUSABLE yes" in out
    assert elapsed < 5
