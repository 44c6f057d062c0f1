#!/bin/sh
# The arena-creep comparison in one command: configures and builds ebbmalloc
# and its benchmarks when needed, runs ebb-bench arena-creep under every
# configuration side by side, and prints the table and where the chart is.
#
#   bench/creep.sh            default run (3 runs per configuration, a few minutes)
#   bench/creep.sh --quick    one short run each, under a minute
#   bench/creep.sh --long     10 minutes of load per configuration, and whether RSS stays flat
# Any other ebb-bench option may follow (--configs, --runs, --out, --lib, ...).
# EBB_BUILD_DIR selects the build directory (default: build).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${EBB_BUILD_DIR:-build}
case $build in /*) ;; *) build=$root/$build ;; esac

missing=""
for tool in meson ninja cc; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    echo "creep.sh: missing:$missing" >&2
    echo "  apt-get install -y meson ninja-build gcc libcmocka-dev libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0" >&2
    exit 1
fi

if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" "$root"
fi
if ! ninja -C "$build"; then
    # The benchmark does not need every part of the tree to build.
    echo "creep.sh: the full build failed; building the benchmark alone" >&2
    ninja -C "$build" bench/ebb-bench bench/ebb-wl-arena-creep
fi
if [ ! -e "$build/alloc/libebbmalloc.so" ]; then
    echo "creep.sh: $build/alloc/libebbmalloc.so is not built; the ebbmalloc row will be skipped" >&2
fi

exec "$build/bench/ebb-bench" arena-creep --out "$build/bench-results" "$@"
