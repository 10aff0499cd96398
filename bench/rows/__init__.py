"""Benchmark row registry.

A *row* is one benchmark: an ``async`` function that runs on the event loop under
test and returns how many operations it completed and how long that took.  Rows
live in modules grouped by theme (``core``: scheduling without I/O; ``net``: TCP echo
and HTTP servers; ``tls``: the same over TLS; ``proc``: subprocesses), listed in
``GROUP_MODULES``.  Each module registers its rows with the :func:`row` decorator.

Row functions receive the problem size ``n`` and must do their own timing so that
loop creation, imports and input preparation stay out of the measured region.

Server rows (``client=True``) run a server on the loop under test and drive it from a
separate load-generator process pinned to another CPU (``CONTEXT.client_cpu``); their
``n`` is the measured duration in milliseconds and they warm up inside the same run
(``self_warmup=True``, warm-up length ``CONTEXT.warmup``).  They also report the CPU
time the server process used in the measured window (``Measurement.cpu_seconds``).

A row that hits a feature the loop does not implement lets ``NotImplementedError``
propagate; the runner shows that cell as ``n/a``.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

# Modules under bench/rows/ that define rows, in table order.
GROUP_MODULES: tuple[str, ...] = ("core", "net", "tls", "proc")

# Selects every row in every group.
ALL = "all"


@dataclass(frozen=True)
class Measurement:
    ops: int
    seconds: float
    # CPU time (user + system) the process under test spent while the ops were done, if measured.
    cpu_seconds: float | None = None
    # Server rows: the load generator's CPU use over its run, in cores (near 1.0: it may be the limit).
    client_busy: float | None = None
    # Server rows: instructions (user + kernel) the process under test retired in the measured
    # window, when ``perf`` can count them.
    instructions: float | None = None
    # Server rows: CPU cycles the process under test spent in user space and in the kernel in the
    # measured window, when ``perf`` can count them.
    user_cycles: float | None = None
    kernel_cycles: float | None = None


@dataclass
class Context:
    """Per-run settings the worker passes to rows (beyond the problem size)."""

    # CPU to pin load-generator processes to (None: no pinning).
    client_cpu: int | None = None
    # Warm-up size for rows with self_warmup (same unit as n); 0 = no warm-up.
    warmup: int = 0


CONTEXT = Context()


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
    # Unit of n shown in the report ("" = a plain count).
    size_unit: str = ""
    # Unit of ops per CPU-second of the process under test, for rows that measure it.
    cpu_unit: str | None = None
    # Needs a second CPU for a load generator (server rows).
    client: bool = False
    # Warms up within the measured run (CONTEXT.warmup) instead of a separate untimed pass.
    self_warmup: bool = False
    # Warm-up size as a fraction of n.
    warmup_ratio: float = 0.1

    def size(self, quick: bool) -> int:
        return self.n_quick if quick else self.n

    def warmup_size(self, n: int) -> int:
        return max(1, int(n * self.warmup_ratio))


REGISTRY: dict[str, Row] = {}


def row(
    *,
    name: str,
    group: str,
    unit: str,
    n: int,
    n_quick: int,
    description: str,
    size_unit: str = "",
    cpu_unit: str | None = None,
    client: bool = False,
    self_warmup: bool = False,
    warmup_ratio: float = 0.1,
):
    """Register an ``async def f(n) -> Measurement`` as a benchmark row."""

    def decorate(func: RowFunc) -> RowFunc:
        if name in REGISTRY:
            raise ValueError(f"duplicate row name {name!r}")
        REGISTRY[name] = Row(
            name,
            group,
            unit,
            description,
            n,
            n_quick,
            func,
            size_unit=size_unit,
            cpu_unit=cpu_unit,
            client=client,
            self_warmup=self_warmup,
            warmup_ratio=warmup_ratio,
        )
        return func

    return decorate


def load_all() -> dict[str, Row]:
    for mod in GROUP_MODULES:
        importlib.import_module(f"{__name__}.{mod}")
    return REGISTRY


def select(spec: str | None) -> list[Row]:
    """Resolve a comma-separated list of group and/or row names (None or "all" = everything)."""
    rows = load_all()
    if not spec:
        return list(rows.values())
    chosen: list[Row] = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        if token == ALL:
            matches = list(rows.values())
        elif token in rows:
            matches = [rows[token]]
        else:
            matches = [r for r in rows.values() if r.group == token]
        if not matches:
            known = [ALL, *sorted({r.group for r in rows.values()} | set(rows))]
            raise SystemExit(f"unknown row or group {token!r}; known: {', '.join(known)}")
        chosen.extend(r for r in matches if r not in chosen)
    return chosen
