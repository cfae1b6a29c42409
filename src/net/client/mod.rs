//! A Dissonance client as a sans-IO state machine (docs/protocol.md §9, receive side §7.2).
//!
//! [`Client`] never touches a socket or a clock. The shell feeds it datagrams from the
//! server ([`Client::handle`]) and the time ([`Client::handle_timeout`] when
//! [`Client::poll_timeout`] says so), calls actions (join/leave a room, text, voice,
//! quit), and sends what [`Client::poll_transmit`] returns to the server, one datagram
//! each (docs/transports.md). What the client learns comes out of [`Client::poll_event`].
//!
//! Behaviour of the real 9.0.x client:
//! * HandshakeRequest on the first update, again every 2 s until a response arrives;
//! * on every HandshakeResponse: adopt session and id, rebuild the peer table, send the
//!   own ClientState (rooms in .NET order); DeltaChannelState on every later room change;
//! * text and voice go through ServerRelayReliable / ServerRelayUnreliable to the
//!   destinations computed from the replicated room state, minus the local client;
//! * ErrorWrongSession with another session: the session is dropped and, after a
//!   back-off (0.5 s more per restart, at most 3 s), the client starts over with fresh
//!   voice counters;
//! * received voice is split into talk spurts by the voice module's [`StreamMachine`].
//!
//! Unlike the real client, malformed input never shuts the client down: the packet is
//! dropped and reported as [`Event::Dropped`].

pub mod audio;
pub mod runtime;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::codec::{
    room_id, Channel, ChannelBitfield, ChannelType, ClientState, CodecSettings, DeltaChannelState,
    HandshakeRequest, HandshakeResponse, Message, Packet, PacketOptions, Priority, RoomsEncoding,
    Seq, ServerRelay, TextData, Variant, VoiceData, WireStr, DEFAULT_BUFFER_SIZE,
};
use crate::collate::dotnet_compare;
use crate::dissect::locate::BYE;
use crate::voice::seq::{OwnedVoice, SeqGuard};
use crate::voice::{Arrival, Emit, EndReason, StreamMachine};

/// The handshake is repeated when strictly more than this has passed without a response.
pub const HANDSHAKE_RETRY: Duration = Duration::from_secs(2);
/// Back-off added per restart after a wrong session, and its cap.
pub const BACKOFF_STEP: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// How often open voice streams are checked for the 1.5 s idle end.
const TICK: Duration = Duration::from_millis(100);

/// Where text or voice goes: a room (by name) or a player (by name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Room(String),
    Player(String),
}

impl Target {
    /// `@NAME` is a player, anything else a room.
    pub fn parse(s: &str) -> Target {
        match s.strip_prefix('@') {
            Some(p) => Target::Player(p.to_string()),
            None => Target::Room(s.to_string()),
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Target::Room(n) | Target::Player(n) => n,
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Room(_) => "room",
            Target::Player(_) => "player",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Room(n) => f.write_str(n),
            Target::Player(n) => write!(f, "@{n}"),
        }
    }
}

/// One datagram for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub bytes: Vec<u8>,
    /// The channel the real client would use (the plain UDP transport sends both alike).
    pub reliable: bool,
}

/// What the client saw happen.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A HandshakeResponse: the session and our id in it.
    Connected {
        session: u32,
        id: u16,
    },
    /// A client (the local one included) appeared in the peer table.
    PeerJoined {
        id: u16,
        name: String,
        codec: CodecSettings,
    },
    PeerLeft {
        id: u16,
        name: String,
    },
    RoomEntered {
        id: u16,
        name: String,
        room: String,
    },
    RoomLeft {
        id: u16,
        name: String,
        room: String,
    },
    Text {
        sender_id: u16,
        sender: String,
        target: Target,
        text: String,
    },
    /// A voice packet that concerns the local player (§7.2 step 4).
    VoicePacket {
        sender_id: u16,
        sender: String,
        seq: u16,
        /// The channels that concern the local player.
        channels: Vec<Channel>,
        audio: Vec<u8>,
    },
    /// A talk spurt began / ended (reported once the voice module's stream logic has
    /// placed its frames, so up to a reorder window after the first packet).
    StreamStarted {
        sender_id: u16,
        sender: String,
    },
    StreamEnded {
        sender_id: u16,
        sender: String,
        reason: EndReason,
    },
    /// ErrorWrongSession: the server runs session `server_session`; we start over after
    /// `retry_in`.
    SessionLost {
        session: u32,
        server_session: u32,
        retry_in: Duration,
    },
    /// A HandshakeRequest went out (`attempt` 1 is the first of a connection).
    HandshakeSent {
        attempt: u32,
    },
    /// A datagram from the server that was not used, and why.
    Dropped {
        reason: String,
    },
}

/// Why an action did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionError {
    /// No session yet (or it was lost): nothing can be addressed.
    NotConnected,
    /// `quit` was called.
    Quit,
    UnknownPlayer(String),
    /// The packet does not fit the 1024-byte buffer of the real writer.
    TooLarge(String),
}

impl std::fmt::Display for ActionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActionError::NotConnected => f.write_str("not connected to a session yet"),
            ActionError::Quit => f.write_str("the client has quit"),
            ActionError::UnknownPlayer(p) => write!(f, "no player named {p:?} in the session"),
            ActionError::TooLarge(e) => write!(f, "packet too large: {e}"),
        }
    }
}

impl std::error::Error for ActionError {}

/// One entry of the replicated peer table.
#[derive(Debug)]
pub struct Peer {
    pub name: String,
    pub codec: CodecSettings,
    /// Rooms this client listens to, in the order they were learned.
    pub rooms: Vec<String>,
    /// `room_id` of each room, computed once (destinations are computed per frame).
    room_ids: Vec<u16>,
    rx: Receive,
}

/// Receive-side voice state for one remote speaker.
#[derive(Debug)]
struct Receive {
    machine: StreamMachine,
    /// Unwraps sequence numbers; a far jump waits for the next packet (voice::seq).
    guard: SeqGuard<OwnedVoice>,
    packets: u64,
}

impl Receive {
    fn new(codec: CodecSettings) -> Receive {
        let frame_ns = match codec.frame_ms() {
            Some(ms) if ms > 0.0 => (ms * 1e6) as i64,
            _ => 20_000_000,
        };
        Receive {
            machine: StreamMachine::new(frame_ns),
            guard: SeqGuard::new(StreamMachine::window_for(frame_ns)),
            packets: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Sending HandshakeRequests; `last` is when the last one went out.
    Handshaking {
        last: Option<Duration>,
        attempt: u32,
    },
    Connected {
        session: u32,
        id: u16,
    },
    /// Waiting out the back-off after a lost session.
    Backoff {
        until: Duration,
    },
    Quit,
}

/// The sans-IO client.
#[derive(Debug)]
pub struct Client {
    name: String,
    codec: CodecSettings,
    /// The local listening set, sorted as the real client sorts it.
    rooms: Vec<String>,
    room_ids: Vec<u16>,
    state: State,
    peers: BTreeMap<u16, Peer>,
    tx: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Voice sender state: sequence number and packet-level channel session counter.
    voice_seq: u16,
    voice_counter: u32,
    restarts: u32,
    connected_at: Duration,
    next_tick: Option<Duration>,
    /// Room id → the clients listening to it (destinations are computed per frame).
    listening: BTreeMap<u16, BTreeSet<u16>>,
    /// Peers whose stream logic holds something (only they need ticks).
    busy: BTreeSet<u16>,
    now: Duration,
}

fn sort_rooms(rooms: &mut [String]) {
    rooms.sort_by(|a, b| dotnet_compare(a, b));
}

fn encode(m: &Message<'_>) -> Result<Vec<Vec<u8>>, ActionError> {
    m.encode_split(Variant::Modern, DEFAULT_BUFFER_SIZE)
        .map_err(|e| ActionError::TooLarge(e.to_string()))
}

impl Client {
    /// A client named `name` that encodes with `codec` and listens to `rooms` once
    /// connected. Nothing is sent before the first [`Client::handle_timeout`].
    pub fn new(name: &str, codec: CodecSettings, rooms: &[String]) -> Client {
        let mut own: Vec<String> = Vec::new();
        for r in rooms {
            if !own.contains(r) {
                own.push(r.clone());
            }
        }
        sort_rooms(&mut own);
        Client {
            name: name.to_string(),
            codec,
            room_ids: own.iter().map(|r| room_id(r)).collect(),
            rooms: own,
            state: State::Handshaking {
                last: None,
                attempt: 0,
            },
            peers: BTreeMap::new(),
            tx: VecDeque::new(),
            events: VecDeque::new(),
            voice_seq: 0,
            voice_counter: 0,
            restarts: 0,
            connected_at: Duration::ZERO,
            next_tick: None,
            busy: BTreeSet::new(),
            listening: BTreeMap::new(),
            now: Duration::ZERO,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn codec(&self) -> CodecSettings {
        self.codec
    }
    /// The rooms the local player listens to.
    pub fn rooms(&self) -> &[String] {
        &self.rooms
    }
    /// Session and local id, once connected.
    pub fn connection(&self) -> Option<(u32, u16)> {
        match self.state {
            State::Connected { session, id } => Some((session, id)),
            _ => None,
        }
    }
    pub fn is_quit(&self) -> bool {
        self.state == State::Quit
    }
    /// The replicated peer table (the local client included once the server echoed it).
    pub fn peers(&self) -> impl Iterator<Item = (u16, &Peer)> {
        self.peers.iter().map(|(id, p)| (*id, p))
    }
    pub fn peer_id(&self, name: &str) -> Option<u16> {
        self.peers
            .iter()
            .find(|(_, p)| p.name == name)
            .map(|(id, _)| *id)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.tx.pop_front()
    }
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let state = match self.state {
            State::Handshaking { last: None, .. } => Some(Duration::ZERO),
            State::Handshaking {
                last: Some(t),
                attempt: _,
            } => Some(t + HANDSHAKE_RETRY + Duration::from_nanos(1)),
            State::Backoff { until } => Some(until),
            State::Connected { .. } | State::Quit => None,
        };
        match (state, self.next_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passes: handshake (re)sends, the end of a back-off, idle voice streams.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = self.now.max(now);
        let now = self.now;
        if let State::Backoff { until } = self.state {
            if now >= until {
                self.state = State::Handshaking {
                    last: None,
                    attempt: 0,
                };
            }
        }
        if let State::Handshaking { last, attempt } = self.state {
            if last.is_none_or(|t| now > t + HANDSHAKE_RETRY) {
                let m = Message::HandshakeRequest(HandshakeRequest {
                    codec: self.codec,
                    name: WireStr::new(&self.name),
                });
                let r = encode(&m);
                self.push_encoded(m.message_type(), r, true);
                self.state = State::Handshaking {
                    last: Some(now),
                    attempt: attempt + 1,
                };
                self.events.push_back(Event::HandshakeSent {
                    attempt: attempt + 1,
                });
            }
        }
        if self.next_tick.is_some_and(|t| now >= t) {
            let ns = now.as_nanos() as i64;
            let events = &mut self.events;
            let peers = &mut self.peers;
            self.busy.retain(|id| {
                let Some(p) = peers.get_mut(id) else {
                    return false;
                };
                let name = &p.name;
                p.rx.machine
                    .tick(ns, &mut |e| stream_event(events, *id, name, e));
                p.rx.machine.busy()
            });
            self.next_tick = (!self.busy.is_empty()).then(|| now + TICK);
        }
    }

    fn queue(&mut self, m: &Message<'_>, reliable: bool) {
        let r = encode(m);
        self.push_encoded(m.message_type(), r, reliable);
    }

    fn push_encoded(
        &mut self,
        t: crate::codec::MessageType,
        r: Result<Vec<Vec<u8>>, ActionError>,
        reliable: bool,
    ) {
        // Every message the client builds itself fits; a failure here is a bug upstream.
        match r {
            Ok(packets) => self.tx.extend(
                packets
                    .into_iter()
                    .map(|bytes| Transmit { bytes, reliable }),
            ),
            Err(e) => self.events.push_back(Event::Dropped {
                reason: format!("could not encode {t}: {e}"),
            }),
        }
    }

    fn check_usable(&self) -> Result<(u32, u16), ActionError> {
        match self.state {
            State::Quit => Err(ActionError::Quit),
            State::Connected { session, id } => Ok((session, id)),
            _ => Err(ActionError::NotConnected),
        }
    }

    /// Starts listening to `room` (DeltaChannelState once connected). False if already.
    pub fn join_room(&mut self, room: &str) -> Result<bool, ActionError> {
        self.change_room(room, true)
    }

    /// Stops listening to `room`. False if the client was not listening.
    pub fn leave_room(&mut self, room: &str) -> Result<bool, ActionError> {
        self.change_room(room, false)
    }

    fn change_room(&mut self, room: &str, join: bool) -> Result<bool, ActionError> {
        if self.state == State::Quit {
            return Err(ActionError::Quit);
        }
        let pos = self.rooms.iter().position(|r| r == room);
        match (join, pos) {
            (true, Some(_)) | (false, None) => return Ok(false),
            (true, None) => {
                self.rooms.push(room.to_string());
                sort_rooms(&mut self.rooms);
            }
            (false, Some(i)) => {
                self.rooms.remove(i);
            }
        }
        self.room_ids = self.rooms.iter().map(|r| room_id(r)).collect();
        // Before the handshake the change only goes into the first ClientState.
        if let State::Connected { session, id } = self.state {
            let m = Message::DeltaChannelState(DeltaChannelState::new(session, join, id, room));
            self.queue(&m, true);
        }
        Ok(true)
    }

    /// Client ids that listen to a room with this id, by the replicated state.
    fn listeners(&self, rid: u16, out: &mut BTreeSet<u16>) {
        if let Some(ids) = self.listening.get(&rid) {
            out.extend(ids);
        }
    }

    /// The channel type and recipient id of a target; adds who it reaches to `dests`.
    fn resolve(
        &self,
        target: &Target,
        dests: &mut BTreeSet<u16>,
    ) -> Result<(ChannelType, u16), ActionError> {
        match target {
            Target::Room(r) => {
                let rid = room_id(r);
                self.listeners(rid, dests);
                Ok((ChannelType::Room, rid))
            }
            Target::Player(p) => {
                let id = self
                    .peer_id(p)
                    .ok_or_else(|| ActionError::UnknownPlayer(p.clone()))?;
                dests.insert(id);
                Ok((ChannelType::Player, id))
            }
        }
    }

    /// Sends `text` to a room's listeners or to one player (§9.5). Returns the number of
    /// destinations; 0 when nobody listens to the room (nothing is sent then).
    pub fn send_text(&mut self, target: &Target, text: &str) -> Result<usize, ActionError> {
        let (session, me) = self.check_usable()?;
        let mut dests = BTreeSet::new();
        let (ty, tid) = self.resolve(target, &mut dests)?;
        dests.remove(&me);
        if dests.is_empty() {
            return Ok(0);
        }
        let inner = Message::TextData(TextData {
            session,
            recipient_type_byte: ty.text_byte(),
            sender: me,
            target: tid,
            text: WireStr::new(text),
        })
        .to_vec(Variant::Modern, DEFAULT_BUFFER_SIZE)
        .map_err(|e| ActionError::TooLarge(e.to_string()))?;
        self.relay(session, &dests, &inner, true)?;
        Ok(dests.len())
    }

    fn relay(
        &mut self,
        session: u32,
        dests: &BTreeSet<u16>,
        payload: &[u8],
        reliable: bool,
    ) -> Result<(), ActionError> {
        let ids: Vec<u16> = dests.iter().copied().collect();
        let relay = ServerRelay {
            session,
            destinations: Seq::Items(&ids),
            payload,
        };
        let m = if reliable {
            Message::ServerRelayReliable(relay)
        } else {
            Message::ServerRelayUnreliable(relay)
        };
        let packets = encode(&m)?;
        self.tx.extend(
            packets
                .into_iter()
                .map(|bytes| Transmit { bytes, reliable }),
        );
        Ok(())
    }

    /// Sends one encoded frame on channels to `targets` (§9.4). `last` marks the final
    /// frame of a talk spurt (closing flag); the next frame starts a new spurt. Returns
    /// the number of destinations; 0 when nobody would hear it (no sequence number used).
    pub fn send_voice(
        &mut self,
        targets: &[Target],
        audio: &[u8],
        last: bool,
    ) -> Result<usize, ActionError> {
        let (session, me) = self.check_usable()?;
        let mut dests = BTreeSet::new();
        let mut channels = Vec::with_capacity(targets.len());
        for t in targets {
            let (ty, recipient) = self.resolve(t, &mut dests)?;
            // 7.x–9.x senders keep the per-channel session at 0 (docs/protocol.md §6.1).
            let bitfield = ChannelBitfield::new(ty, false, last, Priority::Default, 0, 1.0);
            channels.push(Channel {
                bitfield,
                recipient,
            });
        }
        dests.remove(&me);
        let options = PacketOptions::extended(self.voice_counter);
        if last {
            // Every channel closes with this frame: the next spurt gets a new session.
            self.voice_counter = self.voice_counter.wrapping_add(1);
        }
        if dests.is_empty() {
            return Ok(0);
        }
        let inner = Message::VoiceData(VoiceData {
            session,
            sender: me,
            options,
            seq: self.voice_seq,
            channels: Seq::Items(&channels),
            audio,
        })
        .to_vec(Variant::Modern, DEFAULT_BUFFER_SIZE)
        .map_err(|e| ActionError::TooLarge(e.to_string()))?;
        self.relay(session, &dests, &inner, false)?;
        self.voice_seq = self.voice_seq.wrapping_add(1);
        Ok(dests.len())
    }

    /// Leaves: sends the transport's goodbye datagram. Every later action fails.
    pub fn quit(&mut self) {
        if self.state != State::Quit {
            self.tx.push_back(Transmit {
                bytes: BYE.to_vec(),
                reliable: true,
            });
            self.state = State::Quit;
        }
    }

    /// One datagram from the server.
    pub fn handle(&mut self, now: Duration, data: &[u8]) {
        self.now = self.now.max(now);
        if self.state == State::Quit {
            return;
        }
        if data.first() == Some(&0) {
            // Transport control (docs/transports.md); nothing a client has to act on.
            return;
        }
        let packet = match Packet::decode(data) {
            Ok(p) => p,
            Err(e) => {
                return self.drop_packet(format!("malformed packet ({} bytes): {e}", data.len()));
            }
        };
        let t = packet.message_type();
        if t.client_ignores() {
            return self.drop_packet(format!("{t} is for servers only"));
        }
        match &packet.message {
            Message::HandshakeResponse(r) => return self.on_handshake_response(r),
            Message::ErrorWrongSession(e) => return self.on_wrong_session(e.session),
            _ => {}
        }
        let Some((session, me)) = self.connection() else {
            return self.drop_packet(format!("{t} before the handshake completed"));
        };
        if packet.message.session() != Some(session) {
            return self.drop_packet(format!(
                "{t} for session {} (ours is {})",
                crate::output::SessionId(packet.message.session().unwrap_or(0)),
                crate::output::SessionId(session)
            ));
        }
        match &packet.message {
            Message::ClientState(cs) => self.on_client_state(cs),
            Message::DeltaChannelState(d) => self.on_delta(d),
            Message::RemoveClient(r) => self.remove_peer(r.client_id),
            Message::TextData(td) => self.on_text(td),
            Message::VoiceData(v) => self.on_voice(me, v),
            // No direct peer connections on the plain UDP transport.
            Message::HandshakeP2P(_) => {}
            _ => self.drop_packet(format!("unexpected {t}")),
        }
    }

    fn drop_packet(&mut self, reason: String) {
        self.events.push_back(Event::Dropped { reason });
    }

    fn on_handshake_response(&mut self, r: &HandshakeResponse<'_>) {
        // §9.2: adopt unconditionally, rebuild the peer table from the body.
        self.state = State::Connected {
            session: r.session,
            id: r.client_id,
        };
        self.connected_at = self.now;
        self.events.push_back(Event::Connected {
            session: r.session,
            id: r.client_id,
        });
        let keep: Vec<(u16, String)> = r
            .clients
            .iter()
            .filter_map(|c| Some((c.id, c.name.to_str_lossy()?.into_owned())))
            .collect();
        let gone: Vec<u16> = self
            .peers
            .iter()
            .filter(|(id, p)| !keep.iter().any(|(k, n)| k == *id && *n == p.name))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.remove_peer(id);
        }
        let ids: Vec<u16> = self.peers.keys().copied().collect();
        for id in ids {
            self.set_rooms(id, Vec::new());
        }
        for c in r.clients.iter() {
            if let Some(name) = c.name.to_str_lossy() {
                self.peer_entry(c.id, &name, c.codec);
            }
        }
        for room in r.rooms() {
            let Some(name) = room.name.to_str_lossy() else {
                continue;
            };
            for id in room.peers.iter() {
                self.enter_room(id, &name);
            }
        }
        let rooms: Vec<WireStr<'_>> = self.rooms.iter().map(|r| WireStr::new(r)).collect();
        let m = Message::ClientState(ClientState {
            session: r.session,
            name: WireStr::new(&self.name),
            client_id: r.client_id,
            codec: self.codec,
            rooms: Seq::Items(&rooms),
            rooms_encoding: RoomsEncoding::List,
        });
        let r = encode(&m);
        self.push_encoded(m.message_type(), r, true);
    }

    fn on_wrong_session(&mut self, server_session: u32) {
        let Some((session, _)) = self.connection() else {
            // Not in a session yet: the handshake that follows will fix it.
            return self.drop_packet(format!(
                "ErrorWrongSession({server_session}) before the handshake completed"
            ));
        };
        if server_session == session {
            return;
        }
        // The back-off shrinks again while healthy: one step per healthy 10 s (our
        // choice; the real network layer's exact decay is not documented).
        let healthy = (self.now.saturating_sub(self.connected_at).as_secs() / 10) as u32;
        self.restarts = self.restarts.saturating_sub(healthy) + 1;
        let retry_in = (BACKOFF_STEP * self.restarts).min(BACKOFF_MAX);
        let ids: Vec<u16> = self.peers.keys().copied().collect();
        for id in ids {
            self.remove_peer(id);
        }
        self.voice_seq = 0;
        self.voice_counter = 0;
        self.state = State::Backoff {
            until: self.now + retry_in,
        };
        self.events.push_back(Event::SessionLost {
            session,
            server_session,
            retry_in,
        });
    }

    /// Gets or creates a peer; a different name under the id replaces the old one.
    fn peer_entry(&mut self, id: u16, name: &str, codec: CodecSettings) {
        if let Some(p) = self.peers.get_mut(&id) {
            if p.name == name {
                p.codec = codec;
                return;
            }
            self.remove_peer(id);
        }
        self.peers.insert(
            id,
            Peer {
                name: name.to_string(),
                codec,
                rooms: Vec::new(),
                room_ids: Vec::new(),
                rx: Receive::new(codec),
            },
        );
        self.events.push_back(Event::PeerJoined {
            id,
            name: name.to_string(),
            codec,
        });
    }

    fn on_client_state(&mut self, cs: &ClientState<'_>) {
        let Some(name) = cs.name.to_str_lossy() else {
            return self.drop_packet("ClientState without a name".into());
        };
        let mut rooms = Vec::new();
        for r in cs.rooms.iter() {
            match r.to_str_lossy() {
                Some(r) => rooms.push(r.into_owned()),
                // The real client throws here; we skip the null room.
                None => self.drop_packet(format!("ClientState of {name}: null room skipped")),
            }
        }
        self.peer_entry(cs.client_id, &name, cs.codec);
        self.set_rooms(cs.client_id, rooms);
    }

    /// Replaces a peer's rooms, reporting what changed.
    fn set_rooms(&mut self, id: u16, rooms: Vec<String>) {
        let Some(p) = self.peers.get(&id) else {
            return;
        };
        let old: Vec<String> = p
            .rooms
            .iter()
            .filter(|r| !rooms.contains(r))
            .cloned()
            .collect();
        for r in old {
            self.exit_room(id, &r);
        }
        for r in rooms {
            self.enter_room(id, &r);
        }
    }

    fn enter_room(&mut self, id: u16, room: &str) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.rooms.iter().any(|r| r == room) {
            return;
        }
        let rid = room_id(room);
        p.rooms.push(room.to_string());
        p.room_ids.push(rid);
        self.listening.entry(rid).or_default().insert(id);
        self.events.push_back(Event::RoomEntered {
            id,
            name: p.name.clone(),
            room: room.to_string(),
        });
    }

    fn exit_room(&mut self, id: u16, room: &str) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(i) = p.rooms.iter().position(|r| r == room) else {
            return;
        };
        p.rooms.remove(i);
        let rid = p.room_ids.remove(i);
        // Hash-colliding rooms share an id (as in 9.0.9): keep it while one is left.
        if !p.room_ids.contains(&rid) {
            if let Some(set) = self.listening.get_mut(&rid) {
                set.remove(&id);
                if set.is_empty() {
                    self.listening.remove(&rid);
                }
            }
        }
        self.events.push_back(Event::RoomLeft {
            id,
            name: p.name.clone(),
            room: room.to_string(),
        });
    }

    fn on_delta(&mut self, d: &DeltaChannelState<'_>) {
        let Some(room) = d.name.to_str_lossy() else {
            return self.drop_packet("DeltaChannelState without a room".into());
        };
        if !self.peers.contains_key(&d.peer) {
            return self.drop_packet(format!("DeltaChannelState for unknown client {}", d.peer));
        }
        if d.joined() {
            self.enter_room(d.peer, &room);
        } else {
            self.exit_room(d.peer, &room);
        }
    }

    fn remove_peer(&mut self, id: u16) {
        let Some(p) = self.peers.get(&id) else {
            return;
        };
        for r in p.rooms.clone() {
            self.exit_room(id, &r);
        }
        let Some(mut p) = self.peers.remove(&id) else {
            return;
        };
        let events = &mut self.events;
        let name = &p.name;
        p.rx.machine.finish(EndReason::Rejoin, &mut |e| {
            stream_event(events, id, name, e)
        });
        self.events.push_back(Event::PeerLeft { id, name: p.name });
    }

    fn on_text(&mut self, td: &TextData<'_>) {
        let Some(sender) = self.peers.get(&td.sender).map(|p| p.name.clone()) else {
            return self.drop_packet(format!("text from unknown client {}", td.sender));
        };
        let target = match td.recipient_type() {
            Some(ChannelType::Player) => match self.peers.get(&td.target) {
                Some(p) => Target::Player(p.name.clone()),
                None => Target::Player(format!("#{}", td.target)),
            },
            Some(ChannelType::Room) => match self.rooms.iter().find(|r| room_id(r) == td.target) {
                Some(r) => Target::Room(r.clone()),
                None => {
                    return self.drop_packet(format!(
                        "text from {sender} to room id {} we do not listen to",
                        td.target
                    ))
                }
            },
            None => {
                return self.drop_packet(format!(
                    "text from {sender} with recipient type {}",
                    td.recipient_type_byte
                ))
            }
        };
        let text = td.text.to_str_lossy().unwrap_or_default().into_owned();
        self.events.push_back(Event::Text {
            sender_id: td.sender,
            sender,
            target,
            text,
        });
    }

    fn on_voice(&mut self, me: u16, v: &VoiceData<'_>) {
        let Some(p) = self.peers.get_mut(&v.sender) else {
            return self.drop_packet(format!("voice from unknown client {}", v.sender));
        };
        let g = p.rx.guard.push(v.seq, || OwnedVoice::new(v));
        if let Some((_, o)) = g.outlier {
            self.drop_packet(format!(
                "voice outlier: seq {} of client {} jumped far ahead of its stream and no \
                 packet followed it (a stray or forged copy)",
                o.seq, o.sender
            ));
        }
        if let Some((seq, o)) = g.release {
            self.voice_frame(me, &o.view(), seq);
        }
        if let Some(seq) = g.now {
            self.voice_frame(me, v, seq);
        }
    }

    /// One voice packet past the sequence guard, `seq` unwrapped.
    fn voice_frame(&mut self, me: u16, v: &VoiceData<'_>, seq: i64) {
        let kept: Vec<Channel> = v
            .channels
            .iter()
            .filter(|c| match c.bitfield.channel_type() {
                ChannelType::Player => c.recipient == me,
                ChannelType::Room => self.room_ids.contains(&c.recipient),
            })
            .collect();
        let ns = self.now.as_nanos() as i64;
        let Some(p) = self.peers.get_mut(&v.sender) else {
            return self.drop_packet(format!("voice from unknown client {}", v.sender));
        };
        p.rx.packets += 1;
        let arrival = Arrival {
            number: p.rx.packets,
            ts_ns: ns,
            seq,
            options: v.options,
            audio: v.audio,
        };
        let events = &mut self.events;
        if !kept.is_empty() {
            events.push_back(Event::VoicePacket {
                sender_id: v.sender,
                sender: p.name.clone(),
                seq: v.seq,
                channels: kept.clone(),
                audio: v.audio.to_vec(),
            });
        }
        let name = &p.name;
        let id = v.sender;
        p.rx.machine
            .push(&arrival, &kept, &mut |e| stream_event(events, id, name, e));
        if p.rx.machine.busy() {
            self.busy.insert(id);
            if self.next_tick.is_none() {
                self.next_tick = Some(self.now + TICK);
            }
        }
    }
}

/// Talk-spurt boundaries from the stream logic as events; frames are for the decoder.
fn stream_event(events: &mut VecDeque<Event>, id: u16, name: &str, e: Emit<'_>) {
    match e {
        Emit::Start { .. } => events.push_back(Event::StreamStarted {
            sender_id: id,
            sender: name.to_string(),
        }),
        Emit::End { reason, .. } => events.push_back(Event::StreamEnded {
            sender_id: id,
            sender: name.to_string(),
            reason,
        }),
        Emit::Frame { .. } | Emit::Missing { .. } => {}
    }
}
