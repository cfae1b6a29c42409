//! Every line of the golden vectors (made by running the real Dissonance 9.0.8 code;
//! copies in tests/data/vectors, see tests/data/README.md) against our codec.

use dissonance_tools::codec::*;
use dissonance_tools::collate::sort_dotnet;
use dissonance_tools::output::hex;
use dissonance_tools::output::json::{NoNames, PacketJson};
use serde_json::Value;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/vectors");

fn lines(file: &str) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(format!("{DATA}/{file}")).expect("vector file");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            // serde_json refuses unpaired surrogate escapes; the real writer turns them
            // into U+FFFD when it encodes UTF-8, so that is what we hand our writer.
            let v = serde_json::from_str(&replace_lone_surrogates(l)).expect("json line");
            (l.to_string(), v)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Comparing our JSON with the real reader's `decoded` objects.

/// Checks that every field of `expected` (the real reader's view) is in `actual` (our
/// JSON) with the same value. Our JSON may carry more fields.
fn check(expected: &Value, actual: &Value, path: &str) {
    match expected {
        Value::Object(e) => {
            let a = actual
                .as_object()
                .unwrap_or_else(|| panic!("{path}: expected an object, got {actual}"));
            if let Some(Value::String(err)) = e.get("error") {
                check_thrown(err, e, a, path);
                return;
            }
            let rejected = e.contains_key("rejected");
            for (k, v) in e {
                if rejected && (k == "bytes_read" || k == "trailing_bytes") {
                    // Our error object gives the offset instead; checked in check_rejected.
                    continue;
                }
                if k == "server_relay_verdict" {
                    let v = v.as_str().unwrap();
                    let ours = a[k].as_str().unwrap();
                    if v.starts_with("throws") {
                        assert_eq!(ours, "throws", "{path}.{k}");
                    } else {
                        assert_eq!(ours, v, "{path}.{k}");
                    }
                    continue;
                }
                let av = a
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}: our JSON has no field {k:?}: {actual}"));
                check(v, av, &format!("{path}.{k}"));
            }
            if rejected {
                check_rejected(e, a, path);
            }
        }
        Value::Array(e) => {
            let a = actual
                .as_array()
                .unwrap_or_else(|| panic!("{path}: not an array"));
            assert_eq!(e.len(), a.len(), "{path}: array length");
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                check(ev, av, &format!("{path}[{i}]"));
            }
        }
        Value::Number(n) if n.is_f64() || path.ends_with("amplitude") => {
            // The real code computes amplitudes in f32 and prints 9 significant digits.
            let e = n.as_f64().unwrap() as f32;
            let a = actual.as_f64().unwrap_or(f64::NAN) as f32;
            assert_eq!(e, a, "{path}");
        }
        _ => assert_eq!(expected, actual, "{path}"),
    }
}

/// The real reader threw: we must return the matching error kind, at the same offset,
/// for the same primitive.
fn check_thrown(
    err: &str,
    e: &serde_json::Map<String, Value>,
    a: &serde_json::Map<String, Value>,
    path: &str,
) {
    let ours = a
        .get("error")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("{path}: the real reader throws ({err}) but we decoded {a:?}"));
    let kind = ours["kind"].as_str().unwrap();
    if err.contains("null client Name") {
        // The real reader notices the null name after reading the whole ClientInfo; we
        // report the offset of the name itself.
        assert_eq!(kind, "null_string", "{path}");
        assert_eq!(ours["offset"], 7, "{path}");
        return;
    }
    let prim = err
        .split("Insufficient space in packet reader to read ")
        .nth(1)
        .and_then(|s| s.split('!').next())
        .unwrap_or_else(|| panic!("{path}: unexpected real error {err}"));
    assert_eq!(kind, "truncated", "{path}: {err}");
    assert_eq!(
        ours["primitive"].as_str().unwrap(),
        prim,
        "{path}: primitive"
    );
    assert_eq!(
        ours["offset"], e["bytes_read"],
        "{path}: offset of the failing read"
    );
}

fn check_rejected(
    e: &serde_json::Map<String, Value>,
    a: &serde_json::Map<String, Value>,
    path: &str,
) {
    let ours = a["error"].as_object().unwrap();
    match e["rejected"].as_str().unwrap() {
        "bad_magic" => {
            assert_eq!(ours["kind"], "bad_magic", "{path}");
            assert_eq!(e["bytes_read"], 2, "{path}");
        }
        "unknown_type" => {
            assert_eq!(ours["kind"], "unknown_type", "{path}");
            assert_eq!(e["bytes_read"], 3, "{path}");
        }
        other => panic!("{path}: unknown rejection {other}"),
    }
    let size = a["size"].as_u64().unwrap();
    assert_eq!(
        e["trailing_bytes"].as_u64().unwrap(),
        size - e["bytes_read"].as_u64().unwrap(),
        "{path}"
    );
}

fn our_json(bytes: &[u8]) -> Value {
    let r = Packet::decode(bytes);
    serde_json::to_value(PacketJson {
        bytes,
        result: &r,
        names: &NoNames,
    })
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// Building messages from the vectors' `fields` (what was handed to the real writer).

/// Owned storage for one message; `message()` borrows it.
#[derive(Default)]
struct Built {
    kind: String,
    session: u32,
    strs: Vec<Option<Vec<u8>>>,
    u16s: Vec<u16>,
    channels: Vec<Channel>,
    bytes: Vec<u8>,
    codec: Option<CodecSettings>,
    a: u16,
    b: u16,
    c: u8,
    options: u8,
    clients: Vec<(Option<Vec<u8>>, u16, CodecSettings)>,
    rooms: Vec<(Option<Vec<u8>>, Vec<u16>)>,
}

fn s(v: &Value) -> Option<Vec<u8>> {
    v.as_str().map(|s| s.as_bytes().to_vec())
}
fn codec(v: &Value) -> CodecSettings {
    CodecSettings {
        codec_byte: v["codec"].as_u64().unwrap() as u8,
        frame_size: v["frame_size"].as_u64().unwrap() as u32,
        sample_rate: v["sample_rate"].as_i64().unwrap() as u32,
    }
}
fn priority(name: &str) -> Priority {
    match name {
        "Low" => Priority::Low,
        "Medium" => Priority::Medium,
        "High" => Priority::High,
        _ => Priority::Default,
    }
}

fn build(f: &Value) -> Built {
    let mut b = Built {
        kind: f["type"].as_str().unwrap().to_string(),
        session: f["session"].as_u64().unwrap_or(0) as u32,
        ..Built::default()
    };
    match b.kind.as_str() {
        "HandshakeRequest" => {
            b.codec = Some(codec(&f["codec"]));
            b.strs.push(s(&f["name"]));
        }
        "HandshakeResponse" => {
            b.a = f["client_id"].as_u64().unwrap() as u16;
            for c in f["clients"].as_array().into_iter().flatten() {
                b.clients.push((
                    s(&c["name"]),
                    c["id"].as_u64().unwrap() as u16,
                    codec(&c["codec"]),
                ));
            }
            for r in f["rooms"].as_array().into_iter().flatten() {
                let peers = r["peers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_u64().unwrap() as u16);
                b.rooms.push((s(&r["name"]), peers.collect()));
            }
        }
        "ClientState" => {
            b.strs.push(s(&f["name"]));
            b.a = f["client_id"].as_u64().unwrap() as u16;
            b.codec = Some(codec(&f["codec"]));
            let mut rooms: Vec<Option<Vec<u8>>> =
                f["rooms"].as_array().unwrap().iter().map(s).collect();
            if f["rooms_via_rooms_object"].as_bool() == Some(true) {
                // Real clients keep their rooms sorted with .NET's culture-sensitive order.
                let mut names: Vec<String> = rooms
                    .iter()
                    .map(|r| String::from_utf8(r.clone().unwrap()).unwrap())
                    .collect();
                sort_dotnet(&mut names);
                rooms = names.into_iter().map(|n| Some(n.into_bytes())).collect();
            }
            b.strs.extend(rooms);
        }
        "VoiceData" => {
            b.a = f["sender"].as_u64().unwrap() as u16;
            b.b = f["seq"].as_u64().unwrap() as u16;
            b.options = PacketOptions::extended(f["channel_session"].as_u64().unwrap() as u32).0;
            let default = priority(f["default_priority"].as_str().unwrap_or("Default"));
            for c in f["channels"].as_array().unwrap() {
                let recipient = c["recipient"].as_u64().unwrap() as u16;
                let bitfield = match c.get("bitfield") {
                    Some(raw) => ChannelBitfield(raw.as_u64().unwrap() as u16),
                    None => ChannelBitfield::new(
                        if c["type"] == "Room" {
                            ChannelType::Room
                        } else {
                            ChannelType::Player
                        },
                        c["positional"].as_bool().unwrap_or(false),
                        c["closing"].as_bool().unwrap_or(false),
                        match c["priority"].as_str() {
                            // The API's "None" is sent as the sender's default priority.
                            None | Some("None") => default,
                            Some(p) => priority(p),
                        },
                        c["session_id"].as_u64().unwrap_or(0) as u8,
                        c["amplitude"].as_f64().unwrap_or(1.0) as f32,
                    ),
                };
                b.channels.push(Channel {
                    bitfield,
                    recipient,
                });
            }
            b.bytes = hex::parse(f["audio_hex"].as_str().unwrap()).unwrap();
        }
        "TextData" => {
            b.c = match &f["recipient_type"] {
                Value::String(t) if t == "Room" => 0,
                Value::String(_) => 1,
                n => n.as_u64().unwrap() as u8,
            };
            b.a = f["sender"].as_u64().unwrap() as u16;
            b.b = f["target"].as_u64().unwrap() as u16;
            b.strs.push(s(&f["text"]));
        }
        "ServerRelayReliable" | "ServerRelayUnreliable" => {
            b.u16s = f["destinations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as u16)
                .collect();
            b.bytes = hex::parse(f["payload_hex"].as_str().unwrap()).unwrap();
        }
        "DeltaChannelState" => {
            b.c = f["joined"].as_bool().unwrap() as u8;
            b.a = f["peer"].as_u64().unwrap() as u16;
            b.strs.push(s(&f["name"]));
        }
        "RemoveClient" => b.a = f["client_id"].as_u64().unwrap() as u16,
        "HandshakeP2P" => b.a = f["peer_id"].as_u64().unwrap() as u16,
        "ErrorWrongSession" => {}
        other => panic!("unknown type {other}"),
    }
    b
}

fn ws(v: &Option<Vec<u8>>) -> WireStr<'_> {
    WireStr(v.as_deref())
}

/// Borrowed views the message needs, made from a [`Built`].
struct Views<'b> {
    strs: Vec<WireStr<'b>>,
    clients: Vec<ClientInfo<'b>>,
    names: Vec<WireStr<'b>>,
    entries: Vec<RoomEntry<'b>>,
}

impl Built {
    fn views(&self) -> Views<'_> {
        Views {
            strs: self.strs.iter().map(ws).collect(),
            clients: self
                .clients
                .iter()
                .map(|(n, id, codec)| ClientInfo {
                    name: ws(n),
                    id: *id,
                    codec: *codec,
                })
                .collect(),
            names: self.rooms.iter().map(|(n, _)| ws(n)).collect(),
            entries: self
                .rooms
                .iter()
                .map(|(n, peers)| RoomEntry {
                    room_id: ws(n).room_id(),
                    peers: Seq::Items(peers),
                })
                .collect(),
        }
    }

    fn message<'b>(&'b self, v: &'b Views<'b>) -> Message<'b> {
        let session = self.session;
        match self.kind.as_str() {
            "HandshakeRequest" => Message::HandshakeRequest(HandshakeRequest {
                codec: self.codec.unwrap(),
                name: v.strs[0],
            }),
            "HandshakeResponse" => Message::HandshakeResponse(HandshakeResponse {
                session,
                client_id: self.a,
                clients: Seq::Items(&v.clients),
                room_names: Seq::Items(&v.names),
                room_entries: Seq::Items(&v.entries),
            }),
            "ClientState" => Message::ClientState(ClientState {
                session,
                name: v.strs[0],
                client_id: self.a,
                codec: self.codec.unwrap(),
                rooms: Seq::Items(&v.strs[1..]),
                rooms_encoding: RoomsEncoding::List,
            }),
            "VoiceData" => Message::VoiceData(VoiceData {
                session,
                sender: self.a,
                options: PacketOptions(self.options),
                seq: self.b,
                channels: Seq::Items(&self.channels),
                audio: &self.bytes,
            }),
            "TextData" => Message::TextData(TextData {
                session,
                recipient_type_byte: self.c,
                sender: self.a,
                target: self.b,
                text: v.strs[0],
            }),
            "ServerRelayReliable" => Message::ServerRelayReliable(ServerRelay {
                session,
                destinations: Seq::Items(&self.u16s),
                payload: &self.bytes,
            }),
            "ServerRelayUnreliable" => Message::ServerRelayUnreliable(ServerRelay {
                session,
                destinations: Seq::Items(&self.u16s),
                payload: &self.bytes,
            }),
            "DeltaChannelState" => Message::DeltaChannelState(DeltaChannelState {
                session,
                joined_raw: self.c,
                peer: self.a,
                name: v.strs[0],
            }),
            "RemoveClient" => Message::RemoveClient(RemoveClient {
                session,
                client_id: self.a,
            }),
            "HandshakeP2P" => Message::HandshakeP2P(HandshakeP2P {
                session,
                peer_id: self.a,
            }),
            "ErrorWrongSession" => Message::ErrorWrongSession(ErrorWrongSession { session }),
            other => panic!("unknown type {other}"),
        }
    }
}

fn buffer_size(f: &Value) -> usize {
    f["buffer_size"]
        .as_u64()
        .map(|b| b as usize)
        .unwrap_or(DEFAULT_BUFFER_SIZE)
}

// ---------------------------------------------------------------------------------------

#[test]
fn vectors_decode_every_field() {
    let all = lines("vectors.jsonl");
    assert_eq!(all.len(), 78);
    for (_, v) in &all {
        let name = v["name"].as_str().unwrap();
        let bytes = hex::parse(v["hex"].as_str().unwrap()).unwrap();
        check(&v["decoded"], &our_json(&bytes), name);
        if let Some(extra) = v["extra_packets_hex"].as_array() {
            for (i, (h, d)) in extra
                .iter()
                .zip(v["extra_packets_decoded"].as_array().unwrap())
                .enumerate()
            {
                let bytes = hex::parse(h.as_str().unwrap()).unwrap();
                check(d, &our_json(&bytes), &format!("{name} extra {i}"));
            }
        }
    }
}

#[test]
fn vectors_encode_to_the_same_bytes() {
    for (_, v) in lines("vectors.jsonl") {
        let name = v["name"].as_str().unwrap();
        let built = build(&v["fields"]);
        let views = built.views();
        let msg = built.message(&views);
        let packets = msg
            .encode_split(Variant::Modern, buffer_size(&v["fields"]))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut expected = vec![v["hex"].as_str().unwrap().to_string()];
        for h in v["extra_packets_hex"].as_array().into_iter().flatten() {
            expected.push(h.as_str().unwrap().to_string());
        }
        let ours: Vec<String> = packets.iter().map(|p| hex::Hex(p).to_string()).collect();
        assert_eq!(ours, expected, "{name}");
    }
}

#[test]
fn vectors_decoded_packets_reencode_identically() {
    for (_, v) in lines("vectors.jsonl") {
        let name = v["name"].as_str().unwrap();
        let bytes = hex::parse(v["hex"].as_str().unwrap()).unwrap();
        let p = Packet::decode(&bytes).unwrap();
        let again = p.message.to_vec(p.variant, 1 << 17).unwrap();
        assert_eq!(again.len() + p.trailing.len(), bytes.len(), "{name}");
        assert_eq!(&bytes[..again.len()], &again[..], "{name}");
    }
}

#[test]
fn malformed_inputs_match_the_real_reader() {
    let all = lines("malformed.jsonl");
    assert_eq!(all.len(), 146);
    let mut errors = 0;
    for (_, v) in &all {
        let name = v["name"].as_str().unwrap();
        let bytes = hex::parse(v["hex"].as_str().unwrap()).unwrap();
        let result = &v["result"];
        let ours = our_json(&bytes);
        check(result, &ours, name);
        if result.get("error").is_some() || result.get("rejected").is_some() {
            assert!(Packet::decode(&bytes).is_err(), "{name}");
            errors += 1;
        } else {
            assert!(Packet::decode(&bytes).is_ok(), "{name}");
        }
    }
    assert!(errors > 100);
}

#[test]
fn writer_refuses_what_the_real_writer_refuses() {
    let all = lines("writer_errors.jsonl");
    assert_eq!(all.len(), 9);
    for (_, v) in all {
        let name = v["name"].as_str().unwrap();
        let built = build(&v["fields"]);
        let views = built.views();
        let msg = built.message(&views);
        let err = msg
            .encode_split(Variant::Modern, buffer_size(&v["fields"]))
            .expect_err(name);
        let real = v["error"].as_str().unwrap();
        let ok = match &err {
            EncodeError::NullString { .. } => real.starts_with("ArgumentNullException"),
            EncodeError::StringTooManyChars { .. } => real.contains("more than 65535 characters"),
            EncodeError::StringTooManyBytes { .. } => real.contains("65535 UTF8 bytes"),
            EncodeError::InvalidBitfield { .. } => real.contains("bitfield"),
            EncodeError::BufferFull { primitive, .. } => {
                let want = match primitive {
                    Primitive::Blob => "ArraySegment<byte>",
                    p => p.dotnet_name(),
                };
                real.contains(&format!("write {want}!"))
            }
            EncodeError::TooMany { .. } => false,
        };
        assert!(ok, "{name}: we said {err:?}, the real writer said {real}");
    }
}

#[test]
fn room_ids_match_to_room_id() {
    let text = std::fs::read_to_string(format!("{DATA}/roomids.jsonl")).unwrap();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        // Names are taken as UTF-16 code units straight from the JSON text, so the lone
        // surrogates the real .NET strings held are hashed as themselves.
        let units = json_string_utf16(line, "name");
        let v: Value = serde_json::from_str(&replace_lone_surrogates(line)).unwrap();
        assert_eq!(
            units.len() as u64,
            v["utf16_len"].as_u64().unwrap(),
            "{line}"
        );
        assert_eq!(
            room_id_utf16(&units) as u64,
            v["room_id"].as_u64().unwrap(),
            "{line}"
        );
        assert_eq!(
            fnv1a_utf16be(&units) as i32 as i64,
            v["fnv1a_utf16be_i32"].as_i64().unwrap(),
            "{line}"
        );
        if let Ok(s) = String::from_utf16(&units) {
            assert_eq!(room_id(&s), room_id_utf16(&units), "{line}");
        }
        n += 1;
    }
    assert_eq!(n, 67);
}

#[test]
fn legacy_6_0_examples_from_protocol_md() {
    // docs/protocol.md §11.18: the same VoiceData and HandshakeRequest from a 6.0.x peer
    // (u16 little-endian, u32 big-endian, magic C7 8B).
    let voice =
        hex::parse("C7 8B 02 12 34 AB CD 00 00 00 05 00 01 00 01 80 18 75 03 00 48 0B E4").unwrap();
    let p = Packet::decode(&voice).unwrap();
    assert_eq!(p.variant, Variant::Legacy60);
    let Message::VoiceData(v) = &p.message else {
        panic!()
    };
    assert_eq!(
        (v.session, v.sender, v.seq, v.options.0),
        (0x1234ABCD, 0, 5, 0)
    );
    let ch: Vec<Channel> = v.channels.iter().collect();
    assert_eq!(
        ch,
        [Channel {
            bitfield: ChannelBitfield(0x8001),
            recipient: 0x7518
        }]
    );
    assert_eq!(v.audio, [0x48, 0x0B, 0xE4]);
    assert_eq!(p.to_vec().unwrap(), voice);

    let modern =
        hex::parse("8B C7 02 12 34 AB CD 00 00 80 00 05 00 01 80 01 75 18 00 03 48 0B E4").unwrap();
    let m = Packet::decode(&modern).unwrap();
    let Message::VoiceData(mv) = &m.message else {
        panic!()
    };
    assert_eq!(mv.channels, v.channels);

    let hs = hex::parse("C7 8B 04 01 00 00 07 80 00 00 BB 80 06 00 41 6C 69 63 65").unwrap();
    let p = Packet::decode(&hs).unwrap();
    let Message::HandshakeRequest(h) = &p.message else {
        panic!()
    };
    assert_eq!(h.name, WireStr::new("Alice"));
    assert_eq!(h.codec, CodecSettings::new(Codec::Opus, 1920, 48000));
    assert_eq!(p.to_vec().unwrap(), hs);
    assert_eq!(
        p.message.to_vec(Variant::Modern, 1024).unwrap(),
        hex::parse("8B C7 04 01 00 00 07 80 00 00 BB 80 00 06 41 6C 69 63 65").unwrap()
    );
}

#[test]
fn decode_errors_name_message_field_and_offset() {
    // One byte short of channel 1's recipient.
    let b = hex::parse("8bc7 02 12345678 0001 80 0001 0002 8001 006d 0000 00").unwrap();
    let e = Packet::decode(&b).unwrap_err();
    assert_eq!(
        e.to_string(),
        "VoiceData: truncated at byte 20 reading channel 1 recipient: need 2 bytes, 1 left"
    );
    assert_eq!(e.offset, 20);
    let e = Packet::decode(&[0x8b, 0xc8, 4]).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::BadMagic { found: 0x8bc8 });
    let e = Packet::decode(&[0x8b, 0xc7, 12]).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::UnknownType { type_byte: 12 });
}

// ---------------------------------------------------------------------------------------
// JSON helpers for strings holding unpaired UTF-16 surrogates.

/// Replaces `\uD800`-style escapes that are not part of a surrogate pair with `\uFFFD`.
fn replace_lone_surrogates(line: &str) -> String {
    let units = utf16_escapes(line);
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < units.len() {
        match units[i] {
            Tok::Char(c) => out.push(c),
            Tok::Esc(raw) => out.push_str(raw),
            Tok::U(hi) if (0xD800..0xDC00).contains(&hi) => {
                if let Some(Tok::U(lo)) = units.get(i + 1) {
                    if (0xDC00..0xE000).contains(lo) {
                        out.push_str(&format!("\\u{hi:04x}\\u{lo:04x}"));
                        i += 2;
                        continue;
                    }
                }
                out.push_str("\\ufffd");
            }
            Tok::U(u) if (0xDC00..0xE000).contains(&u) => out.push_str("\\ufffd"),
            Tok::U(u) => out.push_str(&format!("\\u{u:04x}")),
        }
        i += 1;
    }
    out
}

enum Tok<'a> {
    Char(char),
    Esc(&'a str),
    U(u16),
}

fn utf16_escapes(line: &str) -> Vec<Tok<'_>> {
    let mut toks = Vec::new();
    let mut it = line.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c != '\\' {
            toks.push(Tok::Char(c));
            continue;
        }
        match it.next() {
            Some((_, 'u')) => {
                let h = &line[i + 2..i + 6];
                toks.push(Tok::U(u16::from_str_radix(h, 16).unwrap()));
                for _ in 0..4 {
                    it.next();
                }
            }
            Some((j, e)) => toks.push(Tok::Esc(&line[i..j + e.len_utf8()])),
            None => {}
        }
    }
    toks
}

/// The UTF-16 code units of the JSON string value of `key` (first occurrence).
fn json_string_utf16(line: &str, key: &str) -> Vec<u16> {
    let pat = format!("\"{key}\":");
    let start = line.find(&pat).unwrap() + pat.len();
    let rest = line[start..].trim_start();
    assert!(rest.starts_with('"'));
    let mut units = Vec::new();
    let mut chars = rest[1..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next().unwrap() {
                'u' => {
                    let h: String = chars.by_ref().take(4).collect();
                    units.push(u16::from_str_radix(&h, 16).unwrap());
                }
                'n' => units.push(b'\n' as u16),
                't' => units.push(b'\t' as u16),
                'r' => units.push(b'\r' as u16),
                'b' => units.push(8),
                'f' => units.push(12),
                other => units.push(other as u16),
            },
            c => {
                let mut buf = [0u16; 2];
                units.extend_from_slice(c.encode_utf16(&mut buf));
            }
        }
    }
    units
}
