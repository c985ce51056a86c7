#!/usr/bin/env bash
# Runs every test (unit, crafted edge cases, real dumps with real gdb), after making sure
# Deno, the Debian tools and the fixtures are there. Ends with "tests: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${KDUMP_SKIP_SETUP:-}" = 1 ] || bash tests/setup.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# A gdb that hits an internal error in a test answers "create a core file?" with yes (batch
# mode): not into the working tree.
ulimit -c 0
set +e
deno test --allow-read --allow-write --allow-run --allow-net --allow-env --allow-ffi "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
summary=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(ok|FAILED) \| [0-9]+ passed' | tail -n 1)
passed=$(echo "$summary" | sed -E 's/.*\| ([0-9]+) passed.*/\1/')
failed=$(echo "$summary" | sed -E 's/.*\| ([0-9]+) failed.*/\1/')
echo "tests: ${passed:-0} passed, ${failed:-0} failed"
exit "$status"
