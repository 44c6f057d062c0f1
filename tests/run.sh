#!/usr/bin/env bash
# The test command: builds ebbmalloc (build-test/), runs every meson test (unit,
# integration under LD_PRELOAD, tools, bench parsers, hardening), then the sanitizer
# builds, then the aarch64 cross build's tests under qemu-user (tests/arm64.sh, each of
# its tests counted).  Ends with one summary line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
B=${EBB_TEST_BUILD:-build-test}
fail=0
if [ ! -f "$B/build.ninja" ]; then
    meson setup "$B" --buildtype=debugoptimized -Ddebug_checks=true -Dheap_jvm_test=enabled >/dev/null || exit 1
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
if [ -f tests/arm64.sh ]; then
    bash tests/arm64.sh | tee "$B/arm64.out"
    a_passed=$(awk '/^arm64: [0-9]+ passed, [0-9]+ failed$/ {print $2}' "$B/arm64.out" | tail -1)
    a_failed=$(awk '/^arm64: [0-9]+ passed, [0-9]+ failed$/ {print $4}' "$B/arm64.out" | tail -1)
    [ -n "$a_failed" ] || a_failed=1 # no summary: the step itself broke
    passed=$((passed + ${a_passed:-0})) failed=$((failed + a_failed))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
