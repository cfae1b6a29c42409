//! Game-transport decapsulation against the three re-carried captures of the real
//! three-friends session (Mirror/kcp2k, NGO/Unity Transport, FishNet/LiteNetLib):
//! every Dissonance packet found exactly once at the frame and offset of the truth
//! file (split packets joined), nothing else found, retransmitted copies reported as
//! such, every client's disconnect seen.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use dissonance_tools::capture::{CaptureReader, DecapConfig, Decapsulator};
use dissonance_tools::dissect::transport::{Detector, Event, Stack, StackDecoder};
use serde_json::Value;

fn data(name: &str) -> String {
    format!(
        "{}/tests/data/captures/transports/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// (frame, offset, last frame, bytes as hex)
type Key = (u64, usize, u64, String);

#[derive(Default)]
struct Seen {
    packets: Vec<Key>,
    /// (frame, offset, bytes, original frame)
    retransmitted: Vec<(u64, usize, String, u64)>,
    retransmissions: u64,
    /// Flows (src, dst) with a disconnect, and the frame.
    disconnects: Vec<(SocketAddr, SocketAddr, u64)>,
    problems: Vec<String>,
    /// The stack `auto` detection decided per flow.
    detected: BTreeMap<(SocketAddr, SocketAddr), Option<Stack>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads a capture and decodes every flow with `stack`.
fn run(name: &str, stack: Stack) -> Seen {
    let bytes = std::fs::read(data(name)).unwrap();
    let mut reader = CaptureReader::new(&bytes[..]).unwrap();
    let mut decap = Decapsulator::new(DecapConfig::default());
    let mut flows: BTreeMap<(SocketAddr, SocketAddr), (StackDecoder, Detector)> = BTreeMap::new();
    let mut seen = Seen::default();
    let mut last = 0;
    while let Some(frame) = reader.next_frame() {
        let frame = frame.unwrap();
        last = frame.number;
        decap.push(&frame, &mut |p| {
            let (dec, det) = flows
                .entry((p.src, p.dst))
                .or_insert_with(|| (StackDecoder::new(stack), Detector::default()));
            det.observe(p.data);
            let (src, dst) = (p.src, p.dst);
            dec.push(p.frame_number, p.ts_ns, p.data, &mut |e| {
                record(&mut seen, src, dst, e)
            });
        });
    }
    for (&(src, dst), (dec, det)) in flows.iter_mut() {
        dec.finish(last, &mut |e| record(&mut seen, src, dst, e));
        seen.detected.insert((src, dst), det.decided().map(|d| d.0));
    }
    seen
}

fn record(seen: &mut Seen, src: SocketAddr, dst: SocketAddr, e: Event<'_>) {
    match e {
        Event::Packet(c) => seen
            .packets
            .push((c.frame, c.offset, c.last_frame, hex(c.bytes))),
        Event::Retransmission { .. } => seen.retransmissions += 1,
        Event::Retransmitted {
            packet,
            original_frame,
        } => seen.retransmitted.push((
            packet.frame,
            packet.offset,
            hex(packet.bytes),
            original_frame.unwrap_or(0),
        )),
        Event::Disconnect { frame } => seen.disconnects.push((src, dst, frame)),
        other => seen.problems.push(format!("{src}->{dst}: {other:?}")),
    }
}

struct Truth {
    packets: Vec<Key>,
    retransmitted: Vec<(u64, usize, String, u64)>,
    retransmitted_frames: usize,
    disconnect_flows: Vec<(SocketAddr, SocketAddr)>,
    clients: Vec<SocketAddr>,
}

fn truth(name: &str) -> Truth {
    let t: Value = serde_json::from_slice(&std::fs::read(data(name)).unwrap()).unwrap();
    let mut packets = vec![];
    let mut retransmitted = vec![];
    let mut retransmitted_frames = 0;
    let mut disconnect_flows = vec![];
    // The frame completing each split packet, by the frame its first piece is in.
    let mut split_end = BTreeMap::new();
    for f in t["frames"].as_array().unwrap() {
        for d in f["dissonance"].as_array().unwrap() {
            if let Some(from) = d["continues_from_frame"].as_u64() {
                split_end.insert(from, f["frame"].as_u64().unwrap());
            }
        }
    }
    for f in t["frames"].as_array().unwrap() {
        let frame = f["frame"].as_u64().unwrap();
        let flow = (
            f["src"].as_str().unwrap().parse().unwrap(),
            f["dst"].as_str().unwrap().parse().unwrap(),
        );
        if f["what"].as_str().unwrap().ends_with("-disconnect") && !disconnect_flows.contains(&flow)
        {
            disconnect_flows.push(flow);
        }
        retransmitted_frames += usize::from(f["retransmission"] == true);
        for d in f["dissonance"].as_array().unwrap() {
            let Some(offset) = d["offset"].as_u64() else {
                continue; // the second piece of a split packet
            };
            let key_hex = d["hex"].as_str().unwrap().to_string();
            let offset = offset as usize;
            if let Some(orig) = d["retransmission_of_frame"].as_u64() {
                retransmitted.push((frame, offset, key_hex, orig));
            } else {
                let last = if d["split"] == true {
                    split_end[&frame]
                } else {
                    frame
                };
                packets.push((frame, offset, last, key_hex));
            }
        }
    }
    let clients = t["summary"]["clients"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    Truth {
        packets,
        retransmitted,
        retransmitted_frames,
        disconnect_flows,
        clients,
    }
}

fn check(name: &str, stack: Stack) {
    let t = truth(&format!("{name}.truth.json"));
    let mut seen = run(&format!("{name}.pcap"), stack);
    assert_eq!(t.packets.len(), 881, "{name}: truth packets");
    assert_eq!(seen.problems, Vec::<String>::new(), "{name}: problems");
    seen.packets.sort();
    let mut want = t.packets.clone();
    want.sort();
    let missing: Vec<_> = want.iter().filter(|k| !seen.packets.contains(k)).collect();
    let extra: Vec<_> = seen.packets.iter().filter(|k| !want.contains(k)).collect();
    assert!(missing.is_empty(), "{name}: missing {missing:?}");
    assert!(extra.is_empty(), "{name}: false positives {extra:?}");
    assert_eq!(seen.packets, want, "{name}: each exactly once");
    // One joined packet (Mirror, NGO) or none (FishNet).
    let joined = seen.packets.iter().filter(|k| k.0 != k.2).count();
    assert_eq!(
        joined,
        usize::from(stack != Stack::FishNetTugboat),
        "{name}"
    );
    seen.retransmitted.sort();
    let mut want = t.retransmitted.clone();
    want.sort();
    assert_eq!(seen.retransmitted, want, "{name}: retransmitted copies");
    assert_eq!(want.len(), 3, "{name}");
    assert!(
        seen.retransmissions >= t.retransmitted_frames as u64,
        "{name}"
    );
    let flows: Vec<_> = seen.disconnects.iter().map(|d| (d.0, d.1)).collect();
    let mut want = t.disconnect_flows.clone();
    want.sort();
    let mut got = flows.clone();
    got.sort();
    assert_eq!(got, want, "{name}: one disconnect per disconnecting flow");
    for c in &t.clients {
        assert!(
            flows.iter().any(|f| f.0 == *c || f.1 == *c),
            "{name}: {c} never left"
        );
    }
    // `auto` detection settles every flow on the right stack.
    for (flow, got) in &seen.detected {
        assert_eq!(*got, Some(stack), "{name}: flow {flow:?}");
    }
}

#[test]
fn mirror_kcp2k() {
    check("mirror-kcp2k", Stack::MirrorKcp2k);
}

#[test]
fn ngo_utp() {
    check("ngo-utp", Stack::NgoUtp);
}

#[test]
fn fishnet_tugboat() {
    check("fishnet-tugboat", Stack::FishNetTugboat);
}

/// The CLI end to end, as a user runs it: with the stack named and with `auto`, dump
/// finds the plain capture's 881 packets with the same per-direction counts, rooms and
/// leaves; check finds nothing; the trimmed voice mix is the plain capture's, bit for bit.
#[test]
fn cli_matches_the_plain_capture() {
    let bin = env!("CARGO_BIN_EXE_dissonance");
    let plain = format!(
        "{}/tests/data/captures/three-friends.pcap",
        env!("CARGO_MANIFEST_DIR")
    );
    let run = |args: &[&str]| {
        let o = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    // From the rooms table on: rooms, per client (bytes sent differ: transport
    // headers count), messages by direction.
    let section = |s: &str, from: &str, to: &str| {
        let a = s.find(from).unwrap();
        let b = s[a..].find(to).map_or(s.len(), |b| a + b);
        s[a..b].to_string()
    };
    let want = run(&["dump", &plain, "--summary", "--color", "never"]);
    let tmp = std::env::temp_dir().join(format!("dissonance-transports-{}", std::process::id()));
    let mix = |cap: &str, args: &[&str], dir: &str| {
        let out = tmp.join(dir);
        let mut a = vec!["voice", cap, "-o", out.to_str().unwrap(), "--mix", "--trim"];
        a.extend_from_slice(args);
        run(&a);
        std::fs::read(out.join("mix.wav")).unwrap()
    };
    let want_mix = mix(&plain, &[], "plain");
    for (name, word) in [
        ("mirror-kcp2k", "mirror"),
        ("ngo-utp", "ngo"),
        ("fishnet-tugboat", "fishnet"),
    ] {
        let cap = data(&format!("{name}.pcap"));
        for mode in [word, "auto"] {
            let got = run(&[
                "dump",
                &cap,
                "--summary",
                "--color",
                "never",
                "--payload",
                mode,
            ]);
            assert!(
                got.contains(": 881 Dissonance packets (0 malformed)"),
                "{name} {mode}"
            );
            assert_eq!(
                section(&got, "\nRooms\n", "Per client"),
                section(&want, "\nRooms\n", "Per client"),
                "{name} {mode}"
            );
            assert_eq!(
                section(&got, "Messages by direction", "Capture:"),
                section(&want, "Messages by direction", "Capture:"),
                "{name} {mode}"
            );
            // Every client left, by the stack's own disconnect.
            let events = run(&["dump", &cap, "-F", "ndjson", "--events", "--payload", mode]);
            let left = events
                .lines()
                .filter(|l| {
                    l.contains(r#""event":"client_left""#)
                        && l.contains(r#""reason":"transport_disconnect""#)
                })
                .count();
            assert_eq!(left, 3, "{name} {mode}");
            let check = run(&["check", &cap, "--payload", mode]);
            assert!(check.contains(": 0 error(s)"), "{name} {mode}: {check}");
            assert_eq!(
                mix(&cap, &["--payload", mode], &format!("{name}-{mode}")),
                want_mix,
                "{name} {mode}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Runs the CLI; stdout.
fn cli(args: &[&str]) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The ndjson objects of `dump` with an `event` field equal to `kind`.
fn events_of(out: &str, kind: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == kind)
        .collect()
}

/// dump prints each retransmitted copy as its own record (not a packet), counts the
/// copies in the summary, and shows where a joined packet started; with the magic
/// scan alone, the first half of the split packet is reported cut, with its bytes.
#[test]
fn cli_transport_records() {
    let cap = data("mirror-kcp2k.pcap");
    let out = cli(&["dump", &cap, "-F", "ndjson", "--payload", "mirror"]);
    let copies: Vec<_> = events_of(&out, "retransmission")
        .iter()
        .map(|v| {
            (
                v["packet"].as_u64().unwrap(),
                v["original_packet"].as_u64().unwrap(),
                v["payload_offset"].as_u64().unwrap(),
                v["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let t = truth("mirror-kcp2k.truth.json");
    let mut want: Vec<_> = t
        .retransmitted
        .iter()
        .map(|r| (r.0, r.3, r.1 as u64))
        .collect();
    want.sort();
    let got: Vec<_> = copies.iter().map(|c| (c.0, c.1, c.2)).collect();
    assert_eq!(got, want);
    assert_eq!(
        copies.iter().map(|c| c.3.as_str()).collect::<Vec<_>>(),
        ["ClientState", "ServerRelayReliable", "TextData"]
    );
    // The joined packet: printed at the frame completing it, starting in the one before.
    let joined: Vec<_> = t.packets.iter().filter(|k| k.0 != k.2).collect();
    assert_eq!(joined.len(), 1);
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["first_packet"].is_u64())
        .filter(|v| v["first_packet"] == joined[0].0 && v["payload_offset"] == joined[0].1)
        .collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["packet"], joined[0].2);
    let text = cli(&["dump", &cap, "--payload", "mirror", "--color", "never"]);
    assert!(text.contains(&format!("from #{}@{} ", joined[0].0, joined[0].1)));
    assert_eq!(
        text.matches("retransmitted copy of").count(),
        3,
        "text lines"
    );
    let summary = cli(&["dump", &cap, "--payload", "mirror", "--summary"]);
    assert!(summary.contains(
        "Retransmitted copies 3 (not counted as packets), cut packets 0, transport units lost 0"
    ));
    // The scan: the split packet's first piece, cut at the datagram's end.
    let out = cli(&["dump", &cap, "-F", "ndjson", "--payload", "scan"]);
    let cut = events_of(&out, "cut");
    assert_eq!(cut.len(), 1, "{cut:?}");
    let (frame, offset, _, hex) = joined[0];
    assert_eq!(cut[0]["packet"], *frame);
    assert_eq!(cut[0]["payload_offset"], *offset);
    assert_eq!(cut[0]["reason"], "truncated");
    assert!(cut[0]["announced"].is_null());
    let present = cut[0]["hex"].as_str().unwrap();
    assert!(
        present.len() < hex.len() && hex.starts_with(present),
        "{present} {hex}"
    );
    assert_eq!(cut[0]["size"], present.len() / 2);
    let summary = cli(&["dump", &cap, "--payload", "scan", "--summary"]);
    assert!(summary.contains("cut packets 1,"), "{summary}");
}
