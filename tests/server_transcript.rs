//! Interop with the real Dissonance 9.0.8 server: the transcript of a real server and three
//! real clients (tests/data/vectors/transcript_scenario.jsonl, see tests/data/README.md).
//! Our server core gets the real server's `recv` datagrams in order, from the same peers,
//! with the same session; everything it sends must be byte-identical to the real server's
//! `send` lines: same bytes, same peer, same channel, same order, nothing more — with one
//! documented difference: the ClientState burst the real server sends right after a
//! HandshakeResponse, ours holds until the client's own ClientState arrives (the proof that
//! it receives at its address), and sends just before echoing that ClientState.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dissonance_tools::dissect::locate::BYE;
use dissonance_tools::net::server::{Config, Event, LeaveReason, Server};
use dissonance_tools::output::hex;
use serde_json::Value;

const TRANSCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/vectors/transcript_scenario.jsonl"
);

#[derive(Debug, PartialEq, Eq)]
struct Sent {
    peer: SocketAddr,
    hex: String,
    reliable: bool,
}

fn drain(server: &mut Server, out: &mut Vec<Sent>) {
    while let Some(t) = server.poll_transmit() {
        out.push(Sent {
            peer: t.peer,
            hex: hex::Hex(t.bytes).to_string(),
            reliable: t.reliable,
        });
    }
}

#[test]
fn real_server_transcript_is_reproduced_byte_for_byte() {
    let text = std::fs::read_to_string(TRANSCRIPT).expect("transcript file");
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let start = &events[0];
    assert_eq!(start["event"], "start");
    let session = start["session"].as_u64().unwrap() as u32;
    assert_eq!(session, 0x1234_5678);

    let mut server = Server::new(Config::new(session));
    let t0 = Instant::now();
    let mut expected = Vec::new();
    let mut actual = Vec::new();
    let mut recvs = 0;
    let mut server_events = Vec::new();
    // The real server's state bursts, held until the client's own ClientState.
    let mut held: HashMap<SocketAddr, Vec<Sent>> = HashMap::new();
    let mut moved = 0;
    // The type and peer of the datagram the server is answering.
    let mut answering: Option<(u8, SocketAddr)> = None;
    for (i, e) in events.iter().enumerate() {
        if e["role"] != "server" {
            continue;
        }
        let now = t0 + Duration::from_millis(i as u64);
        match e["event"].as_str().unwrap() {
            "recv" => {
                let peer: SocketAddr = e["peer"].as_str().unwrap().parse().unwrap();
                let bytes = hex::parse(e["hex"].as_str().unwrap()).unwrap();
                answering = Some((bytes[2], peer));
                if bytes[2] == 1 {
                    if let Some(burst) = held.remove(&peer) {
                        expected.extend(burst);
                    }
                }
                server.handle(now, peer, &bytes);
                drain(&mut server, &mut actual);
                recvs += 1;
            }
            // The plain UDP transport reports a lost connection as the goodbye datagram.
            "transport_disconnect" => {
                let peer: SocketAddr = e["peer"].as_str().unwrap().parse().unwrap();
                server.handle(now, peer, &BYE);
                drain(&mut server, &mut actual);
            }
            "send" => {
                let sent = Sent {
                    peer: e["peer"].as_str().unwrap().parse().unwrap(),
                    hex: e["hex"].as_str().unwrap().to_string(),
                    reliable: e["reliable"].as_bool().unwrap(),
                };
                // A ClientState (type 01) to the peer whose HandshakeRequest (04) this is.
                if answering == Some((4, sent.peer)) && sent.hex[4..6] == *"01" {
                    held.entry(sent.peer).or_default().push(sent);
                    moved += 1;
                } else {
                    expected.push(sent);
                }
            }
            _ => {}
        }
        while let Some(ev) = server.poll_event() {
            server_events.push(ev);
        }
    }
    assert_eq!(recvs, 19);
    assert!(held.is_empty(), "every client sent its ClientState");
    assert_eq!(moved, 6, "alice's burst of 1, bob's of 2, carol's of 3");
    assert_eq!(expected.len(), 43);
    for (i, (a, b)) in actual.iter().zip(&expected).enumerate() {
        assert_eq!(a, b, "send #{i} differs");
    }
    assert_eq!(actual.len(), expected.len());

    // Nothing was dropped, and joins/rooms/leaves match the real server's own events.
    assert!(
        !server_events
            .iter()
            .any(|e| matches!(e, Event::Dropped { .. })),
        "{server_events:?}"
    );
    let summary: Vec<String> = server_events
        .iter()
        .filter_map(|e| match e {
            Event::Joined { name, .. } => Some(format!("ClientJoined {name}")),
            Event::RoomJoined { name, room, .. } => {
                Some(format!("ClientEnteredRoom {name} {room}"))
            }
            Event::RoomLeft { name, room, .. } => Some(format!("ClientExitedRoom {name} {room}")),
            Event::Left {
                name,
                reason: LeaveReason::Goodbye,
                ..
            } => Some(format!("ClientLeft {name}")),
            _ => None,
        })
        .collect();
    let real: Vec<String> = events
        .iter()
        .filter(|e| e["role"] == "server")
        .filter_map(|e| {
            let ev = e["event"].as_str().unwrap();
            let player = e["player"].as_str().unwrap_or("");
            match ev {
                "ClientJoined" | "ClientLeft" => Some(format!("{ev} {player}")),
                "ClientEnteredRoom" | "ClientExitedRoom" => {
                    Some(format!("{ev} {player} {}", e["room"].as_str().unwrap()))
                }
                _ => None,
            }
        })
        // The real server reports the rooms a leaving client was in; we put them in Left.
        .filter(|s| !s.starts_with("ClientExitedRoom carol"))
        .collect();
    assert_eq!(summary, real);
    assert_eq!(server.client_count(), 2);
    let left: Vec<_> = server
        .clients()
        .map(|c| (c.id, c.name.to_string()))
        .collect();
    assert_eq!(left, [(0, "alice".to_string()), (1, "bob".to_string())]);
}
