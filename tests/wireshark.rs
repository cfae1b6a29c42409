//! The Wireshark dissector (wireshark/dissonance.lua) agrees with `dissonance dump`, field by
//! field, on every capture of the repository and on every test vector written into a pcap.
//!
//! Both tools run for real: `tshark -X lua_script:wireshark/dissonance.lua -2 -T json` and
//! `dissonance dump --format ndjson --hex`. Each Dissonance tree tshark prints is turned
//! back into our JSON schema (the field table below names the JSON key of every Wireshark
//! field) and compared for equality with the record dump prints for the same packet; the
//! Info text (`dissonance.summary`) is compared with dump's text output line by line. A
//! malformed packet must carry an expert info whose text is our decoder's error message.
//!
//! Where Wireshark cannot represent a value the comparison says so explicitly instead of
//! skipping it: a null string has no field (its JSON `null` must meet an absent field), and
//! a string field stops at a NUL character (such strings are compared up to it, counted).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use dissonance_tools::capture::{
    CaptureReader, DecapConfig, Decapsulator, PcapWriter, TcpFlags, TcpFraming, TsResolution,
};
use dissonance_tools::codec::{Packet, Variant};
use serde_json::{Map, Value};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/wireshark/dissonance.lua");
const DUMP: &str = env!("CARGO_BIN_EXE_dissonance");

/// How a Wireshark field maps back to the JSON schema.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Str,
    UInt,
    Int,
    Bool,
    /// The channel amplitude: our decoder computes it in f32.
    F32,
    /// Colon-separated hex in tshark's JSON, plain hex in ours.
    Bytes,
    Obj,
    /// A repeated field: a JSON array of these.
    ListStr,
    ListUInt,
    ListObj,
}

/// Wireshark field -> (JSON key, kind). Every field the dissector adds must be here.
fn field(name: &str) -> Option<(&'static str, Kind)> {
    use Kind::*;
    let name = name.strip_prefix("dissonance.")?;
    Some(match name {
        "payload_offset" => ("payload_offset", UInt),
        "index_in_payload" => ("index_in_payload", UInt),
        "magic_ok" => ("magic_ok", Bool),
        "magic" => ("magic", UInt),
        "rejected" => ("rejected", Str),
        "variant" => ("variant", Str),
        "type" => ("type", Str),
        "type_byte" => ("type_byte", UInt),
        "size" => ("size", UInt),
        "bytes_read" => ("bytes_read", UInt),
        "trailing_bytes" => ("trailing_bytes", UInt),
        "trailing" => ("trailing_hex", Bytes),
        "session" => ("session", UInt),
        "client_id" => ("client_id", UInt),
        "client_name" => ("client_name", Str),
        "name" => ("name", Str),
        "codec" => ("codec", Obj),
        "codec.codec" => ("codec", UInt),
        "codec.codec_name" => ("codec_name", Str),
        "codec.frame_size" => ("frame_size", UInt),
        "codec.sample_rate" => ("sample_rate", Int),
        "state.rooms_encoding" => ("rooms_encoding", Str),
        "state.room" => ("rooms", ListStr),
        "voice.sender" => ("sender", UInt),
        "voice.sender_name" => ("sender_name", Str),
        "voice.options" => ("options", Obj),
        "voice.options.raw" => ("raw", UInt),
        "voice.options.channel_session" => ("channel_session", UInt),
        "voice.options.extended_range" => ("extended_range", Bool),
        "voice.options.channel_session_range" => ("channel_session_range", UInt),
        "voice.seq" => ("seq", UInt),
        "voice.num_channels" => ("num_channels", UInt),
        "voice.channel" => ("channels", ListObj),
        "voice.channel.bitfield" => ("bitfield", UInt),
        "voice.channel.recipient" => ("recipient", UInt),
        "voice.channel.recipient_name" => ("recipient_name", Str),
        "voice.channel.type" => ("type", Str),
        "voice.channel.closing" => ("closing", Bool),
        "voice.channel.positional" => ("positional", Bool),
        "voice.channel.priority" => ("priority", Str),
        "voice.channel.volume" => ("volume", UInt),
        "voice.channel.amplitude" => ("amplitude", F32),
        "voice.channel.session_id" => ("session_id", UInt),
        "voice.audio_len" => ("audio_len", UInt),
        "voice.audio" => ("audio_hex", Bytes),
        "text.recipient_type_byte" => ("recipient_type_byte", UInt),
        "text.recipient_type" => ("recipient_type", Str),
        "text.sender" => ("sender", UInt),
        "text.sender_name" => ("sender_name", Str),
        "text.target" => ("target", UInt),
        "text.target_name" => ("target_name", Str),
        "text.text" => ("text", Str),
        "response.form" => ("form", Str),
        "response.client" => ("clients", ListObj),
        "response.client.name" => ("name", Str),
        "response.client.id" => ("id", UInt),
        "response.room" => ("rooms", ListObj),
        "response.room.name" => ("name", Str),
        "response.room.room_id" => ("room_id", UInt),
        "response.room.peer" => ("peers", ListUInt),
        "relay.destination" => ("destinations", ListUInt),
        "relay.payload_len" => ("payload_len", UInt),
        "relay.payload" => ("payload_hex", Bytes),
        "relay.server_relay_verdict" => ("server_relay_verdict", Str),
        "relay.inner" => ("inner", Obj),
        "delta.joined" => ("joined", Bool),
        "delta.joined_raw" => ("joined_raw", UInt),
        "delta.peer" => ("peer", UInt),
        "delta.peer_name" => ("peer_name", Str),
        "delta.name" => ("name", Str),
        "p2p.peer_id" => ("peer_id", UInt),
        "error" => ("error", Obj),
        "error.kind" => ("kind", Str),
        "error.message" => ("message", Str),
        "error.offset" => ("offset", UInt),
        "error.field" => ("field", Str),
        "error.primitive" => ("primitive", Str),
        "error.need" => ("need", UInt),
        "error.left" => ("left", UInt),
        "error.room_id" => ("room_id", UInt),
        _ => return None,
    })
}

fn scalar(kind: Kind, v: &Value, what: &str) -> Value {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v}"));
    let int = |s: &str| -> Option<i64> {
        match s.strip_prefix("0x") {
            Some(h) => i64::from_str_radix(h, 16).ok(),
            None => s.split(' ').next()?.parse().ok(),
        }
    };
    match kind {
        Kind::Str => Value::from(s),
        Kind::UInt | Kind::Int | Kind::ListUInt => {
            Value::from(int(s).unwrap_or_else(|| panic!("{what}: not a number: {s:?}")))
        }
        Kind::Bool => Value::from(match s {
            "1" => true,
            "0" => false,
            _ => panic!("{what}: not a boolean: {s:?}"),
        }),
        Kind::F32 => f32_value(
            s.parse::<f64>()
                .unwrap_or_else(|_| panic!("{what}: not a float: {s:?}")),
        ),
        Kind::Bytes => Value::from(s.replace(':', "")),
        Kind::ListStr => Value::from(s),
        Kind::Obj | Kind::ListObj => panic!("{what}: {v} is no scalar"),
    }
}

fn f32_value(v: f64) -> Value {
    Value::from(v as f32 as f64)
}

/// One Dissonance tree from tshark's JSON, back in our schema. `_summary`, `_expert` and
/// `_bye` carry the Info text, the expert info's text and the goodbye marker.
fn convert(tree: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in tree {
        match k.as_str() {
            // Text-only items (a null string's label) and Wireshark's own markers.
            "_ws.lua.text" | "_ws.lua.fake" | "_ws.malformed" => continue,
            "_ws.expert" => {
                let msg = v["_ws.expert.message"].clone();
                assert!(msg.is_string(), "expert info without one message: {v}");
                out.insert("_expert".into(), msg);
                continue;
            }
            "dissonance.summary" => {
                out.insert("_summary".into(), v.clone());
                continue;
            }
            "dissonance.bye" => {
                out.insert("_bye".into(), Value::Bool(true));
                continue;
            }
            _ => {}
        }
        let (key, kind) = field(k).unwrap_or_else(|| panic!("field {k} is not in the table"));
        let value = match kind {
            Kind::Obj => Value::Object(convert(v.as_object().expect("a sub-tree"))),
            Kind::ListObj => Value::Array(
                as_list(v)
                    .iter()
                    .map(|x| Value::Object(convert(x.as_object().expect("a sub-tree"))))
                    .collect(),
            ),
            Kind::ListStr | Kind::ListUInt => {
                Value::Array(as_list(v).iter().map(|x| scalar(kind, x, k)).collect())
            }
            _ => scalar(kind, v, k),
        };
        assert!(
            out.insert(key.into(), value).is_none(),
            "{key} twice in {tree:?}"
        );
    }
    out
}

/// A repeated field is an array in tshark's JSON (`--no-duplicate-keys`), a single one not.
fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

/// What one comparison covered.
#[derive(Default, Debug)]
struct Counts {
    packets: usize,
    fields: usize,
    malformed: usize,
    summaries: usize,
    nul_strings: usize,
}

/// Our record, reduced to what the dissector shows: the packet's fields (no capture
/// metadata), nulls and empty lists dropped (no field in Wireshark), the amplitude as the
/// f32 it is, strings cut at a NUL, and the expected expert text beside each error.
fn normalize(v: &Value, counts: &mut Counts) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Array(a) if a.is_empty() => None,
        Value::Array(a) => Some(Value::Array(
            a.iter().filter_map(|x| normalize(x, counts)).collect(),
        )),
        Value::String(s) => Some(Value::from(match s.find('\0') {
            Some(i) => {
                counts.nul_strings += 1;
                &s[..i]
            }
            None => s.as_str(),
        })),
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, x) in o {
                let x = if k == "amplitude" {
                    Some(f32_value(x.as_f64().expect("amplitude is a number")))
                } else {
                    normalize(x, counts)
                };
                if let Some(x) = x {
                    out.insert(k.clone(), x);
                }
            }
            if let Some(msg) = out.get("error").map(|e| e["message"].clone()) {
                out.get_mut("error")
                    .and_then(Value::as_object_mut)
                    .expect("error is an object")
                    .insert("_expert".into(), msg);
            }
            Some(Value::Object(out))
        }
        other => Some(other.clone()),
    }
}

/// Scalar values in a JSON value: the fields one record comparison checked.
fn leaves(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.iter().map(leaves).sum(),
        Value::Object(o) => o.values().map(leaves).sum(),
        _ => 1,
    }
}

const HEAD: [&str; 11] = [
    "packet",
    "ts",
    "time",
    "rel",
    "src",
    "src_port",
    "dst",
    "dst_port",
    "transport",
    "direction",
    "malformed",
];

fn tshark_available() {
    match Command::new("tshark").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "tshark --version failed ({}): run `make deps` to install tshark",
            o.status
        ),
        Err(e) => panic!("tshark is not installed ({e}): run `make deps`, which installs it"),
    }
}

/// tshark's JSON for a capture, one element per frame. `extra`: more options (Decode As,
/// preferences); without them only the heuristic dissectors run.
fn tshark(pcap: &Path, extra: &[String], two_pass: bool) -> Vec<Value> {
    let mut cmd = Command::new("tshark");
    // An empty home: a dissector installed in the user's personal plugin folder
    // (`dissonance wireshark --install`) would load beside this one and make tshark refuse
    // a second protocol of the same name.
    let home = std::env::temp_dir().join("dissonance-tshark-empty-home");
    std::fs::create_dir_all(&home).unwrap();
    cmd.env("HOME", &home);
    cmd.arg("-X").arg(format!("lua_script:{SCRIPT}"));
    if two_pass {
        cmd.arg("-2");
    }
    cmd.arg("-r").arg(pcap);
    cmd.args(["-T", "json", "--no-duplicate-keys", "-J", "dissonance"]);
    cmd.args(extra);
    let out = cmd.output().expect("tshark runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark failed: {stderr}");
    // Debian's tshark runs Lua scripts as root too; should a platform refuse, this says so.
    for bad in ["Lua", "lua_script", "Error"] {
        assert!(
            !stderr.contains(bad),
            "tshark complained while loading or running the dissector: {stderr}"
        );
    }
    serde_json::from_slice(&out.stdout).expect("tshark -T json output")
}

/// The Dissonance trees of each frame, converted (frame number -> trees).
fn tshark_trees(frames: &[Value]) -> BTreeMap<u64, Vec<Map<String, Value>>> {
    let mut all = BTreeMap::new();
    for (i, f) in frames.iter().enumerate() {
        let layers = &f["_source"]["layers"];
        let Some(d) = layers.get("dissonance") else {
            continue;
        };
        let trees = as_list(d)
            .iter()
            .map(|t| convert(t.as_object().expect("a dissonance tree")))
            .collect();
        all.insert(i as u64 + 1, trees);
    }
    all
}

fn dump(pcap: &Path, args: &[&str]) -> String {
    let out = Command::new(DUMP)
        .arg("dump")
        .arg(pcap)
        .args(args)
        .output()
        .expect("dissonance dump runs");
    assert!(
        out.status.success(),
        "dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// dump's records per frame number.
fn dump_records(pcap: &Path, extra: &[&str]) -> BTreeMap<u64, Vec<Value>> {
    let mut all: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    let args = [&["--format", "ndjson", "--hex"], extra].concat();
    for line in dump(pcap, &args).lines() {
        let v: Value = serde_json::from_str(line).expect("ndjson line");
        // Transport records (a candidate the scan found cut off at a datagram's end)
        // are dump's own report, not a packet the dissector shows.
        if v.get("event").is_some() {
            continue;
        }
        let n = v["packet"].as_u64().expect("packet number");
        all.entry(n).or_default().push(v);
    }
    all
}

/// dump's text lines (frame number, text after the direction arrow), events left out.
fn dump_lines(pcap: &Path, extra: &[&str]) -> Vec<(u64, String)> {
    let text = dump(
        pcap,
        &[&["--no-events", "--color", "never"], extra].concat(),
    );
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let n: u64 = words.next()?.parse().ok()?;
            // `{n:>6} {rel:>11.6} {src:>21} -> {dst:<21} {arrow} {text}`, or a note
            // (the goodbye) with no arrow.
            let at = line.find(" -> ")? + 4;
            let rest = &line[at..];
            let dst_len = rest.find(' ').unwrap_or(rest.len());
            let after = &rest[dst_len.max(21).min(rest.len())..];
            // dump notes an empty datagram on a Dissonance flow; the dissector gets no
            // bytes to show a line for.
            if after.trim_start().starts_with("empty datagram") {
                return None;
            }
            // Nor does it show a packet cut off at the end of a datagram (dump's note).
            if after.contains(" CUT packet: ") {
                return None;
            }
            let text = if let Some(t) = after.trim_start().strip_prefix("transport goodbye") {
                format!("transport goodbye{t}")
            } else {
                after.get(6..)?.to_string()
            };
            Some((n, text))
        })
        .collect()
}

/// Decode As: the dissector on a UDP or TCP port.
fn decode_as(table: &str, port: u16) -> Vec<String> {
    vec!["-d".into(), format!("{table}.port=={port},dissonance")]
}

/// Compares one capture (tshark with `tshark_args`, dump with `dump_args`); returns the
/// counts, or panics listing every difference.
fn compare(pcap: &Path, tshark_args: &[String], dump_args: &[&str]) -> Counts {
    let frames = tshark(pcap, tshark_args, true);
    let trees = tshark_trees(&frames);
    let records = dump_records(pcap, dump_args);
    let mut counts = Counts::default();
    let mut diffs = Vec::new();

    let frame_numbers: std::collections::BTreeSet<u64> = trees
        .iter()
        .filter(|(_, t)| t.iter().any(|x| !x.contains_key("_bye")))
        .map(|(&n, _)| n)
        .chain(records.keys().copied())
        .collect();
    for n in frame_numbers {
        let ours: Vec<&Map<String, Value>> = trees
            .get(&n)
            .map(|t| t.iter().filter(|x| !x.contains_key("_bye")).collect())
            .unwrap_or_default();
        let theirs = records.get(&n).cloned().unwrap_or_default();
        if ours.len() != theirs.len() {
            diffs.push(format!(
                "frame {n}: tshark shows {} Dissonance packets, dump {}",
                ours.len(),
                theirs.len()
            ));
            continue;
        }
        for (i, (t, d)) in ours.iter().zip(&theirs).enumerate() {
            let mut d = d.as_object().expect("record object").clone();
            assert_eq!(
                d["malformed"].as_bool(),
                Some(d.contains_key("error")),
                "frame {n}: malformed flag"
            );
            for k in HEAD {
                d.remove(k);
            }
            let want = normalize(&Value::Object(d), &mut counts).expect("an object");
            let mut got = (*t).clone();
            got.remove("_summary");
            let got = Value::Object(got);
            if got != want {
                diffs.push(format!(
                    "frame {n} packet {i}:\n  tshark: {got}\n  dump:   {want}"
                ));
            }
            counts.packets += 1;
            counts.fields += leaves(&want);
            if want.get("error").is_some() {
                counts.malformed += 1;
            }
        }
    }

    // The Info text, line by line, against dump's text output (goodbyes included).
    let ours: Vec<(u64, String)> = trees
        .iter()
        .flat_map(|(&n, t)| {
            t.iter().map(move |x| {
                (
                    n,
                    x["_summary"]
                        .as_str()
                        .expect("every tree has its summary")
                        .to_string(),
                )
            })
        })
        .collect();
    // Wireshark's strings end at a NUL: dump's line is compared up to it.
    let theirs: Vec<(u64, String)> = dump_lines(pcap, dump_args)
        .into_iter()
        .map(|(n, t)| match t.find('\0') {
            Some(i) => {
                counts.nul_strings += 1;
                (n, t[..i].to_string())
            }
            None => (n, t),
        })
        .collect();
    if ours.len() != theirs.len() {
        diffs.push(format!(
            "{} summary lines from tshark, {} from dump",
            ours.len(),
            theirs.len()
        ));
    }
    for (a, b) in ours.iter().zip(&theirs) {
        if a != b {
            diffs.push(format!("summary: tshark {a:?}\n         dump   {b:?}"));
        }
    }
    counts.summaries = ours.len().min(theirs.len());

    if !diffs.is_empty() {
        let shown: Vec<&String> = diffs.iter().take(20).collect();
        panic!(
            "{}: {} differences between the dissector and dump:\n{}",
            pcap.display(),
            diffs.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    counts
}

fn report(name: &str, c: &Counts) {
    println!(
        "{name}: {} packets ({} malformed), {} fields, {} summaries compared; {} strings cut at NUL",
        c.packets, c.malformed, c.fields, c.summaries, c.nul_strings
    );
}

fn pcaps_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dissonance-ws-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every capture of the repository, found by the heuristic dissector alone.
#[test]
fn captures_agree_with_dump() {
    tshark_available();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = pcaps_in(&root.join("tests/data/captures"));
    files.extend(pcaps_in(&root.join("tests/data/captures/transports")));
    files.extend(pcaps_in(&root.join("samples")));
    assert!(files.len() >= 2, "{files:?}");
    let mut total = Counts::default();
    for f in &files {
        // dump decodes game stacks exactly; the heuristic dissector scans for the magic,
        // as dump's `scan` does.
        let in_stack = f.parent().is_some_and(|d| d.ends_with("transports"));
        let c = compare(
            f,
            &[],
            if in_stack {
                &["--payload", "scan"]
            } else {
                &[]
            },
        );
        assert!(c.packets > 0, "{}: nothing compared", f.display());
        report(&f.file_name().unwrap().to_string_lossy(), &c);
        total.packets += c.packets;
        total.fields += c.fields;
    }
    println!(
        "captures: {} files, {} packets, {} fields",
        files.len(),
        total.packets,
        total.fields
    );
}

/// The one-pass and two-pass outputs are the same: names come from state as it was at
/// each packet, not as it is at the end of the capture.
#[test]
fn one_pass_and_two_pass_agree() {
    tshark_available();
    let pcap = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/captures/three-friends.pcap");
    let one = tshark_trees(&tshark(&pcap, &[], false));
    let two = tshark_trees(&tshark(&pcap, &[], true));
    assert_eq!(one.len(), two.len());
    assert!(one == two, "the first and second pass differ");
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// The `hex` of each line of a vector file (read as text: a few lines hold lone
/// surrogates that a JSON parser refuses, and their hex is all we need).
fn vector_hexes(name: &str) -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/vectors")
        .join(name);
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let at = l.find("\"hex\":\"")? + 7;
            let end = l[at..].find('"')? + at;
            Some(hex(&l[at..end]))
        })
        .collect()
}

const SERVER: &str = "127.0.0.1:47200";

/// The largest UDP payload over IPv4.
const MAX_UDP: usize = 65_507;

fn write_pcap(path: &Path, datagrams: &[(SocketAddr, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::new(std::io::BufWriter::new(file), TsResolution::Microsecond).unwrap();
    let server: SocketAddr = SERVER.parse().unwrap();
    for (i, (src, payload)) in datagrams.iter().enumerate() {
        let ts = 1_700_000_000_000_000_000 + i as i64 * 1_000_000;
        w.write_udp(ts, *src, server, payload).unwrap();
    }
    w.flush().unwrap();
}

/// Every well-formed and malformed vector, in the 6.1+ byte order as recorded and again
/// re-encoded in the 6.0.x byte order, one datagram each, given to the dissector with
/// Decode As on the server port.
#[test]
fn vectors_agree_with_dump() {
    tshark_available();
    let good = vector_hexes("vectors.jsonl");
    let bad = vector_hexes("malformed.jsonl");
    assert_eq!((good.len(), bad.len()), (78, 146));
    // A few vectors exercise the 65 535-byte string limit: no UDP datagram holds them.
    let fits = |v: &&Vec<u8>| v.len() <= MAX_UDP;
    let too_big = good.iter().chain(&bad).filter(|v| !fits(v)).count();
    let good: Vec<Vec<u8>> = good.iter().filter(fits).cloned().collect();
    let bad: Vec<Vec<u8>> = bad.iter().filter(fits).cloned().collect();
    let client: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let mut datagrams: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    let mut legacy = 0;
    for v in &good {
        datagrams.push((client, v.clone()));
    }
    for v in &good {
        if let Ok(p) = Packet::decode(v) {
            if let Ok(b) = p.message.to_vec(Variant::Legacy60, MAX_UDP) {
                legacy += 1;
                datagrams.push((client, b));
            }
        }
    }
    for v in &bad {
        datagrams.push((client, v.clone()));
    }
    let dir = temp_dir("vectors");
    let pcap = dir.join("vectors.pcap");
    write_pcap(&pcap, &datagrams);
    let c = compare(&pcap, &decode_as("udp", 47200), &[]);
    report(
        &format!(
            "vectors ({} modern + {legacy} re-encoded 6.0.x + {} malformed datagrams; \
             {too_big} vectors over {MAX_UDP} bytes fit no datagram)",
            good.len(),
            bad.len()
        ),
        &c,
    );
    assert!(c.malformed >= 100, "{c:?}");
    std::fs::remove_dir_all(dir).ok();
}

/// Packets inside a game transport's header, several per datagram, and with trailing
/// bytes, found by the heuristic dissector as `--payload auto` finds them.
#[test]
fn wrapped_packets_agree_with_dump() {
    tshark_available();
    let good = vector_hexes("vectors.jsonl");
    let mut datagrams: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    let decodes = |v: &Vec<u8>| {
        v.len() < MAX_UDP / 2 && Packet::decode(v).is_ok_and(|p| p.trailing.is_empty())
    };
    let good: Vec<&Vec<u8>> = good.iter().filter(|v| decodes(v)).collect();
    for (i, v) in good.iter().enumerate() {
        // A 5-byte header, like a reliable-UDP transport's, on its own flow.
        let src: SocketAddr = format!("127.0.0.1:{}", 41000 + i).parse().unwrap();
        let mut d = vec![0x11, 0x00, (i & 0xff) as u8, 0x00, 0x2a];
        d.extend_from_slice(v);
        datagrams.push((src, d));
        // Two packets back to back with a 2-byte length before each.
        let next = good[(i + 1) % good.len()];
        let mut d = Vec::new();
        for p in [v, &next] {
            d.extend_from_slice(&(p.len() as u16).to_be_bytes());
            d.extend_from_slice(p);
        }
        datagrams.push((src, d));
        // Trailing garbage after the packet.
        let mut d = v.to_vec();
        d.extend_from_slice(&[0xde, 0xad]);
        datagrams.push((src, d));
    }
    let dir = temp_dir("wrapped");
    let pcap = dir.join("wrapped.pcap");
    write_pcap(&pcap, &datagrams);
    let c = compare(&pcap, &[], &[]);
    report(&format!("wrapped ({} datagrams)", datagrams.len()), &c);
    assert!(c.packets >= 4 * good.len(), "{c:?}");
    std::fs::remove_dir_all(dir).ok();
}

/// How a TCP capture was cut: messages in it, messages split across two segments (how
/// many of them inside the length prefix), and segments holding two messages.
#[derive(Debug, Default)]
struct TcpPlan {
    messages: usize,
    split: usize,
    split_in_prefix: usize,
    shared: usize,
}

fn framed(framing: TcpFraming, msg: &[u8]) -> Vec<u8> {
    let n = msg.len();
    let mut v = match framing {
        TcpFraming::U16Be => (n as u16).to_be_bytes().to_vec(),
        TcpFraming::U16Le => (n as u16).to_le_bytes().to_vec(),
        TcpFraming::U32Be => (n as u32).to_be_bytes().to_vec(),
        TcpFraming::U32Le => (n as u32).to_le_bytes().to_vec(),
        TcpFraming::None => Vec::new(),
    };
    v.extend_from_slice(msg);
    v
}

/// The Dissonance packets of three-friends.pcap, each datagram now a message on a TCP
/// connection between the same endpoints, framed by `framing` and cut into segments: some
/// messages split across two segments (some inside the length prefix), some sharing a
/// segment with the next one of their direction. `split_first`: each direction starts
/// with a split message, so no segment before the second one starts a whole message.
fn write_tcp_capture(path: &Path, framing: TcpFraming, split_first: bool) -> TcpPlan {
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/captures/three-friends.pcap");
    let mut reader = CaptureReader::open(&source).unwrap();
    let mut decap = Decapsulator::new(DecapConfig::default());
    let mut msgs: Vec<(SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
    let mut keep = |p: dissonance_tools::capture::Payload<'_>| {
        // Dissonance packets only: the UDP transport's goodbye has no meaning on TCP.
        if p.data.starts_with(&[0x8b, 0xc7]) || p.data.starts_with(&[0xc7, 0x8b]) {
            msgs.push((p.src, p.dst, p.data.to_vec()));
        }
    };
    while let Some(f) = reader.next_frame() {
        decap.push(&f.unwrap(), &mut keep);
    }
    decap.finish(&mut keep);

    let file = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::new(std::io::BufWriter::new(file), TsResolution::Microsecond).unwrap();
    let mut ts = 1_700_000_000_000_000_000i64;
    let psh = TcpFlags {
        psh: true,
        ..TcpFlags::NONE
    };
    // Per direction: next sequence number, messages so far, a held (unsent) message.
    let mut dirs: BTreeMap<(SocketAddr, SocketAddr), (u32, usize, Vec<u8>)> = BTreeMap::new();
    let mut plan = TcpPlan {
        messages: msgs.len(),
        ..TcpPlan::default()
    };
    let mut send = |w: &mut PcapWriter<_>, src, dst, seq: &mut u32, data: &[u8]| {
        ts += 1_000_000;
        w.write_tcp(ts, src, dst, *seq, psh, data).unwrap();
        *seq = seq.wrapping_add(data.len() as u32);
    };
    for (k, (src, dst, msg)) in msgs.iter().enumerate() {
        let d =
            dirs.entry((*src, *dst))
                .or_insert((1000 + 7919 * src.port() as u32, 0, Vec::new()));
        let (seq, count, held) = (&mut d.0, &mut d.1, &mut d.2);
        let first = *count == 0;
        *count += 1;
        let mut bytes = std::mem::take(held);
        let had_held = !bytes.is_empty();
        bytes.extend_from_slice(&framed(framing, msg));
        if (first && split_first) || (!first && k % 7 == 4) {
            // Split: the rest follows in the next segment (inside the prefix every
            // other time).
            let in_prefix = k % 14 == 4;
            let mine = framed(framing, msg).len();
            let cut = bytes.len() - mine + if in_prefix { 1 } else { mine / 2 };
            send(&mut w, *src, *dst, seq, &bytes[..cut]);
            send(&mut w, *src, *dst, seq, &bytes[cut..]);
            plan.split += 1;
            plan.split_in_prefix += usize::from(in_prefix);
        } else if !first && !had_held && k % 5 == 2 {
            *held = bytes;
        } else {
            send(&mut w, *src, *dst, seq, &bytes);
        }
        plan.shared += usize::from(had_held);
    }
    for ((src, dst), (seq, _, held)) in dirs.iter_mut() {
        if !held.is_empty() {
            send(&mut w, *src, *dst, seq, held);
        }
    }
    w.flush().unwrap();
    plan
}

/// TCP: Wireshark's reassembly with the dissector's framing preference agrees with dump's
/// `--tcp-framing`, found by the TCP heuristic (default u16be, and u32le set with `-o`), or
/// by Decode As on the server port when no stream starts with a whole message.
#[test]
fn tcp_streams_agree_with_dump() {
    tshark_available();
    let dir = temp_dir("tcp");
    let cases: [(&str, TcpFraming, bool, Vec<String>); 4] = [
        ("u16be", TcpFraming::U16Be, false, vec![]),
        (
            "u32le",
            TcpFraming::U32Le,
            false,
            vec!["-o".into(), "dissonance.tcp_framing:u32le".into()],
        ),
        ("u16be", TcpFraming::U16Be, true, decode_as("tcp", 47200)),
        // No framing: each segment is a payload, so a split packet is two malformed ones
        // (dump says so too).
        (
            "none",
            TcpFraming::None,
            false,
            vec!["-o".into(), "dissonance.tcp_framing:none".into()],
        ),
    ];
    for (name, framing, split_first, args) in cases {
        let pcap = dir.join(format!("tcp-{name}-{split_first}.pcap"));
        let plan = write_tcp_capture(&pcap, framing, split_first);
        assert!(
            plan.split >= 10 && plan.split_in_prefix >= 5 && plan.shared >= 10,
            "{plan:?}"
        );
        let c = compare(&pcap, &args, &["--tcp-framing", name]);
        report(&format!("tcp {name} {args:?} ({plan:?})"), &c);
        if framing == TcpFraming::None {
            // Split packets are malformed halves, shared segments hold two packets.
            assert_eq!((c.packets, c.malformed), (860, 51), "{plan:?}");
        } else {
            // Every message of the stream was found and compared.
            assert_eq!((c.packets, c.malformed), (plan.messages, 0), "{plan:?}");
        }
        let heuristic_only: usize = tshark_trees(&tshark(&pcap, &[], true))
            .values()
            .map(Vec::len)
            .sum();
        // The heuristic with default preferences: it takes u16be streams at their first
        // whole message (when each of the 6 directions starts split, their first message
        // is lost, the reason for Decode As), and leaves u32le streams alone.
        let want = match (framing, split_first) {
            (TcpFraming::U16Be, false) => plan.messages,
            (TcpFraming::U16Be, true) => plan.messages - 6,
            _ => 0,
        };
        assert_eq!(heuristic_only, want, "{name} split_first={split_first}");
    }
    // Names over TCP come from the state at each packet in both passes too.
    let pcap = dir.join("tcp-u16be-false.pcap");
    assert!(tshark_trees(&tshark(&pcap, &[], false)) == tshark_trees(&tshark(&pcap, &[], true)));
    std::fs::remove_dir_all(dir).ok();
}

/// A length prefix over dump's 1 MiB frame limit breaks that direction's framing in both
/// tools: the dissector says so in an expert info on that frame, and neither shows a
/// packet after it (dump counts the framing error).
#[test]
fn tcp_oversized_prefix_breaks_the_stream() {
    tshark_available();
    let good = vector_hexes("vectors.jsonl")
        .into_iter()
        .find(|v| Packet::decode(v).is_ok_and(|p| p.trailing.is_empty()))
        .unwrap();
    let (client, server): (SocketAddr, SocketAddr) =
        ("127.0.0.1:40001".parse().unwrap(), SERVER.parse().unwrap());
    let mut bad = (2u32 << 20).to_le_bytes().to_vec();
    bad.extend_from_slice(&good);
    let mut segments = vec![framed(TcpFraming::U32Le, &good), bad];
    segments.push(framed(TcpFraming::U32Le, &good));
    let dir = temp_dir("tcp-broken");
    let pcap = dir.join("broken.pcap");
    let file = std::fs::File::create(&pcap).unwrap();
    let mut w = PcapWriter::new(std::io::BufWriter::new(file), TsResolution::Microsecond).unwrap();
    let mut seq = 1u32;
    for (i, s) in segments.iter().enumerate() {
        let ts = 1_700_000_000_000_000_000 + i as i64 * 1_000_000;
        w.write_tcp(ts, client, server, seq, TcpFlags::NONE, s)
            .unwrap();
        seq += s.len() as u32;
    }
    w.flush().unwrap();
    drop(w);

    let args = ["--tcp-framing", "u32le"];
    let records = dump_records(&pcap, &args);
    assert_eq!(records.keys().copied().collect::<Vec<_>>(), vec![1]);
    let summary = dump(
        &pcap,
        &[&args[..], &["--summary", "--format", "text"]].concat(),
    );
    assert!(summary.contains("1 TCP framing errors"), "{summary}");

    let frames = tshark(
        &pcap,
        &[
            "-o".into(),
            "dissonance.tcp_framing:u32le".into(),
            "-d".into(),
            "tcp.port==47200,dissonance".into(),
        ],
        true,
    );
    let layers: Vec<&Value> = frames.iter().map(|f| &f["_source"]["layers"]).collect();
    assert!(layers[0].get("dissonance").is_some());
    assert_eq!(
        layers[1]["dissonance"]["_ws.expert"]["_ws.expert.message"],
        "length prefix announces a 2097152-byte frame, more than the maximum of 1048576"
    );
    assert!(layers[2].get("dissonance").is_none(), "{}", layers[2]);
    std::fs::remove_dir_all(dir).ok();
}

/// `wireshark --print` writes the repository's dissector; `--install` puts it where
/// tshark finds it on its own (no `-X lua_script:`), and says where.
#[test]
fn install_and_print() {
    tshark_available();
    let print = Command::new(DUMP)
        .args(["wireshark", "--print"])
        .output()
        .unwrap();
    assert!(print.status.success());
    assert_eq!(print.stdout, std::fs::read(SCRIPT).unwrap());

    let home = temp_dir("home");
    let out = Command::new(DUMP)
        .args(["wireshark", "--install"])
        .env("HOME", &home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let path = home.join(".local/lib/wireshark/plugins/dissonance.lua");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with(&format!(
            "installed the Dissonance dissector to {}\n",
            path.display()
        )),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(SCRIPT).unwrap()
    );

    let pcap = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/captures/three-friends.pcap");
    let out = Command::new("tshark")
        .env("HOME", &home)
        .arg("-r")
        .arg(&pcap)
        .args(["-Y", "dissonance.type == \"TextData\"", "-T", "fields"])
        .args([
            "-e",
            "dissonance.text.sender_name",
            "-e",
            "dissonance.text.text",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "carol\tHi all, carol here - sorry I am late!\n".repeat(3)
    );
    std::fs::remove_dir_all(home).ok();
}

/// `check -w`: the capture comes back as pcapng, frame for frame (same timestamps, link
/// types and bytes), with every finding as a comment on the frame it names; tshark reads it
/// without a warning and shows the comments as `frame.comment`.
#[test]
fn check_writes_findings_as_packet_comments() {
    tshark_available();
    let client: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let datagrams: Vec<(SocketAddr, Vec<u8>)> = vector_hexes("vectors.jsonl")
        .into_iter()
        .chain(vector_hexes("malformed.jsonl"))
        .filter(|v| v.len() <= MAX_UDP)
        .map(|v| (client, v))
        .collect();
    let dir = temp_dir("check");
    let pcap = dir.join("in.pcap");
    let annotated = dir.join("annotated.pcapng");
    write_pcap(&pcap, &datagrams);
    let out = Command::new(DUMP)
        .arg("check")
        .arg(&pcap)
        .args(["--format", "json", "--fail-on", "never", "-w"])
        .arg(&annotated)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut want: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for f in report["findings"].as_array().unwrap() {
        let (rule, severity, name) = (&f["rule"], &f["severity"], &f["name"]);
        let client = match (f["client"].as_str(), f["client_id"].as_u64()) {
            (Some(n), Some(id)) => format!("{n}({id})"),
            (Some(n), None) => n.to_string(),
            (None, Some(id)) => format!("id {id}"),
            (None, None) => "-".into(),
        };
        let mut c = format!(
            "dissonance check {} {} ({}): {client}: {}",
            rule.as_str().unwrap(),
            severity.as_str().unwrap(),
            name.as_str().unwrap(),
            f["message"].as_str().unwrap()
        );
        let repeats = f["repeats"].as_u64().unwrap();
        if repeats > 0 {
            c.push_str(&format!(" (and {repeats} more like it)"));
        }
        want.entry(f["number"].as_u64().unwrap())
            .or_default()
            .push(c);
    }
    assert!(want.len() >= 10, "only {} frames with findings", want.len());

    // Frame for frame the same as the input.
    let frames = |p: &Path| {
        let mut r = dissonance_tools::capture::CaptureReader::open(p).unwrap();
        let mut v = Vec::new();
        while let Some(f) = r.next_frame() {
            let f = f.unwrap();
            v.push((f.number, f.ts_ns, f.linktype, f.data.to_vec(), f.orig_len));
        }
        v
    };
    assert_eq!(frames(&pcap), frames(&annotated));

    let out = Command::new("tshark")
        .arg("-r")
        .arg(&annotated)
        .args(["-T", "json", "-e", "frame.number", "-e", "frame.comment"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("Running as user \"root\""))
        .collect();
    assert!(out.status.success() && warnings.is_empty(), "{stderr}");
    let frames: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(frames.len(), datagrams.len());
    let mut got: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for f in &frames {
        let layers = &f["_source"]["layers"];
        let n: u64 = layers["frame.number"][0].as_str().unwrap().parse().unwrap();
        if let Some(c) = layers.get("frame.comment") {
            let c = c.as_array().unwrap();
            got.insert(
                n,
                c.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
            );
        }
    }
    // Several findings on one frame: their order in the file is the report's order.
    assert_eq!(got, want);
    println!(
        "check -w: {} comments on {} of {} frames, all where the report puts them",
        want.values().map(Vec::len).sum::<usize>(),
        want.len(),
        frames.len()
    );
    std::fs::remove_dir_all(dir).ok();
}
