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

/// Session events (not notes about datagrams: goodbyes, empty ones) of a dump.
fn session_events(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| {
            l.get("event")
                .is_some_and(|e| e != "transport_goodbye" && e != "empty_datagram")
        })
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

fn restart_truth() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{DATA}/restart.truth.json")).unwrap())
        .unwrap()
}

/// The real server restarting (restart.pcap): dump emits server_restarted with both
/// sessions and the causing frame from the truth file; every frame's direction follows
/// the server's address; nobody leaves on purpose before the restart (alice and bob are
/// dropped by it, mallory too, though no RemoveClient names her); the clients' real
/// logs agree that they reconnected rather than quit.
#[test]
fn server_restart_is_an_event_with_its_cause() {
    let truth = restart_truth();
    let server = truth["server"].as_str().unwrap();
    let fatal = truth["fatal_frame"].as_u64().unwrap();
    let (old, new) = (
        truth["restart"]["old_session"].as_u64().unwrap(),
        truth["restart"]["new_session"].as_u64().unwrap(),
    );
    assert_eq!(truth["restart"]["caused_by_frame"], fatal);
    let lines = ndjson(&format!("{DATA}/restart.pcap"));

    let restarts: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "server_restarted")
        .collect();
    assert_eq!(restarts.len(), 1);
    let r = restarts[0];
    assert_eq!(r["old_session"], old);
    assert_eq!(r["new_session"], new);
    assert_eq!(r["session"], new);
    assert_eq!(r["server"], server);
    assert_eq!(r["cause"]["packet"], fatal);
    assert_eq!(r["cause"]["src"], "127.0.0.1:47666");
    // It comes right before the new session's first event.
    let at = lines
        .iter()
        .position(|l| l["event"] == "server_restarted")
        .unwrap();
    let started = lines
        .iter()
        .position(|l| l["event"] == "session_started" && l["session"] == new)
        .unwrap();
    assert!(at < started);

    // Every frame, malformed ones included, by the server's address.
    let mut frames = 0;
    for l in lines.iter().filter(|l| l.get("event").is_none()) {
        let src = format!("{}:{}", l["src"].as_str().unwrap(), l["src_port"]);
        let dst = format!("{}:{}", l["dst"].as_str().unwrap(), l["dst_port"]);
        let want = if src == server {
            "server_to_client"
        } else {
            assert_eq!(dst, server, "{l}");
            "client_to_server"
        };
        assert_eq!(l["direction"], want, "{l}");
        frames += 1;
    }
    assert_eq!(frames, 470);

    // Who left the old session, and why: the restart, not a goodbye or a removal.
    let left: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["event"] == "client_left" && l["session"] == old)
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let restarted = |n: &str| (n.to_string(), "server_restarted".to_string());
    assert_eq!(
        left,
        [restarted("alice"), restarted("bob"), restarted("mallory")]
    );
    // In the new session, alice and bob leave at the end with their goodbyes.
    let left_new: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["event"] == "client_left" && l["session"] == new)
        .map(|l| {
            (
                l["name"].as_str().unwrap().into(),
                l["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    let bye = |n: &str| (n.to_string(), "goodbye".to_string());
    assert_eq!(left_new, [bye("alice"), bye("bob")]);

    // The real processes' logs: the server restarted into the new session, and each
    // client reconnected (did not quit) before its new handshake.
    let log = |who: &str| -> Vec<Value> {
        std::fs::read_to_string(format!("{DATA}/restart.{who}.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let server_log = log("server");
    let ev: Vec<&Value> = server_log
        .iter()
        .filter(|e| e["event"] == "server_restarted")
        .collect();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["session"], new);
    for who in ["alice", "bob"] {
        assert!(
            log(who).iter().any(|e| e["event"] == "reconnecting"),
            "{who}"
        );
    }

    // The text form names the restart and its cause.
    let (code, text, err) = run(&["dump", &format!("{DATA}/restart.pcap")]);
    assert_eq!(code, 0, "{err}");
    let want = format!(
        "* server {server} restarted: session {old} (0x{old:08X}) -> {new} (0x{new:08X}), every client dropped; likely cause: packet {fatal} from 127.0.0.1:47666, which the real server's reader throws on"
    );
    assert!(text.contains(&want), "{text}");
    assert!(text.contains("* mallory(2) left (server_restarted)"));
    assert!(!text.contains("left (removed)"));
}

/// check reports the causing frame at error level with D050 (the echoes the server sent
/// each client before throwing stay D003), and nothing else at error level.
#[test]
fn check_reports_the_packet_that_restarted_the_server() {
    let truth = restart_truth();
    let fatal = truth["fatal_frame"].as_u64().unwrap();
    let report = check_json(&format!("{DATA}/restart.pcap"));
    let findings = report["findings"].as_array().unwrap();
    let got: Vec<(&str, &str, u64, u64)> = findings
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap(),
                f["severity"].as_str().unwrap(),
                f["number"].as_u64().unwrap(),
                f["repeats"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [("D003", "error", 405, 2), ("D050", "error", fatal, 0)]
    );
    let echoes: Vec<u64> = findings[0]["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["number"].as_u64().unwrap())
        .collect();
    assert_eq!(echoes, [405, 406, 407]);
    let d050 = &findings[1];
    assert_eq!(d050["name"], "fatal-to-server");
    assert_eq!(d050["client"], "mallory");
    assert_eq!(d050["session"], truth["restart"]["old_session"]);
    let rule = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "D050")
        .unwrap();
    assert_eq!(rule["occurrences"], 1);
    let (code, text, _) = run(&["check", &format!("{DATA}/restart.pcap")]);
    assert_eq!(code, 1);
    assert!(text.contains("ERROR D050 fatal-to-server: Packet the real server restarts on (1x)"));
}

/// `voice` follows alice across the restart: one WAV holding both her spurts (192 frames
/// in the old session, 21 in the new), not one file per session.
#[test]
fn voice_keeps_one_speaker_across_the_restart() {
    let dir =
        std::env::temp_dir().join(format!("dissonance-sessions-{}-voice", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.to_string_lossy().into_owned();
    let (code, _, err) = run(&["voice", &format!("{DATA}/restart.pcap"), "-o", &out]);
    assert_eq!(code, 0, "{err}");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["1633131490-0-alice.json", "1633131490-0-alice.wav"]);
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("1633131490-0-alice.json")).unwrap(),
    )
    .unwrap();
    let text = report.to_string();
    let spurts = find_array(&report, "spurts").expect(&text);
    let frames: Vec<(u64, u64)> = spurts
        .iter()
        .map(|s| {
            (
                s["session"].as_u64().unwrap(),
                s["frames"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(frames, [(1633131490, 192), (1633131490, 21)], "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The first array under `key` anywhere in a JSON value.
fn find_array<'v>(v: &'v Value, key: &str) -> Option<&'v Vec<Value>> {
    match v {
        Value::Object(m) => m
            .get(key)
            .and_then(Value::as_array)
            .or_else(|| m.values().find_map(|x| find_array(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_array(x, key)),
        _ => None,
    }
}

/// Empty and non-Dissonance datagrams on the three-friends flows: counted in the summary,
/// noted in dump (empty ones: text note and `empty_datagram` event), and reported by
/// check: the empty one to the server as D050 (fatal to the real server), the empty one to
/// a client as D003, the stray bytes as D001. The real server in this capture did not
/// restart, so nobody is shown leaving because of it.
#[test]
fn empty_and_stray_datagrams_are_counted_and_reported() {
    let (server, alice, bob) = (addr(47200), addr(47201), addr(47202));
    let original = datagrams("three-friends.pcap");
    let mut built = Vec::new();
    let mut numbers = Vec::new();
    for (i, d) in original.iter().enumerate() {
        built.push(d.clone());
        let extra = match i + 1 {
            100 => Some((bob, server, Vec::new())),
            200 => Some((alice, server, b"hello".to_vec())),
            300 => Some((server, alice, Vec::new())),
            _ => None,
        };
        if let Some((src, dst, data)) = extra {
            built.push(forged(d, src, dst, data));
            numbers.push(built.len() as u64);
        }
    }
    let path = write_pcap("stray", &built);

    let (code, summary, err) = run(&["dump", &path, "--summary", "--color", "never"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        summary.lines().next().unwrap(),
        "Payloads 887: 881 Dissonance packets (0 malformed), 3 transport goodbyes, 3 not Dissonance (2 empty and 1 other on Dissonance flows)"
    );
    let (_, text, _) = run(&["dump", &path, "--color", "never"]);
    let notes: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("empty datagram"))
        .collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0]
        .trim_start()
        .starts_with(&format!("{} ", numbers[0])));
    assert!(notes[0].contains("127.0.0.1:47202 -> 127.0.0.1:47200"));
    let lines = ndjson(&path);
    let empty: Vec<u64> = lines
        .iter()
        .filter(|l| l["event"] == "empty_datagram")
        .map(|l| l["packet"].as_u64().unwrap())
        .collect();
    assert_eq!(empty, [numbers[0], numbers[2]]);
    assert!(!lines.iter().any(|l| l["event"] == "server_restarted"));
    let untouched = ndjson(&format!("{DATA}/three-friends.pcap"));
    assert_eq!(session_events(&lines), session_events(&untouched));

    let report = check_json(&path);
    let got: Vec<(String, u64)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_string(),
                f["number"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = vec![
        ("D001".into(), numbers[1]),
        ("D003".into(), numbers[2]),
        ("D050".into(), numbers[0]),
    ];
    assert_eq!(got, want, "{report}");
}
