//! The sans-IO client core, in memory with a simulated clock: the real clients' part of
//! the golden transcript (tests/data/vectors/transcript_scenario.jsonl, made by real
//! Dissonance 9.0.8 clients), then retry, back-off, idle and bad-input behaviour.

use std::collections::BTreeMap;
use std::time::Duration;

use dissonance_tools::codec::*;
use dissonance_tools::net::client::{ActionError, Client, Event, Target};
use dissonance_tools::output::hex;

fn hx(b: &[u8]) -> String {
    hex::Hex(b).to_string()
}
use dissonance_tools::dissect::locate::BYE;
use dissonance_tools::voice::EndReason;
use serde_json::Value;

const TRANSCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/vectors/transcript_scenario.jsonl"
);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

fn drain_events(c: &mut Client) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// Our events in the transcript's vocabulary (connection bookkeeping left out).
fn as_transcript(e: &Event) -> Option<String> {
    Some(match e {
        Event::PeerJoined { name, .. } => format!("PlayerJoined {name}"),
        Event::PeerLeft { name, .. } => format!("PlayerLeft {name}"),
        Event::RoomEntered { name, room, .. } => format!("PlayerEnteredRoom {name} {room}"),
        Event::RoomLeft { name, room, .. } => format!("PlayerExitedRoom {name} {room}"),
        Event::Text {
            sender,
            target,
            text,
            ..
        } => format!(
            "TextMessageReceived {sender} {} {} {text}",
            target.kind(),
            target.name()
        ),
        Event::VoicePacket { sender, audio, .. } => {
            format!("VoicePacketReceived {sender} {}", hx(audio))
        }
        Event::StreamStarted { sender, .. } => format!("PlayerStartedSpeaking {sender}"),
        Event::StreamEnded { sender, .. } => format!("PlayerStoppedSpeaking {sender}"),
        _ => return None,
    })
}

fn transcript_event(v: &Value) -> Option<String> {
    let e = s(v, "event");
    Some(match e.as_str() {
        "PlayerJoined" | "PlayerLeft" | "PlayerStartedSpeaking" | "PlayerStoppedSpeaking" => {
            format!("{e} {}", s(v, "player"))
        }
        "PlayerEnteredRoom" | "PlayerExitedRoom" => {
            format!("{e} {} {}", s(v, "player"), s(v, "room"))
        }
        "TextMessageReceived" => format!(
            "{e} {} {} {} {}",
            s(v, "sender"),
            s(v, "recipient_type").to_lowercase(),
            s(v, "recipient"),
            s(v, "message")
        ),
        "VoicePacketReceived" => format!("{e} {} {}", s(v, "sender"), s(v, "audio_hex")),
        _ => return None,
    })
}

/// Speaking boundaries are reported by the stream logic after its reorder window, and
/// the real client reports the exits of a removed peer in hash-set order: compare
/// those as sets, everything else in order.
fn normalise(events: Vec<String>) -> (Vec<String>, Vec<String>) {
    let mut ordered = Vec::new();
    let mut speaking: Vec<String> = Vec::new();
    let mut run: Vec<String> = Vec::new();
    for e in events {
        if e.starts_with("PlayerStartedSpeaking") || e.starts_with("PlayerStoppedSpeaking") {
            speaking.push(e);
            continue;
        }
        if e.starts_with("PlayerExitedRoom") {
            run.push(e);
            continue;
        }
        run.sort();
        ordered.append(&mut run);
        ordered.push(e);
    }
    run.sort();
    ordered.append(&mut run);
    speaking.sort();
    (ordered, speaking)
}

#[test]
fn transcript_client_sends_are_byte_identical() {
    let text = std::fs::read_to_string(TRANSCRIPT).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let start = &lines[0];
    let names: BTreeMap<String, String> = start["clients"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(n, a)| (a.as_str().unwrap().to_string(), n.clone()))
        .collect();
    let mut clients: BTreeMap<String, Client> = names
        .values()
        .map(|n| (n.clone(), Client::new(n, CodecSettings::OPUS_48K_20MS, &[])))
        .collect();
    let mut ours: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut theirs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut voice_to: BTreeMap<String, Target> = BTreeMap::new();
    let mut quit: Vec<String> = Vec::new();
    let mut compared = 0;

    for (i, v) in lines.iter().enumerate() {
        let now = ms(10 * i as u64);
        let role = s(v, "role");
        let event = s(v, "event");
        if role == "client" {
            let who = s(v, "client");
            let c = clients.get_mut(&who).unwrap();
            if event == "action" {
                let target = || match s(v, "recipient_type").as_str() {
                    "Room" => Target::Room(s(v, "recipient")),
                    _ => Target::Player(s(v, "recipient")),
                };
                match s(v, "action").as_str() {
                    "join_room" => assert!(c.join_room(&s(v, "room")).unwrap()),
                    "leave_room" => assert!(c.leave_room(&s(v, "room")).unwrap()),
                    "send_text" => {
                        c.send_text(&target(), &s(v, "message")).unwrap();
                    }
                    "start_voice" => {
                        voice_to.insert(who.clone(), target());
                    }
                    // The closing flag goes on the spurt's last frame (see below).
                    "close_voice_channel" => {}
                    "quit" => {
                        c.quit();
                        quit.push(who.clone());
                    }
                    a => panic!("unknown action {a}"),
                }
            } else if !quit.contains(&who) {
                // After quitting, the real client reports its own shutdown; ours is silent.
                if let Some(e) = transcript_event(v) {
                    theirs.entry(who).or_default().push(e);
                }
            }
            continue;
        }
        if role != "server" {
            continue;
        }
        let Some(who) = names.get(&s(v, "peer")).cloned() else {
            continue; // the server's own events
        };
        let c = clients.get_mut(&who).unwrap();
        match event.as_str() {
            // What the real client sent: ours must send the same bytes now.
            "recv" => {
                c.handle_timeout(now);
                let want = hex::parse(&s(v, "hex")).unwrap();
                if v["decoded"]["type"] == "ServerRelayUnreliable" {
                    let p = Packet::decode(&want).unwrap();
                    let Message::ServerRelayUnreliable(r) = p.message else {
                        unreachable!()
                    };
                    let inner = r.inner().unwrap();
                    let Message::VoiceData(vd) = inner.message else {
                        panic!("relay of something else")
                    };
                    // The speaker stops after this frame if its next send is no voice.
                    let next = lines[i + 1..]
                        .iter()
                        .find(|l| l["event"] == "recv" && l["peer"] == v["peer"]);
                    let last = next.is_none_or(|l| l["decoded"]["type"] != "ServerRelayUnreliable");
                    let n = c
                        .send_voice(&[voice_to[&who].clone()], vd.audio, last)
                        .unwrap();
                    assert_eq!(n, r.destinations.len());
                }
                let got = c
                    .poll_transmit()
                    .unwrap_or_else(|| panic!("line {i}: {who} sent nothing"));
                assert_eq!(hx(&got.bytes), hx(&want), "line {i}: {who}'s send");
                compared += 1;
            }
            // What the real server sent to this client.
            "send" => {
                let bytes = hex::parse(&s(v, "hex")).unwrap();
                c.handle(now, &bytes);
                let evs = drain_events(c);
                assert!(
                    !evs.iter().any(|e| matches!(e, Event::Dropped { .. })),
                    "line {i}: {evs:?}"
                );
                ours.entry(who.clone())
                    .or_default()
                    .extend(evs.iter().filter_map(as_transcript));
            }
            "transport_disconnect" => {
                let got = c.poll_transmit().expect("goodbye datagram");
                assert_eq!(got.bytes, BYE);
            }
            _ => {}
        }
    }
    assert_eq!(compared, 19);
    // Idle long enough for every stream to be flushed by the stream logic.
    for (who, c) in clients.iter_mut() {
        assert_eq!(
            c.poll_transmit(),
            None,
            "{who} sent more than the real client"
        );
        for t in 1..=40 {
            c.handle_timeout(ms(2000 + 100 * t));
        }
        ours.entry(who.clone())
            .or_default()
            .extend(drain_events(c).iter().filter_map(as_transcript));
    }
    for who in names.values() {
        let (a, a_speak) = normalise(ours.remove(who).unwrap_or_default());
        let (b, b_speak) = normalise(theirs.remove(who).unwrap_or_default());
        assert_eq!(a, b, "{who}'s events");
        assert_eq!(a_speak, b_speak, "{who}'s talk spurts");
    }
}

/// A connected client (id `id`) in session 7, with `peers` (name, id, rooms) known.
fn connected(name: &str, id: u16, peers: &[(&str, u16, &[&str])]) -> Client {
    let mut c = Client::new(name, CodecSettings::OPUS_48K_20MS, &[]);
    c.handle_timeout(Duration::ZERO);
    let resp = Message::HandshakeResponse(HandshakeResponse::modern(7, id));
    c.handle(ms(1), &resp.to_vec(Variant::Modern, 1024).unwrap());
    for (n, pid, rooms) in peers {
        let rooms: Vec<WireStr> = rooms.iter().map(|r| WireStr::new(r)).collect();
        let cs = Message::ClientState(ClientState {
            session: 7,
            name: WireStr::new(n),
            client_id: *pid,
            codec: CodecSettings::OPUS_48K_20MS,
            rooms: Seq::Items(&rooms),
            rooms_encoding: RoomsEncoding::List,
        });
        c.handle(ms(1), &cs.to_vec(Variant::Modern, 1024).unwrap());
    }
    while c.poll_transmit().is_some() {}
    drain_events(&mut c);
    c
}

#[test]
fn handshake_repeats_strictly_after_two_seconds_until_answered() {
    let mut c = Client::new(
        "zed",
        CodecSettings::OPUS_48K_20MS,
        &["b".into(), "a".into()],
    );
    assert_eq!(c.poll_timeout(), Some(Duration::ZERO));
    c.handle_timeout(ms(0));
    let hs = c.poll_transmit().unwrap();
    assert_eq!(hx(&hs.bytes), "8bc70401000003c00000bb8000047a6564");
    assert!(hs.reliable);
    assert_eq!(c.poll_timeout(), Some(ms(2000) + Duration::from_nanos(1)));
    c.handle_timeout(ms(2000));
    assert_eq!(c.poll_transmit(), None);
    c.handle_timeout(ms(2001));
    assert_eq!(c.poll_transmit().unwrap().bytes, hs.bytes);
    assert_eq!(
        drain_events(&mut c),
        vec![
            Event::HandshakeSent { attempt: 1 },
            Event::HandshakeSent { attempt: 2 }
        ]
    );
    // Answered: ClientState with the rooms in .NET order, no more handshakes.
    let resp = Message::HandshakeResponse(HandshakeResponse::modern(0x01020304, 3));
    c.handle(ms(2500), &resp.to_vec(Variant::Modern, 1024).unwrap());
    assert_eq!(
        hx(&c.poll_transmit().unwrap().bytes),
        "8bc7010102030400047a6564000301000003c00000bb80000200026100026".to_string() + "2"
    );
    assert_eq!(c.poll_timeout(), None);
    c.handle_timeout(ms(9000));
    assert_eq!(c.poll_transmit(), None);
    assert_eq!(c.connection(), Some((0x01020304, 3)));
}

#[test]
fn wrong_session_backs_off_then_reconnects_with_fresh_voice_state() {
    let mut c = connected("a", 0, &[("a", 0, &[]), ("b", 1, &["r"])]);
    assert_eq!(
        c.send_voice(&[Target::Room("r".into())], b"x", false),
        Ok(1)
    );
    let first = c.poll_transmit().unwrap().bytes;
    // Our own session: ignored.
    let same = Message::ErrorWrongSession(ErrorWrongSession { session: 7 });
    c.handle(ms(10), &same.to_vec(Variant::Modern, 1024).unwrap());
    assert_eq!(c.connection(), Some((7, 0)));
    let mut at = ms(10);
    for (round, wait) in [500u64, 1000, 1500, 2000, 2500, 3000, 3000]
        .iter()
        .enumerate()
    {
        let e = Message::ErrorWrongSession(ErrorWrongSession { session: 8 });
        c.handle(at, &e.to_vec(Variant::Modern, 1024).unwrap());
        let evs = drain_events(&mut c);
        assert!(
            evs.contains(&Event::SessionLost {
                session: 7,
                server_session: 8,
                retry_in: ms(*wait)
            }),
            "round {round}: {evs:?}"
        );
        if round == 0 {
            assert!(evs.contains(&Event::PeerLeft {
                id: 1,
                name: "b".into()
            }));
        }
        assert_eq!(c.connection(), None);
        assert_eq!(
            c.send_text(&Target::Room("r".into()), "hi"),
            Err(ActionError::NotConnected)
        );
        assert_eq!(c.poll_timeout(), Some(at + ms(*wait)));
        c.handle_timeout(at + ms(*wait) - ms(1));
        assert_eq!(c.poll_transmit(), None);
        at += ms(*wait);
        c.handle_timeout(at);
        assert_eq!(c.poll_transmit().unwrap().bytes[2], 4, "handshake again");
        // Back in session 7 for the next round (the server was reset behind our back).
        let resp = Message::HandshakeResponse(HandshakeResponse::modern(7, 0));
        c.handle(at, &resp.to_vec(Variant::Modern, 1024).unwrap());
        let cs = Message::ClientState(ClientState {
            session: 7,
            name: WireStr::new("b"),
            client_id: 1,
            codec: CodecSettings::OPUS_48K_20MS,
            rooms: Seq::Items(&[WireStr::new("r")]),
            rooms_encoding: RoomsEncoding::List,
        });
        c.handle(at, &cs.to_vec(Variant::Modern, 1024).unwrap());
        // Sequence 0 and counter 0 again: byte-identical to the very first frame.
        c.poll_transmit().unwrap(); // ClientState
        assert_eq!(
            c.send_voice(&[Target::Room("r".into())], b"x", false),
            Ok(1)
        );
        assert_eq!(c.poll_transmit().unwrap().bytes, first, "round {round}");
        drain_events(&mut c);
    }
}

#[test]
fn voice_sequence_closing_and_spurt_counter() {
    let mut c = connected("a", 0, &[("a", 0, &["r"]), ("b", 1, &["r"]), ("c", 2, &[])]);
    let room = [Target::Room("r".into())];
    let mut sent = Vec::new();
    for (audio, last) in [(b"1", false), (b"2", true), (b"3", false)] {
        c.send_voice(&room, audio, last).unwrap();
        sent.push(c.poll_transmit().unwrap().bytes);
    }
    let inner = |b: &[u8]| {
        let p = Packet::decode(b).unwrap();
        let Message::ServerRelayUnreliable(r) = p.message else {
            panic!()
        };
        assert_eq!(r.destinations.iter().collect::<Vec<_>>(), vec![1]);
        hx(r.payload)
    };
    // seq 0, 1 (closing 0x8005), then seq 2 in the next spurt (options 0x81).
    let rid = hx(&room_id("r").to_be_bytes());
    assert_eq!(
        inner(&sent[0]),
        format!("8bc70200000007000080000000018001{rid}000131")
    );
    assert_eq!(
        inner(&sent[1]),
        format!("8bc70200000007000080000100018005{rid}000132")
    );
    assert_eq!(
        inner(&sent[2]),
        format!("8bc70200000007000081000200018001{rid}000133")
    );
    // Nobody in the room: nothing sent, no sequence number used.
    assert_eq!(
        c.send_voice(&[Target::Room("empty".into())], b"4", false),
        Ok(0)
    );
    assert_eq!(c.poll_transmit(), None);
    // To a player and a room at once: both channels, destinations merged in id order.
    c.send_voice(
        &[Target::Player("c".into()), Target::Room("r".into())],
        b"5",
        false,
    )
    .unwrap();
    let p = c.poll_transmit().unwrap().bytes;
    let pk = Packet::decode(&p).unwrap();
    let Message::ServerRelayUnreliable(r) = pk.message else {
        panic!()
    };
    assert_eq!(r.destinations.iter().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(
        hx(r.payload),
        format!(
            "8bc70200000007000081000300028000000280013{}00013{}",
            &rid[1..],
            5
        )
    );
    assert_eq!(
        c.send_voice(&[Target::Player("nobody".into())], b"6", false),
        Err(ActionError::UnknownPlayer("nobody".into()))
    );
}

#[test]
fn text_to_an_empty_room_sends_nothing_and_relays_split_at_255() {
    let many: Vec<(String, u16)> = (1..=300u16).map(|i| (format!("p{i}"), i)).collect();
    let peers: Vec<(&str, u16, &[&str])> = many
        .iter()
        .map(|(n, i)| (n.as_str(), *i, &["big"][..]))
        .collect();
    let mut c = connected("me", 0, &peers);
    assert_eq!(c.send_text(&Target::Room("small".into()), "x"), Ok(0));
    assert_eq!(c.poll_transmit(), None);
    assert_eq!(c.send_text(&Target::Room("big".into()), "x"), Ok(300));
    let (a, b) = (
        c.poll_transmit().unwrap().bytes,
        c.poll_transmit().unwrap().bytes,
    );
    let (a, b) = (Packet::decode(&a).unwrap(), Packet::decode(&b).unwrap());
    assert_eq!(c.poll_transmit(), None);
    let (Message::ServerRelayReliable(a), Message::ServerRelayReliable(b)) = (a.message, b.message)
    else {
        panic!()
    };
    assert_eq!(
        a.destinations.iter().collect::<Vec<_>>(),
        (1..=255).collect::<Vec<_>>()
    );
    assert_eq!(
        b.destinations.iter().collect::<Vec<_>>(),
        (256..=300).collect::<Vec<_>>()
    );
    assert_eq!(a.payload, b.payload);
}

fn voice_from(sender: u16, seq: u16, bitfield: u16, recipient: u16) -> Vec<u8> {
    let ch = [Channel {
        bitfield: ChannelBitfield(bitfield),
        recipient,
    }];
    Message::VoiceData(VoiceData {
        session: 7,
        sender,
        options: PacketOptions::extended(0),
        seq,
        channels: Seq::Items(&ch),
        audio: b"ab",
    })
    .to_vec(Variant::Modern, 1024)
    .unwrap()
}

#[test]
fn an_idle_stream_ends_after_one_and_a_half_seconds() {
    let mut c = connected("a", 0, &[("a", 0, &[]), ("b", 1, &[])]);
    for seq in 0..10u16 {
        c.handle(ms(20 * seq as u64), &voice_from(1, seq, 0x8000, 0));
    }
    let evs = drain_events(&mut c);
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e, Event::VoicePacket { sender_id: 1, .. }))
            .count(),
        10
    );
    // Voice to someone else (player 5) or a room we are not in: no packet event.
    c.handle(ms(200), &voice_from(1, 10, 0x8000, 5));
    c.handle(ms(200), &voice_from(1, 11, 0x8001, room_id("elsewhere")));
    assert!(!drain_events(&mut c)
        .iter()
        .any(|e| matches!(e, Event::VoicePacket { .. })));
    // The "no relevant channel" packet ended the spurt; a new one, then silence.
    for seq in 12..20u16 {
        c.handle(ms(20 * seq as u64), &voice_from(1, seq, 0x8000, 0));
    }
    let mut t = ms(400);
    while let Some(next) = c.poll_timeout() {
        assert!(next <= ms(3000), "tick at {next:?}");
        t = next;
        c.handle_timeout(t);
    }
    let ends: Vec<EndReason> = drain_events(&mut c)
        .into_iter()
        .filter_map(|e| match e {
            Event::StreamEnded { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(ends, vec![EndReason::NoChannel, EndReason::Idle]);
    assert!(t >= ms(380 + 1500) && t <= ms(380 + 1500 + 200), "{t:?}");
}

#[test]
fn garbage_is_dropped_and_the_session_survives() {
    use rand::{rngs::SmallRng, Rng, SeedableRng};
    let mut c = connected("a", 0, &[("a", 0, &["r"]), ("b", 1, &["r"])]);
    let good = voice_from(1, 0, 0x8001, room_id("r"));
    let mut rng = SmallRng::seed_from_u64(6);
    for i in 0..5000 {
        let mut d = if i % 2 == 0 {
            good.clone()
        } else {
            (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect()
        };
        if !d.is_empty() {
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..d.len());
                d[at] = rng.gen();
            }
            d.truncate(rng.gen_range(0..=d.len()));
        }
        c.handle(ms(i), &d);
        while c.poll_event().is_some() {}
    }
    // Whatever the mutations did to the table, the real peer is still addressable
    // once the server restates it, and we are still in session 7 as id 0.
    assert_eq!(c.connection(), Some((7, 0)));
    assert!(!c.is_quit());
}

#[test]
fn quit_sends_goodbye_once_and_refuses_actions() {
    let mut c = connected("a", 0, &[("a", 0, &[]), ("b", 1, &["r"])]);
    c.quit();
    c.quit();
    assert_eq!(c.poll_transmit().unwrap().bytes, BYE);
    assert_eq!(c.poll_transmit(), None);
    assert_eq!(
        c.send_text(&Target::Room("r".into()), "x"),
        Err(ActionError::Quit)
    );
    assert_eq!(c.join_room("r"), Err(ActionError::Quit));
}

// ---------------------------------------------------------------------------------------
// Our clients joining our server (both sans-IO cores, in memory): the story of the real
// capture three-friends (tests/data/captures/three-friends.truth.json).

mod story {
    use super::*;
    use dissonance_tools::net::client::audio::{encode_opus, read_wav_48k};
    use dissonance_tools::net::server::{self, Config, Server};
    use std::net::SocketAddr;
    use std::time::Instant;

    const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/captures");

    struct World {
        t0: Instant,
        now: Duration,
        server: Server,
        clients: Vec<(SocketAddr, Client, Vec<Event>)>,
        server_events: Vec<server::Event>,
    }

    impl World {
        fn add(&mut self, name: &str, port: u16, rooms: &[&str]) {
            let rooms: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let c = Client::new(name, CodecSettings::OPUS_48K_20MS, &rooms);
            self.clients.push((addr, c, Vec::new()));
            self.pump();
        }
        fn client(&mut self, name: &str) -> &mut Client {
            &mut self
                .clients
                .iter_mut()
                .find(|c| c.1.name() == name)
                .unwrap()
                .1
        }
        /// Moves datagrams both ways until nothing is left (bounded).
        fn pump(&mut self) {
            let now = self.now;
            for _ in 0..1000 {
                let mut moved = false;
                for (addr, c, events) in self.clients.iter_mut() {
                    c.handle_timeout(now);
                    while let Some(t) = c.poll_transmit() {
                        self.server.handle(self.t0 + now, *addr, &t.bytes);
                        moved = true;
                    }
                    events.extend(std::iter::from_fn(|| c.poll_event()));
                }
                while let Some(t) = self.server.poll_transmit() {
                    let (peer, bytes) = (t.peer, t.bytes.to_vec());
                    if let Some((_, c, _)) = self.clients.iter_mut().find(|c| c.0 == peer) {
                        c.handle(now, &bytes);
                    }
                    moved = true;
                }
                self.server_events
                    .extend(std::iter::from_fn(|| self.server.poll_event()));
                if !moved {
                    return;
                }
            }
            panic!("datagrams still moving after 1000 rounds");
        }
        fn advance(&mut self, d: Duration) {
            self.now += d;
            self.pump();
        }
        fn events(&self, name: &str) -> &[Event] {
            &self.clients.iter().find(|c| c.1.name() == name).unwrap().2
        }
    }

    fn frames(wav: &str) -> Vec<Vec<u8>> {
        let pcm = read_wav_48k(std::path::Path::new(&format!("{CAPTURES}/{wav}"))).unwrap();
        encode_opus(&pcm, 20, 24000).unwrap()
    }

    fn speak(w: &mut World, who: &str, to: Target, frames: &[Vec<u8>]) {
        for (i, f) in frames.iter().enumerate() {
            let last = i + 1 == frames.len();
            assert_eq!(
                w.client(who).send_voice(std::slice::from_ref(&to), f, last),
                Ok(1)
            );
            w.advance(ms(20));
        }
    }

    #[test]
    fn three_friends_through_our_server() {
        let truth: Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{CAPTURES}/three-friends.truth.json")).unwrap(),
        )
        .unwrap();
        let session = truth["server"]["session_id"].as_u64().unwrap() as u32;
        let mut w = World {
            t0: Instant::now(),
            now: Duration::ZERO,
            server: Server::new(Config::new(session)),
            clients: Vec::new(),
            server_events: Vec::new(),
        };
        w.add("alice", 47201, &["Global"]);
        w.advance(ms(190));
        w.add("bob", 47202, &["Global"]);
        w.advance(ms(1300));
        let alice = frames("three-friends.alice.ref.wav");
        let bob = frames("three-friends.bob.ref.wav");
        speak(&mut w, "alice", Target::Room("Global".into()), &alice);
        w.advance(ms(600));
        speak(&mut w, "bob", Target::Player("alice".into()), &bob);
        w.add("carol", 47203, &["Global"]);
        w.advance(ms(1000));
        let text = "Hi all, carol here - sorry I am late!";
        assert_eq!(
            w.client("carol")
                .send_text(&Target::Room("Global".into()), text),
            Ok(2)
        );
        w.advance(ms(1500));
        assert_eq!(w.client("carol").leave_room("Global"), Ok(true));
        assert_eq!(w.client("carol").join_room("Red Team"), Ok(true));
        w.advance(ms(1500));
        w.client("carol").quit();
        w.advance(ms(700));
        w.client("bob").quit();
        w.advance(ms(2000));

        // Ids and session as in the capture.
        for (name, want) in truth["summary"]["client_ids"].as_object().unwrap() {
            let connected = w.events(name).iter().find_map(|e| match e {
                Event::Connected { session, id } => Some((*session, *id)),
                _ => None,
            });
            assert_eq!(
                connected,
                Some((session, want.as_u64().unwrap() as u16)),
                "{name}"
            );
        }
        // Room membership as the server saw it: the truth's server admin events.
        let want: Vec<String> = truth["server_admin_events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| match e["event"].as_str()? {
                "ClientJoined" => Some(format!("joined {}", s(e, "player"))),
                "ClientEnteredRoom" => Some(format!("enter {} {}", s(e, "player"), s(e, "room"))),
                "ClientExitedRoom" => Some(format!("exit {} {}", s(e, "player"), s(e, "room"))),
                "ClientLeft" => Some(format!("left {}", s(e, "player"))),
                _ => None,
            })
            .collect();
        let got: Vec<String> = w
            .server_events
            .iter()
            .filter_map(|e| match e {
                server::Event::Joined { name, .. } => Some(format!("joined {name}")),
                server::Event::RoomJoined { name, room, .. } => {
                    Some(format!("enter {name} {room}"))
                }
                server::Event::RoomLeft { name, room, .. } => Some(format!("exit {name} {room}")),
                server::Event::Left { name, rooms, .. } => Some(
                    rooms
                        .iter()
                        .map(|r| format!("exit {name} {r}\n"))
                        .collect::<String>()
                        + &format!("left {name}"),
                ),
                _ => None,
            })
            .flat_map(|l| l.lines().map(str::to_string).collect::<Vec<_>>())
            .collect();
        // alice never says goodbye in the capture's window; we stop before she leaves.
        let n = want.iter().position(|l| l == "left bob").unwrap() + 1;
        assert_eq!(got, want[..n]);
        // Texts: who got what.
        for t in truth["texts"].as_array().unwrap() {
            for to in t["relay_destinations"].as_array().unwrap() {
                let got: Vec<&Event> = w
                    .events(to.as_str().unwrap())
                    .iter()
                    .filter(|e| matches!(e, Event::Text { .. }))
                    .collect();
                assert_eq!(
                    got,
                    vec![&Event::Text {
                        sender_id: t["sender_id"].as_u64().unwrap() as u16,
                        sender: s(t, "sender"),
                        target: Target::Room(s(t, "target_name")),
                        text: s(t, "text"),
                    }]
                );
            }
        }
        assert!(!w
            .events("carol")
            .iter()
            .any(|e| matches!(e, Event::Text { .. })));
        // Voice: every frame reached exactly its receivers, in one talk spurt each.
        for v in truth["summary"]["voice"].as_array().unwrap() {
            let speaker = s(v, "speaker");
            for (rx, count) in v["receivers"].as_object().unwrap() {
                let evs = w.events(rx);
                let n = evs
                    .iter()
                    .filter(
                        |e| matches!(e, Event::VoicePacket { sender, .. } if *sender == speaker),
                    )
                    .count();
                assert_eq!(n as u64, count.as_u64().unwrap(), "{speaker} -> {rx}");
                assert_eq!(n as u64, v["frames"].as_u64().unwrap());
                let spurts: Vec<&Event> =
                    evs.iter()
                        .filter(|e| match e {
                            Event::StreamStarted { sender, .. }
                            | Event::StreamEnded { sender, .. } => *sender == speaker,
                            _ => false,
                        })
                        .collect();
                assert_eq!(spurts.len(), 2, "{speaker} -> {rx}: {spurts:?}");
                assert!(
                    matches!(
                        spurts[1],
                        Event::StreamEnded {
                            reason: EndReason::Closing,
                            ..
                        }
                    ),
                    "{spurts:?}"
                );
            }
        }
        for (who, _) in [("alice", 0), ("bob", 1), ("carol", 2)] {
            assert!(
                !w.events(who)
                    .iter()
                    .any(|e| matches!(e, Event::Dropped { .. })),
                "{who}: {:?}",
                w.events(who)
            );
        }
    }
}
