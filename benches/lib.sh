# Sourced by the benchmark scripts (after `cd` to the repository root and building
# examples/gen_capture.rs in release): what they share.

# bench_capture N [FLAGS...]: the path of the N-packet synthetic capture
# (examples/gen_capture.rs), generated under $TMPDIR the first time it is asked for.
bench_capture() {
  local n=$1 f=${TMPDIR:-/tmp}/dissonance-bench-$1.pcap
  [ -f "$f" ] || target/release/examples/gen_capture "$n" "$f" >&2
  echo "$f"
}

# median: the median of the numbers (whitespace-separated) on stdin, 3 decimals.
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}'; }
