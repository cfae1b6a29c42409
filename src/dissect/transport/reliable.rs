//! Reliable-ordered delivery as the stacks' receivers do it, for a capture: units
//! (kcp segments, UTP reliable packets, LiteNetLib channeled packets) are taken in
//! sequence order; a sequence number seen before is a retransmission; a unit ahead
//! of a gap is held (copied, capped) until the gap fills, and a gap that never fills
//! (the capture missed a unit) is given up after a cap or a timeout, and reported.

use super::{Carried, Event, Sink, Span, TransportStats};

/// Units held ahead of a gap, at most.
const MAX_HELD: usize = 64;
/// Bytes held ahead of a gap, at most.
const MAX_HELD_BYTES: usize = 256 << 10;
/// A gap still open after this much capture time is given up.
const GAP_TIMEOUT_NS: i64 = 3_000_000_000;
/// Delivered units remembered for naming the original of a retransmission.
const MEMO: usize = 1024;
/// Packet spans remembered per unit.
const MEMO_SPANS: usize = 4;

/// What to do with an offered unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Next in order: process it now, in place.
    Deliver,
    /// Ahead of a gap: copied and held; [`Reorder::pop`] hands it out later.
    Held,
    /// Seen before: a retransmission.
    Duplicate {
        original_frame: Option<u64>,
        /// Packet spans found in the original, relative to the unit's data.
        spans: [(u32, u32); MEMO_SPANS],
        n_spans: usize,
    },
    /// Too far ahead of the expected sequence: dropped, as the real receiver does.
    Beyond,
}

/// A unit held ahead of a gap.
#[derive(Debug, Clone)]
pub struct Held {
    pub seq: u32,
    pub frame: u64,
    /// Offset of `data` in the frame's UDP payload.
    pub offset: usize,
    /// Decoder-specific extra (kcp: the `frg` count).
    pub tag: u32,
    pub data: Vec<u8>,
    /// Units given up before this one (0 when it simply came next).
    pub gap: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct MemoEntry {
    seq: u32,
    frame: u64,
    spans: [(u32, u32); MEMO_SPANS],
    n: u8,
    used: bool,
}

/// Reliable-ordered delivery over `bits`-wide sequence numbers.
#[derive(Debug, Clone)]
pub struct Reorder {
    bits: u32,
    window: u32,
    next: Option<u32>,
    held: Vec<Held>,
    held_bytes: usize,
    gap_since_ns: Option<i64>,
    memo: Vec<MemoEntry>,
}

impl Reorder {
    /// Sequence numbers `bits` wide (kcp 32, UTP 16, LiteNetLib 15); units more than
    /// `window` ahead of the expected one are refused.
    pub fn new(bits: u32, window: u32) -> Reorder {
        Reorder {
            bits,
            window,
            next: None,
            held: Vec::new(),
            held_bytes: 0,
            gap_since_ns: None,
            memo: Vec::new(),
        }
    }

    /// Starts over (a new connection).
    pub fn reset(&mut self) {
        self.next = None;
        self.held.clear();
        self.held_bytes = 0;
        self.gap_since_ns = None;
        self.memo.clear();
    }

    fn mask(&self) -> u32 {
        if self.bits >= 32 {
            u32::MAX
        } else {
            (1 << self.bits) - 1
        }
    }

    /// `a - b` in sequence space, signed.
    fn dist(&self, a: u32, b: u32) -> i64 {
        let m = u64::from(self.mask()) + 1;
        let d = (u64::from(a).wrapping_sub(u64::from(b))) % m;
        if d >= m / 2 {
            d as i64 - m as i64
        } else {
            d as i64
        }
    }

    fn memo_slot(&mut self, seq: u32) -> &mut MemoEntry {
        if self.memo.is_empty() {
            self.memo = vec![MemoEntry::default(); MEMO];
        }
        &mut self.memo[seq as usize % MEMO]
    }

    fn remember(&mut self, seq: u32, frame: u64) {
        *self.memo_slot(seq) = MemoEntry {
            seq,
            frame,
            used: true,
            ..MemoEntry::default()
        };
    }

    /// Notes a packet found at `[start, end)` of delivered unit `seq`'s data.
    pub fn note_span(&mut self, seq: u32, start: usize, end: usize) {
        let e = self.memo_slot(seq);
        if e.used && e.seq == seq && usize::from(e.n) < MEMO_SPANS {
            e.spans[usize::from(e.n)] = (start as u32, end as u32);
            e.n += 1;
        }
    }

    /// Notes the whole packets among `spans`, found in delivered unit `seq`'s data.
    pub fn note_spans(&mut self, seq: u32, spans: &[Span]) {
        for s in spans {
            if let Span::Whole(a, b) = *s {
                self.note_span(seq, a, b);
            }
        }
    }

    /// Offers unit `seq` (its data at `offset` of frame `frame`'s payload).
    pub fn offer(
        &mut self,
        seq: u32,
        frame: u64,
        ts_ns: i64,
        offset: usize,
        data: &[u8],
        tag: u32,
    ) -> Verdict {
        let seq = seq & self.mask();
        let next = *self.next.get_or_insert(seq);
        let d = self.dist(seq, next);
        if d == 0 {
            self.remember(seq, frame);
            self.next = Some(seq.wrapping_add(1) & self.mask());
            return Verdict::Deliver;
        }
        if d < 0 {
            let e = self
                .memo
                .get(seq as usize % MEMO)
                .copied()
                .unwrap_or_default();
            let known = e.used && e.seq == seq;
            return Verdict::Duplicate {
                original_frame: known.then_some(e.frame),
                spans: e.spans,
                n_spans: if known { usize::from(e.n) } else { 0 },
            };
        }
        if d >= i64::from(self.window) {
            return Verdict::Beyond;
        }
        if let Some(h) = self.held.iter().find(|h| h.seq == seq) {
            return Verdict::Duplicate {
                original_frame: Some(h.frame),
                spans: [(0, 0); MEMO_SPANS],
                n_spans: 0,
            };
        }
        self.held_bytes += data.len();
        self.held.push(Held {
            seq,
            frame,
            offset,
            tag,
            data: data.to_vec(),
            gap: 0,
        });
        self.gap_since_ns.get_or_insert(ts_ns);
        Verdict::Held
    }

    /// The next held unit that may be delivered now: the one that came next, or,
    /// when the held units pass their cap, the gap is older than the timeout or
    /// `force` is set, the first one after the gap (its `gap` counts the units
    /// given up).
    pub fn pop(&mut self, now_ns: i64, force: bool) -> Option<Held> {
        let next = self.next?;
        if self.held.is_empty() {
            return None;
        }
        let (i, d) = self
            .held
            .iter()
            .enumerate()
            .map(|(i, h)| (i, self.dist(h.seq, next)))
            .min_by_key(|&(_, d)| d)?;
        let stale = self
            .gap_since_ns
            .is_some_and(|t| now_ns.saturating_sub(t) > GAP_TIMEOUT_NS);
        let over = self.held.len() > MAX_HELD || self.held_bytes > MAX_HELD_BYTES;
        if d != 0 && !(force || stale || over) {
            return None;
        }
        let mut h = self.held.swap_remove(i);
        self.held_bytes -= h.data.len();
        h.gap = d.max(0) as u32;
        self.remember(h.seq, h.frame);
        self.next = Some(h.seq.wrapping_add(1) & self.mask());
        self.gap_since_ns = if self.held.is_empty() {
            None
        } else {
            Some(now_ns)
        };
        Some(h)
    }

    /// Units held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

/// Counts and reports what [`Reorder::offer`] decided for unit `seq` (its data
/// `unit` at `offset` of frame `frame`'s payload) when it is not a delivery: a
/// retransmission with the packets its original held, or a unit beyond the window.
/// True when the unit is to be delivered now.
pub fn settle(
    verdict: Verdict,
    frame: u64,
    seq: u32,
    unit: &[u8],
    offset: usize,
    stats: &mut TransportStats,
    out: &mut Sink<'_>,
) -> bool {
    match verdict {
        Verdict::Deliver => return true,
        Verdict::Held => {}
        Verdict::Duplicate {
            original_frame,
            spans,
            n_spans,
        } => {
            stats.retransmissions += 1;
            out(Event::Retransmission {
                frame,
                seq,
                original_frame,
            });
            for &(a, b) in &spans[..n_spans] {
                let (a, b) = (a as usize, b as usize);
                if let Some(bytes) = unit.get(a..b) {
                    stats.retransmitted_packets += 1;
                    out(Event::Retransmitted {
                        packet: Carried {
                            bytes,
                            frame,
                            offset: offset + a,
                            last_frame: frame,
                            reliable: true,
                        },
                        original_frame,
                    });
                }
            }
        }
        Verdict::Beyond => stats.beyond_window += 1,
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_out_of_order_duplicate_and_gap() {
        let mut r = Reorder::new(16, 64);
        assert_eq!(r.offer(65534, 1, 0, 0, b"a", 0), Verdict::Deliver);
        assert_eq!(r.offer(0, 2, 0, 0, b"c", 0), Verdict::Held);
        assert!(r.pop(0, false).is_none());
        assert_eq!(r.offer(65535, 3, 0, 0, b"b", 0), Verdict::Deliver);
        let h = r.pop(0, false).unwrap();
        assert_eq!((h.seq, h.frame, h.gap, &h.data[..]), (0, 2, 0, &b"c"[..]));
        assert!(matches!(
            r.offer(65535, 4, 0, 0, b"b", 0),
            Verdict::Duplicate {
                original_frame: Some(3),
                ..
            }
        ));
        assert_eq!(r.offer(3, 5, 10, 0, b"e", 0), Verdict::Held);
        assert!(r.pop(11, false).is_none());
        let h = r.pop(10 + GAP_TIMEOUT_NS + 1, false).unwrap();
        assert_eq!((h.seq, h.gap), (3, 2));
        assert_eq!(r.offer(200, 6, 0, 0, b"x", 0), Verdict::Beyond);
    }
}
