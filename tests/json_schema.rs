//! Every key of every JSON output, on real data, is documented in docs/json-schema.md.
//!
//! The doc lists each output's key paths in fenced ```` ```keys NAME ```` blocks next to
//! its tables (arrays flattened: `a.b` is key `b` of the objects in array `a`; `*` any key
//! of a map; `@NAME` the paths of another block, at that place). This test runs every
//! command with JSON or NDJSON output as a user would — the shipped captures through
//! decode, dump (packets, events, transport records, --summary, --flows), check and
//! voice; serve, client, proxy (UDP and TCP), simulate, replay and sniff live on
//! 127.0.0.1 — parses every line with serde_json (so no NaN or Infinity anywhere), and
//! fails on any key path the doc does not list, naming the path and the command. It also holds the doc and the
//! output to the time-key rule: a point in time is `ts` (Unix seconds) or `rel` (seconds
//! from the start), a duration is a number of seconds named `*_s`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dissonance");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DOC: &str = include_str!("../docs/json-schema.md");

/// The `keys` blocks of the doc: name → its lines.
fn blocks() -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut lines = DOC.lines();
    while let Some(l) = lines.next() {
        let Some(name) = l.strip_prefix("```keys ") else {
            continue;
        };
        let mut paths = Vec::new();
        for p in lines.by_ref() {
            if p.starts_with("```") {
                break;
            }
            let p = p.trim();
            if !p.is_empty() {
                paths.push(p.to_string());
            }
        }
        assert!(
            out.insert(name.trim().to_string(), paths).is_none(),
            "two keys blocks named {name}"
        );
    }
    out
}

/// A block's paths with every `@NAME` replaced by that block's (nested at most `depth`
/// deep: a relay's `inner` is a packet, which may be a relay).
fn expand(blocks: &BTreeMap<String, Vec<String>>, name: &str, depth: usize) -> BTreeSet<String> {
    let block = blocks
        .get(name)
        .unwrap_or_else(|| panic!("docs/json-schema.md has no ```keys {name} block"));
    let mut out = BTreeSet::new();
    for line in block {
        match line.split_once('@') {
            Some((prefix, other)) => {
                // `a.@X` documents `a` itself too.
                if let Some(container) = prefix.strip_suffix('.') {
                    out.insert(container.to_string());
                }
                if depth == 0 {
                    continue;
                }
                for p in expand(blocks, other, depth - 1) {
                    out.insert(format!("{prefix}{p}"));
                }
            }
            None => {
                out.insert(line.clone());
            }
        }
    }
    out
}

fn documented(patterns: &BTreeSet<String>, path: &str) -> bool {
    patterns.contains(path)
        || patterns.iter().any(|p| {
            let (a, b): (Vec<&str>, Vec<&str>) =
                (p.split('.').collect(), path.split('.').collect());
            a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x == y || *x == "*")
        })
}

/// A key name that says "time" without following the rule: `t`, units other than
/// seconds, `seconds` itself, a point in time named `*_s`, `ts`/`rel` as a part.
fn misnamed_time_key(k: &str) -> bool {
    const POINTS: [&str; 9] = [
        "start", "end", "first", "last", "from", "at", "begin", "since", "until",
    ];
    k == "t"
        || k == "seconds"
        || ["_ms", "_us", "_ns", "_ts", "_rel"]
            .iter()
            .any(|s| k.ends_with(s))
        || k.starts_with("ts_")
        || k.starts_with("rel_")
        || k.starts_with("t_")
        || POINTS
            .iter()
            .any(|p| k == format!("{p}_s") || k.ends_with(&format!("_{p}_s")))
}

/// Key paths of `v` (arrays flattened), each with the values found there; the time keys'
/// values checked on the way.
fn collect(v: &Value, prefix: &str, out: &mut BTreeSet<String>, what: &str) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                check_time_value(k, x, m, &path, what);
                out.insert(path.clone());
                collect(x, &path, out, what);
            }
        }
        Value::Array(a) => {
            for x in a {
                collect(x, prefix, out, what);
            }
        }
        _ => {}
    }
}

/// `ts` is an absolute time (after 2001, before 2096), `rel` seconds from a start (not
/// negative, and with a `ts` beside it the same start), `*_s` a length (not negative).
fn check_time_value(
    k: &str,
    x: &Value,
    obj: &serde_json::Map<String, Value>,
    path: &str,
    what: &str,
) {
    assert!(
        !misnamed_time_key(k),
        "{what}: key {path} breaks the time-key rule"
    );
    let num = || {
        x.as_f64()
            .unwrap_or_else(|| panic!("{what}: {path} is {x}, not a number"))
    };
    match k {
        "ts" => {
            let ts = num();
            assert!(
                (1e9..4e9).contains(&ts),
                "{what}: {path} = {ts} is no Unix time"
            );
        }
        "rel" => {
            let rel = num();
            assert!((0.0..1e7).contains(&rel), "{what}: {path} = {rel}");
            if let Some(ts) = obj.get("ts").and_then(Value::as_f64) {
                assert!(ts - rel > 1e9, "{what}: {path} = {rel} beside ts {ts}");
            }
        }
        _ if k.ends_with("_s") && !x.is_null() => {
            let d = num();
            assert!(d >= 0.0, "{what}: duration {path} = {d}");
        }
        _ => {}
    }
}

/// Parses `text` (one JSON document, or one per line) and checks every key path against
/// the `schema` block; returns the objects.
fn check(what: &str, schema: &str, text: &str, ndjson: bool) -> Vec<Value> {
    let blocks = blocks();
    let patterns = expand(&blocks, schema, 3);
    let docs: Vec<Value> = if ndjson {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: {e}: {l}")))
            .collect()
    } else {
        vec![serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"))]
    };
    assert!(!docs.is_empty(), "{what}: no JSON at all");
    let mut paths = BTreeSet::new();
    for d in &docs {
        collect(d, "", &mut paths, what);
    }
    let missing: Vec<&String> = paths.iter().filter(|p| !documented(&patterns, p)).collect();
    assert!(
        missing.is_empty(),
        "{what}: keys not in docs/json-schema.md (```keys {schema}): {missing:?}"
    );
    docs
}

fn cap(name: &str) -> String {
    format!("{ROOT}/tests/data/captures/{name}")
}

fn captures() -> Vec<String> {
    let mut all = Vec::new();
    for dir in ["tests/data/captures", "tests/data/captures/transports"] {
        for e in std::fs::read_dir(Path::new(ROOT).join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "pcap") {
                all.push(p.to_string_lossy().into_owned());
            }
        }
    }
    all.sort();
    assert!(all.len() >= 5, "{all:?}");
    all
}

/// Runs the binary to the end: status, stdout, stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dissonance-json-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_doc_blocks_follow_the_rules() {
    let blocks = blocks();
    // Every leaf of the index is described in the prose too (its tables and lists).
    let mut prose = BTreeSet::new();
    let mut in_keys = false;
    for l in DOC.lines() {
        if l.starts_with("```keys ") {
            in_keys = true;
        } else if l.starts_with("```") {
            in_keys = false;
        } else if !in_keys {
            for (i, span) in l.split('`').enumerate() {
                if i % 2 == 1 {
                    prose.extend(
                        span.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .map(str::to_string),
                    );
                }
            }
        }
    }
    for (name, lines) in &blocks {
        for l in lines {
            if let Some((_, other)) = l.split_once('@') {
                assert!(blocks.contains_key(other), "{name}: {l}: no such block");
                continue;
            }
            for k in l.split('.').filter(|k| *k != "*") {
                assert!(
                    !misnamed_time_key(k),
                    "{name}: {l}: breaks the time-key rule"
                );
                assert!(
                    prose.contains(k),
                    "{name}: {l}: `{k}` is in no table or list of the doc"
                );
            }
        }
    }
    for (k, bad) in [
        ("t", true),
        ("rel_s", true),
        ("start_s", true),
        ("jitter_ms", true),
        ("seconds", true),
        ("ts", false),
        ("rel", false),
        ("duration_s", false),
        ("wav_offset_s", false),
        ("time", false),
    ] {
        assert_eq!(misnamed_time_key(k), bad, "{k}");
    }
}

/// The display filter's fields (`-Y`, `-e`) are the records' documented key paths, so
/// a name means the same in a filter and in the JSON.
#[test]
fn filter_fields_are_documented_record_keys() {
    let record = expand(&blocks(), "record", 3);
    for (name, _, _) in dissonance_tools::dissect::filter::FIELDS {
        // `addr` and `port` stand for either end (tshark's ip.addr, udp.port).
        if ["addr", "port"].contains(name) {
            continue;
        }
        assert!(
            documented(&record, name),
            "-Y field {name} is no key of ```keys record"
        );
    }
}

#[test]
fn decode_json() {
    let hex = std::fs::read_to_string(Path::new(ROOT).join("samples/packets.hex")).unwrap();
    // The samples, and malformed ones: a truncation, a bad magic, an unknown type.
    let mut input = hex.clone();
    input.push_str("8bc70401000003c00000bb8000\nffff01\n8bc70c00\n");
    let mut p = Command::new(BIN)
        .args(["decode", "--stdin", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        p.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = p.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let docs = check("decode --json", "packet", &text, true);
    let n = hex
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    assert_eq!(docs.len(), n + 3);
    assert!(docs.iter().any(|d| d["error"]["kind"] == "truncated"));
    assert!(docs.iter().any(|d| d["rejected"] == "bad_magic"));
    assert!(docs.iter().any(|d| d["rejected"] == "unknown_type"));
    // -F json: the same objects as one array; -F ndjson is --json.
    let one = "8bc70a123456780001";
    let two = "8bc70401000003c00000bb800006616c696365";
    let (code, out, err) = run(&["decode", "-F", "json", one, two]);
    assert_eq!(code, 0, "{err}");
    let arr: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(arr.as_array().unwrap().len(), 2, "{out}");
    for d in arr.as_array().unwrap() {
        check("decode -F json", "packet", &d.to_string(), false);
    }
    let (_, ndjson, _) = run(&["decode", "-F", "ndjson", one, two]);
    let (_, legacy, _) = run(&["decode", "--json", one, two]);
    assert_eq!(ndjson, legacy);
    let lines: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, *arr.as_array().unwrap());
}

#[test]
fn dump_json_and_ndjson_with_events_and_hex() {
    for c in captures() {
        for (format, ndjson) in [("json", false), ("ndjson", true)] {
            let (code, out, err) = run(&["dump", &c, "-F", format, "--events", "--hex"]);
            assert!(code == 0 || code == 1, "{c}: {err}");
            let what = format!("dump {c} -F {format} --events --hex");
            let docs = check(&what, "record", &out, ndjson);
            let records: Vec<&Value> = if ndjson {
                docs.iter().collect()
            } else {
                docs[0].as_array().unwrap().iter().collect()
            };
            assert!(records.len() > 100, "{what}: {}", records.len());
            assert!(
                records
                    .iter()
                    .all(|r| r["ts"].is_f64() && r["rel"].is_f64()),
                "{what}"
            );
        }
    }
    // The magic scan on the game stacks' captures gives `cut` records (a candidate
    // running off the end of a datagram).
    let mut cuts = 0;
    for c in captures() {
        let (code, out, err) = run(&["dump", &c, "--payload", "scan", "-F", "ndjson", "--events"]);
        assert!(code == 0 || code == 1, "{c}: {err}");
        let docs = check(
            &format!("dump {c} --payload scan -F ndjson"),
            "record",
            &out,
            true,
        );
        cuts += docs.iter().filter(|d| d["event"] == "cut").count();
    }
    assert!(cuts > 0);
}

#[test]
fn dump_summary_and_flows_json() {
    for c in captures() {
        for format in ["json", "ndjson"] {
            for flags in [&["--summary"][..], &["--flows"], &["--summary", "--flows"]] {
                let mut args = vec!["dump", c.as_str(), "-F", format];
                args.extend_from_slice(flags);
                let (code, out, err) = run(&args);
                assert_eq!(code, 0, "{args:?}: {err}");
                // One object, on one line, and nothing else (no packet array, no tables).
                assert_eq!(out.lines().count(), 1, "{args:?}: {out}");
                let docs = check(&format!("{args:?}"), "summary", &out, false);
                let o = &docs[0];
                assert_eq!(
                    o.get("flows").is_some(),
                    flags.contains(&"--flows"),
                    "{args:?}"
                );
                assert_eq!(
                    o.get("packets").is_some(),
                    flags.contains(&"--summary"),
                    "{args:?}"
                );
            }
        }
    }
}

/// The summary's JSON holds what its tables show: three-friends against its truth file.
#[test]
fn summary_json_values_on_three_friends() {
    let (code, out, err) = run(&[
        "dump",
        &cap("three-friends.pcap"),
        "--summary",
        "--flows",
        "-F",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let s: Value = serde_json::from_str(&out).unwrap();
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(cap("three-friends.truth.json")).unwrap())
            .unwrap();
    let counts = &truth["packet_counts"];
    assert_eq!(s["payloads"], counts["udp_datagrams"]);
    assert_eq!(s["packets"], counts["dissonance_packets"]);
    assert_eq!(s["transport_goodbyes"], counts["bye_datagrams"]);
    assert_eq!(s["not_dissonance"], counts["not_dissonance_datagrams"]);
    assert_eq!(s["malformed"], 0);
    assert_eq!(s["capture"]["frames"], 884);
    // First and last frame (the pcap's record headers): 10:01:12.912907 to :26.908937.
    assert_eq!(s["first"]["ts"], 1795514472.912907);
    assert_eq!(s["first"]["rel"], 0.0);
    assert_eq!(s["last"]["ts"], 1795514486.908937);
    assert_eq!(s["last"]["rel"], 13.99603);
    assert_eq!(s["duration_s"], 13.99603);
    let sessions = s["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["session"], 523124044);
    assert_eq!(sessions[0]["server"], "127.0.0.1:47200");
    let clients = s["clients"].as_array().unwrap();
    let names: Vec<&str> = clients
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    for c in clients {
        let name = c["name"].as_str().unwrap();
        assert_eq!(
            c["client_id"], truth["summary"]["client_ids"][name],
            "{name}"
        );
        assert_eq!(c["addr"], truth["clients"][name]["addr"], "{name}");
        assert_eq!(c["codec"], truth["clients"][name]["codec"], "{name}");
        // Joined when the HandshakeResponse came back (truth: its time from the start).
        let resp = &truth["clients"][name]["handshakes"][0]["response"];
        assert_eq!(c["joined"]["rel"], resp["t_rel_s"], "{name}");
    }
    // Voice frames per speaker, as the truth counts them, and 20 ms each.
    for v in truth["summary"]["voice"].as_array().unwrap() {
        let c = clients.iter().find(|c| c["name"] == v["speaker"]).unwrap();
        assert_eq!(c["voice_frames"], v["frames"]);
        let frames = v["frames"].as_f64().unwrap();
        assert!((c["speech_s"].as_f64().unwrap() - frames * 0.02).abs() < 1e-9);
    }
    let rooms: BTreeMap<&str, &Value> = s["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["room"].as_str().unwrap(), &r["room_id"]))
        .collect();
    assert_eq!(rooms.len(), 2);
    for (name, id) in truth["rooms"].as_object().unwrap() {
        assert_eq!(rooms[name.as_str()], id, "{name}");
    }
    // Messages by direction: the truth's counts, relays by their wrapped type.
    let mut by_dir: BTreeMap<(String, String), u64> = BTreeMap::new();
    for d in s["by_direction"].as_array().unwrap() {
        let label = match d["inner_type"].as_str() {
            Some(i) => format!("{}({i})", d["type"].as_str().unwrap()),
            None => d["type"].as_str().unwrap().to_string(),
        };
        by_dir.insert(
            (d["direction"].as_str().unwrap().to_string(), label),
            d["count"].as_u64().unwrap(),
        );
    }
    let mut want = BTreeMap::new();
    for dir in ["client_to_server", "server_to_client"] {
        for (label, n) in counts[dir].as_object().unwrap() {
            if label != "BYE" {
                want.insert((dir.to_string(), label.clone()), n.as_u64().unwrap());
            }
        }
    }
    assert_eq!(by_dir, want);
    // Six flows (three clients, both ways), every packet at offset 0.
    let flows = s["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 6);
    let packets: u64 = flows.iter().map(|f| f["packets"].as_u64().unwrap()).sum();
    assert_eq!(packets, 881);
    assert!(flows
        .iter()
        .all(|f| f["locked"] == 0 && f["session"] == 523124044));
}

#[test]
fn dump_stats() {
    let c = cap("three-friends.pcap");
    let all = ["--stats", "io,1", "--stats", "streams", "--stats", "conv"];
    for format in ["json", "ndjson"] {
        let mut args = vec!["dump", c.as_str(), "-q", "-F", format];
        args.extend(all);
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        // -q: the statistics object alone (the array's only element, the only line).
        let text = if format == "json" {
            let v: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v.as_array().unwrap().len(), 1, "{out}");
            v[0].to_string()
        } else {
            assert_eq!(out.lines().count(), 1, "{out}");
            out.clone()
        };
        let docs = check(
            &format!("dump -q --stats ... -F {format}"),
            "stats",
            &text,
            false,
        );
        assert_eq!(docs[0]["stats"]["io"]["interval_s"], 1.0, "{out}");
    }
}

#[test]
fn check_json() {
    for c in captures() {
        let (code, out, err) = run(&["check", &c, "-F", "json"]);
        assert!((0..=1).contains(&code), "{c}: {err}");
        let docs = check(&format!("check {c} -F json"), "check", &out, false);
        assert!(docs[0]["packets"].as_u64().unwrap() > 0, "{c}");
    }
    // A capture with findings and a voice table: restart (the server restarts).
    let (_, out, _) = run(&["check", &cap("restart.pcap"), "-F", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(!v["findings"].as_array().unwrap().is_empty(), "{out}");
    assert!(!v["voice"].as_array().unwrap().is_empty(), "{out}");
    // -Y adds the filter object (and first_seen where a finding's first frame is left out).
    let (code, out, err) = run(&[
        "check",
        &cap("restart.pcap"),
        "-Y",
        "dst_port == 41420",
        "-F",
        "json",
    ]);
    assert_eq!(code, 1, "{err}");
    let docs = check("check -Y -F json", "check", &out, false);
    assert_eq!(docs[0]["filter"]["frames"], 11, "{out}");
    // -F ndjson: each finding a line (a findings[] object), then the rest under "summary".
    let (code, out, err) = run(&["check", &cap("restart.pcap"), "-F", "ndjson"]);
    assert_eq!(code, 1, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (last, findings) = lines.split_last().unwrap();
    assert!(!findings.is_empty(), "{out}");
    let as_report = serde_json::json!({ "findings": findings });
    check(
        "check -F ndjson (findings)",
        "check",
        &as_report.to_string(),
        false,
    );
    check(
        "check -F ndjson (summary)",
        "check",
        &last["summary"].to_string(),
        false,
    );
}

#[test]
fn voice_sidecars() {
    for (i, c) in captures().iter().enumerate() {
        for flags in [
            &[][..],
            &["--mix", "--trim"],
            &["--room", "Global"],
            &["--listener", "bob"],
        ] {
            let out = tmp(&format!("voice-{i}-{}", flags.len()));
            let mut args = vec!["voice", c.as_str(), "-o", out.to_str().unwrap(), "-q"];
            args.extend_from_slice(flags);
            let (code, _, err) = run(&args);
            assert!(code == 0 || code == 1, "{args:?}: {err}");
            for e in std::fs::read_dir(&out).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "json") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    check(&format!("{args:?}: {}", p.display()), "voice", &text, false);
                }
            }
            std::fs::remove_dir_all(&out).ok();
        }
    }
    // three-friends has two speakers, each a sidecar with one spurt.
    let out = tmp("voice-count");
    let (code, _, err) = run(&[
        "voice",
        &cap("three-friends.pcap"),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    let sidecars = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(sidecars, 2);
    std::fs::remove_dir_all(&out).ok();
}

/// A running command, its stdout and stderr read to the end on threads (stderr's lines
/// also on a channel); killed when dropped, so a failed assertion leaves no process behind.
struct Running {
    child: Child,
    out: Option<std::thread::JoinHandle<String>>,
    err_lines: mpsc::Receiver<String>,
    err: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// `dissonance` with the words of `args`, then `more` (words with spaces).
    fn spawn(args: &str, more: &[&str]) -> Running {
        let mut child = Command::new(BIN)
            .args(args.split_whitespace())
            .args(more)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(out).read_to_string(&mut s);
            s
        });
        let (tx, err_lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        let err = std::thread::spawn(move || {
            let mut all = String::new();
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                all.push_str(&l);
                all.push('\n');
                let _ = tx.send(l);
            }
            all
        });
        Running {
            child,
            out: Some(out),
            err_lines,
            err: Some(err),
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits (bounded) for the exit: status, stdout, stderr.
    fn finish(&mut self) -> (i32, String, String) {
        let limit = Duration::from_secs(60);
        let t = Instant::now();
        let code = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s.code().unwrap_or(-1);
            }
            assert!(t.elapsed() < limit, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = self.out.take().unwrap().join().unwrap();
        let err = self.err.take().unwrap().join().unwrap();
        (code, out, err)
    }

    /// The first stderr line `pick` accepts (bounded wait).
    fn first_line<T>(&self, pick: impl Fn(&str) -> Option<T>) -> T {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let l = self
                .err_lines
                .recv_timeout(left)
                .expect("the line looked for");
            if let Some(t) = pick(&l) {
                return t;
            }
        }
    }
}

/// `proxy --tcp` between a TCP client and a TCP echo server: its stopped record and
/// the frames it decoded.
#[test]
fn proxy_tcp_log_and_records() {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap().to_string();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = upstream.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let mut proxy = Running::spawn(
        "proxy --tcp --listen 127.0.0.1:0 --duration 60 --log-format ndjson -F ndjson \
         --max-connections 1 --upstream",
        &[&up],
    );
    let via: String = proxy.first_line(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        (v["event"] == "listening").then(|| v["addr"].as_str().unwrap().to_string())
    });
    // One HandshakeRequest from alice, with its u16 big-endian length prefix, and back.
    let hello =
        dissonance_tools::output::hex::parse("8bc70401000003c00000bb800006616c696365").unwrap();
    let mut framed = (hello.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&hello);
    let mut c = TcpStream::connect(&via).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(&framed).unwrap();
    let mut back = vec![0u8; framed.len()];
    c.read_exact(&mut back).unwrap();
    assert_eq!(back, framed);
    // A second connection while the first is open: over --max-connections 1, closed at
    // once (EOF), logged as connection_refused.
    let mut refused = TcpStream::connect(&via).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(refused.read(&mut back).unwrap_or(0), 0);
    drop(c);
    echo.join().unwrap();
    proxy.signal(libc::SIGTERM);
    let (code, out, err) = proxy.finish();
    assert_eq!(code, 0, "{err}");
    let log = check(
        "proxy --tcp --log-format ndjson",
        "diagnostic_log",
        &err,
        true,
    );
    let stopped = log
        .iter()
        .find(|l| l["event"] == "stopped")
        .expect("stopped");
    assert_eq!(stopped["packets"], 2, "{stopped}");
    assert_eq!(stopped["connections"], 1, "{stopped}");
    assert_eq!(stopped["refused_connections"], 1, "{stopped}");
    assert_eq!(stopped["max_connections"], 1, "{stopped}");
    let refusal = log
        .iter()
        .find(|l| l["event"] == "connection_refused")
        .expect("connection_refused");
    assert_eq!(
        (&refusal["count"], &refusal["refused_connections"]),
        (&1.into(), &1.into())
    );
    let records = check("proxy --tcp -F ndjson", "record", &out, true);
    assert_eq!(records.len(), 2);
    assert!(records
        .iter()
        .all(|r| r["name"] == "alice" && r["transport"] == "tcp"));
}

/// serve, sniff, proxy, client, simulate and replay, briefly, on 127.0.0.1: each one's
/// JSON and NDJSON output.
#[test]
fn live_commands_logs_and_reports() {
    let mut serve = Running::spawn(
        "serve --listen 127.0.0.1:0 --duration 60 --log-format ndjson --status-every 1 \
         --log-level debug --drain 0.2s",
        &[],
    );
    let server: String = serve.first_line(|l| {
        l.strip_prefix("listening on ")
            .map(|r| r.split(' ').next().unwrap().to_string())
    });
    let port = server.rsplit(':').next().unwrap().to_string();

    // sniff on lo, the server's traffic (needs root or cap_net_raw, as tests/sniff.rs).
    let mut sniff = Running::spawn(
        "sniff -i lo -F ndjson --events --duration 60",
        &["-f", &format!("udp port {port}")],
    );
    sniff.first_line(|l| {
        assert!(!l.contains("not allowed to capture"), "run as root: {l}");
        l.starts_with("dissonance: listening on lo").then_some(())
    });

    let mut proxy = Running::spawn(
        "proxy --listen 127.0.0.1:0 --duration 60 --log-format ndjson --log-level debug \
         -F ndjson --events --measure-latency --drain 0.2s --upstream",
        &[&server],
    );
    let via: String = proxy.first_line(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        (v["event"] == "listening").then(|| v["addr"].as_str().unwrap().to_string())
    });

    // A truncated ClientState, straight to the server: its `drop` line, and a malformed
    // packet in sniff's records.
    let stray = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    stray.send_to(&[0x8b, 0xc7, 0x01, 0x00], &server).unwrap();

    // A client that says something, moves between rooms and stays in room-0 to hear the
    // simulator's speaker until it is told to stop (SIGTERM: it leaves as `quit` does).
    let mut client = Running::spawn(
        "client --name carol --rooms room-0 --log-format ndjson --log-voice-packets \
         --duration 30 --server",
        &[
            &server,
            "-e",
            "wait 0.3; say room-0 hello; leave room-0; join Global; join room-0; wait 30",
        ],
    );

    let mut sim = Running::spawn(
        "simulate --clients 3 --speakers 1 --duration 1s --measure-latency --json \
         --log-format ndjson --log-level debug --server",
        &[&via],
    );
    let (code, sim_out, sim_err) = sim.finish();
    assert_eq!(code, 0, "{sim_err}");
    let s = check("simulate --json", "simulate", &sim_out, false);
    assert_eq!(s[0]["clients"], 3);
    assert!(
        s[0]["latency"]["p50_s"].as_f64().unwrap() > 0.0,
        "{sim_out}"
    );
    let log = check(
        "simulate --log-format ndjson",
        "diagnostic_log",
        &sim_err,
        true,
    );
    assert!(
        log.iter()
            .any(|l| l["event"] == "second" && l["p50_s"].is_f64()),
        "{sim_err}"
    );

    client.signal(libc::SIGTERM);
    let (code, client_out, client_err) = client.finish();
    assert_eq!(code, 0, "{client_err}");
    let c = check(
        "client --log-format ndjson",
        "client_log",
        &client_out,
        true,
    );
    for e in [
        "connected",
        "peer_joined",
        "voice_packet",
        "voice_started",
        "room_left",
    ] {
        assert!(
            c.iter().any(|l| l["event"] == e),
            "no {e} in the client's log"
        );
    }

    // replay the capture to the server at top speed.
    let (code, _, err) = run(&[
        "replay",
        &cap("three-friends.pcap"),
        "--target",
        &server,
        "--top-speed",
        "--log-format",
        "ndjson",
        "--log-level",
        "debug",
    ]);
    assert_eq!(code, 0, "{err}");
    let r = check("replay --log-format ndjson", "diagnostic_log", &err, true);
    assert!(
        r.iter()
            .any(|l| l["event"] == "start" && l["capture_s"].is_f64()),
        "{err}"
    );

    // Then stop everyone: the final lines.
    proxy.signal(libc::SIGTERM);
    let (code, proxy_out, proxy_err) = proxy.finish();
    assert_eq!(code, 0, "{proxy_err}");
    let p = check(
        "proxy --log-format ndjson",
        "diagnostic_log",
        &proxy_err,
        true,
    );
    let draining = p
        .iter()
        .find(|l| l["event"] == "draining")
        .expect("proxy's draining");
    assert_eq!(draining["drain_s"], 0.2);
    let stopped = p
        .iter()
        .find(|l| l["event"] == "stopped")
        .expect("proxy's stopped record");
    assert!(
        stopped["latency_up_p50_s"].as_f64().unwrap() > 0.0,
        "{stopped}"
    );
    let packets = check("proxy -F ndjson --events", "record", &proxy_out, true);
    assert!(packets.iter().any(|l| l["type"] == "VoiceData"));

    sniff.signal(libc::SIGINT);
    let (_, sniff_out, sniff_err) = sniff.finish();
    let sniffed = check("sniff -F ndjson --events", "record", &sniff_out, true);
    assert_eq!(
        sniffed.last().unwrap()["event"],
        "capture_stats",
        "{sniff_err}"
    );
    assert!(sniffed.iter().any(|l| l["event"] == "client_joined"));
    assert!(sniffed
        .iter()
        .any(|l| l["malformed"] == true && l["error"]["kind"] == "truncated"));

    serve.signal(libc::SIGTERM);
    let (code, serve_out, serve_err) = serve.finish();
    assert_eq!(code, 0, "{serve_err}");
    let log = check("serve --log-format ndjson", "serve_log", &serve_out, true);
    for e in [
        "listening",
        "join",
        "leave",
        "room_join",
        "status",
        "drop",
        "final",
    ] {
        assert!(log.iter().any(|l| l["event"] == e), "no {e} in serve's log");
    }
    let draining = log
        .iter()
        .find(|l| l["event"] == "draining")
        .expect("serve's draining");
    assert_eq!(draining["drain_s"], 0.2);
    let fin = log.last().unwrap();
    assert_eq!(fin["event"], "final");
    assert!(
        fin["added_latency"]["max_s"].as_f64().unwrap() > 0.0,
        "{fin}"
    );
}
