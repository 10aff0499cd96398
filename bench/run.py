"""Side-by-side event loop benchmark: ferroloop vs asyncio, uvloop and rloop.

Every (row, loop) measurement runs in a fresh interpreter pinned to one CPU core,
repeated for several rounds; the table reports the median ops/s and the spread.

    python bench/run.py [--loops ferroloop,asyncio,uvloop,rloop] [--rounds 5] [--quick]
                        [--rows core|net|tls|proc|all|ROW,...] [--out bench/results/latest.md]

Server rows (net, tls) run the server worker on one CPU and a load generator on another.

Run bench/setup.sh first to create bench/.venv (the interpreter used for the workers).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
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
EXIT_UNSUPPORTED = 4
DEFAULT_ROWS = "core"
GOAL = 1.2
CLIENT_SATURATED = 0.9
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
    # ops per CPU-second of the measured process, for rows that report it
    cpu_samples: list[float] = field(default_factory=list)
    # server rows: load generator CPU use in cores (near 1.0 = it may have been the limit)
    client_busy: list[float] = field(default_factory=list)
    # server rows: instructions (user + kernel) the process under test retired per op, if counted
    instr_samples: list[float] = field(default_factory=list)
    # server rows: CPU cycles the process under test spent per op in user space / in the kernel
    user_cycle_samples: list[float] = field(default_factory=list)
    kernel_cycle_samples: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | n/a | error

    @property
    def median(self) -> float | None:
        return self._median(self.samples)

    @property
    def cpu_median(self) -> float | None:
        return self._median(self.cpu_samples)

    @property
    def instr_median(self) -> float | None:
        return self._median(self.instr_samples)

    @property
    def user_cycle_median(self) -> float | None:
        return self._median(self.user_cycle_samples)

    @property
    def kernel_cycle_median(self) -> float | None:
        return self._median(self.kernel_cycle_samples)

    def _median(self, samples: list[float]) -> float | None:
        if self.status != "ok" or not samples:
            return None
        return statistics.median(samples)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loops", default=",".join(ALL_LOOPS), help="comma-separated loops (default: all)")
    p.add_argument(
        "--rows",
        default=DEFAULT_ROWS,
        help=f"comma-separated groups (core, net, tls, proc, all) and/or row names (default: {DEFAULT_ROWS})",
    )
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
    p.add_argument(
        "--net-cpus",
        default=None,
        help="SERVER,CLIENT CPUs for server rows (default: first and last allowed CPU; 'none' = no pin)",
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


def pick_net_cpus(spec: str | None) -> tuple[int | None, int | None]:
    """(server CPU, load-generator CPU) for server rows."""
    if not hasattr(os, "sched_setaffinity") or spec == "none":
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    if spec is None:
        if len(allowed) < 2:
            print("warning: one CPU only; server and load generator share it", file=sys.stderr)
        return allowed[0], allowed[-1]
    try:
        server, client = (int(x) for x in spec.split(","))
    except ValueError:
        raise SystemExit(f"--net-cpus expects SERVER,CLIENT, got {spec!r}") from None
    for cpu in (server, client):
        if cpu not in allowed:
            raise SystemExit(f"--net-cpus: CPU {cpu} is not in the allowed set {allowed}")
    return server, client


def worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env["PYTHONHASHSEED"] = "0"
    return env


def run_worker(python: Path, args: list[str], cpu: int | None, timeout: float) -> tuple[int, str, str]:
    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    # Each worker leads its own process group, so load generators and children it started
    # are killed with it (after a timeout, or if it leaves any behind).
    proc = subprocess.Popen(
        [str(python), str(WORKER), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=worker_env(),
        cwd=str(BENCH_DIR),
        preexec_fn=pin,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        proc.communicate()
        return -1, "", f"timeout after {timeout:g}s"
    finally:
        kill_group(proc.pid)
    return proc.returncode, out, err


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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


def fmt_cell(cell: Cell, cpu: bool = False) -> str:
    if cell.status != "ok":
        return cell.status
    samples = cell.cpu_samples if cpu else cell.samples
    med = cell.cpu_median if cpu else cell.median
    if med is None:
        return "-"
    if len(samples) > 1:
        half_range = (max(samples) - min(samples)) / 2 / med * 100
        return f"{fmt_rate(med)} ±{half_range:.1f}%"
    return fmt_rate(med)


def verdict(cells: dict[str, Cell], loops: list[str], cpu: bool = False) -> tuple[str, str]:
    """Return (ratio text, goal text) for ferroloop against the best other loop."""
    if TARGET not in loops:
        return "-", "-"

    def value(c: Cell) -> float | None:
        return c.cpu_median if cpu else c.median

    target = cells[TARGET]
    others = {name: v for name in loops if name != TARGET and (v := value(cells[name])) is not None}
    if value(target) is None:
        return target.status, "n/a"
    if not others:
        return "no rival", "n/a"
    best_name = max(others, key=lambda k: others[k])
    ratio = value(target) / others[best_name]  # type: ignore[operator]
    return f"{ratio:.2f}x vs {best_name}", ("yes" if ratio >= GOAL else "NO")


def render_table(
    selected: list[rows.Row], loops: list[str], cells: dict[str, dict[str, Cell]], cpu: bool
) -> tuple[str, bool]:
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
        unit = (r.cpu_unit or "") if cpu else r.unit
        values = [r.name, unit, *(fmt_cell(row_cells[lp], cpu) for lp in loops)]
        if TARGET in loops:
            ratio, goal = verdict(row_cells, loops, cpu)
            values += [ratio, goal]
            all_met = all_met and goal == "yes"
        else:
            all_met = False
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines), all_met


# The per-op tables of server rows: which Cell samples each shows, and its caption.
PER_OP_TABLES = (
    (
        "instr_samples",
        "Instructions (user + kernel) the process under test retired per op, counted by `perf stat`"
        " over the same windows (lower is better; these move far less between rounds than time does)",
    ),
    (
        "user_cycle_samples",
        "CPU cycles per op the process under test spent in user space (the loop, the interpreter,"
        " the row's own code), same windows",
    ),
    (
        "kernel_cycle_samples",
        "CPU cycles per op the process under test spent in the kernel (system calls, and on loopback"
        " the TCP stack's work for both ends of each send), same windows",
    ),
)


def render_per_op(
    selected: list[rows.Row], loops: list[str], cells: dict[str, dict[str, Cell]], samples: str
) -> str:
    """A count per op of the process under test (`samples` names the Cell list: instructions or
    cycles), for the rows that counted it; the last column says how many more the best
    (fewest) other loop needs than ferroloop."""
    counted = [r for r in selected if any(getattr(cells[r.name][lp], samples) for lp in loops)]
    if not counted:
        return ""
    header = ["row", *loops] + ([f"best other / {TARGET}"] if TARGET in loops else [])
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for r in counted:
        row_cells = cells[r.name]
        values = [r.name]
        medians = {}
        for lp in loops:
            c = row_cells[lp]
            got = getattr(c, samples)
            med = c._median(got)
            if med is None:
                values.append(c.status if c.status != "ok" else "-")
                continue
            medians[lp] = med
            spread = (max(got) - min(got)) / 2 / med * 100
            values.append(f"{fmt_rate(med)} ±{spread:.1f}%")
        if TARGET in loops:
            mine = medians.get(TARGET)
            others = {lp: v for lp, v in medians.items() if lp != TARGET and v}
            if mine and others:
                best = min(others, key=lambda k: others[k])
                values.append(f"{others[best] / mine:.2f}x ({best})")
            else:
                values.append("-")
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def render(
    selected: list[rows.Row],
    loops: list[str],
    cells: dict[str, dict[str, Cell]],
    meta: dict[str, object],
    versions: dict[str, str],
) -> tuple[str, str, bool]:
    table, all_met = render_table(selected, loops, cells, cpu=False)
    cpu_rows = [r for r in selected if r.cpu_unit]
    if cpu_rows:
        cpu_table, _ = render_table(cpu_rows, loops, cells, cpu=True)
        table += (
            "\n\nPer CPU-second of the process under test (the server, or the parent for `proc`), "
            "same rounds:\n\n" + cpu_table
        )
    for samples, caption in PER_OP_TABLES:
        per_op = render_per_op(selected, loops, cells, samples)
        if per_op:
            table += f"\n\n{caption}:\n\n{per_op}"
    server = "; server rows: server on CPU {}, load generator on CPU {}".format(*meta["net_cpus"])  # type: ignore[misc]

    doc = [
        "# ferroloop benchmark",
        "",
        f"- date: {meta['date']}",
        f"- host: {meta['cpu_model']}; workers pinned to CPU {meta['cpu']}"
        + (server if any(r.client for r in selected) else ""),
        f"- worker python: {meta['python_version']} ({meta['python']})",
        f"- rounds: {meta['rounds']} fresh processes per cell, median shown, ± = half of the min-max range",
        f"- sizes: {'quick' if meta['quick'] else 'full'} ("
        + ", ".join(
            f"{r.name}={r.size(bool(meta['quick'])):,}{' ' + r.size_unit if r.size_unit else ''}"
            for r in selected
        )
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
    saturated = []
    for r in selected:
        for lp in loops:
            c = cells[r.name][lp]
            if c.client_busy and max(c.client_busy) >= CLIENT_SATURATED:
                # req/s divided by req/CPU-s = the server's CPU use in cores
                server = [a / b for a, b in zip(c.samples, c.cpu_samples, strict=False) if b]
                extra = f", server {statistics.median(server):.2f} (median)" if server else ""
                saturated.append(
                    f"- {r.name} / {lp}: load generator up to {max(c.client_busy):.2f} cores{extra}"
                )
    if saturated:
        doc += [
            "",
            "Load generator near one full core (if the server used clearly less, the client limited req/s;",
            "req/CPU-s still holds):",
            "",
            *saturated,
        ]
    notes: dict[bool, list[str]] = {True: [], False: []}  # keyed by "cell is n/a"
    for r in selected:
        for lp in loops:
            cell = cells[r.name][lp]
            notes[cell.status == "n/a"] += [f"- {r.name} / {lp}: {msg}" for msg in dict.fromkeys(cell.errors)]
    if notes[False]:
        doc += ["", "Problems:", "", *notes[False]]
    if notes[True]:
        doc += ["", "Not supported (n/a):", "", *notes[True]]
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
    server_cpu, client_cpu = pick_net_cpus(args.net_cpus)

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
            warm = 0 if args.no_warmup else r.warmup_size(n)
            worker_args = ["--row", r.name, "--n", str(n), "--warmup", str(warm)]
            if r.client and client_cpu is not None:
                worker_args += ["--client-cpu", str(client_cpu)]
            for lp in order:
                cell = cells[r.name][lp]
                prefix = f"[{rnd + 1}/{rounds}] {r.name:<18} {lp:<10}"
                if cell.status != "ok":
                    # An unsupported feature or a failure does not go away in the next round.
                    log(f"{prefix} skipped ({cell.status})")
                    continue
                rc, out, err = run_worker(
                    python, ["--loop", lp, *worker_args], server_cpu if r.client else cpu, args.timeout
                )
                try:
                    if rc == EXIT_UNSUPPORTED:
                        cell.status = "n/a"
                        cell.errors.append(last_line(err) or "not supported")
                        log(f"{prefix} n/a: {last_line(err)}")
                        continue
                    if rc != 0:
                        raise RuntimeError(last_line(err) or f"exit status {rc}")
                    data = json.loads(last_line(out))
                    cell.samples.append(float(data["ops_per_s"]))
                    cpu_rate = ""
                    if r.cpu_unit and data.get("ops_per_cpu_s"):
                        cell.cpu_samples.append(float(data["ops_per_cpu_s"]))
                        cpu_rate = f", {fmt_rate(data['ops_per_cpu_s'])} {r.cpu_unit}"
                    if "client_busy" in data:
                        cell.client_busy.append(float(data["client_busy"]))
                    if data.get("instructions_per_op"):
                        cell.instr_samples.append(float(data["instructions_per_op"]))
                    if data.get("user_cycles_per_op"):
                        cell.user_cycle_samples.append(float(data["user_cycles_per_op"]))
                    if data.get("kernel_cycles_per_op"):
                        cell.kernel_cycle_samples.append(float(data["kernel_cycles_per_op"]))
                    if "close_error" in data:
                        cell.errors.append(f"loop close failed: {data['close_error']}")
                    rate = fmt_rate(data["ops_per_s"])
                    log(f"{prefix} {rate:>7} {r.unit}{cpu_rate}  ({data['seconds']:.3f} s)")
                except (RuntimeError, ValueError, KeyError) as exc:
                    cell.status = "error"
                    cell.errors.append(str(exc))
                    log(f"{prefix} error: {exc}")

    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": cpu_model(),
        "cpu": cpu if cpu is not None else "none",
        "net_cpus": [c if c is not None else "none" for c in (server_cpu, client_cpu)],
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
                "cpu_unit": r.cpu_unit,
                "loops": {
                    lp: vars(c)
                    | {
                        "median": c.median,
                        "cpu_median": c.cpu_median,
                        "instr_median": c.instr_median,
                        "user_cycle_median": c.user_cycle_median,
                        "kernel_cycle_median": c.kernel_cycle_median,
                    }
                    for lp, c in cells[r.name].items()
                },
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
