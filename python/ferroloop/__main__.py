"""``python -m ferroloop script.py [args...]`` / ``python -m ferroloop -m module [args...]``.

Runs an unchanged asyncio program with ferroloop installed as the event loop policy, so
``asyncio.run``, ``asyncio.Runner`` and ``IsolatedAsyncioTestCase`` inside it all get ferroloop.
"""

from __future__ import annotations

import os
import runpy
import sys

import ferroloop

USAGE = "usage: python -m ferroloop script.py [args...] | -m module [args...]"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    ferroloop.install()
    if argv[0] == "-m":
        if len(argv) < 2:
            print(USAGE, file=sys.stderr)
            return 2
        sys.argv = argv[1:]
        sys.path.insert(0, os.getcwd())
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return 0
    script = argv[0]
    sys.argv = argv
    # As `python script.py` does: the script's directory comes first on the import path.
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
