//! Which capture frames a display filter selects, for commands whose own engine must see
//! every packet but which report or send only what `-Y` selects (`check -Y` reports the
//! findings on selected frames, `replay -Y` sends the selected datagrams). The selection
//! is made by the dump pipeline itself ([`Dissector`] with the filter), so `check -Y EXPR`
//! and `replay -Y EXPR` select exactly the frames `dump -Y EXPR` prints packets of. The
//! filter reads the decoded records, no JSON is built; the result is one bit per frame.

use std::io;
use std::net::SocketAddr;

use crate::capture::Payload;
use crate::codec::MessageType;
use crate::dissect::filter::Filter;
use crate::dissect::locate::{Note, PayloadMode};
use crate::dissect::pipeline::{Dissector, Filters, RecordSink};
use crate::dissect::record::{DatagramNote, Record};
use crate::dissect::session::{SessionEvent, SessionNames, Tracker};

/// A set of frame numbers: one bit per frame up to the highest inserted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameSet {
    bits: Vec<u64>,
    len: u64,
}

impl FrameSet {
    pub fn insert(&mut self, n: u64) {
        let (w, b) = ((n / 64) as usize, n % 64);
        if w >= self.bits.len() {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & (1 << b) == 0 {
            self.bits[w] |= 1 << b;
            self.len += 1;
        }
    }
    pub fn contains(&self, n: u64) -> bool {
        self.bits
            .get((n / 64) as usize)
            .is_some_and(|w| w & (1 << (n % 64)) != 0)
    }
    /// How many frames are in the set.
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The dump pipeline with a display filter, remembering the frames of the packets it
/// selects. Feed it every payload in capture order, then [`FrameSelector::finish`].
pub struct FrameSelector {
    dissector: Dissector,
    frames: FrameSet,
}

impl FrameSelector {
    pub fn new(mode: PayloadMode, filter: Filter) -> FrameSelector {
        let mut dissector = Dissector::new(
            mode,
            Filters {
                expr: Some(filter),
                ..Filters::default()
            },
        );
        dissector.show_events = false;
        FrameSelector {
            dissector,
            frames: FrameSet::default(),
        }
    }

    pub fn push(&mut self, p: &Payload<'_>) {
        // The sink below never fails.
        let _ = self.dissector.push(p, Some(&mut Collect(&mut self.frames)));
    }

    /// The end of the input (packets a game stack still held are judged too).
    pub fn finish(mut self) -> FrameSet {
        let _ = self.dissector.finish(Some(&mut Collect(&mut self.frames)));
        self.frames
    }
}

/// A record sink that keeps only the frame number of each selected packet.
struct Collect<'a>(&'a mut FrameSet);

impl RecordSink for Collect<'_> {
    fn on_record(&mut self, r: &Record<'_, '_>, _: &Tracker, _: Option<u32>) -> io::Result<()> {
        self.0.insert(r.head.number);
        Ok(())
    }
    fn on_event(&mut self, _: &SessionEvent, _: f64, _: &SessionNames<'_>) -> io::Result<()> {
        Ok(())
    }
    fn on_note(
        &mut self,
        _: DatagramNote,
        _: u64,
        _: i64,
        _: f64,
        _: SocketAddr,
        _: SocketAddr,
    ) -> io::Result<()> {
        Ok(())
    }
    fn on_transport_note(
        &mut self,
        _: &Note,
        _: i64,
        _: f64,
        _: Option<MessageType>,
    ) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::FrameSet;

    #[test]
    fn frame_set() {
        let mut s = FrameSet::default();
        assert!(s.is_empty());
        for n in [1, 64, 65, 1000, 64] {
            s.insert(n);
        }
        assert_eq!(s.len(), 4);
        assert!(s.contains(1) && s.contains(64) && s.contains(65) && s.contains(1000));
        assert!(!s.contains(0) && !s.contains(2) && !s.contains(999) && !s.contains(5000));
    }
}
