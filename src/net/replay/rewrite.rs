//! Captured ids → live ids: the session and every client id a packet carries (sender,
//! subject, player-channel recipients, relay destinations, the relayed packet inside),
//! re-encoded in the packet's own byte order.

use rustc_hash::FxHashMap;

use crate::codec::{ChannelType, Message, Packet, Seq};

/// Big enough for any packet (relays of up to 65 507-byte datagrams).
const BUF: usize = 1 << 17;

/// What the capture called each client and what the live server calls it.
#[derive(Debug, Clone, Default)]
pub struct IdMap {
    captured_session: Option<u32>,
    /// Captured id → name.
    names: FxHashMap<u16, String>,
    /// Name → live id.
    live: FxHashMap<String, u16>,
}

impl IdMap {
    pub fn new(captured_session: Option<u32>, names: FxHashMap<u16, String>) -> IdMap {
        IdMap {
            captured_session,
            names,
            live: FxHashMap::default(),
        }
    }

    /// The live server gave `name` the id `id`.
    pub fn learn(&mut self, name: &str, id: u16) {
        self.live.insert(name.to_string(), id);
    }

    /// The live id of captured id `id`; unknown ids (and 0xFFFF) stay as they are.
    pub fn id(&self, id: u16) -> u16 {
        self.names
            .get(&id)
            .and_then(|n| self.live.get(n))
            .copied()
            .unwrap_or(id)
    }

    /// The captured session this map translates from.
    pub fn captured_session(&self) -> Option<u32> {
        self.captured_session
    }

    /// `bytes` with the live session and ids, or `None` when it does not decode or
    /// re-encode (the caller then sends it as captured).
    pub fn rewrite(&self, bytes: &[u8], session: u32) -> Option<Vec<u8>> {
        let p = Packet::decode(bytes).ok()?;
        let mut out = self.rewrite_message(&p, session)?;
        out.extend_from_slice(p.trailing);
        Some(out)
    }

    fn rewrite_message(&self, p: &Packet<'_>, session: u32) -> Option<Vec<u8>> {
        let v = p.variant;
        let channels: Vec<_>;
        let destinations: Vec<u16>;
        let inner: Vec<u8>;
        let m = match &p.message {
            Message::ClientState(c) => {
                let mut c = *c;
                c.session = session;
                c.client_id = self.id(c.client_id);
                Message::ClientState(c)
            }
            Message::VoiceData(d) => {
                let mut d = *d;
                d.session = session;
                d.sender = self.id(d.sender);
                channels = d
                    .channels
                    .iter()
                    .map(|mut c| {
                        if c.bitfield.channel_type() == ChannelType::Player {
                            c.recipient = self.id(c.recipient);
                        }
                        c
                    })
                    .collect();
                d.channels = Seq::Items(&channels);
                Message::VoiceData(d)
            }
            Message::TextData(t) => {
                let mut t = *t;
                t.session = session;
                t.sender = self.id(t.sender);
                if t.recipient_type() == Some(ChannelType::Player) {
                    t.target = self.id(t.target);
                }
                Message::TextData(t)
            }
            Message::ServerRelayReliable(r) | Message::ServerRelayUnreliable(r) => {
                let mut r = *r;
                r.session = session;
                destinations = r.destinations.iter().map(|d| self.id(d)).collect();
                r.destinations = Seq::Items(&destinations);
                // The relayed packet is rewritten too; one that does not decode goes as is.
                inner = match r.inner() {
                    Ok(ip) => {
                        let mut b = self.rewrite_message(&ip, session)?;
                        b.extend_from_slice(ip.trailing);
                        b
                    }
                    Err(_) => r.payload.to_vec(),
                };
                r.payload = &inner;
                if matches!(p.message, Message::ServerRelayReliable(_)) {
                    Message::ServerRelayReliable(r)
                } else {
                    Message::ServerRelayUnreliable(r)
                }
            }
            Message::DeltaChannelState(d) => {
                let mut d = *d;
                d.session = session;
                d.peer = self.id(d.peer);
                Message::DeltaChannelState(d)
            }
            Message::RemoveClient(r) => {
                let mut r = *r;
                r.session = session;
                r.client_id = self.id(r.client_id);
                Message::RemoveClient(r)
            }
            Message::HandshakeP2P(h) => {
                let mut h = *h;
                h.session = session;
                h.peer_id = self.id(h.peer_id);
                Message::HandshakeP2P(h)
            }
            Message::ErrorWrongSession(e) => {
                let mut e = *e;
                e.session = session;
                Message::ErrorWrongSession(e)
            }
            Message::HandshakeRequest(_) | Message::HandshakeResponse(_) => p.message.clone(),
        };
        m.to_vec(v, BUF).ok()
    }
}
