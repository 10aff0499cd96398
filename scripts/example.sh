#!/usr/bin/env bash
# Builds ferroloop for one Python (default 3.12) and runs an example program on it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
v="${FERROLOOP_PYTHON:-3.12}"
py="$(ensure_venv "$v")"
exec "$py" -m ferroloop "${1:-$ROOT/examples/hello.py}" "${@:2}"
