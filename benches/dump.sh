#!/usr/bin/env bash
# Issue 3 benchmark, side by side in one run on the same file:
#   dissonance dump --format ndjson  vs  tshark -T fields -e udp.length  vs  a bare loop
#   that only reads the file and parses headers with etherparse (examples/bare_loop.rs).
# Prints the median wall time (RUNS=11 runs each, TSHARK_RUNS=3 for tshark), peak memory
# and the ratios. Usage: benches/dump.sh [PACKETS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
cargo build --release --quiet --bin dissonance --example gen_capture --example bare_loop
. benches/lib.sh
file=$(bench_capture "$n")
command -v tshark >/dev/null || { echo "tshark missing: sudo apt-get install tshark" >&2; exit 1; }

tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
# name, runs, command...: prints "name median_seconds peak_kb". Wall time from the
# shell's microsecond clock (GNU time's %e has 10 ms steps, too coarse for ~0.15 s);
# the median of the runs, each with the same page-cache state.
run() {
  local name=$1 reps=$2; shift 2
  local times=() peak=0 t0 t1 m
  for ((i = 0; i < reps; i++)); do
    cat "$file" > /dev/null
    t0=$EPOCHREALTIME
    /usr/bin/time -o "$tmp" -f '%M' "$@" > /dev/null
    t1=$EPOCHREALTIME
    times+=("$(echo "$t1 - $t0" | bc -l)")
    m=$(tail -1 "$tmp"); ((m > peak)) && peak=$m
  done
  echo "$name $(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}') $peak"
}
reps=${RUNS:-11}
bare=$(run bare "$reps" target/release/examples/bare_loop "$file")
dump=$(run dump "$reps" target/release/dissonance dump "$file" --format ndjson)
check=""
if target/release/dissonance check --help >/dev/null 2>&1; then
  check=$(run check "$reps" target/release/dissonance check "$file")
fi
tshark=$(run tshark "${TSHARK_RUNS:-3}" tshark -r "$file" -T fields -e udp.length)

echo
echo "capture: $n packets, $(du -h "$file" | cut -f1)"
printf '%-40s %10s %12s\n' command "median s" "peak MB"
for r in "$bare" "$dump" "$check" "$tshark"; do
  [ -n "$r" ] || continue
  set -- $r
  printf '%-40s %10s %12.1f\n' "$1" "$2" "$(echo "$3/1024" | bc -l)"
done
b=$(echo "$bare" | cut -d' ' -f2); d=$(echo "$dump" | cut -d' ' -f2); t=$(echo "$tshark" | cut -d' ' -f2)
echo
echo "dump / bare loop: $(echo "scale=2; $d/$b" | bc -l)x   (target: at most 4x)"
echo "tshark / dump:    $(echo "scale=1; $t/$d" | bc -l)x   (target: at least 100x)"
