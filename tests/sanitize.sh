#!/usr/bin/env bash
# Sanitizer builds of the tests that use the ebb_ API (static library, so the sanitizer's
# own malloc stays in place):
#   build-asan/  AddressSanitizer + UndefinedBehaviorSanitizer: API conformance, size
#                classes, the randomized model, the many-threads test, the fuzz replay,
#                the heap profile's sampler and table, the draining of idle caches, the
#                thread caches' verifier
#   build-tsan/  ThreadSanitizer: the multi-threaded ones (model, many threads, the
#                draining of idle caches, whose handshake tells TSan what it relies on,
#                the heap profile's, the thread caches' verifier while other owners run)
# Both build the allocator with its internal checks on (-Ddebug_checks=true).  Every
# report stops its test (halt_on_error / -fno-sanitize-recover), so the script exits
# non-zero on any report, and also on any failing test.
#
#   tests/sanitize.sh [asan|tsan|tsan-strict|fuzz]...   (default: asan tsan fuzz)
#   tsan-strict: without tests/hardening/tsan-pending.supp, the known races in alloc/
#   fuzz: 20 s of the libFuzzer target (fuzz/run.sh; ASan+UBSan), when clang has libFuzzer
#   SANITIZE_CC=gcc tests/sanitize.sh     (default: clang when installed, else gcc)
# Not here: tests that replace malloc (libebbmalloc.so), the RLIMIT_AS test (the
# sanitizers reserve terabytes of address space), and RSS bounds (the sanitizers' own
# memory); the normal `meson test` run covers those.
set -uo pipefail
cd "$(dirname "$0")/.."

cc=${SANITIZE_CC:-$(command -v clang >/dev/null && echo clang || echo gcc)}
jobs=$(nproc 2>/dev/null || echo 2)
status=0

# setup DIR SANITIZERS: configure once (reconfigure when the compiler changed).
setup() {
    local dir=$1 san=$2
    if [ -f "$dir/build.ninja" ] && grep -q "^$cc\$" "$dir/.sanitize-cc" 2>/dev/null; then
        return 0
    fi
    rm -rf "$dir"
    local out
    if ! out=$(CC=$cc meson setup "$dir" -Dbench=false -Dtools=false -Ddebug_checks=true \
        --buildtype=debugoptimized -Db_sanitize="$san" -Db_lundef=false \
        -Dc_args="-fno-sanitize-recover=all -fno-omit-frame-pointer" 2>&1); then
        echo "$out"
        return 1
    fi
    echo "$cc" >"$dir/.sanitize-cc"
}

# run_suite DIR NAME TARGETS... -- TESTS...: build the targets, run the named meson tests.
run_suite() {
    local dir=$1 name=$2
    shift 2
    local targets=() tests=()
    while [ "$1" != "--" ]; do targets+=("$1"); shift; done
    shift
    tests=("$@")
    echo "== $name ($cc): ${tests[*]}"
    if ! ninja -C "$dir" "${targets[@]}" >"$dir/sanitize-build.log" 2>&1; then
        tail -30 "$dir/sanitize-build.log"
        echo "== $name: build FAILED"
        return 1
    fi
    if meson test -C "$dir" --no-rebuild --print-errorlogs --num-processes "$jobs" \
        --timeout-multiplier 3 "${tests[@]}" >"$dir/sanitize-test.log" 2>&1; then
        grep -E '^ *[0-9]+/[0-9]+ ' "$dir/sanitize-test.log"
        echo "== $name: no reports"
        return 0
    fi
    grep -E '^ *[0-9]+/[0-9]+ ' "$dir/sanitize-test.log"
    # The first report of each failing test, to see what it was without the log.
    grep -E -A12 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: ThreadSanitizer' \
        "$dir/sanitize-test.log" | head -80
    echo "== $name: FAILED (full log: $dir/sanitize-test.log)"
    return 1
}

asan() {
    setup build-asan address,undefined || return 1
    # Smaller runs than the default ones: the sanitizers make each operation slower.
    EBB_MODEL_OPS=300000 EBB_STRESS_THREADS=200 EBB_STRESS_LIFETIMES=2000 \
    EBB_STRESS_FORKERS=16 \
    ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    run_suite build-asan "ASan+UBSan" \
        tests/test_api_ebb tests/test_size_class tests/hardening/model \
        tests/hardening/test_stress_ebb tests/hardening/fuzz_replay tests/test_idle_drain \
        tests/test_profile_unit tests/test_tc_verify -- api_ebb size_class model stress_ebb fuzz_replay \
        idle_drain profile_unit tc_verify
}

# tsan [strict]: known races in alloc/ (tests/hardening/tsan-pending.supp) are
# suppressed unless strict.
tsan() {
    setup build-tsan thread || return 1
    local opts=halt_on_error=1:abort_on_error=1:second_deadlock_stack=1:die_after_fork=0
    local name="TSan"
    if [ "${1:-}" = strict ]; then
        name="TSan, strict"
    else
        opts+=:suppressions=$PWD/tests/hardening/tsan-pending.supp
    fi
    EBB_MODEL_OPS=150000 EBB_STRESS_THREADS=100 EBB_STRESS_LIFETIMES=1000 \
    EBB_STRESS_FORKERS=8 TSAN_OPTIONS=$opts \
    run_suite build-tsan "$name" \
        tests/hardening/model tests/hardening/test_stress_ebb tests/test_idle_drain \
        tests/test_profile_unit tests/test_tc_verify -- model stress_ebb idle_drain profile_unit tc_verify
}

fuzz() {
    echo "== libFuzzer smoke run (20 s)"
    if ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' |
        clang -x c -fsanitize=fuzzer -o /dev/null - >/dev/null 2>&1; then
        echo "== libFuzzer: clang with -fsanitize=fuzzer not available, skipped"
        return 0
    fi
    local log=build-fuzz/smoke.log
    mkdir -p build-fuzz
    if bash fuzz/run.sh "${EBB_FUZZ_SECONDS:-20}" >"$log" 2>&1; then
        grep -E '^stat::(number_of_executed_units|new_units_added)' "$log"
        echo "== libFuzzer: no findings"
        return 0
    fi
    grep -E -A20 'fuzz_ebb:|ERROR:|runtime error' "$log" | head -40
    echo "== libFuzzer: FAILED (log: $log)"
    return 1
}

which=("$@")
[ ${#which[@]} -eq 0 ] && which=(asan tsan fuzz)
for w in "${which[@]}"; do
    case "$w" in
    asan) asan || status=1 ;;
    tsan) tsan || status=1 ;;
    tsan-strict) tsan strict || status=1 ;;
    fuzz) fuzz || status=1 ;;
    *) echo "usage: tests/sanitize.sh [asan|tsan|tsan-strict|fuzz]..." >&2; exit 2 ;;
    esac
done
exit $status
