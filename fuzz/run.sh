#!/usr/bin/env bash
# Runs the libFuzzer target for a while, starting from the seed corpus fuzz/corpus.
#
#   fuzz/run.sh [SECONDS] [JOBS]        (default: 20 seconds, 1 job)
#
# New interesting inputs go to build-fuzz/corpus (not to the repository; merge them
# into fuzz/corpus with fuzz/run.sh's -merge recipe in fuzz/README.md).  A crash leaves
# build-fuzz/crash-* (replay: build-fuzz/fuzz_ebb build-fuzz/crash-...).  Exits non-zero
# on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
jobs=${2:-1}
out=build-fuzz
if [ ! -x "$out/fuzz_ebb" ] || [ -n "$(find alloc fuzz/fuzz_ebb.c include -newer "$out/fuzz_ebb" -name '*.[ch]' | head -1)" ]; then
    bash fuzz/build.sh libfuzzer "$out" >/dev/null
fi
mkdir -p "$out/corpus"
args=(-max_total_time="$secs" -max_len=2048 -timeout=30 -rss_limit_mb=4096
      -artifact_prefix="$out/" -print_final_stats=1)
if [ "$jobs" -gt 1 ]; then
    args+=(-fork="$jobs" -ignore_crashes=0)
fi
ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$out/fuzz_ebb" "${args[@]}" "$out/corpus" fuzz/corpus
