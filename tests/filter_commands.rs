//! `-Y/--display-filter` on `check`, `voice` and `replay`, on the real captures with
//! exact counts. The frames each selects are the frames `dump -Y` prints packets of (the
//! same pipeline decides), so the expectations below are derived with `dump -Y`.

mod serve_proc;
use serve_proc::{start_serve, stop_serve};
use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const RESTART: &str = "tests/data/captures/restart.pcap";
const FRIENDS: &str = "tests/data/captures/three-friends.pcap";

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// Frame numbers of the packets `dump -Y expr` prints.
fn dump_frames(capture: &str, expr: &str) -> BTreeSet<u64> {
    let out = run(&["dump", capture, "-Y", expr, "-F", "ndjson"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["packet"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// (rule, frame, occurrence frames) of each finding.
fn findings(v: &serde_json::Value) -> Vec<(String, u64, Vec<u64>)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let occ = f["occurrences"].as_array().unwrap();
            assert_eq!(f["repeats"].as_u64().unwrap() + 1, occ.len() as u64);
            (
                f["rule"].as_str().unwrap().to_string(),
                f["number"].as_u64().unwrap(),
                occ.iter().map(|o| o["number"].as_u64().unwrap()).collect(),
            )
        })
        .collect()
}

fn f(rule: &str, n: u64, occ: &[u64]) -> (String, u64, Vec<u64>) {
    (rule.to_string(), n, occ.to_vec())
}

#[test]
fn check_without_a_filter_reports_every_finding() {
    // The injected ClientState of restart.pcap: mallory's at 404 (D050, fatal to the
    // real server) and its three forwarded copies at 405-407 (D003, one folded finding).
    let out = run(&["check", RESTART, "-F", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(
        findings(&v),
        [f("D003", 405, &[405, 406, 407]), f("D050", 404, &[404])]
    );
    assert!(v.get("filter").is_none());
}

#[test]
fn check_y_reports_the_findings_at_the_frames_dump_y_selects() {
    let expr = "dst_port == 41420";
    // alice's port: 11 frames, among them the copy at 405.
    let frames = dump_frames(RESTART, expr);
    assert_eq!(frames.len(), 11);
    assert!(frames.contains(&405) && !frames.contains(&404) && !frames.contains(&406));
    let out = run(&["check", RESTART, "-Y", expr, "-F", "json"]);
    assert_eq!(out.status.code(), Some(1), "an error finding is left");
    let v = json(&out);
    assert_eq!(findings(&v), [f("D003", 405, &[405])]);
    assert_eq!(v["errors"], 1);
    assert_eq!(v["filter"]["expr"], expr);
    assert_eq!(v["filter"]["frames"], 11);
    assert_eq!(v["filter"]["findings_left_out"], 1, "D050 at 404");
    assert_eq!(v["filter"]["occurrences_left_out"], 3, "404, 406, 407");
    let d003 = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "D003")
        .unwrap();
    assert_eq!(
        (d003["occurrences"].as_u64(), d003["findings"].as_u64()),
        (Some(1), Some(1))
    );

    // A folded finding keeps its selected occurrences only.
    let out = run(&[
        "check",
        RESTART,
        "-Y",
        "packet == 404 || packet > 406",
        "-F",
        "json",
    ]);
    let v = json(&out);
    assert_eq!(
        findings(&v),
        [f("D003", 407, &[407]), f("D050", 404, &[404])]
    );
    assert_eq!(v["filter"]["occurrences_left_out"], 2);
    // Reported at 407, first seen at 405: its addresses are 405's, and it says so.
    let d003 = &v["findings"][0];
    assert_eq!(
        (&d003["first_seen"], &d003["dst"]),
        (&405.into(), &"127.0.0.1:41420".into())
    );
    assert!(v["findings"][1].get("first_seen").is_none());
    let out = run(&["check", RESTART, "-Y", "packet == 404 || packet > 406"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("  packet 407 at 4.832468 s  127.0.0.1:47600 -> 127.0.0.1:41420 udp"),
        "{text}"
    );
    assert!(text.contains("    (first seen at packet 405, which -Y does not select: addresses, client and bytes are that packet's)"), "{text}");

    // Text: the filter and what it left out are said.
    let out = run(&["check", RESTART, "-Y", expr]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(
            "Display filter 'dst_port == 41420' selects 11 frames: the findings at them are \
             reported; 1 finding(s), 3 occurrence(s) elsewhere left out"
        ),
        "{text}"
    );
    assert!(
        text.contains("ERROR D003") && !text.contains("D050"),
        "{text}"
    );
}

#[test]
fn check_y_without_findings_at_its_frames_passes() {
    // The rules still saw every packet (the voice table is the whole session's), but no
    // finding is on a voice packet: exit 0.
    let out = run(&["check", RESTART, "-Y", "type == VoiceData", "-F", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json(&out);
    assert_eq!(findings(&v), []);
    assert_eq!(v["filter"]["frames"], 213);
    assert_eq!(v["filter"]["findings_left_out"], 2);
    assert_eq!(v["voice"].as_array().unwrap().len(), 2);
    // A parse error is a usage error pointing at the column.
    let out = run(&["check", RESTART, "-Y", "seq >"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("column 6"),
        "{out:?}"
    );
}

fn sidecar(dir: &std::path::Path, stem: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("{stem}.json"))).unwrap()).unwrap()
}

#[test]
fn voice_y_decodes_only_the_selected_voice_packets_on_the_same_timeline() {
    let base = std::env::temp_dir().join(format!("dissonance-voice-y-{}", std::process::id()));
    let (all, some) = (base.join("all"), base.join("some"));
    let expr = r#"sender_name == "alice" && rel < 5"#;
    // What dump selects: 173 of alice's packets (one copy each, sequence 0..=172).
    assert_eq!(dump_frames(FRIENDS, expr).len(), 173);
    let out = run(&["voice", FRIENDS, "-o", all.to_str().unwrap(), "-q"]);
    assert!(out.status.success(), "{out:?}");
    let out = run(&[
        "voice",
        FRIENDS,
        "-o",
        some.to_str().unwrap(),
        "-q",
        "-Y",
        expr,
    ]);
    assert!(out.status.success(), "{out:?}");
    // 846 voice packets in the capture (dump -Y 'type == VoiceData || inner.type ==
    // VoiceData'), 173 decoded.
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("-Y '{expr}' left out 673 voice packets")),
        "{out:?}"
    );
    let names: BTreeSet<String> = std::fs::read_dir(&some)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "523124044-0-alice.json".into(),
            "523124044-0-alice.wav".into()
        ])
    );
    let (a, s) = (
        sidecar(&all, "523124044-0-alice"),
        sidecar(&some, "523124044-0-alice"),
    );
    assert_eq!(a["frames"]["decoded"], 215);
    assert_eq!(s["frames"]["decoded"], 173);
    assert_eq!(s["frames"]["lost"], 0);
    let spurts = s["spurts"].as_array().unwrap();
    assert_eq!(spurts.len(), 1);
    assert_eq!(
        (&spurts[0]["first_seq"], &spurts[0]["last_seq"]),
        (&0.into(), &172.into())
    );
    // Same timeline: the file is as long as the unfiltered one, and the spurt starts at
    // the first selected packet (the server's forwarded copy, 4.3 ms after alice's own
    // relay that the unfiltered run starts from).
    assert_eq!(s["samples"], a["samples"]);
    let first = run(&["dump", FRIENDS, "-Y", expr, "-c", "1", "-F", "ndjson"]);
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(first["packet"], spurts[0]["first_packet"]);
    let start = spurts[0]["rel"].as_f64().unwrap();
    // Within a sample at 48 kHz (a spurt starts on the sample grid).
    assert!(
        (start - first["rel"].as_f64().unwrap()).abs() < 1.0 / 48000.0,
        "{start} {first}"
    );
    assert!(start > a["spurts"][0]["rel"].as_f64().unwrap());
    let _ = std::fs::remove_dir_all(&base);
}

/// A filter that selects no voice packet writes nothing and says so (no silent no-op).
#[test]
fn voice_y_selecting_no_voice_says_nothing_was_written() {
    let dir = std::env::temp_dir().join(format!("dissonance-voice-y-none-{}", std::process::id()));
    let out = run(&[
        "voice",
        FRIENDS,
        "-o",
        dir.to_str().unwrap(),
        "-q",
        "-Y",
        "sender_name == nobody",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "-Y 'sender_name == nobody' left out 846 voice packets, all of them: no WAV written"
        ),
        "{out:?}"
    );
    let files = std::fs::read_dir(&dir).map_or(0, |d| d.count());
    assert_eq!(files, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the binary with a bounded wait.
fn bounded(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(40);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn replay_y_sends_the_selected_datagrams_and_every_session_setup() {
    // Client→server in three-friends: 3 HandshakeRequests, 3 ClientStates, 2
    // DeltaChannelStates, 423 voice relays, 1 text relay (carol's) and 3 goodbyes.
    let expr = r#"inner.type == "TextData""#;
    assert_eq!(
        dump_frames(FRIENDS, &format!("dst_port == 47200 && {expr}")).len(),
        1
    );
    let (serve, addr) = start_serve(&["--log-format", "ndjson"], Stdio::piped());
    let out = bounded(&[
        "replay",
        FRIENDS,
        "--target",
        &addr.to_string(),
        "-Y",
        expr,
        "--speed",
        "8",
        "--linger",
        "0.5",
    ]);
    let log = stop_serve(serve);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report = String::from_utf8(out.stdout.clone()).unwrap();
    // The text, and the setup and goodbye of each client (the goodbyes have no type).
    assert!(
        report.contains("sent: 10 (ClientState 3, HandshakeRequest 3, ServerRelayReliable 1)"),
        "{report}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("(425 left out by -Y '{expr}')")),
        "{out:?}"
    );
    for line in [
        "  alice        TextData                    1      1  same",
        "  bob          TextData                    1      1  same",
        "  alice        VoiceData                 208      0  DIFFERENT",
    ] {
        assert!(
            report.lines().any(|l| l == line),
            "{line:?} not in\n{report}"
        );
    }
    let events: Vec<String> = log
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            match v["event"].as_str()? {
                "join" => Some(format!("join {}", v["name"].as_str()?)),
                "leave" => Some(format!(
                    "leave {} {}",
                    v["name"].as_str()?,
                    v["reason"].as_str()?
                )),
                _ => None,
            }
        })
        .collect();
    assert_eq!(
        events,
        [
            "join alice",
            "join bob",
            "join carol",
            "leave carol goodbye",
            "leave bob goodbye",
            "leave alice goodbye"
        ],
        "{log}"
    );
}

#[test]
fn replay_y_refuses_fail_on_diff_and_raw() {
    for extra in ["--fail-on-diff", "--raw"] {
        let out = run(&[
            "replay",
            FRIENDS,
            "--target",
            "127.0.0.1:9",
            "-Y",
            "type == TextData",
            extra,
        ]);
        assert_eq!(out.status.code(), Some(2), "{extra}: {out:?}");
    }
}
