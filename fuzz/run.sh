#!/usr/bin/env bash
# Runs the libFuzzer target for a while, starting from the seed corpus fuzz/corpus.pack.
#
#   fuzz/run.sh [SECONDS] [JOBS]        (default: 20 seconds, 1 job)
#
# New interesting inputs go to build-fuzz/corpus (not into the repository; see
# fuzz/README.md to fold them into fuzz/corpus.pack).  A finding leaves
# build-fuzz/crash-* (replay: build-fuzz/fuzz_ebb build-fuzz/crash-...) and makes the
# script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
jobs=${2:-1}
out=build-fuzz
stale() { [ ! -x "$1" ] || [ -n "$(find alloc include fuzz/fuzz_ebb.c -newer "$1" -name '*.[ch]' | head -1)" ]; }
if stale "$out/fuzz_ebb"; then bash fuzz/build.sh libfuzzer "$out" >/dev/null; fi
if stale "$out/fuzz_ebb_replay"; then bash fuzz/build.sh standalone "$out" >/dev/null; fi
mkdir -p "$out/corpus"
if [ ! -d "$out/seed" ] || [ fuzz/corpus.pack -nt "$out/seed" ]; then
    rm -rf "$out/seed"
    "$out/fuzz_ebb_replay" --unpack fuzz/corpus.pack "$out/seed" >/dev/null
fi
args=(-max_total_time="$secs" -max_len=2048 -timeout=30 -rss_limit_mb=4096
      -artifact_prefix="$out/" -print_final_stats=1)
[ "$jobs" -gt 1 ] && args+=(-fork="$jobs" -ignore_crashes=0)
ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$out/fuzz_ebb" "${args[@]}" "$out/corpus" "$out/seed"
