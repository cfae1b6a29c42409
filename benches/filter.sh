#!/usr/bin/env bash
# Issue 22 benchmark, side by side in one run on the same file: `dump --format ndjson`
# without a display filter (the anchor) and with filters that keep (nearly) every packet,
# so the output is the same size and the difference is the filter's own cost:
#   relays:  -Y 'type == VoiceData || inner.type == VoiceData'   (decodes each relay's payload)
#   head:    -Y 'src_port != 1 && !malformed && size > 0'        (capture metadata only)
# and one that keeps a fifth (less output, so faster than the anchor):
#   speaker: -Y 'sender_name == "alice" || inner.sender_name == "alice"'
# The commands run in alternation (RUNS=11 rounds), page cache warm; median wall time
# and median CPU time (user+sys) per command, and each ratio to the anchor.
# Usage: benches/filter.sh [PACKETS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
cargo build --release --quiet --bin dissonance --example gen_capture
. benches/lib.sh
file=$(bench_capture "$n")
bin=target/release/dissonance
tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
reps=${RUNS:-11}
names=(anchor relays head speaker)
filters=(
  ""
  'type == VoiceData || inner.type == VoiceData'
  'src_port != 1 && !malformed && size > 0'
  'sender_name == "alice" || inner.sender_name == "alice"'
)
declare -A wall cpu
cat "$file" > /dev/null
for ((i = 0; i < reps; i++)); do
  for k in "${!names[@]}"; do
    args=(dump "$file" --format ndjson)
    [ -n "${filters[$k]}" ] && args+=(-Y "${filters[$k]}")
    t0=$EPOCHREALTIME
    /usr/bin/time -o "$tmp" -f '%U %S' "$bin" "${args[@]}" > /dev/null
    t1=$EPOCHREALTIME
    wall[${names[$k]}]+="$(echo "$t1 - $t0" | bc -l) "
    cpu[${names[$k]}]+="$(awk '{print $1 + $2}' "$tmp") "
  done
done
echo "capture: $n packets, $(du -h "$file" | cut -f1); $reps rounds"
printf '%-8s %-60s %8s %8s %9s %9s\n' name filter "wall s" "cpu s" "wall/anc" "cpu/anc"
aw=$(echo "${wall[anchor]}" | median); ac=$(echo "${cpu[anchor]}" | median)
for k in "${!names[@]}"; do
  nm=${names[$k]}
  w=$(echo "${wall[$nm]}" | median); c=$(echo "${cpu[$nm]}" | median)
  printf '%-8s %-60s %8s %8s %8.2fx %8.2fx\n' "$nm" "${filters[$k]:-(none)}" "$w" "$c" \
    "$(echo "$w / $aw" | bc -l)" "$(echo "$c / $ac" | bc -l)"
done
echo "target: with a filter keeping every packet, at most 1.2x the anchor"
