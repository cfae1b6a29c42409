#!/usr/bin/env bash
# Issue 6 benchmark: `dissonance serve` under `dissonance simulate` load on this machine.
#   Main case: 500 clients, 50 speaking 20 ms Opus frames (2,500 voice packets/s in),
#   5 rooms (each frame fanned out to the ~99 other listeners of its room), SECONDS long.
#   Then a bounded search (a few steps, shorter runs, speakers = clients / 10) for the
#   largest client count that still holds: no loss, p99 server-added latency < 2 ms,
#   server CPU < 1 core.
# Server-added latency is what serve measures itself: from the kernel's arrival timestamp
# of a datagram (SO_TIMESTAMPNS) to its last copy handed back to the kernel, logged by
# SIGUSR1 for the speech window. Next to it, send-to-receive as the simulator measures it
# (a timestamp in the frame): an upper bound that also holds the kernel's loopback path
# and the simulator's own queueing. Server CPU is utime+stime from /proc/PID/stat over the
# speech window. Both processes share the machine's 2 cores.
# Usage: benches/serve.sh [SECONDS] [SEARCH_SECONDS]
#        benches/serve.sh metrics [SECONDS] [PAIRS]
#        benches/serve.sh scrape-cost [CLIENTS] [SCRAPES]
# The `metrics` form measures the cost of --metrics: the main case (500/50/5) with metrics
# off and on, alternating in PAIRS pairs in one run (off, on, off, on, ...), a scraper
# fetching /metrics every second while on (Prometheus usually scrapes every 15 s); it
# prints each run, then the medians side by side and their ratio (target: within 5%).
# CLIENTS=N SPEAKERS=K change the case (where 500 / 50 already overloads serve without
# metrics, only the CPU ratio compares; the script says so).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=search
case "${1:-}" in metrics | scrape-cost) mode=$1; shift ;; esac
secs=${1:-60}
search_secs=${2:-20}
pairs=${2:-3}
tmp=${TMPDIR:-/tmp}/dissonance-serve-bench
mkdir -p "$tmp"
cargo build --release --quiet --bin dissonance
bin=target/release/dissonance
wav=tests/data/captures/three-friends.alice.ref.wav
tck=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run CLIENTS SPEAKERS ROOMS SECONDS -> prints one result row, returns 0 if targets held
# wait_for FILE SED: the first line of FILE that the sed expression prints (5 s at most).
wait_for() {
  local got=""
  for _ in $(seq 100); do
    got=$(sed -n "$2" "$1" | head -1)
    [ -n "$got" ] && break
    sleep 0.05
  done
  echo "$got"
}

# With METRICS=1: serve gets --metrics and /metrics is fetched every second.
run() {
  local n=$1 k=$2 r=$3 d=$4
  local extra=()
  [ "${METRICS:-0}" = 1 ] && extra=(--metrics 127.0.0.1:0)
  "$bin" serve --listen 127.0.0.1:0 --duration $((d + 60)) --log-format ndjson "${extra[@]}" \
    > "$tmp/serve.log" 2> "$tmp/serve.err" &
  local spid=$!
  local addr
  addr=$(wait_for "$tmp/serve.err" 's/^listening on \([^ ]*\).*/\1/p')
  [ -n "$addr" ] || { echo "serve did not start: $(cat "$tmp/serve.err")"; kill $spid; return 2; }
  local scraper="" scrapes=0
  if [ "${METRICS:-0}" = 1 ]; then
    local murl
    murl=$(wait_for "$tmp/serve.err" 's/^metrics on \(.*\)/\1/p')
    : > "$tmp/scrapes"
    # Bounded: one scrape a second for the run's length at most.
    ( for _ in $(seq $((d + 60))); do
        curl -fsS "$murl" > "$tmp/scrape.txt" && echo >> "$tmp/scrapes"
        sleep 1
      done ) 2> /dev/null &
    scraper=$!
  fi
  # Emptied first: the previous run's "all ... joined" must not start this run's window.
  : > "$tmp/sim.err"
  "$bin" simulate --server "$addr" --clients "$n" --speakers "$k" --rooms "$r" \
    --duration "$d" --wav "$wav" --measure-latency --json --join-timeout 120 \
    > "$tmp/sim.json" 2> "$tmp/sim.err" &
  local simpid=$!
  # The speech window: from "all joined" (speech starts 0.2-0.3 s later) to 0.45 s after
  # its planned end (frames in flight have arrived; the clients say goodbye 0.5 s after
  # the end). SIGUSR1 makes serve log a status line whose added-latency histogram covers
  # the time since the previous one, so the second line is exactly the speech window.
  local t0="" c0="" m0="" m1="" t1="" c1="" stop=""
  while kill -0 $simpid 2> /dev/null; do
    if [ -z "$t0" ] && grep -q '^all .* clients joined' "$tmp/sim.err" 2> /dev/null; then
      kill -USR1 $spid
      t0=$(date +%s.%N); c0=$(cpu_ticks $spid); m0=$(cpu_ticks $simpid)
      stop=$(echo "$t0 + $d + 0.45" | bc -l)
    fi
    if [ -n "$stop" ] && [ -z "$t1" ] && [ "$(echo "$(date +%s.%N) >= $stop" | bc -l)" = 1 ]; then
      kill -USR1 $spid
      t1=$(date +%s.%N); c1=$(cpu_ticks $spid); m1=$(cpu_ticks $simpid)
    fi
    sleep 0.05
  done
  wait $simpid || true
  if [ -n "$scraper" ]; then
    kill $scraper 2> /dev/null || true
    wait $scraper 2> /dev/null || true
    scrapes=$(wc -l < "$tmp/scrapes")
  fi
  kill $spid 2> /dev/null || true
  wait $spid 2> /dev/null || true
  if [ -z "$t1" ]; then
    printf '%7s %8s %5s %4ss  no speech window: %s\n' "$n" "$k" "$r" "$d" "$(tail -1 "$tmp/sim.err")"
    return 1
  fi
  local cores simcores
  cores=$(echo "($c1 - $c0) / $tck / ($t1 - $t0)" | bc -l)
  simcores=$(echo "($m1 - $m0) / $tck / ($t1 - $t0)" | bc -l)
  if [ ! -s "$tmp/sim.json" ]; then
    printf '%7s %8s %5s %4ss  simulate failed: %s\n' "$n" "$k" "$r" "$d" "$(tail -1 "$tmp/sim.err")"
    return 1
  fi
  python3 - "$tmp/sim.json" "$tmp/serve.log" "$cores" "$n" "$k" "$r" "$d" "$simcores" "$tmp/last.json" "$scrapes" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); cores = float(sys.argv[3])
n, k, r, d, simcores = sys.argv[4:9]
status = [e for e in map(json.loads, open(sys.argv[2])) if e.get("event") == "status"]
added = status[1]["added_latency"] if len(status) > 1 else {}
# The JSON's durations are seconds (*_s); this table prints ms.
a99 = added.get("p99_s", float("nan")) * 1000; amax = added.get("max_s", float("nan")) * 1000
lat = {k: s["latency"][k + "_s"] * 1000 for k in ("p50", "p99", "max")}
ok = s["loss_pct"] == 0 and a99 < 2.0 and cores < 1.0
print(f"{n:>7} {k:>8} {r:>5} {d:>4}s {s['sent']/float(d):>9.0f} {s['received']/float(d):>11.0f} "
      f"{s['loss_pct']:>8.4f}% {a99:>9.3f} {amax:>9.3f} {lat['p50']:>8.3f} {lat['p99']:>8.3f} {lat['max']:>8.3f} "
      f"{cores:>6.2f} {float(simcores):>6.2f}  {'yes' if ok else 'no'}")
json.dump({"cores": cores, "p99_ms": a99, "e2e_p99_ms": lat["p99"], "loss_pct": s["loss_pct"],
           "scrapes": int(sys.argv[10])}, open(sys.argv[9], "w"))
sys.exit(0 if ok else 1)
PY
}

echo "2 cores: serve and simulate share them (simulate is one thread); load now: $(cut -d' ' -f1-3 /proc/loadavg)"
header() {
printf '%7s %8s %5s %5s %9s %11s %9s %9s %9s %8s %8s %8s %6s %6s  %s\n' clients speakers rooms secs "pkts/s in" "deliv/s out" loss "srv p99" "srv max" "e2e p50" "e2e p99" "e2e max" cores "sim" "holds"
}

# The CPU one scrape costs serve, exactly: 500 clients registered and silent, N scrapes
# back to back, serve's own CPU time (/proc/PID/schedstat, ns; serve runs on one thread)
# over the scrapes minus the same wall time idle.
scrape_cost() {
  local n=$1 scrapes=$2
  "$bin" serve --listen 127.0.0.1:0 --metrics 127.0.0.1:0 --duration 600 > /dev/null 2> "$tmp/cost.err" &
  local spid=$! addr murl
  addr=$(wait_for "$tmp/cost.err" 's/^listening on \([^ ]*\).*/\1/p')
  murl=$(wait_for "$tmp/cost.err" 's/^metrics on \(.*\)/\1/p')
  "$bin" simulate --server "$addr" --clients "$n" --speakers 0 --rooms 5 --duration 300 --join-timeout 120 \
    > /dev/null 2> "$tmp/cost-sim.err" &
  local simpid=$!
  for _ in $(seq 1200); do
    grep -q '^all .* clients joined' "$tmp/cost-sim.err" 2> /dev/null && break
    sleep 0.05
  done
  sleep 1
  # The loop's thread alone (the main one), or every thread of serve.
  oncpu() { awk '{print $1}' "/proc/$spid/schedstat"; }
  allcpu() { cat /proc/$spid/task/*/schedstat | awk '{s += $1} END {print s}'; }
  local i0 t0 c0 c1 t1 i1 a0 a1 j0 j1
  i0=$(oncpu); j0=$(allcpu); t0=$(date +%s.%N); sleep 2; i1=$(oncpu); j1=$(allcpu)
  local idle_t; idle_t=$(echo "$(date +%s.%N) - $t0" | bc -l)
  t0=$(date +%s.%N); c0=$(oncpu); a0=$(allcpu)
  for _ in $(seq "$scrapes"); do curl -fsS "$murl" > /dev/null; done
  c1=$(oncpu); a1=$(allcpu); t1=$(date +%s.%N)
  curl -fsS "$murl" > "$tmp/cost-scrape.txt"
  kill $simpid $spid 2> /dev/null || true
  wait $simpid $spid 2> /dev/null || true
  python3 - "$c0" "$c1" "$t0" "$t1" "$i0" "$i1" "$idle_t" "$scrapes" "$n" "$a0" "$a1" "$j0" "$j1" "$tmp/cost-scrape.txt" <<'PY'
import sys
c0, c1, t0, t1, i0, i1, idle_t, k, n, a0, a1, j0, j1 = map(float, sys.argv[1:14])
def per(b0, b1, z0, z1):
    idle_rate = (z1 - z0) / idle_t                  # ns of CPU per s, idle
    return ((b1 - b0) - idle_rate * (t1 - t0)) / k / 1000
loop, total = per(c0, c1, i0, i1), per(a0, a1, j0, j1)
size = len(open(sys.argv[14], "rb").read())
print()
print(f"one scrape with {int(n)} clients registered ({int(k)} scrapes, {size} bytes each): "
      f"{loop:.1f} us of CPU on serve's event-loop thread, {total:.1f} us in all its threads;")
print(f"at one scrape every 15 s: {total / 15e6 * 100:.5f}% of a core")
PY
}

if [ "$mode" = scrape-cost ]; then
  scrape_cost "${1:-500}" "${2:-2000}"
  exit 0
fi

if [ "$mode" = metrics ]; then
  command -v curl > /dev/null || { echo "the metrics benchmark needs curl"; exit 2; }
  # CLIENTS / SPEAKERS override the main case, for a machine where serve without metrics
  # already misses its targets at 500 / 50 (the p99 then measures queueing, not metrics).
  m_clients=${CLIENTS:-500} m_speakers=${SPEAKERS:-50}
  rm -f "$tmp/metrics-runs.jsonl"
  printf '%-8s ' metrics; header
  for _ in $(seq "$pairs"); do
    for m in 0 1; do
      printf '%-8s ' "$([ $m = 1 ] && echo on || echo off)"
      rm -f "$tmp/last.json"
      METRICS=$m run "$m_clients" "$m_speakers" 5 "$secs" || true
      [ -s "$tmp/last.json" ] || continue
      python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d['metrics']=$m; print(json.dumps(d))" \
        "$tmp/last.json" >> "$tmp/metrics-runs.jsonl"
    done
  done
  python3 - "$tmp/metrics-runs.jsonl" "$m_clients" "$m_speakers" <<'PY'
import json, statistics, sys
import math
runs = [json.loads(l) for l in open(sys.argv[1])]
def med(m, k):
    v = [r[k] for r in runs if r["metrics"] == m and math.isfinite(r[k])]
    return statistics.median(v) if v else float("nan")
off_c, on_c, off_p, on_p = med(0, "cores"), med(1, "cores"), med(0, "p99_ms"), med(1, "p99_ms")
scrapes = sum(r["scrapes"] for r in runs if r["metrics"] == 1)
print()
print(f"medians, {sum(r['metrics'] == 0 for r in runs)} runs off and {sum(r['metrics'] == 1 for r in runs)} on, {sys.argv[2]} clients / {sys.argv[3]} speakers / 5 rooms:")
print(f"  server CPU (cores):        off {off_c:.3f}   on {on_c:.3f}   on/off {on_c/off_c:.3f}")
print(f"  server-added p99 (ms):     off {off_p:.3f}   on {on_p:.3f}   on/off {on_p/off_p:.3f}")
print(f"  scrapes answered while on: {scrapes}")
lossy = [r for r in runs if r["loss_pct"] > 0]
if lossy:
    # Voice lost: the machine (shared, 2 cores) could not carry the load; the figures
    # then measure the contention, not serve.
    print(f"NOT VALID: {len(lossy)} of {len(runs)} runs lost voice (the machine was overloaded,"
          f" load {open('/proc/loadavg').read().split()[0]}); rerun on a quiet machine")
elif max(r["p99_ms"] for r in runs if r["metrics"] == 0) >= 2:
    # Without metrics serve already misses its 2 ms target: its queue, not metrics, sets the
    # p99, which then swings run to run; only the CPU ratio compares.
    print("p99 NOT COMPARABLE: serve without metrics misses its 2 ms p99 target at this load;"
          " CPU within 5%:", "yes" if on_c / off_c <= 1.05 else "no")
else:
    ok = on_c / off_c <= 1.05 and on_p / off_p <= 1.05
    print("within 5%:", "yes" if ok else "no")
PY
  scrape_cost "$m_clients" 2000
  exit 0
fi

header
main_ok=0
run 500 50 5 "$secs" || main_ok=$?
# Bounded search: up from 500 while the targets hold, down when they do not.
best=""
if [ "$main_ok" -eq 0 ]; then
  best=500
  for n in 600 700 800 1000; do
    if run $n $((n / 10)) 5 "$search_secs"; then best=$n; else break; fi
  done
else
  for n in 400 300 200 100 50; do
    if run $n $((n / 10)) 5 "$search_secs"; then best=$n; break; fi
  done
fi
echo
echo "srv: the server's own added latency (kernel arrival stamp of a voice datagram to its last"
echo "copy handed to the kernel), speech window only; e2e: send to receive in the simulator"
echo "(includes the simulator's own queueing: an upper bound). ms."
echo "largest client count holding loss 0, server-added p99 < 2 ms, server CPU < 1 core: ${best:-none of the steps}"
