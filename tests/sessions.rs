//! Sessions with a misbehaving peer, a restarting server and stray datagrams: captures
//! built from the real three-friends capture with forged datagrams inserted (written with
//! `PcapWriter`), and the real restart capture against its truth file; `dump`, `check` and
//! `voice` run as users run them.

use std::net::SocketAddr;
use std::process::Command;

use dissonance_tools::capture::{
    CaptureReader, DecapConfig, Decapsulator, PcapWriter, TsResolution,
};
use dissonance_tools::codec::*;
use serde_json::Value;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/captures");

/// One UDP datagram of a capture.
#[derive(Clone)]
struct Dgram {
    ts_ns: i64,
    src: SocketAddr,
    dst: SocketAddr,
    data: Vec<u8>,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Every UDP payload of a capture, in order.
fn datagrams(name: &str) -> Vec<Dgram> {
    let mut reader = CaptureReader::open(format!("{DATA}/{name}")).unwrap();
    let mut decap = Decapsulator::new(DecapConfig::default());
    let mut out = Vec::new();
    while let Some(frame) = reader.next_frame() {
        decap.push(&frame.unwrap(), &mut |p| {
            out.push(Dgram {
                ts_ns: p.ts_ns,
                src: p.src,
                dst: p.dst,
                data: p.data.to_vec(),
            })
        });
    }
    out
}

/// Writes datagrams as a pcap file in a fresh temporary directory; returns its path.
fn write_pcap(name: &str, dgrams: &[Dgram]) -> String {
    let dir =
        std::env::temp_dir().join(format!("dissonance-sessions-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.pcap"));
    let mut w = PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap();
    for d in dgrams {
        w.write_udp(d.ts_ns, d.src, d.dst, &d.data).unwrap();
    }
    std::fs::write(&path, w.into_inner()).unwrap();
    path.to_string_lossy().into_owned()
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn ndjson(path: &str) -> Vec<Value> {
    let (code, out, err) = run(&["dump", path, "-F", "ndjson", "--events"]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check_json(path: &str) -> Value {
    let (_, out, err) = run(&["check", path, "-F", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"))
}

fn encode(m: Message<'_>) -> Vec<u8> {
    m.to_vec(Variant::Modern, 1024).unwrap()
}

/// A datagram sent 1 µs after `at` (the capture's own timestamps stay as they were).
fn forged(at: &Dgram, src: SocketAddr, dst: SocketAddr, data: Vec<u8>) -> Dgram {
    Dgram {
        ts_ns: at.ts_ns + 1_000,
        src,
        dst,
        data,
    }
}

/// Session events (not transport goodbyes) of a dump.
fn session_events(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l.get("event").is_some_and(|e| e != "transport_goodbye"))
        .cloned()
        .collect()
}

const TF_SESSION: u32 = 523124044;

/// A client that sends the server's message types (ErrorWrongSession, RemoveClient,
/// HandshakeResponse) stays a client: alice sends them after her handshake, carol before
/// hers. Every packet keeps its direction, the session is rebuilt exactly as from the
/// untouched capture (the forged RemoveClient removes nobody), and check reports each
/// forgery as D020.
#[test]
fn client_sending_server_types_stays_a_client() {
    let (server, alice, carol) = (addr(47200), addr(47201), addr(47203));
    let original = datagrams("three-friends.pcap");
    let hostile = |src: SocketAddr| {
        [
            encode(Message::ErrorWrongSession(ErrorWrongSession {
                session: 0x0BAD_0BAD,
            })),
            encode(Message::RemoveClient(RemoveClient {
                session: TF_SESSION,
                client_id: 1,
            })),
            encode(Message::HandshakeResponse(HandshakeResponse::modern(
                TF_SESSION,
                if src == alice { 7 } else { 8 },
            ))),
        ]
    };
    let mut built = Vec::new();
    let mut forged_numbers = Vec::new();
    for (i, d) in original.iter().enumerate() {
        let frame = i + 1;
        // Carol's handshake request is frame 541: she misbehaves just before it.
        if frame == 541 {
            for bytes in hostile(carol) {
                built.push(forged(&original[i - 1], carol, server, bytes));
                forged_numbers.push(built.len() as u64);
            }
        }
        built.push(d.clone());
        // Alice's ClientState to the server (frame 4), after her handshake.
        if frame == 4 {
            for bytes in hostile(alice) {
                built.push(forged(d, alice, server, bytes));
                forged_numbers.push(built.len() as u64);
            }
        }
    }
    assert_eq!(built.len(), original.len() + 6);
    let path = write_pcap("hostile", &built);

    let lines = ndjson(&path);
    let mut packets = 0;
    for l in lines.iter().filter(|l| l.get("event").is_none()) {
        let src = addr(l["src_port"].as_u64().unwrap() as u16);
        let want = if src == server {
            "server_to_client"
        } else {
            "client_to_server"
        };
        assert_eq!(l["direction"], want, "{l}");
        packets += 1;
    }
    assert_eq!(packets, 881 + 6);
    let from_carol: Vec<String> = lines
        .iter()
        .filter(|l| l.get("event").is_none() && l["src_port"] == 47203)
        .map(|l| format!("{} {}", l["type"].as_str().unwrap(), l["direction"]))
        .collect();
    assert_eq!(
        from_carol[..5],
        [
            "ErrorWrongSession \"client_to_server\"",
            "RemoveClient \"client_to_server\"",
            "HandshakeResponse \"client_to_server\"",
            "HandshakeRequest \"client_to_server\"",
            "ClientState \"client_to_server\"",
        ]
    );
    assert!(from_carol
        .iter()
        .any(|s| s == "ServerRelayReliable \"client_to_server\""));
    // The same session, clients, rooms and leaves as the untouched capture.
    let untouched = ndjson(&format!("{DATA}/three-friends.pcap"));
    assert_eq!(session_events(&lines), session_events(&untouched));

    let report = check_json(&path);
    let findings = report["findings"].as_array().unwrap();
    let got: Vec<(String, u64)> = findings
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_string(),
                f["number"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut want: Vec<(String, u64)> = forged_numbers.iter().map(|&n| ("D020".into(), n)).collect();
    want.sort_by_key(|w| w.1);
    assert_eq!(got, want, "{report}");
    for f in findings.iter().filter(|f| f["src"] == "127.0.0.1:47201") {
        assert_eq!(f["client"], "alice");
    }
}
