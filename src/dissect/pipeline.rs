//! The dump pipeline shared by `dump`, `sniff` and `proxy`: transport payloads in,
//! located and decoded packets out, with the session tracker annotating them, filters
//! applied and totals counted. No I/O of its own: the caller feeds payloads and gives a
//! [`Printer`] to write to.

use std::io::{self, Write};
use std::net::SocketAddr;

use crate::codec::{ChannelType, Message, MessageType, Packet};
use crate::dissect::locate::{Classified, FlowKey, Found, Locator, NoteKind, PayloadMode};
use crate::dissect::session::{Direction, SessionEvent, Tracker};
use crate::output::{DatagramNote, Head, Printer, Record};

/// One transport payload: a UDP datagram or a TCP frame.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    pub number: u64,
    pub ts_ns: i64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub tcp: bool,
    pub data: &'a [u8],
}

impl<'a> From<&crate::capture::Payload<'a>> for Datagram<'a> {
    fn from(p: &crate::capture::Payload<'a>) -> Datagram<'a> {
        Datagram {
            number: p.frame_number,
            ts_ns: p.ts_ns,
            src: p.src,
            dst: p.dst,
            tcp: p.transport == crate::capture::Transport::Tcp,
            data: p.data,
        }
    }
}

impl Datagram<'static> {
    /// No datagram: where the capture ended on `key`'s flow, for the packets a game
    /// stack's decoder still held then ([`Locator::finish`]).
    pub fn at_end(key: FlowKey, number: u64, ts_ns: i64) -> Datagram<'static> {
        Datagram {
            number,
            ts_ns,
            src: key.src,
            dst: key.dst,
            tcp: key.tcp,
            data: &[],
        }
    }
}

/// Which packets to print (`--type`, `--client`, `--room`, `--session`). All given
/// filters must match. Session tracking always sees every packet.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub types: Vec<MessageType>,
    /// Client names or ids.
    pub clients: Vec<String>,
    /// Room names or ids.
    pub rooms: Vec<String>,
    pub sessions: Vec<u32>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
            && self.clients.is_empty()
            && self.rooms.is_empty()
            && self.sessions.is_empty()
    }

    fn matches(&self, p: &Packet<'_>, tracker: &Tracker) -> bool {
        let m = &p.message;
        if !self.types.is_empty() {
            let inner = relay_inner(m);
            let ok = self.types.contains(&m.message_type())
                || inner
                    .as_ref()
                    .is_some_and(|i| self.types.contains(&i.message_type()));
            if !ok {
                return false;
            }
        }
        if !self.sessions.is_empty() && !m.session().is_some_and(|s| self.sessions.contains(&s)) {
            return false;
        }
        if !self.clients.is_empty() {
            let session = m.session();
            let ids = client_ids(m);
            let name_of = |id: u16| {
                session
                    .and_then(|s| tracker.client(s, id))
                    .map(|c| c.name.as_str())
            };
            let hit = self.clients.iter().any(|want| {
                ids.iter()
                    .any(|&id| want.parse::<u16>() == Ok(id) || name_of(id) == Some(want.as_str()))
                    || client_name(m).as_deref() == Some(want.as_str())
            });
            if !hit {
                return false;
            }
        }
        if !self.rooms.is_empty() {
            let rooms = room_ids(m);
            let hit = self.rooms.iter().any(|want| {
                let id = want.parse::<u16>().ok();
                let by_name = crate::codec::room_id(want);
                rooms.iter().any(|&r| Some(r) == id || r == by_name)
            });
            if !hit {
                return false;
            }
        }
        true
    }
}

impl Filters {
    /// Whether a session event passes: `--session` by its session, `--client` by the
    /// client it is about, `--room` by its room (joins and leaves of a client are about no
    /// room). A session's start (or a server's restart) passes client and room filters: it
    /// is what the records after it belong to. `--type` selects messages, not events.
    pub fn matches_event(&self, ev: &SessionEvent, tracker: &Tracker) -> bool {
        let session = ev.session();
        if !self.sessions.is_empty() && !self.sessions.contains(&session) {
            return false;
        }
        let (client, room) = match ev {
            SessionEvent::SessionStarted { .. } | SessionEvent::ServerRestarted { .. } => {
                return true
            }
            SessionEvent::ClientJoined { client_id, .. }
            | SessionEvent::ClientLeft { client_id, .. } => (*client_id, None),
            SessionEvent::RoomJoined {
                client_id, room, ..
            }
            | SessionEvent::RoomLeft {
                client_id, room, ..
            } => (*client_id, Some(room.as_str())),
        };
        if !self.clients.is_empty() {
            let name = match ev {
                SessionEvent::ClientJoined { name, .. } => Some(name.as_str()),
                _ => tracker.client(session, client).map(|c| c.name.as_str()),
            };
            let hit = self
                .clients
                .iter()
                .any(|want| want.parse::<u16>() == Ok(client) || name == Some(want.as_str()));
            if !hit {
                return false;
            }
        }
        if !self.rooms.is_empty() {
            let Some(room) = room else {
                return false;
            };
            let hit = self
                .rooms
                .iter()
                .any(|want| want == room || want.parse::<u16>() == Ok(crate::codec::room_id(room)));
            if !hit {
                return false;
            }
        }
        true
    }
}

fn relay_inner<'a>(m: &Message<'a>) -> Option<Message<'a>> {
    match m {
        Message::ServerRelayReliable(r) | Message::ServerRelayUnreliable(r) => {
            r.inner().ok().map(|p| p.message)
        }
        _ => None,
    }
}

/// Client ids a message is about (sender, targets, destinations, subject).
fn client_ids(m: &Message<'_>) -> Vec<u16> {
    match m {
        Message::ClientState(c) => vec![c.client_id],
        Message::VoiceData(v) => {
            let mut ids = vec![v.sender];
            ids.extend(
                v.channels
                    .iter()
                    .filter(|c| c.bitfield.channel_type() == ChannelType::Player)
                    .map(|c| c.recipient),
            );
            ids
        }
        Message::TextData(t) => match t.recipient_type() {
            Some(ChannelType::Player) => vec![t.sender, t.target],
            _ => vec![t.sender],
        },
        Message::HandshakeResponse(h) => vec![h.client_id],
        Message::ServerRelayReliable(r) | Message::ServerRelayUnreliable(r) => {
            let mut ids: Vec<u16> = r.destinations.iter().collect();
            if let Some(inner) = relay_inner(m) {
                ids.extend(client_ids(&inner));
            }
            ids
        }
        Message::DeltaChannelState(d) => vec![d.peer],
        Message::RemoveClient(r) => vec![r.client_id],
        Message::HandshakeP2P(h) => vec![h.peer_id],
        Message::HandshakeRequest(_) | Message::ErrorWrongSession(_) => vec![],
    }
}

/// The player name a message carries itself (HandshakeRequest, ClientState).
fn client_name(m: &Message<'_>) -> Option<String> {
    match m {
        Message::HandshakeRequest(h) => h.name.to_str_lossy().map(|s| s.into_owned()),
        Message::ClientState(c) => c.name.to_str_lossy().map(|s| s.into_owned()),
        _ => None,
    }
}

/// Room ids a message is about.
fn room_ids(m: &Message<'_>) -> Vec<u16> {
    match m {
        Message::ClientState(c) => c.rooms.iter().map(|r| r.room_id()).collect(),
        Message::VoiceData(v) => v
            .channels
            .iter()
            .filter(|c| c.bitfield.channel_type() == ChannelType::Room)
            .map(|c| c.recipient)
            .collect(),
        Message::TextData(t) if t.recipient_type() == Some(ChannelType::Room) => vec![t.target],
        Message::DeltaChannelState(d) => vec![d.name.room_id()],
        Message::HandshakeResponse(h) => h.rooms().map(|r| r.room_id).collect(),
        Message::ServerRelayReliable(_) | Message::ServerRelayUnreliable(_) => {
            relay_inner(m).map(|i| room_ids(&i)).unwrap_or_default()
        }
        _ => vec![],
    }
}

/// Totals over the whole input, for the summary.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub payloads: u64,
    pub packets: u64,
    pub malformed: u64,
    pub not_dissonance: u64,
    /// Of `not_dissonance`, payloads on a flow that carries Dissonance (either way):
    /// empty ones (the real reader throws on them) and the others.
    pub empty_on_flows: u64,
    pub other_on_flows: u64,
    pub byes: u64,
    pub printed: u64,
    pub by_type: crate::codec::TypeCounts,
    /// Packets by direction, type and (for relays) wrapped type.
    pub by_direction: DirectionCounts,
    /// Copies of packets a game stack sent again (not counted in `packets`).
    pub retransmitted: u64,
    /// Packets that could not be completed (a game stack's, or a scanned candidate
    /// cut off at the end of a datagram).
    pub cut: u64,
    /// Reliable units or fragments of a game stack that never appeared.
    pub lost_units: u64,
    pub first_ns: Option<i64>,
    pub last_ns: Option<i64>,
    /// The last payload's number (the capture's end, for [`Dissector::finish`]).
    pub last_number: u64,
}

/// Packets by direction, type and (for relays) wrapped type: a dense array, as it is
/// bumped for every packet.
#[derive(Debug, Clone)]
pub struct DirectionCounts(Vec<u64>);

impl Default for DirectionCounts {
    fn default() -> Self {
        DirectionCounts(vec![0; Self::DIRECTIONS.len() * 11 * 12])
    }
}

impl DirectionCounts {
    const DIRECTIONS: [Direction; 4] = [
        Direction::ClientToServer,
        Direction::ServerToClient,
        Direction::PeerToPeer,
        Direction::Unknown,
    ];

    fn index(dir: Direction, t: MessageType, inner: Option<MessageType>) -> usize {
        let inner = inner.map_or(0, |i| i as usize);
        (dir as usize * 11 + (t as usize - 1)) * 12 + inner
    }

    #[inline]
    pub fn add(&mut self, dir: Direction, t: MessageType, inner: Option<MessageType>) {
        self.0[Self::index(dir, t, inner)] += 1;
    }

    /// The non-zero counts, ordered by direction, type, wrapped type.
    pub fn iter(
        &self,
    ) -> impl Iterator<Item = ((Direction, MessageType, Option<MessageType>), u64)> + '_ {
        let inners = std::iter::once(None).chain(MessageType::ALL.iter().map(|&t| Some(t)));
        Self::DIRECTIONS
            .iter()
            .flat_map(|&d| MessageType::ALL.iter().map(move |&t| (d, t)))
            .flat_map(move |(d, t)| inners.clone().map(move |i| (d, t, i)))
            .map(|(d, t, i)| ((d, t, i), self.0[Self::index(d, t, i)]))
            .filter(|&(_, n)| n > 0)
    }
}

/// Payloads in, printed records out.
pub struct Dissector {
    pub locator: Locator,
    pub tracker: Tracker,
    pub filters: Filters,
    pub totals: Totals,
    /// Print session events (joins, room changes) between packets in text output.
    pub show_events: bool,
}

impl Dissector {
    pub fn new(mode: PayloadMode, filters: Filters) -> Dissector {
        let mut locator = Locator::new(mode);
        // Drained after every payload ([`Dissector::push`]).
        locator.keep_notes = true;
        Dissector {
            locator,
            tracker: Tracker::new(),
            filters,
            totals: Totals::default(),
            show_events: true,
        }
    }

    /// The locator, and the parts a located packet updates (borrowed apart).
    fn split(&mut self) -> (&mut Locator, Out<'_>) {
        let out = Out {
            tracker: &mut self.tracker,
            totals: &mut self.totals,
            filters: &self.filters,
            show_events: self.show_events,
        };
        (&mut self.locator, out)
    }

    /// Seconds since the first payload.
    pub fn rel(&self, ts_ns: i64) -> f64 {
        (ts_ns - self.totals.first_ns.unwrap_or(ts_ns)) as f64 / 1e9
    }

    /// Feeds one capture payload, unless an earlier write already failed: the first
    /// output error is kept in `io` so the capture callbacks need no error plumbing.
    pub fn push_payload<W: Write>(
        &mut self,
        p: &crate::capture::Payload<'_>,
        printer: Option<&mut Printer<W>>,
        io: &mut io::Result<()>,
    ) {
        if io.is_ok() {
            *io = self.push(&Datagram::from(p), printer);
        }
    }

    /// Processes one payload, printing what passes the filters.
    pub fn push<W: Write>(
        &mut self,
        d: &Datagram<'_>,
        printer: Option<&mut Printer<W>>,
    ) -> io::Result<()> {
        let t = &mut self.totals;
        t.payloads += 1;
        t.first_ns.get_or_insert(d.ts_ns);
        t.last_ns = Some(d.ts_ns);
        t.last_number = d.number;
        let rel = self.rel(d.ts_ns);
        let key = FlowKey {
            src: d.src,
            dst: d.dst,
            tcp: d.tcp,
        };
        let mut printer = printer;
        let mut result = Ok(());
        let (locator, mut out) = self.split();
        let mut index = 0;
        let class = locator.locate_at(key, d.number, d.ts_ns, d.data, |found| {
            if result.is_ok() {
                result = out.packet(d, rel, index, found, printer.as_deref_mut());
            }
            index += 1;
        });
        result?;
        let note = match class {
            Classified::Bye => {
                self.totals.byes += 1;
                self.tracker.observe_bye(d.ts_ns, d.src);
                Some(DatagramNote::Goodbye)
            }
            Classified::NotDissonance => {
                self.totals.not_dissonance += 1;
                let reverse = FlowKey {
                    src: d.dst,
                    dst: d.src,
                    tcp: d.tcp,
                };
                let carries = |k: &FlowKey| self.locator.flow(k).is_some_and(|f| f.packets > 0);
                // On a game stack's flow, or behind a transport header (a locked offset),
                // datagrams without Dissonance are the game's or the transport's own and
                // never reach the Dissonance reader.
                let own = self
                    .locator
                    .flow(&key)
                    .is_some_and(|f| f.stack().is_some() || f.locked.unwrap_or(0) > 0);
                if own || !(carries(&key) || carries(&reverse)) {
                    None
                } else {
                    self.tracker
                        .observe_undecoded(d.ts_ns, d.number, d.src, d.dst, d.data, None);
                    if d.data.is_empty() {
                        self.totals.empty_on_flows += 1;
                        Some(DatagramNote::Empty)
                    } else {
                        self.totals.other_on_flows += 1;
                        None
                    }
                }
            }
            Classified::TransportDisconnect => {
                self.tracker
                    .observe_transport_disconnect(d.ts_ns, d.src, d.dst);
                if let (Some(pr), true) = (printer.as_deref_mut(), self.show_events) {
                    while let Some(ev) = self.tracker.poll_event() {
                        if self.filters.matches_event(&ev, &self.tracker) {
                            pr.event(&ev, rel, &self.tracker.names(Some(ev.session())))?;
                        }
                    }
                }
                None
            }
            Classified::Cut | Classified::Dissonance(_) => None,
        };
        if let (Some(note), Some(pr)) = (note, printer.as_deref_mut()) {
            if self.filters.is_empty() {
                pr.datagram_note(note, d.number, d.ts_ns, rel, d.src, d.dst)?;
            }
            if self.show_events {
                while let Some(ev) = self.tracker.poll_event() {
                    if self.filters.matches_event(&ev, &self.tracker) {
                        pr.event(&ev, rel, &self.tracker.names(Some(ev.session())))?;
                    }
                }
            }
        }
        let noted = self.notes(d.ts_ns, rel, printer);
        // Events not printed (no printer, --no-events, filtered out) are dropped here,
        // or they would pile up for the whole capture.
        while self.tracker.poll_event().is_some() {}
        noted
    }

    /// The end of the input: the game-stack decoders give up what they still hold
    /// (packets held behind a gap are processed, incomplete ones reported and counted).
    pub fn finish<W: Write>(&mut self, printer: Option<&mut Printer<W>>) -> io::Result<()> {
        let (number, ts_ns) = (self.totals.last_number, self.totals.last_ns.unwrap_or(0));
        let rel = self.rel(ts_ns);
        let mut printer = printer;
        let mut result = Ok(());
        let (locator, mut out) = self.split();
        locator.finish(number, |key, found| {
            if result.is_ok() {
                let d = Datagram::at_end(key, number, ts_ns);
                // Not the first packet of a payload: no datagram bytes to count.
                result = out.packet(&d, rel, 1, found, printer.as_deref_mut());
            }
        });
        result?;
        self.notes(ts_ns, rel, printer)
    }

    /// Counts and prints what the locator noted (retransmitted copies, cut packets,
    /// losses), reported while the payload at `ts_ns` was read.
    fn notes<W: Write>(
        &mut self,
        ts_ns: i64,
        rel: f64,
        mut printer: Option<&mut Printer<W>>,
    ) -> io::Result<()> {
        while let Some(n) = self.locator.poll_note() {
            let decoded = match &n.kind {
                NoteKind::Retransmission { bytes, .. } => {
                    self.totals.retransmitted += 1;
                    Some(Packet::decode(bytes))
                }
                NoteKind::Cut { .. } => {
                    self.totals.cut += 1;
                    None
                }
                NoteKind::Lost { units, .. } => {
                    self.totals.lost_units += u64::from(*units);
                    None
                }
            };
            let Some(pr) = printer.as_deref_mut() else {
                continue;
            };
            // A copy is shown with what its packet would be; the rest unless a filter
            // asks for something specific.
            let pass = match &decoded {
                Some(Ok(p)) => self.filters.matches(p, &self.tracker),
                _ => self.filters.is_empty(),
            };
            if pass {
                let t = decoded.as_ref().and_then(|r| r.as_ref().ok());
                pr.transport_note(&n, ts_ns, rel, t.map(|p| p.message_type()))?;
            }
        }
        Ok(())
    }
}

/// The parts of a [`Dissector`] a located packet updates (the locator being busy).
struct Out<'d> {
    tracker: &'d mut Tracker,
    totals: &'d mut Totals,
    filters: &'d Filters,
    show_events: bool,
}

impl Out<'_> {
    /// One packet found in payload `d` (the `index`-th of it): tracked, counted and
    /// printed if it passes the filters.
    fn packet<W: Write>(
        &mut self,
        d: &Datagram<'_>,
        rel: f64,
        index: usize,
        found: Found<'_>,
        printer: Option<&mut Printer<W>>,
    ) -> io::Result<()> {
        let (tracker, totals) = (&mut *self.tracker, &mut *self.totals);
        totals.packets += 1;
        let direction = match &found.result {
            Ok(p) => {
                totals.by_type.add(p.message_type());
                let dir = tracker.observe(d.ts_ns, d.src, d.dst, p);
                let inner = tracker.last_relayed_type();
                totals.by_direction.add(dir, p.message_type(), inner);
                dir
            }
            Err(e) => {
                totals.malformed += 1;
                tracker.observe_undecoded(d.ts_ns, d.number, d.src, d.dst, found.bytes, Some(e))
            }
        };
        if index == 0 {
            tracker.count_bytes(d.src, d.data.len());
        }
        let Some(pr) = printer else {
            return Ok(());
        };
        let session = found.result.as_ref().ok().and_then(|p| p.message.session());
        if self.show_events {
            while let Some(ev) = tracker.poll_event() {
                if self.filters.matches_event(&ev, tracker) {
                    pr.event(&ev, rel, &tracker.names(Some(ev.session())))?;
                }
            }
        }
        let pass = match &found.result {
            Ok(p) => self.filters.matches(p, tracker),
            // Malformed packets are shown unless a filter asks for something specific.
            Err(_) => self.filters.is_empty(),
        };
        if !pass {
            return Ok(());
        }
        totals.printed += 1;
        let rec = Record {
            head: Head {
                number: d.number,
                ts_ns: d.ts_ns,
                rel_s: rel,
                src: d.src,
                dst: d.dst,
                transport: if d.tcp { "tcp" } else { "udp" },
                offset: found.offset,
                first_frame: found.elsewhere.map(|e| e.0),
                index,
                direction,
            },
            bytes: found.bytes,
            result: &found.result,
        };
        pr.record_tracked(&rec, tracker, session)
    }
}
