//! `dump --stats io,N|streams|conv` (tshark's `-z`) on the real capture
//! (tests/data/captures/three-friends.pcap) against `--summary`, `check` and the truth
//! file. `sniff --stats` is tested live in tests/sniff.rs.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{json, Value};

const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/captures/three-friends.pcap"
);
const TRUTH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/captures/three-friends.truth.json"
);

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(args)
        .env_remove("COLUMNS")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

/// The `stats` object of `dump CAPTURE -q -F json ARGS`: the array's only element.
fn stats_json(capture: &str, args: &[&str]) -> Value {
    let mut all = vec!["dump", capture, "-q", "-F", "json"];
    all.extend_from_slice(args);
    let v: Value = serde_json::from_str(&ok(&all)).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 1, "{v}");
    arr[0]["stats"].clone()
}

/// The rows of the text table under `title` (cells trimmed), header row left out.
fn table(text: &str, title: &str) -> Vec<Vec<String>> {
    let block = text
        .split(&format!("{title}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no {title} in\n{text}"));
    block
        .lines()
        .take_while(|l| !l.starts_with('└'))
        .filter(|l| l.starts_with('│'))
        .skip(1)
        .map(|l| {
            l.trim_matches('│')
                .split('┆')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn io_totals_equal_the_summary_counts_per_type_and_direction() {
    let summary = ok(&["dump", CAPTURE, "--summary"]);
    let want: BTreeMap<(String, String), u64> = table(&summary, "Messages by direction")
        .into_iter()
        .map(|r| ((r[0].clone(), r[1].clone()), r[2].parse().unwrap()))
        .collect();
    assert_eq!(want.values().sum::<u64>(), 881, "the truth file's packets");

    let text = ok(&["dump", CAPTURE, "-q", "--stats", "io,1"]);
    let totals: BTreeMap<(String, String), u64> = table(&text, "IO totals")
        .into_iter()
        .map(|r| ((r[0].clone(), r[1].clone()), r[2].parse().unwrap()))
        .collect();
    assert_eq!(totals, want);
    // With -q the rows go out as the intervals close: 13 of the 14 seconds have packets.
    assert!(text.starts_with("IO statistics: intervals of 1 s (those with packets)\n"));
    let rows = table(
        &text,
        "IO statistics: intervals of 1 s (those with packets)",
    );
    let spans: Vec<&str> = rows
        .iter()
        .map(|r| r[0].as_str())
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        spans,
        [
            "0-1", "1-2", "2-3", "3-4", "4-5", "5-6", "6-7", "7-8", "8-9", "9-10", "10-11",
            "11-12", "12-13"
        ]
    );
    let streamed: u64 = rows.iter().map(|r| r[3].parse::<u64>().unwrap()).sum();
    assert_eq!(streamed, 881);
    // After the packets (kept, then one table), the same rows.
    let after = ok(&["dump", CAPTURE, "-c", "881", "--stats", "io,1"]);
    let kept = table(
        &after,
        "IO statistics: intervals of 1 s (those with packets)",
    );
    assert_eq!(kept, rows);

    // JSON: the same totals, and every interval's rows add up to them.
    let io = &stats_json(CAPTURE, &["--stats", "io,1"])["io"];
    assert_eq!(io["interval_s"], 1.0);
    assert_eq!(io["intervals_not_listed"], 0);
    let label = |m: &Value| match m["inner_type"].as_str() {
        Some(i) => format!("{}({i})", m["type"].as_str().unwrap()),
        None => m["type"].as_str().unwrap().to_string(),
    };
    let key = |m: &Value| (m["direction"].as_str().unwrap().to_string(), label(m));
    let json_totals: BTreeMap<_, u64> = io["totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (key(m), m["packets"].as_u64().unwrap()))
        .collect();
    assert_eq!(json_totals, want);
    let mut summed: BTreeMap<_, u64> = BTreeMap::new();
    let mut bytes = 0;
    let intervals = io["intervals"].as_array().unwrap();
    assert_eq!(intervals.len(), 13);
    for (n, i) in intervals.iter().enumerate() {
        let rel = i["rel"].as_f64().unwrap();
        assert_eq!(rel.fract(), 0.0, "interval {n} starts on a whole second");
        let msgs = i["messages"].as_array().unwrap();
        let p: u64 = msgs.iter().map(|m| m["packets"].as_u64().unwrap()).sum();
        assert_eq!(i["packets"], p);
        for m in msgs {
            *summed.entry(key(m)).or_default() += m["packets"].as_u64().unwrap();
            bytes += m["bytes"].as_u64().unwrap();
        }
    }
    assert_eq!(summed, want);
    let total_bytes: u64 = io["totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(bytes, total_bytes);
    // The Dissonance bytes: the capture's 884 UDP payloads less the three 4-byte goodbyes.
    let payload_bytes: u64 = ok(&["dump", CAPTURE, "-T", "fields", "-e", "size"])
        .lines()
        .map(|l| l.parse::<u64>().unwrap())
        .sum();
    assert_eq!(total_bytes, payload_bytes);
}

#[test]
fn io_intervals_follow_the_interval_length_and_the_selection() {
    // Half-second intervals start on multiples of 0.5 s; -c 100 counts 100 packets.
    let io = &stats_json(CAPTURE, &["--stats", "io,500ms", "-c", "100"])["io"];
    assert_eq!(io["interval_s"], 0.5);
    let intervals = io["intervals"].as_array().unwrap();
    let sum: u64 = intervals
        .iter()
        .map(|i| i["packets"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, 100);
    for i in intervals {
        assert_eq!((i["rel"].as_f64().unwrap() * 2.0).fract(), 0.0, "{i}");
    }
    // A display filter narrows io and conv: the texts only.
    let s = stats_json(
        CAPTURE,
        &[
            "--stats",
            "io,1",
            "--stats",
            "conv",
            "-Y",
            "type == TextData || inner.type == TextData",
        ],
    );
    assert_eq!(
        s["io"]["totals"],
        json!([
            {"direction": "client_to_server", "type": "ServerRelayReliable", "inner_type": "TextData", "packets": 1, "bytes": 65},
            {"direction": "server_to_client", "type": "TextData", "inner_type": null, "packets": 2, "bytes": 102},
        ])
    );
    assert_eq!(s["conv"]["conversations"].as_array().unwrap().len(), 3);
}

#[test]
fn streams_are_checks_voice_table() {
    // A lossy copy: five relayed frames of each speaker left out (three in a row).
    let lossy = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("lossy.pcap");
    let lossy = lossy.to_str().unwrap();
    ok(&[
        "dump",
        CAPTURE,
        "-Y",
        "!(inner.seq in {10 11 12 50 51})",
        "-w",
        lossy,
    ]);
    for capture in [CAPTURE, lossy] {
        let check: Value = serde_json::from_str(&ok(&["check", capture, "-F", "json"])).unwrap();
        let streams = &stats_json(capture, &["--stats", "streams"])["streams"];
        assert_eq!(streams, &check["voice"], "{capture}");
        // The text table is check's, cell for cell.
        let text = ok(&["dump", capture, "-q", "--stats", "streams"]);
        let check_text = run(&["check", capture]).1;
        let rows = table(
            &text,
            "Voice streams (each speaker's first path, as check measures it)",
        );
        assert_eq!(rows.len(), 2, "{text}");
        assert_eq!(
            rows,
            table(&check_text, "Voice quality (each speaker's first path):")
        );
    }
    let streams = stats_json(lossy, &["--stats", "streams"])["streams"].clone();
    let figures: Vec<_> = streams
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["packets"].as_u64().unwrap(),
                v["lost"].as_u64().unwrap(),
                v["longest_burst"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        figures,
        [("alice".into(), 210, 5, 3), ("bob".into(), 203, 5, 3)]
    );
}

#[test]
fn conv_texts_are_the_truth_files_texts() {
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(TRUTH).unwrap()).unwrap();
    let addr = |name: &str| truth["clients"][name]["addr"].as_str().unwrap().to_string();
    let server = truth["server"]["addr"].as_str().unwrap().to_string();
    // Each text goes sender -> server, then server -> each receiver.
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    for t in truth["texts"].as_array().unwrap() {
        *want
            .entry((addr(t["sender"].as_str().unwrap()), server.clone()))
            .or_default() += 1;
        for d in t["delivered"].as_array().unwrap() {
            *want
                .entry((server.clone(), addr(d["to"].as_str().unwrap())))
                .or_default() += 1;
        }
    }
    assert_eq!(want.len(), 3);

    let conv = &stats_json(CAPTURE, &["--stats", "conv"])["conv"];
    assert_eq!(conv["packets_not_listed"], 0);
    let mut got: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut packets = 0;
    for c in conv["conversations"].as_array().unwrap() {
        let (a, b) = (
            c["a"]["addr"].as_str().unwrap().to_string(),
            c["b"]["addr"].as_str().unwrap().to_string(),
        );
        for (from, to, way) in [(&a, &b, &c["a_to_b"]), (&b, &a, &c["b_to_a"])] {
            packets += way["packets"].as_u64().unwrap();
            let n = way["texts"].as_u64().unwrap();
            if n > 0 {
                got.insert((from.clone(), to.clone()), n);
            }
        }
        // Clients named from the session, the server as such.
        assert_eq!(c["b"], json!({"addr": server, "role": "server"}));
        let name = c["a"]["name"].as_str().unwrap();
        assert_eq!(c["a"]["addr"], addr(name));
        assert_eq!(c["a"]["client_id"], truth["summary"]["client_ids"][name]);
    }
    assert_eq!(got, want);
    assert_eq!(packets, 881);

    // Text: carol's row says 1 / 0 texts.
    let text = ok(&["dump", CAPTURE, "-q", "--stats", "conv"]);
    let rows = table(&text, "Conversations");
    let carol = rows
        .iter()
        .find(|r| r[0].starts_with("carol(2)"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(carol[4], "1 / 0");
}

#[test]
fn stats_follow_the_packets_in_every_output() {
    // Text: the packets, a blank line, the tables.
    let out = ok(&["dump", CAPTURE, "-c", "2", "--stats", "conv"]);
    let (packets, tables) = out.split_once("\n\n").unwrap();
    assert_eq!(
        packets.lines().filter(|l| !l.contains(" * ")).count(),
        2,
        "{out}"
    );
    assert!(tables.starts_with("Conversations\n"), "{out}");
    // NDJSON: the stats object is the last line.
    let out = ok(&[
        "dump", CAPTURE, "-c", "2", "--stats", "conv", "-F", "ndjson",
    ]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[2]["stats"]["conv"].is_object());
    // Several --stats in one object.
    let s = stats_json(
        CAPTURE,
        &["--stats", "io,1", "--stats", "streams", "--stats", "conv"],
    );
    let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["conv", "io", "streams"]);
}

#[test]
fn stats_refuse_what_they_cannot_be_printed_with() {
    for args in [
        &["--stats", "conv", "-F", "csv"][..],
        &["--stats", "conv", "--flows"],
        &["--stats", "io,1", "--stats", "io,2"],
        &["--stats", "io,0"],
        &["--stats", "flows"],
        &["-q", "--summary"],
        &["-q", "--stats", "conv", "-F", "json", "--hex"],
    ] {
        let mut all = vec!["dump", CAPTURE];
        all.extend_from_slice(args);
        let (code, out, err) = run(&all);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(
            err.contains("stats") || err.contains("-q"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn stats_fit_an_80_column_terminal() {
    for args in [
        &[
            "-q", "--stats", "io,1", "--stats", "streams", "--stats", "conv",
        ][..],
        &["-c", "5", "--stats", "io,1", "--stats", "conv"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
            .args(["dump", CAPTURE])
            .args(args)
            .env("COLUMNS", "80")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("IO totals"), "{text}");
        for l in text.lines() {
            assert!(l.chars().count() <= 80, "{args:?}: {l}");
        }
    }
}
