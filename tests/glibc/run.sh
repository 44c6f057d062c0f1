#!/usr/bin/env bash
# glibc 2.36's own tests of the public malloc API, run under LD_PRELOAD=libebbmalloc.so.
#
# The tests and their support/ harness are extracted at test time from Debian's
# glibc-source tarball into WORK, built against the system's glibc (nothing of glibc is
# kept in this repository), and each is run under the preload with glibc's own test
# driver (which forks the test and kills it after its timeout).  Every program is linked
# with preload_check.c, which stops it before its test unless malloc really is
# ebbmalloc's.  Which tests run, and why the others do not: README.md here.
#
# usage: run.sh LIB WORK [TEST...]     (TEST: a name such as tst-mallocfork2; default all)
# Prints one line per test and "glibc malloc tests: N passed, N failed"; exits 1 if any
# failed.  EBB_GLIBC_TARBALL overrides the tarball, EBB_GLIBC_JOBS the parallelism (2).
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: $0 LIB WORK [TEST...]"; exit 2; }
LIB=$(readlink -f "$1")
WORK=$(mkdir -p "$2" && cd "$2" && pwd)
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
TARBALL=${EBB_GLIBC_TARBALL:-/usr/src/glibc/glibc-2.36.tar.xz}
JOBS=${EBB_GLIBC_JOBS:-2}
V=glibc-2.36

# The applicable tests (README.md lists the others with their reasons).
ALL=(mallocbug tst-malloc tst-calloc tst-valloc tst-realloc tst-reallocarray
     tst-posix_memalign tst-memalign tst-pvalloc tst-pvalloc-fortify tst-mallocalign1
     tst-malloc-check tst-malloc-too-large tst-free-errno tst-mallopt tst-mallinfo2
     tst-malloc_info tst-trim1 tst-obstack tst-tcfree1 tst-tcfree2
     tst-interpose-nothread tst-interpose-thread
     tst-mallocfork tst-mallocfork2 tst-mallocfork3 tst-malloc-fork-deadlock
     tst-malloc-thread-exit tst-malloc-thread-fail tst-malloc-tcache-leak
     tst-malloc-stats-cancellation)
if [ $# -gt 0 ]; then TESTS=("$@"); else TESTS=("${ALL[@]}"); fi

[ -f "$LIB" ] || { echo "no library at $LIB"; exit 1; }
if [ ! -f "$TARBALL" ]; then
    echo "no $TARBALL: install Debian's glibc-source (bash .ci/deps)"
    exit 1
fi
if [ "$(ldd --version 2>&1 | head -1 | grep -o '[0-9.]*$')" != "2.36" ]; then
    echo "note: the system's glibc is not 2.36; the 2.36 tests are built against it anyway"
fi

SRC=$WORK/$V
BIN=$WORK/bin
CFLAGS=(-std=gnu11 -O2 -g -w -pthread -D_GNU_SOURCE -DTEST_NO_MALLOPT -DTIMEOUTFACTOR=1
        -include limits.h -I"$SRC" -I"$SRC/support" -I"$SRC/include" -I"$SRC/sysdeps/generic")

# ---------------------------------------------------------------- build (cached)
# The build depends on the tarball, this script and the check only: the programs are
# linked against the system's libc, and ebbmalloc comes in at run time.
stamp=$( { stat -c '%s %Y' "$TARBALL"; cat "$0" "$HERE/preload_check.c"; } | sha256sum | cut -c1-16)
build() {
    rm -rf "$SRC" "$BIN" "$WORK/obj" "$WORK/stamp"
    mkdir -p "$BIN" "$WORK/obj"
    # Only the headers of glibc's include/ that the tests name (the rest of that directory
    # wraps the public headers for glibc's own build).
    tar -xJf "$TARBALL" -C "$WORK" --wildcards "$V/malloc/*" "$V/support/*" "$V/test-skeleton.c" \
        "$V/include/libc-diag.h" "$V/include/array_length.h" "$V/include/intprops.h" \
        "$V/include/libc-pointer-arith.h" "$V/sysdeps/generic/malloc-size.h" \
        "$V/sysdeps/generic/malloc-alignment.h" || return 1
    # libsupport: the routines of support/Makefile.  Those that need glibc's internal
    # headers do not compile here; no test run below uses them (a link error would say so).
    awk '/^libsupport-routines *=/{on=1} on{print; if ($0 !~ /\\$/) on=0}' "$SRC/support/Makefile" |
        tr -d '\\' | tr -s ' \t' '\n' | grep -v -e '^libsupport-routines$' -e '^=$' -e '^$' |
        while read -r r; do [ -f "$SRC/support/$r.c" ] && echo "$r"; done > "$WORK/obj/routines"
    xargs -P "$JOBS" -I{} sh -c 'gcc "$@" -c "'"$SRC"'/support/{}.c" -o "'"$WORK"'/obj/{}.o" 2>/dev/null || true' \
        sh "${CFLAGS[@]}" < "$WORK/obj/routines"
    # Where glibc's build tree would be: the tests run here use none of these paths.
    local p=() d
    for d in SRCDIR:"$SRC" OBJDIR:"$WORK" OBJDIR_ELF_LDSO:/lib64/ld-linux-x86-64.so.2 INSTDIR:/ \
             LIBDIR:/usr/lib BINDIR:/usr/bin SBINDIR:/usr/sbin SLIBDIR:/lib ROOTSBINDIR:/sbin \
             COMPLOCALEDIR:/usr/lib/locale; do
        p+=("-D${d%%:*}_PATH=\"${d#*:}\"")
    done
    gcc "${CFLAGS[@]}" "${p[@]}" -c "$SRC/support/support_paths.c" -o "$WORK/obj/support_paths.o" || return 1
    ar rcs "$WORK/obj/libsupport.a" "$WORK"/obj/*.o || return 1
    gcc -std=gnu11 -O2 -Wall -c "$HERE/preload_check.c" -o "$WORK/obj/preload_check.o" || return 1
    echo "$stamp" > "$WORK/stamp"
}
if [ "$(cat "$WORK/stamp" 2>/dev/null)" != "$stamp" ]; then
    t0=$SECONDS
    build || { echo "could not extract or build glibc's test harness"; exit 1; }
    echo "glibc harness built in $((SECONDS - t0)) s"
fi
# Test programs: built when missing (the cache above removes them when anything changes).
for t in "${TESTS[@]}"; do
    [ -f "$SRC/malloc/$t.c" ] || { echo "no such test in $V/malloc: $t"; exit 2; }
    [ -x "$BIN/$t" ] && continue
    echo "$t"
done | xargs -r -P "$JOBS" -I{} sh -c 'cd "'"$SRC"'/malloc" && gcc "$@" {}.c "'"$WORK"'/obj/preload_check.o" \
        "'"$WORK"'/obj/libsupport.a" -o "'"$BIN"'/{}" > "'"$WORK"'/obj/{}.build.log" 2>&1 ||
        { echo "build of {} failed:"; cat "'"$WORK"'/obj/{}.build.log"; }' sh "${CFLAGS[@]}"

# ---------------------------------------------------------------- run
# glibc's driver kills a test after 20 s times TIMEOUTFACTOR; the machine may be loaded.
run_one() {
    local t=$1 d=$WORK/run/$1
    rm -rf "$d" && mkdir -p "$d/tmp"
    local start=$SECONDS rc=0
    if [ ! -x "$BIN/$t" ]; then
        echo "not built" > "$d/out"; rc=126
    else
        (cd "$d" && env LD_PRELOAD="$LIB" EBB_GLIBC_MARK="$d/mark" TMPDIR="$d/tmp" TIMEOUTFACTOR=4 \
            timeout -k 10 240 "$BIN/$t" > "$d/out" 2>&1) || rc=$?
    fi
    local why=""
    if [ "$rc" -ne 0 ]; then why="exit status $rc"
    elif [ ! -s "$d/mark" ]; then why="the preload check did not run"
    elif grep -q '^FAIL' "$d/out"; then why="it printed FAIL"
    fi
    if [ -z "$why" ]; then
        echo "ok   $t ($((SECONDS - start)) s)" > "$d/result"
    else
        { echo "FAIL $t ($why, $((SECONDS - start)) s); last lines of its output:"
          tail -n 15 "$d/out" | sed 's/^/     | /'; } > "$d/result"
    fi
}
t0=$SECONDS
running=0
for t in "${TESTS[@]}"; do
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
    run_one "$t" &
    running=$((running + 1))
done
wait
pass=0 fail=0
for t in "${TESTS[@]}"; do
    cat "$WORK/run/$t/result"
    if grep -q '^ok' "$WORK/run/$t/result"; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
done
echo "glibc malloc tests: $pass passed, $fail failed ($((SECONDS - t0)) s)"
[ "$fail" -eq 0 ]
