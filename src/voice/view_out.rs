//! One view's output: decoding its talk spurts and placing them on tracks.

use super::stream::{self, Emit, StreamMachine};
use super::track::Mark;
use super::{
    opus_has_fec, Conceal, Ctx, FrameStats, Sample, Sink, SpurtData, Timeline, ViewOut, Warning,
};

/// Most corrupt-frame warnings printed per speaker (every one is counted).
const MAX_CORRUPT_WARNINGS: u32 = 10;

impl<S: Sample> ViewOut<S> {
    pub(super) fn handle<K: Sink<S>>(&mut self, e: Emit<'_>, ctx: &mut Ctx<'_, S, K>) {
        match e {
            Emit::Start {
                seq,
                start_ns,
                first_number,
            } => {
                self.dec.reset();
                let p = ctx.timeline.pos(start_ns).max(self.end_pos);
                self.pos = p;
                self.in_spurt = true;
                self.stats.spurts += 1;
                let spurt = self.stats.spurts;
                let sp = &*ctx.speaker;
                self.spurt = SpurtData {
                    speaker: self.speaker,
                    session: sp.session,
                    speaker_id: sp.id,
                    start_pos: p,
                    ts_ns: ctx.timeline.ts_ns(p),
                    first_seq: seq,
                    last_seq: seq,
                    first_packet: first_number,
                    ..SpurtData::default()
                };
                let view = self.id;
                for &t in &self.targets {
                    ctx.tracks[t].mark(p, Mark::Start { view, spurt }, ctx.sink);
                }
            }
            Emit::Frame {
                seq,
                number,
                audio,
                next,
            } => match self.dec.decode(audio) {
                Ok(()) => {
                    self.count(|s| s.decoded += 1);
                    self.write(ctx);
                }
                Err(msg) => {
                    self.count(|s| s.corrupt += 1);
                    let sp = &mut *ctx.speaker;
                    sp.corrupt_reported += 1;
                    if sp.corrupt_reported <= MAX_CORRUPT_WARNINGS {
                        let more = if sp.corrupt_reported == MAX_CORRUPT_WARNINGS {
                            "; further corrupt frames of this speaker are only counted"
                        } else {
                            ""
                        };
                        ctx.warnings.push_back(Warning {
                            packet: Some(number),
                            message: format!(
                                "{} seq {}: corrupt frame ({msg}), concealed{more}",
                                sp.label(),
                                seq.rem_euclid(65536)
                            ),
                        });
                    }
                    self.conceal(next, ctx);
                }
            },
            Emit::Missing { next, .. } => {
                self.count(|s| s.lost += 1);
                self.conceal(next, ctx);
            }
            Emit::End { reason, last_seq } => {
                self.spurt.end_pos = self.pos;
                self.spurt.last_seq = last_seq;
                self.spurt.end = Some(reason);
                self.end_pos = self.pos;
                self.in_spurt = false;
                let (view, spurt) = (self.id, self.stats.spurts);
                for &t in &self.targets {
                    let data = self.spurt.clone();
                    let end = Mark::End { view, spurt, data };
                    ctx.tracks[t].mark(self.pos, end, ctx.sink);
                }
            }
        }
    }

    pub(super) fn count(&mut self, f: impl Fn(&mut FrameStats)) {
        f(&mut self.stats);
        f(&mut self.spurt.stats);
    }

    pub(super) fn conceal<K: Sink<S>>(&mut self, next: Option<&[u8]>, ctx: &mut Ctx<'_, S, K>) {
        let opus = self.dec.is_opus();
        if ctx.conceal == Conceal::Fec && opus {
            if let Some(n) = next.filter(|n| opus_has_fec(n)) {
                if self.dec.fec(n).is_ok() {
                    self.count(|s| s.recovered_fec += 1);
                    return self.write(ctx);
                }
            }
        }
        if ctx.conceal != Conceal::Silence && opus && self.dec.plc().is_ok() {
            self.count(|s| s.concealed_plc += 1);
            return self.write(ctx);
        }
        self.dec.silence();
        self.count(|s| s.silenced += 1);
        self.write(ctx);
    }

    /// Writes the decoder's last output at the current position.
    pub(super) fn write<K: Sink<S>>(&mut self, ctx: &mut Ctx<'_, S, K>) {
        let pcm = self.dec.output();
        for &t in &self.targets {
            ctx.tracks[t].write(self.pos, pcm, ctx.sink);
        }
        self.pos += pcm.len() as u64;
    }

    /// No write of this view will ever land before the returned position.
    pub(super) fn lower_bound(
        &self,
        machine: &StreamMachine,
        timeline: &Timeline,
        floor: u64,
    ) -> u64 {
        if self.in_spurt {
            return self.pos;
        }
        match machine.pending_since() {
            Some(t) => timeline.pos(t - 2 * stream::REORDER_NS).max(self.end_pos),
            None => floor.max(self.end_pos),
        }
    }
}
