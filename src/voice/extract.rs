//! [`VoiceExtractor`]: capture payloads in, tracks out (locate, track, then the pipeline).

use super::*;

/// Capture payloads in, tracks out: the [`Locator`], the [`Tracker`] and the pipeline.
pub struct VoiceExtractor<S: Sample> {
    pub locator: Locator,
    pub tracker: Tracker,
    pub pipeline: VoicePipeline<S>,
    /// Dissonance packets found, and those that did not decode.
    pub packets: u64,
    pub malformed: u64,
}

impl<S: Sample> VoiceExtractor<S> {
    pub fn new(mode: PayloadMode, cfg: VoiceConfig) -> VoiceExtractor<S> {
        VoiceExtractor {
            locator: Locator::new(mode),
            tracker: Tracker::new(),
            pipeline: VoicePipeline::new(cfg),
            packets: 0,
            malformed: 0,
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
        let VoiceExtractor {
            locator,
            tracker,
            pipeline,
            packets,
            malformed,
        } = self;
        let class = locator.locate_at(key, p.frame_number, p.ts_ns, p.data, |found| {
            *packets += 1;
            match &found.result {
                Ok(pkt) => {
                    tracker.observe(meta.ts_ns, meta.src, meta.dst, pkt);
                    pipeline.push(&meta, pkt, tracker, sink);
                }
                Err(_) => *malformed += 1,
            }
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

    pub fn finish(&mut self, sink: &mut impl Sink<S>) -> VoiceReport {
        self.pipeline.finish(&self.tracker, sink)
    }
}
