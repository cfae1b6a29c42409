//! Session reconstruction: a sans-IO state machine fed with decoded packets, their
//! addresses and capture timestamps. It learns sessions, clients (id, name, codec,
//! address), rooms, who listens to which room over time, which addresses are servers,
//! and whether voice went peer-to-peer or through the server's relay.
//!
//! Every real message appears several times in a capture (a ClientState is echoed by the
//! server to every client, a voice frame is relayed and then forwarded once per listener),
//! so every update is idempotent: state changes, and events, happen once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use crate::codec::{
    CodecSettings, DecodeError, DecodeErrorKind, Message, MessageType, Packet, WireStr,
};

/// Who sent a packet to whom, as far as the tracker can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
    /// Directly between two clients (P2P voice, text or HandshakeP2P).
    PeerToPeer,
    Unknown,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::ClientToServer => "client_to_server",
            Direction::ServerToClient => "server_to_client",
            Direction::PeerToPeer => "peer_to_peer",
            Direction::Unknown => "unknown",
        }
    }
    /// A short arrow for text output.
    pub fn arrow(self) -> &'static str {
        match self {
            Direction::ClientToServer => "C->S",
            Direction::ServerToClient => "S->C",
            Direction::PeerToPeer => "P2P ",
            Direction::Unknown => " ?  ",
        }
    }
}

/// Something the tracker learned, in capture order.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// First packet of a session id.
    SessionStarted {
        ts_ns: i64,
        session: u32,
        server: Option<SocketAddr>,
    },
    /// A client got its id (HandshakeResponse, or first ClientState naming it).
    ClientJoined {
        ts_ns: i64,
        session: u32,
        client_id: u16,
        name: String,
        addr: Option<SocketAddr>,
    },
    /// A client started listening to a room.
    RoomJoined {
        ts_ns: i64,
        session: u32,
        client_id: u16,
        room: String,
    },
    /// A client stopped listening to a room.
    RoomLeft {
        ts_ns: i64,
        session: u32,
        client_id: u16,
        room: String,
    },
    /// A client left: `removed` (RemoveClient), `goodbye` (its transport goodbye),
    /// `replaced` (its id went to another name), `server_restarted` (the server's
    /// restart dropped it: it did not leave on purpose).
    ClientLeft {
        ts_ns: i64,
        session: u32,
        client_id: u16,
        reason: &'static str,
    },
    /// The server at `server` handed out a new session: it restarted, and every client
    /// of the old session was dropped. `cause` is the packet that most likely made it
    /// restart (one the real server's reader throws on, sent to it shortly before).
    ServerRestarted {
        ts_ns: i64,
        server: SocketAddr,
        old_session: u32,
        new_session: u32,
        cause: Option<FatalPacket>,
    },
}

/// A packet sent to a server whose real reader throws on it, which restarts the real
/// server (docs/protocol.md §10.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FatalPacket {
    /// Capture frame number.
    pub number: u64,
    pub ts_ns: i64,
    pub src: SocketAddr,
}

/// Why the real server's reader throws on a payload sent to it, if it does
/// (docs/protocol.md §8, §10.2): under 3 bytes (the header read runs past the end), or a
/// ClientState, DeltaChannelState, relay or HandshakeRequest that runs past its end or
/// holds a null name where the reader requires one. Not fatal: a wrong magic or unknown
/// type (dropped), a client-only type (dropped unread), a wrong session (dropped before
/// the body is read: `session` is the server's current one, when known), a null name in
/// a HandshakeRequest (ignored).
pub fn fatal_to_server(
    bytes: &[u8],
    err: Option<&DecodeError>,
    session: Option<u32>,
) -> Option<&'static str> {
    if bytes.len() < 3 {
        // Two bytes of wrong magic are dropped before the type is read.
        let bad_magic = bytes.len() == 2 && !crate::codec::has_magic(bytes);
        return (!bad_magic).then_some(if bytes.is_empty() {
            "empty datagram"
        } else {
            "datagram under 3 bytes"
        });
    }
    let e = err?;
    let parsed = matches!(
        e.message,
        Some(
            MessageType::ClientState
                | MessageType::DeltaChannelState
                | MessageType::ServerRelayReliable
                | MessageType::ServerRelayUnreliable
                | MessageType::HandshakeRequest
        )
    );
    if !parsed {
        return None;
    }
    let stale = e.message != Some(MessageType::HandshakeRequest)
        && bytes
            .get(3..7)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .zip(session)
            .is_some_and(|(packet, current)| packet != current && e.offset >= 7);
    match e.kind {
        _ if stale => None,
        DecodeErrorKind::Truncated { .. } => Some("runs past its end"),
        DecodeErrorKind::NullString { .. } if e.message != Some(MessageType::HandshakeRequest) => {
            Some("null name")
        }
        _ => None,
    }
}

/// A fatal packet counts as a restart's cause while the server shows no sign of having
/// survived it: a well-formed packet of its own (other than RemoveClient) this long after
/// it clears it. Longer than the server takes to send what it read before the bad packet.
const SURVIVED_NS: i64 = 100_000_000;

impl SessionEvent {
    pub fn session(&self) -> u32 {
        match self {
            SessionEvent::SessionStarted { session, .. }
            | SessionEvent::ClientJoined { session, .. }
            | SessionEvent::RoomJoined { session, .. }
            | SessionEvent::RoomLeft { session, .. }
            | SessionEvent::ClientLeft { session, .. } => *session,
            SessionEvent::ServerRestarted { new_session, .. } => *new_session,
        }
    }
}

/// What the tracker knows about one client of one session.
#[derive(Debug, Clone, Default)]
pub struct ClientRecord {
    pub session: u32,
    pub id: u16,
    pub name: String,
    pub codec: Option<CodecSettings>,
    pub addr: Option<SocketAddr>,
    pub joined_ns: Option<i64>,
    pub left_ns: Option<i64>,
    /// Rooms the client listens to now.
    pub rooms: BTreeSet<String>,
    pub stats: ClientStats,
}

/// Per-client counters for `dump --summary`.
#[derive(Debug, Clone, Default)]
pub struct ClientStats {
    /// Packets sent from this client's address, by message type.
    pub sent_by_type: crate::codec::TypeCounts,
    pub bytes_sent: u64,
    /// Distinct voice frames this client spoke.
    pub voice_frames: u64,
    /// Voice packets that went directly to a peer / through the server relay.
    pub voice_p2p: u64,
    pub voice_relayed: u64,
    pub texts: u64,
    voice_window: SeqWindow,
}

impl ClientStats {
    /// Seconds of speech: distinct frames × frame duration.
    pub fn speech_seconds(&self, codec: Option<CodecSettings>) -> f64 {
        let ms = codec.and_then(|c| c.frame_ms()).unwrap_or(20.0);
        self.voice_frames as f64 * ms / 1000.0
    }
}

/// Remembers which of the most recent 64 sequence numbers were seen, so each frame
/// counts once in constant memory however long the capture.
#[derive(Debug, Clone, Default)]
struct SeqWindow {
    top: Option<u16>,
    bits: u64,
}

impl SeqWindow {
    /// True if `seq` is new.
    fn insert(&mut self, seq: u16) -> bool {
        let Some(top) = self.top else {
            self.top = Some(seq);
            self.bits = 1;
            return true;
        };
        let d = seq.wrapping_sub(top) as i16;
        if d > 0 {
            self.bits = if d >= 64 { 0 } else { self.bits << d };
            self.bits |= 1;
            self.top = Some(seq);
            true
        } else {
            let back = (-(d as i32)) as u32;
            if back >= 64 {
                return false; // too old to tell: treat as seen
            }
            let new = self.bits & (1 << back) == 0;
            self.bits |= 1 << back;
            new
        }
    }
}

/// One session id seen in the capture.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: u32,
    pub first_ns: i64,
    pub last_ns: i64,
    pub server: Option<SocketAddr>,
    pub packets: u64,
}

/// A membership change, kept for the summary's "who listened when".
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipChange {
    pub ts_ns: i64,
    pub session: u32,
    pub client_id: u16,
    pub room: String,
    pub joined: bool,
}

/// The session tracker.
#[derive(Debug, Default)]
pub struct Tracker {
    sessions: BTreeMap<u32, SessionRecord>,
    clients: BTreeMap<(u32, u16), ClientRecord>,
    rooms: BTreeMap<u16, String>,
    servers: rustc_hash::FxHashSet<SocketAddr>,
    /// Servers that answered a HandshakeRequest with a HandshakeResponse: no later
    /// packet makes them anything else.
    confirmed: rustc_hash::FxHashSet<SocketAddr>,
    /// Addresses that sent a HandshakeRequest: a client, whatever types it sends later.
    requesters: rustc_hash::FxHashSet<SocketAddr>,
    /// The session each server last handed out in a HandshakeResponse.
    server_sessions: rustc_hash::FxHashMap<SocketAddr, u32>,
    /// The latest packet sent to each server that the real server's reader throws on.
    fatal: rustc_hash::FxHashMap<SocketAddr, FatalPacket>,
    /// Restarts seen: new session → old session.
    restarts: rustc_hash::FxHashMap<u32, u32>,
    last_inner: Option<MessageType>,
    /// The first server address seen (also in `servers`).
    first_server: Option<SocketAddr>,
    // Looked up for every packet: a fast non-cryptographic hash.
    client_addrs: rustc_hash::FxHashMap<SocketAddr, (u32, u16)>,
    /// The last lookup in `client_addrs` (cleared when it changes).
    addr_cache: Option<(SocketAddr, Option<(u32, u16)>)>,
    /// Unanswered HandshakeRequests by sender: name, codec, and where it was sent.
    pending: rustc_hash::FxHashMap<SocketAddr, (String, CodecSettings, SocketAddr)>,
    /// Bumped whenever a client or room name is learnt, so printers that format on
    /// other threads know when to take a new [`NameTable`] snapshot.
    names_gen: u64,
    /// The names, kept up to date: a snapshot is this Arc (shared strings), and a change
    /// while snapshots are held copies the maps' pointers, never the names.
    name_table: std::sync::Arc<NameTable>,
    history: Vec<MembershipChange>,
    events: VecDeque<SessionEvent>,
    /// The session the most recently seen server handed out (for "stale session" checks).
    pub current_session: Option<u32>,
    /// Skip the per-client statistics ([`ClientStats`]) and relayed voice: for users
    /// that only need the session's membership and names (`check`), two thirds of the
    /// tracker's instructions on a voice-heavy capture.
    no_stats: bool,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// A tracker that keeps sessions, clients, names, rooms and events, but no
    /// per-client statistics (every [`ClientStats`] stays zero).
    pub fn without_stats() -> Tracker {
        Tracker {
            no_stats: true,
            ..Tracker::default()
        }
    }

    /// Feeds one decoded packet; returns its inferred direction. Events it caused are
    /// queued for [`Tracker::poll_event`].
    pub fn observe(
        &mut self,
        ts_ns: i64,
        src: SocketAddr,
        dst: SocketAddr,
        packet: &Packet<'_>,
    ) -> Direction {
        self.last_inner = None;
        self.observe_message(ts_ns, src, dst, &packet.message, None)
    }

    /// The type of the packet wrapped in the relay last given to [`Tracker::observe`]
    /// (None if it was no relay or its payload did not decode): saves callers a decode.
    pub fn last_relayed_type(&self) -> Option<MessageType> {
        self.last_inner
    }

    /// The transport-level goodbye of the plain UDP transport (`00 42 59 45`) from `src`.
    pub fn observe_bye(&mut self, ts_ns: i64, src: SocketAddr) {
        if let Some(&(session, id)) = self.client_addrs.get(&src) {
            self.client_left(ts_ns, session, id, "goodbye");
        }
    }

    /// Bytes that did not decode, frame `number`: a malformed packet (`bytes` from its
    /// first byte, `err` its decode error), or a datagram on a Dissonance flow in which
    /// no packet was found (`err` None; an empty one included). Changes no state but one:
    /// sent to a server whose real reader throws on it, it is remembered as the likely
    /// cause of a restart that follows. Returns its direction.
    pub fn observe_undecoded(
        &mut self,
        ts_ns: i64,
        number: u64,
        src: SocketAddr,
        dst: SocketAddr,
        bytes: &[u8],
        err: Option<&DecodeError>,
    ) -> Direction {
        let direction = self.direction(src, dst);
        let session = self.server_sessions.get(&dst).copied();
        if direction == Direction::ClientToServer && fatal_to_server(bytes, err, session).is_some()
        {
            self.fatal.insert(dst, FatalPacket { number, ts_ns, src });
        }
        direction
    }

    /// The session `session` replaced when its server restarted, if it did.
    pub fn restarted_from(&self, session: u32) -> Option<u32> {
        self.restarts.get(&session).copied()
    }

    /// A game stack's disconnect between `src` and `dst`: whichever is a client left.
    pub fn observe_transport_disconnect(&mut self, ts_ns: i64, src: SocketAddr, dst: SocketAddr) {
        for a in [src, dst] {
            if let Some(&(session, id)) = self.client_addrs.get(&a) {
                self.client_left(ts_ns, session, id, "transport_disconnect");
                return;
            }
        }
    }

    /// Changes whenever [`Tracker::name_table`] would return something new.
    pub fn names_generation(&self) -> u64 {
        self.names_gen
    }

    /// A copy of every client and room name known so far (for formatting elsewhere).
    /// A snapshot of the names known now (cheap: shared with the tracker until a name
    /// is learnt).
    pub fn name_table(&self) -> std::sync::Arc<NameTable> {
        self.name_table.clone()
    }

    #[inline]
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Events are queued for [`Tracker::poll_event`].
    #[inline]
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Names for one session's ids, for the printers.
    pub fn names(&self, session: Option<u32>) -> SessionNames<'_> {
        SessionNames {
            tracker: self,
            session,
        }
    }

    pub fn sessions(&self) -> impl Iterator<Item = &SessionRecord> {
        self.sessions.values()
    }
    pub fn clients(&self) -> impl Iterator<Item = &ClientRecord> {
        self.clients.values()
    }
    pub fn client(&self, session: u32, id: u16) -> Option<&ClientRecord> {
        self.clients.get(&(session, id))
    }
    /// The client a given address belongs to.
    pub fn client_at(&self, addr: SocketAddr) -> Option<&ClientRecord> {
        self.client_addrs
            .get(&addr)
            .and_then(|k| self.clients.get(k))
    }
    /// Rooms by id, with the name that produced the id.
    pub fn rooms(&self) -> &BTreeMap<u16, String> {
        &self.rooms
    }
    pub fn is_server(&self, addr: SocketAddr) -> bool {
        self.server_addr(addr)
    }

    /// `servers.contains(addr)`, asked several times per packet: the usual capture has
    /// one server, `first_server` (which is always in `servers`), so a compare.
    #[inline]
    fn server_addr(&self, addr: SocketAddr) -> bool {
        match (self.servers.len(), self.first_server) {
            (0, _) => false,
            (1, Some(server)) => addr == server,
            _ => self.servers.contains(&addr),
        }
    }
    pub fn servers(&self) -> impl Iterator<Item = &SocketAddr> {
        self.servers.iter()
    }
    /// Every room join and leave, in capture order.
    pub fn membership_history(&self) -> &[MembershipChange] {
        &self.history
    }
    /// Who listened to `room` at `ts_ns`, from the history.
    pub fn listeners_at(&self, session: u32, room: &str, ts_ns: i64) -> BTreeSet<u16> {
        let mut set = BTreeSet::new();
        for c in self.history.iter().take_while(|c| c.ts_ns <= ts_ns) {
            if c.session == session && c.room == room {
                if c.joined {
                    set.insert(c.client_id);
                } else {
                    set.remove(&c.client_id);
                }
            }
        }
        set
    }

    #[inline]
    fn direction(&self, src: SocketAddr, dst: SocketAddr) -> Direction {
        // The usual capture has one server: two compares instead of two lookups.
        if let (1, Some(server)) = (self.servers.len(), self.first_server) {
            if src == server {
                return Direction::ServerToClient;
            } else if dst == server {
                return Direction::ClientToServer;
            }
        }
        self.direction_by_lookup(src, dst)
    }

    fn direction_by_lookup(&self, src: SocketAddr, dst: SocketAddr) -> Direction {
        if self.servers.contains(&src) {
            Direction::ServerToClient
        } else if self.servers.contains(&dst) {
            Direction::ClientToServer
        } else if self.client_addrs.contains_key(&src) && self.client_addrs.contains_key(&dst) {
            Direction::PeerToPeer
        } else {
            Direction::Unknown
        }
    }

    /// `client_addrs[addr]`, remembering the last answer: the pipeline asks about the
    /// same sender twice per datagram (message counts, then bytes).
    fn client_key_at(&mut self, addr: SocketAddr) -> Option<(u32, u16)> {
        match self.addr_cache {
            Some((a, key)) if a == addr => key,
            _ => {
                let key = self.client_addrs.get(&addr).copied();
                self.addr_cache = Some((addr, key));
                key
            }
        }
    }

    fn add_server(&mut self, addr: SocketAddr) {
        if self.first_server != Some(addr) {
            self.servers.insert(addr);
            self.first_server.get_or_insert(addr);
        }
    }

    /// An address known to be a client: it asked for a handshake, or got a client id.
    fn is_client_addr(&self, addr: SocketAddr) -> bool {
        self.requesters.contains(&addr) || self.client_addrs.contains_key(&addr)
    }

    /// Learns who is the server from one (outer) packet. The server is the address that
    /// answers HandshakeRequests; message types only tell roles that no handshake has
    /// settled, so a client sending server-only types (a forged ErrorWrongSession or
    /// RemoveClient) stays a client, and the real server stays the server whatever a
    /// relay makes it forward.
    fn learn_roles(&mut self, t: MessageType, src: SocketAddr, dst: SocketAddr) {
        match t {
            MessageType::HandshakeRequest
            | MessageType::ServerRelayReliable
            | MessageType::ServerRelayUnreliable => {
                if self.server_addr(src) && !self.requesters.contains(&src) {
                    if self.confirmed.contains(&src) {
                        return; // the server forwarding a relay's payload
                    }
                    // Only inferred from types: a handshake request settles it.
                    if t == MessageType::HandshakeRequest {
                        self.demote(src);
                    } else {
                        return;
                    }
                }
                if t == MessageType::HandshakeRequest {
                    self.requesters.insert(src);
                }
                // (Already the first server: nothing to add, whatever else it is.)
                if self.first_server != Some(dst) && !self.is_client_addr(dst) {
                    self.add_server(dst);
                }
            }
            MessageType::HandshakeResponse
                if self.pending.get(&dst).is_some_and(|p| p.2 == src) =>
            {
                self.add_server(src);
                self.confirmed.insert(src);
            }
            MessageType::HandshakeResponse
            | MessageType::ErrorWrongSession
            | MessageType::RemoveClient
                if !self.is_client_addr(src) && !self.server_addr(dst) =>
            {
                self.add_server(src);
            }
            _ => {}
        }
    }

    /// A server inferred from message types turned out to be a client.
    fn demote(&mut self, addr: SocketAddr) {
        self.servers.remove(&addr);
        if self.first_server == Some(addr) {
            self.first_server = self.servers.iter().min().copied();
        }
    }

    /// One message: the packet's own (`relay_direction` None), or the payload of a relay
    /// whose direction is given.
    fn observe_message(
        &mut self,
        ts_ns: i64,
        src: SocketAddr,
        dst: SocketAddr,
        msg: &Message<'_>,
        relay_direction: Option<Direction>,
    ) -> Direction {
        let outer = relay_direction.is_none();
        let direction = match relay_direction {
            Some(d) => d,
            None => {
                self.learn_roles(msg.message_type(), src, dst);
                self.direction(src, dst)
            }
        };
        // Sessions are the server's: a client's forged server-only message starts none.
        let forged =
            msg.message_type().is_server_only_send() && direction != Direction::ServerToClient;
        if outer && direction == Direction::ServerToClient {
            self.server_alive(ts_ns, src, dst, msg);
        }
        if let (Some(session), true, false) = (msg.session(), outer, forged) {
            self.touch_session(ts_ns, session, direction, src, dst);
        }
        if outer && !self.no_stats {
            if let Some(key) = self.client_key_at(src) {
                if let Some(c) = self.clients.get_mut(&key) {
                    c.stats.sent_by_type.add(msg.message_type());
                }
            }
        }

        match msg {
            Message::HandshakeRequest(h) => {
                if direction == Direction::ClientToServer {
                    let name = lossy(h.name);
                    self.pending.insert(src, (name, h.codec, dst));
                }
            }
            // What a client sends of the server's types changes nothing in the session
            // (the server ignores it; check reports it, D020).
            _ if forged => {}
            Message::HandshakeResponse(h) => {
                self.current_session = Some(h.session);
                if let Some((name, codec, _)) = self.pending.remove(&dst) {
                    self.client_joined(ts_ns, h.session, h.client_id, name, Some(codec), Some(dst));
                }
                for c in h.clients.iter() {
                    self.client_joined(ts_ns, h.session, c.id, lossy(c.name), Some(c.codec), None);
                }
                for r in h.rooms() {
                    let room = lossy(r.name);
                    for p in r.peers.iter() {
                        self.set_membership(ts_ns, h.session, p, &room, true);
                    }
                }
            }
            Message::ClientState(c) => {
                let addr = (direction == Direction::ClientToServer).then_some(src);
                self.client_joined(
                    ts_ns,
                    c.session,
                    c.client_id,
                    lossy(c.name),
                    Some(c.codec),
                    addr,
                );
                let wanted: BTreeSet<String> = c.rooms.iter().map(lossy).collect();
                let current = self
                    .clients
                    .get(&(c.session, c.client_id))
                    .map(|r| r.rooms.clone())
                    .unwrap_or_default();
                for room in current.difference(&wanted) {
                    self.set_membership(ts_ns, c.session, c.client_id, room, false);
                }
                for room in wanted.difference(&current) {
                    self.set_membership(ts_ns, c.session, c.client_id, room, true);
                }
            }
            Message::DeltaChannelState(d) => {
                let room = lossy(d.name);
                if self.clients.contains_key(&(d.session, d.peer)) {
                    self.set_membership(ts_ns, d.session, d.peer, &room, d.joined());
                } else {
                    self.learn_room(&room);
                }
            }
            Message::RemoveClient(r) => {
                // After a packet that kills the real server, its RemoveClients are the
                // restart's, not the clients leaving.
                let reason = if self.fatal.contains_key(&src) {
                    "server_restarted"
                } else {
                    "removed"
                };
                self.client_left(ts_ns, r.session, r.client_id, reason)
            }
            Message::VoiceData(_) if self.no_stats => {}
            Message::VoiceData(v) => {
                let p2p = direction == Direction::PeerToPeer;
                if let Some(c) = self.clients.get_mut(&(v.session, v.sender)) {
                    if c.stats.voice_window.insert(v.seq) {
                        c.stats.voice_frames += 1;
                    }
                    if p2p {
                        c.stats.voice_p2p += 1;
                    } else if !outer {
                        c.stats.voice_relayed += 1;
                    }
                }
            }
            Message::TextData(t) => {
                if !self.no_stats && (!outer || direction == Direction::PeerToPeer) {
                    if let Some(c) = self.clients.get_mut(&(t.session, t.sender)) {
                        c.stats.texts += 1;
                    }
                }
            }
            Message::ServerRelayReliable(r) | Message::ServerRelayUnreliable(r) => {
                // Relayed voice only feeds statistics: without them it is not decoded
                // (nor reported by `last_relayed_type`).
                if self.no_stats && r.payload.get(2) == Some(&(MessageType::VoiceData as u8)) {
                    return direction;
                }
                // The wrapped packet counts as sent by the relaying client.
                if let Ok(inner) = r.inner() {
                    if outer {
                        self.last_inner = Some(inner.message.message_type());
                    }
                    // Same addresses, and nothing since the relay changed who is a
                    // server or a client: its direction.
                    self.observe_message(ts_ns, src, dst, &inner.message, Some(direction));
                }
            }
            Message::ErrorWrongSession(e) => {
                self.current_session = Some(e.session);
            }
            Message::HandshakeP2P(_) => {}
        }
        direction
    }

    /// A well-formed packet from the server `src`: clears a fatal packet it survived, and
    /// a HandshakeResponse answering a request with a session other than the one the
    /// server handed out before is its restart (the one sign a forwarded relay payload
    /// cannot fake: it answers a request seen in the capture).
    fn server_alive(&mut self, ts_ns: i64, src: SocketAddr, dst: SocketAddr, msg: &Message<'_>) {
        match msg {
            Message::RemoveClient(_) => {}
            Message::HandshakeResponse(h) if self.pending.get(&dst).is_some_and(|p| p.2 == src) => {
                let old = self.server_sessions.insert(src, h.session);
                if let Some(old) = old.filter(|&o| o != h.session) {
                    self.server_restarted(ts_ns, src, old, h.session);
                }
            }
            // Nearly always no fatal packet is pending: no lookup then.
            _ if self.fatal.is_empty() => {}
            _ => {
                if self
                    .fatal
                    .get(&src)
                    .is_some_and(|f| ts_ns - f.ts_ns > SURVIVED_NS)
                {
                    self.fatal.remove(&src);
                }
            }
        }
    }

    fn server_restarted(&mut self, ts_ns: i64, server: SocketAddr, old: u32, new: u32) {
        self.restarts.insert(new, old);
        let cause = self.fatal.remove(&server);
        self.events.push_back(SessionEvent::ServerRestarted {
            ts_ns,
            server,
            old_session: old,
            new_session: new,
            cause,
        });
        // Whoever the restart's RemoveClients did not name (nobody was left to tell
        // about the last one) was dropped all the same.
        let live: Vec<u16> = self
            .clients
            .range((old, 0)..=(old, u16::MAX))
            .filter(|(_, c)| c.left_ns.is_none())
            .map(|(&(_, id), _)| id)
            .collect();
        for id in live {
            self.client_left(ts_ns, old, id, "server_restarted");
        }
    }

    /// Adds packet and byte counts for the client at `src` (called by the pipeline with
    /// the datagram size, once per datagram).
    pub fn count_bytes(&mut self, src: SocketAddr, bytes: usize) {
        if self.no_stats {
            return;
        }
        if let Some(key) = self.client_key_at(src) {
            if let Some(c) = self.clients.get_mut(&key) {
                c.stats.bytes_sent += bytes as u64;
            }
        }
    }

    fn touch_session(
        &mut self,
        ts_ns: i64,
        session: u32,
        direction: Direction,
        src: SocketAddr,
        dst: SocketAddr,
    ) {
        let server = match direction {
            Direction::ServerToClient => Some(src),
            Direction::ClientToServer => Some(dst),
            _ => None,
        };
        match self.sessions.get_mut(&session) {
            Some(s) => {
                s.last_ns = s.last_ns.max(ts_ns);
                s.packets += 1;
                if s.server.is_none() {
                    s.server = server;
                }
            }
            None => {
                self.sessions.insert(
                    session,
                    SessionRecord {
                        id: session,
                        first_ns: ts_ns,
                        last_ns: ts_ns,
                        server,
                        packets: 1,
                    },
                );
                self.events.push_back(SessionEvent::SessionStarted {
                    ts_ns,
                    session,
                    server,
                });
            }
        }
    }

    fn client_joined(
        &mut self,
        ts_ns: i64,
        session: u32,
        id: u16,
        name: String,
        codec: Option<CodecSettings>,
        addr: Option<SocketAddr>,
    ) {
        let key = (session, id);
        let fresh = match self.clients.get(&key) {
            None => true,
            // The id was freed and reused by someone else, or the same name came back.
            Some(c) => c.name != name || c.left_ns.is_some(),
        };
        if fresh {
            if let Some(old) = self.clients.get(&key) {
                if old.left_ns.is_none() {
                    self.client_left(ts_ns, session, id, "replaced");
                }
            }
            self.names_gen += 1;
            let t = std::sync::Arc::make_mut(&mut self.name_table);
            t.id = next_table_id();
            t.clients.insert(key, name.as_str().into());
            self.clients.insert(
                key,
                ClientRecord {
                    session,
                    id,
                    name: name.clone(),
                    codec,
                    addr,
                    joined_ns: Some(ts_ns),
                    ..ClientRecord::default()
                },
            );
            self.events.push_back(SessionEvent::ClientJoined {
                ts_ns,
                session,
                client_id: id,
                name,
                addr,
            });
        }
        let c = self.clients.get_mut(&key).expect("inserted above");
        if codec.is_some() {
            c.codec = codec;
        }
        if let Some(a) = addr {
            c.addr = Some(a);
            self.client_addrs.insert(a, key);
            self.addr_cache = None;
        }
    }

    fn client_left(&mut self, ts_ns: i64, session: u32, id: u16, reason: &'static str) {
        let Some(c) = self.clients.get_mut(&(session, id)) else {
            return;
        };
        if c.left_ns.is_some() {
            return;
        }
        c.left_ns = Some(ts_ns);
        let rooms: Vec<String> = std::mem::take(&mut c.rooms).into_iter().collect();
        for room in rooms {
            self.history.push(MembershipChange {
                ts_ns,
                session,
                client_id: id,
                room: room.clone(),
                joined: false,
            });
            self.events.push_back(SessionEvent::RoomLeft {
                ts_ns,
                session,
                client_id: id,
                room,
            });
        }
        self.events.push_back(SessionEvent::ClientLeft {
            ts_ns,
            session,
            client_id: id,
            reason,
        });
    }

    fn learn_room(&mut self, room: &str) {
        if let std::collections::btree_map::Entry::Vacant(e) =
            self.rooms.entry(crate::codec::room_id(room))
        {
            e.insert(room.to_string());
            self.names_gen += 1;
            let t = std::sync::Arc::make_mut(&mut self.name_table);
            t.id = next_table_id();
            t.rooms.insert(crate::codec::room_id(room), room.into());
        }
    }

    fn set_membership(&mut self, ts_ns: i64, session: u32, id: u16, room: &str, joined: bool) {
        self.learn_room(room);
        let Some(c) = self.clients.get_mut(&(session, id)) else {
            return;
        };
        let changed = if joined {
            c.rooms.insert(room.to_string())
        } else {
            c.rooms.remove(room)
        };
        if !changed {
            return;
        }
        self.history.push(MembershipChange {
            ts_ns,
            session,
            client_id: id,
            room: room.to_string(),
            joined,
        });
        let room = room.to_string();
        self.events.push_back(if joined {
            SessionEvent::RoomJoined {
                ts_ns,
                session,
                client_id: id,
                room,
            }
        } else {
            SessionEvent::RoomLeft {
                ts_ns,
                session,
                client_id: id,
                room,
            }
        });
    }
}

fn lossy(s: WireStr<'_>) -> String {
    s.to_str_lossy()
        .map(|c| c.into_owned())
        .unwrap_or_else(|| "(null)".into())
}

mod names;
use names::next_table_id;
pub use names::{NameTable, Names, SessionNames, TableNames};

#[cfg(test)]
mod tests;
