#!/usr/bin/env bash
# Issue 5 benchmark, side by side in one run on the same file:
#   dissonance dump --format ndjson > /dev/null   vs   dissonance check > /dev/null
# on the synthetic capture of examples/gen_capture.rs (as benches/dump.sh). Each command
# runs ROUNDS times alternately; the best time of each is compared.
# Usage: benches/check.sh [PACKETS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
rounds=${2:-3}
file=${TMPDIR:-/tmp}/dissonance-bench-$n.pcap
cargo build --release --quiet --bin dissonance --example gen_capture
[ -f "$file" ] || target/release/examples/gen_capture "$n" "$file"

run() { # command...: prints "seconds peak_kb"
  cat "$file" > /dev/null # same page-cache state for both
  { /usr/bin/time -f '%e %M' "$@" > /dev/null; } 2>&1 | tail -1
}
best() { # current best, new "s kb": prints the faster
  if [ -z "$1" ] || [ "$(echo "${2% *} < ${1% *}" | bc -l)" = 1 ]; then echo "$2"; else echo "$1"; fi
}
dump="" check=""
for _ in $(seq "$rounds"); do
  dump=$(best "$dump" "$(run target/release/dissonance dump "$file" --format ndjson)")
  # check exits 1 when it finds errors; the synthetic capture has none, but time it anyway.
  check=$(best "$check" "$(run target/release/dissonance check "$file" --fail-on never)")
done

echo "capture: $n packets, $(du -h "$file" | cut -f1); best of $rounds rounds"
printf '%-52s %8s %9s\n' command seconds "peak MB"
set -- $dump;  printf '%-52s %8s %9.1f\n' "dissonance dump FILE --format ndjson > /dev/null" "$1" "$(echo "$2/1024" | bc -l)"
set -- $check; printf '%-52s %8s %9.1f\n' "dissonance check FILE > /dev/null" "$1" "$(echo "$2/1024" | bc -l)"
d=${dump% *}; c=${check% *}
echo
echo "check / dump: $(echo "scale=2; $c/$d" | bc -l)x   (target: at most 1x)"
echo "--- check report on the benchmark capture:"
target/release/dissonance check "$file" --fail-on never | head -20
