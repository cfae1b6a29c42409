//! The file shell around the pipeline: one WAV per track, written incrementally (16-bit
//! with hound, 32-bit float by [`FloatWav`]) into `<stem>.wav.tmp` and renamed to `<stem>.wav` only when complete, plus a
//! sidecar `<stem>.json` (also written to a temporary name first). An interrupted run
//! leaves `.tmp` files, never a truncated file under a final name.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use hound::{SampleFormat, WavSpec, WavWriter};

use super::sample::Sample;
use super::spool::Spool;
use super::{Sink, SpeakerReport, SpurtReport, TrackInfo, TrackReport};

/// A sample type a WAV file can hold, with the writer for it.
pub trait WavSample: Sample {
    const BITS: u16;
    type Writer: WavOut<Self>;
    fn create(file: BufWriter<File>, rate: u32) -> std::io::Result<Self::Writer>;
}

/// An open WAV file: samples in, sizes fixed up at `finalize`.
pub trait WavOut<S> {
    fn write_all(&mut self, samples: &[S]) -> std::io::Result<()>;
    fn finalize(self) -> std::io::Result<()>;
}

fn io_err(e: hound::Error) -> std::io::Error {
    match e {
        hound::Error::IoError(e) => e,
        e => std::io::Error::other(e.to_string()),
    }
}

impl WavSample for i16 {
    const BITS: u16 = 16;
    type Writer = WavWriter<BufWriter<File>>;
    fn create(file: BufWriter<File>, rate: u32) -> std::io::Result<Self::Writer> {
        let spec = WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: SampleFormat::Int,
        };
        WavWriter::new(file, spec).map_err(io_err)
    }
}

impl<W: Write + Seek> WavOut<i16> for WavWriter<W> {
    fn write_all(&mut self, samples: &[i16]) -> std::io::Result<()> {
        // hound's block writer: one copy into its buffer instead of a call per sample.
        for chunk in samples.chunks(1 << 15) {
            let mut sw = self.get_i16_writer(chunk.len() as u32);
            for &s in chunk {
                sw.write_sample(s);
            }
            sw.flush().map_err(io_err)?;
        }
        Ok(())
    }
    fn finalize(self) -> std::io::Result<()> {
        WavWriter::finalize(self).map_err(io_err)
    }
}

impl WavSample for f32 {
    const BITS: u16 = 32;
    type Writer = FloatWav<BufWriter<File>>;
    fn create(file: BufWriter<File>, rate: u32) -> std::io::Result<Self::Writer> {
        FloatWav::new(file, rate)
    }
}

/// A mono 32-bit float WAV laid out as sox writes one: WAVE_FORMAT_IEEE_FLOAT in an
/// 18-byte WAVEFORMATEX `fmt ` chunk (cbSize 0), then the `fact` chunk with the sample
/// count that the format requires for non-PCM data, then `data`. Not hound: for 32-bit
/// samples it writes WAVE_FORMAT_EXTENSIBLE without a `fact` chunk, which sox reads with
/// "wave header missing extended part of fmt chunk" (and hound cannot write `fact`).
pub struct FloatWav<W: Write + Seek> {
    w: W,
    samples: u64,
}

/// Offsets in the 58-byte header: RIFF size, fact's sample count, data size.
const RIFF_SIZE_AT: u64 = 4;
const FACT_COUNT_AT: u64 = 46;
const DATA_SIZE_AT: u64 = 54;
const FLOAT_HEADER: u64 = 58;

impl<W: Write + Seek> FloatWav<W> {
    pub fn new(mut w: W, rate: u32) -> std::io::Result<FloatWav<W>> {
        let mut h = Vec::with_capacity(FLOAT_HEADER as usize);
        h.extend_from_slice(b"RIFF\0\0\0\0WAVEfmt ");
        h.extend_from_slice(&18u32.to_le_bytes());
        h.extend_from_slice(&3u16.to_le_bytes()); // WAVE_FORMAT_IEEE_FLOAT
        h.extend_from_slice(&1u16.to_le_bytes()); // channels
        h.extend_from_slice(&rate.to_le_bytes());
        h.extend_from_slice(&(rate * 4).to_le_bytes()); // bytes per second
        h.extend_from_slice(&4u16.to_le_bytes()); // block align
        h.extend_from_slice(&32u16.to_le_bytes()); // bits per sample
        h.extend_from_slice(&0u16.to_le_bytes()); // cbSize: no extension
        h.extend_from_slice(b"fact");
        h.extend_from_slice(&4u32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // sample count, set by finalize
        h.extend_from_slice(b"data\0\0\0\0");
        debug_assert_eq!(h.len() as u64, FLOAT_HEADER);
        w.write_all(&h)?;
        Ok(FloatWav { w, samples: 0 })
    }
}

impl<W: Write + Seek> WavOut<f32> for FloatWav<W> {
    fn write_all(&mut self, samples: &[f32]) -> std::io::Result<()> {
        let mut buf = [0u8; 4096];
        for chunk in samples.chunks(buf.len() / 4) {
            for (b, s) in buf.chunks_exact_mut(4).zip(chunk) {
                b.copy_from_slice(&s.to_le_bytes());
            }
            self.w.write_all(&buf[..chunk.len() * 4])?;
        }
        self.samples += samples.len() as u64;
        Ok(())
    }

    fn finalize(mut self) -> std::io::Result<()> {
        use std::io::SeekFrom;
        // The sink refuses files past 4 GiB before they get here (max_samples).
        let data = u32::try_from(self.samples * 4)
            .map_err(|_| std::io::Error::other("longer than a WAV file can hold (4 GiB)"))?;
        let riff = data + (FLOAT_HEADER as u32 - 8);
        for (at, v) in [
            (RIFF_SIZE_AT, riff),
            (FACT_COUNT_AT, self.samples as u32),
            (DATA_SIZE_AT, data),
        ] {
            self.w.seek(SeekFrom::Start(at))?;
            self.w.write_all(&v.to_le_bytes())?;
        }
        self.w.flush()
    }
}

struct OutFile<S: WavSample> {
    stem: String,
    tmp: PathBuf,
    writer: Option<S::Writer>,
    samples: u64,
    error: Option<String>,
    /// The track's spurts until the sidecar is written (created at the first one).
    spool: Option<Spool>,
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
    files: Vec<Option<OutFile<S>>>,
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

    fn file(&mut self, track: usize) -> Option<&mut OutFile<S>> {
        self.files
            .get_mut(track)
            .and_then(|f| f.as_mut())
            .filter(|f| f.error.is_none())
    }

    fn fail(f: &mut OutFile<S>, e: impl std::fmt::Display) {
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
            match write_atomic(&path, &json, f.spool.as_mut(), speakers) {
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

/// Writes `value` as pretty JSON to `path` through a temporary file, its empty `spurts`
/// array filled from `spool` one spurt at a time.
fn write_atomic(
    path: &Path,
    value: &serde_json::Value,
    spool: Option<&mut Spool>,
    speakers: &[SpeakerReport],
) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = BufWriter::new(File::create(&tmp)?);
        let text = serde_json::to_string_pretty(value)?;
        // The key at the object's first level (two spaces in); strings inside cannot
        // hold a raw newline.
        match (text.split_once("\n  \"spurts\": []"), spool) {
            (Some((head, tail)), Some(spool)) => {
                f.write_all(head.as_bytes())?;
                f.write_all(b"\n  \"spurts\": [")?;
                let mut first = true;
                spool.sorted(|s| write_spurt(&mut f, s, speakers, std::mem::take(&mut first)))?;
                f.write_all(b"\n  ]")?;
                f.write_all(tail.as_bytes())?;
            }
            _ => f.write_all(text.as_bytes())?,
        }
        f.write_all(b"\n")?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// One element of the sidecar's `spurts` array, laid out as `to_writer_pretty` lays out
/// the array's elements (four spaces in).
fn write_spurt(
    f: &mut impl Write,
    s: &SpurtReport,
    speakers: &[SpeakerReport],
    first: bool,
) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&s.to_json(speakers))?;
    f.write_all(if first { b"\n" } else { b",\n" })?;
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            f.write_all(b"\n")?;
        }
        f.write_all(b"    ")?;
        f.write_all(line.as_bytes())?;
    }
    Ok(())
}

impl<S: WavSample> Sink<S> for WavSink<S> {
    fn open(&mut self, track: usize, info: &TrackInfo) {
        let stem = self.unique(&info.stem);
        let tmp = self.dir.join(format!("{stem}.wav.tmp"));
        let mut f = OutFile {
            stem,
            tmp: tmp.clone(),
            writer: None,
            samples: 0,
            error: None,
            spool: None,
        };
        match File::create(&tmp)
            .and_then(|file| S::create(BufWriter::with_capacity(1 << 16, file), info.rate))
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
            if let Err(e) = w.write_all(samples) {
                Self::fail(f, e);
            }
        }
    }

    fn spurt(&mut self, track: usize, spurt: &SpurtReport) {
        let dir = self.dir.clone();
        let Some(f) = self.file(track) else {
            return;
        };
        if f.spool.is_none() {
            match Spool::create(&dir.join(format!("{}.spurts.tmp", f.stem))) {
                Ok(spool) => f.spool = Some(spool),
                Err(e) => return Self::fail(f, e),
            }
        }
        if let Err(e) = f.spool.as_mut().map_or(Ok(()), |s| s.push(spurt)) {
            Self::fail(f, e);
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
            spurts: 0,
            speech_samples: 0,
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
