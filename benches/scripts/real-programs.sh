#!/usr/bin/env bash
# Real programs under LD_PRELOAD: glibc (none), gomalloc, mimalloc, jemalloc
# and tcmalloc, interleaved, RUNS runs each; prints the median wall time and
# peak RSS of each. A stop-gap until `cargo xtask compare` (issue 5) owns it.
#
# Needs: cargo build --release -p gomalloc-capi; Debian's libmimalloc2.0,
# libjemalloc2, libtcmalloc-minimal4; python3, sqlite3, /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-5}
lib=/usr/lib/x86_64-linux-gnu
declare -A PRELOAD=(
  [glibc]=""
  [gomalloc]="$PWD/target/release/libgomalloc.so"
  [mimalloc]="$lib/libmimalloc.so.2"
  [jemalloc]="$lib/libjemalloc.so.2"
  [tcmalloc]="$lib/libtcmalloc_minimal.so.4"
)
ALLOCS=(glibc gomalloc mimalloc jemalloc tcmalloc)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/alloc.py" <<'PY'
import json, random
random.seed(7)
live = {}
total = 0
for i in range(300_000):
    k = random.randrange(50_000)
    live[k] = {"id": i, "name": "x" * random.randrange(1, 200), "tags": list(range(i % 20))}
    if i % 3 == 0:
        live.pop(random.randrange(50_000), None)
    if i % 1000 == 0:
        total += len(json.dumps(list(live.values())[:50]))
print(len(live), total)
PY
{
  echo "PRAGMA journal_mode=OFF; CREATE TABLE t(a INTEGER, b TEXT, c REAL);"
  echo "BEGIN;"
  for i in $(seq 1 20000); do echo "INSERT INTO t VALUES($i, 'row-$i-$((i * 7919 % 1000))', $i.5);"; done
  echo "COMMIT; CREATE INDEX ib ON t(b);"
  echo "SELECT count(*), sum(a), max(length(b)) FROM t;"
  echo "SELECT substr(b, 1, 6), count(*) FROM t GROUP BY 1 ORDER BY 2 DESC LIMIT 3;"
  echo "SELECT count(*) FROM t x JOIN t y ON x.a = y.a + 1 WHERE x.b > y.b;"
} > "$work/work.sql"

run() { # alloc workload -> "seconds maxrss_kib"
  local a=$1 w=$2 out
  case $w in
    python) out=$( { env ${PRELOAD[$a]:+LD_PRELOAD=${PRELOAD[$a]}} PYTHONMALLOC=malloc \
              /usr/bin/time -f '%e %M' python3 "$work/alloc.py" >/dev/null; } 2>&1 | tail -1) ;;
    sqlite) out=$( { env ${PRELOAD[$a]:+LD_PRELOAD=${PRELOAD[$a]}} \
              /usr/bin/time -f '%e %M' sqlite3 ":memory:" < "$work/work.sql" >/dev/null; } 2>&1 | tail -1) ;;
  esac
  echo "$out"
}

median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

for w in python sqlite; do
  declare -A T=() M=()
  for r in $(seq 1 "$RUNS"); do
    for a in "${ALLOCS[@]}"; do
      read -r s kib < <(run "$a" "$w")
      T[$a]+="$s "; M[$a]+="$kib "
    done
  done
  printf '%-8s %-9s %10s %12s\n' workload allocator "time (s)" "peak RSS MiB"
  for a in "${ALLOCS[@]}"; do
    t=$(tr ' ' '\n' <<< "${T[$a]}" | grep . | median)
    m=$(tr ' ' '\n' <<< "${M[$a]}" | grep . | median)
    printf '%-8s %-9s %10.3f %12.1f\n' "$w" "$a" "$t" "$(echo "$m / 1024" | bc -l)"
  done
  unset T M
done
