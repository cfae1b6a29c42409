//! Direction rules (D020-D027): who may send which message, and what a relay may wrap.
//! The catalogue entries (id, severity, explanation) and the engine's checks side by side.

use crate::check::rules::{self, Rule, Severity};
use crate::check::{key, About, Ctx, Engine, CLIENT, SERVER};
use crate::codec::{Message, MessageType, ServerRelay, ALWAYS_SEND};

rules! {
    CLIENT_SENT_SERVER_TYPE = "D020" "client-sent-server-type" "direction" Error
        "Server-only message type sent by a client"
        "HandshakeResponse, ErrorWrongSession and RemoveClient are only ever sent by the server. Sent by a client (directly to a peer or to the server) they are either ignored (the server treats them as client-only) or, for ErrorWrongSession, make the receiving client shut down: nothing authenticates the sender (docs/protocol.md §10.3).";
    SERVER_SENT_CLIENT_TYPE = "D021" "server-sent-client-type" "direction" Error
        "Client-only message type sent by the server"
        "HandshakeRequest, ServerRelayReliable/Unreliable and HandshakeP2P are only sent by clients. Real clients treat 4, 7 and 8 as server-only (error log, ignore) and a HandshakeP2P from the server makes the client think the server's connection reaches another client.";
    IGNORED_BY_SERVER = "D022" "unwrapped-to-server" "direction" Error
        "VoiceData, TextData or HandshakeP2P sent to the server unwrapped"
        "The server does no routing: voice and text must reach it inside ServerRelayUnreliable/ServerRelayReliable with a destination list. Sent bare to the server they are logged as errors and dropped, so nobody hears or reads them.";
    VOICE_RELIABLE = "D023" "voice-in-reliable-relay" "direction" Warning
        "VoiceData inside ServerRelayReliable"
        "Voice should be relayed with ServerRelayUnreliable (type 8): the server forwards type 7 payloads on the reliable, ordered channel, where one lost datagram holds up all later voice (latency grows). Clients up to 6.1.0 had this bug.";
    TEXT_UNRELIABLE = "D024" "text-in-unreliable-relay" "direction" Error
        "TextData inside ServerRelayUnreliable"
        "Text should be relayed with ServerRelayReliable (type 7): the server forwards type 8 payloads unreliably, so a text message can be lost without anyone noticing.";
    RELAYED_P2P = "D025" "relayed-handshake-p2p" "direction" Error
        "HandshakeP2P wrapped in a relay"
        "HandshakeP2P says 'the connection this arrived on reaches client X'; it only makes sense directly between two peers. The server refuses to relay it (drops it with an error log), so the P2P introduction never happens.";
    RELAY_UNKNOWN_DEST = "D026" "relay-to-unknown-client" "direction" Warning
        "Relay to a client id not in the session"
        "A relay lists a destination id that is not (or no longer) a client of the session. The server skips it with a warning. The pseudo destination 0xFFFF (always-send, 9.0.2+) is not flagged. Usually the sender's peer table is stale (a RemoveClient it did not apply).";
    RELAY_SERVER_TYPE = "D027" "relay-wraps-server-type" "direction" Error
        "Relay wrapping something other than voice or text"
        "Relays are meant to carry VoiceData and TextData. The server forwards any other type unchanged (only HandshakeP2P is filtered, see D025), so a client can make the server deliver ClientState, RemoveClient or ErrorWrongSession (which makes the receiver shut down) to other clients.";
}

impl Engine {
    /// D020, D021, D022.
    pub(in crate::check) fn direction(&mut self, c: &Ctx<'_>, m: &Message<'_>) {
        let t = m.message_type();
        let session = m.session();
        let about = About {
            session,
            mark: Some((2, 1)),
            fold: Some(key((c.src, c.dst, t))),
            ..About::default()
        };
        // Sent to the server, a server-only type comes from a client even before that
        // client's handshake: servers do not talk to each other.
        if t.is_server_only_send() && (self.is(c.src, CLIENT) || self.is(c.dst, SERVER)) {
            self.report(rules::CLIENT_SENT_SERVER_TYPE, c, about, || {
                format!("{t} sent by client {} to {}", c.src, c.dst)
            });
        } else if matches!(
            t,
            MessageType::HandshakeRequest
                | MessageType::ServerRelayReliable
                | MessageType::ServerRelayUnreliable
                | MessageType::HandshakeP2P
        ) && self.is(c.src, SERVER)
        {
            self.report(rules::SERVER_SENT_CLIENT_TYPE, c, about, || {
                format!("{t} sent by server {} to {}", c.src, c.dst)
            });
        } else if matches!(
            t,
            MessageType::VoiceData | MessageType::TextData | MessageType::HandshakeP2P
        ) && self.is(c.dst, SERVER)
        {
            self.report(rules::IGNORED_BY_SERVER, c, about, || {
                format!("{t} sent to the server {} without a relay: dropped", c.dst)
            });
        }
    }

    /// Relay rules (D023-D027) and the rules of the wrapped packet.
    pub(in crate::check) fn relay(&mut self, c: &Ctx<'_>, t: MessageType, r: &ServerRelay<'_>) {
        // Where the payload starts in the packet (it borrows from the same bytes).
        let base = (r.payload.as_ptr() as usize)
            .checked_sub(c.bytes.as_ptr() as usize)
            .filter(|b| b + r.payload.len() <= c.bytes.len())
            .unwrap_or(0);
        let session = Some(r.session);
        for (i, dest) in r.destinations.iter().enumerate() {
            if dest == ALWAYS_SEND {
                continue;
            }
            let live = self
                .tracker
                .client(r.session, dest)
                .is_some_and(|k| k.left_ns.is_none());
            if !live {
                let about = About {
                    session,
                    client: Some(dest),
                    mark: Some((8 + 2 * i, 2)),
                    fold: Some(key((c.src, r.session, dest))),
                };
                self.report(rules::RELAY_UNKNOWN_DEST, c, about, || {
                    format!(
                        "{t} to id {dest}, not a client of session {} now",
                        r.session
                    )
                });
            }
        }
        let inner = match r.inner() {
            Ok(p) => p,
            Err(e) => {
                if !self.fatal_relay(c, r, base) {
                    self.decode_error(c, &e, base);
                }
                return;
            }
        };
        let it = inner.message_type();
        let about = About {
            session,
            mark: Some((base + 2, 1)),
            fold: Some(key((c.src, t, it))),
            ..About::default()
        };
        match (t, it) {
            (MessageType::ServerRelayReliable, MessageType::VoiceData) => {
                self.report(rules::VOICE_RELIABLE, c, about, || {
                    "VoiceData in ServerRelayReliable: forwarded on the reliable channel".into()
                })
            }
            (MessageType::ServerRelayUnreliable, MessageType::TextData) => {
                self.report(rules::TEXT_UNRELIABLE, c, about, || {
                    "TextData in ServerRelayUnreliable: forwarded unreliably, may be lost".into()
                })
            }
            (_, MessageType::HandshakeP2P) => self.report(rules::RELAYED_P2P, c, about, || {
                format!("HandshakeP2P in {t}: the server drops it")
            }),
            (_, MessageType::VoiceData | MessageType::TextData) => {}
            (_, other) => self.report(rules::RELAY_SERVER_TYPE, c, about, || {
                format!("{t} wraps {other}: the server forwards it unchanged")
            }),
        }
        if inner.message.session().is_some_and(|s| s != r.session) {
            let about = About {
                mark: Some((base + 3, 4)),
                fold: Some(key((c.src, inner.message.session()))),
                ..about
            };
            self.report(rules::WRONG_SESSION, c, about, || {
                format!(
                    "wrapped {it} has session {}, the relay {}",
                    inner.message.session().unwrap_or(0),
                    r.session
                )
            });
        }
        match &inner.message {
            Message::TextData(td) => self.text(c, td, base),
            Message::VoiceData(v) => self.voice(c, v, base),
            _ => {}
        }
    }
}
