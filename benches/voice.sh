#!/usr/bin/env bash
# Issue 4 benchmark, side by side in one run on the same frames:
#   dissonance voice (extract one speaker's SECONDS of 20 ms Opus frames to a WAV)  vs
#   a bare loop that decodes the same frames with libopus and writes nothing
#   (examples/bare_opus.rs).
# The capture is synthetic (examples/gen_voice.rs): every frame relayed and forwarded
# (two copies), talk spurts of 30 s. Each command runs RUNS times, alternating; the best
# wall time of each is compared. Prints the ratio and the real-time factor.
# Usage: benches/voice.sh [SECONDS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3600}
runs=${2:-3}
tmp=${TMPDIR:-/tmp}
pcap=$tmp/dissonance-voice-bench-$secs.pcap
frames=$tmp/dissonance-voice-bench-$secs.frames
out=$tmp/dissonance-voice-bench-out
cargo build --release --quiet --bin dissonance --example gen_voice --example bare_opus
[ -f "$pcap" ] && [ -f "$frames" ] || target/release/examples/gen_voice "$secs" "$pcap" "$frames"

best_bare=""; best_voice=""
for i in $(seq "$runs"); do
  cat "$pcap" "$frames" > /dev/null # same page-cache state for both
  b=$( { /usr/bin/time -f '%e %M' target/release/examples/bare_opus "$frames" > /dev/null; } 2>&1 | tail -1)
  rm -rf "$out"
  v=$( { /usr/bin/time -f '%e %M' target/release/dissonance voice "$pcap" -o "$out" --speaker alice -q; } 2>&1 | tail -1)
  echo "run $i: bare loop $b   voice $v   (seconds, peak KB)"
  bs=${b% *}; vs=${v% *}
  if [ -z "$best_bare" ] || (( $(echo "$bs < ${best_bare% *}" | bc -l) )); then best_bare=$b; fi
  if [ -z "$best_voice" ] || (( $(echo "$vs < ${best_voice% *}" | bc -l) )); then best_voice=$v; fi
done
wav=$(du -h "$out"/*.wav | cut -f1)
rm -rf "$out"

b=${best_bare% *}; v=${best_voice% *}
echo
echo "capture: $secs s of speech, $(du -h "$pcap" | cut -f1); output WAV $wav"
printf '%-58s %8s %10s\n' command seconds "peak MB"
printf '%-58s %8s %10.1f\n' "bare loop: libopus decode only (examples/bare_opus.rs)" "$b" "$(echo "${best_bare#* }/1024" | bc -l)"
printf '%-58s %8s %10.1f\n' "dissonance voice FILE -o DIR --speaker alice" "$v" "$(echo "${best_voice#* }/1024" | bc -l)"
echo
echo "voice / bare loop: $(echo "scale=3; $v/$b" | bc -l)x   (target: at most 1.25x)"
echo "real-time factor:  $(echo "scale=0; $secs/$v" | bc -l)x real time on one core   (target: at least 500x)"
