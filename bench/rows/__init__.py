"""Benchmark row registry.

A *row* is one benchmark: an ``async`` function that runs on the event loop under
test and returns how many operations it completed and how long that took.  Rows
live in modules grouped by theme (``core`` now; network rows such as echo servers
or HTTP go into further modules listed in ``GROUP_MODULES``).  Each module
registers its rows with the :func:`row` decorator.

Row functions receive the problem size ``n`` and must do their own timing so that
loop creation, imports and input preparation stay out of the measured region.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

# Modules under bench/rows/ that define rows, in table order.
GROUP_MODULES: tuple[str, ...] = ("core",)


@dataclass(frozen=True)
class Measurement:
    ops: int
    seconds: float


RowFunc = Callable[[int], Awaitable[Measurement]]


@dataclass(frozen=True)
class Row:
    name: str
    group: str
    unit: str
    description: str
    n: int
    n_quick: int
    func: RowFunc

    def size(self, quick: bool) -> int:
        return self.n_quick if quick else self.n


REGISTRY: dict[str, Row] = {}


def row(*, name: str, group: str, unit: str, n: int, n_quick: int, description: str):
    """Register an ``async def f(n) -> Measurement`` as a benchmark row."""

    def decorate(func: RowFunc) -> RowFunc:
        if name in REGISTRY:
            raise ValueError(f"duplicate row name {name!r}")
        REGISTRY[name] = Row(name, group, unit, description, n, n_quick, func)
        return func

    return decorate


def load_all() -> dict[str, Row]:
    for mod in GROUP_MODULES:
        importlib.import_module(f"{__name__}.{mod}")
    return REGISTRY


def select(spec: str | None) -> list[Row]:
    """Resolve a comma-separated list of group and/or row names (None = everything)."""
    rows = load_all()
    if not spec:
        return list(rows.values())
    chosen: list[Row] = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        if token in rows:
            matches = [rows[token]]
        else:
            matches = [r for r in rows.values() if r.group == token]
        if not matches:
            known = sorted({r.group for r in rows.values()} | set(rows))
            raise SystemExit(f"unknown row or group {token!r}; known: {', '.join(known)}")
        chosen.extend(r for r in matches if r not in chosen)
    return chosen
