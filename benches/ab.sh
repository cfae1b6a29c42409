#!/usr/bin/env bash
# Two builds of `dissonance` side by side on the same capture: before/after a change.
#   benches/ab.sh OLD_BIN NEW_BIN [PACKETS]
# Runs `dump --format ndjson` and `check` with each binary in alternation (RUNS=11 each,
# the page cache warm), and prints the median wall time and the median CPU time
# (user+sys; steadier than wall time on a busy machine) per binary, and new/old ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2 n=${3:-1000000}
cargo build --release --quiet --example gen_capture
. benches/lib.sh
file=$(bench_capture "$n")
tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
reps=${RUNS:-11}
declare -A wall cpu
one() { # key bin args...: appends one run's wall and cpu seconds
  local key=$1; shift
  local t0 t1
  t0=$EPOCHREALTIME
  /usr/bin/time -o "$tmp" -f '%U %S' "$@" > /dev/null 2>&1 || true
  t1=$EPOCHREALTIME
  wall[$key]+="$(echo "$t1 - $t0" | bc -l) "
  cpu[$key]+="$(awk '{print $1 + $2}' "$tmp") "
}
cat "$file" > /dev/null
for ((i = 0; i < reps; i++)); do
  for cmd in dump check; do
    args=("$file"); [ $cmd = dump ] && args+=(--format ndjson)
    one "old-$cmd" "$old" $cmd "${args[@]}"
    one "new-$cmd" "$new" $cmd "${args[@]}"
  done
done
echo "capture: $n packets; $reps alternating runs each; medians"
printf '%-8s %12s %12s %12s %12s %8s %8s\n' cmd "old wall s" "new wall s" "old cpu s" "new cpu s" wall× cpu×
for cmd in dump check; do
  ow=$(echo "${wall[old-$cmd]}" | median); nw=$(echo "${wall[new-$cmd]}" | median)
  oc=$(echo "${cpu[old-$cmd]}" | median); nc=$(echo "${cpu[new-$cmd]}" | median)
  printf '%-8s %12s %12s %12s %12s %8.3f %8.3f\n' $cmd "$ow" "$nw" "$oc" "$nc" \
    "$(echo "$nw / $ow" | bc -l)" "$(echo "$nc / $oc" | bc -l)"
done
