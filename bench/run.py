"""Side-by-side event loop benchmark: ferroloop vs asyncio, uvloop and rloop.

Every (row, loop) measurement runs in a fresh interpreter pinned to one CPU core,
repeated for several rounds; the table reports the median ops/s and the spread.

    python bench/run.py [--loops ferroloop,asyncio,uvloop,rloop] [--rounds 5] [--quick]
                        [--rows core] [--out bench/results/latest.md]

Run bench/setup.sh first to create bench/.venv (the interpreter used for the workers).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import rows  # noqa: E402
from loops import ALL_LOOPS, TARGET  # noqa: E402

WORKER = BENCH_DIR / "worker.py"
DEFAULT_PYTHON = BENCH_DIR / ".venv" / "bin" / "python"
DEFAULT_OUT = BENCH_DIR / "results" / "latest.md"
EXIT_NOT_INSTALLED = 3
GOAL = 1.2
DEFAULT_ROUNDS = 5
QUICK_ROUNDS = 1

# Environment variables that would skew the measurement if inherited.
SCRUBBED_ENV = (
    "PYTHONASYNCIODEBUG",
    "PYTHONDEVMODE",
    "PYTHONTRACEMALLOC",
    "PYTHONMALLOC",
    "PYTHONPROFILEIMPORTTIME",
)


@dataclass
class Cell:
    """All rounds of one (row, loop) measurement."""

    samples: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | n/a | error

    @property
    def median(self) -> float | None:
        if self.status != "ok" or not self.samples:
            return None
        return statistics.median(self.samples)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loops", default=",".join(ALL_LOOPS), help="comma-separated loops (default: all)")
    p.add_argument("--rows", default=None, help="comma-separated row groups and/or row names (default: all)")
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"fresh-process repetitions per cell (default {DEFAULT_ROUNDS}, {QUICK_ROUNDS} with --quick)",
    )
    p.add_argument("--quick", action="store_true", help="small problem sizes for a smoke run")
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="markdown output file (raw data: same name .json)"
    )
    p.add_argument("--python", type=Path, default=None, help=f"worker interpreter (default {DEFAULT_PYTHON})")
    p.add_argument(
        "--cpu", default=None, help="CPU to pin workers to (default: last allowed CPU; 'none' = no pin)"
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a worker is killed")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up pass in each worker")
    p.add_argument("--check", action="store_true", help="exit 1 unless ferroloop meets the goal on every row")
    return p.parse_args(argv)


def pick_cpu(spec: str | None) -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    if spec == "none":
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if spec is None:
        return allowed[-1]
    cpu = int(spec)
    if cpu not in allowed:
        raise SystemExit(f"--cpu {cpu} is not in the allowed set {allowed}")
    return cpu


def worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env["PYTHONHASHSEED"] = "0"
    return env


def run_worker(python: Path, args: list[str], cpu: int | None, timeout: float) -> tuple[int, str, str]:
    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    try:
        proc = subprocess.run(
            [str(python), str(WORKER), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=worker_env(),
            cwd=str(BENCH_DIR),
            preexec_fn=pin,
        )
    except subprocess.TimeoutExpired:
        return -1, "", f"timeout after {timeout:.0f}s"
    return proc.returncode, proc.stdout, proc.stderr


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def probe(python: Path, loop: str, cpu: int | None, timeout: float) -> tuple[str, str]:
    """Return (status, info): status ok | n/a | error; info is a version string or an error."""
    rc, out, err = run_worker(python, ["--loop", loop, "--probe"], cpu, timeout)
    if rc == 0:
        try:
            return "ok", json.loads(last_line(out))["version"]
        except (ValueError, KeyError):
            return "error", f"unparsable probe output: {out!r}"
    if rc == EXIT_NOT_INSTALLED:
        return "n/a", last_line(err) or "not installed"
    return "error", last_line(err) or f"exit status {rc}"


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            v = x / div
            return f"{v:#.3g}{suffix}" if v < 100 else f"{v:.0f}{suffix}"
    return f"{x:.3g}"


def fmt_cell(cell: Cell) -> str:
    if cell.status != "ok":
        return cell.status
    med = cell.median
    assert med is not None
    if len(cell.samples) > 1:
        half_range = (max(cell.samples) - min(cell.samples)) / 2 / med * 100
        return f"{fmt_rate(med)} ±{half_range:.1f}%"
    return fmt_rate(med)


def verdict(cells: dict[str, Cell], loops: list[str]) -> tuple[str, str]:
    """Return (ratio text, goal text) for ferroloop against the best other loop."""
    if TARGET not in loops:
        return "-", "-"
    target = cells[TARGET]
    others = {name: cells[name].median for name in loops if name != TARGET and cells[name].median is not None}
    if target.median is None:
        return target.status, "n/a"
    if not others:
        return "no rival", "n/a"
    best_name = max(others, key=lambda k: others[k])
    ratio = target.median / others[best_name]
    return f"{ratio:.2f}x vs {best_name}", ("yes" if ratio >= GOAL else "NO")


def render(
    selected: list[rows.Row],
    loops: list[str],
    cells: dict[str, dict[str, Cell]],
    meta: dict[str, object],
    versions: dict[str, str],
) -> tuple[str, str, bool]:
    header = ["row", "unit", *loops]
    if TARGET in loops:
        header += [f"{TARGET} / best other", f"goal >= {GOAL}x"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
    ]
    all_met = True
    for r in selected:
        row_cells = cells[r.name]
        values = [r.name, r.unit, *(fmt_cell(row_cells[lp]) for lp in loops)]
        if TARGET in loops:
            ratio, goal = verdict(row_cells, loops)
            values += [ratio, goal]
            all_met = all_met and goal == "yes"
        else:
            all_met = False
        lines.append("| " + " | ".join(values) + " |")
    table = "\n".join(lines)

    doc = [
        "# ferroloop benchmark",
        "",
        f"- date: {meta['date']}",
        f"- host: {meta['cpu_model']}; workers pinned to CPU {meta['cpu']}",
        f"- worker python: {meta['python_version']} ({meta['python']})",
        f"- rounds: {meta['rounds']} fresh processes per cell, median shown, ± = half of the min-max range",
        f"- sizes: {'quick' if meta['quick'] else 'full'} ("
        + ", ".join(f"{r.name}={r.size(bool(meta['quick'])):,}" for r in selected)
        + ")",
        "- loops: " + ", ".join(f"{lp} {versions.get(lp, '?')}" for lp in loops),
        f"- wall time: {meta['wall_seconds']:.1f} s",
        "",
        table,
        "",
        "Rows:",
        "",
        *(f"- `{r.name}` ({r.group}): {r.description}" for r in selected),
    ]
    problems = [
        f"- {r.name} / {lp}: {msg}"
        for r in selected
        for lp in loops
        for msg in dict.fromkeys(cells[r.name][lp].errors)
    ]
    if problems:
        doc += ["", "Problems:", "", *problems]
    return table, "\n".join(doc) + "\n", all_met


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    loops = [lp.strip() for lp in args.loops.split(",") if lp.strip()]
    unknown = [lp for lp in loops if lp not in ALL_LOOPS]
    if unknown:
        raise SystemExit(f"unknown loop(s) {unknown}; known: {', '.join(ALL_LOOPS)}")
    selected = rows.select(args.rows)
    rounds = args.rounds if args.rounds is not None else (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    if rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    python = args.python or DEFAULT_PYTHON
    if not python.exists():
        print(f"warning: {python} not found (run bench/setup.sh); using {sys.executable}", file=sys.stderr)
        python = Path(sys.executable)
    cpu = pick_cpu(args.cpu)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    cells = {r.name: {lp: Cell() for lp in loops} for r in selected}
    versions: dict[str, str] = {}
    active: list[str] = []
    for lp in loops:
        status, info = probe(python, lp, cpu, args.timeout)
        log(f"probe {lp:<10} {status:<5} {info}")
        if status == "ok":
            versions[lp] = info
            active.append(lp)
        else:
            versions[lp] = status
            for r in selected:
                cells[r.name][lp].status = status
                if status == "error":
                    cells[r.name][lp].errors.append(f"probe failed: {info}")

    for rnd in range(rounds):
        # Rotate the loop order every round so no loop always runs first or last.
        order = active[rnd % len(active) :] + active[: rnd % len(active)] if active else []
        for r in selected:
            n = r.size(args.quick)
            warm = 0 if args.no_warmup else max(1, n // 10)
            for lp in order:
                cell = cells[r.name][lp]
                rc, out, err = run_worker(
                    python,
                    ["--loop", lp, "--row", r.name, "--n", str(n), "--warmup", str(warm)],
                    cpu,
                    args.timeout,
                )
                prefix = f"[{rnd + 1}/{rounds}] {r.name:<18} {lp:<10}"
                try:
                    if rc != 0:
                        raise RuntimeError(last_line(err) or f"exit status {rc}")
                    data = json.loads(last_line(out))
                    cell.samples.append(float(data["ops_per_s"]))
                    if "close_error" in data:
                        cell.errors.append(f"loop close failed: {data['close_error']}")
                    log(f"{prefix} {fmt_rate(data['ops_per_s']):>7} {r.unit}  ({data['seconds']:.3f} s)")
                except (RuntimeError, ValueError, KeyError) as exc:
                    cell.status = "error"
                    cell.errors.append(str(exc))
                    log(f"{prefix} error: {exc}")

    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": cpu_model(),
        "cpu": cpu if cpu is not None else "none",
        "python": str(python),
        "python_version": python_version(python),
        "rounds": rounds,
        "quick": args.quick,
        "wall_seconds": time.perf_counter() - start,
    }
    table, doc, all_met = render(selected, loops, cells, meta, versions)
    print(table)
    print(f"\nwall time: {meta['wall_seconds']:.1f} s", file=sys.stderr)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(doc)
    raw = {
        "meta": meta,
        "versions": versions,
        "goal": GOAL,
        "rows": {
            r.name: {
                "unit": r.unit,
                "n": r.size(args.quick),
                "loops": {lp: vars(c) | {"median": c.median} for lp, c in cells[r.name].items()},
            }
            for r in selected
        },
    }
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")
    log(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    if args.check and not all_met:
        return 1
    return 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def python_version(python: Path) -> str:
    try:
        out = subprocess.run(
            [str(python), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
