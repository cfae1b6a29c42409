//! The dump pipeline shared by `dump`, `sniff` and `proxy`: transport payloads in,
//! located and decoded packets out, with the session tracker annotating them, filters
//! applied and totals counted. No I/O of its own: the caller feeds payloads and gives a
//! [`RecordSink`] to write to (the printers implement it).

use std::io;
use std::net::SocketAddr;

use crate::capture::Payload;
use crate::codec::{ChannelType, Message, MessageType, Packet};
use crate::dissect::filter::{Filter, Subject};
use crate::dissect::front::{self, dissect, PacketSink};
use crate::dissect::locate::{FlowKey, Found, Locator, Note, NoteKind, PayloadMode};
use crate::dissect::record::{DatagramNote, Head, Record};
use crate::dissect::session::{Direction, Tracker};
use crate::dissect::session::{SessionEvent, SessionNames};

/// Where the packets that pass the filters go, with the session events and datagram
/// notes (goodbyes, empty datagrams) between them (the printers implement it).
pub trait RecordSink {
    fn on_record(
        &mut self,
        r: &Record<'_, '_>,
        tracker: &Tracker,
        session: Option<u32>,
    ) -> io::Result<()>;
    fn on_event(
        &mut self,
        ev: &SessionEvent,
        rel_s: f64,
        names: &SessionNames<'_>,
    ) -> io::Result<()>;
    fn on_note(
        &mut self,
        note: DatagramNote,
        number: u64,
        ts_ns: i64,
        rel_s: f64,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> io::Result<()>;
    /// A game stack's retransmitted copy, a cut packet or lost units, reported while
    /// the payload at `ts_ns` was read; `copy_of` is the type a copy's packet decodes to.
    fn on_transport_note(
        &mut self,
        note: &Note,
        ts_ns: i64,
        rel_s: f64,
        copy_of: Option<MessageType>,
    ) -> io::Result<()>;
}

/// Which packets to print: a display filter (`-Y`), its shorthands (`--type`,
/// `--client`, `--room`, `--session`) and a time window (`--from`, `--to`). All given
/// must match. Session tracking always sees every packet.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub types: Vec<MessageType>,
    /// Client names or ids.
    pub clients: Vec<String>,
    /// Room names or ids.
    pub rooms: Vec<String>,
    pub sessions: Vec<u32>,
    /// `-Y EXPR`.
    pub expr: Option<Filter>,
    /// `--from`: packets at or after this time.
    pub from: Option<TimeBound>,
    /// `--to`: packets at or before this time.
    pub to: Option<TimeBound>,
}

/// A point on the capture's timeline: absolute, or seconds from its first packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeBound {
    /// Unix time in nanoseconds.
    At(i64),
    /// Seconds since the first packet.
    Rel(f64),
}

impl TimeBound {
    fn before(self, ts_ns: i64, rel_s: f64) -> bool {
        match self {
            TimeBound::At(t) => ts_ns < t,
            TimeBound::Rel(r) => rel_s < r,
        }
    }
    fn after(self, ts_ns: i64, rel_s: f64) -> bool {
        match self {
            TimeBound::At(t) => ts_ns > t,
            TimeBound::Rel(r) => rel_s > r,
        }
    }
}

/// Which of the selected packets to keep: `--skip N` drops the first N, `-c N` stops
/// after N.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub skip: u64,
    pub count: Option<u64>,
}

impl Filters {
    /// No shorthand filter, no expression, no time window.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
            && self.clients.is_empty()
            && self.rooms.is_empty()
            && self.sessions.is_empty()
            && self.expr.is_none()
            && self.from.is_none()
            && self.to.is_none()
    }

    fn shorthands_empty(&self) -> bool {
        self.types.is_empty()
            && self.clients.is_empty()
            && self.rooms.is_empty()
            && self.sessions.is_empty()
    }

    /// Whether a packet found in a capture passes every filter.
    pub fn select(
        &self,
        head: &Head,
        bytes: &[u8],
        result: &Result<Packet<'_>, crate::codec::DecodeError>,
        tracker: &Tracker,
        session: Option<u32>,
    ) -> bool {
        if self.from.is_some_and(|f| f.before(head.ts_ns, head.rel_s))
            || self.to.is_some_and(|t| t.after(head.ts_ns, head.rel_s))
        {
            return false;
        }
        let short = match result {
            Ok(p) => self.matches(p, tracker),
            // Malformed packets pass unless a shorthand asks for something specific.
            Err(_) => self.shorthands_empty(),
        };
        short
            && self.expr.as_ref().is_none_or(|f| {
                f.matches(&Subject {
                    head: Some(head),
                    bytes,
                    result,
                    names: &tracker.names(session),
                })
            })
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
    /// `--skip`, `-c`.
    pub limits: Limits,
    /// Packets that passed the filters so far (including those `--skip` dropped).
    pub selected: u64,
    /// Select packets even when no printer is given (to write them, count them).
    pub always_select: bool,
    /// Set when a packet of the current input frame was kept; the caller clears it
    /// (`dump -w` writes the frame then).
    pub frame_kept: bool,
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
            limits: Limits::default(),
            selected: 0,
            always_select: false,
            frame_kept: false,
        }
    }

    /// `-c N` reached: nothing more will be kept, the caller may stop reading.
    pub fn done(&self) -> bool {
        self.limits.count.is_some_and(|c| self.totals.printed >= c)
    }

    /// Seconds since the first payload.
    pub fn rel(&self, ts_ns: i64) -> f64 {
        (ts_ns - self.totals.first_ns.unwrap_or(ts_ns)) as f64 / 1e9
    }

    /// Feeds one capture payload, unless an earlier write already failed: the first
    /// output error is kept in `io` so the capture callbacks need no error plumbing.
    pub fn push_payload<S: RecordSink>(
        &mut self,
        p: &Payload<'_>,
        printer: Option<&mut S>,
        io: &mut io::Result<()>,
    ) {
        if io.is_ok() {
            *io = self.push(p, printer);
        }
    }

    /// Processes one payload, printing what passes the filters.
    pub fn push<S: RecordSink>(
        &mut self,
        d: &Payload<'_>,
        printer: Option<&mut S>,
    ) -> io::Result<()> {
        let t = &mut self.totals;
        t.payloads += 1;
        t.first_ns.get_or_insert(d.ts_ns);
        t.last_ns = Some(d.ts_ns);
        t.last_number = d.frame_number;
        let rel = self.rel(d.ts_ns);
        let mut printer = printer;
        let (locator, mut feed) = self.feed(rel, printer.as_deref_mut());
        dissect(locator, d, &mut feed);
        feed.result?;
        let noted = self.notes(d.ts_ns, rel, printer);
        // Events not printed (no printer, --no-events, filtered out) are dropped here,
        // or they would pile up for the whole capture.
        while self.tracker.poll_event().is_some() {}
        noted
    }

    /// The end of the input: the game-stack decoders give up what they still hold
    /// (packets held behind a gap are processed, incomplete ones reported and counted).
    pub fn finish<S: RecordSink>(&mut self, printer: Option<&mut S>) -> io::Result<()> {
        let (number, ts_ns) = (self.totals.last_number, self.totals.last_ns.unwrap_or(0));
        let rel = self.rel(ts_ns);
        let mut printer = printer;
        let (locator, mut feed) = self.feed(rel, printer.as_deref_mut());
        front::finish(locator, number, ts_ns, &mut feed);
        feed.result?;
        self.notes(ts_ns, rel, printer)
    }

    /// The locator, and the rest as the front end's sink (borrowed apart).
    fn feed<'a, S: RecordSink>(
        &'a mut self,
        rel: f64,
        printer: Option<&'a mut S>,
    ) -> (&'a mut Locator, Feed<'a, S>) {
        let feed = Feed {
            rel,
            tracker: &mut self.tracker,
            totals: &mut self.totals,
            filters: &self.filters,
            pass_all: self.filters.is_empty(),
            show_events: self.show_events,
            always_select: self.always_select,
            limits: self.limits,
            selected: &mut self.selected,
            frame_kept: &mut self.frame_kept,
            printer,
            result: Ok(()),
        };
        (&mut self.locator, feed)
    }

    /// Counts and prints what the locator noted (retransmitted copies, cut packets,
    /// losses), reported while the payload at `ts_ns` was read. Checked for every
    /// payload and nearly always nothing: inlined up to that check.
    #[inline]
    fn notes<S: RecordSink>(
        &mut self,
        ts_ns: i64,
        rel: f64,
        printer: Option<&mut S>,
    ) -> io::Result<()> {
        if !self.locator.has_notes() {
            return Ok(());
        }
        self.print_notes(ts_ns, rel, printer)
    }

    fn print_notes<S: RecordSink>(
        &mut self,
        ts_ns: i64,
        rel: f64,
        mut printer: Option<&mut S>,
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
                pr.on_transport_note(&n, ts_ns, rel, t.map(|p| p.message_type()))?;
            }
        }
        Ok(())
    }
}

/// The dissector's state and the printer as the front end's sink, for one payload.
struct Feed<'a, S: RecordSink> {
    rel: f64,
    tracker: &'a mut Tracker,
    totals: &'a mut Totals,
    filters: &'a Filters,
    /// No filter at all (`filters.is_empty()`, asked once per payload): every packet
    /// is selected without asking the filters.
    pass_all: bool,
    show_events: bool,
    always_select: bool,
    limits: Limits,
    selected: &'a mut u64,
    frame_kept: &'a mut bool,
    printer: Option<&'a mut S>,
    /// The first write error: nothing more is printed for this payload.
    result: io::Result<()>,
}

impl<S: RecordSink> Feed<'_, S> {
    /// A datagram without a packet: its note (unless filters are on), then the events.
    fn note(&mut self, d: &Payload<'_>, note: DatagramNote) {
        let Some(pr) = self.printer.as_deref_mut() else {
            return;
        };
        // Notes are not packets: left out when packets are being selected or counted.
        if self.filters.is_empty() && self.limits.count.is_none() && self.limits.skip == 0 {
            if let Err(e) = pr.on_note(note, d.frame_number, d.ts_ns, self.rel, d.src, d.dst) {
                self.result = Err(e);
                return;
            }
        }
        if self.show_events {
            if let Err(e) = self.events() {
                self.result = Err(e);
            }
        }
    }

    /// Prints the session events the tracker has queued (asked for every packet, and
    /// nearly always none: inlined up to that check).
    #[inline]
    fn events(&mut self) -> io::Result<()> {
        if !self.tracker.has_events() {
            return Ok(());
        }
        self.print_events()
    }

    fn print_events(&mut self) -> io::Result<()> {
        let Some(pr) = self.printer.as_deref_mut() else {
            return Ok(());
        };
        while let Some(ev) = self.tracker.poll_event() {
            if self.filters.matches_event(&ev, self.tracker) {
                pr.on_event(&ev, self.rel, &self.tracker.names(Some(ev.session())))?;
            }
        }
        Ok(())
    }
}

impl<S: RecordSink> PacketSink for Feed<'_, S> {
    #[inline]
    fn tracker(&mut self) -> &mut Tracker {
        self.tracker
    }

    #[inline]
    fn packet(&mut self, d: &Payload<'_>, found: &Found<'_>, index: usize, direction: Direction) {
        if self.result.is_err() {
            return;
        }
        let totals = &mut *self.totals;
        totals.packets += 1;
        match &found.result {
            Ok(p) => {
                totals.by_type.add(p.message_type());
                let inner = self.tracker.last_relayed_type();
                totals.by_direction.add(direction, p.message_type(), inner);
            }
            Err(_) => totals.malformed += 1,
        }
        if index == 0 {
            self.tracker.count_bytes(d.src, d.data.len());
        }
        if self.printer.is_none() && !self.always_select {
            return;
        }
        let session = found.result.as_ref().ok().and_then(|p| p.message.session());
        if self.show_events {
            if let Err(e) = self.events() {
                self.result = Err(e);
                return;
            }
        }
        // Built in place, the head borrowed by the filters (moving it into the record
        // afterwards was a copy per packet).
        let rec = Record {
            head: Head::of(d, found, self.rel, index, direction),
            bytes: found.bytes,
            result: &found.result,
        };
        if self.limits.count.is_some_and(|c| self.totals.printed >= c)
            || !(self.pass_all
                || self.filters.select(
                    &rec.head,
                    found.bytes,
                    &found.result,
                    self.tracker,
                    session,
                ))
        {
            return;
        }
        *self.selected += 1;
        if *self.selected <= self.limits.skip {
            return;
        }
        self.totals.printed += 1;
        *self.frame_kept = true;
        let Some(pr) = self.printer.as_deref_mut() else {
            return;
        };
        self.result = pr.on_record(&rec, self.tracker, session);
    }

    fn bye(&mut self, d: &Payload<'_>) {
        self.totals.byes += 1;
        self.note(d, DatagramNote::Goodbye);
    }

    fn transport_disconnect(&mut self, _d: &Payload<'_>) {
        if self.show_events {
            if let Err(e) = self.events() {
                self.result = Err(e);
            }
        }
    }

    fn not_dissonance(&mut self, d: &Payload<'_>, locator: &Locator) {
        self.totals.not_dissonance += 1;
        let key = FlowKey::of(d);
        let carries = |k: &FlowKey| locator.flow(k).is_some_and(|f| f.packets > 0);
        // On a game stack's flow, or behind a transport header (a locked offset),
        // datagrams without Dissonance are the game's or the transport's own and never
        // reach the Dissonance reader.
        let own = locator
            .flow(&key)
            .is_some_and(|f| f.stack().is_some() || f.locked.unwrap_or(0) > 0);
        if own || !(carries(&key) || carries(&key.reverse())) {
            return;
        }
        self.tracker
            .observe_undecoded(d.ts_ns, d.frame_number, d.src, d.dst, d.data, None);
        if d.data.is_empty() {
            self.totals.empty_on_flows += 1;
            self.note(d, DatagramNote::Empty);
        } else {
            self.totals.other_on_flows += 1;
        }
    }
}
