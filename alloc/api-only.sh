#!/bin/sh
# Turns the static library into one whose only global symbols are the ebb_ API: all
# objects are linked into one relocatable object, and every hidden symbol (everything
# internal) is made local.  usage: api-only.sh IN.a OUT.a
set -eu
in=$(readlink -f "$1") out=$(readlink -f "$2")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ld -r -o "$tmp/ebbmalloc.o" --whole-archive "$in"
objcopy --localize-hidden "$tmp/ebbmalloc.o"
rm -f "$out"
ar rcs "$out" "$tmp/ebbmalloc.o"
