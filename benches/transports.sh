#!/usr/bin/env bash
# Issue 20 benchmark, side by side in one run: `dump --payload mirror` on the benchmark
# capture re-carried by Mirror over kcp2k (examples/gen_capture.rs --mirror) against
# `dump` on the same session plain. Prints the median wall time of RUNS=11 runs each
# and the ratio (target: at most 1.3x). Usage: benches/transports.sh [PACKETS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
plain=${TMPDIR:-/tmp}/dissonance-bench-$n.pcap
mirror=${TMPDIR:-/tmp}/dissonance-bench-$n-mirror.pcap
cargo build --release --quiet --bin dissonance --example gen_capture
[ -f "$plain" ] || target/release/examples/gen_capture "$n" "$plain"
[ -f "$mirror" ] || target/release/examples/gen_capture "$n" "$mirror" --mirror

# One run of dump on a file, wall time in seconds from the shell's microsecond clock,
# with the file in the page cache.
once() {
  local file=$1 t0 t1; shift
  cat "$file" > /dev/null
  t0=$EPOCHREALTIME
  target/release/dissonance dump "$file" --format ndjson "$@" > /dev/null
  t1=$EPOCHREALTIME
  echo "$t1 - $t0" | bc -l
}
median() { sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}'; }
# Interleaved, run by run, so all three see the same machine load.
pt=() mt=() at=()
for ((i = 0; i < ${RUNS:-11}; i++)); do
  pt+=("$(once "$plain")")
  mt+=("$(once "$mirror" --payload mirror)")
  at+=("$(once "$mirror")")
done
p="plain $(printf '%s\n' "${pt[@]}" | median)"
m="mirror $(printf '%s\n' "${mt[@]}" | median)"
a="mirror-auto $(printf '%s\n' "${at[@]}" | median)"
echo
echo "capture: $n packets; plain $(du -h "$plain" | cut -f1), Mirror/kcp2k $(du -h "$mirror" | cut -f1)"
for r in "$p" "$m" "$a"; do set -- $r; printf '%-14s %8s s\n' "$1" "$2"; done
pt=$(echo "$p" | cut -d' ' -f2); mt=$(echo "$m" | cut -d' ' -f2); at=$(echo "$a" | cut -d' ' -f2)
echo
echo "dump --payload mirror / dump plain: $(echo "scale=2; $mt/$pt" | bc -l)x   (target: at most 1.3x)"
echo "dump (auto) on Mirror / dump plain: $(echo "scale=2; $at/$pt" | bc -l)x"
