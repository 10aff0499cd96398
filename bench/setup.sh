#!/usr/bin/env bash
# Create bench/.venv with the event loops the benchmark compares, plus the tools of the
# server rows (httptools, wrk, the Rust echo load generator in bench/loadgen).
#
#   bench/setup.sh              full setup (venv, uvloop, rloop, httptools, wrk, loadgen, ferroloop)
#   bench/setup.sh --ferroloop  only rebuild/reinstall ferroloop from the repo root
#   bench/setup.sh --tools      only httptools, wrk and the load generator (venv must exist)
#
# BENCH_PYTHON overrides the interpreter used to create the venv.
# A failing ferroloop build is reported as a warning, not an error: the runner
# then shows "n/a" in the ferroloop column.  A missing tool (wrk, loadgen) is a
# warning too: the rows that need it then show "error".
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

install_wrk() {
    if command -v wrk >/dev/null 2>&1; then
        echo "==> wrk found: $(command -v wrk)"
        return
    fi
    if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" -eq 0 ]]; then
        echo "==> installing wrk with apt-get"
        if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; then
            return
        fi
    fi
    echo "WARNING: wrk is not installed and could not be installed with apt-get (needs root);" >&2
    echo "         the HTTP rows (http_httptools, https_httptools) will show 'error'." >&2
}

build_loadgen() {
    echo "==> building the echo load generator (bench/loadgen, release)"
    if command -v cargo >/dev/null 2>&1 \
        && cargo build --release --locked --quiet --manifest-path "$here/loadgen/Cargo.toml"; then
        echo "loadgen OK: $here/loadgen/target/release/loadgen"
    else
        echo "WARNING: could not build bench/loadgen (needs cargo); the echo rows will show 'error'." >&2
    fi
}

install_tools() {
    echo "==> installing httptools"
    "$venv/bin/python" -m pip install --upgrade httptools
    install_wrk
    command -v openssl >/dev/null 2>&1 \
        || echo "WARNING: no openssl command; the tls rows cannot create their certificates." >&2
    build_loadgen
}

mode=all
case "${1:-}" in
    --ferroloop) mode=ferroloop ;;
    --tools) mode=tools ;;
    "") ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
esac

if [[ $mode != all ]]; then
    [[ -x "$venv/bin/python" ]] || { echo "no $venv yet; run bench/setup.sh first" >&2; exit 1; }
    if [[ $mode == ferroloop ]]; then install_ferroloop; else install_tools; fi
    exit 0
fi

py="$(pick_python)"
echo "==> creating $venv with $py ($("$py" --version 2>&1))"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
echo "==> installing uvloop and rloop"
"$venv/bin/python" -m pip install --upgrade uvloop rloop
install_tools
install_ferroloop
echo "==> done. Run: python bench/run.py"
