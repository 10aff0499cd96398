"""Instructions per operation of the core rows, counted by callgrind, side by side.

Timings on a shared machine move by tens of percent between rounds; the instructions a row
executes do not. Each (row, loop) runs under `valgrind --tool=callgrind` at two sizes, and the
table reports (Ir(large) - Ir(small)) / (ops(large) - ops(small)): the instructions one more
operation costs, with interpreter start-up, imports and the loop's creation cancelled out. Only
user-space instructions are counted (callgrind does not see the kernel), so this is for the
core rows, which make no system calls per operation; fewer instructions is not the same as less
time (cache misses and branch mispredictions are not counted), which is why `run.py`'s timed
table is the one the goals are read from.

    python bench/instructions.py [--loops ferroloop,asyncio,uvloop,rloop] [--rows ROW,...]
                                 [--scale 0.1] [--out FILE.md]

Needs valgrind; uses the same worker and interpreter as run.py (bench/.venv).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rows  # noqa: E402
from loops import ALL_LOOPS, TARGET  # noqa: E402
from run import DEFAULT_PYTHON  # noqa: E402

COLLECTED = re.compile(r"Collected : (\d+)")


def count(python: Path, loop: str, row: str, n: int, timeout: float) -> tuple[int, int]:
    """(operations, instructions) of one worker run of `row` at size `n` under callgrind."""
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        str(python),
        str(HERE / "worker.py"),
        "--loop",
        loop,
        "--row",
        row,
        "--n",
        str(n),
        "--warmup",
        "0",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise RuntimeError(f"{loop} {row} n={n}: {tail[0]}")
    found = COLLECTED.findall(proc.stderr)
    if not found:
        raise RuntimeError(f"{loop} {row} n={n}: callgrind reported no count")
    ops = json.loads(proc.stdout.strip().splitlines()[-1])["ops"]
    return int(ops), int(found[-1])


def per_op(python: Path, loop: str, row: rows.Row, scale: float, timeout: float) -> float:
    large = max(30, int(row.n * scale))
    small = large // 3
    ops_small, ir_small = count(python, loop, row.name, small, timeout)
    ops_large, ir_large = count(python, loop, row.name, large, timeout)
    if ops_large <= ops_small:
        raise RuntimeError(f"{loop} {row.name}: {ops_large} ops at n={large}, {ops_small} at n={small}")
    return (ir_large - ir_small) / (ops_large - ops_small)


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", default=",".join(ALL_LOOPS))
    parser.add_argument("--rows", default="core", help="core, or comma-separated core row names")
    parser.add_argument("--scale", type=float, default=0.1, help="the large size, as a fraction of n")
    parser.add_argument("--python", type=Path, default=DEFAULT_PYTHON)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    registry = rows.load_all()
    names = [r.strip() for r in args.rows.split(",") if r.strip()]
    selected = [r for r in registry.values() if r.group == "core"] if names == ["core"] else []
    for name in names if names != ["core"] else []:
        row = registry.get(name)
        if row is None or row.client:
            print(f"not a core row: {name}", file=sys.stderr)
            return 2
        selected.append(row)
    loops = [lp.strip() for lp in args.loops.split(",") if lp.strip()]

    lines = [
        "| row | " + " | ".join(loops) + f" | best other / {TARGET} |",
        "|---|" + "---:|" * (len(loops) + 1),
    ]
    for row in selected:
        cells: dict[str, float | None] = {}
        for loop in loops:
            try:
                cells[loop] = per_op(args.python, loop, row, args.scale, args.timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"{row.name} {loop}: {exc}", file=sys.stderr)
                cells[loop] = None
            print(f"{row.name:<18} {loop:<10} {fmt(cells[loop])} instructions per op", file=sys.stderr)
        others = [v for lp, v in cells.items() if lp != TARGET and v is not None]
        mine = cells.get(TARGET)
        ratio = f"{min(others) / mine:.2f}x" if others and mine else "n/a"
        lines.append(f"| {row.name} | " + " | ".join(fmt(cells[lp]) for lp in loops) + f" | {ratio} |")

    header = [
        "# Instructions per operation (callgrind)",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- python: {args.python}",
        f"- sizes: each row at {args.scale:g} and {args.scale / 3:g} of its full n; "
        "instructions per operation = difference of the counts / difference of the operations",
        "- user space only; fewer is better; the last column is how many times as many the best "
        "other loop executes",
        "",
    ]
    text = "\n".join(header + lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
