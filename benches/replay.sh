#!/usr/bin/env bash
# Issue 7 replay timing benchmark, real clock: a synthetic 10-minute capture
# (examples/gen_capture.rs: 3 clients' handshakes, then a voice frame relayed every
# 6.7 ms, with the server's forwards) replayed at 1.0x with --raw against a UDP echo
# server on 127.0.0.1 (examples/proxy_load.rs echo). Compares when the last datagram
# left with the capture's duration (target: within 50 ms). --raw because no server on
# this branch answers handshakes; the schedule is the same code in both modes.
# Usage: benches/replay.sh [PACKETS]   (270012 = 600 s of capture)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-270012}
tmp=${TMPDIR:-/tmp}
pcap=$tmp/dissonance-replay-bench-$n.pcap
cargo build --release --quiet --bin dissonance --example gen_capture --example proxy_load
[ -f "$pcap" ] || target/release/examples/gen_capture "$n" "$pcap"
port=$((20000 + RANDOM % 20000)) # other engineers run servers on this machine too
target/release/examples/proxy_load echo "127.0.0.1:$port" 1000 > /dev/null & echo_pid=$!
sleep 0.3
out=$(target/release/dissonance replay "$pcap" --target "127.0.0.1:$port" --raw --linger 0.2 2> "$tmp/replay-bench-$$.err")
kill "$echo_pid" 2>/dev/null || true
cat "$tmp/replay-bench-$$.err"; rm -f "$tmp/replay-bench-$$.err"
echo "$out" | head -3
dur=$(echo "$out" | sed -nE 's/^schedule: capture ([0-9.]+) s.*/\1/p')
last=$(echo "$out" | sed -nE 's/^last send at ([0-9.]+) s.*/\1/p')
echo
echo "capture (client side) lasts $dur s; last datagram left at $last s after the start"
echo "difference: $(echo "($last - $dur) * 1000" | bc -l | xargs printf '%.2f') ms   (target: within 50 ms)"
