#!/bin/sh
# Turns the static library into one whose only global symbols are the ebb_ API: all
# objects are linked into one relocatable object, and every hidden symbol (everything
# internal) is made local.  usage: api-only.sh IN.a OUT.a [LD OBJCOPY AR]
# The tools default to the build machine's; a cross build passes its own.
set -eu
in=$(readlink -f "$1") out=$(readlink -f "$2")
LD=${3:-ld} OBJCOPY=${4:-objcopy} AR=${5:-ar}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$LD" -r -o "$tmp/ebbmalloc.o" --whole-archive "$in"
"$OBJCOPY" --localize-hidden "$tmp/ebbmalloc.o"
rm -f "$out"
"$AR" rcs "$out" "$tmp/ebbmalloc.o"
