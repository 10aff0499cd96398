#!/usr/bin/env bash
# Runs ferroloop's side of the test suite under valgrind's memcheck, to catch invalid reads and
# writes, uses of uninitialised memory and bad frees in the extension's unsafe code: the
# conformance, native and library tests (the ferroloop parameter only) and CPython's
# test_asyncio modules that drive the native transports, TLS, subprocesses and tasks, every
# Python process traced. Python's own allocator is switched off (PYTHONMALLOC=malloc) so that
# memcheck sees every object.
#
# Under memcheck everything runs 10-50x slower, so tests that wait on timeouts or on system
# calls valgrind does not emulate (pidfd_open) may fail; what this script judges is memcheck's
# error count, summed over every traced process. It exits non-zero if any process reported an
# error, or if a deliberate out-of-bounds read it makes first goes unreported. On an interpreter
# that reports errors of its own on a plain asyncio program, it counts invalid reads, writes and
# frees only (not uses of uninitialised values), and says so.
# Needs valgrind (Debian: `apt-get install valgrind`); not part of `make test`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
v="${FERROLOOP_PYTHON:-3.12}"
py="$(ensure_venv "$v")"
out="$(mktemp -d "${TMPDIR:-/tmp}/ferroloop-memcheck-XXXXXX")"
echo "memcheck logs: $out"

checks=()  # extra memcheck options, set below for interpreters that report errors of their own

vg() {  # vg NAME CMD...: run CMD under memcheck, one log per process in $out/NAME.<pid>.log
    local name="$1"
    shift
    PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=no --num-callers=40 "${checks[@]}" \
        --trace-children=yes --trace-children-skip='/bin/*,/usr/bin/*,/usr/sbin/*,/usr/lib/*' \
        --log-file="$out/$name.%p.log" "$@" || true
}

errors() {  # errors NAME: the sum of memcheck's error counts over NAME's logs
    cat "$out/$1".*.log | sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' | awk '{s += $1} END {print s + 0}'
}

# The probe: memcheck must report a read past the end of a heap block.
vg probe "$py" -c 'import ctypes; b = ctypes.create_string_buffer(1000); ctypes.string_at(ctypes.addressof(b) + 1000, 16)'
if [ "$(errors probe)" -eq 0 ]; then
    echo "memcheck did not report the probe's out-of-bounds read; its counts mean nothing here" >&2
    exit 2
fi

# The interpreter alone, on the stdlib loop: a build that reports errors here (3.11.7's reports
# hundreds of uses of uninitialised values, in its own code, on any program) would drown the
# count. Then only invalid reads, writes and frees are counted, and the interpreter alone must
# report none of those.
baseline='import asyncio; asyncio.run(asyncio.gather(*(asyncio.sleep(0) for _ in range(100))))'
vg baseline "$py" -c "$baseline"
if [ "$(errors baseline)" -ne 0 ]; then
    checks=(--undef-value-errors=no)
    echo "this interpreter reports $(errors baseline) errors under memcheck on its own;" \
        "counting invalid reads, writes and frees only (--undef-value-errors=no)"
    rm -f "$out"/baseline.*.log
    vg baseline "$py" -c "$baseline"
    if [ "$(errors baseline)" -ne 0 ]; then
        echo "the interpreter alone still reports errors; the counts would mean nothing" >&2
        exit 2
    fi
fi

vg pytest "$py" -m pytest -q -p no:cacheprovider -k ferroloop --timeout=900 tests/conformance tests/native tests/libraries
vg stdlib "$py" tests/stdlib/run_stdlib.py --loop ferroloop --timeout-per-test 900 \
    test_events test_streams test_sock_lowlevel test_server test_buffered_proto test_sendfile \
    test_ssl test_sslproto test_subprocess test_tasks test_taskgroups test_timeouts test_unix_events

total=0
for name in pytest stdlib; do
    n="$(errors "$name")"
    echo "memcheck errors in $name: $n ($(ls "$out/$name".*.log | wc -l) processes)"
    total=$((total + n))
done
if [ "$total" -ne 0 ]; then
    grep -l "ERROR SUMMARY: [1-9]" "$out"/*.log | grep -v "/probe\." || true
    exit 1
fi
echo "no memory errors"
