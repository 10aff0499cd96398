"""Run one benchmark row on one event loop and print the result as JSON.

Invoked by run.py in a fresh, CPU-pinned interpreter for every measurement:

    python bench/worker.py --loop uvloop --row gather_tasks --n 100000
    python bench/worker.py --loop uvloop --probe
    python bench/worker.py --loop uvloop --row echo_proto_1k --n 2000 --warmup 500 --client-cpu 1

Exit status: 0 ok, 3 loop not installed, 4 the loop lacks a feature the row needs
(NotImplementedError), 1 anything else (traceback on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import traceback

import rows
from loops import loop_factory, loop_version

EXIT_NOT_INSTALLED = 3
EXIT_UNSUPPORTED = 4


async def _probe_coro() -> int:
    await asyncio.sleep(0)
    return 42


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loop", required=True)
    parser.add_argument("--row")
    parser.add_argument("--n", type=int)
    parser.add_argument("--warmup", type=int, default=0, help="problem size of an untimed warm-up run")
    parser.add_argument("--probe", action="store_true", help="only check that the loop works")
    parser.add_argument("--client-cpu", type=int, default=None, help="CPU for load-generator processes")
    args = parser.parse_args()

    try:
        factory = loop_factory(args.loop)
    except ImportError as exc:
        print(f"{args.loop} not installed: {exc}", file=sys.stderr)
        return EXIT_NOT_INSTALLED

    if args.probe:
        with asyncio.Runner(loop_factory=factory) as runner:
            if runner.run(_probe_coro()) != 42:
                raise AssertionError("probe coroutine returned a wrong value")
        info = {"loop": args.loop, "version": loop_version(args.loop), "python": sys.version.split()[0]}
        print(json.dumps(info))
        return 0

    row = rows.load_all()[args.row]
    n = args.n if args.n is not None else row.n
    rows.CONTEXT.client_cpu = args.client_cpu
    runner = asyncio.Runner(loop_factory=factory)
    try:
        if row.self_warmup:
            rows.CONTEXT.warmup = args.warmup
        elif args.warmup:
            runner.run(row.func(args.warmup))
        gc.collect()
        result = runner.run(row.func(n))
    except NotImplementedError as exc:
        traceback.print_exc()
        where = traceback.extract_tb(exc.__traceback__)[-1]
        detail = str(exc) or f"raised in {where.name}() at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}"
        print(f"not supported by {args.loop}: NotImplementedError: {detail}", file=sys.stderr)
        return EXIT_UNSUPPORTED
    close_error = None
    try:
        runner.close()
    except Exception as exc:  # the measurement stands, but report the problem
        close_error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    out = {"ops": result.ops, "seconds": result.seconds, "ops_per_s": result.ops / result.seconds}
    if result.cpu_seconds is not None:
        out["cpu_seconds"] = result.cpu_seconds
        out["ops_per_cpu_s"] = result.ops / result.cpu_seconds if result.cpu_seconds > 0 else None
    if result.client_busy is not None:
        out["client_busy"] = round(result.client_busy, 3)
    if result.instructions is not None:
        out["instructions_per_op"] = result.instructions / result.ops
    if result.user_cycles is not None:
        out["user_cycles_per_op"] = result.user_cycles / result.ops
    if result.kernel_cycles is not None:
        out["kernel_cycles_per_op"] = result.kernel_cycles / result.ops
    if close_error:
        out["close_error"] = close_error
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
