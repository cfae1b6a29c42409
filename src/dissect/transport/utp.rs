//! Netcode for GameObjects over Unity Transport (GAME-TRANSPORTS §2).
//!
//! UTP 2.x datagram: `55 54 50 01 | type | token` handshakes, else a type byte
//! (`01` Data, `02` Disconnect, `03` Heartbeat, `04`/`05` MTU) and the 8-byte
//! connection token; Data continues with the pipeline id and its stage headers.
//! UTP 1.x: `type (4 Data) | flags | u16 session token` [+ pipeline id].
//! Pipelines: 1 fragmentation (u16 `first|last|seq14`), 2 fragmentation + unreliable
//! sequenced (u16 seq), 3 reliable sequenced (2.x: 8 bytes + u64 ack mask; 1.x: 12
//! bytes). UnityTransport's send queue prefixes each NGO batch with an i32 length;
//! on the reliable pipeline the queue is a byte stream cut anywhere. An NGO batch is
//! a 16-byte header (`60 11`, count, size, hash) and bit-packed `type | size | body`
//! messages; a Dissonance packet is a NamedMessage body: the name's hash (u64),
//! `u32 len | packet`.

use super::reliable::{settle, Reorder};
use super::{
    emit_assembled, emit_in_place, u16_le, u32_le, Assembly, Confidence, CutReason, Sink, Span,
    TransportStats,
};

/// `XXHash.Hash32("DissonanceToServer")` stored in a u64.
pub const HASH_TO_SERVER: u64 = 0xC5CD_13CB;
/// `XXHash.Hash32("DissonanceToClient")` stored in a u64.
pub const HASH_TO_CLIENT: u64 = 0x98FF_AC3F;
/// NGO's batch header magic.
pub const BATCH_MAGIC: u16 = 0x1160;
const BATCH_HEADER: usize = 16;
const HANDSHAKE: [u8; 4] = *b"UTP\x01";
const TOKEN: usize = 8;
const TYPE_DATA: u8 = 0x01;
const TYPE_DISCONNECT: u8 = 0x02;
/// UTP 1.x's Data type.
const V1_TYPE_DATA: u8 = 0x04;
const V1_TYPE_DISCONNECT: u8 = 0x03;
/// NGO's reliable window.
const WINDOW: u32 = 64;
/// A send-queue item (one NGO batch) larger than this breaks the stream framing.
const MAX_ITEM: usize = 1 << 20;
/// Fragmented unreliable payloads are capped like the fragmentation stage's
/// default payload capacity allows (generously).
const MAX_FRAGMENTED: usize = 64 << 10;

/// Which UTP wire version a flow speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The decoder of one direction of a UTP connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub stats: TransportStats,
    version: Option<Version>,
    reliable: Reorder,
    /// The reliable byte stream's bytes of the send-queue item not yet complete.
    stream: Assembly,
    /// An unreliable payload being joined from fragments, and the sequence expected next.
    frag: Assembly,
    frag_next: Option<u16>,
    disconnected: bool,
    spans: Vec<Span>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            stats: TransportStats::default(),
            version: None,
            reliable: Reorder::new(16, WINDOW),
            stream: Assembly::default(),
            frag: Assembly::default(),
            frag_next: None,
            disconnected: false,
            spans: Vec::new(),
        }
    }
}

/// The signature test: a handshake is definitive; a 2.x data packet whose first
/// queue item is an NGO batch is likely; heartbeats and disconnects are 9 bytes.
pub fn signature(data: &[u8]) -> Option<Confidence> {
    if data.len() >= 13 && data[..4] == HANDSHAKE && matches!(data[4], 1 | 2) {
        return Some(Confidence::High);
    }
    if data.first() != Some(&TYPE_DATA) {
        return None;
    }
    let payload = match data.get(9)? {
        1 => 12,
        3 => 26,
        _ => return None,
    };
    let magic = u16_le(data, payload + 4) == Some(BATCH_MAGIC);
    let ack_only = data.len() == 26 && data[9] == 3 && data[10] == 1;
    (magic || ack_only).then_some(Confidence::Medium)
}

/// NGO's bit-packed u32 (`ByteUnpacker.ReadValueBitPacked`): value and bytes used.
pub fn bitpacked(b: &[u8], at: usize) -> Option<(u32, usize)> {
    let n = usize::from(*b.get(at)? & 7);
    match n {
        1..=4 => {
            let s = b.get(at..at + n)?;
            let v = s.iter().rev().fold(0u32, |v, &x| (v << 8) | u32::from(x));
            Some((v >> 3, n))
        }
        5 => Some((u32_le(b, at + 1)?, 5)),
        _ => None,
    }
}

/// The Dissonance packets of one NGO batch (`b` starts at the batch header),
/// spans shifted by `base`. False when `b` is not an NGO batch.
pub fn batch_spans(b: &[u8], base: usize, spans: &mut Vec<Span>) -> bool {
    if u16_le(b, 0) != Some(BATCH_MAGIC) {
        return false;
    }
    let count = u16_le(b, 2).unwrap_or(0);
    let mut p = BATCH_HEADER;
    for _ in 0..count {
        let Some((_, n1)) = bitpacked(b, p) else {
            break;
        };
        let Some((size, n2)) = bitpacked(b, p + n1) else {
            break;
        };
        let body = p + n1 + n2;
        let end = body.saturating_add(size as usize);
        let hash = b
            .get(body..body + 8)
            .map(|h| u64::from_le_bytes(h.try_into().unwrap_or_default()));
        if matches!(hash, Some(HASH_TO_SERVER | HASH_TO_CLIENT)) {
            if let Some(len) = u32_le(b, body + 8) {
                let (a, len) = (body + 12, len as usize);
                let fits = a.checked_add(len).is_some_and(|e| e <= b.len().min(end));
                spans.push(if fits {
                    Span::Whole(base + a, base + a + len)
                } else {
                    Span::Cut(base + a, len)
                });
            }
        }
        if end > b.len() {
            break;
        }
        p = end;
    }
    true
}

impl Decoder {
    pub fn push(&mut self, frame: u64, ts_ns: i64, data: &[u8], out: &mut Sink<'_>) {
        self.stats.datagrams += 1;
        if data.len() >= 5 && data[..4] == HANDSHAKE {
            if data[4] == 1 || data[4] == 2 {
                // A connection request/accept: a new connection on this flow.
                self.new_connection(Version::V2);
            }
            return;
        }
        let version = match self.version {
            Some(v) => v,
            None => match data.first() {
                Some(&V1_TYPE_DATA) if data.len() >= 4 => Version::V1,
                _ => Version::V2,
            },
        };
        self.version = Some(version);
        match version {
            Version::V2 => self.v2(frame, ts_ns, data, out),
            Version::V1 => self.v1(frame, ts_ns, data, out),
        }
    }

    fn new_connection(&mut self, v: Version) {
        self.version = Some(v);
        self.reliable.reset();
        self.stream.clear();
        self.frag.clear();
        self.frag_next = None;
        self.disconnected = false;
    }

    fn v2(&mut self, frame: u64, ts_ns: i64, data: &[u8], out: &mut Sink<'_>) {
        match data.first() {
            Some(&TYPE_DATA) if data.len() > 1 + TOKEN => {
                let pipeline = data[1 + TOKEN];
                self.pipeline(frame, ts_ns, data, pipeline, 2 + TOKEN, 16, out);
            }
            Some(&TYPE_DISCONNECT) => self.stats.disconnect(&mut self.disconnected, frame, out),
            Some(3..=5) => {} // heartbeat, MTU check/ack
            _ => self
                .stats
                .malformed(frame, 0, "unknown Unity Transport packet", out),
        }
    }

    fn v1(&mut self, frame: u64, ts_ns: i64, data: &[u8], out: &mut Sink<'_>) {
        // type | flags (1 connect token, 2 pipeline) | u16 session token [| pipeline]
        match data.first() {
            Some(&V1_TYPE_DATA) if data.len() >= 4 => {
                if data[1] & 2 == 0 {
                    // No pipeline: the payload is the send queue's items as they are.
                    return self.unreliable(frame, data, 4, out);
                }
                match data.get(4) {
                    Some(&p) => self.pipeline(frame, ts_ns, data, p, 5, 12, out),
                    None => {
                        self.stats
                            .malformed(frame, 4, "UTP 1.x data without its pipeline id", out)
                    }
                }
            }
            Some(&V1_TYPE_DISCONNECT) => self.stats.disconnect(&mut self.disconnected, frame, out),
            Some(0..=2) => {} // connection request/accept/refuse
            _ => self
                .stats
                .malformed(frame, 0, "unknown Unity Transport 1.x packet", out),
        }
    }

    /// The pipeline stages' headers at `at`, then the payload.
    #[allow(clippy::too_many_arguments)]
    fn pipeline(
        &mut self,
        frame: u64,
        ts_ns: i64,
        data: &[u8],
        pipeline: u8,
        at: usize,
        reliable_header: usize,
        out: &mut Sink<'_>,
    ) {
        match pipeline {
            0 => self.unreliable(frame, data, at, out),
            1 | 2 => {
                let Some(fh) = u16_le(data, at) else {
                    return self
                        .stats
                        .malformed(frame, at, "fragmentation header cut short", out);
                };
                // Pipeline 2 adds the unreliable-sequenced stage's u16 sequence.
                let payload = at + if pipeline == 2 { 4 } else { 2 };
                if payload > data.len() {
                    return self
                        .stats
                        .malformed(frame, at, "pipeline headers cut short", out);
                }
                self.fragment(frame, data, payload, fh, out);
            }
            3 => self.reliable_packet(frame, ts_ns, data, at, reliable_header, out),
            _ => self.stats.malformed(frame, at, "unknown pipeline id", out),
        }
    }

    /// An unreliable payload (whole): i32-prefixed NGO batches.
    fn unreliable(&mut self, frame: u64, data: &[u8], at: usize, out: &mut Sink<'_>) {
        self.spans.clear();
        let mut p = at;
        while p < data.len() {
            let Some(len) = u32_le(data, p).map(|l| l as usize) else {
                self.stats
                    .malformed(frame, p, "queue item length cut short", out);
                break;
            };
            let b = p + 4;
            let end = b.saturating_add(len).min(data.len());
            if !batch_spans(&data[b..end], b, &mut self.spans) {
                self.stats.malformed(frame, b, "not an NGO batch", out);
            }
            p = b.saturating_add(len);
        }
        emit_in_place(&self.spans, data, frame, 0, false, &mut self.stats, out);
    }

    fn fragment(&mut self, frame: u64, data: &[u8], at: usize, fh: u16, out: &mut Sink<'_>) {
        let (first, last, seq) = (fh & 0x8000 != 0, fh & 0x4000 != 0, fh & 0x3FFF);
        if first && last {
            self.lose_fragments(out);
            return self.unreliable(frame, data, at, out);
        }
        if first {
            self.lose_fragments(out);
        } else if self.frag_next != Some(seq) {
            // A fragment before this one never came: the payload is lost, as in UTP.
            self.lose_fragments(out);
            return self.stats.lost(frame, 1, CutReason::LostFragment, out);
        }
        if self.frag.len() + (data.len() - at) > MAX_FRAGMENTED {
            self.stats.overflow_bytes += (self.frag.len() + data.len() - at) as u64;
            self.frag.clear();
            self.frag_next = None;
            return;
        }
        self.frag.push(frame, at, &data[at..]);
        self.frag_next = Some((seq + 1) & 0x3FFF);
        if !last {
            return;
        }
        self.frag_next = None;
        self.spans.clear();
        let mut p = 0;
        let buf = &self.frag.buf;
        while let Some(len) = u32_le(buf, p).map(|l| l as usize) {
            let b = p + 4;
            batch_spans(
                &buf[b..b.saturating_add(len).min(buf.len())],
                b,
                &mut self.spans,
            );
            p = b.saturating_add(len);
        }
        emit_assembled(
            &self.spans,
            &self.frag,
            false,
            CutReason::Truncated,
            &mut self.stats,
            out,
        );
        self.frag.clear();
    }

    /// An unfinished fragmented payload is abandoned (a later one started).
    fn lose_fragments(&mut self, out: &mut Sink<'_>) {
        if self.frag_next.take().is_some() && !self.frag.is_empty() {
            let first = self.frag.origin(0).0;
            self.stats.lost(first, 1, CutReason::LostFragment, out);
        }
        self.frag.clear();
    }

    fn reliable_packet(
        &mut self,
        frame: u64,
        ts_ns: i64,
        data: &[u8],
        at: usize,
        header: usize,
        out: &mut Sink<'_>,
    ) {
        // 2.x: type u8 | mask length u8 | processing time u16 | seq u16 | acked u16 | mask
        // 1.x: type u16 | processing time u16 | seq u16 | acked u16 | mask u32
        let (kind, seq) = if header == 16 {
            (data.get(at).copied(), u16_le(data, at + 4))
        } else {
            (u16_le(data, at).map(|t| t as u8), u16_le(data, at + 4))
        };
        let (Some(kind), Some(seq)) = (kind, seq) else {
            return self
                .stats
                .malformed(frame, at, "reliable header cut short", out);
        };
        let p = at + header;
        if kind != 0 || p >= data.len() {
            return; // an ack, or nothing carried
        }
        let (payload, seq) = (&data[p..], u32::from(seq));
        let verdict = self.reliable.offer(seq, frame, ts_ns, p, payload, 0);
        if settle(verdict, frame, seq, payload, p, &mut self.stats, out) {
            self.stream_push(frame, p, payload, seq, out);
        }
        self.drain(frame, ts_ns, false, out);
    }

    fn drain(&mut self, frame: u64, ts_ns: i64, force: bool, out: &mut Sink<'_>) {
        while let Some(h) = self.reliable.pop(ts_ns, force) {
            if h.gap > 0 {
                self.stats.lost(frame, h.gap, CutReason::Gap, out);
                // The stream lost bytes: the item in progress cannot be completed.
                self.break_stream(CutReason::Gap, out);
            }
            self.stream_push(h.frame, h.offset, &h.data, h.seq, out);
        }
    }

    /// Reports the partial item of the stream and drops it.
    fn break_stream(&mut self, reason: CutReason, out: &mut Sink<'_>) {
        if self.stream.is_empty() {
            return;
        }
        self.spans.clear();
        if self.stream.len() > 4 {
            batch_spans(&self.stream.buf[4..], 4, &mut self.spans);
        }
        if self.spans.is_empty() {
            // Not even a packet's start: still the loss of the item is reported.
            let (frame, _) = self.stream.origin(0);
            self.stats.lost(frame, 1, reason, out);
        }
        emit_assembled(
            &self.spans,
            &self.stream,
            true,
            reason,
            &mut self.stats,
            out,
        );
        self.stream.clear();
    }

    /// Reliable-stream bytes in order, at `at` of frame `frame`'s payload.
    fn stream_push(&mut self, frame: u64, at: usize, bytes: &[u8], seq: u32, out: &mut Sink<'_>) {
        let mut p = 0;
        // First complete the item carried over from earlier packets, if any.
        if !self.stream.is_empty() {
            if self.stream.len() < 4 {
                let need = (4 - self.stream.len()).min(bytes.len());
                self.stream.push(frame, at, &bytes[..need]);
                p = need;
                if self.stream.len() < 4 {
                    return;
                }
            }
            let len = u32_le(&self.stream.buf, 0).unwrap_or(0) as usize;
            if len > MAX_ITEM {
                self.stats.overflow_bytes += self.stream.len() as u64;
                self.stream.clear();
                return self.stats.malformed(
                    frame,
                    at,
                    "reliable stream item length too large",
                    out,
                );
            }
            let need = (4 + len - self.stream.len()).min(bytes.len() - p);
            self.stream.push(frame, at + p, &bytes[p..p + need]);
            p += need;
            if self.stream.len() < 4 + len {
                return;
            }
            self.spans.clear();
            if !batch_spans(&self.stream.buf[4..], 4, &mut self.spans) {
                self.stats.malformed(frame, at, "not an NGO batch", out);
            }
            emit_assembled(
                &self.spans,
                &self.stream,
                true,
                CutReason::Truncated,
                &mut self.stats,
                out,
            );
            self.stream.clear();
        }
        // Then whole items in place; a final partial item is kept.
        self.spans.clear();
        while p < bytes.len() {
            let len = u32_le(bytes, p).map(|l| l as usize);
            match len {
                Some(len) if len <= MAX_ITEM && p + 4 + len <= bytes.len() => {
                    let b = p + 4;
                    if !batch_spans(&bytes[b..b + len], b, &mut self.spans) {
                        self.stats.malformed(frame, at + b, "not an NGO batch", out);
                    }
                    p = b + len;
                }
                Some(len) if len > MAX_ITEM => {
                    self.stats.malformed(
                        frame,
                        at + p,
                        "reliable stream item length too large",
                        out,
                    );
                    break;
                }
                _ => {
                    self.stream.push(frame, at + p, &bytes[p..]);
                    break;
                }
            }
        }
        self.reliable.note_spans(seq, &self.spans);
        emit_in_place(&self.spans, bytes, frame, at, true, &mut self.stats, out);
    }

    /// The capture ended.
    pub fn finish(&mut self, frame: u64, out: &mut Sink<'_>) {
        self.drain(frame, i64::MAX, true, out);
        self.break_stream(CutReason::Unfinished, out);
        self.lose_fragments(out);
    }
}
