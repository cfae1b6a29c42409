//! FishNet over Tugboat / LiteNetLib (GAME-TRANSPORTS §3).
//!
//! Datagram byte 0: bits 0–4 the packet property, bits 5–6 the connection number,
//! bit 7 fragmented (upstream LiteNetLib only). FishNet's fork numbers properties
//! 0 Unreliable, 1 Channeled, 2 Ack, 3 Ping, 4 Pong, 5 ConnectRequest,
//! 6 ConnectAccept, 7 Disconnect, …, 12 Merged, 13 ShutdownOk; upstream since
//! 2026-02 inserts ReliableMerged at 2 and shifts Ack… up by one. Channeled:
//! `seq u16 | channel id` (+ `fragment id u16 | part u16 | total u16` when
//! fragmented); Merged: `u16 size | packet` repeated. The data is a FishNet bundle:
//! a u32 tick, then packets back to back; a Dissonance packet is a broadcast
//! `0C 00 | 7A A3 | zz(len data) | zz(len packet) | packet`. A message over FishNet's
//! MTU travels as `PacketId.Split` pieces on the reliable channel, joined here.

use super::reliable::{settle, Reorder};
use super::{
    emit_assembled, emit_in_place, u16_le, u32_le, Assembly, Confidence, CutReason, Sink, Span,
    TransportStats,
};

/// FishNet's broadcast packet id and the Dissonance broadcast's key, as on the wire.
pub const BROADCAST: [u8; 4] = [0x0C, 0x00, 0x7A, 0xA3];
/// LiteNetLib's sequence space (`NetConstants.MaxSequence`).
const SEQ_BITS: u32 = 15;
const WINDOW: u32 = 64;
const FRAGMENT_HEADER: usize = 6;
/// Fragments of one message held at most (LiteNetLib caps a message's parts too).
const MAX_FRAGMENT_BYTES: usize = 1 << 20;
/// Fragmented messages being joined at once, per flow.
const MAX_FRAGMENT_GROUPS: usize = 8;
/// FishNet's `PacketId.Split` as it starts a bundle's first packet.
const SPLIT_ID: [u8; 2] = [0x02, 0x00];
/// Pieces of one split message taken at most (a larger count is not a split header:
/// the joined bytes are capped at `MAX_FRAGMENT_BYTES` anyway).
const MAX_SPLIT_PIECES: i64 = 1024;

/// FishNet's own split of a message larger than its MTU (`TransportManager.
/// SendSplitData`, `SplitReader`): every piece is a bundle of its own on the reliable
/// channel, `tick u32 | 02 00 | zz(pieces) | chunk`, with no piece index: the reliable
/// ordered channel delivers them in order, and the chunks joined are read as packets
/// back to back.
#[derive(Debug, Clone, Default)]
struct Split {
    expected: u32,
    received: u32,
    joined: Assembly,
}

/// Which property numbering a flow uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// FishNet's fork (and LiteNetLib before 2026-02).
    Fork,
    /// Upstream LiteNetLib with ReliableMerged at 2.
    Upstream2026,
}

/// A property, by meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prop {
    Unreliable,
    Channeled,
    ReliableMerged,
    ConnectRequest,
    ConnectAccept,
    Disconnect,
    Merged,
    ShutdownOk,
    Other,
}

impl Table {
    fn prop(self, p: u8) -> Prop {
        let p = match (self, p) {
            (_, 0) => return Prop::Unreliable,
            (_, 1) => return Prop::Channeled,
            (Table::Upstream2026, 2) => return Prop::ReliableMerged,
            (Table::Upstream2026, p) => p - 1,
            (Table::Fork, p) => p,
        };
        match p {
            5 => Prop::ConnectRequest,
            6 => Prop::ConnectAccept,
            7 => Prop::Disconnect,
            12 => Prop::Merged,
            13 => Prop::ShutdownOk,
            _ => Prop::Other,
        }
    }
}

/// A fragmented message being joined.
#[derive(Debug, Clone, Default)]
struct Group {
    id: u16,
    total: u16,
    parts: Vec<Option<(u64, usize, Vec<u8>)>>,
    bytes: usize,
}

/// The decoder of one direction of a LiteNetLib connection.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    pub stats: TransportStats,
    table: Option<Table>,
    /// One reorder buffer per channel id byte seen (few: FishNet uses two channels).
    channels: Vec<(u8, Reorder)>,
    groups: Vec<Group>,
    joined: Assembly,
    /// A FishNet split message being joined.
    split: Option<Split>,
    /// Pieces still to come of a split message given up after a gap: their bytes
    /// were reported with it (as cut or lost) and are skipped.
    split_orphans: u32,
    disconnected: bool,
    spans: Vec<Span>,
}

/// The split header at the start of a bundle: (pieces, header length).
fn split_header(bundle: &[u8]) -> Option<(u32, usize)> {
    if bundle.get(4..6)? != SPLIT_ID {
        return None;
    }
    let (n, k) = zigzag(bundle, 6)?;
    (2..=MAX_SPLIT_PIECES)
        .contains(&n)
        .then_some((n as u32, 6 + k))
}

/// The connect request of a table (`protocol id i32` right after the property).
fn connect_request(data: &[u8]) -> Option<Table> {
    let prop = *data.first()? & 0x1F;
    let proto = u32_le(data, 1)?;
    // Protocol 13 is FishNet's fork; upstream LiteNetLib has a higher id.
    match (prop, proto) {
        (5, 11..=13) => Some(Table::Fork),
        (6, 14..=20) => Some(Table::Upstream2026),
        _ => None,
    }
}

/// The signature test: a connect request is definitive; a bundle with a broadcast
/// or a merged datagram whose sizes tile it is likely.
pub fn signature(data: &[u8]) -> Option<Confidence> {
    let b0 = *data.first()?;
    if connect_request(data).is_some() && data.len() >= 20 {
        return Some(Confidence::High);
    }
    match b0 & 0x9F {
        // Unreliable bundle: tick, then a FishNet packet id (u16, small).
        0 => (data.len() >= 7 && data[6] == 0 && data[5] <= 30).then_some(Confidence::Medium),
        // Channeled: seq, channel id (channel * 4 + method), tick, packet id.
        1 => (data.len() >= 10 && data[3] < 16 && data[9] == 0 && data[8] <= 30)
            .then_some(Confidence::Medium),
        12 => tiles(&data[1..]).then_some(Confidence::Medium),
        _ => None,
    }
}

/// Merged sizes cover the bytes exactly.
fn tiles(mut b: &[u8]) -> bool {
    if b.is_empty() {
        return false;
    }
    while !b.is_empty() {
        let Some(n) = u16_le(b, 0).map(usize::from) else {
            return false;
        };
        if n == 0 || b.len() < 2 + n {
            return false;
        }
        b = &b[2 + n..];
    }
    true
}

/// FishNet's zigzag 7-bit varint (`ReadSignedPackedWhole`): value and bytes used.
pub fn zigzag(b: &[u8], at: usize) -> Option<(i64, usize)> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let x = *b.get(at + i)?;
        v |= u64::from(x & 0x7F) << (7 * i);
        if x & 0x80 == 0 {
            return Some(((v >> 1) as i64 ^ -((v & 1) as i64), i + 1));
        }
    }
    None
}

/// The Dissonance broadcasts in a FishNet bundle (or any part of one), as spans
/// shifted by `base`. The data length must agree with the packet length's varint.
pub fn bundle_spans(b: &[u8], base: usize, spans: &mut Vec<Span>) {
    let mut p = 0;
    while let Some(i) = b
        .get(p..)
        .and_then(|h| h.windows(4).position(|w| w == BROADCAST))
    {
        let at = p + i + 4;
        let parsed = zigzag(b, at).and_then(|(data_len, n1)| {
            let (len, n2) = zigzag(b, at + n1)?;
            let ok = len >= 0 && data_len == len + n2 as i64;
            ok.then_some((at + n1 + n2, len as usize))
        });
        match parsed {
            Some((a, len)) => {
                if a + len <= b.len() {
                    spans.push(Span::Whole(base + a, base + a + len));
                    p = a + len;
                } else {
                    spans.push(Span::Cut(base + a, len));
                    return;
                }
            }
            None => p = at,
        }
    }
}

/// Reports the packets in the bundle bytes joined in `asm` (`reason` names the cut of
/// one running past their end).
fn emit_bundles(
    asm: &Assembly,
    reliable: bool,
    reason: CutReason,
    spans: &mut Vec<Span>,
    stats: &mut TransportStats,
    out: &mut Sink<'_>,
) {
    spans.clear();
    bundle_spans(&asm.buf, 0, spans);
    emit_assembled(spans, asm, reliable, reason, stats, out);
}

impl Decoder {
    pub fn push(&mut self, frame: u64, ts_ns: i64, data: &[u8], out: &mut Sink<'_>) {
        self.stats.datagrams += 1;
        if let Some(t) = connect_request(data) {
            self.new_connection(t);
            return;
        }
        self.packet(frame, ts_ns, data, 0, true, out);
    }

    fn new_connection(&mut self, t: Table) {
        self.table = Some(t);
        self.channels.clear();
        self.groups.clear();
        self.split = None;
        self.split_orphans = 0;
        self.disconnected = false;
    }

    /// One LiteNetLib packet at `at..` of the datagram (a merged part or the whole).
    fn packet(
        &mut self,
        frame: u64,
        ts_ns: i64,
        data: &[u8],
        at: usize,
        may_merge: bool,
        out: &mut Sink<'_>,
    ) {
        let Some(&b0) = data.get(at) else {
            return self
                .stats
                .malformed(frame, at, "empty LiteNetLib packet", out);
        };
        let table = self.table.unwrap_or(Table::Fork);
        let fragmented = b0 & 0x80 != 0;
        match table.prop(b0 & 0x1F) {
            Prop::Unreliable => {
                self.spans.clear();
                bundle_spans(&data[at + 1..], at + 1, &mut self.spans);
                emit_in_place(&self.spans, data, frame, 0, false, &mut self.stats, out);
            }
            Prop::Channeled => self.channeled(frame, ts_ns, data, at, fragmented, out),
            Prop::Merged if may_merge => {
                let mut p = at + 1;
                while p < data.len() {
                    let Some(n) = u16_le(data, p).map(usize::from) else {
                        return self.stats.malformed(frame, p, "merged size cut short", out);
                    };
                    let end = p + 2 + n;
                    if n == 0 || end > data.len() {
                        return self.stats.malformed(
                            frame,
                            p,
                            "merged size beyond the datagram",
                            out,
                        );
                    }
                    self.packet(frame, ts_ns, &data[..end], p + 2, false, out);
                    p = end;
                }
            }
            Prop::Disconnect => self.stats.disconnect(&mut self.disconnected, frame, out),
            Prop::ConnectAccept => self.new_connection(table),
            Prop::ShutdownOk | Prop::Other => {}
            Prop::ReliableMerged | Prop::Merged | Prop::ConnectRequest => {
                self.stats
                    .malformed(frame, at, "LiteNetLib packet not decoded here", out)
            }
        }
    }

    fn reorder(&mut self, channel: u8) -> &mut Reorder {
        let i = match self.channels.iter().position(|c| c.0 == channel) {
            Some(i) => i,
            None => {
                self.channels
                    .push((channel, Reorder::new(SEQ_BITS, WINDOW)));
                self.channels.len() - 1
            }
        };
        &mut self.channels[i].1
    }

    fn channeled(
        &mut self,
        frame: u64,
        ts_ns: i64,
        data: &[u8],
        at: usize,
        fragmented: bool,
        out: &mut Sink<'_>,
    ) {
        let (Some(seq), Some(&channel)) = (u16_le(data, at + 1), data.get(at + 3)) else {
            return self
                .stats
                .malformed(frame, at, "channeled header cut short", out);
        };
        let d = at + 4;
        let body = &data[d..];
        // Delivery method in the low 2 bits: 0 ReliableUnordered, 1 Sequenced,
        // 2 ReliableOrdered, 3 ReliableSequenced.
        let method = channel & 3;
        if method == 1 {
            // Sequenced (unreliable): no retransmission, delivered as it comes.
            return self.data(frame, d, body, fragmented, false, None, out);
        }
        let seq = u32::from(seq);
        let verdict =
            self.reorder(channel)
                .offer(seq, frame, ts_ns, d, body, u32::from(fragmented));
        if settle(verdict, frame, seq, body, d, &mut self.stats, out) {
            let key = Some((channel, seq));
            self.data(frame, d, body, fragmented, true, key, out);
        }
        self.drain(channel, frame, ts_ns, false, out);
    }

    fn drain(&mut self, channel: u8, frame: u64, ts_ns: i64, force: bool, out: &mut Sink<'_>) {
        while let Some(h) = self.reorder(channel).pop(ts_ns, force) {
            if h.gap > 0 {
                self.stats.lost(frame, h.gap, CutReason::Gap, out);
                if let Some(s) = self.split.take() {
                    // Its missing pieces were among the lost units, or are still to come.
                    self.split_orphans = s.expected.saturating_sub(s.received + h.gap);
                    self.lose_split(s, CutReason::LostFragment, out);
                }
            }
            let key = Some((channel, h.seq));
            self.data(h.frame, h.offset, &h.data, h.tag != 0, true, key, out);
        }
    }

    /// A channeled packet's data (a bundle, or a fragment of one) delivered in order.
    #[allow(clippy::too_many_arguments)]
    fn data(
        &mut self,
        frame: u64,
        at: usize,
        body: &[u8],
        fragmented: bool,
        reliable: bool,
        memo: Option<(u8, u32)>,
        out: &mut Sink<'_>,
    ) {
        if fragmented {
            return self.fragment(frame, at, body, reliable, out);
        }
        if reliable {
            if let Some((expected, header)) = split_header(body) {
                return self.split_piece(frame, at + header, &body[header..], expected, out);
            }
        }
        self.spans.clear();
        bundle_spans(body, 0, &mut self.spans);
        if let Some((channel, seq)) = memo {
            // The channel's buffer exists: the unit was offered to it.
            if let Some((_, r)) = self.channels.iter_mut().find(|c| c.0 == channel) {
                r.note_spans(seq, &self.spans);
            }
        }
        emit_in_place(&self.spans, body, frame, at, reliable, &mut self.stats, out);
    }

    /// One piece of a FishNet split message, delivered in order (`at`: where its chunk
    /// starts in the datagram).
    fn split_piece(
        &mut self,
        frame: u64,
        at: usize,
        chunk: &[u8],
        expected: u32,
        out: &mut Sink<'_>,
    ) {
        if self.split_orphans > 0 && self.split.is_none() {
            self.split_orphans -= 1;
            return;
        }
        self.split_orphans = 0;
        match self.split.take() {
            // Pieces of one message all announce its piece count.
            Some(s) if s.expected == expected => self.split = Some(s),
            Some(s) => self.lose_split(s, CutReason::LostFragment, out),
            None => {}
        }
        let s = self.split.get_or_insert_with(|| Split {
            expected,
            ..Split::default()
        });
        if s.joined.len() + chunk.len() > MAX_FRAGMENT_BYTES {
            self.stats.overflow_bytes += chunk.len() as u64;
            if let Some(s) = self.split.take() {
                self.lose_split(s, CutReason::Overflow, out);
            }
            return;
        }
        s.joined.push(frame, at, chunk);
        s.received += 1;
        if s.received < s.expected {
            return;
        }
        if let Some(s) = self.split.take() {
            let (spans, stats) = (&mut self.spans, &mut self.stats);
            emit_bundles(&s.joined, true, CutReason::Truncated, spans, stats, out);
        }
    }

    /// A split message that cannot complete: the packets in its pieces so far are
    /// reported (whole ones as packets, the one running on as cut), the missing pieces
    /// as lost.
    fn lose_split(&mut self, s: Split, reason: CutReason, out: &mut Sink<'_>) {
        emit_bundles(
            &s.joined,
            true,
            reason,
            &mut self.spans,
            &mut self.stats,
            out,
        );
        let missing = s.expected.saturating_sub(s.received);
        self.stats.lost(s.joined.origin(0).0, missing, reason, out);
    }

    /// Upstream LiteNetLib fragments: `id u16 | part u16 | total u16 | bytes`.
    fn fragment(&mut self, frame: u64, at: usize, body: &[u8], reliable: bool, out: &mut Sink<'_>) {
        let (Some(id), Some(part), Some(total)) =
            (u16_le(body, 0), u16_le(body, 2), u16_le(body, 4))
        else {
            return self
                .stats
                .malformed(frame, at, "fragment header cut short", out);
        };
        if total == 0 || part >= total {
            return self
                .stats
                .malformed(frame, at, "fragment part beyond its total", out);
        }
        let piece = &body[FRAGMENT_HEADER..];
        let gi = match self.groups.iter().position(|g| g.id == id) {
            Some(i) => i,
            None => {
                if self.groups.len() >= MAX_FRAGMENT_GROUPS {
                    // The oldest unfinished message is given up.
                    let g = self.groups.remove(0);
                    self.lose_group(g, out);
                }
                self.groups.push(Group {
                    id,
                    total,
                    parts: vec![None; usize::from(total)],
                    bytes: 0,
                });
                self.groups.len() - 1
            }
        };
        let g = &mut self.groups[gi];
        if g.total != total || g.bytes + piece.len() > MAX_FRAGMENT_BYTES {
            let g = self.groups.remove(gi);
            self.stats.overflow_bytes += g.bytes as u64;
            return self.lose_group(g, out);
        }
        if g.parts[usize::from(part)].is_none() {
            g.bytes += piece.len();
            g.parts[usize::from(part)] = Some((frame, at + FRAGMENT_HEADER, piece.to_vec()));
        }
        if g.parts.iter().any(Option::is_none) {
            return;
        }
        let g = self.groups.remove(gi);
        let parts = g.parts.into_iter().flatten();
        self.emit_joined(parts, reliable, CutReason::Truncated, out);
    }

    /// Joins a fragmented message's parts and reports the packets in them.
    fn emit_joined(
        &mut self,
        parts: impl Iterator<Item = (u64, usize, Vec<u8>)>,
        reliable: bool,
        reason: CutReason,
        out: &mut Sink<'_>,
    ) {
        self.joined.clear();
        for (f, o, bytes) in parts {
            self.joined.push(f, o, &bytes);
        }
        let (spans, stats) = (&mut self.spans, &mut self.stats);
        emit_bundles(&self.joined, reliable, reason, spans, stats, out);
    }

    /// A fragmented message that cannot complete: its first part's packets are
    /// reported cut and the missing parts lost.
    fn lose_group(&mut self, g: Group, out: &mut Sink<'_>) {
        let missing = g.parts.iter().filter(|p| p.is_none()).count() as u32;
        let frame = g.parts.iter().flatten().map(|p| p.0).min().unwrap_or(0);
        // Only the contiguous start is meaningful.
        let parts = g.parts.into_iter().map_while(|p| p);
        self.emit_joined(parts, true, CutReason::LostFragment, out);
        self.stats
            .lost(frame, missing, CutReason::LostFragment, out);
    }

    /// The capture ended.
    pub fn finish(&mut self, frame: u64, out: &mut Sink<'_>) {
        let channels: Vec<u8> = self.channels.iter().map(|c| c.0).collect();
        for c in channels {
            self.drain(c, frame, i64::MAX, true, out);
        }
        for g in std::mem::take(&mut self.groups) {
            self.lose_group(g, out);
        }
        if let Some(s) = self.split.take() {
            self.lose_split(s, CutReason::Unfinished, out);
        }
    }
}
