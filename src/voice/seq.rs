//! Sequence numbers a stray packet cannot poison.
//!
//! A speaker's 16-bit sequence number goes up by one per packet it sends; a receiver
//! unwraps it around the highest one seen. One forged or corrupted copy far ahead (say
//! +20,000) would become that reference, and every real frame after it would look late or
//! stale. [`SeqGuard`] holds a packet that jumps forward by more than its window as a
//! *suspect* instead: the next packet decides. If it continues from the suspect, the jump
//! was real (a sender that lost over a second of packets) and the suspect is released,
//! in order, before it; if it continues the old sequence, the suspect was an outlier and
//! is dropped (counted in [`SeqGuard::outliers`]). One packet of delay, inside any jitter
//! buffer. Used by `voice`, `client --record-voice` and `check` alike.

use crate::codec::{Channel, PacketOptions, Seq, VoiceData};

/// An owned copy of a VoiceData, for a held suspect.
#[derive(Debug, Clone)]
pub struct OwnedVoice {
    pub session: u32,
    pub sender: u16,
    pub options: PacketOptions,
    pub seq: u16,
    pub channels: Vec<Channel>,
    pub audio: Vec<u8>,
}

impl OwnedVoice {
    pub fn new(v: &VoiceData<'_>) -> OwnedVoice {
        OwnedVoice {
            session: v.session,
            sender: v.sender,
            options: v.options,
            seq: v.seq,
            channels: v.channels.iter().collect(),
            audio: v.audio.to_vec(),
        }
    }

    pub fn view(&self) -> VoiceData<'_> {
        VoiceData {
            session: self.session,
            sender: self.sender,
            options: self.options,
            seq: self.seq,
            channels: Seq::Items(&self.channels),
            audio: &self.audio,
        }
    }
}

/// The decision for one packet, in processing order: `outlier` (drop it, report it), then
/// `release` (process the confirmed suspect), then `now` (process the current packet with
/// this unwrapped sequence number; `None` while it is held as the new suspect).
#[derive(Debug)]
pub struct Guarded<T> {
    pub outlier: Option<(i64, T)>,
    pub release: Option<(i64, T)>,
    pub now: Option<i64>,
}

/// See the module documentation. `T` is whatever the caller needs to process a held
/// packet later (an owned copy); it is built only when a packet is held.
#[derive(Debug)]
pub struct SeqGuard<T> {
    window: i64,
    hi: Option<i64>,
    held: Option<(i64, T)>,
    /// Packets dropped as outliers so far.
    pub outliers: u64,
}

impl<T> SeqGuard<T> {
    /// A guard that suspects forward jumps of more than `window` frames (the reorder
    /// window: a jump within it is loss or reordering, handled downstream).
    pub fn new(window: i64) -> SeqGuard<T> {
        SeqGuard {
            window: window.max(1),
            hi: None,
            held: None,
            outliers: 0,
        }
    }

    /// The highest accepted unwrapped sequence number.
    pub fn hi(&self) -> Option<i64> {
        self.hi
    }

    fn unwrap(&self, seq: u16) -> i64 {
        match self.hi {
            None => i64::from(seq),
            Some(h) => h + i64::from(seq.wrapping_sub(h as u16) as i16),
        }
    }

    fn accept(&mut self, s: i64) {
        self.hi = Some(self.hi.map_or(s, |h| h.max(s)));
    }

    /// [`SeqGuard::push`]'s common case without building its answer: nothing is held
    /// and `seq` is not a suspect (within the window ahead of the highest one). Accepts it
    /// and returns its unwrapped number; `None`, with nothing changed, otherwise (then
    /// call `push`).
    #[inline]
    pub fn push_in_order(&mut self, seq: u16) -> Option<i64> {
        if self.held.is_some() {
            return None;
        }
        let s = self.unwrap(seq);
        if self.hi.is_some_and(|hi| s > hi + self.window) {
            return None;
        }
        self.accept(s);
        Some(s)
    }

    /// One packet with 16-bit sequence number `seq`; `hold` makes the copy to keep if it
    /// is held.
    pub fn push(&mut self, seq: u16, hold: impl FnOnce() -> T) -> Guarded<T> {
        let mut out = Guarded {
            outlier: None,
            release: None,
            now: self.push_in_order(seq),
        };
        if out.now.is_some() {
            return out;
        }
        let s = self.unwrap(seq);
        if let Some((h, t)) = self.held.take() {
            if (s - h).abs() <= self.window {
                // Continues from the suspect: the jump was real.
                self.accept(h);
                out.release = Some((h, t));
                self.accept(s);
                out.now = Some(s);
                return out;
            }
            self.outliers += 1;
            out.outlier = Some((h, t));
        }
        match self.hi {
            Some(hi) if s > hi + self.window => self.held = Some((s, hold())),
            _ => {
                self.accept(s);
                out.now = Some(s);
            }
        }
        out
    }

    /// The end of the input (or of the sender): an unconfirmed suspect is an outlier.
    pub fn finish(&mut self) -> Option<(i64, T)> {
        let held = self.held.take();
        if held.is_some() {
            self.outliers += 1;
        }
        held
    }

    /// Forgets the reference (the sender restarted); a held suspect is returned as an
    /// outlier.
    pub fn reset(&mut self) -> Option<(i64, T)> {
        self.hi = None;
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(g: &mut SeqGuard<u16>, seq: u16) -> (Option<i64>, Option<i64>, Option<i64>) {
        let r = g.push(seq, || seq);
        (r.outlier.map(|o| o.0), r.release.map(|o| o.0), r.now)
    }

    #[test]
    fn a_stray_far_ahead_is_an_outlier_and_never_the_reference() {
        for jump in [60u16, 1000, 20_000] {
            let mut g = SeqGuard::new(50);
            assert_eq!(run(&mut g, 100), (None, None, Some(100)));
            assert_eq!(run(&mut g, 101), (None, None, Some(101)));
            let stray = 101 + jump;
            assert_eq!(run(&mut g, stray), (None, None, None));
            assert_eq!(run(&mut g, 102), (Some(i64::from(stray)), None, Some(102)));
            assert_eq!(g.hi(), Some(102));
            assert_eq!(g.outliers, 1);
        }
    }

    /// The fast path answers exactly as `push` for what it accepts, and leaves suspects
    /// and anything after one to `push`.
    #[test]
    fn in_order_fast_path_agrees_with_push() {
        let mut g = SeqGuard::<u16>::new(50);
        assert_eq!(g.push_in_order(65_530), Some(65_530));
        assert_eq!(g.push_in_order(2), Some(65_538)); // across the wrap
        assert_eq!(g.push_in_order(65_520), Some(65_520)); // late: accepted, hi kept
        assert_eq!(g.hi(), Some(65_538));
        assert_eq!(g.push_in_order(200), None); // a suspect: unchanged
        assert_eq!(g.hi(), Some(65_538));
        assert_eq!(run(&mut g, 200), (None, None, None));
        assert_eq!(g.push_in_order(3), None); // something is held
        assert_eq!(run(&mut g, 3), (Some(65_736), None, Some(65_539)));
        assert_eq!(g.push_in_order(4), Some(65_540));
    }

    #[test]
    fn a_real_jump_is_confirmed_by_the_next_packet_and_released_first() {
        let mut g = SeqGuard::new(50);
        run(&mut g, 65_500);
        // Across the 16-bit wrap: 65,500 + 136 = 100 (+65,536).
        assert_eq!(run(&mut g, 100), (None, None, None));
        assert_eq!(run(&mut g, 101), (None, Some(65_636), Some(65_637)));
        assert_eq!(g.outliers, 0);
        // Backward and small forward moves are not suspects (late, reordered, lost).
        assert_eq!(run(&mut g, 40), (None, None, Some(65_576)));
        assert_eq!(run(&mut g, 150), (None, None, Some(65_686)));
        // A suspect at the end is an outlier.
        run(&mut g, 9000);
        assert_eq!(g.finish().map(|h| h.1), Some(9000));
        assert_eq!(g.outliers, 1);
    }
}
