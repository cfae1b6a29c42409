//! Output tracks: where decoded frames land on the timeline. A speaker's own track has
//! one source and is written straight through; mix, room and listener tracks add several
//! sources in a buffer that is committed once no source can still write before a point
//! (the watermark), so memory stays a few seconds of audio whatever the capture length.

use std::collections::VecDeque;

use super::sample::Sample;
use super::stream::EndReason;
use super::{Sink, SpurtData, SpurtReport, TrackInfo};

/// A spurt boundary, placed in the WAV when the track gets there; the end carries the
/// finished spurt, which goes to the sink as soon as it is placed.
#[derive(Debug, Clone)]
pub(crate) enum Mark {
    Start {
        view: usize,
        spurt: u64,
    },
    End {
        view: usize,
        spurt: u64,
        data: SpurtData,
    },
}

enum Body<S: Sample> {
    Direct {
        /// Timeline position reached.
        pos: u64,
    },
    Mixed {
        /// Timeline position of `acc[0]`.
        base: u64,
        acc: VecDeque<S::Acc>,
        /// Written intervals at or after `base`, sorted, disjoint (for `--trim`).
        cover: Vec<(u64, u64)>,
        pending: Vec<(u64, Mark)>,
        scratch: Vec<S>,
    },
}

pub(crate) struct Track<S: Sample> {
    pub id: usize,
    pub info: TrackInfo,
    pub trim: bool,
    /// Views feeding this track.
    pub sources: Vec<usize>,
    /// Samples handed to the sink.
    pub wav_len: u64,
    /// Samples that arrived for a place already written (should stay 0).
    pub dropped: u64,
    /// Spurts whose start is placed and end is not: (view, spurt, WAV position), one
    /// per source at most (a source's next spurt starts after its last one ended).
    open: Vec<(usize, u64, u64)>,
    /// Spurts handed to the sink, and their total length on the timeline.
    pub spurts: u64,
    pub speech_samples: u64,
    body: Body<S>,
}

const CHUNK: usize = 4096;

impl<S: Sample> Track<S> {
    pub fn direct(id: usize, info: TrackInfo, trim: bool) -> Track<S> {
        Track {
            id,
            info,
            trim,
            sources: Vec::new(),
            wav_len: 0,
            dropped: 0,
            open: Vec::new(),
            spurts: 0,
            speech_samples: 0,
            body: Body::Direct { pos: 0 },
        }
    }

    pub fn mixed(id: usize, info: TrackInfo, trim: bool) -> Track<S> {
        Track {
            body: Body::Mixed {
                base: 0,
                acc: VecDeque::new(),
                cover: Vec::new(),
                pending: Vec::new(),
                scratch: Vec::with_capacity(CHUNK),
            },
            ..Track::direct(id, info, trim)
        }
    }

    pub fn is_mixed(&self) -> bool {
        matches!(self.body, Body::Mixed { .. })
    }

    /// Samples buffered and not yet committed.
    pub fn buffered(&self) -> usize {
        match &self.body {
            Body::Direct { .. } => 0,
            Body::Mixed { acc, .. } => acc.len(),
        }
    }

    /// Notes where a spurt starts or ends (timeline position `pos`).
    pub fn mark(&mut self, pos: u64, mark: Mark, sink: &mut impl Sink<S>) {
        match &mut self.body {
            Body::Direct { pos: cur } => {
                let at = if self.trim {
                    self.wav_len
                } else {
                    pos.max(*cur)
                };
                self.placed(mark, at, sink);
            }
            Body::Mixed { pending, .. } => pending.push((pos, mark)),
        }
    }

    /// A mark's WAV position is known: a start waits for its end, an end completes the
    /// spurt, which goes to the sink.
    fn placed(&mut self, mark: Mark, at: u64, sink: &mut impl Sink<S>) {
        match mark {
            Mark::Start { view, spurt } => self.open.push((view, spurt, at)),
            Mark::End { view, spurt, data } => {
                let start = self
                    .open
                    .iter()
                    .position(|&(v, k, _)| v == view && k == spurt)
                    .map_or(0, |i| self.open.swap_remove(i).2);
                let secs = |pos: u64| pos as f64 / self.info.rate as f64;
                self.spurts += 1;
                self.speech_samples += data.end_pos.saturating_sub(data.start_pos);
                let report = SpurtReport {
                    session: data.session,
                    speaker_id: data.speaker_id,
                    speaker: data.speaker,
                    ts_ns: data.ts_ns,
                    start_s: secs(data.start_pos),
                    end_s: secs(data.end_pos),
                    wav_start_s: secs(start),
                    wav_end_s: secs(at),
                    first_seq: data.first_seq.rem_euclid(65536) as u16,
                    last_seq: data.last_seq.rem_euclid(65536) as u16,
                    first_packet: data.first_packet,
                    frames: data.stats.frames(),
                    stats: data.stats,
                    end: data.end.map_or("end_of_capture", EndReason::name),
                };
                sink.spurt(self.id, &report);
            }
        }
    }

    /// Adds `pcm` at timeline position `pos`.
    pub fn write(&mut self, pos: u64, pcm: &[S], sink: &mut impl Sink<S>) {
        match &mut self.body {
            Body::Direct { pos: cur } => {
                let mut pcm = pcm;
                let mut pos = pos;
                if pos < *cur {
                    let skip = ((*cur - pos) as usize).min(pcm.len());
                    self.dropped += skip as u64;
                    pcm = &pcm[skip..];
                    pos += skip as u64;
                }
                if pcm.is_empty() {
                    return;
                }
                if pos > *cur && !self.trim {
                    sink.silence(self.id, pos - *cur);
                    self.wav_len += pos - *cur;
                }
                *cur = pos + pcm.len() as u64;
                sink.write(self.id, pcm);
                self.wav_len += pcm.len() as u64;
            }
            Body::Mixed {
                base, acc, cover, ..
            } => {
                let mut pcm = pcm;
                let mut pos = pos;
                if pos < *base {
                    let skip = ((*base - pos) as usize).min(pcm.len());
                    self.dropped += skip as u64;
                    pcm = &pcm[skip..];
                    pos += skip as u64;
                }
                if pcm.is_empty() {
                    return;
                }
                let off = (pos - *base) as usize;
                if acc.len() < off + pcm.len() {
                    acc.resize(off + pcm.len(), S::Acc::default());
                }
                for (a, &s) in acc.range_mut(off..off + pcm.len()).zip(pcm) {
                    S::add(a, s);
                }
                add_interval(cover, pos, pos + pcm.len() as u64);
            }
        }
    }

    /// Writes out everything before timeline position `upto` (no source will write there
    /// any more).
    pub fn commit(&mut self, upto: u64, sink: &mut impl Sink<S>) {
        let Body::Mixed {
            base,
            acc,
            cover,
            pending,
            scratch,
        } = &mut self.body
        else {
            return;
        };
        if upto <= *base {
            return;
        }
        let n = upto - *base;
        let wav_at_base = self.wav_len;
        // Marks first: they need the coverage of this range.
        let mut placed = Vec::new();
        let mut later = Vec::new();
        for (pos, mark) in pending.drain(..) {
            if pos > upto {
                later.push((pos, mark));
                continue;
            }
            let at = if self.trim {
                wav_at_base + covered(cover, *base, pos.max(*base))
            } else {
                pos
            };
            placed.push((mark, at));
        }
        *pending = later;
        let from_acc = (n as usize).min(acc.len());
        if self.trim {
            for &(a, b) in cover.iter() {
                let (a, b) = (a.max(*base), b.min(upto));
                if a >= b {
                    continue;
                }
                let (i, j) = ((a - *base) as usize, (b - *base) as usize);
                emit(acc.range(i..j.min(acc.len())), scratch, self.id, sink);
                self.wav_len += (j - i) as u64;
            }
        } else {
            emit(acc.range(..from_acc), scratch, self.id, sink);
            if n > from_acc as u64 {
                sink.silence(self.id, n - from_acc as u64);
            }
            self.wav_len += n;
        }
        acc.drain(..from_acc);
        *base = upto;
        cover.retain_mut(|iv| {
            iv.0 = iv.0.max(upto);
            iv.0 < iv.1
        });
        for (mark, at) in placed {
            self.placed(mark, at, sink);
        }
    }

    /// Writes out the rest; without `--trim` the track is padded to `end` (the end of the
    /// capture on the timeline).
    pub fn finish(&mut self, end: u64, sink: &mut impl Sink<S>) {
        match &mut self.body {
            Body::Direct { pos } => {
                if !self.trim && end > *pos {
                    sink.silence(self.id, end - *pos);
                    self.wav_len += end - *pos;
                    *pos = end;
                }
            }
            Body::Mixed { base, acc, .. } => {
                let last = *base + acc.len() as u64;
                let upto = if self.trim { last } else { last.max(end) };
                self.commit(upto, sink);
                // Marks past the end (cannot happen with consistent sources) still resolve.
                if let Body::Mixed { pending, .. } = &mut self.body {
                    for (_, mark) in std::mem::take(pending) {
                        self.placed(mark, self.wav_len, sink);
                    }
                }
            }
        }
    }
}

fn emit<'a, S: Sample>(
    it: impl Iterator<Item = &'a S::Acc>,
    scratch: &mut Vec<S>,
    id: usize,
    sink: &mut impl Sink<S>,
) {
    scratch.clear();
    for &a in it {
        scratch.push(S::from_acc(a));
        if scratch.len() == CHUNK {
            sink.write(id, scratch);
            scratch.clear();
        }
    }
    if !scratch.is_empty() {
        sink.write(id, scratch);
    }
}

/// Inserts `[a, b)` into a sorted list of disjoint intervals, merging.
fn add_interval(list: &mut Vec<(u64, u64)>, a: u64, b: u64) {
    // Sources mostly append: try the last interval first.
    if let Some(last) = list.last_mut() {
        if a >= last.0 && a <= last.1 {
            last.1 = last.1.max(b);
            return;
        }
        if a > last.1 {
            list.push((a, b));
            return;
        }
    } else {
        list.push((a, b));
        return;
    }
    let i = list.partition_point(|iv| iv.1 < a);
    let mut j = i;
    let (mut lo, mut hi) = (a, b);
    while j < list.len() && list[j].0 <= hi {
        lo = lo.min(list[j].0);
        hi = hi.max(list[j].1);
        j += 1;
    }
    list.splice(i..j, [(lo, hi)]);
}

/// Covered samples in `[from, to)`.
fn covered(list: &[(u64, u64)], from: u64, to: u64) -> u64 {
    list.iter()
        .map(|&(a, b)| b.min(to).saturating_sub(a.max(from)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voice::{MemorySink, Sink, TrackKind};

    fn start(view: usize, spurt: u64) -> Mark {
        Mark::Start { view, spurt }
    }

    fn end(view: usize, spurt: u64, from: u64, to: u64) -> Mark {
        let data = SpurtData {
            start_pos: from,
            end_pos: to,
            ..SpurtData::default()
        };
        Mark::End { view, spurt, data }
    }

    fn info() -> TrackInfo {
        TrackInfo {
            kind: TrackKind::Mix,
            stem: "mix".into(),
            rate: 48000,
        }
    }

    #[test]
    fn intervals_merge() {
        let mut l = Vec::new();
        add_interval(&mut l, 10, 20);
        add_interval(&mut l, 20, 30);
        add_interval(&mut l, 40, 50);
        add_interval(&mut l, 0, 5);
        assert_eq!(l, vec![(0, 5), (10, 30), (40, 50)]);
        add_interval(&mut l, 4, 41);
        assert_eq!(l, vec![(0, 50)]);
        assert_eq!(covered(&[(0, 5), (10, 30)], 3, 12), 4);
    }

    #[test]
    fn direct_fills_gaps_unless_trimmed() {
        for trim in [false, true] {
            let mut sink = MemorySink::default();
            sink.open(0, &info());
            let mut t = Track::<i16>::direct(0, info(), trim);
            t.mark(2, start(0, 0), &mut sink);
            t.write(2, &[1, 2], &mut sink);
            t.write(3, &[9, 3], &mut sink); // overlaps one sample: dropped
            t.mark(4, end(0, 0, 2, 4), &mut sink);
            t.mark(6, start(0, 1), &mut sink);
            t.write(6, &[4], &mut sink);
            t.mark(7, end(0, 1, 6, 7), &mut sink);
            t.finish(9, &mut sink);
            let expect: &[i16] = if trim {
                &[1, 2, 3, 4]
            } else {
                &[0, 0, 1, 2, 3, 0, 4, 0, 0]
            };
            assert_eq!(sink.samples(0), expect);
            assert_eq!(t.dropped, 1);
            let wav: Vec<(f64, f64)> = sink
                .spurts(0)
                .iter()
                .map(|s| {
                    (
                        (s.wav_start_s * 48000.0).round(),
                        (s.wav_end_s * 48000.0).round(),
                    )
                })
                .collect();
            let expect = if trim {
                [(0.0, 3.0), (3.0, 4.0)]
            } else {
                [(2.0, 5.0), (6.0, 7.0)]
            };
            assert_eq!(wav, expect);
            assert_eq!((t.spurts, t.speech_samples), (2, 3));
        }
    }

    #[test]
    fn mixed_adds_commits_and_trims() {
        for trim in [false, true] {
            let mut sink = MemorySink::default();
            sink.open(0, &info());
            let mut t = Track::<i16>::mixed(0, info(), trim);
            t.write(2, &[1, 1, 1], &mut sink);
            t.write(3, &[30000, 30000], &mut sink);
            t.mark(8, start(1, 0), &mut sink);
            t.write(8, &[5], &mut sink);
            t.mark(9, end(1, 0, 8, 9), &mut sink);
            t.commit(4, &mut sink);
            assert_eq!(t.buffered(), 5);
            t.write(3, &[7], &mut sink); // before the watermark: dropped
            t.finish(11, &mut sink);
            let expect: &[i16] = if trim {
                &[1, 30001, 30001, 5]
            } else {
                &[0, 0, 1, 30001, 30001, 0, 0, 0, 5, 0, 0]
            };
            assert_eq!(sink.samples(0), expect);
            assert_eq!(t.dropped, 1);
            let s = &sink.spurts(0)[0];
            let at = if trim { (3.0, 4.0) } else { (8.0, 9.0) };
            assert_eq!((s.wav_start_s * 48000.0, s.wav_end_s * 48000.0), at);
            assert_eq!((s.start_s * 48000.0, s.end_s * 48000.0), (8.0, 9.0));
        }
        // Overlapping loud sources clip once.
        let mut sink = MemorySink::default();
        sink.open(0, &info());
        let mut t = Track::<i16>::mixed(0, info(), true);
        t.write(0, &[30000, -30000], &mut sink);
        t.write(0, &[30000, -30000], &mut sink);
        t.write(0, &[-30000, 30000], &mut sink);
        t.finish(0, &mut sink);
        assert_eq!(sink.samples(0), &[30000, -30000]);
    }
}
