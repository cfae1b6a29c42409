//! Finding Dissonance packets inside transport payloads. Real games wrap each packet in
//! their own transport's header, so a packet may start at any offset (docs/transports.md).
//!
//! `auto` takes offset 0 when a packet decodes there; otherwise it scans for the magic,
//! confirms a candidate by a full decode and by the session id staying the same within
//! the flow, and after three confirmations locks that offset for the flow. Several
//! packets in one payload are all found (each scan resumes after the previous packet).

use rustc_hash::FxHashMap;
use std::net::SocketAddr;

use crate::capture::{Payload, Transport};
use crate::codec::{has_magic, DecodeError, DecodeErrorKind, MessageType, Packet};
use crate::dissect::transport::{
    Confidence, CutReason, Detector, Event, Stack, StackDecoder, TransportStats,
};

/// How to find packets in a payload (`--payload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadMode {
    /// A game stack detected per flow, else offset 0 if it decodes, else scan and
    /// lock per flow.
    Auto,
    /// `auto` without the game-stack detection: offset 0 or the magic scan only
    /// (what a heuristic dissector such as Wireshark's does).
    Scan,
    /// Packets start at offset 0 (and follow each other back to back).
    Raw,
    /// Packets start at this fixed offset.
    Offset(usize),
    /// Packets are carried by a game networking stack (`mirror`, `ngo`, `fishnet`).
    Stack(Stack),
}

impl PayloadMode {
    /// Finds packets by the magic scan (`auto`, `scan`).
    pub fn scans(self) -> bool {
        matches!(self, PayloadMode::Auto | PayloadMode::Scan)
    }
}

impl std::str::FromStr for PayloadMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(PayloadMode::Auto),
            "scan" => Ok(PayloadMode::Scan),
            "raw" => Ok(PayloadMode::Raw),
            _ if Stack::from_payload_word(s).is_some() => Ok(PayloadMode::Stack(
                Stack::from_payload_word(s).unwrap_or(Stack::MirrorKcp2k),
            )),
            _ => match s.strip_prefix("offset:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(PayloadMode::Offset(n)),
                _ => Err(format!(
                    "'{s}' is not auto, scan, raw, offset:N (N a byte count), mirror, ngo or fishnet"
                )),
            },
        }
    }
}

/// A directional flow: source and destination address and the transport. Not a
/// datagram's metadata (that is [`Payload`]): the key the locator learns a flow's
/// packet offset under, shared by every datagram of the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub tcp: bool,
}

impl FlowKey {
    /// The flow a datagram belongs to.
    pub fn of(p: &Payload<'_>) -> FlowKey {
        FlowKey {
            src: p.src,
            dst: p.dst,
            tcp: p.transport == Transport::Tcp,
        }
    }

    /// The same flow in the other direction.
    pub fn reverse(self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            tcp: self.tcp,
        }
    }
}

/// Two words instead of the derived field-by-field hash (discriminants, length-prefixed
/// octets, ports): the key is hashed for every payload.
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let (a, b) = self.words();
        h.write_u64(a);
        h.write_u64(b);
    }
}

/// An address folded into one word (exact for IPv4): cheap to hash for the small
/// direct-mapped caches that sit in front of per-address maps.
pub fn addr_word(a: &SocketAddr) -> u64 {
    match a {
        SocketAddr::V4(v) => (u64::from(u32::from(*v.ip())) << 16) | u64::from(v.port()),
        SocketAddr::V6(v) => {
            let b = u128::from(*v.ip());
            ((b as u64) ^ ((b >> 64) as u64)).rotate_left(16) ^ u64::from(v.port()) ^ (1 << 63)
        }
    }
}

/// A slot among `1 << bits` from a word: Fibonacci hashing (multiply, keep the top
/// bits), enough to spread the few keys of a direct-mapped cache.
pub fn slot_of(h: u64, bits: u32) -> usize {
    (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

impl FlowKey {
    fn words(&self) -> (u64, u64) {
        (
            addr_word(&self.src) ^ (u64::from(self.tcp) << 62),
            addr_word(&self.dst),
        )
    }

    /// A slot in [`Locator`]'s cache of recent flows.
    fn slot(&self) -> usize {
        let (a, b) = self.words();
        slot_of(a ^ b.rotate_left(29), RECENT_BITS)
    }
}

/// What the locator knows about one flow (`dump --flows`).
#[derive(Debug, Clone, Default)]
pub struct FlowInfo {
    pub payloads: u64,
    pub packets: u64,
    pub malformed: u64,
    pub not_dissonance: u64,
    pub byes: u64,
    /// Offsets at which packets were found, with counts (see [`FlowInfo::offsets`]).
    offsets: FxHashMap<usize, u64>,
    /// The offset of the latest packets and how many since it last changed: a flow
    /// nearly always keeps its offset, and a compare is cheaper than a hash lookup.
    hot: Option<(usize, u64)>,
    /// The offset locked by `auto` after repeated confirmations.
    pub locked: Option<usize>,
    candidate: Option<(usize, u32)>,
    pub session: Option<u32>,
    pub session_changes: u64,
    /// `auto`'s per-flow stack detection (untouched in the other modes).
    detector: Detector,
    /// The game stack decoding this flow, once named or detected.
    decoder: Option<Box<StackDecoder>>,
    pub transport_disconnects: u64,
    /// Candidate packets the scan found cut off at the end of a datagram.
    pub scan_cut: u64,
}

impl FlowInfo {
    /// Offsets at which packets were found, with counts, by offset.
    pub fn offsets(&self) -> Vec<(usize, u64)> {
        let mut all = self.offsets.clone();
        if let Some((o, c)) = self.hot {
            *all.entry(o).or_default() += c;
        }
        let mut v: Vec<_> = all.into_iter().collect();
        v.sort_unstable();
        v
    }

    fn count_offset(&mut self, at: usize) {
        count_offset(&mut self.hot, &mut self.offsets, at);
    }

    /// The game stack carrying this flow and how sure that is (named: high).
    pub fn stack(&self) -> Option<(Stack, Confidence)> {
        match (&self.decoder, self.detector.decided()) {
            (Some(d), None) => Some((d.stack(), Confidence::High)),
            (_, decided) => decided,
        }
    }

    /// The stack decoder's counters (retransmissions, joined, cut, lost…).
    pub fn transport(&self) -> Option<&TransportStats> {
        self.decoder.as_deref().map(StackDecoder::stats)
    }

    /// How sure we are that this flow carries Dissonance: `high`, `medium`, `low`, `none`.
    pub fn confidence(&self) -> &'static str {
        if self.packets == 0 {
            "none"
        } else if self.packets >= 3
            && self.session_changes <= 1
            && self.malformed * 10 <= self.packets
        {
            "high"
        } else if self.packets >= 2 {
            "medium"
        } else {
            "low"
        }
    }
}

fn count_offset(hot: &mut Option<(usize, u64)>, offsets: &mut FxHashMap<usize, u64>, at: usize) {
    match hot {
        Some((o, c)) if *o == at => *c += 1,
        hot => {
            if let Some((o, c)) = hot.take() {
                *offsets.entry(o).or_default() += c;
            }
            *hot = Some((at, 1));
        }
    }
}

/// One packet found in a payload (decoded, or malformed but with magic and a valid type).
pub struct Found<'a> {
    /// Where it starts in the payload (in frame `elsewhere.0`'s payload when set).
    pub offset: usize,
    /// A game stack delivered it from other datagrams: (frame of its first byte,
    /// frame of its last byte). `bytes` then comes from a reassembly buffer.
    pub elsewhere: Option<(u64, u64)>,
    /// The bytes from the packet's first byte to the end of the payload region it used.
    pub bytes: &'a [u8],
    pub result: Result<Packet<'a>, DecodeError>,
}

/// What the locator reports besides packets: a game stack's retransmitted copies and
/// what could not be completed (printed by `dump`, counted in its summary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub flow: FlowKey,
    pub kind: NoteKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoteKind {
    /// A Dissonance packet in a unit the stack sent again: a copy, not a new packet.
    Retransmission {
        frame: u64,
        offset: usize,
        bytes: Vec<u8>,
        /// Where the unit was first seen, when still remembered.
        original_frame: Option<u64>,
    },
    /// A Dissonance packet that cannot be completed: the bytes present from its first.
    Cut {
        frame: u64,
        offset: usize,
        bytes: Vec<u8>,
        /// The length its framing announced (unknown to the magic scan).
        announced: Option<usize>,
        reason: CutReason,
    },
    /// Reliable units or fragments that never appeared (their contents unknown).
    Lost {
        frame: u64,
        units: u32,
        reason: CutReason,
    },
}

/// How a payload was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// This many Dissonance packets (well-formed or malformed) were found.
    Dissonance(usize),
    /// The plain UDP transport's goodbye datagram `00 42 59 45`.
    Bye,
    /// A game stack's own disconnect (kcp `05`, UTP Disconnect, LiteNetLib `07`),
    /// first of its connection.
    TransportDisconnect,
    /// Nothing that looks like Dissonance.
    NotDissonance,
    /// No whole packet, but the start of one cut off (reported as a [`Note`]).
    Cut,
}

/// The goodbye datagram of the plain UDP transport.
pub const BYE: [u8; 4] = [0x00, 0x42, 0x59, 0x45];

/// Lock an offset after this many confirmations with a stable session.
const LOCK_AFTER: u32 = 3;

/// log2 of the number of slots in [`Locator`]'s cache of recent flows.
const RECENT_BITS: u32 = 6;

/// The per-flow packet locator.
#[derive(Debug)]
pub struct Locator {
    mode: PayloadMode,
    flows: Vec<(FlowKey, FlowInfo)>,
    index: FxHashMap<FlowKey, usize>,
    /// Looked up for every payload, so a direct-mapped cache of `index` (entry + 1, 0
    /// when empty) sits in front of it: a slot and a compare instead of a map probe.
    recent: [usize; 1 << RECENT_BITS],
    /// Reported and not yet taken by [`Locator::poll_note`].
    notes: std::collections::VecDeque<Note>,
    /// Keep notes at all (a caller that never polls leaves this off: memory stays
    /// constant, and the decoders still count everything).
    pub keep_notes: bool,
}

impl Locator {
    pub fn new(mode: PayloadMode) -> Locator {
        Locator {
            mode,
            flows: Vec::new(),
            index: FxHashMap::default(),
            recent: [0; 1 << RECENT_BITS],
            notes: std::collections::VecDeque::new(),
            keep_notes: false,
        }
    }

    /// The next retransmission, cut packet or loss reported, in the order found.
    pub fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    /// Notes are waiting for [`Locator::poll_note`].
    #[inline]
    pub fn has_notes(&self) -> bool {
        !self.notes.is_empty()
    }

    /// The capture ended at `frame`: every game-stack decoder gives up what it still
    /// holds. Packets it was holding behind a gap are handed to `found` (with their
    /// flow); incomplete reassemblies become [`Note`]s.
    pub fn finish(&mut self, frame: u64, mut found: impl FnMut(FlowKey, Found<'_>)) {
        for (key, flow) in &mut self.flows {
            let Some(mut decoder) = flow.decoder.take() else {
                continue;
            };
            let key = *key;
            let notes = &mut self.notes;
            let keep = self.keep_notes;
            decoder.finish(frame, &mut |e| {
                on_stack_event(flow, key, notes, keep, e, frame, &mut |f| found(key, f));
            });
            flow.decoder = Some(decoder);
        }
    }

    /// How packets are found (`--payload`).
    pub fn mode(&self) -> PayloadMode {
        self.mode
    }

    /// Every flow seen, in order of first appearance.
    pub fn flows(&self) -> impl Iterator<Item = (&FlowKey, &FlowInfo)> {
        self.flows.iter().map(|(k, f)| (k, f))
    }

    /// What is known about one flow.
    pub fn flow(&self, key: &FlowKey) -> Option<&FlowInfo> {
        self.index.get(key).map(|&i| &self.flows[i].1)
    }

    fn flow_index(&mut self, key: FlowKey) -> usize {
        let slot = key.slot();
        match self.recent[slot].checked_sub(1) {
            Some(i) if self.flows[i].0 == key => i,
            _ => {
                let flows = &mut self.flows;
                let i = *self.index.entry(key).or_insert_with(|| {
                    flows.push((key, FlowInfo::default()));
                    flows.len() - 1
                });
                self.recent[slot] = i + 1;
                i
            }
        }
    }

    /// Finds the packets in `data`, calling `found` for each in order.
    pub fn locate(
        &mut self,
        key: FlowKey,
        data: &[u8],
        found: impl FnMut(Found<'_>),
    ) -> Classified {
        self.locate_at(key, 0, 0, data, found)
    }

    /// [`Locator::locate`] for payload `number` captured at `ts_ns`: game stacks need
    /// both (packets joined from several frames, gaps given up after a time).
    pub fn locate_at(
        &mut self,
        key: FlowKey,
        number: u64,
        ts_ns: i64,
        data: &[u8],
        mut found: impl FnMut(Found<'_>),
    ) -> Classified {
        let mode = self.mode;
        // One lookup per payload (through the recent-flows cache): this runs for every
        // payload.
        let i = self.flow_index(key);
        // Both directions of a connection speak one stack: an undecided flow adopts
        // what a handshake settled for the reverse one (looked up only while undecided).
        let mut reverse = None;
        if mode == PayloadMode::Auto && !key.tcp {
            let f = &self.flows[i].1;
            let undecided = f.decoder.is_none() && f.detector.undecided();
            if undecided {
                let back = FlowKey {
                    src: key.dst,
                    dst: key.src,
                    tcp: false,
                };
                reverse = self
                    .flow(&back)
                    .and_then(FlowInfo::stack)
                    .filter(|s| s.1 == Confidence::High)
                    .map(|s| s.0);
            }
        }
        let notes = &mut self.notes;
        let keep = self.keep_notes;
        let flow = &mut self.flows[i].1;
        flow.payloads += 1;
        let stack = match mode {
            PayloadMode::Stack(s) => Some(s),
            // Cheap signature tests, only while the flow is undecided.
            PayloadMode::Auto if key.tcp => None,
            PayloadMode::Auto => match flow.decoder.as_deref() {
                Some(d) => Some(d.stack()),
                None => reverse.or_else(|| flow.detector.observe(data).map(|d| d.0)),
            },
            _ => None,
        };
        if let Some(stack) = stack {
            return locate_stack(
                flow,
                (key, notes, keep),
                stack,
                (number, ts_ns),
                data,
                found,
            );
        }
        if data == BYE {
            flow.byes += 1;
            return Classified::Bye;
        }
        let mut n = 0;
        let mut at = match mode {
            PayloadMode::Raw | PayloadMode::Stack(_) => 0,
            PayloadMode::Offset(o) => o,
            PayloadMode::Auto | PayloadMode::Scan => match flow.locked {
                Some(o) if data.get(o..).is_some_and(has_magic) => o,
                _ => {
                    if looks_like_packet(data) {
                        0
                    } else {
                        match scan(data, 0) {
                            Some(o) => o,
                            None => {
                                flow.not_dissonance += 1;
                                return Classified::NotDissonance;
                            }
                        }
                    }
                }
            },
        };
        // A scanned candidate whose decode ran off the end of the datagram: the start
        // of a packet the transport cut, unless a whole packet is found inside it.
        let mut cut_at = None;
        while let Some(bytes) = data.get(at..) {
            if !looks_like_packet(bytes) {
                break;
            }
            let result = Packet::decode(bytes);
            let first = n == 0;
            match &result {
                Ok(p) => {
                    flow.packets += 1;
                    flow.count_offset(at);
                    note_session(flow, p, at, first && mode.scans());
                    cut_at = None;
                }
                Err(e) => {
                    // In an unlocked flow a malformed "packet" at a scanned offset is more
                    // likely a coincidental magic in other data than a broken packet.
                    let trusted = !mode.scans() || at == 0 || flow.locked == Some(at);
                    if !trusted {
                        if matches!(e.kind, DecodeErrorKind::Truncated { .. }) {
                            cut_at.get_or_insert(at);
                        }
                        if let Some(next) = scan(data, at + 1) {
                            at = next;
                            continue;
                        }
                        break;
                    }
                    flow.malformed += 1;
                }
            }
            // A packet's record runs to where the next packet starts (or to the end of the
            // payload); what its decode left over before that is its trailing data. Then
            // decoding `Found::bytes` again gives exactly `Found::result`.
            let (used, result) = match result {
                Ok(mut p) => {
                    let consumed = bytes.len() - p.trailing.len();
                    let end = if p.trailing.is_empty() {
                        bytes.len()
                    } else if mode.scans() {
                        scan(bytes, consumed).unwrap_or(bytes.len())
                    } else if looks_like_packet(&bytes[consumed..]) {
                        consumed
                    } else {
                        bytes.len()
                    };
                    p.trailing = &bytes[consumed..end];
                    (end, Ok(p))
                }
                Err(e) => (bytes.len(), Err(e)),
            };
            found(Found {
                offset: at,
                elsewhere: None,
                bytes: &bytes[..used.max(1).min(bytes.len())],
                result,
            });
            n += 1;
            let next = at + used.max(1);
            at = match mode {
                PayloadMode::Auto | PayloadMode::Scan => match scan(data, next) {
                    Some(o) => o,
                    None => break,
                },
                _ => next,
            };
        }
        if let Some(at) = cut_at {
            flow.scan_cut += 1;
            if self.keep_notes {
                self.notes.push_back(Note {
                    flow: key,
                    kind: NoteKind::Cut {
                        frame: number,
                        offset: at,
                        bytes: data[at..].to_vec(),
                        announced: None,
                        reason: CutReason::Truncated,
                    },
                });
            }
        }
        match (n, cut_at) {
            (0, Some(_)) => Classified::Cut,
            (0, None) => {
                flow.not_dissonance += 1;
                Classified::NotDissonance
            }
            (n, _) => Classified::Dissonance(n),
        }
    }
}

/// A payload of a flow carried by a game stack: the stack's decoder finds the packets.
fn locate_stack(
    flow: &mut FlowInfo,
    (key, notes, keep): (FlowKey, &mut std::collections::VecDeque<Note>, bool),
    stack: Stack,
    (number, ts_ns): (u64, i64),
    data: &[u8],
    mut found: impl FnMut(Found<'_>),
) -> Classified {
    // Out of the flow while it runs, so its events can update the flow.
    let mut decoder = flow
        .decoder
        .take()
        .unwrap_or_else(|| Box::new(StackDecoder::new(stack)));
    let mut outcome = StackOutcome::default();
    decoder.push(number, ts_ns, data, &mut |e| {
        outcome.add(on_stack_event(
            flow, key, notes, keep, e, number, &mut found,
        ));
    });
    flow.decoder = Some(decoder);
    if outcome.disconnect {
        flow.transport_disconnects += 1;
    }
    match outcome {
        StackOutcome { packets: n, .. } if n > 0 => Classified::Dissonance(n),
        StackOutcome {
            disconnect: true, ..
        } => Classified::TransportDisconnect,
        StackOutcome { cut: true, .. } => Classified::Cut,
        _ => {
            flow.not_dissonance += 1;
            Classified::NotDissonance
        }
    }
}

/// What a stack decoder reported for one payload.
#[derive(Debug, Clone, Copy, Default)]
struct StackOutcome {
    packets: usize,
    disconnect: bool,
    /// Something was reported cut or lost (the payload is not foreign traffic).
    cut: bool,
}

impl StackOutcome {
    fn add(&mut self, o: StackOutcome) {
        self.packets += o.packets;
        self.disconnect |= o.disconnect;
        self.cut |= o.cut;
    }
}

/// One event of a flow's stack decoder, reported while payload `number` was read:
/// packets to `found`, copies and what cannot be completed to `notes`.
fn on_stack_event(
    flow: &mut FlowInfo,
    key: FlowKey,
    notes: &mut std::collections::VecDeque<Note>,
    keep: bool,
    e: Event<'_>,
    number: u64,
    found: &mut dyn FnMut(Found<'_>),
) -> StackOutcome {
    let mut outcome = StackOutcome::default();
    let mut note = |kind| {
        if keep {
            notes.push_back(Note { flow: key, kind })
        }
    };
    match e {
        Event::Packet(c) => {
            let result = Packet::decode(c.bytes);
            match &result {
                Ok(p) => {
                    flow.packets += 1;
                    if let Some(s) = p.message.session() {
                        flow.session_changes += u64::from(flow.session.is_some_and(|o| o != s));
                        flow.session = Some(s);
                    }
                }
                Err(_) => flow.malformed += 1,
            }
            let here = c.frame == number && !c.joined();
            if here {
                count_offset(&mut flow.hot, &mut flow.offsets, c.offset);
            }
            outcome.packets = 1;
            found(Found {
                offset: c.offset,
                elsewhere: (!here).then_some((c.frame, c.last_frame)),
                bytes: c.bytes,
                result,
            });
        }
        Event::Disconnect { .. } => outcome.disconnect = true,
        Event::Retransmitted {
            packet,
            original_frame,
        } => note(NoteKind::Retransmission {
            frame: packet.frame,
            offset: packet.offset,
            bytes: packet.bytes.to_vec(),
            original_frame,
        }),
        Event::Cut {
            frame,
            offset,
            bytes,
            announced,
            reason,
        } => {
            outcome.cut = true;
            note(NoteKind::Cut {
                frame,
                offset,
                bytes: bytes.to_vec(),
                announced: Some(announced),
                reason,
            })
        }
        Event::Lost {
            frame,
            units,
            reason,
        } => {
            outcome.cut = true;
            note(NoteKind::Lost {
                frame,
                units,
                reason,
            })
        }
        // Counted in the decoder's stats (the unit; its packets come as Retransmitted)
        // and shown by `--flows`.
        Event::Retransmission { .. } | Event::Malformed { .. } => {}
    }
    outcome
}

/// Magic followed by a valid type byte.
fn looks_like_packet(b: &[u8]) -> bool {
    has_magic(b) && b.get(2).is_some_and(|&t| MessageType::from_u8(t).is_some())
}

/// The next offset ≥ `from` where a packet could start.
fn scan(data: &[u8], from: usize) -> Option<usize> {
    let hay = data.get(from..)?;
    hay.windows(3).position(looks_like_packet).map(|p| p + from)
}

fn note_session(flow: &mut FlowInfo, p: &Packet<'_>, at: usize, may_lock: bool) {
    let session = p.message.session();
    if let Some(s) = session {
        match flow.session {
            Some(old) if old != s => flow.session_changes += 1,
            _ => {}
        }
        flow.session = Some(s);
    }
    if !may_lock || flow.locked.is_some() {
        return;
    }
    let stable = flow.session_changes == 0;
    flow.candidate = match flow.candidate {
        Some((o, c)) if o == at && stable => Some((o, c + 1)),
        _ => Some((at, 1)),
    };
    if let Some((o, c)) = flow.candidate {
        if c >= LOCK_AFTER {
            flow.locked = Some(o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FlowKey {
        FlowKey {
            src: "127.0.0.1:1".parse().unwrap(),
            dst: "127.0.0.1:2".parse().unwrap(),
            tcp: false,
        }
    }
    const REMOVE: [u8; 9] = [0x8b, 0xc7, 0x0a, 0, 0, 0, 7, 0, 1];

    #[test]
    fn finds_wrapped_packets_and_locks_the_offset() {
        let mut l = Locator::new(PayloadMode::Auto);
        for _ in 0..3 {
            let mut data = vec![0xAA, 0x01, 0x02, 0x03, 0x8b];
            data.extend_from_slice(&REMOVE);
            let mut offsets = vec![];
            assert_eq!(
                l.locate(key(), &data, |f| offsets.push(f.offset)),
                Classified::Dissonance(1)
            );
            assert_eq!(offsets, [5]);
        }
        assert_eq!(l.flow(&key()).unwrap().locked, Some(5));
        assert_eq!(l.flow(&key()).unwrap().confidence(), "high");
    }

    #[test]
    fn several_packets_in_one_payload() {
        let mut l = Locator::new(PayloadMode::Auto);
        let mut data = vec![0x00, 0x09];
        data.extend_from_slice(&REMOVE);
        data.extend_from_slice(&[0x00, 0x09]);
        data.extend_from_slice(&REMOVE);
        let mut offsets = vec![];
        assert_eq!(
            l.locate(key(), &data, |f| offsets.push(f.offset)),
            Classified::Dissonance(2)
        );
        assert_eq!(offsets, [2, 13]);
    }

    #[test]
    fn trailing_data_runs_to_the_next_packet() {
        for mode in [PayloadMode::Auto, PayloadMode::Raw] {
            let mut l = Locator::new(mode);
            let mut data = REMOVE.to_vec();
            data.extend_from_slice(&[0xee, 0xff]); // garbage after the first packet
            let garbage_end = data.len();
            let then_packet = mode == PayloadMode::Auto;
            if then_packet {
                data.extend_from_slice(&REMOVE);
            }
            let mut got = vec![];
            l.locate(key(), &data, |f| {
                let again = Packet::decode(f.bytes).unwrap();
                let p = f.result.as_ref().unwrap();
                assert_eq!(again.trailing, p.trailing);
                got.push((f.offset, f.bytes.len(), p.trailing.to_vec()));
            });
            let mut want = vec![(0, garbage_end, vec![0xee, 0xff])];
            if then_packet {
                want.push((garbage_end, REMOVE.len(), vec![]));
            }
            assert_eq!(got, want, "{mode:?}");
        }
    }

    #[test]
    fn bye_and_other_traffic() {
        let mut l = Locator::new(PayloadMode::Auto);
        assert_eq!(l.locate(key(), &BYE, |_| {}), Classified::Bye);
        assert_eq!(l.locate(key(), b"hello", |_| {}), Classified::NotDissonance);
        assert_eq!(
            l.locate(key(), &[0x8b, 0xc7], |_| {}),
            Classified::NotDissonance
        );
    }

    /// The scan's candidate running off the end of a datagram is reported cut with the
    /// bytes present, not dropped; a locator nobody polls keeps no notes.
    #[test]
    fn scanned_candidate_cut_at_the_end_is_reported() {
        for mode in [PayloadMode::Scan, PayloadMode::Auto] {
            for keep in [true, false] {
                let mut l = Locator::new(mode);
                l.keep_notes = keep;
                let mut data = vec![0xAA, 0xBB, 0xCC];
                data.extend_from_slice(&REMOVE[..6]);
                assert_eq!(
                    l.locate_at(key(), 7, 0, &data, |_| panic!()),
                    Classified::Cut
                );
                let want = keep.then(|| Note {
                    flow: key(),
                    kind: NoteKind::Cut {
                        frame: 7,
                        offset: 3,
                        bytes: REMOVE[..6].to_vec(),
                        announced: None,
                        reason: CutReason::Truncated,
                    },
                });
                assert_eq!(l.poll_note(), want, "{mode:?}");
                assert_eq!(l.poll_note(), None);
                let f = l.flow(&key()).unwrap();
                assert_eq!((f.scan_cut, f.not_dissonance), (1, 0));
            }
        }
        // A whole packet inside a candidate that runs off the end (a HandshakeRequest
        // whose name length is far too long): the candidate was a coincidence, no cut.
        let mut l = Locator::new(PayloadMode::Scan);
        l.keep_notes = true;
        let mut data = vec![
            0xAA, 0x8b, 0xc7, 0x04, 0x01, 0, 0, 3, 0xc0, 0, 0, 0xbb, 0x80,
        ];
        data.extend_from_slice(&[0xff, 0xff]);
        data.extend_from_slice(&REMOVE);
        let mut offsets = vec![];
        l.locate(key(), &data, |f| offsets.push(f.offset));
        assert_eq!((offsets, l.poll_note()), (vec![15], None));
    }

    /// At the end of the capture a game stack's decoder gives up what it holds: the
    /// packet held behind a gap is found then (saying where it started), the gap noted.
    #[test]
    fn finish_hands_out_what_the_decoders_hold() {
        // FishNet reliable: `01 | seq | channel 02 | tick | broadcast of REMOVE`.
        let dgram = |seq: u8| {
            let mut d = vec![1, seq, 0, 2, 9, 0, 0, 0, 0x0C, 0x00, 0x7A, 0xA3, 20, 18];
            d.extend_from_slice(&REMOVE);
            d
        };
        let mut l = Locator::new(PayloadMode::Stack(Stack::FishNetTugboat));
        l.keep_notes = true;
        let mut got = vec![];
        l.locate_at(key(), 1, 0, &dgram(5), |f| {
            got.push((f.offset, f.elsewhere))
        });
        l.locate_at(key(), 2, 0, &dgram(7), |f| {
            got.push((f.offset, f.elsewhere))
        });
        assert_eq!(got, [(14, None)]);
        assert_eq!(l.poll_note(), None);
        l.finish(3, |k, f| {
            assert_eq!(k, key());
            got.push((f.offset, f.elsewhere))
        });
        assert_eq!(got, [(14, None), (14, Some((2, 2)))]);
        let gap = Note {
            flow: key(),
            kind: NoteKind::Lost {
                frame: 3,
                units: 1,
                reason: CutReason::Gap,
            },
        };
        assert_eq!((l.poll_note(), l.poll_note()), (Some(gap), None));
    }

    #[test]
    fn malformed_at_offset_zero_is_reported() {
        let mut l = Locator::new(PayloadMode::Auto);
        let mut n = 0;
        assert_eq!(
            l.locate(key(), &REMOVE[..8], |f| {
                assert!(f.result.is_err());
                n += 1
            }),
            Classified::Dissonance(1)
        );
        assert_eq!(n, 1);
    }
}
