//! Per-path voice statistics: sequence gaps, duplicates, reordering, loss bursts and
//! RFC 3550 interarrival jitter, for one speaker on one path (the relay to the server, a
//! forward to one listener, or a direct P2P send). Constant memory per path: a 64-frame
//! window of which sequence numbers arrived.

use super::rules::voice::HeldVoice;
use crate::voice::seq::SeqGuard;
use crate::voice::StreamMachine;

/// What one packet did to its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// In order (possibly after a gap of `missing` frames).
    Next {
        missing: u64,
    },
    Duplicate,
    /// Arrived `late_by` positions behind the newest sequence number.
    Late {
        late_by: u64,
    },
    /// A jump so big that the sender must have restarted (new client instance).
    Restart,
}

/// Sequence jumps beyond this are a sender restart, not loss.
const RESTART_JUMP: i64 = 3000;
/// Interarrival gaps longer than this start a new talk spurt: no jitter sample.
const SPURT_GAP_NS: i64 = 1_000_000_000;

#[derive(Debug)]
pub struct Leg {
    pub frame_ns: i64,
    /// Holds a far jump until the next packet says whether it is real (D046).
    pub(crate) guard: SeqGuard<HeldVoice>,
    top: Option<i64>,
    /// Bit i: sequence `top - i` arrived. Bits before the first packet count as arrived.
    bits: u64,
    pub received: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub lost: u64,
    run: u64,
    pub longest_burst: u64,
    /// Interarrival jitter in ns (RFC 3550 §6.4.1, J += (|D| - J) / 16).
    pub jitter_ns: f64,
    last: Option<(i64, i64)>,
    last_closing: bool,
    pub audio_bytes: u64,
    pub first_ns: i64,
    pub last_ns: i64,
}

impl Leg {
    pub fn new(frame_ns: i64) -> Leg {
        Leg {
            guard: SeqGuard::new(StreamMachine::window_for(frame_ns)),
            frame_ns: frame_ns.max(1),
            top: None,
            bits: u64::MAX,
            received: 0,
            duplicates: 0,
            reordered: 0,
            lost: 0,
            run: 0,
            longest_burst: 0,
            jitter_ns: 0.0,
            last: None,
            last_closing: false,
            audio_bytes: 0,
            first_ns: 0,
            last_ns: 0,
        }
    }

    /// Accounts for one frame leaving the window (oldest first).
    fn settle(&mut self, arrived: bool) {
        if arrived {
            self.run = 0;
        } else {
            self.lost += 1;
            self.run += 1;
            self.longest_burst = self.longest_burst.max(self.run);
        }
    }

    /// Settles the `n` oldest window positions (and `extra` missing frames beyond them).
    fn shift(&mut self, d: u64) {
        let from_window = d.min(64);
        for i in (64 - from_window..64).rev() {
            let arrived = self.bits & (1u64 << i) != 0;
            self.settle(arrived);
        }
        for _ in 64..d {
            self.settle(false);
        }
        self.bits = if d >= 64 { 0 } else { self.bits << d };
    }

    pub fn push(&mut self, seq: u16, ts_ns: i64, audio_len: usize, closing: bool) -> Arrival {
        let Some(top) = self.top else {
            self.top = Some(seq as i64);
            self.bits = u64::MAX;
            self.received = 1;
            self.audio_bytes = audio_len as u64;
            self.first_ns = ts_ns;
            self.last_ns = ts_ns;
            self.last = Some((ts_ns, seq as i64));
            self.last_closing = closing;
            return Arrival::Next { missing: 0 };
        };
        let d = seq.wrapping_sub(top as u16) as i16 as i64;
        let u = top + d;
        self.last_ns = self.last_ns.max(ts_ns);
        if !(-RESTART_JUMP..=RESTART_JUMP).contains(&d) {
            self.finish();
            self.top = Some(u);
            self.bits = u64::MAX;
            self.received += 1;
            self.audio_bytes += audio_len as u64;
            self.last = Some((ts_ns, u));
            return Arrival::Restart;
        }
        if d > 0 {
            self.shift(d as u64);
            self.bits |= 1;
            self.top = Some(u);
            self.received += 1;
            self.audio_bytes += audio_len as u64;
            if let Some((lt, lseq)) = self.last {
                let gap = ts_ns - lt;
                if gap <= SPURT_GAP_NS && !self.last_closing {
                    let dd = (gap - (u - lseq) * self.frame_ns) as f64;
                    self.jitter_ns += (dd.abs() - self.jitter_ns) / 16.0;
                }
            }
            self.last = Some((ts_ns, u));
            self.last_closing = closing;
            return Arrival::Next {
                missing: d as u64 - 1,
            };
        }
        let back = (-d) as u64;
        if back < 64 && self.bits & (1 << back) != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        if back < 64 {
            self.bits |= 1 << back;
        } else {
            // Settled as lost already: it arrived after all.
            self.lost = self.lost.saturating_sub(1);
        }
        self.received += 1;
        self.reordered += 1;
        self.audio_bytes += audio_len as u64;
        Arrival::Late { late_by: back }
    }

    /// Settles the whole window (end of capture, or a sender restart).
    pub fn finish(&mut self) {
        if self.top.is_some() {
            self.shift(64);
            self.bits = u64::MAX;
            self.run = 0;
        }
    }

    /// Seconds of speech: distinct frames × frame duration.
    pub fn talk_seconds(&self) -> f64 {
        self.received as f64 * self.frame_ns as f64 / 1e9
    }
    pub fn loss_percent(&self) -> f64 {
        let expected = self.received + self.lost;
        if expected == 0 {
            0.0
        } else {
            self.lost as f64 * 100.0 / expected as f64
        }
    }
    /// Audio bitrate over the talk time, kbit/s.
    pub fn kbps(&self) -> f64 {
        let t = self.talk_seconds();
        if t > 0.0 {
            self.audio_bytes as f64 * 8.0 / t / 1000.0
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: i64 = 20_000_000;

    #[test]
    fn gaps_duplicates_and_late_packets() {
        let mut l = Leg::new(F);
        assert_eq!(l.push(10, 0, 10, false), Arrival::Next { missing: 0 });
        assert_eq!(l.push(11, F, 10, false), Arrival::Next { missing: 0 });
        assert_eq!(l.push(15, 5 * F, 10, false), Arrival::Next { missing: 3 });
        assert_eq!(l.push(13, 5 * F, 10, false), Arrival::Late { late_by: 2 });
        assert_eq!(l.push(13, 5 * F, 10, false), Arrival::Duplicate);
        l.finish();
        assert_eq!(
            (
                l.received,
                l.lost,
                l.duplicates,
                l.reordered,
                l.longest_burst
            ),
            (4, 2, 1, 1, 1)
        );
        assert!((l.loss_percent() - 100.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn wraps_and_bursts() {
        let mut l = Leg::new(F);
        l.push(65534, 0, 1, false);
        assert_eq!(l.push(3, 5 * F, 1, false), Arrival::Next { missing: 4 });
        assert_eq!(l.push(200, 5 * F, 1, false), Arrival::Next { missing: 196 });
        l.finish();
        assert_eq!((l.received, l.lost, l.longest_burst), (3, 200, 196));
        assert_eq!(l.push(40000, 0, 1, false), Arrival::Restart);
    }

    #[test]
    fn jitter_is_zero_on_a_steady_clock_and_grows_with_variation() {
        let mut l = Leg::new(F);
        for i in 0..50u16 {
            l.push(i, i as i64 * F, 1, false);
        }
        assert_eq!(l.jitter_ns, 0.0);
        l.push(50, 50 * F + 16_000_000, 1, false);
        assert_eq!(l.jitter_ns, 1_000_000.0);
    }
}
