//! `dissonance dump` on the real capture (tests/data/captures/three-friends.pcap: a real
//! Dissonance 9.0.8 server and three real clients) against its truth file.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

/// -Y, -T fields, -c/--skip/--from/--to and -w.
#[path = "dump/filter.rs"]
mod filter;

const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/captures/three-friends.pcap"
);
const TRUTH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/captures/three-friends.truth.json"
);

fn dump(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .arg("dump")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn truth() -> Value {
    serde_json::from_str(&std::fs::read_to_string(TRUTH).unwrap()).unwrap()
}

fn ndjson(args: &[&str]) -> Vec<Value> {
    let (code, out, err) = dump(args);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn per_type_counts_match_the_truth_file() {
    let truth = truth();
    let lines = ndjson(&[CAPTURE, "--format", "ndjson", "--events"]);
    let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for l in &lines {
        let (dir, label) = if l.get("event").is_some() {
            if l["event"] != "transport_goodbye" {
                continue;
            }
            ("client_to_server".to_string(), "BYE".to_string())
        } else {
            assert_eq!(l["malformed"], false, "{l}");
            let label = match l.get("inner") {
                Some(i) => format!(
                    "{}({})",
                    l["type"].as_str().unwrap(),
                    i["type"].as_str().unwrap()
                ),
                None => l["type"].as_str().unwrap().to_string(),
            };
            (l["direction"].as_str().unwrap().to_string(), label)
        };
        *counts.entry(dir).or_default().entry(label).or_default() += 1;
    }
    let pc = &truth["packet_counts"];
    for dir in ["client_to_server", "server_to_client"] {
        let want: BTreeMap<String, u64> = pc[dir]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        assert_eq!(counts[dir], want, "{dir}");
    }
    assert_eq!(
        counts.len(),
        2,
        "no packet of unknown direction: {counts:?}"
    );
    let packets = lines.iter().filter(|l| l.get("event").is_none()).count();
    assert_eq!(packets as u64, pc["dissonance_packets"].as_u64().unwrap());
}

#[test]
fn session_clients_and_rooms_match_the_truth_file() {
    let truth = truth();
    let lines = ndjson(&[CAPTURE, "--format", "ndjson", "--events"]);
    let events: Vec<&Value> = lines.iter().filter(|l| l.get("event").is_some()).collect();

    let sessions: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "session_started")
        .map(|e| e["session"].as_u64().unwrap())
        .collect();
    assert_eq!(sessions, [truth["server"]["session_id"].as_u64().unwrap()]);
    let server = events
        .iter()
        .find(|e| e["event"] == "session_started")
        .unwrap();
    assert_eq!(server["server"], truth["server"]["addr"]);

    // Clients: name, id and address, in join order.
    let joined: Vec<(String, u64, String)> = events
        .iter()
        .filter(|e| e["event"] == "client_joined")
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["client_id"].as_u64().unwrap(),
                e["addr"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, u64, String)> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| {
            let c = &truth["clients"][n];
            (
                n.to_string(),
                c["ids"][0]["client_id"].as_u64().unwrap(),
                c["addr"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(joined, want);

    // Room joins and leaves in wire order, derived from the truth's membership events:
    // a ClientState joins its rooms, a goodbye leaves every room still held.
    let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut want = Vec::new();
    for e in truth["membership_events"].as_array().unwrap() {
        let client = e["client"].as_str().unwrap_or("").to_string();
        match e["event"].as_str().unwrap() {
            "client_state" => {
                for r in e["rooms"].as_array().unwrap() {
                    let r = r.as_str().unwrap().to_string();
                    held.entry(client.clone()).or_default().push(r.clone());
                    want.push(("room_joined".to_string(), client.clone(), r));
                }
            }
            "join_room" => {
                let r = e["room"].as_str().unwrap().to_string();
                held.entry(client.clone()).or_default().push(r.clone());
                want.push(("room_joined".into(), client, r));
            }
            "leave_room" => {
                let r = e["room"].as_str().unwrap().to_string();
                held.entry(client.clone()).or_default().retain(|x| *x != r);
                want.push(("room_left".into(), client, r));
            }
            "transport_bye" => {
                let mut rooms = held.remove(&client).unwrap_or_default();
                rooms.sort();
                for r in rooms {
                    want.push(("room_left".into(), client.clone(), r));
                }
                want.push(("client_left".into(), client, "goodbye".into()));
            }
            _ => {}
        }
    }
    let got: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| {
            ["room_joined", "room_left", "client_left"].contains(&e["event"].as_str().unwrap())
        })
        .map(|e| {
            let third = e
                .get("room")
                .or(e.get("reason"))
                .unwrap()
                .as_str()
                .unwrap()
                .to_string();
            (
                e["event"].as_str().unwrap().to_string(),
                e["name"].as_str().unwrap().to_string(),
                third,
            )
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn texts_and_voice_are_annotated_with_names() {
    let truth = truth();
    let lines = ndjson(&[CAPTURE, "--format", "ndjson", "--type", "TextData"]);
    let t = &truth["texts"][0];
    // One relay from carol, then one forwarded copy to each of alice and bob.
    assert_eq!(lines.len(), 3);
    let relay = &lines[0];
    assert_eq!(relay["type"], "ServerRelayReliable");
    assert_eq!(relay["packet"].as_u64(), t["sent"]["frame"].as_u64());
    let inner = &relay["inner"];
    assert_eq!(inner["sender_name"], t["sender"]);
    assert_eq!(inner["target"], t["target_id"]);
    assert_eq!(inner["target_name"], t["target_name"]);
    assert_eq!(inner["text"], t["text"]);
    for (l, d) in lines[1..].iter().zip(t["delivered"].as_array().unwrap()) {
        assert_eq!(l["type"], "TextData");
        assert_eq!(l["packet"].as_u64(), d["frame"].as_u64());
        assert_eq!(l["text"], t["text"]);
        assert_eq!(l["direction"], "server_to_client");
        let to = truth["clients"][d["to"].as_str().unwrap()]["addr"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            format!("{}:{}", l["dst"].as_str().unwrap(), l["dst_port"]),
            to
        );
    }

    // alice's voice relayed to bob: 215 frames, to room Global.
    let voice = ndjson(&[
        CAPTURE,
        "--format",
        "ndjson",
        "--client",
        "alice",
        "--type",
        "ServerRelayUnreliable",
    ]);
    let alice: Vec<&Value> = voice
        .iter()
        .filter(|l| l["inner"]["sender_name"] == "alice")
        .collect();
    assert_eq!(alice.len(), 215);
    assert_eq!(alice[0]["inner"]["channels"][0]["recipient_name"], "Global");
    assert_eq!(
        alice[0]["packet"].as_u64(),
        truth["voice_streams"][0]["first_packet"]["frame"].as_u64()
    );
}

#[test]
fn text_output_and_summary() {
    let (code, out, _) = dump(&[CAPTURE, "--color", "never"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("alice(0) joined from 127.0.0.1:47201"),
        "{}",
        &out[..2000]
    );
    assert!(
        out.contains("TextData carol(2) -> room Global: \"Hi all, carol here - sorry I am late!\"")
    );
    assert!(out.contains("carol(2) stopped listening to room Global"));
    let (code, out, _) = dump(&[CAPTURE, "--summary"]);
    assert_eq!(code, 0);
    assert!(out.contains("Payloads 884: 881 Dissonance packets (0 malformed), 3 transport goodbyes, 0 not Dissonance"), "{out}");
    assert!(out.contains("523124044"));
    assert!(out.contains("Red Team"));
}

#[test]
fn json_array_and_table_formats() {
    let (code, out, _) = dump(&[CAPTURE, "--format", "json", "--type", "HandshakeRequest"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    let (code, out, _) = dump(&[CAPTURE, "--format", "table", "--type", "RemoveClient"]);
    assert_eq!(code, 0);
    assert_eq!(out.matches("RemoveClient carol(2)").count(), 2, "{out}");
    assert_eq!(out.matches("RemoveClient bob(1)").count(), 1, "{out}");
}

#[test]
fn damaged_and_missing_captures() {
    let dir = std::env::temp_dir().join(format!("dissonance-dump-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(CAPTURE).unwrap();
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (code, out, err) = dump(&[cut.to_str().unwrap(), "--format", "ndjson"]);
    assert_eq!(code, 1, "{err}");
    assert!(out.lines().count() > 100);
    assert!(err.contains("packet") && err.contains("byte"), "{err}");
    let (code, _, err) = dump(&["/nonexistent.pcap"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot open /nonexistent.pcap"), "{err}");
    let junk = dir.join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture file at all").unwrap();
    let (code, _, err) = dump(&[junk.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn shipped_sample_session() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/session.pcap");
    let lines = ndjson(&[sample, "--format", "ndjson", "--events"]);
    let joined: Vec<(&str, u64)> = lines
        .iter()
        .filter(|e| e["event"] == "client_joined")
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["client_id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        joined,
        [("alice", 0), ("bob", 1), ("carol", 2), ("dave", 3)]
    );
    let texts: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "ServerRelayReliable")
        .map(|l| l["inner"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["carol here, switching to Red Team", "welcome dave"]);
    let packets = lines.iter().filter(|l| l.get("event").is_none()).count();
    let byes = lines
        .iter()
        .filter(|l| l["event"] == "transport_goodbye")
        .count();
    assert_eq!((packets, byes), (1582, 4));
    assert!(lines
        .iter()
        .all(|l| l.get("malformed").is_none() || l["malformed"] == false));
}

#[test]
fn threaded_json_equals_the_single_threaded_writer_byte_for_byte() {
    // Without --line-buffered, JSON is formatted on worker threads; with it, in line.
    for format in ["ndjson", "json"] {
        for extra in [&[][..], &["--events", "--hex"][..]] {
            let mut args = vec![CAPTURE, "--format", format];
            args.extend_from_slice(extra);
            let (c1, threaded, e1) = dump(&args);
            args.push("--line-buffered");
            let (c2, inline, e2) = dump(&args);
            assert_eq!((c1, c2), (0, 0), "{e1}{e2}");
            assert_eq!(threaded, inline, "{format} {extra:?}");
        }
    }
}

#[test]
fn payload_bytes_only_with_hex() {
    let plain = ndjson(&[CAPTURE, "--format", "ndjson", "--type", "VoiceData"]);
    let hex = ndjson(&[
        CAPTURE,
        "--format",
        "ndjson",
        "--type",
        "VoiceData",
        "--hex",
    ]);
    assert_eq!(plain.len(), hex.len());
    let relay = |v: &Vec<Value>| {
        v.iter()
            .find(|r| r["type"] == "ServerRelayUnreliable")
            .unwrap()
            .clone()
    };
    let (p, h) = (relay(&plain), relay(&hex));
    assert!(p.get("payload_hex").is_none() && p["inner"].get("audio_hex").is_none());
    let payload = h["payload_hex"].as_str().unwrap();
    let audio = h["inner"]["audio_hex"].as_str().unwrap();
    assert_eq!(
        payload.len(),
        2 * h["payload_len"].as_u64().unwrap() as usize
    );
    assert!(payload.ends_with(audio), "{payload} / {audio}");
    // Everything else is the same record.
    let mut h2 = h.clone();
    h2.as_object_mut().unwrap().remove("payload_hex");
    h2["inner"].as_object_mut().unwrap().remove("audio_hex");
    assert_eq!(p, h2);
}
