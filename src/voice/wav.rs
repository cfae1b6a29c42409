//! The file shell around the pipeline: one WAV per track, written incrementally with
//! hound into `<stem>.wav.tmp` and renamed to `<stem>.wav` only when complete, plus a
//! sidecar `<stem>.json` (also written to a temporary name first). An interrupted run
//! leaves `.tmp` files, never a truncated file under a final name.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use hound::{SampleFormat, WavSpec, WavWriter};

use super::sample::Sample;
use super::{Sink, SpeakerReport, TrackInfo, TrackReport};

/// A sample type hound can write.
pub trait WavSample: Sample {
    const BITS: u16;
    const HOUND_FORMAT: SampleFormat;
    fn write_all<W: Write + Seek>(w: &mut WavWriter<W>, samples: &[Self]) -> hound::Result<()>;
}

impl WavSample for i16 {
    const BITS: u16 = 16;
    const HOUND_FORMAT: SampleFormat = SampleFormat::Int;
    fn write_all<W: Write + Seek>(w: &mut WavWriter<W>, samples: &[i16]) -> hound::Result<()> {
        // hound's block writer: one copy into its buffer instead of a call per sample.
        for chunk in samples.chunks(1 << 15) {
            let mut sw = w.get_i16_writer(chunk.len() as u32);
            for &s in chunk {
                sw.write_sample(s);
            }
            sw.flush()?;
        }
        Ok(())
    }
}

impl WavSample for f32 {
    const BITS: u16 = 32;
    const HOUND_FORMAT: SampleFormat = SampleFormat::Float;
    fn write_all<W: Write + Seek>(w: &mut WavWriter<W>, samples: &[f32]) -> hound::Result<()> {
        for &s in samples {
            w.write_sample(s)?;
        }
        Ok(())
    }
}

struct OutFile {
    stem: String,
    tmp: PathBuf,
    writer: Option<WavWriter<BufWriter<File>>>,
    samples: u64,
    error: Option<String>,
}

/// One written output.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub track: usize,
    /// The WAV's path (when it was written).
    pub wav: Option<PathBuf>,
    pub json: Option<PathBuf>,
    /// Why the WAV could not be written.
    pub error: Option<String>,
}

/// Writes each track to `dir`.
pub struct WavSink<S: WavSample> {
    dir: PathBuf,
    files: Vec<Option<OutFile>>,
    used: HashSet<String>,
    zeros: Vec<S>,
    _s: PhantomData<S>,
}

/// Largest sample count a WAV's 32-bit data size allows.
fn max_samples<S: WavSample>() -> u64 {
    (u32::MAX as u64 - 64) / (S::BITS as u64 / 8)
}

impl<S: WavSample> WavSink<S> {
    /// Files go into `dir`, which must exist.
    pub fn new(dir: impl Into<PathBuf>) -> WavSink<S> {
        WavSink {
            dir: dir.into(),
            files: Vec::new(),
            used: HashSet::new(),
            zeros: vec![S::ZERO; 4096],
            _s: PhantomData,
        }
    }

    /// A stem not used by another output of this run.
    fn unique(&mut self, stem: &str) -> String {
        let mut s = stem.to_string();
        let mut k = 2;
        while self.used.contains(&s) {
            s = format!("{stem}-{k}");
            k += 1;
        }
        self.used.insert(s.clone());
        s
    }

    fn file(&mut self, track: usize) -> Option<&mut OutFile> {
        self.files
            .get_mut(track)
            .and_then(|f| f.as_mut())
            .filter(|f| f.error.is_none())
    }

    fn fail(f: &mut OutFile, e: impl std::fmt::Display) {
        f.error = Some(format!("{}: {e}", f.tmp.display()));
        f.writer = None;
    }

    /// Closes every file, renames complete ones to their final names and writes the
    /// sidecars. Failed outputs keep no file.
    pub fn finish(&mut self, tracks: &[TrackReport], speakers: &[SpeakerReport]) -> Vec<Written> {
        let mut out = Vec::new();
        for t in tracks {
            let Some(mut f) = self.files.get_mut(t.track).and_then(|f| f.take()) else {
                continue;
            };
            self.used.remove(&f.stem);
            let stem = self.unique(&t.info.stem);
            let mut w = Written {
                track: t.track,
                wav: None,
                json: None,
                error: None,
            };
            let result = match f.writer.take() {
                Some(writer) if f.error.is_none() => writer.finalize().map_err(|e| e.to_string()),
                _ => Err(f.error.take().unwrap_or_else(|| "not written".into())),
            };
            let wav = self.dir.join(format!("{stem}.wav"));
            match result.and_then(|()| {
                std::fs::rename(&f.tmp, &wav).map_err(|e| format!("{}: {e}", wav.display()))
            }) {
                Ok(()) => w.wav = Some(wav.clone()),
                Err(e) => {
                    let _ = std::fs::remove_file(&f.tmp);
                    w.error = Some(e);
                    out.push(w);
                    continue;
                }
            }
            let mut json = t.to_json(speakers);
            if let Some(obj) = json.as_object_mut() {
                let name = format!("{stem}.wav");
                obj.insert("file".into(), serde_json::Value::String(name));
            }
            let path = self.dir.join(format!("{stem}.json"));
            match write_atomic(&path, &json) {
                Ok(()) => w.json = Some(path),
                Err(e) => w.error = Some(format!("{}: {e}", path.display())),
            }
            out.push(w);
        }
        out
    }

    /// Removes every temporary file (an interrupted or failed run).
    pub fn abort(&mut self) {
        for f in self.files.iter_mut().filter_map(|f| f.take()) {
            drop(f.writer);
            let _ = std::fs::remove_file(&f.tmp);
        }
    }
}

/// Writes `value` as pretty JSON to `path` through a temporary file.
fn write_atomic(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = BufWriter::new(File::create(&tmp)?);
        serde_json::to_writer_pretty(&mut f, value)?;
        f.write_all(b"\n")?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl<S: WavSample> Sink<S> for WavSink<S> {
    fn open(&mut self, track: usize, info: &TrackInfo) {
        let stem = self.unique(&info.stem);
        let tmp = self.dir.join(format!("{stem}.wav.tmp"));
        let spec = WavSpec {
            channels: 1,
            sample_rate: info.rate,
            bits_per_sample: S::BITS,
            sample_format: S::HOUND_FORMAT,
        };
        let mut f = OutFile {
            stem,
            tmp: tmp.clone(),
            writer: None,
            samples: 0,
            error: None,
        };
        match File::create(&tmp)
            .map_err(hound::Error::from)
            .and_then(|file| WavWriter::new(BufWriter::with_capacity(1 << 16, file), spec))
        {
            Ok(w) => f.writer = Some(w),
            Err(e) => Self::fail(&mut f, e),
        }
        if self.files.len() <= track {
            self.files.resize_with(track + 1, || None);
        }
        self.files[track] = Some(f);
    }

    fn write(&mut self, track: usize, samples: &[S]) {
        let Some(f) = self.file(track) else {
            return;
        };
        f.samples += samples.len() as u64;
        if f.samples > max_samples::<S>() {
            return Self::fail(f, "longer than a WAV file can hold (4 GiB)");
        }
        if let Some(w) = &mut f.writer {
            if let Err(e) = S::write_all(w, samples) {
                Self::fail(f, e);
            }
        }
    }

    fn silence(&mut self, track: usize, n: u64) {
        // Refuse at once rather than write gigabytes of zeros first (a capture with a
        // wild timestamp asks for that).
        if let Some(f) = self.file(track) {
            if f.samples + n > max_samples::<S>() {
                return Self::fail(f, "longer than a WAV file can hold (4 GiB)");
            }
        }
        let zeros = std::mem::take(&mut self.zeros);
        let mut left = n;
        while left > 0 {
            let k = left.min(zeros.len() as u64) as usize;
            self.write(track, &zeros[..k]);
            left -= k as u64;
            if self.file(track).is_none() {
                break;
            }
        }
        self.zeros = zeros;
    }
}

impl<S: WavSample> Drop for WavSink<S> {
    fn drop(&mut self) {
        // Whatever was not finished is incomplete: no file survives under a final name,
        // and no temporary file is left behind either.
        self.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voice::{Conceal, FrameStats, TrackKind};

    fn info(stem: &str) -> TrackInfo {
        TrackInfo {
            kind: TrackKind::Mix,
            stem: stem.into(),
            rate: 48000,
        }
    }

    fn report(track: usize, stem: &str, samples: u64) -> TrackReport {
        TrackReport {
            track,
            info: info(stem),
            samples,
            format: "int16",
            trim: false,
            conceal: Conceal::Fec,
            stats: FrameStats::default(),
            spurts: Vec::new(),
            speakers: Vec::new(),
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dissonance-wav-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn files_appear_only_when_complete() {
        let d = dir("atomic");
        let mut sink = WavSink::<i16>::new(&d);
        sink.open(0, &info("a"));
        sink.open(1, &info("a")); // same stem: made unique
        sink.write(0, &[1, 2, 3]);
        sink.silence(1, 5);
        // Mid-run: only temporary files.
        assert_eq!(names(&d), ["a-2.wav.tmp", "a.wav.tmp"]);
        let w = sink.finish(&[report(0, "a", 3), report(1, "a", 5)], &[]);
        assert!(w.iter().all(|w| w.error.is_none()));
        assert_eq!(names(&d), ["a-2.json", "a-2.wav", "a.json", "a.wav"]);
        let r = hound::WavReader::open(d.join("a.wav")).unwrap();
        assert_eq!(
            r.into_samples::<i16>()
                .map(|s| s.unwrap())
                .collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("a-2.json")).unwrap()).unwrap();
        assert_eq!(j["file"], "a-2.wav");
        assert_eq!(j["samples"], 5);
    }

    #[test]
    fn an_interrupted_run_leaves_nothing() {
        let d = dir("interrupted");
        {
            let mut sink = WavSink::<f32>::new(&d);
            sink.open(0, &info("x"));
            sink.write(0, &[0.5; 100]);
            // dropped without finish: Ctrl-C, an error, a panic elsewhere
        }
        assert!(names(&d).is_empty());
    }

    #[test]
    fn too_long_for_a_wav_fails_that_file_only() {
        let d = dir("toolong");
        let mut sink = WavSink::<i16>::new(&d);
        sink.open(0, &info("long"));
        sink.open(1, &info("ok"));
        sink.silence(0, 1 << 40);
        sink.write(1, &[7]);
        let w = sink.finish(&[report(0, "long", 0), report(1, "ok", 1)], &[]);
        assert!(w[0]
            .error
            .as_deref()
            .unwrap()
            .contains("longer than a WAV file can hold"));
        assert!(w[1].error.is_none());
        assert_eq!(names(&d), ["ok.json", "ok.wav"]);
    }
}
