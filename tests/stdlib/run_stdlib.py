"""Run CPython's own ``test.test_asyncio`` modules against a chosen event loop.

Usage::

    python tests/stdlib/run_stdlib.py [--loop ferroloop|asyncio] [--timeout-per-test 60] [-j N] [-v]
                                      [module ...]

A module is a name such as ``test_tasks`` (or a dotted name inside it, ``test_tasks.CTaskTests``).
Without modules, DEFAULT_MODULES that exist on the running Python are used. Each module runs in its
own subprocess (a "worker") using the interpreter that runs this script.

How the chosen loop reaches the tests (in the worker):

* (a) ``asyncio.new_event_loop()``: a policy whose ``new_event_loop`` returns the chosen loop is
  installed, and re-installed whenever a test module resets the policy (``tearDownModule`` calls
  ``set_event_loop_policy(None)``) or a test leaks a plain stdlib policy. On 3.13+
  ``IsolatedAsyncioTestCase.loop_factory`` is set too; on 3.11/3.12 its Runner goes through the policy.
* (b) ``create_event_loop()`` (test_events, test_sock_lowlevel, test_sendfile) and the functional
  mixin's ``new_loop()`` (test_server, test_buffered_proto, test_sslproto) return the chosen loop.
  Of the per-selector duplicate classes only the epoll one runs (Poll/Select/Kqueue are dropped).
* (c) tests on ``TestLoop`` or mocked ``BaseEventLoop`` run unchanged; they never touch the loop.

Every loop made through these paths is attributed to the running test; "ours" counts the tests
that created at least one. ``--loop ferroloop`` requires ``ferroloop.new_event_loop``,
``ferroloop.Loop`` and ``ferroloop.EventLoopPolicy``; if they are missing the run fails.

Per-test watchdog: the worker arms ``faulthandler.dump_traceback_later(exit=True)`` at every test
start and stop (a C thread, so it fires even if the loop holds the GIL). A test that exceeds the
timeout, or crashes the worker, is recorded as "timeout"/"crash" and the module is resumed in a
new worker after that test. A hang or crash between tests is charged to the next test.

Known failures (``known_failures.py``, applied to ``--loop ferroloop`` only): a listed test that
fails is "known"; one that passes is an "unexpected pass". The last output line is exactly
``N passed, M failed``: N counts passed tests (skips and expected failures not included), M counts
failures, errors, timeouts, crashes and unexpected passes that are not known failures. Exit code:
0 if M == 0; 1 otherwise; 2 if a module could not be loaded, no test ran, or the loop is missing.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import faulthandler
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

PKG = "test.test_asyncio"
DEFAULT_MODULES = (
    "test_tasks test_taskgroups test_timeouts test_waitfor test_locks test_queues test_futures2 "
    "test_threads test_context test_runners test_base_events test_unix_events test_events "
    "test_eager_task_factory test_pep492 test_futures "
    "test_streams test_sock_lowlevel test_sendfile test_server test_buffered_proto "
    "test_ssl test_sslproto test_subprocess test_staggered"
).split()
DUPLICATE_VARIANT = re.compile(r"(Kqueue|Poll|Select)EventLoopTests")
RANK = {"skip": 0, "pass": 1, "xfail": 2, "upass": 3, "fail": 4, "error": 5}
BAD = ("fail", "error", "upass", "timeout", "crash")
COUNTS = ("run", "pass", "fail", "error", "skip", "xfail", "ours", "known", "upass", "timeout", "crash")
PY = f"{sys.version_info.major}.{sys.version_info.minor}"


# --------------------------------------------------------------------------------------------------
# Worker: runs one module (from a given test index on) and streams JSON records to a file.
# --------------------------------------------------------------------------------------------------


class LoopTracker:
    """Builds the chosen loop and charges each one to the test that is running."""

    def __init__(self, factory, loop_cls):
        self.factory, self.loop_cls = factory, loop_cls
        self.current: str | None = None
        self.made = 0
        self.policy_cls: type | None = None

    def note(self, loop):
        if not isinstance(loop, self.loop_cls):
            raise TypeError(f"expected a {self.loop_cls.__name__}, got {type(loop).__name__}")
        if self.current is not None:
            self.made += 1
        return loop

    def new_loop(self):
        return self.note(self.factory())


def install_loop(kind: str) -> LoopTracker:
    import asyncio
    import asyncio.events

    if kind == "ferroloop":
        import ferroloop

        tracker = LoopTracker(ferroloop.new_event_loop, ferroloop.Loop)
        base_policy = ferroloop.EventLoopPolicy
    else:
        tracker = LoopTracker(asyncio.SelectorEventLoop, asyncio.SelectorEventLoop)
        base_policy = asyncio.DefaultEventLoopPolicy

    class TrackingPolicy(base_policy):
        def new_event_loop(self):
            return tracker.note(super().new_event_loop())

    def init_policy():
        # asyncio.get_event_loop_policy() calls this whenever the policy was reset to None.
        with asyncio.events._lock:
            if asyncio.events._event_loop_policy is None:
                asyncio.events._event_loop_policy = TrackingPolicy()

    asyncio.events._init_event_loop_policy = init_policy
    asyncio.set_event_loop_policy(TrackingPolicy())
    tracker.policy_cls = TrackingPolicy
    if hasattr(unittest.IsolatedAsyncioTestCase, "loop_factory"):
        unittest.IsolatedAsyncioTestCase.loop_factory = staticmethod(tracker.new_loop)
    return tracker


def reinstall_leaked_policy(tracker: LoopTracker) -> None:
    """Some tests set a plain stdlib policy and leave it behind; put ours back before the next."""
    import asyncio

    if type(asyncio.events._event_loop_policy) is asyncio.DefaultEventLoopPolicy:
        asyncio.set_event_loop_policy(tracker.policy_cls())


def iter_tests(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from iter_tests(item)
        else:
            yield item


def select_and_patch(tests: list, tracker: LoopTracker) -> list:
    def has_epoll_variant(cls):
        return hasattr(sys.modules.get(cls.__module__), "EPollEventLoopTests")

    kept = [
        t for t in tests if not (DUPLICATE_VARIANT.fullmatch(type(t).__name__) and has_epoll_variant(type(t)))
    ]

    def make(_self):
        return tracker.new_loop()

    from test.test_asyncio.functional import FunctionalTestCaseMixin

    for cls in {type(t) for t in kept}:
        if "Proactor" in cls.__name__:  # Windows-only classes, skipped anyway
            continue
        if callable(getattr(cls, "create_event_loop", None)):
            cls.create_event_loop = make
        if issubclass(cls, FunctionalTestCaseMixin):  # other new_loop()s build mocks (test_runners)
            cls.new_loop = make
    return kept


class RecordingResult(unittest.TestResult):
    """Folds each test's outcomes into one record, written (and flushed) when the test stops."""

    def __init__(self, out, tracker: LoopTracker, arm_watchdog):
        super().__init__()
        self.out, self.tracker, self.arm = out, tracker, arm_watchdog
        self.outcome, self.details = "skip", []

    def emit(self, **record):
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def startTest(self, test):
        super().startTest(test)
        reinstall_leaked_policy(self.tracker)
        self.tracker.current, self.tracker.made = test.id(), 0
        self.outcome, self.details = "skip", []
        self.emit(ev="start", id=test.id())
        self.arm()

    def stopTest(self, test):
        if self.tracker.current != test.id():  # 3.12+ skips decorated tests without startTest()
            super().stopTest(test)
            return
        self.arm()
        self.emit(
            ev="end",
            id=test.id(),
            outcome=self.outcome,
            ours=self.tracker.made > 0,
            detail="\n".join(self.details)[-8000:],
        )
        self.tracker.current = None
        super().stopTest(test)

    def record(self, test, outcome, detail=""):
        if self.tracker.current is None:  # a fixture error, or a skip without startTest()
            self.emit(ev="end", id=test.id(), outcome=outcome, ours=False, detail=detail[-8000:])
            return
        if RANK[outcome] >= RANK[self.outcome]:
            self.outcome = outcome
        if detail:
            self.details.append(detail)

    def addSuccess(self, test):
        self.record(test, "pass")

    def addSkip(self, test, reason):
        self.record(test, "skip")

    def addFailure(self, test, err):
        self.record(test, "fail", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        self.record(test, "error", self._exc_info_to_string(err, test))

    def addExpectedFailure(self, test, err):
        self.record(test, "xfail")

    def addUnexpectedSuccess(self, test):
        self.record(test, "upass", "unexpected success")

    def addSubTest(self, test, subtest, err):
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self.record(test, kind, f"[{subtest}]\n" + self._exc_info_to_string(err, test))


def worker(args) -> None:
    watchdog = open(args.watchdog_file, "w")  # stays open: faulthandler writes to it from C

    def arm():
        faulthandler.dump_traceback_later(args.timeout_per_test, exit=True, file=watchdog)

    arm()
    faulthandler.enable()
    with open(args.results, "a", encoding="utf-8") as out:
        tracker = install_loop(args.loop)
        result = RecordingResult(out, tracker, arm)
        skipped = None
        try:
            loaded = unittest.defaultTestLoader.loadTestsFromName(f"{PKG}.{args.worker}")
        except unittest.SkipTest as exc:  # raised by the module itself, e.g. no ssl
            loaded, skipped = unittest.TestSuite(), str(exc)
        tests = select_and_patch(list(iter_tests(loaded)), tracker)
        result.emit(ev="plan", ids=[t.id() for t in tests])
        if skipped is not None:
            result.emit(ev="end", id=f"{PKG}.{args.worker}", outcome="skip", ours=False, detail=skipped)
        unittest.TestSuite(tests[args.start :]).run(result)
        faulthandler.cancel_dump_traceback_later()
        result.emit(ev="done")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # leftover non-daemon threads from tests must not hang interpreter shutdown


# --------------------------------------------------------------------------------------------------
# Parent: runs workers, resumes after hangs and crashes, applies known failures, reports.
# --------------------------------------------------------------------------------------------------


def load_known(loop: str) -> dict[str, str]:
    if loop != "ferroloop":
        return {}
    path = Path(__file__).with_name("known_failures.py")
    spec = importlib.util.spec_from_file_location("known_failures", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    known = {}
    for test_id, reason in mod.KNOWN_FAILURES.items():
        if isinstance(reason, dict):
            reason = reason.get(PY, reason.get("all"))
        if reason:
            known[test_id] = reason
    return known


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            pass
    return records


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def spawn_worker(args, name: str, start: int, workdir: Path, attempt: int) -> tuple[int, Path, Path, Path]:
    results, wd, log = (workdir / f"{kind}{attempt}.txt" for kind in ("results", "watchdog", "log"))
    options = {
        "--worker": name,
        "--loop": args.loop,
        "--timeout-per-test": args.timeout_per_test,
        "--start": start,
        "--results": results,
        "--watchdog-file": wd,
    }
    cmd = [sys.executable, os.path.abspath(__file__), *(str(x) for item in options.items() for x in item)]
    cwd = workdir / "cwd"
    cwd.mkdir(exist_ok=True)
    with open(log, "w") as logf:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    last_size, last_change = -1, time.monotonic()
    while proc.poll() is None:
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        size = results.stat().st_size if results.exists() else 0
        if size != last_size:
            last_size, last_change = size, time.monotonic()
        elif time.monotonic() - last_change > args.timeout_per_test + 60:  # watchdog itself failed
            os.killpg(proc.pid, signal.SIGKILL)
            wd.write_text("no progress; the runner killed the worker\n")
            proc.wait()
    try:  # leftovers, e.g. children spawned by subprocess tests
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return proc.returncode, results, wd, log


def run_module(args, name: str, root: Path) -> dict:
    """Run one module to completion, across as many workers as hangs and crashes require."""
    workdir = root / name
    workdir.mkdir()
    plan: list[str] | None = None
    records: dict[str, dict] = {}
    start, attempt, broken, began = 0, 0, None, time.monotonic()
    while True:
        rc, results, wd, log = spawn_worker(args, name, start, workdir, attempt)
        attempt += 1
        recs = read_records(results)
        for rec in recs:
            if rec["ev"] == "plan" and plan is None:
                plan = rec["ids"]
            elif rec["ev"] == "end":
                records[rec["id"]] = rec
        if any(rec["ev"] == "done" for rec in recs):
            break
        if plan is None:
            broken = f"worker exited with {rc} before listing tests\n{tail(log)}"
            break
        started = [r["id"] for r in recs if r["ev"] == "start"]
        current = started[-1] if started and started[-1] not in records else None
        hung = wd.exists() and wd.stat().st_size > 0
        if current is None:  # died between tests: charge the next test in the plan
            done_ids = [r["id"] for r in recs if r["ev"] == "end" and r["id"] in plan]
            index = plan.index(done_ids[-1]) + 1 if done_ids else start
            current = plan[index] if index < len(plan) else f"{PKG}.{name} (module teardown)"
            where = "between tests (fixture)"
        else:
            index, where = plan.index(current), "in test"
        outcome = "timeout" if hung else "crash"
        detail = f"{outcome} {where}, worker exit code {rc}\n" + (wd.read_text() if hung else tail(log))
        records[current] = {"ev": "end", "id": current, "outcome": outcome, "ours": False, "detail": detail}
        start = index + 1
        if start >= len(plan):
            break
    seconds = time.monotonic() - began
    return {"name": name, "records": list(records.values()), "broken": broken, "seconds": seconds}


def summarize(result: dict, known: dict[str, str]) -> dict:
    counts = dict.fromkeys(COUNTS, 0)
    problems = []
    for rec in result["records"]:
        outcome, test_id = rec["outcome"], rec["id"]
        counts["run"] += 1
        counts["ours"] += rec["ours"]
        if test_id in known and outcome in ("fail", "error", "timeout", "crash"):
            counts["known"] += 1
            continue
        if test_id in known and outcome == "pass":
            counts["upass"] += 1
            problems.append((test_id, "unexpected pass", f"known failure: {known[test_id]}"))
            continue
        counts[outcome] += 1
        if outcome in BAD:
            problems.append((test_id, outcome, rec.get("detail", "")))
    return {**result, "counts": counts, "problems": problems}


def report_line(s: dict) -> str:
    c = s["counts"]
    line = (
        f"{s['name']:<20} run {c['run']:4}  passed {c['pass']:4}  failed {c['fail']:3}  "
        f"errors {c['error']:3}  skipped {c['skip']:3}  xfail {c['xfail']:2}  ours {c['ours']:4}  "
        f"known {c['known']:3}"
    )
    extras = [f"{k} {c[k]}" for k in ("upass", "timeout", "crash") if c[k]]
    if s["broken"]:
        extras.append("BROKEN")
    return line + "".join(f"  {e}" for e in extras) + f"  ({s['seconds']:.1f}s)"


def print_problems(s: dict, verbose: bool) -> None:
    for test_id, outcome, detail in s["problems"]:
        if verbose or outcome in ("timeout", "crash", "unexpected pass"):
            print(f"    {outcome.upper()}: {test_id}")
            if verbose and detail:
                print("      " + detail.strip().replace("\n", "\n      "))
    if s["broken"]:
        print("    " + s["broken"].strip().replace("\n", "\n    "))


def module_exists(name: str) -> bool:
    import test

    base = Path(test.__file__).parent / "test_asyncio" / name.split(".")[0]
    return base.with_suffix(".py").exists() or base.is_dir()


def die(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_ferroloop() -> None:
    try:
        import ferroloop

        missing = [a for a in ("new_event_loop", "Loop", "EventLoopPolicy") if not hasattr(ferroloop, a)]
    except ImportError as exc:
        die(f"--loop ferroloop, but ferroloop is not importable ({exc}); build it first")
    if missing:
        die(f"ferroloop lacks {', '.join(missing)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="test_asyncio modules (default: the core set)")
    parser.add_argument("--loop", choices=("ferroloop", "asyncio"), default="ferroloop")
    parser.add_argument("--timeout-per-test", type=float, default=60.0)
    parser.add_argument("-j", "--jobs", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every failure with traceback")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    parser.add_argument("--watchdog-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
    if args.loop == "ferroloop":
        check_ferroloop()
    names = args.modules or [m for m in DEFAULT_MODULES if module_exists(m)]
    missing = [m for m in names if not module_exists(m)]
    if missing:
        die(f"no such module in {PKG} on Python {PY}: {', '.join(missing)}")
    known = load_known(args.loop)
    version = sys.version.split()[0]
    print(f"Python {version}, loop {args.loop}, {len(names)} modules, -j {args.jobs}", flush=True)
    began, lock, summaries = time.monotonic(), threading.Lock(), {}
    root = Path(tempfile.mkdtemp(prefix="stdlib-asyncio-"))

    def one(name: str) -> None:
        s = summarize(run_module(args, name, root), known)
        with lock:
            summaries[name] = s
            print(report_line(s), flush=True)
            print_problems(s, args.verbose)
            sys.stdout.flush()

    try:
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            for fut in [pool.submit(one, name) for name in names]:
                fut.result()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    total = {k: sum(s["counts"][k] for s in summaries.values()) for k in COUNTS}
    bad = sum(total[k] for k in BAD)
    print(
        f"TOTAL: {len(names)} modules, run {total['run']}, passed {total['pass']}, failed {total['fail']}, "
        f"errors {total['error']}, skipped {total['skip']}, xfail {total['xfail']}, ours {total['ours']}, "
        f"known {total['known']}, unexpected passes {total['upass']}, timeouts {total['timeout']}, "
        f"crashes {total['crash']}, wall {time.monotonic() - began:.1f}s"
    )
    print(f"{total['pass']} passed, {bad} failed")
    if any(s["broken"] for s in summaries.values()) or total["run"] == 0:
        return 2
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
