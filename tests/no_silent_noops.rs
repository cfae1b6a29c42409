//! Nothing a user asks for is silently not done: names that are not in the capture,
//! captures without Dissonance traffic, link types that cannot be read and flags a
//! command would ignore are all reported, with the exit status saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

use dissonance_tools::capture::{PcapWriter, PcapngWriter, TsResolution};

const BIN: &str = env!("CARGO_BIN_EXE_dissonance");
const SESSION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/session.pcap");

/// (status, stdout, stderr) of `dissonance ARGS`.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dissonance-noops-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn voice_unknown_speaker_listener_and_room_are_errors_listing_what_exists() {
    let d = tmp("names");
    let out = d.join("out");
    let (code, _, err) = run(&["voice", SESSION, "-o", s(&out), "--speaker", "nobody"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err,
        "dissonance: error: no speaker 'nobody' in the capture; clients: alice(0), bob(1), \
         carol(2), dave(3)\n"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);

    let (code, _, err) = run(&[
        "voice",
        SESSION,
        "-o",
        s(&out),
        "--listener",
        "nobody",
        "--room",
        "No Room",
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err,
        "dissonance: error: no listener 'nobody' in the capture; clients: alice(0), bob(1), \
         carol(2), dave(3)\ndissonance: error: no room 'No Room' in the capture; rooms: Blue \
         Team, Global, Red Team\n"
    );
    // No file of silence left for them.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);

    // Known ones (a speaker by id) still work.
    let (code, _, err) = run(&[
        "voice",
        SESSION,
        "-o",
        s(&out),
        "--speaker",
        "1",
        "--room",
        "Red Team",
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.join("room-Red_Team.wav").exists() || out.join("room-Red Team.wav").exists());
}

/// A capture of 50 UDP datagrams that are not Dissonance.
fn not_dissonance(d: &Path) -> PathBuf {
    let p = d.join("other.pcap");
    let mut w = PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap();
    for i in 0..50u8 {
        w.write_udp(
            1_000_000_000 + i64::from(i) * 1_000_000,
            "10.0.0.2:5000".parse().unwrap(),
            "10.0.0.1:7777".parse().unwrap(),
            &[0x17, 0xFE, 0xFD, i, 1, 2, 3, 4, 5, 6, 7, 8],
        )
        .unwrap();
    }
    std::fs::write(&p, w.into_inner()).unwrap();
    p
}

#[test]
fn a_capture_without_dissonance_says_what_it_saw() {
    let d = tmp("none");
    let cap = not_dissonance(&d);
    let note = "dissonance: 0 Dissonance packets in 50 UDP datagrams; try --payload scan, \
                --payload offset:N or a game stack (mirror, ngo, fishnet), and dump --flows\n";
    let (code, out, err) = run(&["dump", s(&cap)]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", note));
    let (code, _, err) = run(&["check", s(&cap)]);
    assert_eq!((code, err.as_str()), (0, note));
    let (code, _, err) = run(&["voice", s(&cap), "-o", s(&d.join("v")), "-q"]);
    assert_eq!((code, err.as_str()), (0, note));
    // A capture with Dissonance in it has no note.
    let (code, _, err) = run(&["dump", SESSION]);
    assert_eq!((code, err.as_str()), (0, ""));
}

#[test]
fn an_unsupported_link_type_is_an_error_naming_it_in_every_command() {
    let d = tmp("linktype");
    let pcap = d.join("user0.pcap");
    let mut w = PcapWriter::with_linktype(Vec::new(), TsResolution::Microsecond, 147).unwrap();
    for i in 0..3 {
        w.write_frame(1_000_000_000 + i, &[0x45, 0, 0, 20]).unwrap();
    }
    std::fs::write(&pcap, w.into_inner()).unwrap();
    let pcapng = d.join("user0.pcapng");
    let mut w = PcapngWriter::new(Vec::new()).unwrap();
    w.write_frame(1_000_000_000, 147, &[0x45, 0, 0, 20], 4, &[])
        .unwrap();
    std::fs::write(&pcapng, w.into_inner()).unwrap();

    let why = "unsupported link type 147 (USER0): Ethernet, Linux cooked (SLL, SLL2), BSD \
               loopback (NULL, LOOP) and raw IP are read";
    for cap in [&pcap, &pcapng] {
        let out = d.join("out");
        for args in [
            vec!["dump", s(cap)],
            vec!["dump", s(cap), "--summary"],
            vec!["check", s(cap)],
            vec!["voice", s(cap), "-o", s(&out)],
        ] {
            let (code, _, err) = run(&args);
            assert_eq!(code, 2, "{args:?}: {err}");
            assert!(err.contains(why), "{args:?}: {err}");
        }
    }
}

#[test]
fn flags_a_command_would_ignore_are_refused() {
    let d = tmp("flags");
    for (args, msg) in [
        (
            &["dump", SESSION, "--summary", "-F", "table"][..],
            "--format applies to printed packets, and none are printed",
        ),
        (
            &["dump", SESSION, "--flows", "--client", "alice"],
            "--client applies to printed packets, and none are printed",
        ),
        (
            &["dump", SESSION, "--summary", "--line-buffered"],
            "--line-buffered applies to packets, not to --summary or --flows",
        ),
        (
            &["dump", SESSION, "--hex"],
            "--hex applies to -F json and -F ndjson",
        ),
        (
            &["dump", SESSION, "-F", "table", "--events"],
            "--events applies to -F json and -F ndjson",
        ),
        (
            &["dump", SESSION, "-F", "ndjson", "--no-events"],
            "--no-events applies to text output",
        ),
        (
            &["voice", SESSION, "-o", s(&d), "--per-speaker"],
            "--per-speaker applies with --mix, --room or --listener",
        ),
        (
            &["check", "--list-rules", SESSION],
            "the argument '--list-rules' cannot be used with '[CAPTURE]'",
        ),
        (
            &["check", "--explain", "D010", SESSION],
            "the argument '--explain <RULE>' cannot be used with '[CAPTURE]'",
        ),
    ] {
        let (code, out, err) = run(args);
        assert_eq!((code, out.as_str()), (2, ""), "{args:?}: {err}");
        assert!(err.contains(msg), "{args:?}: {err}");
    }
}

#[test]
fn dump_client_filter_applies_to_events() {
    let (code, out, err) = run(&["dump", SESSION, "--client", "alice", "--color", "never"]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<&str> = out.lines().filter(|l| l.contains("   * ")).collect();
    assert!(!events.is_empty());
    for e in &events {
        assert!(
            e.contains("alice(0)") || e.contains("* session "),
            "an event about another client: {e}"
        );
    }
    // The events about alice are all there.
    let (_, all, _) = run(&["dump", SESSION, "--color", "never"]);
    let alice: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("   * ") && (l.contains("alice(0)") || l.contains("* session ")))
        .collect();
    assert_eq!(events, alice);
}
