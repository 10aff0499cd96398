"""Tests of CPython's test_asyncio known to fail on ferroloop (used by run_stdlib.py --loop ferroloop).

Key: the full test id as unittest prints it, e.g.
    "test.test_asyncio.test_tasks.CTaskTests.test_foo"
(a fixture error uses unittest's id, e.g. "setUpClass (test.test_asyncio.test_x.SomeTests)").
Value: the reason, either one string for every Python version, or a dict keyed by "3.11", "3.12",
"3.13" (or "all") so a test can be listed only where it fails:
    "test.test_asyncio.test_events.EPollEventLoopTests.test_bar": {"3.11": "needs child watcher"},

A listed test that fails, errors, hangs or crashes is reported as "known"; a listed test that passes
is an "unexpected pass" and fails the run, so remove it from the list.
"""

KNOWN_FAILURES: dict[str, str | dict[str, str]] = {}
