"""Event loop implementations compared by the benchmark."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

# Column order in the results table; ferroloop is the one being judged.
ALL_LOOPS: tuple[str, ...] = ("ferroloop", "asyncio", "uvloop", "rloop")
TARGET = "ferroloop"


def loop_factory(name: str) -> LoopFactory:
    """Return a zero-argument factory for a new loop of the given implementation.

    Raises ImportError if the implementation is not installed.
    """
    if name == "asyncio":
        return asyncio.SelectorEventLoop
    if name in ("ferroloop", "uvloop", "rloop"):
        module = importlib.import_module(name)
        return module.new_event_loop
    raise ValueError(f"unknown loop {name!r}; known: {', '.join(ALL_LOOPS)}")


def loop_version(name: str) -> str:
    if name == "asyncio":
        import platform

        return f"stdlib {platform.python_version()}"
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        module = importlib.import_module(name)
        return str(getattr(module, "__version__", "?"))
