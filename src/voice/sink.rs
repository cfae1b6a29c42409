//! Where PCM goes: the [`Sink`] trait and [`MemorySink`] (samples kept in memory).

use super::{Sample, SpurtReport, TrackInfo};

/// Where PCM goes. Samples of one track arrive in order; `silence` stands for zeros.
/// Each talk spurt of a track arrives once complete, those of one speaker in order (those
/// of different speakers by when they were placed, not by start).
pub trait Sink<S> {
    fn open(&mut self, track: usize, info: &TrackInfo);
    fn write(&mut self, track: usize, samples: &[S]);
    fn silence(&mut self, track: usize, n: u64);
    fn spurt(&mut self, track: usize, spurt: &SpurtReport);
}

/// A sink that keeps every track in memory (tests, library use on short captures).
#[derive(Debug, Clone)]
pub struct MemorySink<S> {
    pub tracks: Vec<Option<(TrackInfo, Vec<S>)>>,
    /// Every track's spurts as they arrived.
    pub spurts: Vec<Vec<SpurtReport>>,
}

impl<S> Default for MemorySink<S> {
    fn default() -> Self {
        MemorySink {
            tracks: Vec::new(),
            spurts: Vec::new(),
        }
    }
}

impl<S: Sample> MemorySink<S> {
    pub fn samples(&self, track: usize) -> &[S] {
        self.tracks
            .get(track)
            .and_then(|t| t.as_ref())
            .map(|(_, s)| &s[..])
            .unwrap_or(&[])
    }
    /// A track's spurts by start (speakers in order at the same start), as sidecars list them.
    pub fn spurts(&self, track: usize) -> Vec<SpurtReport> {
        let mut v = self.spurts.get(track).cloned().unwrap_or_default();
        v.sort_by(|a, b| {
            a.start_s
                .total_cmp(&b.start_s)
                .then(a.speaker.cmp(&b.speaker))
        });
        v
    }
    /// The track with this stem.
    pub fn find(&self, stem: &str) -> Option<&[S]> {
        self.tracks
            .iter()
            .flatten()
            .find(|(i, _)| i.stem == stem)
            .map(|(_, s)| &s[..])
    }
}

impl<S: Sample> Sink<S> for MemorySink<S> {
    fn open(&mut self, track: usize, info: &TrackInfo) {
        if self.tracks.len() <= track {
            self.tracks.resize_with(track + 1, || None);
        }
        self.tracks[track] = Some((info.clone(), Vec::new()));
    }
    fn write(&mut self, track: usize, samples: &[S]) {
        if let Some(Some((_, v))) = self.tracks.get_mut(track) {
            v.extend_from_slice(samples);
        }
    }
    fn silence(&mut self, track: usize, n: u64) {
        if let Some(Some((_, v))) = self.tracks.get_mut(track) {
            v.resize(v.len() + n as usize, S::ZERO);
        }
    }
    fn spurt(&mut self, track: usize, spurt: &SpurtReport) {
        if self.spurts.len() <= track {
            self.spurts.resize_with(track + 1, Vec::new);
        }
        self.spurts[track].push(spurt.clone());
    }
}
