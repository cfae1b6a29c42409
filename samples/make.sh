#!/usr/bin/env bash
# Regenerates samples/session.pcap (see samples/README.md): speech from espeak-ng,
# resampled to 48 kHz mono 16-bit by sox, encoded with libopus by examples/make_sample.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
for tool in espeak-ng sox; do
  command -v $tool >/dev/null || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $tool; }
done
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
say() { # voice, text, output
  espeak-ng -v "$1" -s 150 -w "$tmp/raw.wav" "$2"
  sox "$tmp/raw.wav" -r 48000 -c 1 -b 16 "$3"
}
say en-us+f3 "Hello everyone, alice here in the global room. Can you hear me?" "$tmp/alice.wav"
say en-us+m3 "Loud and clear, alice. I am in red team too." "$tmp/bob.wav"
say en-gb+m1 "Dave joining red team. Ready when you are." "$tmp/dave.wav"
cargo run --release --quiet --example make_sample -- samples/session.pcap "$tmp/alice.wav" "$tmp/bob.wav" "$tmp/dave.wav"
echo "wrote samples/session.pcap"
