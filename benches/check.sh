#!/usr/bin/env bash
# Issue 5 benchmark, side by side in one run on the same file:
#   dissonance dump --format ndjson > /dev/null   vs   dissonance check > /dev/null
# on the synthetic capture of examples/gen_capture.rs (as benches/dump.sh). Each command
# runs ROUNDS times alternately; the best wall time of each is compared. CPU time (user +
# system) is shown too: both commands use a second thread, and on a busy machine the
# wall time depends on whether it gets a core.
# Usage: benches/check.sh [PACKETS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
rounds=${2:-3}
cargo build --release --quiet --bin dissonance --example gen_capture
. benches/lib.sh
file=$(bench_capture "$n")

tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
run() { # command...: prints "seconds cpu_seconds peak_kb"
  cat "$file" > /dev/null # same page-cache state for both
  # Wall time from the shell's microsecond clock (GNU time's %e has 10 ms steps).
  local t0=$EPOCHREALTIME
  /usr/bin/time -o "$tmp" -f '%U %S %M' "$@" > /dev/null
  local t1=$EPOCHREALTIME
  tail -1 "$tmp" | awk -v w="$(echo "$t1 - $t0" | bc -l)" '{ printf "%.3f %.2f %s\n", w, $1 + $2, $3 }'
}
best() { # current best, new "s cpu kb": prints the faster
  if [ -z "$1" ] || [ "$(echo "${2%% *} < ${1%% *}" | bc -l)" = 1 ]; then echo "$2"; else echo "$1"; fi
}
dump="" check=""
for _ in $(seq "$rounds"); do
  dump=$(best "$dump" "$(run target/release/dissonance dump "$file" --format ndjson)")
  # check exits 1 when it finds errors; the synthetic capture has none, but time it anyway.
  check=$(best "$check" "$(run target/release/dissonance check "$file" --fail-on never)")
done

echo "capture: $n packets, $(du -h "$file" | cut -f1); best of $rounds rounds"
printf '%-52s %8s %8s %9s\n' command seconds "CPU s" "peak MB"
set -- $dump;  printf '%-52s %8s %8s %9.1f\n' "dissonance dump FILE --format ndjson > /dev/null" "$1" "$2" "$(echo "$3/1024" | bc -l)"
dcpu=$2
set -- $check; printf '%-52s %8s %8s %9.1f\n' "dissonance check FILE > /dev/null" "$1" "$2" "$(echo "$3/1024" | bc -l)"
ccpu=$2
d=${dump%% *}; c=${check%% *}
echo
echo "check / dump: $(echo "scale=2; $c/$d" | bc -l)x wall, $(echo "scale=2; $ccpu/$dcpu" | bc -l)x CPU   (target: at most 1x wall)"
echo "--- check report on the benchmark capture:"
target/release/dissonance check "$file" --fail-on never | head -20
