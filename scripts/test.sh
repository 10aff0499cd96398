#!/usr/bin/env bash
# The whole test suite, on every supported Python: lints, the conformance suite (each test on the
# stdlib loop and on ferroloop) with and without PYTHONASYNCIODEBUG=1, and CPython's own
# test_asyncio modules run against ferroloop. Exits non-zero on any failure.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

failed=()
step() {  # step NAME CMD...: run, remember failures, keep going so one run shows everything.
    local name="$1"
    shift
    echo
    echo "=== $name"
    if ! "$@"; then
        failed+=("$name")
    fi
}

step "cargo fmt" cargo fmt --check
step "cargo clippy" cargo clippy --release --all-targets -q -- -D warnings

first=1
for v in $VERSIONS; do
    echo
    echo "=== build for Python $v"
    if ! py="$(ensure_venv "$v")"; then
        failed+=("build $v")
        continue
    fi
    if [ "$first" = 1 ]; then
        step "ruff check" "$(dirname "$py")/ruff" check python tests bench examples
        step "ruff format" "$(dirname "$py")/ruff" format --check python tests bench examples
        first=0
    fi
    step "pytest $v" "$py" -m pytest -q -p no:cacheprovider
    step "pytest $v (debug)" env PYTHONASYNCIODEBUG=1 "$py" -m pytest -q -p no:cacheprovider
    step "CPython test_asyncio on ferroloop, $v" "$py" tests/stdlib/run_stdlib.py --loop ferroloop -j 2
    step "CPython test_asyncio on ferroloop, $v (debug)" env PYTHONASYNCIODEBUG=1 \
        "$py" tests/stdlib/run_stdlib.py --loop ferroloop -j 2
done

echo
if [ ${#failed[@]} -ne 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all test steps passed"
