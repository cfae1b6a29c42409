#!/usr/bin/env bash
# Issue 7 proxy benchmark, side by side in one run on the same traffic, 127.0.0.1 only:
#   dissonance proxy (decoding on, records to /dev/null-like sink: none; packets not
#   printed, --summary)   vs   a bare tokio UDP relay (examples/proxy_load.rs relay).
# Traffic: real Dissonance packets (ServerRelayUnreliable wrapping VoiceData), 60–200
# bytes, from many client sockets, echoed by a UDP echo server behind the relay.
#   throughput: closed loop, CLIENTS clients x 4 in flight, round trips per second;
#   latency: 20,000 datagrams/s, each at its own due time (16 clients), round-trip
#   percentiles; the proxy's added latency
#   is its p99 minus the direct (no relay) p99.
# Usage: benches/proxy.sh [SECONDS] [CLIENTS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
nclients=${2:-64}
rounds=${3:-3}
cargo build --release --quiet --bin dissonance --example proxy_load
load=target/release/examples/proxy_load
life=$(echo "$secs * (2 * $rounds + 4) + 20" | bc)
# Ports picked per run: other engineers run servers on this machine too.
base=$((20000 + RANDOM % 20000))
$load echo 127.0.0.1:$base "$life" > /dev/null & echo_pid=$!
sleep 0.3

run_relay() { # $1 = bare|proxy, $2 = listen port
  if [ "$1" = bare ]; then
    $load relay "127.0.0.1:$2" 127.0.0.1:$base "$life" > /dev/null &
  else
    target/release/dissonance proxy --listen "127.0.0.1:$2" --upstream 127.0.0.1:$base \
      --summary --duration "$life" > /dev/null 2> "${TMPDIR:-/tmp}/proxy-bench-$$.log" &
  fi
  echo $!
}

bare=$(run_relay bare $((base + 1)))
prox=$(run_relay proxy $((base + 2)))
sleep 0.5
echo "== direct (no relay)"
direct_lat=$($load latency 127.0.0.1:$base 20000 "$secs")
echo "$direct_lat"
# Throughput: rounds alternate between the two, best of each (the machine is shared).
best() { printf '%s\n' "$@" | sed -E 's/.*throughput ([0-9.]+).*/\1/' | sort -n | tail -1; }
bt=(); pt=()
for r in $(seq "$rounds"); do
  bt+=("$($load throughput 127.0.0.1:$((base + 1)) "$nclients" "$secs")")
  pt+=("$($load throughput 127.0.0.1:$((base + 2)) "$nclients" "$secs")")
  echo "round $r: bare ${bt[-1]}   proxy ${pt[-1]}"
done
bare_tp="throughput $(best "${bt[@]}")"; prox_tp="throughput $(best "${pt[@]}")"
echo "== bare tokio relay"
bare_lat=$($load latency 127.0.0.1:$((base + 1)) 20000 "$secs"); echo "$bare_lat"
echo "== dissonance proxy (decoding)"
prox_lat=$($load latency 127.0.0.1:$((base + 2)) 20000 "$secs"); echo "$prox_lat"
kill "$bare" "$prox" 2>/dev/null || true
sleep 0.5 # the proxy prints its counts on SIGTERM
kill "$echo_pid" 2>/dev/null || true
grep -E '^(forwarded|received|errors):' "${TMPDIR:-/tmp}/proxy-bench-$$.log" || true
rm -f "${TMPDIR:-/tmp}/proxy-bench-$$.log"

num() { echo "$1" | sed -E "s/.*$2 ([0-9.]+).*/\1/"; }
b=$(num "$bare_tp" throughput); p=$(num "$prox_tp" throughput)
echo
echo "throughput: proxy $p packets/s, bare relay $b packets/s: $(echo "scale=3; $p/$b" | bc -l)x   (target: at least 0.90x)"
d99=$(num "$direct_lat" p99); b99=$(num "$bare_lat" p99); p99=$(num "$prox_lat" p99)
echo "round-trip p99 at 20,000/s: direct $d99 us, bare relay $b99 us, proxy $p99 us"
echo "added latency p99 (proxy - direct, both directions): $(echo "$p99 - $d99" | bc -l) us   (target: under 200 us)"
