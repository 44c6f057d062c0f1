#!/usr/bin/env bash
# The arm64 step of the test command: cross-builds ebbmalloc and its tests for aarch64
# (build-arm64/, Debian's gcc-aarch64-linux-gnu, cross/aarch64-linux-gnu.ini) and runs
# the unit, threads, model and stress tests under qemu-user.  .ci/deps installs the cross
# compiler, qemu-user and cmocka for arm64.  Ends with "arm64: N passed, N failed".
#
# The sizes are smaller than in the native run (emulation is 10 to 50 times slower):
# the same code paths, fewer operations, so that the step takes a few minutes.  The
# library is what is cross-built; the tools and the benchmarks are not.
#
# Left out under qemu, each because qemu-user cannot do what the test relies on (each
# shown with a few lines of C that do not use ebbmalloc at all):
#   oom             qemu-user does not apply RLIMIT_AS to the program (setrlimit returns 0
#                   and changes nothing: the limit would bind the emulator's own memory),
#                   so nothing runs out.
#   huge_alignment  a guest mmap that the kernel refuses leaves the address space qemu
#                   reserved for it mapped (a refused mmap of 128 GiB grows VmSize by
#                   128 GiB), and VmSize is what that test measures.
#   misuse          runs its helper as a second program; without binfmt_misc (CI has
#                   none) the kernel cannot start an aarch64 program.
#   background      its second case forks from a threaded parent, and the child starts
#                   ebbmalloc's release thread anew: qemu-user 7.2 aborts every child of a
#                   multi-threaded parent that creates a thread (assertion failed in
#                   qemu_plugin_vcpu_init_hook).  background_off runs.
#   idle_drain      not a qemu fault, a rate: its race cases require more than 50 drains
#                   (and 300 signals) within two seconds of wall time; under emulation on a
#                   loaded machine it counted 22 and 24 in two runs of five (0 damaged
#                   blocks in every run; the /proc proof it relies on reads the host
#                   thread's syscall and schedstat files, which qemu-user passes through
#                   and which are right for it).  Natively it runs in the main suite.
#   preload         preloads the library into the build machine's programs (python3,
#                   git, a JVM), which are not aarch64 programs.
# Run with a setting changed, for the same reasons:
#   threads, stress_*  EBB_BACKGROUND=0: their fork tests' children would start the release
#                   thread (see background).  The release thread runs under qemu in the
#                   other tests (api, model, release start it as usual).
#   profile*        EBB_BACKGROUND=0 likewise: they fork from threaded parents (the heap
#                   profile's own table in the child, the stress with every request
#                   sampled).  EBB_TEST_QEMU=1: the thread whose stack the profile
#                   test walks runs on a stack in the program's data, because qemu-user
#                   7.2 leaves out of the guest's /proc/self/maps a guest mapping that
#                   the kernel merged with one of qemu's own: after the test's big heap
#                   a default thread stack mapped at 0x7f.. showed its guard page in the
#                   guest's maps and not the stack above it, in 2 runs of 3.
#   stress_*        EBB_STRESS_RSS=0, the bound on the resident set after thousands of
#                   thread lifetimes is not checked: qemu-user keeps about 320 KiB of its
#                   own for every thread that ever ran (5000 thread lifetimes of a plain
#                   glibc program: 1.6 GiB resident under qemu, 1.7 MiB natively).  Its other
#                   checks (no cache left behind, records recycled, nothing in use) run.
#   fork tests      EBB_TEST_CHILD_S=60: a fork child that has not ended after that
#                   long counts as deadlocked (20 s natively); on a loaded 2-CPU machine
#                   running two emulated tests at once one child of a threaded parent
#                   once took longer than 20 s.  A child that waits for a lock of qemu's
#                   own (qemu-user 7.2 does not hold its locks across fork; the futex word
#                   lies in its libglib) is forked again, a few times at most: see
#                   tests/ebb_test_fork.h.
set -uo pipefail
cd "$(dirname "$0")/.."
B=${EBB_ARM64_BUILD:-build-arm64}
for tool in aarch64-linux-gnu-gcc qemu-aarch64; do
    if ! command -v "$tool" >/dev/null; then
        echo "arm64: $tool is missing (bash .ci/deps installs it)"
        echo "arm64: 0 passed, 1 failed"
        exit 1
    fi
done
if [ ! -f "$B/build.ninja" ]; then
    mkdir -p "$B"
    if ! meson setup "$B" --cross-file cross/aarch64-linux-gnu.ini --buildtype=debugoptimized \
        -Ddebug_checks=true -Dbench=false -Dtools=false >"$B/arm64-setup.log" 2>&1; then
        cat "$B/arm64-setup.log"
        echo "arm64: 0 passed, 1 failed"
        exit 1
    fi
fi
if ! ninja -C "$B" >"$B/arm64-build.log" 2>&1; then
    tail -40 "$B/arm64-build.log"
    echo "arm64: 0 passed, 1 failed"
    exit 1
fi

passed=0 failed=0
# run NAME TESTS...: one meson test run (its own log), counted.
run() {
    local name=$1
    shift
    local out="$B/arm64-$name.out"
    meson test -C "$B" --no-rebuild --print-errorlogs --num-processes 2 \
        --timeout-multiplier 3 "$@" >"$out" 2>&1
    local rc=$?
    grep -E '^ *[0-9]+/[0-9]+ ' "$out"
    local ok fl to
    ok=$(awk '/^Ok:/ {print $2}' "$out")
    fl=$(awk '/^Fail:/ {print $2}' "$out")
    to=$(awk '/^Timeout:/ {print $2}' "$out")
    ok=${ok:-0} fl=$(( ${fl:-0} + ${to:-0} ))
    [ "$rc" -eq 0 ] || [ "$fl" -gt 0 ] || fl=1
    if [ "$fl" -gt 0 ]; then
        grep -E -B2 -A20 '^-+ stderr -+$|ERROR|FAILED' "$out" | head -80
        echo "arm64: $name: failures (full log: $out)"
    fi
    passed=$((passed + ok)) failed=$((failed + fl))
}

start=$(date +%s)
export EBB_MODEL_OPS=${EBB_MODEL_OPS:-200000}
export EBB_THREADS_OPS=${EBB_THREADS_OPS:-30000} EBB_THREADS_LIFETIMES=${EBB_THREADS_LIFETIMES:-400}
export EBB_THREADS_FORKS=${EBB_THREADS_FORKS:-30} EBB_TEST_CHILD_S=${EBB_TEST_CHILD_S:-60}
export EBB_STRESS_THREADS=${EBB_STRESS_THREADS:-120} EBB_STRESS_LIFETIMES=${EBB_STRESS_LIFETIMES:-1200}
export EBB_STRESS_FORKERS=${EBB_STRESS_FORKERS:-10} EBB_STRESS_RSS=0
EBB_BACKGROUND=0 run threads threads stress_ebb stress_libc_names
EBB_BACKGROUND=0 EBB_TEST_QEMU=1 run profile profile_unit profile profile_every profile_off
run unit size_class api_ebb api_libc_names release init_fork pinned soft_limit kernel_page static_api compat compat_huge tc_room \
    model fuzz_replay background_off
echo "arm64: $(( $(date +%s) - start )) s under qemu"
echo "arm64: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
