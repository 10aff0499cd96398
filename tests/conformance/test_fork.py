"""os.fork(): a child must not hang, and the parent's loop must keep working."""

# The child reports through its exit status: 0 = worked, 3 = RuntimeError
# (refusing to use an inherited loop is allowed), anything else = broken.
_SCRIPT = """
import os, sys, threading, time, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads alive

def wait_child(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return "hung"

def child_reuse(loop):
    try:
        loop.run_until_complete(asyncio.sleep(0.01))
        code = 0
    except RuntimeError:
        code = 3
    os._exit(code)

def child_new_loop():
    lp = new_loop()
    async def work():
        await asyncio.sleep(0.01)
        fut = asyncio.get_running_loop().run_in_executor(None, lambda: 5)
        return await fut
    ok = lp.run_until_complete(work()) == 5
    os._exit(0 if ok else 1)

def child_run():
    async def work():
        await asyncio.sleep(0.01)
        return 5
    os._exit(0 if run(work()) == 5 else 1)

def parent_check(loop):
    async def work():
        await asyncio.sleep(0.01)
        got = []
        def thread():
            loop.call_soon_threadsafe(got.append, "threadsafe")
        t = threading.Thread(target=thread)
        t.start()
        while not got:
            await asyncio.sleep(0.001)
        t.join()
        return await loop.run_in_executor(None, lambda: "executor")
    return loop.run_until_complete(asyncio.wait_for(work(), 10))

mode = sys.argv[1]
loop = new_loop()
loop.run_until_complete(loop.run_in_executor(None, lambda: None))  # threads exist

if mode in ("reuse", "new-loop"):
    pid = os.fork()
    if pid == 0:
        try:
            child_reuse(loop) if mode == "reuse" else child_new_loop()
        finally:
            os._exit(2)
    print("CHILD", wait_child(pid), flush=True)
elif mode == "inside-running":
    async def fork_inside():
        pid = os.fork()
        if pid == 0:
            try:
                child_run()
            finally:
                os._exit(2)
        return pid
    pid = loop.run_until_complete(fork_inside())
    print("CHILD", wait_child(pid), flush=True)
elif mode == "sock-reuse":
    # A socket that waited in sock_recv before the fork waits again in the child.
    import socket
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    async def wait_once(data):
        pending = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0)
        a.send(data)
        return await asyncio.wait_for(pending, 5)
    assert loop.run_until_complete(wait_once(b"parent")) == b"parent"
    pid = os.fork()
    if pid == 0:
        try:
            try:
                code = 0 if loop.run_until_complete(wait_once(b"child")) == b"child" else 1
            except RuntimeError:
                code = 3
            os._exit(code)
        finally:
            os._exit(2)
    print("CHILD", wait_child(pid), flush=True)
    print("PARENT-SOCK", loop.run_until_complete(wait_once(b"again")).decode(), flush=True)

print("PARENT", parent_check(loop), flush=True)
loop.close()
"""


def _run(script, mode):
    result = script.run(_SCRIPT, [mode], via_main=False, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    return lines.get("CHILD"), lines.get("PARENT"), result.stderr


def test_fork_child_reuses_loop(script):
    child, parent, err = _run(script, "reuse")
    assert child in ("0", "3"), (child, err)
    assert parent == "executor", err


def test_fork_child_new_loop(script):
    child, parent, err = _run(script, "new-loop")
    assert child == "0", (child, err)
    assert parent == "executor", err


def test_fork_inside_running_loop(script):
    child, parent, err = _run(script, "inside-running")
    assert child == "0", (child, err)
    assert parent == "executor", err


def test_fork_child_waits_on_a_socket_the_parent_waited_on(script, loop_kind):
    result = script.run(_SCRIPT, ["sock-reuse"], via_main=False, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    # ferroloop's child rebuilds its poller and goes on; the stdlib's may refuse (3).
    assert lines.get("CHILD") in (("0",) if loop_kind == "ferroloop" else ("0", "3")), result.stderr
    assert lines.get("PARENT-SOCK") == "again", result.stderr
    assert lines.get("PARENT") == "executor", result.stderr
