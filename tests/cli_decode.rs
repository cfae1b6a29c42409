//! End-to-end tests of `dissonance decode`, running the real binary.

use std::io::Write;
use std::process::{Command, Stdio};

fn dissonance(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

const HANDSHAKE: &str = "8bc70401000003c00000bb800006616c696365";

#[test]
fn decodes_a_handshake_request_as_text() {
    let (code, out, _) = dissonance(&["decode", HANDSHAKE], None);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "HandshakeRequest (19 bytes, 6.1+ byte order)\n  \
         name:        \"alice\"\n  \
         codec:       Opus, 960 samples (20 ms), 48000 Hz\n\n"
    );
}

#[test]
fn decodes_a_handshake_request_as_json() {
    let (code, out, _) = dissonance(&["decode", "--json", HANDSHAKE], None);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "magic_ok": true, "variant": "modern", "type": "HandshakeRequest", "type_byte": 4,
            "size": 19, "bytes_read": 19, "trailing_bytes": 0,
            "codec": {"codec": 1, "codec_name": "Opus", "frame_size": 960, "sample_rate": 48000},
            "name": "alice"
        })
    );
}

#[test]
fn names_rooms_and_clients_found_in_the_input() {
    // A ClientState naming alice (id 0) in room Global, then a voice relay to Global.
    let input = "# comment line\n\
        8bc7011f2e3d4c0006616c696365000001000003c00000bb8000010007476c6f62616c\n\
        8bc7081f2e3d4c01000100208bc7021f2e3d4c0000800000000180017518000c480be65143f7f5b05d2abf70\n";
    let (code, out, _) = dissonance(&["decode", "--stdin", "--json"], Some(input));
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let inner = &lines[1]["inner"];
    assert_eq!(inner["type"], "VoiceData");
    assert_eq!(inner["sender_name"], "alice");
    assert_eq!(inner["channels"][0]["recipient"], 29976);
    assert_eq!(inner["channels"][0]["recipient_name"], "Global");
    assert_eq!(lines[1]["server_relay_verdict"], "relay");
}

#[test]
fn malformed_packets_are_reported_with_field_and_offset() {
    let (code, out, err) = dissonance(&["decode", "8bc70401000003c00000bb800006616c"], None);
    assert_eq!(code, 1);
    assert!(out.contains(
        "MALFORMED (16 bytes): HandshakeRequest: truncated at byte 14 reading name: need 5 bytes, 2 left"
    ), "{out}");
    assert!(err.contains("1 of 1 packets malformed"));
    let (code, out, _) = dissonance(&["decode", "--json", "0102"], None);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["error"]["kind"], "bad_magic");
    assert_eq!(v["magic"], 0x0102);
}

#[test]
fn bad_hex_and_missing_input_are_clear_errors() {
    let (code, _, err) = dissonance(&["decode", "8bc7zz"], None);
    assert_eq!(code, 2);
    assert!(
        err.contains("argument 1: not a hex digit at byte 2"),
        "{err}"
    );
    let (code, _, err) = dissonance(&["decode"], None);
    assert_eq!(code, 2);
    assert!(err.contains("no packets given"), "{err}");
    let (code, _, err) = dissonance(&["decode", "--file", "/nonexistent/x.bin"], None);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read /nonexistent/x.bin"), "{err}");
}

#[test]
fn decodes_a_raw_binary_file() {
    let dir = std::env::temp_dir().join(format!("dissonance-decode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.bin");
    std::fs::write(
        &path,
        [0x8b, 0xc7, 0x0a, 0x12, 0x34, 0xab, 0xcd, 0x00, 0x01],
    )
    .unwrap();
    let (code, out, _) = dissonance(&["decode", "--file", path.to_str().unwrap()], None);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("RemoveClient (9 bytes, 6.1+ byte order)"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sample_packets_all_decode() {
    let input =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/packets.hex"))
            .unwrap();
    let (code, out, _) = dissonance(&["decode", "--stdin", "--json"], Some(&input));
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 11);
}
