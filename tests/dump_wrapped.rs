//! The real capture's traffic re-wrapped by this test: inside a made-up game transport
//! header (offset detection) and over TCP with each length framing. `dump` must find
//! exactly the same packets as in the original capture.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use dissonance_tools::capture::{
    CaptureReader, DecapConfig, Decapsulator, PcapWriter, TcpFlags, TsResolution,
};

const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/captures/three-friends.pcap"
);

/// (ts, src, dst, payload) of every UDP datagram in the real capture.
fn datagrams() -> Vec<(i64, SocketAddr, SocketAddr, Vec<u8>)> {
    let mut reader = CaptureReader::new(std::fs::File::open(CAPTURE).unwrap()).unwrap();
    let mut decap = Decapsulator::new(DecapConfig::default());
    let mut out = Vec::new();
    while let Some(frame) = reader.next_frame() {
        decap.push(&frame.unwrap(), &mut |p| {
            out.push((p.ts_ns, p.src, p.dst, p.data.to_vec()))
        });
    }
    assert_eq!(out.len(), 884);
    out
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dissonance-wrapped-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Counts of (direction, type(inner)) as dump reports them.
fn counts(path: &Path, extra: &[&str]) -> BTreeMap<(String, String), u64> {
    let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(["dump", path.to_str().unwrap(), "--format", "ndjson"])
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = BTreeMap::new();
    for l in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["malformed"], false, "{v}");
        let mut t = v["type"].as_str().unwrap().to_string();
        if let Some(i) = v.get("inner") {
            t = format!("{t}({})", i["type"].as_str().unwrap());
        }
        *c.entry((v["direction"].as_str().unwrap().to_string(), t))
            .or_default() += 1;
    }
    c
}

#[test]
fn game_header_offset_is_detected_and_locked() {
    let original = counts(Path::new(CAPTURE), &[]);
    assert_eq!(original.values().sum::<u64>(), 881);
    let path = tmp("game.pcap");
    let mut w = PcapWriter::new(
        std::fs::File::create(&path).unwrap(),
        TsResolution::Microsecond,
    )
    .unwrap();
    for (i, (ts, src, dst, data)) in datagrams().iter().enumerate() {
        // A made-up 12-byte game header: tag, channel, sequence, length.
        let mut p = b"GAME".to_vec();
        p.extend_from_slice(&(i as u16 % 2).to_le_bytes());
        p.extend_from_slice(&(i as u16).to_le_bytes());
        p.extend_from_slice(&(data.len() as u32).to_le_bytes());
        p.extend_from_slice(data);
        w.write_udp(*ts, *src, *dst, &p).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    assert_eq!(counts(&path, &[]), original, "auto detection");
    assert_eq!(
        counts(&path, &["--payload", "offset:12"]),
        original,
        "fixed offset"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(["dump", path.to_str().unwrap(), "--flows"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    // alice -> server carries 1 handshake, 1 state, 215 voice relays; all at offset 12.
    let line = text
        .lines()
        .find(|l| l.contains("udp 127.0.0.1:47201 -> 127.0.0.1:47200"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("@12 x217"), "{line}");
    assert!(line.contains("┆ 12 "), "locked offset: {line}");
    assert!(line.contains("high"), "{line}");
}

#[test]
fn tcp_with_each_framing() {
    let original = counts(Path::new(CAPTURE), &[]);
    let all = datagrams();
    for (framing, prefix) in [
        (
            "u16be",
            &(|n: usize| (n as u16).to_be_bytes().to_vec()) as &dyn Fn(usize) -> Vec<u8>,
        ),
        ("u16le", &|n: usize| (n as u16).to_le_bytes().to_vec()),
        ("u32be", &|n: usize| (n as u32).to_be_bytes().to_vec()),
        ("u32le", &|n: usize| (n as u32).to_le_bytes().to_vec()),
    ] {
        let path = tmp(&format!("tcp-{framing}.pcap"));
        let mut w = PcapWriter::new(
            std::fs::File::create(&path).unwrap(),
            TsResolution::Microsecond,
        )
        .unwrap();
        let mut seqs: BTreeMap<(SocketAddr, SocketAddr), u32> = BTreeMap::new();
        for (ts, src, dst, data) in &all {
            let seq = seqs.entry((*src, *dst)).or_insert_with(|| {
                w.write_tcp(
                    *ts,
                    *src,
                    *dst,
                    1000,
                    TcpFlags {
                        syn: true,
                        ..TcpFlags::NONE
                    },
                    &[],
                )
                .unwrap();
                1001
            });
            let mut p = prefix(data.len());
            p.extend_from_slice(data);
            // Each message split in two segments to exercise reassembly.
            let cut = p.len() / 2;
            w.write_tcp(*ts, *src, *dst, *seq, TcpFlags::NONE, &p[..cut])
                .unwrap();
            w.write_tcp(
                *ts,
                *src,
                *dst,
                *seq + cut as u32,
                TcpFlags::NONE,
                &p[cut..],
            )
            .unwrap();
            *seq += p.len() as u32;
        }
        w.flush().unwrap();
        drop(w);
        assert_eq!(
            counts(&path, &["--tcp-framing", framing]),
            original,
            "{framing}"
        );
    }
}

#[test]
fn malformed_and_foreign_datagrams_are_reported_not_dropped() {
    let all = datagrams();
    let path = tmp("bad.pcap");
    let mut w = PcapWriter::new(
        std::fs::File::create(&path).unwrap(),
        TsResolution::Microsecond,
    )
    .unwrap();
    let (ts, src, dst, hello) = &all[0];
    w.write_udp(*ts, *src, *dst, hello).unwrap();
    // Magic and type of a HandshakeRequest, cut inside the name.
    w.write_udp(*ts + 1000, *src, *dst, &hello[..16]).unwrap();
    // DNS-looking traffic on another port.
    let other: SocketAddr = "127.0.0.1:53".parse().unwrap();
    w.write_udp(*ts + 2000, *src, other, b"\x12\x34\x01\x00\x00\x01")
        .unwrap();
    w.flush().unwrap();
    drop(w);

    let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(["dump", path.to_str().unwrap(), "--format", "ndjson"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["malformed"], true);
    assert_eq!(lines[1]["type"], "HandshakeRequest");
    assert_eq!(
        lines[1]["error"]["message"],
        "HandshakeRequest: truncated at byte 14 reading name: need 5 bytes, 2 left"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(["dump", path.to_str().unwrap(), "--summary"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Payloads 3: 2 Dissonance packets (1 malformed), 0 transport goodbyes, 1 not Dissonance"),
        "{text}"
    );
}

#[test]
fn trailing_bytes_are_reported_whether_or_not_another_packet_follows() {
    // RemoveClient + 2 stray bytes; then the same followed by a second packet (a game that
    // batches packets in one datagram), located by the scan.
    let remove =
        dissonance_tools::output::hex::parse("8bc70a12345678 0001".replace(' ', "").as_str())
            .unwrap();
    let mut one = remove.clone();
    one.extend_from_slice(&[0xee, 0xff]);
    let mut two = one.clone();
    two.extend_from_slice(&remove);
    let path = tmp("trailing.pcap");
    let mut w = PcapWriter::new(
        std::fs::File::create(&path).unwrap(),
        TsResolution::Microsecond,
    )
    .unwrap();
    let (a, b): (SocketAddr, SocketAddr) = (
        "127.0.0.1:5000".parse().unwrap(),
        "127.0.0.1:6000".parse().unwrap(),
    );
    w.write_udp(1_000_000_000, a, b, &one).unwrap();
    w.write_udp(2_000_000_000, a, b, &two).unwrap();
    drop(w);
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
            .args(["dump", path.to_str().unwrap(), "--format", "ndjson"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8(out.stdout).unwrap()
    };
    let threaded = run(&[]);
    assert_eq!(threaded, run(&["--line-buffered"]));
    let recs: Vec<serde_json::Value> = threaded
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let fields = |v: &serde_json::Value| {
        (
            v["packet"].as_u64().unwrap(),
            v["payload_offset"].as_u64().unwrap(),
            v["size"].as_u64().unwrap(),
            v["bytes_read"].as_u64().unwrap(),
            v["trailing_bytes"].as_u64().unwrap(),
            v.get("trailing_hex")
                .and_then(|t| t.as_str())
                .map(str::to_string),
        )
    };
    let got: Vec<_> = recs.iter().map(fields).collect();
    let eeff = Some("eeff".to_string());
    assert_eq!(
        got,
        [
            (1, 0, 11, 9, 2, eeff.clone()),
            (2, 0, 11, 9, 2, eeff),
            (2, 11, 9, 9, 0, None)
        ]
    );
}
