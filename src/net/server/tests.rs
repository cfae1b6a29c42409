//! Behaviour of the server core, in memory with a simulated clock.

use super::*;
use crate::codec::{
    Channel, ChannelBitfield, ChannelType, HandshakeP2P, PacketOptions, Priority, VoiceData,
};
use proptest::prelude::*;

const S: u32 = 0x1234_5678;

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn enc(m: Message<'_>) -> Vec<u8> {
    m.to_vec(Variant::Modern, MAX_UDP_PAYLOAD).unwrap()
}

fn hello(name: &str) -> Vec<u8> {
    enc(Message::HandshakeRequest(HandshakeRequest {
        codec: CodecSettings::OPUS_48K_20MS,
        name: WireStr::new(name),
    }))
}

fn state(session: u32, name: &str, id: u16, rooms: &[&str]) -> Vec<u8> {
    let rooms: Vec<WireStr> = rooms.iter().map(|r| WireStr::new(r)).collect();
    enc(Message::ClientState(ClientState {
        session,
        name: WireStr::new(name),
        client_id: id,
        codec: CodecSettings::OPUS_48K_20MS,
        rooms: Seq::Items(&rooms),
        rooms_encoding: RoomsEncoding::List,
    }))
}

fn voice(sender: u16) -> Vec<u8> {
    let ch = [Channel {
        bitfield: ChannelBitfield::new(ChannelType::Room, false, false, Priority::Default, 0, 1.0),
        recipient: 109,
    }];
    enc(Message::VoiceData(VoiceData {
        session: S,
        sender,
        options: PacketOptions::extended(0),
        seq: 0,
        channels: Seq::Items(&ch),
        audio: &[1, 2, 3],
    }))
}

fn relay(session: u32, dests: &[u16], payload: &[u8], reliable: bool) -> Vec<u8> {
    let r = ServerRelay {
        session,
        destinations: Seq::Items(dests),
        payload,
    };
    enc(if reliable {
        Message::ServerRelayReliable(r)
    } else {
        Message::ServerRelayUnreliable(r)
    })
}

fn sent(s: &mut Server) -> Vec<(u16, Vec<u8>, bool)> {
    let mut v = Vec::new();
    while let Some(t) = s.poll_transmit() {
        v.push((t.peer.port(), t.bytes.to_vec(), t.reliable));
    }
    v
}

fn events(s: &mut Server) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// The names of the drop reasons reported since the last call.
fn drop_reasons(s: &mut Server) -> Vec<&'static str> {
    events(s)
        .iter()
        .filter_map(|e| match e {
            Event::Dropped { reason, .. } => Some(reason.name()),
            _ => None,
        })
        .collect()
}

/// Handshakes `name` from `port` and returns its id (from the HandshakeResponse): a
/// half-open client.
fn hello_only(s: &mut Server, now: Instant, port: u16, name: &str) -> u16 {
    s.handle(now, peer(port), &hello(name));
    let out = sent(s);
    let resp = out
        .iter()
        .find(|(p, b, _)| *p == port && b[2] == 5)
        .expect("a HandshakeResponse");
    u16::from_be_bytes([resp.1[7], resp.1[8]])
}

/// Joins `name` from `port` as a real client does (handshake, then its own ClientState
/// with no rooms) and returns its id.
fn join(s: &mut Server, now: Instant, port: u16, name: &str) -> u16 {
    let id = hello_only(s, now, port, name);
    s.handle(now, peer(port), &state(S, name, id, &[]));
    sent(s);
    id
}

#[test]
fn ids_reuse_the_highest_free_slot() {
    let now = Instant::now();
    let mut s = Server::new(Config::new(S));
    for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
        assert_eq!(join(&mut s, now, 100 + i as u16, n), i as u16);
    }
    s.handle(now, peer(101), &BYE);
    s.handle(now, peer(102), &BYE);
    assert_eq!(join(&mut s, now, 200, "e"), 2);
    assert_eq!(join(&mut s, now, 201, "f"), 1);
    // Trailing free slots are trimmed: 3 leaves, then 2 and 1 -> next gets 1.
    for p in [103, 200, 201] {
        s.handle(now, peer(p), &BYE);
    }
    assert_eq!(join(&mut s, now, 202, "g"), 1);
}

#[test]
fn newcomer_gets_every_state_with_rooms_in_dotnet_order() {
    let now = Instant::now();
    let mut s = Server::new(Config::new(S));
    join(&mut s, now, 1, "alice");
    s.handle(
        now,
        peer(1),
        &state(S, "alice", 0, &["b", "_x", "B", "10", "9", "a"]),
    );
    sent(&mut s);
    s.handle(now, peer(2), &hello("bob"));
    // Only the response until bob shows he receives at his address ...
    assert_eq!(
        sent(&mut s),
        [(
            2,
            enc(Message::HandshakeResponse(HandshakeResponse::modern(S, 1))),
            true
        )]
    );
    // ... with his own ClientState: then the state burst, then its echo to everyone.
    let own = state(S, "bob", 1, &["b"]);
    s.handle(now, peer(2), &own);
    let out = sent(&mut s);
    assert_eq!(out.len(), 4);
    assert_eq!(
        out[0],
        (
            2,
            state(S, "alice", 0, &["_x", "10", "9", "a", "b", "B"]),
            true
        )
    );
    assert_eq!(out[1], (2, state(S, "bob", 1, &[]), true));
    assert_eq!(out[2], (1, own.clone(), true));
    assert_eq!(out[3], (2, own.clone(), true));
    // A later ClientState is only echoed.
    s.handle(now, peer(2), &own);
    assert_eq!(sent(&mut s), [(1, own.clone(), true), (2, own, true)]);
}

#[test]
fn rehandshake_rules_of_8_0() {
    let now = Instant::now();
    let mut s = Server::new(Config::new(S));
    join(&mut s, now, 1, "alice");
    join(&mut s, now, 2, "bob");
    events(&mut s);
    // Same connection, same name: removed (RemoveClient to the others) and re-added.
    s.handle(now, peer(2), &hello("bob"));
    let out = sent(&mut s);
    let remove = enc(Message::RemoveClient(RemoveClient {
        session: S,
        client_id: 1,
    }));
    assert_eq!(out[0], (1, remove.clone(), true));
    assert_eq!(out[1].0, 2);
    assert_eq!(out[1].1[2], 5);
    assert!(matches!(
        events(&mut s)[0],
        Event::Left {
            id: 1,
            reason: LeaveReason::Rehandshake,
            ..
        }
    ));
    // Same name from a new connection: the old one is evicted, the new one gets the id.
    assert_eq!(join(&mut s, now, 3, "bob"), 1);
    assert_eq!(s.client_count(), 2);
    let peers: Vec<u16> = s.clients().map(|c| c.peer.port()).collect();
    assert_eq!(peers, [1, 3]);
    // The evicted connection no longer owns anything; what it sends gets the reset again
    // (at most once a second).
    let reset = enc(Message::ErrorWrongSession(ErrorWrongSession {
        session: S + 1,
    }));
    s.handle(now, peer(2), &state(S, "bob", 1, &["x"]));
    assert_eq!(sent(&mut s), [(2, reset, false)]);
    s.handle(now, peer(2), &state(S, "bob", 1, &["x"]));
    assert_eq!(sent(&mut s), []);
    assert_eq!(drop_reasons(&mut s), ["not_joined", "not_joined"]);
}

#[test]
fn a_takeover_tells_the_evicted_client_and_names_the_newcomer() {
    let now = Instant::now();
    let mut s = Server::new(Config::new(S));
    join(&mut s, now, 1, "alice");
    join(&mut s, now, 2, "bob");
    events(&mut s);
    s.handle(now, peer(3), &hello("bob"));
    let remove = enc(Message::RemoveClient(RemoveClient {
        session: S,
        client_id: 1,
    }));
    let reset = enc(Message::ErrorWrongSession(ErrorWrongSession {
        session: S + 1,
    }));
    let resp = enc(Message::HandshakeResponse(HandshakeResponse::modern(S, 1)));
    assert_eq!(
        sent(&mut s),
        [(1, remove, true), (2, reset, false), (3, resp, true)]
    );
    let ev = events(&mut s);
    assert!(
        matches!(&ev[0], Event::Left { id: 1, reason: LeaveReason::Replaced, by: Some(b), .. } if *b == peer(3)),
        "{ev:?}"
    );
    assert_eq!(s.stats().resets, 1);
    // The evicted client reconnects and takes its name back; the half-open usurper is
    // not told (it never showed it receives) and nobody hears a RemoveClient for it.
    s.handle(now, peer(2), &hello("bob"));
    let resp = enc(Message::HandshakeResponse(HandshakeResponse::modern(S, 1)));
    assert_eq!(sent(&mut s), [(2, resp, true)]);
}

#[test]
fn a_stranger_gets_one_answer_no_larger_than_what_it_sent() {
    let now = Instant::now();
    let mut s = Server::new(Config::new(S));
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        join(&mut s, now, 10 + i as u16, n);
        s.handle(now, peer(10 + i as u16), &state(S, n, i as u16, &["lobby"]));
    }
    sent(&mut s);
    // Handshakes from 50 fresh ports (one source network): 15 bytes each, nothing else.
    let h = hello("mallory");
    for port in 0..50 {
        s.handle(now, peer(1000 + port), &h);
        let out = sent(&mut s);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.len(), 15);
        assert!(out[0].1.len() <= h.len());
    }
    // Relays and deltas from half-open or unknown peers are not forwarded.
    let v = voice(0);
    s.handle(now, peer(1049), &relay(S, &[0, 1, 2], &v, false));
    assert_eq!(sent(&mut s), []);
    s.handle(now, peer(4000), &relay(S, &[0, 1, 2], &v, false));
    let reset = enc(Message::ErrorWrongSession(ErrorWrongSession {
        session: S + 1,
    }));
    assert_eq!(sent(&mut s), [(4000, reset, false)]);
    s.handle(
        now,
        peer(1049),
        &enc(Message::DeltaChannelState(DeltaChannelState {
            session: S,
            joined_raw: 1,
            peer: 52,
            name: WireStr::new("lobby"),
        })),
    );
    assert_eq!(sent(&mut s), []);
    // Relays to a half-open id go nowhere; the joined clients never heard of them.
    s.handle(now, peer(10), &relay(S, &[1, 40, 1, 1, 2], &v, false));
    assert_eq!(sent(&mut s), [(11, v.clone(), false), (12, v, false)]);
    assert_eq!(s.stats().relay_duplicate, 2);
    assert_eq!(s.stats().relay_unknown, 1);
    // Half-open clients are forgotten after --handshake-timeout, silently.
    s.handle_timeout(now + Duration::from_secs(10));
    assert_eq!(sent(&mut s), []);
    assert_eq!(s.client_count(), 3);
    let left = events(&mut s)
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Left {
                    reason: LeaveReason::HandshakeTimeout,
                    ..
                }
            )
        })
        .count();
    assert_eq!(left, 1, "the 50 handshakes shared one name");
}

#[test]
fn handshake_limits_per_network_name_length_and_half_open() {
    let now = Instant::now();
    let mut cfg = Config::new(S);
    cfg.prefix_burst = 3;
    cfg.prefix_per_sec = 1.0;
    cfg.max_half_open = 2;
    let mut s = Server::new(cfg);
    let v6 = |port, last: u16| SocketAddr::from(([0x2001, 0xdb8, 0, 1, 0, 0, 0, last], port));
    s.handle(now, peer(1), &hello("a"));
    s.handle(now, SocketAddr::from(([127, 0, 0, 2], 2)), &hello("b"));
    // Another /24: its own budget, but the half-open cap (2) is reached.
    s.handle(now, SocketAddr::from(([127, 0, 1, 1], 3)), &hello("c"));
    assert_eq!(sent(&mut s).len(), 2);
    s.handle(now, peer(1), &state(S, "a", 0, &[]));
    sent(&mut s);
    // The third handshake of 127.0.0.0/24 passes, the fourth (new port) does not.
    s.handle(now, peer(4), &hello("d"));
    s.handle(now, peer(5), &hello("e"));
    // IPv6: one /64 shares a budget whatever the interface id.
    for i in 0..4 {
        s.handle(now, v6(7, i), &hello(&format!("v{i}")));
    }
    let long = "x".repeat(MAX_REAL_NAME + 1);
    s.handle(now, peer(6), &hello(&long));
    s.handle(now, peer(6), &hello(&"x".repeat(MAX_REAL_NAME)));
    assert_eq!(
        drop_reasons(&mut s),
        [
            "half_open_full",
            "prefix_rate_limited",
            "half_open_full",
            "half_open_full",
            "half_open_full",
            "prefix_rate_limited",
            "name_too_long",
            "prefix_rate_limited"
        ]
    );
    let st = s.stats();
    assert_eq!(st.drops[DropReason::NotJoined.index()], 0);
    let counts: Vec<_> = st.drop_counts().collect();
    assert_eq!(
        counts,
        [
            ("prefix_rate_limited", 3),
            ("name_too_long", 1),
            ("half_open_full", 4)
        ]
    );
}

#[test]
fn wrong_session_gets_error_wrong_session_unreliably() {
    let now = Instant::now();
    let mut s = Server::new(Config::new(S));
    join(&mut s, now, 1, "alice");
    let mut bad = state(S + 1, "alice", 0, &[]);
    s.handle(now, peer(1), &bad);
    let ews = enc(Message::ErrorWrongSession(ErrorWrongSession { session: S }));
    assert_eq!(sent(&mut s), [(1, ews.clone(), false)]);
    // Even a truncated body: the session is read first.
    bad.truncate(8);
    s.handle(now, peer(9), &bad);
    assert_eq!(sent(&mut s), [(9, ews, false)]);
    assert_eq!(s.stats().wrong_session, 2);
    assert_eq!(s.client_count(), 1);
}

#[test]
fn relay_rules() {
    let now = Instant::now();
    let mut s = Server::new(Config::new(S));
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        join(&mut s, now, 10 + i as u16, n);
    }
    let v = voice(0);
    // Unknown ids skipped, 0xFFFF silently, source not excluded.
    s.handle(now, peer(10), &relay(S, &[0, 7, 0xFFFF, 2], &v, false));
    assert_eq!(
        sent(&mut s),
        [(10, v.clone(), false), (12, v.clone(), false)]
    );
    assert_eq!(s.stats().relay_unknown, 1);
    // Reliable relay forwards reliably; the inner session is not checked.
    let mut other = voice(0);
    other[3] = 0xEE;
    s.handle(now, peer(10), &relay(S, &[1], &other, true));
    assert_eq!(sent(&mut s), [(11, other, true)]);
    // HandshakeP2P and bad inner magic are refused.
    let p2p = enc(Message::HandshakeP2P(HandshakeP2P {
        session: S,
        peer_id: 0,
    }));
    s.handle(now, peer(10), &relay(S, &[1], &p2p, false));
    s.handle(now, peer(10), &relay(S, &[1], &[0xC7, 0x8B, 2, 0], false));
    s.handle(now, peer(10), &relay(S, &[1], &[0x8B], false));
    assert!(sent(&mut s).is_empty());
    let reasons = drop_reasons(&mut s);
    assert_eq!(reasons, ["relay_refused", "relay_refused", "malformed"]);
    // Each destination once, whatever the list says: fan-out never exceeds the clients.
    s.handle(now, peer(10), &relay(S, &[1; 255], &v, false));
    assert_eq!(sent(&mut s).len(), 1);
    assert_eq!(s.stats().relay_duplicate, 254);
}

#[test]
fn malformed_packets_are_dropped_and_the_session_survives() {
    let now = Instant::now();
    let mut s = Server::new(Config::new(S));
    join(&mut s, now, 1, "alice");
    join(&mut s, now, 2, "bob");
    let good = state(S, "alice", 0, &["lobby"]);
    for cut in 3..good.len() - 2 {
        s.handle(now, peer(1), &good[..cut]);
    }
    s.handle(now, peer(1), &[0x8B]);
    s.handle(now, peer(1), &[0x8B, 0xC7, 0x63]);
    s.handle(now, peer(1), &voice(0));
    // Cut right after the codec settings (no room list, or one stray byte) is a valid
    // ClientState for 9.0.8 readers: "no rooms", re-broadcast as is. Every other cut drops.
    let end = good.len() - 2 - (2 + "lobby".len());
    let expect: Vec<_> = [end, end + 1]
        .iter()
        .flat_map(|&n| [(1, good[..n].to_vec(), true), (2, good[..n].to_vec(), true)])
        .collect();
    assert_eq!(sent(&mut s), expect);
    assert_eq!(s.client_count(), 2);
    assert_eq!(s.session(), S);
    // The ClientState a real server would crash clients with: a null room.
    let mut null_room = state(S, "alice", 0, &["x"]);
    let n = null_room.len();
    // Room count 1, then the string prefix 0 (null) instead of `00 02 'x'`.
    null_room[n - 3..n - 1].copy_from_slice(&[0, 0]);
    null_room.truncate(n - 1);
    drop_reasons(&mut s);
    s.handle(now, peer(1), &null_room);
    assert!(sent(&mut s).is_empty());
    assert_eq!(drop_reasons(&mut s), ["null_room"]);
    // Another peer cannot rewrite alice's state.
    s.handle(now, peer(2), &state(S, "alice", 0, &["evil"]));
    s.handle(now, peer(1), &state(S, "mallory", 0, &["evil"]));
    assert!(sent(&mut s).is_empty());
    assert!(s.clients().all(|c| c.rooms.is_empty()));
}

#[test]
fn limits() {
    let now = Instant::now();
    let mut cfg = Config::new(S);
    cfg.max_clients = 2;
    cfg.max_packet = 100;
    cfg.handshake_burst = 2;
    let mut s = Server::new(cfg);
    join(&mut s, now, 1, "a");
    join(&mut s, now, 2, "b");
    s.handle(now, peer(3), &hello("c"));
    assert!(sent(&mut s).is_empty());
    s.handle(now, peer(3), &[0x8B; 101]);
    // Peer 1 re-handshakes twice in a burst of 2: the third is rate limited until a
    // token comes back one second later.
    s.handle(now, peer(1), &hello("a"));
    sent(&mut s);
    s.handle(now, peer(1), &hello("a"));
    assert!(sent(&mut s).is_empty());
    s.handle(now + Duration::from_secs(1), peer(1), &hello("a"));
    assert!(!sent(&mut s).is_empty());
    let reasons = drop_reasons(&mut s);
    assert_eq!(reasons, ["server_full", "too_large", "rate_limited"]);
}

#[test]
fn idle_timeout_removes_silent_clients_only_when_enabled() {
    let t0 = Instant::now();
    let mut s = Server::new(Config::new(S));
    join(&mut s, t0, 1, "a");
    s.handle_timeout(t0 + Duration::from_secs(3600));
    assert_eq!(s.client_count(), 1);

    let mut cfg = Config::new(S);
    cfg.idle_timeout = Some(Duration::from_secs(60));
    let mut s = Server::new(cfg);
    join(&mut s, t0, 1, "a");
    join(&mut s, t0, 2, "b");
    s.handle(
        t0 + Duration::from_secs(50),
        peer(2),
        &state(S, "b", 1, &[]),
    );
    sent(&mut s);
    s.handle_timeout(t0 + Duration::from_secs(61));
    let remove = enc(Message::RemoveClient(RemoveClient {
        session: S,
        client_id: 0,
    }));
    assert_eq!(sent(&mut s), [(2, remove, true)]);
    assert_eq!(s.client_count(), 1);
}

#[test]
fn random_sessions_are_real_ones() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    for _ in 0..10_000 {
        let s = random_session(&mut rng);
        assert!((1..0x7FFF_FFFF).contains(&s));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// Any bytes from any peer: no panic, the members and the session stay.
    #[test]
    fn any_bytes_never_panic_or_kick(
        datagrams in proptest::collection::vec(
            (0u16..4, proptest::collection::vec(any::<u8>(), 0..80), any::<u8>(), any::<u8>()),
            1..40)
    ) {
        let now = Instant::now();
        let mut s = Server::new(Config::new(S));
        join(&mut s, now, 1, "alice");
        join(&mut s, now, 2, "bob");
        let base = [state(S, "x", 3, &["r"]), relay(S, &[0, 1], &voice(3), false), hello("m")];
        for (kind, bytes, at, val) in datagrams {
            // Random bytes, or a valid packet of another peer with one byte changed.
            let mut d = match kind {
                0 => bytes,
                k => base[k as usize - 1].clone(),
            };
            if kind != 0 && !d.is_empty() {
                let i = at as usize % d.len();
                d[i] = val;
            }
            s.handle(now, peer(99), &d);
            while s.poll_transmit().is_some() {}
        }
        prop_assert_eq!(s.session(), S);
        let names: Vec<String> = s.clients().filter(|c| c.peer.port() < 3).map(|c| c.name.to_string()).collect();
        prop_assert_eq!(names, ["alice".to_string(), "bob".to_string()]);
    }
}

fn remove_client(id: u16) -> Vec<u8> {
    enc(Message::RemoveClient(RemoveClient {
        session: S,
        client_id: id,
    }))
}

#[test]
fn draining_refuses_handshakes_and_keeps_relaying() {
    let mut s = Server::new(Config::new(S));
    let t = Instant::now();
    join(&mut s, t, 1, "alice");
    join(&mut s, t, 2, "bob");
    sent(&mut s);
    events(&mut s);
    s.stop_accepting();
    assert!(!s.accepting());
    s.handle(t, peer(3), &hello("carol"));
    assert!(sent(&mut s).is_empty());
    assert_eq!(drop_reasons(&mut s), ["draining"]);
    // Voice between the clients already there still flows.
    s.handle(t, peer(1), &relay(S, &[1], &voice(0), false));
    assert_eq!(sent(&mut s), [(2, voice(0), false)]);
    assert_eq!(s.client_count(), 2);
    let st = s.stats();
    assert_eq!(st.drops[DropReason::Draining.index()], 1);
    assert_eq!(st.drops.iter().sum::<u64>(), st.dropped);
}

#[test]
fn close_all_says_goodbye_and_removes_everyone_in_id_order() {
    let mut s = Server::new(Config::new(S));
    let t = Instant::now();
    for (port, name) in [(1, "alice"), (2, "bob"), (3, "carol")] {
        join(&mut s, t, port, name);
    }
    sent(&mut s);
    events(&mut s);
    s.close_all();
    // Client 0 (alice) first: her goodbye, then RemoveClient(0) to bob and carol; then
    // bob's goodbye and RemoveClient(1) to carol; then carol's goodbye.
    assert_eq!(
        sent(&mut s),
        [
            (1, BYE.to_vec(), true),
            (2, remove_client(0), true),
            (3, remove_client(0), true),
            (2, BYE.to_vec(), true),
            (3, remove_client(1), true),
            (3, BYE.to_vec(), true),
        ]
    );
    let left: Vec<(u16, LeaveReason)> = events(&mut s)
        .into_iter()
        .filter_map(|e| match e {
            Event::Left { id, reason, .. } => Some((id, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        left,
        [
            (0, LeaveReason::Shutdown),
            (1, LeaveReason::Shutdown),
            (2, LeaveReason::Shutdown)
        ]
    );
    assert_eq!(s.client_count(), 0);
    assert!(!s.accepting());
}

#[test]
fn counts_by_kind_add_up_to_the_totals() {
    let mut s = Server::new(Config::new(S));
    let t = Instant::now();
    join(&mut s, t, 1, "alice");
    join(&mut s, t, 2, "bob");
    s.handle(t, peer(1), &relay(S, &[1], &voice(0), false));
    s.handle(t, peer(1), &[0, 1, 2]);
    s.handle(t, peer(1), &[0xC7, 0x8B, 4]);
    s.handle(t, peer(2), &BYE);
    sent(&mut s);
    let st = s.stats();
    let k = |name: &str| (0..KINDS).find(|&k| kind_name(k) == name).unwrap();
    assert_eq!(st.in_kinds.datagrams[k("HandshakeRequest")], 2);
    assert_eq!(st.in_kinds.datagrams[k("ServerRelayUnreliable")], 1);
    assert_eq!(st.in_kinds.datagrams[k("transport_control")], 2);
    assert_eq!(st.in_kinds.datagrams[k("other")], 1);
    assert_eq!(st.out_kinds.datagrams[k("HandshakeResponse")], 2);
    assert_eq!(st.out_kinds.datagrams[k("VoiceData")], 1);
    assert_eq!(st.out_kinds.datagrams[k("RemoveClient")], 1);
    for (by, n, b) in [
        (st.in_kinds, st.datagrams_in, st.bytes_in),
        (st.out_kinds, st.datagrams_out, st.bytes_out),
    ] {
        assert_eq!(by.datagrams.iter().sum::<u64>(), n);
        assert_eq!(by.bytes.iter().sum::<u64>(), b);
    }
}
