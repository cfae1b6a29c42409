//! Mirror over kcp2k (GAME-TRANSPORTS §1).
//!
//! Datagram: channel byte (`01` reliable, `02` unreliable), the connection cookie
//! (u32, since kcp2k V1.38; absent before), then either KCP segments (reliable) or an
//! unreliable header (`04` Data, `05` Disconnect). A kcp message starts with `01`
//! Hello, `02` Ping or `03` Data; Data and unreliable Data carry one Mirror batch:
//! an 8-byte timestamp, then `varuint size | u16 id | body` messages (no size before
//! Mirror 2023-06). The Dissonance message has id `0xD355` (`0x1974` before Mirror
//! 2023-09) and body `u16 len | packet`.

use super::reliable::{settle, Reorder};
use super::{
    emit_assembled, emit_in_place, u16_le, u32_le, Assembly, Confidence, CutReason, Sink, Span,
    TransportStats,
};

/// The Dissonance message's Mirror id since 2023-09 (16-bit folded FNV-1a).
pub const ID_FOLDED: u16 = 0xD355;
/// Its id before (the low 16 bits of the hash).
pub const ID_LOW16: u16 = 0x1974;

const CHANNEL_RELIABLE: u8 = 0x01;
const CHANNEL_UNRELIABLE: u8 = 0x02;
const UNRELIABLE_DATA: u8 = 0x04;
const UNRELIABLE_DISCONNECT: u8 = 0x05;
const RELIABLE_HELLO: u8 = 0x01;
const RELIABLE_DATA: u8 = 0x03;
const CMD_PUSH: u8 = 81;
const SEGMENT_HEADER: usize = 24;
/// kcp2k's receive window, in segments.
const WINDOW: u32 = 4096;
/// A fragmented kcp message larger than this is abandoned (kcp2k's own limit is
/// the receive window times the mss; Mirror batches stay far below it).
const MAX_MESSAGE: usize = 1 << 20;

/// The decoder of one direction of a kcp2k connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub stats: TransportStats,
    /// Cookie bytes after the channel byte: 4 (V1.38+) or 0; learned per flow.
    cookie_len: Option<usize>,
    reorder: Reorder,
    /// Fragments of the kcp message being joined, and the `frg` expected next.
    chain: Assembly,
    chain_next_frg: Option<u32>,
    disconnected: bool,
    spans: Vec<Span>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            stats: TransportStats::default(),
            cookie_len: None,
            reorder: Reorder::new(32, WINDOW),
            chain: Assembly::default(),
            chain_next_frg: None,
            disconnected: false,
            spans: Vec::new(),
        }
    }
}

/// A kcp segment header at `at`, when the bytes there look like one.
fn segment_at(data: &[u8], at: usize) -> Option<(u8, u32, u32, usize)> {
    let conv = u32_le(data, at)?;
    let cmd = *data.get(at + 4)?;
    let frg = *data.get(at + 5)?;
    let sn = u32_le(data, at + 12)?;
    let len = u32_le(data, at + 20)? as usize;
    let fits = data.len() - at - SEGMENT_HEADER >= len;
    (conv == 0 && (81..=84).contains(&cmd) && fits).then_some((cmd, u32::from(frg), sn, len))
}

/// The signature test: a kcp2k datagram by its channel byte and what follows.
pub fn signature(data: &[u8]) -> Option<Confidence> {
    match *data.first()? {
        CHANNEL_RELIABLE => {
            for at in [5, 1] {
                if let Some((cmd, frg, sn, len)) = segment_at(data, at) {
                    let hello = cmd == CMD_PUSH
                        && frg == 0
                        && sn == 0
                        && len == 1
                        && data.get(at + SEGMENT_HEADER) == Some(&RELIABLE_HELLO);
                    return Some(if hello {
                        Confidence::High
                    } else {
                        Confidence::Medium
                    });
                }
            }
            None
        }
        CHANNEL_UNRELIABLE => {
            // Disconnect: exactly `02 cookie 05`; data: a plausible batch timestamp.
            if data.len() == 6 && data[5] == UNRELIABLE_DISCONNECT {
                return Some(Confidence::Medium);
            }
            let ts = data
                .get(6..14)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default()));
            let plausible = ts.is_some_and(|t| t.is_finite() && (0.0..1e9).contains(&t));
            (data[5.min(data.len() - 1)] == UNRELIABLE_DATA && data.len() > 14 && plausible)
                .then_some(Confidence::Medium)
        }
        _ => None,
    }
}

/// Mirror's varuint (`Compression.DecompressVarUInt`): value and bytes used.
pub fn varuint(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let a0 = *b.get(at)?;
    let le = |n: usize| -> Option<u64> {
        let s = b.get(at + 1..at + 1 + n)?;
        Some(s.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
    };
    Some(match a0 {
        0..=240 => (u64::from(a0), 1),
        241..=248 => {
            let a1 = *b.get(at + 1)?;
            (240 + 256 * u64::from(a0 - 241) + u64::from(a1), 2)
        }
        249 => (2288 + le(2)?, 3),
        250..=255 => (le(usize::from(a0 - 247))?, 1 + usize::from(a0 - 247)),
    })
}

fn is_dissonance_id(id: u16) -> bool {
    id == ID_FOLDED || id == ID_LOW16
}

/// The Dissonance packets of one Mirror batch (timestamp first), as spans of `b`
/// shifted by `base`. Size-prefixed messages are walked; a batch that does not
/// tile that way is from Mirror before 2023-06, and its messages are found by id.
pub fn batch_spans(b: &[u8], base: usize, spans: &mut Vec<Span>) -> bool {
    if b.len() < 8 {
        return false;
    }
    let start = spans.len();
    let mut p = 8;
    while p < b.len() {
        let Some((size, n)) = varuint(b, p) else {
            break;
        };
        let body = p + n;
        let Some(end) = usize::try_from(size).ok().and_then(|s| body.checked_add(s)) else {
            break;
        };
        if end > b.len() {
            break;
        }
        if let (Some(id), Some(len)) = (u16_le(b, body), u16_le(b, body + 2)) {
            if is_dissonance_id(id) && end - body >= 4 {
                let (a, len) = (body + 4, usize::from(len));
                spans.push(if a + len <= end {
                    Span::Whole(base + a, base + a + len)
                } else {
                    Span::Cut(base + a, len)
                });
            }
        }
        p = end;
    }
    if p == b.len() {
        return true;
    }
    // Not size-prefixed (or cut short): look for `id | len | magic`.
    spans.truncate(start);
    let mut p = 8;
    while p + 6 <= b.len() {
        let id = u16_le(b, p).unwrap_or(0);
        let magic = matches!(b.get(p + 4..p + 6), Some([0x8B, 0xC7] | [0xC7, 0x8B]));
        if is_dissonance_id(id) && magic {
            let len = usize::from(u16_le(b, p + 2).unwrap_or(0));
            let a = p + 4;
            if a + len <= b.len() {
                spans.push(Span::Whole(base + a, base + a + len));
                p = a + len;
            } else {
                spans.push(Span::Cut(base + a, len));
                break;
            }
        } else {
            p += 1;
        }
    }
    true
}

impl Decoder {
    /// One datagram of this direction.
    pub fn push(&mut self, frame: u64, ts_ns: i64, data: &[u8], out: &mut Sink<'_>) {
        self.stats.datagrams += 1;
        match data.first() {
            Some(&CHANNEL_RELIABLE) => self.reliable(frame, ts_ns, data, out),
            Some(&CHANNEL_UNRELIABLE) => self.unreliable(frame, data, out),
            _ => self
                .stats
                .malformed(frame, 0, "not a kcp2k channel byte", out),
        }
    }

    fn unreliable(&mut self, frame: u64, data: &[u8], out: &mut Sink<'_>) {
        let cookie = match self.cookie_len {
            Some(c) => c,
            None if data.len() >= 6
                && matches!(data[5], UNRELIABLE_DATA | UNRELIABLE_DISCONNECT) =>
            {
                4
            }
            None => 0,
        };
        let h = 1 + cookie;
        match data.get(h) {
            Some(&UNRELIABLE_DATA) => {
                let batch = &data[h + 1..];
                self.spans.clear();
                if !batch_spans(batch, h + 1, &mut self.spans) {
                    return self.stats.malformed(
                        frame,
                        h + 1,
                        "Mirror batch shorter than its timestamp",
                        out,
                    );
                }
                emit_in_place(&self.spans, data, frame, 0, false, &mut self.stats, out);
            }
            Some(&UNRELIABLE_DISCONNECT) => {
                self.stats.disconnect(&mut self.disconnected, frame, out)
            }
            _ => self
                .stats
                .malformed(frame, h, "unknown kcp2k unreliable header", out),
        }
    }

    fn reliable(&mut self, frame: u64, ts_ns: i64, data: &[u8], out: &mut Sink<'_>) {
        let cookie = match self.cookie_len {
            Some(c) => c,
            None => match [4, 0]
                .into_iter()
                .find(|&c| segment_at(data, 1 + c).is_some())
            {
                Some(c) => {
                    self.cookie_len = Some(c);
                    c
                }
                None => {
                    return self
                        .stats
                        .malformed(frame, 1, "no kcp segment after the cookie", out)
                }
            },
        };
        let mut p = 1 + cookie;
        while p < data.len() {
            let Some((cmd, frg, sn, len)) = segment_at(data, p) else {
                return self
                    .stats
                    .malformed(frame, p, "bad kcp segment header", out);
            };
            let d = p + SEGMENT_HEADER;
            let seg = &data[d..d + len];
            p = d + len;
            if cmd != CMD_PUSH {
                continue;
            }
            // A Hello after a disconnect opens a new connection on the same addresses.
            if self.disconnected && sn == 0 && seg == [RELIABLE_HELLO] {
                self.new_connection();
            }
            let verdict = self.reorder.offer(sn, frame, ts_ns, d, seg, frg);
            if settle(verdict, frame, sn, seg, d, &mut self.stats, out) {
                self.segment(frame, d, seg, frg, sn, out);
            }
            self.drain(frame, ts_ns, false, out);
        }
    }

    fn new_connection(&mut self) {
        self.reorder.reset();
        self.chain.clear();
        self.chain_next_frg = None;
        self.disconnected = false;
    }

    fn drain(&mut self, frame: u64, ts_ns: i64, force: bool, out: &mut Sink<'_>) {
        while let Some(h) = self.reorder.pop(ts_ns, force) {
            if h.gap > 0 {
                self.stats.lost(frame, h.gap, CutReason::Gap, out);
                self.break_chain(CutReason::Gap, out);
            }
            self.segment(h.frame, h.offset, &h.data, h.tag, h.seq, out);
        }
    }

    /// Reports what a broken fragment chain held and forgets it.
    fn break_chain(&mut self, reason: CutReason, out: &mut Sink<'_>) {
        if self.chain_next_frg.take().is_none() {
            return;
        }
        self.spans.clear();
        message_spans(&self.chain.buf, &mut self.spans);
        // Without the rest the last packet in it is cut; earlier ones are whole.
        emit_assembled(&self.spans, &self.chain, true, reason, &mut self.stats, out);
        let first = self.chain.origin(0).0;
        self.stats.lost(first, 1, CutReason::LostFragment, out);
        self.chain.clear();
    }

    /// A kcp segment delivered in order: part or all of a kcp message.
    fn segment(
        &mut self,
        frame: u64,
        at: usize,
        seg: &[u8],
        frg: u32,
        sn: u32,
        out: &mut Sink<'_>,
    ) {
        if let Some(want) = self.chain_next_frg {
            if frg != want {
                self.break_chain(CutReason::LostFragment, out);
            }
        }
        if self.chain_next_frg.is_none() && frg == 0 {
            // A whole message inside this segment: packets borrowed from the datagram.
            self.spans.clear();
            message_spans(seg, &mut self.spans);
            self.reorder.note_spans(sn, &self.spans);
            return emit_in_place(&self.spans, seg, frame, at, true, &mut self.stats, out);
        }
        if self.chain.len() + seg.len() > MAX_MESSAGE {
            self.stats.overflow_bytes += (self.chain.len() + seg.len()) as u64;
            self.break_chain(CutReason::Overflow, out);
            return;
        }
        self.chain.push(frame, at, seg);
        if frg > 0 {
            self.chain_next_frg = Some(frg - 1);
            return;
        }
        self.chain_next_frg = None;
        self.spans.clear();
        message_spans(&self.chain.buf, &mut self.spans);
        emit_assembled(
            &self.spans,
            &self.chain,
            true,
            CutReason::Truncated,
            &mut self.stats,
            out,
        );
        self.chain.clear();
    }

    /// The capture ended: gaps are given up and an unfinished chain is reported.
    pub fn finish(&mut self, frame: u64, out: &mut Sink<'_>) {
        self.drain(frame, i64::MAX, true, out);
        self.break_chain(CutReason::Unfinished, out);
    }
}

/// The Dissonance packets of one kcp message (reliable header byte first).
fn message_spans(msg: &[u8], spans: &mut Vec<Span>) {
    if msg.first() == Some(&RELIABLE_DATA) {
        batch_spans(&msg[1..], 1, spans);
    }
}
