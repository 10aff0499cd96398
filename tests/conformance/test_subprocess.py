"""Subprocesses: create_subprocess_exec/shell and their pipes, communicate, wait and return codes,
signals, Popen options (fds, cwd, env, sessions, preexec_fn), the argument checks, loop-level
subprocess_exec/subprocess_shell with a SubprocessProtocol, threads and child reaping."""

import asyncio
import errno
import hashlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import warnings

import pytest
from _sockutil import open_fds

PY = sys.executable
PIPE = asyncio.subprocess.PIPE


def py(code):
    """argv running ``code`` in a fresh interpreter."""
    return [PY, "-c", code]


def _proc_state(pid):
    """The /proc state letter of ``pid`` ('Z' for a zombie), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def _assert_reaped(pid, timeout=5.0):
    """``pid`` must disappear (be reaped by its waiter) without this process waiting for it."""
    deadline = time.monotonic() + timeout
    while _proc_state(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    state = _proc_state(pid)
    if state is not None:
        try:
            os.waitpid(pid, 0)  # don't leave it behind for the rest of the run
        except ChildProcessError:
            pass
    assert state is None, f"child {pid} left in state {state!r}"
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# ---------------------------------------------------------------------------
# create_subprocess_exec / create_subprocess_shell and communicate
# ---------------------------------------------------------------------------


def test_exec_pipes_and_communicate_with_input(loop):
    code = "import sys; sys.stdout.write(sys.stdin.read().upper()); sys.stderr.write('err'); sys.exit(4)"

    async def main():
        proc = await asyncio.create_subprocess_exec(*py(code), stdin=PIPE, stdout=PIPE, stderr=PIPE)
        assert proc.returncode is None
        assert proc.pid > 0
        out, err = await proc.communicate(b"hello")
        return out, err, proc.returncode

    assert loop.run_until_complete(main()) == (b"HELLO", b"err", 4)


def test_communicate_large_output_on_both_pipes(loop):
    # stderr is written first and is larger than a pipe buffer: both pipes must be read at once.
    code = (
        "import sys; sys.stderr.buffer.write(b'e' * (1 << 20)); sys.stderr.flush();"
        "sys.stdout.buffer.write(bytes(range(256)) * (6 << 12))"
    )

    async def main():
        proc = await asyncio.create_subprocess_exec(*py(code), stdout=PIPE, stderr=PIPE)
        out, err = await proc.communicate()
        return out, err, proc.returncode

    out, err, code = loop.run_until_complete(main())
    assert code == 0
    assert len(out) == 6 << 20 and out == bytes(range(256)) * (6 << 12)
    assert err == b"e" * (1 << 20)


def test_communicate_large_input(loop):
    payload = os.urandom(1 << 16) * 80
    code = "import sys, hashlib; d = sys.stdin.buffer.read(); print(len(d), hashlib.sha256(d).hexdigest())"

    async def main():
        proc = await asyncio.create_subprocess_exec(*py(code), stdin=PIPE, stdout=PIPE)
        out, err = await proc.communicate(payload)
        return out, err

    out, err = loop.run_until_complete(main())
    assert err is None
    assert out.split() == [str(len(payload)).encode(), hashlib.sha256(payload).hexdigest().encode()]


def test_communicate_echo_large_both_ways(loop):
    # The child echoes as it reads: communicate() must write and read at the same time.
    payload = os.urandom(1 << 16) * 64
    code = (
        "import sys\n"
        "while chunk := sys.stdin.buffer.read1(65536):\n"
        "    sys.stdout.buffer.write(chunk); sys.stdout.flush()"
    )

    async def main():
        proc = await asyncio.create_subprocess_exec(*py(code), stdin=PIPE, stdout=PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(payload), 20)
        return out == payload, len(out), proc.returncode

    assert loop.run_until_complete(main()) == (True, len(payload), 0)


def test_communicate_input_ignored_by_exiting_child(loop):
    # The child exits without reading: the broken pipe is not an error for communicate().
    async def main():
        proc = await asyncio.create_subprocess_exec(*py("import sys; sys.exit(3)"), stdin=PIPE, stdout=PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(b"x" * (8 << 20)), 20)
        return out, proc.returncode

    assert loop.run_until_complete(main()) == (b"", 3)


def test_shell(loop):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            'echo "$GREETING"; echo oops >&2; read line; echo got $line; exit 7',
            stdin=PIPE,
            stdout=PIPE,
            stderr=PIPE,
            env={**os.environ, "GREETING": "hi there"},
        )
        out, err = await proc.communicate(b"input\n")
        return out, err, proc.returncode

    assert loop.run_until_complete(main()) == (b"hi there\ngot input\n", b"oops\n", 7)


def test_stream_interaction(loop):
    code = "import sys\nfor line in sys.stdin: print(line.strip()[::-1], flush=True)\nprint('bye')"

    async def main():
        proc = await asyncio.create_subprocess_exec(*py(code), stdin=PIPE, stdout=PIPE)
        replies = []
        for word in (b"abc", b"hello"):
            proc.stdin.write(word + b"\n")
            await proc.stdin.drain()
            replies.append(await asyncio.wait_for(proc.stdout.readline(), 10))
        proc.stdin.close()
        replies.append(await proc.stdout.read())
        return replies, await proc.wait()

    assert loop.run_until_complete(main()) == ([b"cba\n", b"olleh\n", b"bye\n"], 0)


def test_stream_limit(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(*py("print('x' * 100)"), stdout=PIPE, limit=10)
        with pytest.raises(ValueError):
            await proc.stdout.readline()
        return await proc.wait()

    assert loop.run_until_complete(main()) == 0


def test_stderr_to_stdout(loop):
    code = "import sys; print('out', flush=True); print('err', file=sys.stderr, flush=True); print('out2')"

    async def main():
        proc = await asyncio.create_subprocess_exec(*py(code), stdout=PIPE, stderr=asyncio.subprocess.STDOUT)
        assert proc.stderr is None
        return await proc.communicate()

    assert loop.run_until_complete(main()) == (b"out\nerr\nout2\n", None)


def test_devnull(loop):
    code = "import sys; print(repr(sys.stdin.read())); print('noise', file=sys.stderr); sys.exit(5)"
    devnull = asyncio.subprocess.DEVNULL

    async def main():
        proc = await asyncio.create_subprocess_exec(*py(code), stdin=devnull, stdout=devnull, stderr=devnull)
        assert (proc.stdin, proc.stdout, proc.stderr) == (None, None, None)
        return await proc.communicate(), proc.returncode

    assert loop.run_until_complete(main()) == ((None, None), 5)


def test_stdout_to_file_descriptor(loop, tmp_path):
    path = tmp_path / "out.txt"

    async def main():
        with open(path, "wb") as f:
            proc = await asyncio.create_subprocess_exec(*py("print('to the file')"), stdout=f.fileno())
            assert proc.stdout is None
            return await proc.wait()

    assert loop.run_until_complete(main()) == 0
    assert path.read_bytes() == b"to the file\n"


# ---------------------------------------------------------------------------
# wait, return codes and signals
# ---------------------------------------------------------------------------


def test_wait_concurrently_and_after_exit(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(*py("import time; time.sleep(0.1); raise SystemExit(9)"))
        first = await asyncio.gather(proc.wait(), proc.wait(), proc.wait())
        return first, await proc.wait(), proc.returncode

    assert loop.run_until_complete(main()) == ([9, 9, 9], 9, 9)


READY = "import sys, time; print('ready', flush=True); time.sleep(30)"


@pytest.mark.parametrize(
    ("how", "signum"),
    [
        ("send_signal", signal.SIGUSR1),
        ("send_signal", signal.SIGHUP),
        ("terminate", signal.SIGTERM),
        ("kill", signal.SIGKILL),
    ],
)
def test_signal_gives_negative_returncode(loop, how, signum):
    async def main():
        proc = await asyncio.create_subprocess_exec(*py(READY), stdout=PIPE)
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"ready\n"
        if how == "send_signal":
            proc.send_signal(signum)
        else:
            getattr(proc, how)()
        return await asyncio.wait_for(proc.wait(), 10)

    assert loop.run_until_complete(main()) == -signum


def test_child_killed_by_own_signal(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import os, signal; os.kill(os.getpid(), signal.SIGABRT)")
        )
        return await proc.wait()

    assert loop.run_until_complete(main()) == -signal.SIGABRT


def test_shell_exit_status(loop):
    async def main():
        proc = await asyncio.create_subprocess_shell("kill -TERM $$")
        killed = await proc.wait()
        proc = await asyncio.create_subprocess_shell("exit 300")
        return killed, await proc.wait()

    assert loop.run_until_complete(main()) == (-signal.SIGTERM, 300 % 256)


def test_signal_after_finish_raises_process_lookup_error(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(*py("pass"), stdout=PIPE)
        await proc.communicate()
        # On 3.11 (a thread waits for the child) the transport lets go of the process a few
        # callbacks after communicate() returns, on both loops: until then a signal is silently
        # ignored (measured: 3 in 300 runs on the stdlib loop).
        for _ in range(3):
            await asyncio.sleep(0)
        for method in (proc.kill, proc.terminate, lambda: proc.send_signal(signal.SIGTERM)):
            with pytest.raises(ProcessLookupError):
                method()
        return proc.returncode

    assert loop.run_until_complete(main()) == 0


# ---------------------------------------------------------------------------
# Popen options
# ---------------------------------------------------------------------------


def test_pass_fds_and_close_fds(loop):
    code = (
        "import os, sys\n"
        "fd = int(sys.argv[1])\n"
        "try:\n    os.write(fd, b'through the pipe')\nexcept OSError as e:\n    print(e.errno)\n"
    )

    async def main():
        r, w = os.pipe()
        try:
            inherited = await asyncio.create_subprocess_exec(*py(code), str(w), pass_fds=(w,), stdout=PIPE)
            out_inherited, _ = await inherited.communicate()
            closed = await asyncio.create_subprocess_exec(*py(code), str(w), stdout=PIPE)
            out_closed, _ = await closed.communicate()
            return out_inherited, os.read(r, 100), out_closed
        finally:
            os.close(r)
            os.close(w)

    assert loop.run_until_complete(main()) == (b"", b"through the pipe", b"%d\n" % errno.EBADF)


def test_cwd_env(loop, tmp_path):
    code = "import os; print(os.getcwd()); print(os.environ.get('ONLY_VAR')); print('HOME' in os.environ)"

    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py(code), cwd=tmp_path, env={"ONLY_VAR": "value"}, stdout=PIPE
        )
        out, _ = await proc.communicate()
        return out.decode().split("\n")

    assert loop.run_until_complete(main()) == [os.path.realpath(tmp_path), "value", "False", ""]


def test_start_new_session(loop):
    code = "import os; print(os.getsid(0) == os.getpid(), os.getpgrp() == os.getpid())"

    async def main():
        results = []
        for new_session in (True, False):
            proc = await asyncio.create_subprocess_exec(*py(code), start_new_session=new_session, stdout=PIPE)
            results.append((await proc.communicate())[0])
        return results

    assert loop.run_until_complete(main()) == [b"True True\n", b"False False\n"]


def test_preexec_fn(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import os; print(oct(os.umask(0)))"), preexec_fn=lambda: os.umask(0o027), stdout=PIPE
        )
        return (await proc.communicate())[0]

    saved = os.umask(0o022)
    try:
        assert loop.run_until_complete(main()) == b"0o27\n"
        assert os.umask(0o022) == 0o022  # the parent's umask is untouched
    finally:
        os.umask(saved)


# ---------------------------------------------------------------------------
# Argument checks and spawn errors
# ---------------------------------------------------------------------------

BAD_KWARGS = [
    {"text": True},
    {"universal_newlines": True},
    {"bufsize": 1},
    {"bufsize": -1},
    {"encoding": "utf-8"},
    {"errors": "strict"},
]


@pytest.mark.parametrize("kwargs", [*BAD_KWARGS, {"shell": True}], ids=repr)
def test_exec_rejects(loop, kwargs):
    async def main():
        with pytest.raises(ValueError):
            await asyncio.create_subprocess_exec(PY, "-c", "pass", **kwargs)
        with pytest.raises(ValueError):
            await loop.subprocess_exec(asyncio.SubprocessProtocol, PY, "-c", "pass", **kwargs)

    loop.run_until_complete(main())


@pytest.mark.parametrize("kwargs", [*BAD_KWARGS, {"shell": False}], ids=repr)
def test_shell_rejects(loop, kwargs):
    async def main():
        with pytest.raises(ValueError):
            await asyncio.create_subprocess_shell("true", **kwargs)
        with pytest.raises(ValueError):
            await loop.subprocess_shell(asyncio.SubprocessProtocol, "true", **kwargs)

    loop.run_until_complete(main())


def test_shell_command_must_be_a_string(loop):
    async def main():
        with pytest.raises(ValueError):
            await asyncio.create_subprocess_shell(["echo", "hi"])
        # bytes are accepted
        proc = await asyncio.create_subprocess_shell(b"exit 2")
        return await proc.wait()

    assert loop.run_until_complete(main()) == 2


def test_missing_program(loop, tmp_path):
    not_executable = tmp_path / "script"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(stat.S_IRUSR | stat.S_IWUSR)

    async def main():
        before = open_fds()
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec(str(tmp_path / "no-such-program"), stdin=PIPE, stdout=PIPE)
        with pytest.raises(PermissionError):
            await asyncio.create_subprocess_exec(str(not_executable), stdout=PIPE, stderr=PIPE)
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec(*py("pass"), cwd=str(tmp_path / "missing-dir"))
        return open_fds() - before

    # Nothing leaks when the spawn fails.
    assert loop.run_until_complete(main()) == set()


# ---------------------------------------------------------------------------
# loop.subprocess_exec / subprocess_shell with a protocol
# ---------------------------------------------------------------------------


class Recorder(asyncio.SubprocessProtocol):
    def __init__(self):
        self.events = []
        self.output = {1: bytearray(), 2: bytearray()}
        self.transport = None
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def pipe_data_received(self, fd, data):
        if not self.output[fd]:
            self.events.append(("data", fd))
        self.output[fd] += data

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe_lost", fd, exc))

    def process_exited(self):
        self.events.append(("exited", self.transport.get_returncode()))

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.done.set_result(None)


def test_subprocess_exec_protocol(loop):
    code = (
        "import sys; data = sys.stdin.read(); sys.stdout.write(data * 2); sys.stderr.write('e'); sys.exit(6)"
    )

    async def main():
        transport, proto = await loop.subprocess_exec(Recorder, *py(code))
        assert proto.events == ["made"]
        assert transport.get_returncode() is None
        assert transport.get_pid() > 0
        stdin = transport.get_pipe_transport(0)
        stdin.write(b"ab")
        stdin.close()
        await asyncio.wait_for(proto.done, 10)
        result = (proto.events, bytes(proto.output[1]), bytes(proto.output[2]), transport.get_returncode())
        transport.close()
        return result

    events, out, err, code = loop.run_until_complete(main())
    assert (out, err, code) == (b"abab", b"e", 6)
    assert events[0] == "made" and events[-1] == ("lost", None)
    assert ("exited", 6) in events
    for fd in (1, 2):
        assert events.index(("data", fd)) < events.index(("pipe_lost", fd, None))
    assert {e for e in events if e[0] == "pipe_lost"} == {("pipe_lost", fd, None) for fd in (0, 1, 2)}


def test_pipes_closed_before_exit(loop):
    # The child closes its output and only then exits.
    code = "import os, time; os.write(1, b'x'); os.close(1); os.close(2); time.sleep(0.3)"

    async def main():
        transport, proto = await loop.subprocess_exec(Recorder, *py(code), stdin=None)
        await asyncio.wait_for(proto.done, 10)
        transport.close()
        return proto.events

    events = loop.run_until_complete(main())
    assert events[-2:] == [("exited", 0), ("lost", None)]
    assert set(events[1:-2]) == {("data", 1), ("pipe_lost", 1, None), ("pipe_lost", 2, None)}


def test_exit_before_pipes_closed(loop):
    # A grandchild keeps stdout open after the child exits: process_exited comes first and
    # connection_lost waits for the pipe.
    code = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(0.4)'])"

    async def main():
        transport, proto = await loop.subprocess_exec(Recorder, *py(code), stdin=None, stderr=None)
        await asyncio.wait_for(proto.done, 10)
        transport.close()
        return proto.events

    events = loop.run_until_complete(main())
    assert events == ["made", ("exited", 0), ("pipe_lost", 1, None), ("lost", None)]


def test_wait_returns_after_pipes_closed(loop):
    code = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(0.3)'])"

    async def main():
        proc = await asyncio.create_subprocess_exec(*py(code), stdout=PIPE)
        code_ = await asyncio.wait_for(proc.wait(), 10)
        # By the time wait() returns, the grandchild has closed the pipe.
        return code_, proc.stdout.at_eof()

    assert loop.run_until_complete(main()) == (0, True)


def test_subprocess_shell_protocol(loop):
    async def main():
        transport, proto = await loop.subprocess_shell(
            Recorder, "printf out; printf err >&2; exit 12", stdin=None
        )
        assert transport.get_pipe_transport(0) is None
        await asyncio.wait_for(proto.done, 10)
        transport.close()
        return bytes(proto.output[1]), bytes(proto.output[2]), transport.get_returncode()

    assert loop.run_until_complete(main()) == (b"out", b"err", 12)


def test_transport_kill(loop):
    async def main():
        transport, proto = await loop.subprocess_exec(Recorder, *py(READY), stdin=None, stderr=None)
        while not proto.output[1]:
            await asyncio.sleep(0.01)
        transport.kill()
        await asyncio.wait_for(proto.done, 10)
        transport.close()
        return transport.get_returncode()

    assert loop.run_until_complete(main()) == -signal.SIGKILL


# ---------------------------------------------------------------------------
# Threads and reaping
# ---------------------------------------------------------------------------


def test_loop_in_non_main_thread(loop):
    result = {}

    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("print('from thread'); raise SystemExit(2)"), stdout=PIPE
        )
        out, _ = await proc.communicate()
        return out, proc.returncode, threading.current_thread() is not threading.main_thread()

    def worker():
        try:
            result["value"] = loop.run_until_complete(main())
        except BaseException as exc:
            result["value"] = exc

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(20)
    assert not thread.is_alive()
    assert result["value"] == (b"from thread\n", 2, True)


def test_sigchld_handler_coexists(loop):
    # A SIGCHLD handler of the application's own neither breaks the loop's child tracking nor is
    # taken away by it (signals coalesce, so it runs at least once).
    calls = []

    async def main():
        loop.add_signal_handler(signal.SIGCHLD, calls.append, "chld")
        try:
            procs = [await asyncio.create_subprocess_exec("sh", "-c", f"exit {n}") for n in range(5)]
            codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 10)
            for _ in range(100):
                if calls:
                    break
                await asyncio.sleep(0.01)
            return codes
        finally:
            loop.remove_signal_handler(signal.SIGCHLD)

    assert loop.run_until_complete(main()) == [0, 1, 2, 3, 4]
    assert calls and set(calls) == {"chld"}


def test_no_zombie_after_loop_close(loop):
    async def main():
        # Nobody waits for this child; it exits on its own while the loop runs.
        proc = await asyncio.create_subprocess_exec(*py("pass"))
        await asyncio.sleep(0.5)
        return proc.pid

    pid = loop.run_until_complete(main())
    loop.close()
    _assert_reaped(pid)


def test_no_zombie_after_asyncio_run_style_shutdown(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(*py("print('x')"), stdout=PIPE)
        await proc.communicate()
        return proc.pid

    pid = loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    _assert_reaped(pid)


def test_not_racing_other_child_waiters(loop):
    # subprocess.run() in executor threads reaps its own children; the loop must neither
    # steal their exit status nor lose its own.
    def blocking(n):
        return [subprocess.run(["sh", "-c", f"exit {n}"]).returncode for _ in range(5)]

    async def spawn(n):
        proc = await asyncio.create_subprocess_exec("sh", "-c", f"exit {n}")
        return await proc.wait()

    async def main():
        threaded = [loop.run_in_executor(None, blocking, n) for n in (3, 4)]
        own = [spawn(n) for n in range(10, 30)]
        return await asyncio.wait_for(asyncio.gather(asyncio.gather(*threaded), asyncio.gather(*own)), 20)

    threaded, own = loop.run_until_complete(main())
    assert threaded == [[3] * 5, [4] * 5]
    assert own == list(range(10, 30))


@pytest.mark.parametrize("kind", ["ThreadedChildWatcher", "PidfdChildWatcher"])
def test_the_policys_child_watcher_reaps(loop, kind):
    # The deprecated child-watcher API: a watcher set on the policy is the one told about each
    # child (the loop's shortcut for the default pidfd watcher must keep that true).
    seen = []
    policy = asyncio.get_event_loop_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)

        class Recording(getattr(asyncio, kind)):
            def add_child_handler(self, pid, callback, *args):
                seen.append(pid)
                super().add_child_handler(pid, callback, *args)

        watcher = Recording()
        watcher.attach_loop(loop)
        policy.set_child_watcher(watcher)
    try:

        async def main():
            proc = await asyncio.create_subprocess_exec("/bin/true")
            return proc.pid, await proc.wait()

        pid, code = loop.run_until_complete(main())
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            policy.set_child_watcher(None)  # closes it; the default is made again when needed
    assert code == 0
    assert seen == [pid]
