#!/usr/bin/env bash
# Create bench/.venv with the event loops the benchmark compares.
#
#   bench/setup.sh              full setup (venv, uvloop, rloop, ferroloop)
#   bench/setup.sh --ferroloop  only rebuild/reinstall ferroloop from the repo root
#
# BENCH_PYTHON overrides the interpreter used to create the venv.
# A failing ferroloop build is reported as a warning, not an error: the runner
# then shows "n/a" in the ferroloop column.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="$here/.venv"

pick_python() {
    if [[ -n "${BENCH_PYTHON:-}" ]]; then
        echo "$BENCH_PYTHON"
    elif [[ -x /root/.pyenv/versions/3.12.1/bin/python ]]; then
        echo /root/.pyenv/versions/3.12.1/bin/python
    elif command -v python3.12 >/dev/null 2>&1; then
        command -v python3.12
    else
        command -v python3
    fi
}

install_ferroloop() {
    echo "==> building and installing ferroloop from $root (release build, may take a while)"
    if "$venv/bin/python" -m pip install --no-deps --force-reinstall "$root"; then
        "$venv/bin/python" -c 'import ferroloop; print("ferroloop OK:", ferroloop.__file__)'
    else
        echo "WARNING: ferroloop failed to build/install; the benchmark will show it as n/a." >&2
        echo "         Re-run 'bench/setup.sh --ferroloop' once the crate compiles." >&2
    fi
}

only_ferroloop=0
case "${1:-}" in
    --ferroloop) only_ferroloop=1 ;;
    "") ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
esac

if [[ $only_ferroloop -eq 1 ]]; then
    [[ -x "$venv/bin/python" ]] || { echo "no $venv yet; run bench/setup.sh first" >&2; exit 1; }
    install_ferroloop
    exit 0
fi

py="$(pick_python)"
echo "==> creating $venv with $py ($("$py" --version 2>&1))"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
echo "==> installing uvloop and rloop"
"$venv/bin/python" -m pip install --upgrade uvloop rloop
install_ferroloop
echo "==> done. Run: python bench/run.py"
