"""Shared fixtures for the loop-core conformance suite.

Every test in this directory runs twice: once on the standard library's
``asyncio.SelectorEventLoop`` (the reference behaviour) and once on
``ferroloop``.  The tests only use public loop APIs so that the stdlib run
proves the assertions themselves are right.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import loopkinds
import pytest
from loopkinds import FERROLOOP_IMPORT_ERROR, LOOP_KINDS, ferroloop, require_ferroloop

# Per-test watchdog: a hung loop must not stall the whole suite.
DEFAULT_TEST_TIMEOUT = 30


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "allow_exception_handler_calls: the test expects the loop's exception handler to be called",
    )


def pytest_report_header(config):
    if FERROLOOP_IMPORT_ERROR is not None:
        return f"ferroloop: IMPORT FAILED ({FERROLOOP_IMPORT_ERROR!r})"
    return f"ferroloop: {getattr(ferroloop, '__file__', '?')}"


def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if item.get_closest_marker("timeout") is None and "conformance" in str(item.fspath):
            item.add_marker(pytest.mark.timeout(DEFAULT_TEST_TIMEOUT))


# ---------------------------------------------------------------------------
# Loop construction
# ---------------------------------------------------------------------------


@pytest.fixture(params=LOOP_KINDS, ids=LOOP_KINDS)
def loop_factory(request):
    """A zero-argument callable returning a brand new, not yet running loop."""
    factory = loopkinds.loop_factory(request.param)
    made = []

    def make():
        new = factory()
        made.append(new)
        return new

    make.kind = request.param
    yield make
    # Loops created directly from the factory are the test's business, but
    # never leave one open: an open loop leaks fds and signal handlers.
    for extra in made:
        if not extra.is_closed() and not extra.is_running():
            extra.close()


@pytest.fixture
def loop_kind(loop_factory):
    """'asyncio' or 'ferroloop'."""
    return loop_factory.kind


@pytest.fixture
def loop_type(loop_kind):
    """The class every loop made by ``loop_factory`` is an instance of."""
    return loopkinds.loop_class(loop_kind)


@pytest.fixture
def run_entry(loop_kind):
    """The ``run(coro, *, debug=None)`` entry point for this loop kind."""
    if loop_kind == "asyncio":
        return asyncio.run
    return require_ferroloop().run


@pytest.fixture
def policy_class(loop_kind):
    if loop_kind == "asyncio":
        return asyncio.DefaultEventLoopPolicy
    return require_ferroloop().EventLoopPolicy


@pytest.fixture
def restore_policy():
    """Put back whatever event loop policy was installed before the test."""
    saved = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(saved)


# ---------------------------------------------------------------------------
# The main ``loop`` fixture, with a recording exception handler
# ---------------------------------------------------------------------------


class ExceptionRecorder:
    def __init__(self):
        self.calls: list[dict] = []
        self.expected = False

    def __call__(self, loop, context):
        self.calls.append(context)


@pytest.fixture
def _exception_recorder(request):
    recorder = ExceptionRecorder()
    if request.node.get_closest_marker("allow_exception_handler_calls") is not None:
        recorder.expected = True
    return recorder


@pytest.fixture
def handler_calls(_exception_recorder):
    """Opt out of the 'no unexpected exception handler calls' check.

    Returns the live list of contexts the loop's handler was called with.
    """
    _exception_recorder.expected = True
    return _exception_recorder.calls


@pytest.fixture
def loop(loop_factory, _exception_recorder):
    hooks_before = sys.get_asyncgen_hooks()
    lp = loop_factory()
    lp.set_exception_handler(_exception_recorder)
    yield lp
    try:
        assert not lp.is_running(), "the loop is still running at teardown"
        if not lp.is_closed():
            try:
                lp.run_until_complete(lp.shutdown_asyncgens())
                lp.run_until_complete(lp.shutdown_default_executor())
            finally:
                lp.close()
    finally:
        asyncio.set_event_loop(None)
    assert asyncio._get_running_loop() is None, "the running loop was not reset"
    assert sys.get_asyncgen_hooks() == hooks_before, "asyncgen hooks were not restored"
    if _exception_recorder.calls and not _exception_recorder.expected:
        shown = "\n".join(f"  {ctx!r}" for ctx in _exception_recorder.calls)
        pytest.fail(f"loop exception handler called unexpectedly:\n{shown}", pytrace=False)


# ---------------------------------------------------------------------------
# Subprocess helpers
# ---------------------------------------------------------------------------


def _subprocess_env(extra=None):
    env = dict(os.environ)
    env.pop("PYTHONASYNCIODEBUG", None)
    env.pop("PYTHONDEVMODE", None)
    paths = []
    if ferroloop is not None:
        # Make an in-tree or editable build visible to the child as well.
        paths.append(os.path.dirname(os.path.dirname(os.path.abspath(ferroloop.__file__))))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


# Defines new_loop(), LOOP_TYPE and run() inside a child script.
_PRELUDES = {
    "asyncio": """
        import asyncio
        def new_loop():
            return asyncio.SelectorEventLoop()
        LOOP_TYPE = asyncio.SelectorEventLoop
        run = asyncio.run
    """,
    "ferroloop": """
        import asyncio
        import ferroloop
        new_loop = ferroloop.new_event_loop
        LOOP_TYPE = ferroloop.Loop
        run = ferroloop.run
    """,
}


class ScriptRunner:
    """Writes a child script and runs it with the interpreter running pytest."""

    def __init__(self, kind, tmp_path):
        self.kind = kind
        self.tmp_path = tmp_path
        self.prelude = textwrap.dedent(_PRELUDES[kind])

    def write(self, source, name="script.py", prelude=True):
        body = textwrap.dedent(source)
        if prelude:
            body = self.prelude + "\n" + body
        path = self.tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        return path

    def command(self, path, args=(), *, via_main=None, python_args=()):
        """The command line for a script.

        ``via_main`` (default: True for ferroloop) launches the script through
        ``python -m ferroloop``; the stdlib param uses plain ``python``.
        """
        if via_main is None:
            via_main = self.kind == "ferroloop"
        cmd = [sys.executable, *python_args]
        if via_main:
            cmd += ["-m", "ferroloop"]
        return [*cmd, str(path), *args]

    def env(self, extra=None):
        return _subprocess_env(extra)

    def run(
        self,
        source,
        args=(),
        *,
        via_main=None,
        python_args=(),
        env=None,
        timeout=30,
        prelude=True,
        name="script.py",
        cwd=None,
    ):
        path = self.write(source, name=name, prelude=prelude)
        return subprocess.run(
            self.command(path, args, via_main=via_main, python_args=python_args),
            env=self.env(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(cwd or self.tmp_path),
        )

    def popen(self, source, args=(), *, via_main=None, python_args=(), env=None, prelude=True):
        path = self.write(source, prelude=prelude)
        return subprocess.Popen(
            self.command(path, args, via_main=via_main, python_args=python_args),
            env=self.env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(self.tmp_path),
        )


@pytest.fixture
def script(loop_kind, tmp_path):
    return ScriptRunner(loop_kind, tmp_path)
