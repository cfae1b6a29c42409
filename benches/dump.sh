#!/usr/bin/env bash
# Issue 3 benchmark, side by side in one run on the same file:
#   dissonance dump --format ndjson  vs  tshark -T fields -e udp.length  vs  a bare loop
#   that only reads the file and parses headers with etherparse (examples/bare_loop.rs).
# Prints wall time, peak memory and the ratios. Usage: benches/dump.sh [PACKETS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
file=${TMPDIR:-/tmp}/dissonance-bench-$n.pcap
cargo build --release --quiet --bin dissonance --example gen_capture --example bare_loop
[ -f "$file" ] || target/release/examples/gen_capture "$n" "$file"
command -v tshark >/dev/null || { echo "tshark missing: sudo apt-get install tshark" >&2; exit 1; }

run() { # name, command...: prints "name seconds peak_kb"
  local name=$1; shift
  cat "$file" > /dev/null # same page-cache state for everyone
  local out; out=$( { /usr/bin/time -f '%e %M' "$@" > /dev/null; } 2>&1 | tail -1)
  echo "$name $out"
}
bare=$(run bare target/release/examples/bare_loop "$file")
dump=$(run dump target/release/dissonance dump "$file" --format ndjson)
check=""
if target/release/dissonance check --help >/dev/null 2>&1; then
  check=$(run check target/release/dissonance check "$file")
fi
tshark=$(run tshark tshark -r "$file" -T fields -e udp.length)

echo
echo "capture: $n packets, $(du -h "$file" | cut -f1)"
printf '%-40s %10s %12s\n' command seconds "peak MB"
for r in "$bare" "$dump" "$check" "$tshark"; do
  [ -n "$r" ] || continue
  set -- $r
  printf '%-40s %10s %12.1f\n' "$1" "$2" "$(echo "$3/1024" | bc -l)"
done
b=$(echo "$bare" | cut -d' ' -f2); d=$(echo "$dump" | cut -d' ' -f2); t=$(echo "$tshark" | cut -d' ' -f2)
echo
echo "dump / bare loop: $(echo "scale=2; $d/$b" | bc -l)x   (target: at most 4x)"
echo "tshark / dump:    $(echo "scale=1; $t/$d" | bc -l)x   (target: at least 100x)"
