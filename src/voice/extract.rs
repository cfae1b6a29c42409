//! [`VoiceExtractor`]: capture payloads in, tracks out (locate, track, then the pipeline).

use super::{Sample, Sink, VoiceConfig, VoicePipeline, VoiceReport};
use crate::capture::Payload;
use crate::codec::{Message, Packet};
use crate::dissect::filter::{Filter, Subject};
use crate::dissect::front::{self, dissect, PacketSink};
use crate::dissect::locate::{Found, Locator, PayloadMode};
use crate::dissect::record::Head;
use crate::dissect::session::{Direction, Tracker};

/// Capture payloads in, tracks out: the [`Locator`], the [`Tracker`] and the pipeline.
pub struct VoiceExtractor<S: Sample> {
    pub locator: Locator,
    pub tracker: Tracker,
    pub pipeline: VoicePipeline<S>,
    /// Dissonance packets found, and those that did not decode.
    pub packets: u64,
    pub malformed: u64,
    /// `voice -Y`: only the voice packets it selects are decoded (every other packet
    /// still goes to the pipeline: it follows rooms and sessions with them).
    pub filter: Option<Filter>,
    /// Voice packets the filter left out.
    pub filtered_out: u64,
    /// The last payload's number and time: where the capture ended.
    last: (u64, i64),
    /// The capture's first payload time (the filter's `rel`).
    first_ns: Option<i64>,
}

impl<S: Sample> VoiceExtractor<S> {
    pub fn new(mode: PayloadMode, cfg: VoiceConfig) -> VoiceExtractor<S> {
        VoiceExtractor {
            locator: Locator::new(mode),
            tracker: Tracker::new(),
            pipeline: VoicePipeline::new(cfg),
            packets: 0,
            malformed: 0,
            filter: None,
            filtered_out: 0,
            last: (0, 0),
            first_ns: None,
        }
    }

    /// A capture frame's time (call for every frame, so the timeline starts at the first).
    pub fn frame_time(&mut self, ts_ns: i64, sink: &mut impl Sink<S>) {
        self.pipeline.advance(ts_ns, sink);
    }

    /// One transport payload.
    pub fn push_payload(&mut self, p: &Payload<'_>, sink: &mut impl Sink<S>) {
        self.last = (p.frame_number, p.ts_ns);
        self.first_ns.get_or_insert(p.ts_ns);
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
            filter: self.filter.as_ref(),
            filtered_out: &mut self.filtered_out,
            first_ns: self.first_ns.unwrap_or(0),
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
    filter: Option<&'a Filter>,
    filtered_out: &'a mut u64,
    first_ns: i64,
    sink: &'a mut K,
}

/// A VoiceData, or a relay wrapping one.
fn carries_voice(p: &Packet<'_>) -> bool {
    match &p.message {
        Message::VoiceData(_) => true,
        Message::ServerRelayUnreliable(r) | Message::ServerRelayReliable(r) => r
            .inner()
            .is_ok_and(|i| matches!(i.message, Message::VoiceData(_))),
        _ => false,
    }
}

impl<S: Sample, K: Sink<S>> PacketSink for Feed<'_, S, K> {
    fn tracker(&mut self) -> &mut Tracker {
        self.tracker
    }
    fn packet(&mut self, d: &Payload<'_>, found: &Found<'_>, index: usize, dir: Direction) {
        *self.packets += 1;
        match &found.result {
            Ok(pkt)
                if self.filter.is_some_and(|f| {
                    carries_voice(pkt)
                        && !f.matches(&Subject {
                            head: Some(&Head::of(
                                d,
                                found,
                                (d.ts_ns - self.first_ns) as f64 / 1e9,
                                index,
                                dir,
                            )),
                            bytes: found.bytes,
                            result: &found.result,
                            names: &self.tracker.names(pkt.message.session()),
                        })
                }) =>
            {
                // Left out, but the timeline still moves on.
                *self.filtered_out += 1;
                self.pipeline.advance(d.ts_ns, self.sink);
            }
            Ok(pkt) => self.pipeline.push(d, pkt, self.tracker, self.sink),
            Err(_) => *self.malformed += 1,
        }
    }
}
