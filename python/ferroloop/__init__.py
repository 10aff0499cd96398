"""ferroloop: a fast drop-in asyncio event loop written in Rust.

Use it with ``ferroloop.run(main())``, with ``asyncio.run(main(), loop_factory=ferroloop.new_event_loop)``
(Python 3.12+), with ``asyncio.Runner(loop_factory=ferroloop.new_event_loop)``, or process-wide with
``ferroloop.install()``. ``python -m ferroloop script.py`` runs any asyncio script on ferroloop.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._core import Handle, TimerHandle
from ._loop import Loop

__all__ = ["EventLoopPolicy", "Handle", "Loop", "TimerHandle", "install", "new_event_loop", "run"]
__version__ = "0.1.0"

_T = TypeVar("_T")


def new_event_loop() -> Loop:
    """Return a new ferroloop event loop."""
    return Loop()


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T:
    """Run a coroutine on a new ferroloop loop, as ``asyncio.run`` does, and return its result."""
    if asyncio.events._get_running_loop() is not None:
        # Refuse before a loop exists, as asyncio.run does, so nothing is left half-made.
        raise RuntimeError("ferroloop.run() cannot be called from a running event loop")
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """An event loop policy whose loops are ferroloop loops."""

    def _loop_factory(self) -> Loop:  # type: ignore[override]
        return Loop()

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__}>"


def install() -> None:
    """Make ferroloop the loop that ``asyncio.new_event_loop()`` and ``asyncio.run()`` create."""
    if sys.version_info >= (3, 14):
        asyncio._set_event_loop_policy(EventLoopPolicy())  # type: ignore[attr-defined]
    else:
        asyncio.set_event_loop_policy(EventLoopPolicy())
