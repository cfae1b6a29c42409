//! [`VoiceExtractor`]: capture payloads in, tracks out (locate, track, then the pipeline).

use super::{Sample, Sink, VoiceConfig, VoicePipeline, VoiceReport};
use crate::capture::Payload;
use crate::dissect::front::{self, dissect, PacketSink};
use crate::dissect::locate::{Found, Locator, PayloadMode};
use crate::dissect::session::{Direction, Tracker};

/// Capture payloads in, tracks out: the [`Locator`], the [`Tracker`] and the pipeline.
pub struct VoiceExtractor<S: Sample> {
    pub locator: Locator,
    pub tracker: Tracker,
    pub pipeline: VoicePipeline<S>,
    /// Dissonance packets found, and those that did not decode.
    pub packets: u64,
    pub malformed: u64,
    /// The last payload's number and time: where the capture ended.
    last: (u64, i64),
}

impl<S: Sample> VoiceExtractor<S> {
    pub fn new(mode: PayloadMode, cfg: VoiceConfig) -> VoiceExtractor<S> {
        VoiceExtractor {
            locator: Locator::new(mode),
            tracker: Tracker::new(),
            pipeline: VoicePipeline::new(cfg),
            packets: 0,
            malformed: 0,
            last: (0, 0),
        }
    }

    /// A capture frame's time (call for every frame, so the timeline starts at the first).
    pub fn frame_time(&mut self, ts_ns: i64, sink: &mut impl Sink<S>) {
        self.pipeline.advance(ts_ns, sink);
    }

    /// One transport payload.
    pub fn push_payload(&mut self, p: &Payload<'_>, sink: &mut impl Sink<S>) {
        self.last = (p.frame_number, p.ts_ns);
        let (locator, mut feed) = self.feed(sink);
        dissect(locator, p, &mut feed);
        // Nobody reads the session events here: drop them, or they pile up.
        while self.tracker.poll_event().is_some() {}
    }

    /// The locator, and the rest as the front end's sink (borrowed apart).
    fn feed<'a, K: Sink<S>>(&'a mut self, sink: &'a mut K) -> (&'a mut Locator, Feed<'a, S, K>) {
        let feed = Feed {
            tracker: &mut self.tracker,
            pipeline: &mut self.pipeline,
            packets: &mut self.packets,
            malformed: &mut self.malformed,
            sink,
        };
        (&mut self.locator, feed)
    }

    pub fn finish(&mut self, sink: &mut impl Sink<S>) -> VoiceReport {
        // Packets a game stack still held behind a gap go in too.
        let (number, ts_ns) = self.last;
        let (locator, mut feed) = self.feed(sink);
        front::finish(locator, number, ts_ns, &mut feed);
        self.pipeline.finish(&self.tracker, sink)
    }
}

/// The extractor's state as the front end's sink, for one payload.
struct Feed<'a, S: Sample, K: Sink<S>> {
    tracker: &'a mut Tracker,
    pipeline: &'a mut VoicePipeline<S>,
    packets: &'a mut u64,
    malformed: &'a mut u64,
    sink: &'a mut K,
}

impl<S: Sample, K: Sink<S>> PacketSink for Feed<'_, S, K> {
    fn tracker(&mut self) -> &mut Tracker {
        self.tracker
    }
    fn packet(&mut self, d: &Payload<'_>, found: &Found<'_>, _index: usize, _dir: Direction) {
        *self.packets += 1;
        match &found.result {
            Ok(pkt) => self.pipeline.push(d, pkt, self.tracker, self.sink),
            Err(_) => *self.malformed += 1,
        }
    }
}
