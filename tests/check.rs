//! `check`: one crafted capture per rule, built with the project's own encoder and
//! written with `PcapWriter`. Each starts from a clean two-client session (which has no
//! findings: the "does not trigger" capture of every rule) and appends the bad traffic;
//! the exact findings (rule, packet number, client) are asserted.

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;

use dissonance_tools::capture::{CaptureReader, DecapConfig, PcapWriter, TsResolution};
use dissonance_tools::check::{check_capture, Config, Report};
use dissonance_tools::codec::*;

const S: u32 = 0x1F2E_3D4C;
const TOC_20MS: u8 = 0x48;
const TOC_40MS: u8 = 0x50;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
fn server() -> SocketAddr {
    addr(47200)
}
fn alice() -> SocketAddr {
    addr(47201)
}
fn bob() -> SocketAddr {
    addr(47202)
}
fn carol() -> SocketAddr {
    addr(47203)
}

const OPUS: CodecSettings = CodecSettings::OPUS_48K_20MS;

/// A capture being written: every packet gets the next frame number.
struct Cap {
    w: PcapWriter<Vec<u8>>,
    ts: i64,
    n: u64,
    /// Next voice sequence number per speaker id.
    seq: HashMap<u16, u16>,
}

impl Cap {
    fn new() -> Cap {
        Cap {
            w: PcapWriter::new(Vec::new(), TsResolution::Microsecond).unwrap(),
            ts: 1_795_514_472_000_000_000,
            n: 0,
            seq: HashMap::new(),
        }
    }
    fn raw(&mut self, src: SocketAddr, dst: SocketAddr, bytes: &[u8]) -> u64 {
        self.ts += 1_000_000;
        self.w.write_udp(self.ts, src, dst, bytes).unwrap();
        self.n += 1;
        self.n
    }
    fn send(&mut self, src: SocketAddr, dst: SocketAddr, m: Message<'_>) -> u64 {
        let bytes = m.to_vec(Variant::Modern, 1 << 16).unwrap();
        self.raw(src, dst, &bytes)
    }
    fn wait(&mut self, ns: i64) {
        self.ts += ns;
    }

    /// Handshake, the server's fake state, the client's own state and its echoes.
    fn join(
        &mut self,
        a: SocketAddr,
        name: &str,
        id: u16,
        rooms: &[WireStr<'_>],
        others: &[SocketAddr],
    ) {
        let name = WireStr::new(name);
        self.send(
            a,
            server(),
            Message::HandshakeRequest(HandshakeRequest { codec: OPUS, name }),
        );
        self.send(
            server(),
            a,
            Message::HandshakeResponse(HandshakeResponse::modern(S, id)),
        );
        let state = |rooms| ClientState {
            session: S,
            name,
            client_id: id,
            codec: OPUS,
            rooms,
            rooms_encoding: RoomsEncoding::List,
        };
        self.send(server(), a, Message::ClientState(state(Seq::Items(&[]))));
        let cs = Message::ClientState(state(Seq::Items(rooms)));
        self.send(a, server(), cs.clone());
        for &o in others.iter().chain([a].iter()) {
            self.send(server(), o, cs.clone());
        }
    }

    fn voice_bytes(&mut self, sender: u16, seq: u16, toc: u8, len: usize) -> Vec<u8> {
        let mut audio = vec![0x11u8; len];
        audio[0] = toc;
        let ch = [Channel {
            bitfield: ChannelBitfield::new(
                ChannelType::Room,
                false,
                false,
                Priority::Default,
                0,
                1.0,
            ),
            recipient: room_id("Global"),
        }];
        Message::VoiceData(VoiceData {
            session: S,
            sender,
            options: PacketOptions::extended(0),
            seq,
            channels: Seq::Items(&ch),
            audio: &audio,
        })
        .to_vec(Variant::Modern, 1 << 16)
        .unwrap()
    }

    /// The speaker's next frame (or frame `seq`), relayed to `dests`, 20 ms after the last.
    fn relay_voice(
        &mut self,
        from: SocketAddr,
        sender: u16,
        seq: Option<u16>,
        dests: &[u16],
        toc: u8,
    ) -> u64 {
        let next = self.seq.entry(sender).or_default();
        let seq = seq.unwrap_or(*next);
        *next = seq.wrapping_add(1);
        let inner = self.voice_bytes(sender, seq, toc, 40);
        self.wait(19_000_000);
        self.send(from, server(), relay(false, dests, &inner))
    }

    fn report(self) -> Report {
        report_of(self.w.into_inner(), Config::default())
    }
}

fn relay<'a>(reliable: bool, dests: &'a [u16], payload: &'a [u8]) -> Message<'a> {
    let r = ServerRelay {
        session: S,
        destinations: Seq::Items(dests),
        payload,
    };
    if reliable {
        Message::ServerRelayReliable(r)
    } else {
        Message::ServerRelayUnreliable(r)
    }
}

fn text(sender: u16, kind: u8, target: u16) -> Vec<u8> {
    Message::TextData(TextData {
        session: S,
        recipient_type_byte: kind,
        sender,
        target,
        text: WireStr::new("hello"),
    })
    .to_vec(Variant::Modern, 1024)
    .unwrap()
}

fn report_of(pcap: Vec<u8>, config: Config) -> Report {
    let mut reader = CaptureReader::new(Cursor::new(pcap)).unwrap();
    let (report, damaged) = check_capture(&mut reader, DecapConfig::default(), config);
    assert!(damaged.is_none());
    report
}

/// A clean session: alice and bob join Global, alice speaks to Global (relayed, then
/// forwarded to bob), bob texts alice, bob also joins Red Team.
fn baseline() -> Cap {
    let mut c = Cap::new();
    let global = [WireStr::new("Global")];
    c.join(alice(), "alice", 0, &global, &[]);
    c.join(bob(), "bob", 1, &global, &[alice()]);
    for _ in 0..20 {
        c.relay_voice(alice(), 0, None, &[1], TOC_20MS);
        let seq = c.seq[&0] - 1;
        let fwd = c.voice_bytes(0, seq, TOC_20MS, 40);
        c.raw(server(), bob(), &fwd);
    }
    let t = text(1, 1, 0);
    c.send(bob(), server(), relay(true, &[0], &t));
    c.raw(server(), alice(), &t);
    let delta = Message::DeltaChannelState(DeltaChannelState::new(S, true, 1, "Red Team"));
    c.send(bob(), server(), delta.clone());
    c.send(server(), alice(), delta.clone());
    c.send(server(), bob(), delta);
    c
}

/// (rule id, packet number, client name) of every finding, in report order.
fn found(r: &Report) -> Vec<(&'static str, u64, Option<String>)> {
    r.findings
        .iter()
        .map(|f| (f.rule.id, f.number, f.client.clone()))
        .collect()
}

fn one(
    rule: &'static str,
    n: u64,
    client: Option<&str>,
) -> Vec<(&'static str, u64, Option<String>)> {
    vec![(rule, n, client.map(String::from))]
}

#[test]
fn clean_session_has_no_findings() {
    let r = baseline().report();
    assert_eq!(found(&r), vec![]);
    assert_eq!(r.packets, 5 + 6 + 40 + 2 + 3);
    assert_eq!(r.voice.len(), 1);
    let v = &r.voice[0];
    assert_eq!(
        (
            v.name.as_deref(),
            v.packets,
            v.lost,
            v.duplicates,
            v.reordered
        ),
        (Some("alice"), 20, 0, 0, 0)
    );
    assert_eq!(v.path_dst, server());
    // 19 ms of wait + 1 ms per packet written, twice per frame: 21 ms apart, 20 ms frames.
    assert!(v.jitter_ms > 0.5 && v.jitter_ms < 1.0, "{}", v.jitter_ms);
    assert!((v.talk_s - 0.4).abs() < 1e-9);
    assert!((v.kbps - 16.0).abs() < 1e-9, "{}", v.kbps);
}

#[test]
fn three_friends_has_no_error_findings() {
    let pcap = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/captures/three-friends.pcap"
    ))
    .unwrap();
    let r = report_of(pcap, Config::default());
    assert!(r
        .findings
        .iter()
        .all(|f| f.rule.severity != dissonance_tools::check::Severity::Error));
    assert_eq!(found(&r), vec![]);
    assert_eq!(r.packets, 881);
    let rows: Vec<_> = r
        .voice
        .iter()
        .map(|v| (v.name.clone().unwrap(), v.packets, v.lost))
        .collect();
    assert_eq!(rows, vec![("alice".into(), 215, 0), ("bob".into(), 208, 0)]);
}

// ---- headers ----

#[test]
fn d001_bad_magic() {
    let mut c = baseline();
    let n = c.raw(alice(), server(), &[0x8B, 0xC8, 0x09, 0, 0, 0, 1, 1, 0, 1]);
    // Transport control (leading zero byte) is not flagged.
    c.raw(alice(), server(), &[0x00, 0x01, 0x02]);
    assert_eq!(found(&c.report()), one("D001", n, Some("alice")));
}

#[test]
fn d001_bad_magic_inside_a_relay() {
    let mut c = baseline();
    let n = c.send(
        alice(),
        server(),
        relay(true, &[1], &[0x12, 0x34, 0x03, 0, 0]),
    );
    let r = c.report();
    assert_eq!(found(&r), one("D001", n, Some("alice")));
    assert_eq!(r.findings[0].mark, Some((12, 2)));
}

#[test]
fn d002_unknown_type() {
    let mut c = baseline();
    let n = c.raw(
        alice(),
        server(),
        &[0x8B, 0xC7, 0x0C, 0x1F, 0x2E, 0x3D, 0x4C],
    );
    let r = c.report();
    assert_eq!(found(&r), one("D002", n, Some("alice")));
    assert_eq!(r.findings[0].mark, Some((2, 1)));
}

/// alice's DeltaChannelState joining Red Team, whole (the tests cut it).
fn join_red_team() -> Vec<u8> {
    Message::DeltaChannelState(DeltaChannelState::new(S, true, 0, "Red Team"))
        .to_vec(Variant::Modern, 1024)
        .unwrap()
}

#[test]
fn d003_truncated() {
    let mut c = baseline();
    let d = join_red_team();
    // To a client (here the server's echo to bob): fatal to that client. Sent to the
    // server, the same bytes are D050.
    let n = c.raw(server(), bob(), &d[..d.len() - 3]);
    let r = c.report();
    assert_eq!(found(&r), one("D003", n, Some("bob")));
    let f = &r.findings[0];
    // The name's length prefix (10..12) is read; its bytes are cut off.
    assert_eq!(f.mark, Some((12, d.len() - 3 - 12)));
    assert!(f.message.contains("room name"), "{}", f.message);
}

/// What the real server's reader throws on, sent to the server: a truncated
/// DeltaChannelState, a null player name in a ClientState, an empty datagram, a
/// 2-byte one, a relay whose payload is under 3 bytes. Each is D050, not D003/D033;
/// the same truncated packet with a stale session is dropped unread by the real server,
/// so it stays D003.
#[test]
fn d050_fatal_to_server() {
    let mut c = baseline();
    let d = join_red_team();
    let truncated = c.raw(alice(), server(), &d[..d.len() - 3]);
    let mut null_name = state("x", 0, &[]);
    null_name.splice(7..10, [0u8, 0]);
    let null = c.raw(alice(), server(), &null_name);
    let empty = c.raw(bob(), server(), &[]);
    let short = c.raw(bob(), server(), &[0x8B, 0xC7]);
    let relay_short = c.send(alice(), server(), relay(true, &[1], &[0x8B]));
    let mut stale = d[..d.len() - 3].to_vec();
    stale[3..7].copy_from_slice(&(S + 1).to_be_bytes());
    let stale_n = c.raw(alice(), server(), &stale);
    let r = c.report();
    let got = found(&r);
    assert_eq!(
        got,
        vec![
            ("D003", stale_n, Some("alice".into())),
            ("D050", truncated, Some("alice".into())),
            ("D050", null, Some("alice".into())),
            ("D050", empty, Some("bob".into())),
            ("D050", short, Some("bob".into())),
            ("D050", relay_short, Some("alice".into())),
        ]
    );
    let f = &r.findings[1];
    assert_eq!(f.mark, Some((12, d.len() - 3 - 12)));
    assert!(
        f.message.ends_with(
            "the real server's reader throws on it (runs past its end) and the server restarts"
        ),
        "{}",
        f.message
    );
    assert_eq!(
        r.findings[3].message,
        "empty datagram: the real server's reader throws reading its header and the server restarts"
    );
}

#[test]
fn d004_trailing_bytes() {
    let mut c = baseline();
    let mut d = Message::DeltaChannelState(DeltaChannelState::new(S, false, 0, "Global"))
        .to_vec(Variant::Modern, 1024)
        .unwrap();
    let len = d.len();
    d.extend_from_slice(&[0xEE, 0xFF]);
    let n = c.raw(alice(), server(), &d);
    let r = c.report();
    assert_eq!(found(&r), one("D004", n, Some("alice")));
    assert_eq!(r.findings[0].mark, Some((len, 2)));
}

#[test]
fn d005_oversize() {
    let mut c = baseline();
    let inner = c.voice_bytes(0, 20, TOC_20MS, 1100);
    let n = c.send(alice(), server(), relay(false, &[1], &inner));
    assert_eq!(found(&c.report()), one("D005", n, Some("alice")));
}

// ---- sessions ----

fn stale_delta(c: &mut Cap) -> u64 {
    c.send(
        alice(),
        server(),
        Message::DeltaChannelState(DeltaChannelState::new(S + 1, true, 0, "Red Team")),
    )
}

#[test]
fn d010_wrong_session_answered() {
    let mut c = baseline();
    let n = stale_delta(&mut c);
    c.send(
        server(),
        alice(),
        Message::ErrorWrongSession(ErrorWrongSession { session: S }),
    );
    c.wait(3_000_000_000);
    c.send(
        server(),
        bob(),
        Message::ErrorWrongSession(ErrorWrongSession { session: S }),
    );
    let r = c.report();
    assert_eq!(found(&r), one("D010", n, Some("alice")));
    assert_eq!(r.findings[0].mark, Some((3, 4)));
}

#[test]
fn d011_wrong_session_not_answered() {
    let mut c = baseline();
    let n = stale_delta(&mut c);
    c.wait(1_500_000_000);
    c.send(
        bob(),
        server(),
        Message::DeltaChannelState(DeltaChannelState::new(S, false, 1, "Red Team")),
    );
    let r = c.report();
    assert_eq!(
        found(&r),
        vec![
            ("D010", n, Some("alice".into())),
            ("D011", n, Some("alice".into()))
        ]
    );
}

#[test]
fn d012_stale_session_storm() {
    let mut c = baseline();
    let first = stale_delta(&mut c);
    let mut last = first;
    // Told every time, the client keeps going: the tenth packet after being told is the storm.
    for _ in 0..10 {
        c.send(
            server(),
            alice(),
            Message::ErrorWrongSession(ErrorWrongSession { session: S }),
        );
        last = stale_delta(&mut c);
    }
    let r = c.report();
    assert_eq!(
        found(&r),
        vec![
            ("D012", last, Some("alice".into())),
            ("D010", first, Some("alice".into()))
        ]
    );
    assert_eq!(r.findings[1].repeats, 10);
}

/// The D010 finding of a report's JSON.
fn d010_json(r: &Report) -> serde_json::Value {
    let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "D010")
        .unwrap()
        .clone()
}

/// A folded finding lists every occurrence (frame numbers and times), the first
/// included, in the report and its JSON; `max_occurrences` bounds the list and the JSON
/// says how many it left out.
#[test]
fn folded_finding_lists_every_occurrence() {
    let mut c = baseline();
    let mut stale = Vec::new();
    for _ in 0..5 {
        stale.push((stale_delta(&mut c), c.ts));
        c.send(
            server(),
            alice(),
            Message::ErrorWrongSession(ErrorWrongSession { session: S }),
        );
    }
    let pcap = c.w.into_inner();
    let r = report_of(pcap.clone(), Config::default());
    let d010 = r.findings.iter().find(|f| f.rule.id == "D010").unwrap();
    assert_eq!(d010.repeats, 4);
    let got: Vec<(u64, i64)> = d010
        .occurrences
        .iter()
        .map(|o| (o.number, o.ts_ns))
        .collect();
    assert_eq!(got, stale);
    let json = d010_json(&r);
    let f = &json;
    let numbers: Vec<u64> = f["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, stale.iter().map(|s| s.0).collect::<Vec<_>>());
    let first = r.first_ns.unwrap();
    let o = &f["occurrences"][4];
    assert_eq!(
        o["rel_s"].as_f64().unwrap(),
        ((stale[4].1 - first) as f64 / 1e9 * 1e6).round() / 1e6
    );
    assert_eq!(
        o["time"],
        dissonance_tools::output::Rfc3339(stale[4].1).to_string()
    );
    assert_eq!(f["occurrences_omitted"], 0);

    let capped = report_of(
        pcap,
        Config {
            max_occurrences: 2,
            ..Config::default()
        },
    );
    let f = &d010_json(&capped);
    assert_eq!(f["repeats"], 4);
    assert_eq!(f["occurrences"].as_array().unwrap().len(), 2);
    assert_eq!(f["occurrences_omitted"], 3);
}

#[test]
fn d013_session_change_without_handshake() {
    let mut c = baseline();
    let s2 = S + 7;
    c.send(
        server(),
        alice(),
        Message::ErrorWrongSession(ErrorWrongSession { session: s2 }),
    );
    let n = c.send(
        alice(),
        server(),
        Message::ClientState(ClientState {
            session: s2,
            name: WireStr::new("alice"),
            client_id: 0,
            codec: OPUS,
            rooms: Seq::Items(&[]),
            rooms_encoding: RoomsEncoding::List,
        }),
    );
    assert_eq!(found(&c.report()), one("D013", n, Some("alice")));
}

#[test]
fn d014_response_without_request() {
    let mut c = baseline();
    let n = c.send(
        server(),
        carol(),
        Message::HandshakeResponse(HandshakeResponse::modern(S, 2)),
    );
    let r = c.report();
    assert_eq!(found(&r), one("D014", n, None));
    assert_eq!(r.findings[0].client_id, Some(2));
}

// ---- direction and channel ----

#[test]
fn d020_client_sends_server_only_type() {
    let mut c = baseline();
    let n = c.send(
        alice(),
        bob(),
        Message::RemoveClient(RemoveClient {
            session: S,
            client_id: 1,
        }),
    );
    assert_eq!(found(&c.report()), one("D020", n, Some("alice")));
}

#[test]
fn d021_server_sends_client_only_type() {
    let mut c = baseline();
    let n = c.send(
        server(),
        bob(),
        Message::HandshakeP2P(HandshakeP2P {
            session: S,
            peer_id: 0,
        }),
    );
    assert_eq!(found(&c.report()), one("D021", n, Some("bob")));
}

#[test]
fn d022_unwrapped_text_to_server() {
    let mut c = baseline();
    let n = c.raw(alice(), server(), &text(0, 1, 1));
    assert_eq!(found(&c.report()), one("D022", n, Some("alice")));
}

#[test]
fn d023_voice_in_reliable_relay() {
    let mut c = baseline();
    let inner = c.voice_bytes(0, 20, TOC_20MS, 40);
    let n = c.send(alice(), server(), relay(true, &[1], &inner));
    let r = c.report();
    assert_eq!(found(&r), one("D023", n, Some("alice")));
    assert_eq!(r.findings[0].mark, Some((12 + 2, 1)));
}

#[test]
fn d024_text_in_unreliable_relay() {
    let mut c = baseline();
    let t = text(1, 1, 0);
    let n = c.send(bob(), server(), relay(false, &[0], &t));
    assert_eq!(found(&c.report()), one("D024", n, Some("bob")));
}

#[test]
fn d025_relayed_handshake_p2p() {
    let mut c = baseline();
    let p = Message::HandshakeP2P(HandshakeP2P {
        session: S,
        peer_id: 0,
    })
    .to_vec(Variant::Modern, 1024)
    .unwrap();
    let n = c.send(alice(), server(), relay(true, &[1], &p));
    assert_eq!(found(&c.report()), one("D025", n, Some("alice")));
}

#[test]
fn d026_relay_to_unknown_client() {
    let mut c = baseline();
    let t = text(0, 1, 1);
    // 0xFFFF (always send) is not flagged.
    let n = c.send(alice(), server(), relay(true, &[1, 7, 0xFFFF], &t));
    let r = c.report();
    assert_eq!(found(&r), one("D026", n, None));
    assert_eq!(
        (r.findings[0].client_id, r.findings[0].mark),
        (Some(7), Some((10, 2)))
    );
}

#[test]
fn d027_relay_wraps_server_only_type() {
    let mut c = baseline();
    let p = Message::ErrorWrongSession(ErrorWrongSession { session: S })
        .to_vec(Variant::Modern, 1024)
        .unwrap();
    let n = c.send(alice(), server(), relay(true, &[1], &p));
    assert_eq!(found(&c.report()), one("D027", n, Some("alice")));
}

// ---- state ----

fn state(name: &str, id: u16, rooms: &[WireStr<'_>]) -> Vec<u8> {
    Message::ClientState(ClientState {
        session: S,
        name: WireStr::new(name),
        client_id: id,
        codec: OPUS,
        rooms: Seq::Items(rooms),
        rooms_encoding: RoomsEncoding::List,
    })
    .to_vec(Variant::Modern, 1024)
    .unwrap()
}

#[test]
fn d030_client_state_with_another_clients_id() {
    let mut c = baseline();
    let n = c.raw(alice(), server(), &state("alice", 1, &[]));
    let r = c.report();
    assert_eq!(found(&r), one("D030", n, Some("alice")));
    assert_eq!(r.findings[0].mark, Some((14, 2)));
}

#[test]
fn d031_delta_for_unknown_client() {
    let mut c = baseline();
    let n = c.send(
        alice(),
        server(),
        Message::DeltaChannelState(DeltaChannelState::new(S, true, 5, "Global")),
    );
    // The server's echoes are the same packet: folded into the one finding.
    let d = Message::DeltaChannelState(DeltaChannelState::new(S, true, 5, "Global"));
    c.send(server(), alice(), d.clone());
    c.send(server(), bob(), d);
    let r = c.report();
    assert_eq!(found(&r), one("D031", n, None));
    assert_eq!(r.findings[0].repeats, 2);
}

#[test]
fn d032_remove_unknown_client() {
    let mut c = baseline();
    let n = c.send(
        server(),
        alice(),
        Message::RemoveClient(RemoveClient {
            session: S,
            client_id: 5,
        }),
    );
    // Removing a known client, twice (once per receiver), is normal.
    c.send(
        server(),
        alice(),
        Message::RemoveClient(RemoveClient {
            session: S,
            client_id: 1,
        }),
    );
    c.send(
        server(),
        bob(),
        Message::RemoveClient(RemoveClient {
            session: S,
            client_id: 1,
        }),
    );
    assert_eq!(found(&c.report()), one("D032", n, None));
}

#[test]
fn d033_null_room_name() {
    let mut c = baseline();
    let bytes = state("alice", 0, &[WireStr::new("Global"), WireStr::NULL]);
    let n = c.raw(alice(), server(), &bytes);
    let r = c.report();
    assert_eq!(found(&r), one("D033", n, Some("alice")));
    assert_eq!(r.findings[0].mark, Some((bytes.len() - 2, 2)));
}

#[test]
fn d033_null_player_name_in_client_state() {
    let mut c = baseline();
    let mut bytes = state("x", 0, &[]);
    bytes.splice(7..10, [0u8, 0]); // name "x" (00 02 78) becomes null (00 00)
                                   // The server's echo to bob (to the server itself it is D050).
    let n = c.raw(server(), bob(), &bytes);
    let r = c.report();
    assert_eq!(found(&r), one("D033", n, Some("bob")));
    assert_eq!(r.findings[0].mark, Some((7, 2)));
}

#[test]
fn d034_text_recipient_type() {
    let mut c = baseline();
    let t = text(1, 2, 0);
    let n = c.send(bob(), server(), relay(true, &[0], &t));
    let r = c.report();
    assert_eq!(found(&r), one("D034", n, Some("bob")));
    assert_eq!(r.findings[0].mark, Some((12 + 7, 1)));
}

fn colliding_names() -> (String, String) {
    let mut seen = HashMap::new();
    for i in 0.. {
        let name = format!("room {i}");
        if let Some(other) = seen.insert(room_id(&name), name.clone()) {
            return (other, name);
        }
    }
    unreachable!()
}

#[test]
fn d035_room_id_collision() {
    let (a, b) = colliding_names();
    assert_eq!(room_id(&a), room_id(&b));
    let mut c = baseline();
    let n = c.raw(
        alice(),
        server(),
        &state("alice", 0, &[WireStr::new(&a), WireStr::new(&b)]),
    );
    assert_eq!(found(&c.report()), one("D035", n, Some("alice")));
}

#[test]
fn d035_room_id_collision_by_delta() {
    let (a, b) = colliding_names();
    let mut c = baseline();
    c.send(
        bob(),
        server(),
        Message::DeltaChannelState(DeltaChannelState::new(S, true, 1, &a)),
    );
    let n = c.send(
        bob(),
        server(),
        Message::DeltaChannelState(DeltaChannelState::new(S, true, 1, &b)),
    );
    assert_eq!(found(&c.report()), one("D035", n, Some("bob")));
}

/// A HandshakeRequest for the name "alice" from `from`; its packet number.
fn hello_alice(c: &mut Cap, from: SocketAddr) -> u64 {
    c.send(
        from,
        server(),
        Message::HandshakeRequest(HandshakeRequest {
            codec: OPUS,
            name: WireStr::new("alice"),
        }),
    )
}

#[test]
fn d036_player_name_reused() {
    let mut c = baseline();
    let n = hello_alice(&mut c, carol());
    assert_eq!(found(&c.report()), one("D036", n, Some("alice")));
}

#[test]
fn d036_name_free_again_after_the_client_left() {
    let mut c = baseline();
    c.send(
        server(),
        bob(),
        Message::RemoveClient(RemoveClient {
            session: S,
            client_id: 0,
        }),
    );
    hello_alice(&mut c, carol());
    assert_eq!(found(&c.report()), vec![]);
}

#[test]
fn d037_evicted_client_still_talking_but_not_when_it_reconnects() {
    // alice keeps relaying voice after carol's handshake took her name.
    let mut c = baseline();
    let d036 = hello_alice(&mut c, carol());
    let n = c.relay_voice(alice(), 0, None, &[1], TOC_20MS);
    c.relay_voice(alice(), 0, None, &[1], TOC_20MS);
    let r = c.report();
    assert_eq!(
        found(&r),
        vec![
            ("D037", n, Some("alice".to_string())),
            ("D036", d036, Some("alice".to_string()))
        ]
    );
    let f = &r.findings[0];
    assert_eq!(f.rule.severity.name(), "error");
    assert!(
        f.message.contains("whose player name \"alice\" 127.0.0.1:"),
        "{}",
        f.message
    );
    // Told to reconnect, alice handshakes again: only D036 (twice, one per direction).
    let mut c = baseline();
    hello_alice(&mut c, carol());
    hello_alice(&mut c, alice());
    let ids: Vec<_> = found(&c.report()).iter().map(|f| f.0).collect();
    assert_eq!(ids, ["D036", "D036"]);
}

// ---- voice ----

#[test]
fn d040_voice_gap() {
    let mut c = baseline();
    c.relay_voice(alice(), 0, Some(22), &[1], TOC_20MS); // 2 missing: within --max-gap
    let n = c.relay_voice(alice(), 0, Some(26), &[1], TOC_20MS); // 3 missing
    let r = c.report();
    assert_eq!(found(&r), one("D040", n, Some("alice")));
    let v = &r.voice[0];
    assert_eq!((v.packets, v.lost, v.longest_burst), (22, 5, 3));
}

#[test]
fn d041_voice_duplicate() {
    let mut c = baseline();
    c.relay_voice(alice(), 0, Some(20), &[1], TOC_20MS);
    let n = c.relay_voice(alice(), 0, Some(20), &[1], TOC_20MS);
    let r = c.report();
    assert_eq!(found(&r), one("D041", n, Some("alice")));
    assert_eq!(r.voice[0].duplicates, 1);
}

#[test]
fn d042_voice_reordered() {
    let mut c = baseline();
    for s in [22, 23, 24] {
        c.relay_voice(alice(), 0, Some(s), &[1], TOC_20MS);
    }
    c.relay_voice(alice(), 0, Some(21), &[1], TOC_20MS); // 3 late: beyond --max-reorder 2
    let n = c.relay_voice(alice(), 0, Some(20), &[1], TOC_20MS);
    let r = c.report();
    assert_eq!(
        found(&r),
        vec![
            ("D042", n - 1, Some("alice".into())),
            ("D042", n, Some("alice".into()))
        ]
    );
    assert_eq!((r.voice[0].reordered, r.voice[0].lost), (2, 0));
}

#[test]
fn d042_small_reorder_is_fine() {
    let mut c = baseline();
    c.relay_voice(alice(), 0, Some(21), &[1], TOC_20MS);
    c.relay_voice(alice(), 0, Some(20), &[1], TOC_20MS);
    assert_eq!(found(&c.report()), vec![]);
}

#[test]
fn d043_opus_frame_size_mismatch() {
    let mut c = baseline();
    let n = c.relay_voice(alice(), 0, None, &[1], TOC_40MS);
    c.relay_voice(alice(), 0, None, &[1], TOC_40MS);
    let r = c.report();
    assert_eq!(found(&r), one("D043", n, Some("alice")));
    assert_eq!(
        (r.findings[0].repeats, r.findings[0].mark),
        (1, Some((12 + 20, 1)))
    );
}

#[test]
fn d044_sample_rate_opus_cannot_decode() {
    let mut c = baseline();
    let codec = CodecSettings::new(Codec::Opus, 441, 44100);
    let n = c.send(
        carol(),
        server(),
        Message::HandshakeRequest(HandshakeRequest {
            codec,
            name: WireStr::new("carol"),
        }),
    );
    let r = c.report();
    assert_eq!(found(&r), one("D044", n, Some("carol")));
    assert_eq!(r.findings[0].mark, Some((8, 4)));
}

#[test]
fn d045_voice_from_unknown_client() {
    let mut c = baseline();
    let n = c.relay_voice(alice(), 9, None, &[1], TOC_20MS);
    c.relay_voice(alice(), 9, None, &[1], TOC_20MS);
    let r = c.report();
    assert_eq!(found(&r), one("D045", n, None));
    assert_eq!(r.findings[0].client_id, Some(9));
}

#[test]
fn every_rule_has_a_test_here() {
    let src = include_str!("check.rs");
    for r in dissonance_tools::check::rules::ALL {
        let needle = format!("fn {}_", r.id.to_lowercase());
        assert!(src.contains(&needle), "no test for {}", r.id);
    }
}

#[test]
fn live_use_findings_come_out_as_packets_go_in() {
    use dissonance_tools::capture::{Payload, Transport};
    use dissonance_tools::check::Checker;
    let mut checker = Checker::new(Config::default());
    let push = |checker: &mut Checker, n: u64, src, dst, m: Message<'_>| {
        let bytes = m.to_vec(Variant::Modern, 1024).unwrap();
        checker.push(&Payload {
            frame_number: n,
            ts_ns: n as i64 * 1_000_000,
            src,
            dst,
            transport: Transport::Udp,
            data: &bytes,
            truncated: false,
        });
    };
    let name = WireStr::new("alice");
    push(
        &mut checker,
        1,
        alice(),
        server(),
        Message::HandshakeRequest(HandshakeRequest { codec: OPUS, name }),
    );
    push(
        &mut checker,
        2,
        server(),
        alice(),
        Message::HandshakeResponse(HandshakeResponse::modern(S, 0)),
    );
    assert_eq!(checker.poll_finding(), None);
    let t = text(0, 5, 0);
    push(&mut checker, 3, alice(), server(), relay(true, &[0], &t));
    let f = checker.poll_finding().unwrap();
    assert_eq!(
        (f.rule.id, f.number, f.client.as_deref()),
        ("D034", 3, Some("alice"))
    );
    assert!(
        f.one_line()
            .starts_with("error D034 text-recipient-type packet 3 alice(0)"),
        "{}",
        f.one_line()
    );
    assert_eq!(checker.poll_finding(), None);
    // The same bytes again fold into the first finding: nothing new to poll.
    push(&mut checker, 4, alice(), server(), relay(true, &[0], &t));
    assert_eq!(checker.poll_finding(), None);
    let r = checker.finish();
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].repeats, 1);
    assert_eq!(
        r.rules
            .iter()
            .find(|c| c.rule.id == "D034")
            .unwrap()
            .occurrences,
        2
    );
}

#[test]
fn d012_below_the_threshold_is_only_d010() {
    let mut c = baseline();
    let first = stale_delta(&mut c);
    for _ in 0..9 {
        c.send(
            server(),
            alice(),
            Message::ErrorWrongSession(ErrorWrongSession { session: S }),
        );
        stale_delta(&mut c);
    }
    assert_eq!(found(&c.report()), one("D010", first, Some("alice")));
}

/// Every malformed golden vector, and every prefix of a relay, as datagrams on a live
/// session, from a client and from the server: the engine never panics and the report
/// renders.
#[test]
fn malformed_inputs_never_panic() {
    use dissonance_tools::capture::{Payload, Transport};
    use dissonance_tools::check::Checker;
    let vectors = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/vectors/malformed.jsonl"
    ))
    .unwrap();
    let mut inputs: Vec<Vec<u8>> = vectors
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            dissonance_tools::output::hex::parse(v["hex"].as_str().unwrap()).unwrap()
        })
        .collect();
    assert_eq!(inputs.len(), 146);
    let t = text(0, 1, 1);
    let full = relay(true, &[1, 2], &t)
        .to_vec(Variant::Modern, 1024)
        .unwrap();
    inputs.extend((0..full.len()).map(|n| full[..n].to_vec()));
    let pcap = baseline().w.into_inner();
    let mut checker = Checker::new(Config::default());
    let mut reader = CaptureReader::new(Cursor::new(pcap)).unwrap();
    let mut decap = dissonance_tools::capture::Decapsulator::new(DecapConfig::default());
    while let Some(f) = reader.next_frame() {
        decap.push(&f.unwrap(), &mut |p| checker.push(&p));
    }
    for (i, bytes) in inputs.iter().enumerate() {
        for (src, dst) in [(alice(), server()), (server(), bob()), (alice(), bob())] {
            checker.push(&Payload {
                frame_number: 1000 + i as u64,
                ts_ns: 1_795_514_480_000_000_000 + i as i64,
                src,
                dst,
                transport: Transport::Udp,
                data: bytes,
                truncated: false,
            });
        }
    }
    let r = checker.finish();
    assert!(r.findings.iter().any(|f| f.rule.id == "D003"));
    assert!(r.findings.iter().any(|f| f.rule.id == "D001"));
    let _ = (r.text(), r.json(), r.junit(None));
}

/// `check_capture` reads on another thread and hands payloads over in batches of 1024:
/// a capture of several batches, with findings on both sides of the batch boundaries
/// and a D011 deadline running across them, reports exactly what the engine fed one
/// payload at a time on this thread reports.
#[test]
fn batched_reading_reports_what_the_engine_fed_directly_does() {
    let mut c = baseline();
    for i in 0..1500u16 {
        // A 3-frame gap every 400 frames (D040), a duplicate every 700 (D041).
        let seq = 20 + i + 3 * (i / 400);
        c.relay_voice(alice(), 0, Some(seq), &[1], TOC_20MS);
        let fwd = c.voice_bytes(0, seq, TOC_20MS, 40);
        c.raw(server(), bob(), &fwd);
        if i % 700 == 699 {
            c.relay_voice(alice(), 0, Some(seq), &[1], TOC_20MS);
        }
        if i == 990 {
            // Payload ~2037, never answered: D011 fires after the 2048 batch boundary.
            stale_delta(&mut c);
        }
    }
    let pcap = c.w.into_inner();
    let batched = report_of(pcap.clone(), Config::default());
    use dissonance_tools::check::Checker;
    let mut checker = Checker::new(Config::default());
    let mut reader = CaptureReader::new(Cursor::new(pcap)).unwrap();
    let mut decap = dissonance_tools::capture::Decapsulator::new(DecapConfig::default());
    while let Some(f) = reader.next_frame() {
        decap.push(&f.unwrap(), &mut |p| checker.push(&p));
    }
    decap.finish(&mut |p| checker.push(&p));
    let direct = checker.finish();
    assert_eq!(batched.packets, 56 + 3000 + 2 + 1);
    let rules: Vec<_> = batched.findings.iter().map(|f| f.rule.id).collect();
    // Three gaps on both paths (relay to the server, forward to bob), two duplicates.
    let mut expected = vec!["D010", "D011"];
    expected.extend(["D040"; 6]);
    expected.extend(["D041"; 2]);
    assert_eq!(rules, expected);
    assert_eq!(batched.json().to_string(), direct.json().to_string());
    assert_eq!(batched.text(), direct.text());
}

#[test]
fn d046_a_stray_far_ahead_is_an_outlier_not_a_gap_or_late_frames() {
    for jump in [60u16, 1000, 20_000] {
        let mut c = baseline();
        let n = c.relay_voice(alice(), 0, Some(20 + jump), &[1], TOC_20MS);
        for seq in 20..30 {
            c.relay_voice(alice(), 0, Some(seq), &[1], TOC_20MS);
        }
        let r = c.report();
        assert_eq!(found(&r), one("D046", n, Some("alice")), "+{jump}");
        assert!(r.findings[0]
            .message
            .contains(&format!("seq {} jumped far ahead on 127.0.0.1:", 20 + jump)));
        let v = &r.voice[0];
        assert_eq!((v.packets, v.lost), (30, 0), "+{jump}");
    }
    // A real jump (the next packets follow it) is a gap, not an outlier; a stray at the
    // very end is one.
    let mut c = baseline();
    let gap = c.relay_voice(alice(), 0, Some(200), &[1], TOC_20MS);
    c.relay_voice(alice(), 0, Some(201), &[1], TOC_20MS);
    let last = c.relay_voice(alice(), 0, Some(5000), &[1], TOC_20MS);
    let r = c.report();
    let mut ids = found(&r);
    ids.sort();
    assert_eq!(
        ids,
        [
            ("D040", gap, Some("alice".to_string())),
            ("D046", last, Some("alice".to_string()))
        ]
    );
    assert!(r.findings.iter().any(|f| f
        .message
        .ends_with("and nothing followed it: a stray or forged copy")));
}
