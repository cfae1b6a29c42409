//! [`VoiceExtractor`]: capture payloads in, tracks out (locate, track, then the pipeline).

use super::*;
use crate::dissect::locate::Found;

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

/// What a located packet updates: counted, tracked, and its voice into the pipeline.
struct Take<'v, S: Sample> {
    tracker: &'v mut Tracker,
    pipeline: &'v mut VoicePipeline<S>,
    packets: &'v mut u64,
    malformed: &'v mut u64,
}

impl<S: Sample> Take<'_, S> {
    fn packet(&mut self, found: &Found<'_>, meta: &PacketMeta, sink: &mut impl Sink<S>) {
        *self.packets += 1;
        match &found.result {
            Ok(pkt) => {
                self.tracker.observe(meta.ts_ns, meta.src, meta.dst, pkt);
                self.pipeline.push(meta, pkt, self.tracker, sink);
            }
            Err(_) => *self.malformed += 1,
        }
    }
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
        let key = FlowKey {
            src: p.src,
            dst: p.dst,
            tcp: p.transport == Transport::Tcp,
        };
        let meta = PacketMeta {
            number: p.frame_number,
            ts_ns: p.ts_ns,
            src: p.src,
            dst: p.dst,
        };
        self.last = (p.frame_number, p.ts_ns);
        let (locator, mut take) = self.split();
        let class = locator.locate_at(key, p.frame_number, p.ts_ns, p.data, |found| {
            take.packet(&found, &meta, sink)
        });
        match class {
            Classified::Bye => self.tracker.observe_bye(p.ts_ns, p.src),
            Classified::TransportDisconnect => self
                .tracker
                .observe_transport_disconnect(p.ts_ns, p.src, p.dst),
            _ => {}
        }
        // Nobody reads the session events here: drop them, or they pile up.
        while self.tracker.poll_event().is_some() {}
    }

    /// The locator, and what a located packet updates (borrowed apart).
    fn split(&mut self) -> (&mut Locator, Take<'_, S>) {
        let take = Take {
            tracker: &mut self.tracker,
            pipeline: &mut self.pipeline,
            packets: &mut self.packets,
            malformed: &mut self.malformed,
        };
        (&mut self.locator, take)
    }

    pub fn finish(&mut self, sink: &mut impl Sink<S>) -> VoiceReport {
        // Packets a game stack still held behind a gap go in too.
        let (number, ts_ns) = self.last;
        let (locator, mut take) = self.split();
        locator.finish(number, |key, found| {
            let meta = PacketMeta {
                number,
                ts_ns,
                src: key.src,
                dst: key.dst,
            };
            take.packet(&found, &meta, sink);
        });
        self.pipeline.finish(&self.tracker, sink)
    }
}
