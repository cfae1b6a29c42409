//! `dissonance check` end to end: exit codes with --fail-on, text/JSON/JUnit output,
//! --explain and --list-rules, unreadable input.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};

use dissonance_tools::capture::{CaptureReader, PcapWriter, TsResolution};
use dissonance_tools::check::rules;
use dissonance_tools::codec::*;

const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/captures/three-friends.pcap"
);
const SESSION: u32 = 523124044;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dissonance-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The real capture with `extra` appended as one more datagram from carol (47203) to
/// the server, 10 ms after carol's last packet; returns the file and the packet number.
fn with_extra(name: &str, extra: &[u8]) -> (PathBuf, u64) {
    let path = tmp(name);
    let mut reader = CaptureReader::open(CAPTURE).unwrap();
    let mut w = PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap();
    let mut n = 0;
    while let Some(f) = reader.next_frame() {
        let f = f.unwrap();
        n += 1;
        w.write_frame(f.ts_ns, f.data).unwrap();
        if n == 806 {
            // carol's last room change: she is still connected
            w.write_udp(f.ts_ns + 10_000_000, addr(47203), addr(47200), extra)
                .unwrap();
            n += 1;
        }
    }
    std::fs::write(&path, w.into_inner()).unwrap();
    (path, 807)
}

/// Carol's text, wrapped in ServerRelayUnreliable (D024, an error).
fn text_unreliable() -> (PathBuf, u64) {
    let text = Message::TextData(TextData {
        session: SESSION,
        recipient_type_byte: 0,
        sender: 2,
        target: room_id("Global"),
        text: WireStr::new("lost?"),
    })
    .to_vec(Variant::Modern, 1024)
    .unwrap();
    let relay = Message::ServerRelayUnreliable(ServerRelay {
        session: SESSION,
        destinations: Seq::Items(&[0, 1]),
        payload: &text,
    })
    .to_vec(Variant::Modern, 1024)
    .unwrap();
    with_extra("error.pcap", &relay)
}

/// Carol's DeltaChannelState with two trailing bytes (D004, a warning).
fn trailing() -> (PathBuf, u64) {
    let mut d = Message::DeltaChannelState(DeltaChannelState::new(SESSION, true, 2, "Red Team"))
        .to_vec(Variant::Modern, 1024)
        .unwrap();
    d.extend_from_slice(&[0xAB, 0xCD]);
    with_extra("warning.pcap", &d)
}

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .arg("check")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn clean_capture_exits_0_with_the_voice_table() {
    let o = check(&[CAPTURE]);
    assert_eq!(o.status.code(), Some(0));
    let s = stdout(&o);
    assert!(
        s.starts_with("Checked 884 payloads, 881 Dissonance packets"),
        "{s}"
    );
    assert!(s.contains("No findings."), "{s}");
    assert!(s.contains("alice(0)") && s.contains("bob(1)"), "{s}");
    assert!(s.contains("loss %") && s.contains("jitter ms"), "{s}");
    // --fail-on info: still nothing to fail on.
    assert_eq!(
        check(&[CAPTURE, "--fail-on", "info"]).status.code(),
        Some(0)
    );
}

/// `check ... | head -1`: a closed stdout ends the report, not the verdict.
#[test]
fn closed_stdout_keeps_the_verdict_and_the_junit_file() {
    let (path, _) = text_unreliable();
    let junit = tmp("closed-pipe-junit.xml");
    let _ = std::fs::remove_file(&junit);
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two descriptors we then own; the read end is closed at once.
    let stdout = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        libc::close(fds[0]);
        std::process::Stdio::from(
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]),
        )
    };
    let o = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .arg("check")
        .arg(&path)
        .arg("--junit")
        .arg(&junit)
        .stdout(stdout)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stderr), "");
    assert!(std::fs::read_to_string(&junit).unwrap().contains("D024"));
}

#[test]
fn error_finding_exits_1_unless_fail_on_never() {
    let (path, n) = text_unreliable();
    let p = path.to_str().unwrap();
    let o = check(&[p]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let s = stdout(&o);
    assert!(s.contains("ERROR D024 text-in-unreliable-relay"), "{s}");
    assert!(s.contains(&format!("packet {n} at")), "{s}");
    assert!(s.contains("client carol(2)"), "{s}");
    // The wrapped packet's type byte (offset 16, after two destinations) is marked.
    assert!(
        s.contains(
            "    0000  8b c7 08 1f 2e 3d 4c 02 00 00 00 01 00 13 8b c7\n    \
             0010  03 1f 2e 3d 4c 00 00 02 75 18 00 06 6c 6f 73 74\n          ^^\n"
        ),
        "{s}"
    );
    assert_eq!(check(&[p, "--fail-on", "never"]).status.code(), Some(0));
}

#[test]
fn warning_fails_only_with_fail_on_warning() {
    let (path, _) = trailing();
    let p = path.to_str().unwrap();
    assert_eq!(check(&[p]).status.code(), Some(0));
    assert_eq!(check(&[p, "--fail-on", "warning"]).status.code(), Some(1));
    assert_eq!(check(&[p, "--fail-on", "info"]).status.code(), Some(1));
    assert_eq!(check(&[p, "--fail-on", "error"]).status.code(), Some(0));
    let o = check(&[p, "--fail-on", "bogus"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not error, warning, info or never"));
}

#[test]
fn json_report() {
    let (path, n) = text_unreliable();
    let o = check(&[path.to_str().unwrap(), "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["packets"], 882);
    assert_eq!(
        (v["errors"].as_u64(), v["warnings"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(v["rules"].as_array().unwrap().len(), rules::ALL.len());
    let f = &v["findings"].as_array().unwrap()[..];
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["rule"], "D024");
    assert_eq!(f[0]["severity"], "error");
    assert_eq!(f[0]["number"], n);
    assert_eq!(f[0]["client"], "carol");
    assert_eq!(f[0]["client_id"], 2);
    assert_eq!(f[0]["session"], SESSION);
    assert_eq!(f[0]["src"], "127.0.0.1:47203");
    assert_eq!(f[0]["mark"]["offset"], 16);
    assert_eq!(f[0]["mark"]["length"], 1);
    assert!(f[0]["bytes"]
        .as_str()
        .unwrap()
        .starts_with("8bc7081f2e3d4c02"));
    let voice = v["voice"].as_array().unwrap();
    assert_eq!(voice.len(), 2);
    assert_eq!(voice[0]["name"], "alice");
    assert_eq!(voice[0]["packets"], 215);
    assert_eq!(voice[1]["loss_percent"], 0.0);
}

#[test]
fn junit_has_one_test_case_per_rule() {
    let (path, _) = text_unreliable();
    let junit = tmp("error.xml");
    let o = check(&[path.to_str().unwrap(), "--junit", junit.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(
        root.attribute("tests"),
        Some(&*rules::ALL.len().to_string())
    );
    assert_eq!(root.attribute("failures"), Some("1"));
    let cases: Vec<_> = root
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), rules::ALL.len());
    for (case, rule) in cases.iter().zip(rules::ALL) {
        let name = case.attribute("name").unwrap();
        assert!(
            name.starts_with(&format!("{} {}", rule.id, rule.name)),
            "{name}"
        );
        let failure = case.children().find(|c| c.has_tag_name("failure"));
        assert_eq!(failure.is_some(), rule.id == "D024", "{name}");
        if let Some(f) = failure {
            assert_eq!(f.attribute("type"), Some("error"));
            assert!(f.text().unwrap().contains("carol"));
        }
    }
    let suites = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .count();
    // headers, sessions, direction, state, voice, server.
    assert_eq!(suites, 6);

    // Below --fail-on, findings are listed but do not fail the case.
    let (path, _) = trailing();
    let o = check(&[path.to_str().unwrap(), "--junit", junit.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert_eq!(doc.root_element().attribute("failures"), Some("0"));
    let d004 = doc
        .descendants()
        .find(|n| n.attribute("name").is_some_and(|a| a.starts_with("D004")))
        .unwrap();
    let out = d004
        .children()
        .find(|c| c.has_tag_name("system-out"))
        .unwrap();
    assert!(out.text().unwrap().contains("2 trailing byte(s)"));
}

#[test]
fn unreadable_input_exits_2() {
    let o = check(&["/nonexistent/x.pcap"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot open /nonexistent/x.pcap"));
    let junk = tmp("junk.pcap");
    std::fs::write(&junk, b"this is not a capture file at all").unwrap();
    assert_eq!(check(&[junk.to_str().unwrap()]).status.code(), Some(2));
    // Damaged part way: what was read is reported, and the status is 1, as for dump and
    // voice (2 is for input that cannot be read at all).
    let cut = tmp("cut.pcap");
    let bytes = std::fs::read(CAPTURE).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();
    let o = check(&[cut.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).starts_with("Checked 883 payloads"),
        "{}",
        stdout(&o)
    );
    // No capture and no --list-rules/--explain: a usage error.
    assert_eq!(check(&[]).status.code(), Some(2));
}

#[test]
fn explain_and_list_rules() {
    let o = check(&["--explain", "d010"]);
    assert_eq!(o.status.code(), Some(0));
    let s = stdout(&o);
    assert!(
        s.starts_with("D010 wrong-session (warning, sessions)\nPacket from another session\n\n"),
        "{s}"
    );
    assert!(s.contains("ErrorWrongSession"), "{s}");
    assert_eq!(
        stdout(&check(&["--explain", "null-name"])).lines().next(),
        Some("D033 null-name (error, state)")
    );
    let o = check(&["--explain", "D999"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--list-rules"));

    let s = stdout(&check(&["--list-rules"]));
    assert_eq!(s.lines().count(), rules::ALL.len());
    for r in rules::ALL {
        assert!(s.contains(r.id) && s.contains(r.title), "{}", r.id);
    }
}
