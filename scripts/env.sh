#!/usr/bin/env bash
# Shared by the scripts: where each supported Python is, and a build+install of ferroloop into a
# per-version virtualenv (.venv-3.X) with the test tools. Nothing needs to be installed by hand.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSIONS="${FERROLOOP_PYTHONS:-3.11 3.12 3.13}"

# The interpreter for a version like 3.12: pyenv's install if there is one, else pythonX.Y on PATH.
python_for() {
    local v="$1" root="${PYENV_ROOT:-$HOME/.pyenv}" cand
    for cand in $(ls -d "$root"/versions/"$v".*/bin/python 2>/dev/null | sort -V -r); do
        [ -x "$cand" ] && { echo "$cand"; return 0; }
    done
    cand="$(command -v "python$v" 2>/dev/null || true)"
    if [ -n "$cand" ] && "$cand" -c 'import sys' >/dev/null 2>&1; then
        echo "$cand"
        return 0
    fi
    echo "no Python $v found (looked in $root/versions and PATH)" >&2
    return 1
}

# Creates .venv-X.Y if needed, installs the test tools (and the libraries and test-CA maker the
# library and TLS tests use) and (re)builds ferroloop into it.
# Prints the venv's python.
ensure_venv() {
    local v="$1" venv="$ROOT/.venv-$1" py
    if [ ! -x "$venv/bin/python" ]; then
        py="$(python_for "$v")"
        "$py" -m venv "$venv" >&2
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -U pip >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" pytest pytest-timeout ruff \
        aiohttp uvicorn websockets httpx anyio asyncpg redis trustme >&2
    # Build in place (cargo's target/ is shared across versions, so rebuilds are incremental).
    (cd "$ROOT" && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" "$venv/bin/maturin" develop --release -q >&2)
    echo "$venv/bin/python"
}
