#!/usr/bin/env bash
# Issue 22 benchmark, side by side in one run on the same file: the cost of `--stats`.
#   anchor:  dump --summary             (dissects, tracks and counts every packet; prints
#                                        no packets, so -q would be refused as a no-op)
#   io:      dump -q --stats io,1       (the same, plus per-second counts by direction/type)
#   conv:    dump -q --stats conv       (per endpoint pair)
#   streams: dump -q --stats streams    (the check engine beside the dissector)
# The commands run in alternation (RUNS=11 rounds), page cache warm; median wall time,
# median CPU time (user+sys) and peak memory per command, and each ratio to the anchor.
# Usage: benches/stats.sh [PACKETS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
cargo build --release --quiet --bin dissonance --example gen_capture
. benches/lib.sh
file=$(bench_capture "$n")
bin=target/release/dissonance
tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
reps=${RUNS:-11}
names=(anchor io conv streams)
flags=("--summary" "-q --stats io,1" "-q --stats conv" "-q --stats streams")
declare -A wall cpu peak
cat "$file" > /dev/null
for ((i = 0; i < reps; i++)); do
  for k in "${!names[@]}"; do
    # shellcheck disable=SC2206 # the flags are split on purpose
    args=(dump "$file" ${flags[$k]})
    t0=$EPOCHREALTIME
    /usr/bin/time -o "$tmp" -f '%U %S %M' "$bin" "${args[@]}" > /dev/null
    t1=$EPOCHREALTIME
    nm=${names[$k]}
    wall[$nm]+="$(echo "$t1 - $t0" | bc -l) "
    cpu[$nm]+="$(tail -1 "$tmp" | awk '{print $1 + $2}') "
    m=$(tail -1 "$tmp" | awk '{print $3}')
    (( m > ${peak[$nm]:-0} )) && peak[$nm]=$m
  done
done
echo "capture: $n packets, $(du -h "$file" | cut -f1); $reps rounds"
printf '%-8s %-34s %8s %8s %8s %9s %9s\n' name command "wall s" "cpu s" "peak MB" "wall/anc" "cpu/anc"
aw=$(echo "${wall[anchor]}" | median); ac=$(echo "${cpu[anchor]}" | median)
for k in "${!names[@]}"; do
  nm=${names[$k]}
  w=$(echo "${wall[$nm]}" | median); c=$(echo "${cpu[$nm]}" | median)
  printf '%-8s %-34s %8s %8s %8.1f %8.2fx %8.2fx\n' "$nm" "dump ${flags[$k]}" "$w" "$c" \
    "$(echo "${peak[$nm]} / 1024" | bc -l)" "$(echo "$w / $aw" | bc -l)" "$(echo "$c / $ac" | bc -l)"
done
