//! (A module of tests/dump.rs.) `-Y` display filters, `-T fields`/`-F csv`, `-c`/`--skip`/`--from`/`--to` and `dump -w`
//! on the real capture (tests/data/captures/three-friends.pcap), checked against its
//! truth file, against our own JSON output, our reader, and tshark/capinfos.

use std::process::Command;

use dissonance_tools::capture::CaptureReader;
use serde_json::Value;

use super::{truth, CAPTURE};

/// `dump CAPTURE ARGS...`: status, stdout, stderr.
fn dump(args: &[&str]) -> (i32, String, String) {
    let mut all = vec![CAPTURE];
    all.extend_from_slice(args);
    super::dump(&all)
}

/// The NDJSON records of `dump CAPTURE -F ndjson ARGS...`.
fn ndjson(args: &[&str]) -> Vec<Value> {
    let mut all = vec![CAPTURE, "-F", "ndjson"];
    all.extend_from_slice(args);
    super::ndjson(&all)
}

fn frames(v: &[Value]) -> Vec<u64> {
    v.iter().map(|p| p["packet"].as_u64().unwrap()).collect()
}

#[test]
fn text_filter_gives_exactly_the_texts_of_the_truth_file() {
    let truth = truth();
    let mut want = Vec::new();
    for t in truth["texts"].as_array().unwrap() {
        for d in t["delivered"].as_array().unwrap() {
            want.push((d["frame"].as_u64().unwrap(), t["text"].as_str().unwrap()));
        }
    }
    assert_eq!(want.len(), 2);
    let got = ndjson(&["-Y", r#"type == "TextData""#]);
    let got: Vec<(u64, &str)> = got
        .iter()
        .map(|p| (p["packet"].as_u64().unwrap(), p["text"].as_str().unwrap()))
        .collect();
    assert_eq!(got, want);
    // The sent copy is the relay wrapping it.
    let sent = ndjson(&["-Y", "inner.type == TextData"]);
    let t = &truth["texts"][0];
    assert_eq!(frames(&sent), [t["sent"]["frame"].as_u64().unwrap()]);
    assert_eq!(sent[0]["inner"]["text"], t["text"]);
    // The shorthand and the expression select the same.
    let (_, a, _) = dump(&["--type", "TextData", "--no-events"]);
    let (_, b, _) = dump(&[
        "-Y",
        "type == TextData || inner.type == TextData",
        "--no-events",
    ]);
    assert_eq!(a, b);
    assert_eq!(a.lines().count(), 3);
}

#[test]
fn a_voice_sequence_range_gives_exactly_that_many_frames() {
    let truth = truth();
    let alice = &truth["voice_streams"][0];
    assert_eq!(alice["speaker"], "alice");
    assert_eq!(alice["seq_first"], 0);
    assert_eq!(alice["seq_last"], 214);
    // alice's frames reach bob once each: the server's VoiceData forwards.
    let got = ndjson(&["-Y", "voice.seq in 10..19 && sender_name == alice"]);
    assert_eq!(got.len(), 10);
    let seqs: Vec<u64> = got.iter().map(|p| p["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (10..=19).collect::<Vec<_>>());
    // ... and the relays she sent, one per frame.
    let sent = ndjson(&[
        "-Y",
        "inner.seq >= 100 && inner.seq < 150 && src_port == 47201",
    ]);
    assert_eq!(sent.len(), 50);
    // Every frame of hers: the stream's frame count.
    let all = ndjson(&["-Y", "type == VoiceData && sender_name == alice"]);
    assert_eq!(all.len() as u64, alice["frames"].as_u64().unwrap());
}

#[test]
fn filter_on_addresses_times_and_channels() {
    let bob_in = ndjson(&[
        "-Y",
        "dst == 127.0.0.0/8 && dst_port == 47202 && type == TextData",
    ]);
    assert_eq!(frames(&bob_in), [655]);
    let player = ndjson(&[
        "-Y",
        r#"channels.type == Player && channels.recipient_name == "alice""#,
    ]);
    // bob's reply on a player channel to alice: every forward of it.
    let bob = &truth()["voice_streams"][1];
    assert_eq!(bob["speaker"], "bob");
    assert_eq!(player.len() as u64, bob["frames"].as_u64().unwrap());
    let window = ndjson(&["--from", "8.5", "--to", "8.52"]);
    assert_eq!(frames(&window), [652, 653, 654, 655, 656]);
    for p in &window {
        let rel = p["rel"].as_f64().unwrap();
        assert!((8.5..=8.52).contains(&rel), "{rel}");
    }
    let abs = ndjson(&[
        "--from",
        "2026-11-24T10:01:21.429760Z",
        "--to",
        "2026-11-24T10:01:21.431464Z",
    ]);
    assert_eq!(frames(&abs), [652, 653, 654, 655]);
}

#[test]
fn count_and_skip_apply_after_the_filter() {
    let all = ndjson(&["-Y", "type == VoiceData"]);
    let some = ndjson(&["-Y", "type == VoiceData", "--skip", "5", "-c", "7"]);
    assert_eq!(frames(&some), frames(&all[5..12]));
    let none = ndjson(&["-c", "0"]);
    assert!(none.is_empty());
}

#[test]
fn parse_errors_are_usage_errors_that_point_at_the_column() {
    let (code, out, err) = dump(&["-Y", "seq >"]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains("expected a value after '>' at column 6"),
        "{err}"
    );
    let (code, _, err) = dump(&["-Y", "type == VoiceDat"]);
    assert_eq!(code, 2);
    assert!(err.contains("type is never 'VoiceDat'"), "{err}");
    assert!(err.contains("at column 9"), "{err}");
}

/// A minimal RFC 4180 reader: the test must not trust the writer's own notion of CSV.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(field.is_empty() && row.is_empty(), "last line unterminated");
    rows
}

#[test]
fn fields_output_parses_back_as_csv_and_agrees_with_json() {
    let fields = [
        "packet",
        "src",
        "dst_port",
        "type",
        "sender_name",
        "seq",
        "text",
        "channels.recipient",
        "inner.type",
    ];
    let mut args = vec![
        "-T",
        "fields",
        "-E",
        "separator=,",
        "-E",
        "header=y",
        "-E",
        "quote=d",
        "-E",
        "aggregator=/s",
        "-Y",
        "type in {TextData ServerRelayReliable VoiceData} && packet < 700",
    ];
    for f in &fields {
        args.extend(["-e", f]);
    }
    let (code, out, err) = dump(&args);
    assert_eq!(code, 0, "{err}");
    let rows = parse_csv(&out);
    assert_eq!(rows[0], fields);
    let json = ndjson(&[
        "-Y",
        "type in {TextData ServerRelayReliable VoiceData} && packet < 700",
    ]);
    assert_eq!(rows.len() - 1, json.len());
    assert!(json.len() > 300);
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for (row, p) in rows[1..].iter().zip(&json) {
        assert_eq!(row[0], text(&p["packet"]));
        assert_eq!(row[1], text(&p["src"]));
        assert_eq!(row[2], text(&p["dst_port"]));
        assert_eq!(row[3], text(&p["type"]));
        assert_eq!(row[4], text(&p["sender_name"]));
        assert_eq!(row[5], text(&p["seq"]));
        assert_eq!(row[6], text(&p["text"]));
        let recipients: Vec<String> = p["channels"]
            .as_array()
            .map(|c| c.iter().map(|c| text(&c["recipient"])).collect())
            .unwrap_or_default();
        assert_eq!(row[7], recipients.join(" "));
        assert_eq!(row[8], text(&p["inner"]["type"]));
    }
    // The text, with its comma, survived the quoting.
    assert!(rows
        .iter()
        .any(|r| r[6] == "Hi all, carol here - sorry I am late!"));

    // -F csv: the same reader, a header, the default columns.
    let (code, out, err) = dump(&["-F", "csv", "-Y", "type == TextData"]);
    assert_eq!(code, 0, "{err}");
    let rows = parse_csv(&out);
    assert_eq!(rows.len(), 3);
    let col = rows[0].iter().position(|c| c == "text").unwrap();
    assert_eq!(rows[1][col], "Hi all, carol here - sorry I am late!");
    let col = rows[0].iter().position(|c| c == "packet").unwrap();
    assert_eq!(rows[1][col], "654");
}

#[test]
fn fields_output_needs_fields_and_known_names() {
    let (code, _, err) = dump(&["-T", "fields"]);
    assert_eq!(code, 2);
    assert!(err.contains("needs at least one -e FIELD"), "{err}");
    let (code, _, err) = dump(&["-T", "fields", "-e", "sequence"]);
    assert_eq!(code, 2);
    assert!(err.contains("-e sequence: unknown field"), "{err}");
}

/// (timestamp ns, bytes) of every frame of a capture, by our reader.
fn read_frames(path: &str) -> Vec<(i64, Vec<u8>)> {
    let mut r = CaptureReader::open(path).unwrap();
    let mut out = Vec::new();
    while let Some(f) = r.next_frame() {
        let f = f.unwrap();
        out.push((f.ts_ns, f.data.to_vec()));
    }
    out
}

fn tool(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn dump_w_writes_the_selected_frames_unchanged() {
    let dir = std::env::temp_dir().join(format!("dissonance-cli-w-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let original = read_frames(CAPTURE);
    let filter = "voice.seq in 10..19 && sender_name == alice || type == TextData";
    let selected = frames(&ndjson(&["-Y", filter]));
    assert_eq!(selected.len(), 12);
    for name in ["sel.pcap", "sel.pcapng"] {
        let path = dir.join(name);
        let path = path.to_str().unwrap();
        let (code, out, err) = dump(&["-Y", filter, "-w", path]);
        assert_eq!(code, 0, "{err}");
        assert!(out.is_empty(), "-w prints nothing: {out}");
        let written = read_frames(path);
        let want: Vec<(i64, Vec<u8>)> = selected
            .iter()
            .map(|&n| original[n as usize - 1].clone())
            .collect();
        assert_eq!(written, want, "{name}");
        // tshark and capinfos read it: the same count, times and lengths.
        let Some(info) = tool("capinfos", &["-M", "-c", "-T", "-r", path]) else {
            eprintln!("SKIPPED tshark/capinfos part: capinfos not installed");
            continue;
        };
        assert!(info.trim_end().ends_with("\t12"), "{info}");
        let t = tool(
            "tshark",
            &[
                "-r",
                path,
                "-T",
                "fields",
                "-e",
                "frame.time_epoch",
                "-e",
                "frame.len",
            ],
        )
        .unwrap();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 12, "{t}");
        for (line, (ts, bytes)) in lines.iter().zip(&want) {
            let cols: Vec<&str> = line.split('\t').collect();
            let (secs, frac) = cols[0].split_once('.').unwrap();
            let ns = secs.parse::<i64>().unwrap() * 1_000_000_000
                + format!("{frac:0<9}")[..9].parse::<i64>().unwrap();
            assert_eq!(ns, *ts, "{line}");
            assert_eq!(cols[1].parse::<usize>().unwrap(), bytes.len(), "{line}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
