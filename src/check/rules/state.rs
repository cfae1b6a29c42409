//! State rules (D030-D036): ClientState, DeltaChannelState, RemoveClient, names and rooms, text recipients.
//! The catalogue entries (id, severity, explanation) and the engine's checks side by side.

use crate::check::rules::{self, Rule, Severity};
use crate::check::{key, About, Ctx, Engine, CLIENT, SERVER};
use crate::codec::Message;
use crate::codec::{ClientState, DeltaChannelState, HandshakeRequest, RemoveClient};

rules! {
    STATE_MISMATCH = "D030" "client-state-mismatch" "state" Error
        "ClientState disagrees with the handshake of that address"
        "A client sent a ClientState whose client id or player name is not what its own HandshakeRequest asked for and HandshakeResponse assigned. The server trusts the id inside the packet, so this client overwrites another client's state (name, codec, rooms).";
    DELTA_UNKNOWN = "D031" "delta-for-unknown-client" "state" Warning
        "DeltaChannelState for an unknown client"
        "A room join or leave names a client id that never appeared in the session. The server re-broadcasts it to everyone anyway, then warns and stops; every client ignores it.";
    REMOVE_UNKNOWN = "D032" "remove-unknown-client" "state" Warning
        "RemoveClient for an unknown client"
        "The server removes a client id that was never part of the session in the capture. Clients ignore it; it usually means the server's table and the clients' tables disagree.";
    NULL_NAME = "D033" "null-name" "state" Error
        "Null room or player name"
        "A player name in HandshakeRequest/ClientState, or a room name in ClientState/DeltaChannelState, is the null string (length prefix 00 00). A null player name makes the server ignore the handshake or throw; a null room name makes every receiver throw when it joins the room (fatal), and the server re-broadcasts the packet before parsing it, so one bad packet knocks out every client.";
    TEXT_RECIPIENT_TYPE = "D034" "text-recipient-type" "state" Error
        "TextData recipient type other than 0 or 1"
        "The recipient-type byte of TextData must be 0 (room) or 1 (player). Any other value makes the receiving client throw (fatal disconnect), still in 9.0.9.";
    ROOM_COLLISION = "D035" "room-id-collision" "state" Warning
        "Two listened rooms with the same room id"
        "A client listens to two different room names whose 16-bit room ids (ToRoomId, docs/protocol.md §5) are equal. Up to 7.x this is a fatal error (Dictionary.Add throws), 9.0.0 ignores the second room, 9.0.9 merges them: listeners of one also hear the other.";
    NAME_REUSED = "D036" "player-name-reused" "state" Warning
        "Player name reused by a different address"
        "A HandshakeRequest from one address uses the player name of a client that is still connected from another address. The real server evicts the older client (without telling it), so two players with the same name knock each other out in turn. Player names must be unique.";
    NAME_TAKEN_OVER = "D037" "name-taken-over" "state" Error
        "Evicted client still talking: its name was taken over from another address"
        "After a HandshakeRequest from another address took over its player name (D036), the old client still sends to the server as if connected, instead of handshaking again. The real server evicted it without a word: its state, text and voice go nowhere, and nobody hears it. Either a second player uses the same name, or someone hijacked the name (one unauthenticated datagram is enough, docs/protocol.md §8.3). `dissonance serve` tells the evicted client with ErrorWrongSession(session + 1) so that it reconnects.";
}

impl Engine {
    /// D033 and D036 on a HandshakeRequest (and its codec, D044).
    pub(in crate::check) fn handshake_request(&mut self, c: &Ctx<'_>, h: &HandshakeRequest<'_>) {
        let len = c.bytes.len();
        self.mark_role(c.src, CLIENT);
        self.mark_role(c.dst, SERVER);
        let name = h.name.to_str_lossy().map(|s| s.into_owned());
        let a = self.addrs.entry(c.src).or_default();
        a.requests += 1;
        a.requested_name = name.clone();
        self.codec(c, h.codec, None, None, 3);
        match name {
            None => {
                let about = About {
                    mark: Some((12, 2)),
                    fold: Some(key(c.bytes)),
                    ..About::default()
                };
                self.report(rules::NULL_NAME, c, about, || {
                    "HandshakeRequest with a null player name: the server ignores it".into()
                });
            }
            Some(name) => {
                if let Some(&other) = self.names.get(&name) {
                    if other != c.src {
                        let about = About {
                            mark: Some((12, len - 12)),
                            fold: Some(key((c.src, other, &name))),
                            ..About::default()
                        };
                        self.report(rules::NAME_REUSED, c, about, || {
                            format!("player name \"{name}\" is still connected from {other}")
                        });
                        // Bounded: entries go when the old address talks again.
                        if self.taken_over.len() >= 65_536 {
                            self.taken_over.clear();
                        }
                        self.taken_over.insert(other, (name.clone(), c.src));
                    }
                }
                self.names.insert(name, c.src);
            }
        }
    }

    /// D037: a packet from an address whose name was taken over. A new HandshakeRequest
    /// is the client reconnecting (fine); anything else means it does not know.
    pub(in crate::check) fn still_talking(&mut self, c: &Ctx<'_>, m: &Message<'_>) {
        let Some((name, by)) = self.taken_over.remove(&c.src) else {
            return;
        };
        if matches!(m, Message::HandshakeRequest(_)) {
            return;
        }
        let about = About {
            fold: Some(key((c.src, &name))),
            ..About::default()
        };
        let t = m.message_type();
        self.report(rules::NAME_TAKEN_OVER, c, about, || {
            format!(
                "{t} from {}, whose player name \"{name}\" {by} took over: the server evicted it",
                c.src
            )
        });
    }

    /// D032: RemoveClient for a client never seen.
    pub(in crate::check) fn remove_client(&mut self, c: &Ctx<'_>, r: &RemoveClient) {
        // A client's forgery is D020's; D032 is about what the server removes.
        if self.sent_by_server(c) && self.tracker.client(r.session, r.client_id).is_none() {
            let about = About {
                session: Some(r.session),
                client: Some(r.client_id),
                mark: Some((7, 2)),
                fold: Some(key((r.session, r.client_id))),
            };
            self.report(rules::REMOVE_UNKNOWN, c, about, || {
                format!(
                    "RemoveClient for id {}, never a client of session {}",
                    r.client_id, r.session
                )
            });
        }
    }

    /// D030 (and the codec, rooms) on a ClientState.
    pub(in crate::check) fn client_state(&mut self, c: &Ctx<'_>, s: &ClientState<'_>) {
        let to_server = self.is(c.dst, SERVER) || self.is(c.src, CLIENT);
        if to_server {
            let a = self.addrs.get(&c.src);
            let assigned = a.and_then(|a| a.assigned);
            let requested = a.and_then(|a| a.requested_name.clone());
            let name = s.name.to_string();
            let name_end = 9 + s.name.as_bytes().map_or(0, |b| b.len());
            let mut wrong = Vec::new();
            let mut mark = None;
            if let Some((sess, id)) = assigned {
                if sess == s.session && id != s.client_id {
                    wrong.push(format!("client id {} (assigned {id})", s.client_id));
                    mark = Some((name_end, 2));
                }
            }
            if let Some(req) = requested.filter(|r| *r != name) {
                wrong.push(format!("name \"{name}\" (handshake \"{req}\")"));
                mark = Some((7, name_end - 7));
            }
            if !wrong.is_empty() {
                let about = About {
                    session: Some(s.session),
                    client: assigned.map(|(_, id)| id),
                    mark,
                    fold: Some(key(c.bytes)),
                };
                self.report(rules::STATE_MISMATCH, c, about, || {
                    format!("ClientState from {} carries {}", c.src, wrong.join(" and "))
                });
            }
        }
        let codec_at = 11 + s.name.as_bytes().map_or(0, |b| b.len());
        self.codec(c, s.codec, Some(s.session), Some(s.client_id), codec_at);
        self.client_state_rooms(c, s);
    }

    /// D031 and D035 on a DeltaChannelState.
    pub(in crate::check) fn delta_channel_state(
        &mut self,
        c: &Ctx<'_>,
        dc: &DeltaChannelState<'_>,
    ) {
        let len = c.bytes.len();
        let about = About {
            session: Some(dc.session),
            client: Some(dc.peer),
            mark: Some((8, 2)),
            fold: Some(key(c.bytes)),
        };
        let rec = self.tracker.client(dc.session, dc.peer);
        let name = dc.name.to_string();
        let id = dc.name.room_id();
        let clash = rec.filter(|_| dc.joined()).and_then(|rec| {
            rec.rooms
                .iter()
                .find(|r| **r != name && crate::codec::room_id(r) == id)
                .cloned()
        });
        if rec.is_none() {
            self.report(rules::DELTA_UNKNOWN, c, about, || {
                format!(
                    "DeltaChannelState ({} \"{name}\") for id {}, not a client of session {}",
                    if dc.joined() { "join" } else { "leave" },
                    dc.peer,
                    dc.session
                )
            });
        } else if let Some(other) = clash {
            let about = About {
                mark: Some((10, len - 10)),
                ..about
            };
            self.report(
                rules::ROOM_COLLISION,
                c,
                about,
                || format!(
                    "joins \"{name}\" while listening to \"{other}\": both are room id {id} (0x{id:04X})"
                ),
            );
        }
    }

    /// D033 (null room in the list) and D035 (two rooms with one id) in a ClientState.
    pub(in crate::check) fn client_state_rooms(
        &mut self,
        c: &Ctx<'_>,
        s: &crate::codec::ClientState<'_>,
    ) {
        let mut seen: Vec<(u16, String)> = Vec::new();
        let about = About {
            session: Some(s.session),
            client: Some(s.client_id),
            fold: Some(key(c.bytes)),
            ..About::default()
        };
        for (i, r) in s.rooms.iter().enumerate() {
            match r.to_str_lossy() {
                None => {
                    self.report(
                        rules::NULL_NAME,
                        c,
                        About {
                            mark: room_mark(c.bytes, s, i),
                            ..about
                        },
                        || {
                            format!(
                                "ClientState room {i} is null: every receiver throws joining it"
                            )
                        },
                    );
                }
                Some(name) => {
                    let id = crate::codec::room_id(&name);
                    if let Some((_, other)) = seen.iter().find(|(o, n)| *o == id && *n != *name) {
                        let msg = format!(
                            "listens to \"{other}\" and \"{name}\": both are room id {id} (0x{id:04X})"
                        );
                        self.report(
                            rules::ROOM_COLLISION,
                            c,
                            About {
                                mark: room_mark(c.bytes, s, i),
                                ..about
                            },
                            || msg,
                        );
                    }
                    seen.push((id, name.into_owned()));
                }
            }
        }
    }

    /// TextData rules; `base` is its offset inside the packet (a relay payload).
    pub(in crate::check) fn text(
        &mut self,
        c: &Ctx<'_>,
        t: &crate::codec::TextData<'_>,
        base: usize,
    ) {
        if t.recipient_type().is_none() {
            let about = About {
                session: Some(t.session),
                client: Some(t.sender),
                mark: Some((base + 7, 1)),
                fold: Some(key(&c.bytes[base..])),
            };
            self.report(rules::TEXT_RECIPIENT_TYPE, c, about, || {
                format!(
                    "TextData recipient type {} (0 room, 1 player): the receiver throws",
                    t.recipient_type_byte
                )
            });
        }
    }
}

/// Byte range of room `index`'s length prefix in a ClientState.
fn room_mark(
    bytes: &[u8],
    s: &crate::codec::ClientState<'_>,
    index: usize,
) -> Option<(usize, usize)> {
    let mut at = 7 + 2 + s.name.as_bytes().map_or(0, |b| b.len()) + 2 + 9 + 2;
    for r in s.rooms.iter().take(index) {
        at += 2 + r.as_bytes().map_or(0, |b| b.len());
    }
    (at + 2 <= bytes.len()).then_some((at, 2))
}
