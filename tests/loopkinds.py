"""The two loops every behaviour test runs on, shared by the test directories' conftests.

ferroloop is imported here, at collection time, so that a broken build is visible at once. The
failure is kept and re-raised by ``require_ferroloop()`` from the ferroloop fixture param: every
ferroloop test then ERRORS (never skips) while the stdlib param still runs.
"""

from __future__ import annotations

import asyncio

try:
    import ferroloop
except Exception as exc:  # a broken native module can raise more than ImportError
    ferroloop = None
    FERROLOOP_IMPORT_ERROR: BaseException | None = exc
else:
    FERROLOOP_IMPORT_ERROR = None

LOOP_KINDS = ["asyncio", "ferroloop"]


def require_ferroloop():
    if FERROLOOP_IMPORT_ERROR is not None:
        message = f"ferroloop could not be imported: {FERROLOOP_IMPORT_ERROR!r}"
        raise RuntimeError(message) from FERROLOOP_IMPORT_ERROR
    return ferroloop


def loop_class(kind):
    """The exact class of the loops of ``kind``."""
    # The stdlib's is what asyncio.new_event_loop() returns under the default policy on POSIX,
    # named directly so that a policy installed by a test cannot change it.
    return asyncio.SelectorEventLoop if kind == "asyncio" else require_ferroloop().Loop


def loop_factory(kind):
    """A zero-argument callable making a new loop of ``kind``."""
    return asyncio.SelectorEventLoop if kind == "asyncio" else require_ferroloop().new_event_loop
