#!/usr/bin/env bash
# The test command: builds ebbmalloc (build-test/), runs every meson test (unit,
# integration under LD_PRELOAD, tools, bench parsers, hardening), then the sanitizer
# builds.  Ends with one summary line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
B=${EBB_TEST_BUILD:-build-test}
fail=0
if [ ! -f "$B/build.ninja" ]; then
    meson setup "$B" --buildtype=debugoptimized -Ddebug_checks=true >/dev/null || exit 1
fi
ninja -C "$B" || exit 1
meson test -C "$B" --print-errorlogs --num-processes 2 | tee "$B/meson-test.out"
mt=${PIPESTATUS[0]}
passed=$(awk '/^Ok:/ {print $2}' "$B/meson-test.out")
failed=$(awk '/^Fail:/ {print $2}' "$B/meson-test.out")
timeouts=$(awk '/^Timeout:/ {print $2}' "$B/meson-test.out")
passed=${passed:-0} failed=$(( ${failed:-0} + ${timeouts:-0} ))
[ "$mt" -eq 0 ] || [ "$failed" -gt 0 ] || failed=1
if [ -x tests/sanitize.sh ] || [ -f tests/sanitize.sh ]; then
    if bash tests/sanitize.sh; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
