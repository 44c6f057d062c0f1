#!/usr/bin/env bash
# Builds the fuzz target fuzz/fuzz_ebb.c together with the allocator's sources, so that
# the allocator itself is instrumented for coverage and checked by the sanitizers.
#
#   fuzz/build.sh [libfuzzer|afl|standalone] [OUT_DIR]     (default: libfuzzer build-fuzz)
#
#   libfuzzer   clang -fsanitize=fuzzer,address,undefined, internal checks on
#               (EBB_DEBUG=1)  ->  OUT_DIR/fuzz_ebb
#   afl         afl-clang-fast with AFL++'s ASan+UBSan, the standalone driver
#               ->  OUT_DIR/fuzz_ebb_afl  (run: afl-fuzz ... -- OUT_DIR/fuzz_ebb_afl @@)
#   standalone  clang or gcc with ASan+UBSan and the standalone driver (replay files,
#               seeded random inputs)  ->  OUT_DIR/fuzz_ebb_replay
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-libfuzzer}
out=${2:-build-fuzz}
mkdir -p "$out"
# The flags alloc/meson.build gives the allocator (static library flavour).
alloc_flags=(-std=gnu11 -fvisibility=hidden -ftls-model=initial-exec -fno-builtin-malloc
             -fno-builtin-free -DEBB_OVERRIDE=0 -DEBB_DEBUG=1 -Iinclude -Ialloc -Ilib/procfs)
san=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
# lib/procfs reads /proc for the diagnostics (its cgroup rules come from alloc/cgroup.c).
srcs=(alloc/*.c lib/procfs/*.c fuzz/fuzz_ebb.c)
case "$mode" in
libfuzzer)
    clang -g -O1 -fsanitize=fuzzer "${san[@]}" "${alloc_flags[@]}" "${srcs[@]}" \
        -o "$out/fuzz_ebb" -lpthread
    echo "built $out/fuzz_ebb" ;;
afl)
    AFL_USE_ASAN=1 AFL_USE_UBSAN=1 afl-clang-fast -g -O1 "${alloc_flags[@]}" -DFUZZ_STANDALONE \
        "${srcs[@]}" -o "$out/fuzz_ebb_afl" -lpthread
    echo "built $out/fuzz_ebb_afl" ;;
standalone)
    cc=$(command -v clang || command -v gcc)
    "$cc" -g -O1 "${san[@]}" "${alloc_flags[@]}" -DFUZZ_STANDALONE "${srcs[@]}" \
        -o "$out/fuzz_ebb_replay" -lpthread
    echo "built $out/fuzz_ebb_replay" ;;
*)
    echo "usage: fuzz/build.sh [libfuzzer|afl|standalone] [OUT_DIR]" >&2
    exit 2 ;;
esac
