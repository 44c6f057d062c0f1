#!/usr/bin/env bash
# Formats ebbmalloc's C and C++ files (the ones git tracks) in place with the top-level
# .clang-format, or with --check changes nothing and exits 1 when a file would change
# (naming each one).  Files or folders given after the options limit it to those.
#   tools/format.sh [--check] [PATH...]
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
if [ "${1:-}" = "--check" ]; then check=1; shift; fi
CF=${CLANG_FORMAT:-clang-format}
command -v "$CF" >/dev/null || { echo "format.sh: $CF not found (apt-get install clang-format)" >&2; exit 2; }
mapfile -t files < <(git ls-files -- "${@:-.}" | grep -E '\.(c|h|cpp)$')
bad=0
for f in "${files[@]}"; do
    if [ "$check" = 1 ]; then
        if ! "$CF" --style=file "$f" | cmp -s - "$f"; then
            echo "would change: $f"
            bad=1
        fi
    else
        "$CF" --style=file -i "$f"
    fi
done
exit "$bad"
