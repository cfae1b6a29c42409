//! Where PCM goes: the [`Sink`] trait and [`MemorySink`] (samples kept in memory).

use super::{Sample, TrackInfo};

/// Where PCM goes. Samples of one track arrive in order; `silence` stands for zeros.
pub trait Sink<S> {
    fn open(&mut self, track: usize, info: &TrackInfo);
    fn write(&mut self, track: usize, samples: &[S]);
    fn silence(&mut self, track: usize, n: u64);
}

/// A sink that keeps every track in memory (tests, library use on short captures).
#[derive(Debug, Clone)]
pub struct MemorySink<S> {
    pub tracks: Vec<Option<(TrackInfo, Vec<S>)>>,
}

impl<S> Default for MemorySink<S> {
    fn default() -> Self {
        MemorySink { tracks: Vec::new() }
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
}
