#!/usr/bin/env bash
# Instructions per malloc/free pair on the fast path (warm thread cache, one
# object allocated and freed again and again), counted by callgrind, which
# is exact where wall-clock time on a shared machine is not.
#
# Two paths are measured:
# - Rust: `GlobalAlloc::alloc` + `dealloc` through non-inlined shims
#   (benches/examples/fastpath.rs), gomalloc vs mimalloc, jemalloc, System;
# - C: `malloc` + `free` from a C program (benches/c/fastpath.c) under
#   LD_PRELOAD of libgomalloc.so and Debian's libmimalloc, libjemalloc and
#   libtcmalloc-minimal, and glibc's own malloc.
# Each count is (Ir at 2N pairs - Ir at N pairs) / N of the measured loop
# alone, so it includes the loop's own few instructions (the same for every
# allocator) and nothing of start-up.
#
# usage: benches/scripts/fastpath-instructions.sh [SIZE...]   (default 16 64 256 1024)
# Needs valgrind and gcc. HARDENED=1 measures gomalloc built with its
# `hardened` feature (into target/hardened; the other allocators as usual).
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(16 64 256 1024)
N=50000
lib=/usr/lib/x86_64-linux-gnu
target=target
build=()
if [ "${HARDENED:-0}" = 1 ]; then
  target=target/hardened
  build=(--features hardened --target-dir "$target")
fi
cargo build -q --release -p gomalloc-capi "${build[@]}"
cargo build -q --release -p gomalloc-benches --example fastpath "${build[@]}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/fastpath-c" benches/c/fastpath.c

count() { # toggle-function command... -> Ir of the toggled function
  # (PRELOAD_LIB, when set, is preloaded into the program valgrind runs.)
  local fn=$1; shift
  env ${PRELOAD_LIB:+LD_PRELOAD=$PRELOAD_LIB} valgrind --tool=callgrind --toggle-collect="$fn" --callgrind-out-file="$work/cg" "$@" 2>&1 \
    | awk '/Collected :/ {print $4}'
}
per_pair() { # toggle-function command-with-PAIRS-last...
  local fn=$1; shift
  local a b
  a=$(count "$fn" "$@" "$N")
  b=$(count "$fn" "$@" $((2 * N)))
  awk -v a="$a" -v b="$b" -v n="$N" 'BEGIN { printf "%.1f", (b - a) / n }'
}

printf '%-6s %-10s' path allocator; printf ' %8s' "${sizes[@]}"; echo
for a in gomalloc mimalloc jemalloc system; do
  printf '%-6s %-10s' rust "$a"
  for s in "${sizes[@]}"; do
    printf ' %8s' "$(per_pair '*fastpath::pairs*' "$target"/release/examples/fastpath "$a" "$s")"
  done
  echo
done
declare -A PRELOAD=(
  [gomalloc]="$PWD/$target/release/libgomalloc.so"
  [mimalloc]="$lib/libmimalloc.so.2"
  [jemalloc]="$lib/libjemalloc.so.2"
  [tcmalloc]="$lib/libtcmalloc_minimal.so.4"
  [glibc]=""
)
for a in gomalloc mimalloc jemalloc tcmalloc glibc; do
  if [ -n "${PRELOAD[$a]}" ] && [ ! -e "${PRELOAD[$a]}" ]; then
    echo "c      $a: ${PRELOAD[$a]} missing (apt-get install libmimalloc2.0 libjemalloc2 libtcmalloc-minimal4)"
    continue
  fi
  printf '%-6s %-10s' c "$a"
  for s in "${sizes[@]}"; do
    printf ' %8s' "$(PRELOAD_LIB=${PRELOAD[$a]} per_pair pairs "$work/fastpath-c" "$s")"
  done
  echo
done
