//! The replay core in memory: the schedule on a simulated clock, and the id
//! substitution on the real capture against a "live server" that hands out other ids.

use super::*;
use crate::capture::{CaptureReader, DecapConfig, Decapsulator};
use crate::codec::HandshakeResponse;
use crate::codec::{Seq, Variant};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A synthetic 10-minute script: one 60-byte datagram every 20 ms from each of 4 clients.
fn long_script() -> Script {
    let mut s = Script::default();
    for c in 0..4 {
        s.clients.push(ScriptClient {
            addr: addr(5000 + c),
            name: None,
        });
        s.answers.push(BTreeMap::new());
    }
    for i in 0..30_001u64 {
        for c in 0..4 {
            s.sends.push(ScriptSend {
                at: Duration::from_millis(i * 20) + Duration::from_micros(c as u64 * 37),
                client: c,
                bytes: vec![0x8b; 60],
            });
        }
    }
    s.duration = s.sends.last().unwrap().at;
    s
}

/// Runs a replayer on a simulated clock that always wakes up late by 0–`late_us` µs
/// (deterministic); returns (send time, due time) of every datagram.
fn run_simulated(r: &mut Replayer, late_us: u64) -> Vec<(Duration, Duration)> {
    let mut sent = Vec::new();
    let mut lateness = 0u64;
    while let Some(due) = r.poll_timeout() {
        lateness = (lateness * 7919 + 13) % (late_us + 1);
        let now = due + Duration::from_micros(lateness);
        // Everything due by the time we woke goes out, each tagged with its own due time.
        while let Some(d) = r.poll_timeout().filter(|d| *d <= now) {
            r.poll_transmit(now).unwrap();
            sent.push((now, d));
        }
    }
    sent
}

#[test]
fn ten_minutes_at_1x_end_on_time_despite_late_wakeups() {
    let script = long_script();
    let capture = script.duration;
    assert_eq!(
        capture,
        Duration::from_secs(600) + Duration::from_micros(111)
    );
    let mut r = Replayer::new(script, Schedule::default(), true);
    let sent = run_simulated(&mut r, 3_000);
    assert_eq!(sent.len(), 120_004);
    assert!(r.is_done());
    // Each datagram leaves when its absolute due time came (plus that wake-up's lateness),
    // so lateness never adds up.
    for (now, due) in &sent {
        assert!(*now >= *due && *now - *due <= Duration::from_millis(3));
    }
    let end = sent.last().unwrap().0;
    assert!(
        end >= capture && end - capture <= Duration::from_millis(3),
        "{end:?}"
    );
    assert_eq!(sent.last().unwrap().1, capture);
    assert_eq!(r.report.sent, 120_004);
}

#[test]
fn speed_loops_and_top_speed() {
    let capture = long_script().duration;
    let fast = Schedule {
        speed: 2.0,
        loops: 2,
        ..Schedule::default()
    };
    let mut r = Replayer::new(long_script(), fast, true);
    let sent = run_simulated(&mut r, 0);
    assert_eq!(sent.len(), 2 * 120_004);
    // Round 2 starts after the capture plus the 1 s gap, all at double speed.
    let last = sent.last().unwrap().1;
    assert_eq!(last, (capture * 2 + Duration::from_secs(1)) / 2);
    assert_eq!(sent[120_004].1, (capture + Duration::from_secs(1)) / 2);

    let top = Schedule {
        top_speed: true,
        ..Schedule::default()
    };
    let mut r = Replayer::new(long_script(), top, true);
    let sent = run_simulated(&mut r, 0);
    assert_eq!(sent.len(), 120_004);
    assert!(sent.iter().all(|(now, _)| now.is_zero()));
}

fn three_friends() -> Script {
    let mut reader = CaptureReader::open("tests/data/captures/three-friends.pcap").unwrap();
    let mut decap = Decapsulator::new(DecapConfig::default());
    let mut all = Vec::new();
    while let Some(f) = reader.next_frame() {
        decap.push(&f.unwrap(), &mut |p| {
            all.push((p.ts_ns, p.src, p.dst, p.data.to_vec()))
        });
    }
    Script::from_payloads(
        all.iter().map(|(t, s, d, b)| (*t, *s, *d, b.as_slice())),
        PayloadMode::Raw,
    )
}

#[test]
fn script_from_the_real_capture() {
    let s = three_friends();
    assert_eq!(s.server, Some(addr(47200)));
    assert_eq!(s.session, Some(523124044));
    let names: Vec<_> = s.clients.iter().map(|c| c.name.clone().unwrap()).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    assert_eq!(s.sends.len(), 435);
    let answers: u64 = s.answers.iter().flat_map(|a| a.values()).sum();
    assert_eq!(answers, 449);
    assert_eq!(s.answers[1][&MessageType::VoiceData], 215);
    assert_eq!(s.answers[0][&MessageType::VoiceData], 208);
}

/// A modern HandshakeResponse (empty lists).
fn response(session: u32, id: u16) -> Vec<u8> {
    Message::HandshakeResponse(HandshakeResponse {
        session,
        client_id: id,
        clients: Seq::Items(&[]),
        room_names: Seq::Items(&[]),
        room_entries: Seq::Items(&[]),
    })
    .to_vec(Variant::Modern, 1024)
    .unwrap()
}

#[test]
fn live_session_and_ids_replace_the_captured_ones() {
    const LIVE: u32 = 777;
    // The live server numbers them the other way round.
    let live_id = |c: usize| [7u16, 5, 3][c];
    let mut r = Replayer::new(three_friends(), Schedule::default(), false);
    let mut sent: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut now = Duration::ZERO;
    while let Some(due) = r.poll_timeout() {
        now = now.max(due);
        while let Some((c, bytes)) = r.poll_transmit(now) {
            if Packet::peek_type(&bytes).is_ok_and(|(_, t)| t == MessageType::HandshakeRequest) {
                // The live server answers the handshake; everything else of this client
                // waited for it.
                r.handle(c, &response(LIVE, live_id(c)));
            }
            sent.push((c, bytes));
        }
    }
    assert_eq!(sent.len(), 435);
    assert_eq!(r.report.never_sent, 0);
    assert_eq!(r.report.untranslated, 0);
    let mut voice_by_sender: BTreeMap<u16, u64> = BTreeMap::new();
    for (c, bytes) in &sent {
        if bytes.as_slice() == BYE {
            continue;
        }
        let p = Packet::decode(bytes).unwrap();
        match &p.message {
            Message::HandshakeRequest(_) => {}
            Message::ClientState(s) => {
                assert_eq!(s.session, LIVE);
                assert_eq!(s.client_id, live_id(*c));
            }
            Message::DeltaChannelState(d) => {
                assert_eq!((d.session, d.peer), (LIVE, live_id(*c)));
            }
            Message::ServerRelayUnreliable(rel) | Message::ServerRelayReliable(rel) => {
                assert_eq!(rel.session, LIVE);
                let inner = rel.inner().unwrap();
                assert_eq!(inner.message.session(), Some(LIVE));
                let dests: Vec<u16> = rel.destinations.iter().collect();
                match inner.message {
                    Message::VoiceData(v) => {
                        assert_eq!(v.sender, live_id(*c));
                        *voice_by_sender.entry(v.sender).or_default() += 1;
                        // alice → bob (room listener), bob → alice (player channel).
                        let other = if *c == 0 { live_id(1) } else { live_id(0) };
                        assert_eq!(dests, vec![other]);
                        for ch in v.channels.iter() {
                            if ch.bitfield.channel_type() == crate::codec::ChannelType::Player {
                                assert_eq!(ch.recipient, live_id(0));
                            }
                        }
                    }
                    Message::TextData(t) => {
                        assert_eq!(t.sender, live_id(2));
                        assert_eq!(
                            t.text.to_str_lossy().unwrap(),
                            "Hi all, carol here - sorry I am late!"
                        );
                        assert_eq!(dests, vec![live_id(0), live_id(1)]);
                    }
                    ref m => panic!("unexpected relayed {m:?}"),
                }
            }
            m => panic!("unexpected {m:?}"),
        }
    }
    assert_eq!(voice_by_sender, BTreeMap::from([(7, 215), (5, 208)]));
    // The report compares what the captured server answered with what came live.
    let text = r.finish();
    assert!(
        text.contains("ErrorWrongSession: 0, RemoveClient: 0"),
        "{text}"
    );
    assert!(text.contains("HandshakeResponse"), "{text}");
}

#[test]
fn every_loop_handshakes_again_and_uses_the_new_session() {
    let schedule = Schedule {
        loops: 2,
        top_speed: true,
        ..Schedule::default()
    };
    let mut r = Replayer::new(three_friends(), schedule, false);
    let mut sessions = Vec::new();
    let mut handshakes = 0u32;
    while r.poll_timeout().is_some() {
        while let Some((c, bytes)) = r.poll_transmit(Duration::ZERO) {
            let p = Packet::decode(&bytes);
            match p.as_ref().map(|p| &p.message) {
                Ok(Message::HandshakeRequest(_)) => {
                    handshakes += 1;
                    // Round 1 gets session 100, round 2 session 200.
                    let session = if handshakes <= 3 { 100 } else { 200 };
                    r.handle(c, &response(session, c as u16));
                }
                Ok(m) => sessions.push(m.session().unwrap()),
                Err(_) => assert_eq!(bytes.as_slice(), BYE),
            }
        }
    }
    assert_eq!(handshakes, 6);
    assert_eq!(r.report.sent, 870);
    // 429 session-carrying packets per round, each with its round's session.
    assert_eq!(sessions.len(), 858);
    assert!(sessions[..429].iter().all(|&s| s == 100));
    assert!(sessions[429..].iter().all(|&s| s == 200));
}
