//! `voice` as a library call: a capture through the shared front end
//! ([`crate::dissect::feed`]) into a [`VoiceExtractor`], WAV files out ([`WavSink`]),
//! warnings to stderr as they come, and the summary table.

use std::io::Read;
use std::path::Path;

use comfy_table::CellAlignment;
use indicatif::ProgressBar;

use super::wav::{WavSample, WavSink, Written};
use super::{Sample, Sink, TrackKind, TrackReport, VoiceConfig, VoiceExtractor, VoiceReport};
use crate::capture::{CaptureError, CaptureReader, DecapConfig, Decapsulator, Payload};
use crate::dissect::feed::{self, Consumer};
use crate::dissect::locate::PayloadMode;
use crate::dissect::session::Tracker;
use crate::output::pipe;

/// How `voice` reads the capture (what it writes is the [`VoiceConfig`]).
#[derive(Debug, Clone)]
pub struct VoiceOptions {
    pub config: VoiceConfig,
    pub payload: PayloadMode,
    pub decap: DecapConfig,
    /// `-Y`: only the voice packets it selects are decoded.
    pub filter: Option<crate::dissect::filter::Filter>,
}

/// What a `voice` run wrote.
pub struct VoiceOutcome {
    pub report: VoiceReport,
    pub written: Vec<Written>,
    /// The capture is damaged here: everything before it was decoded.
    pub damaged: Option<CaptureError>,
    /// The capture held no Dissonance packet: what it held and what to try.
    pub nothing_found: Option<String>,
    /// A `--speaker`, `--listener` or `--room` named nothing in the capture (read to its
    /// end): the error, listing what is there (one line per name). The files of such a
    /// listener or room (silence) are removed.
    pub unknown_names: Option<String>,
    /// Voice packets `-Y` left out.
    pub filtered_out: u64,
}

/// The extractor and its sink, fed by the front end.
struct Extracting<S: Sample, K: Sink<S>> {
    ex: VoiceExtractor<S>,
    sink: K,
    progress: Option<ProgressBar>,
}

impl<S: Sample, K: Sink<S>> Extracting<S, K> {
    /// Prints the pipeline's warnings, around the progress bar.
    fn warn(&mut self) {
        while let Some(w) = self.ex.pipeline.poll_warning() {
            let line = format!("dissonance: warning: {w}\n");
            match &self.progress {
                Some(pb) => pb.suspend(|| pipe::eprint(&line)),
                None => pipe::eprint(&line),
            }
        }
    }
}

impl<S: Sample, K: Sink<S>> Consumer for Extracting<S, K> {
    fn frame(&mut self, ts_ns: i64) {
        self.ex.frame_time(ts_ns, &mut self.sink);
    }
    fn payload(&mut self, p: &Payload<'_>) {
        self.ex.push_payload(p, &mut self.sink);
    }
    fn progress(&mut self, offset: u64) {
        self.warn();
        if let Some(pb) = &self.progress {
            pb.set_position(offset);
        }
    }
    /// Ctrl-C or SIGTERM: the files are finished with what was read.
    fn stopped(&self) -> bool {
        crate::sys::signals::requested().is_some()
    }
}

/// Decodes the voice of a whole capture into WAV files (and their sidecars) in `dir`,
/// which must exist. `size`, when known, drives the progress bar. Ctrl-C or SIGTERM
/// ([`crate::sys::signals`], installed by the caller) stops the reading: the files are
/// finished with what was read, as at the end of the capture (no `.wav.tmp` is left).
pub fn extract_to_wav<S: WavSample, R: Read>(
    reader: &mut CaptureReader<R>,
    size: Option<u64>,
    dir: &Path,
    opts: &VoiceOptions,
) -> VoiceOutcome {
    let mut run = Extracting {
        ex: VoiceExtractor::<S>::new(opts.payload, opts.config.clone()),
        sink: WavSink::<S>::new(dir),
        progress: crate::output::progress::bar(size),
    };
    run.ex.filter = opts.filter.clone();
    let mut decap = Decapsulator::new(opts.decap);
    let outcome = feed::run(reader, &mut decap, &mut run);
    let report = run.ex.finish(&mut run.sink);
    run.warn();
    if let Some(pb) = &run.progress {
        pb.finish_and_clear();
    }
    let written = run.sink.finish(&report.tracks, &report.speakers);
    let nothing_found = crate::output::summary::nothing_found(
        run.ex.packets,
        decap.stats().udp,
        decap.stats().tcp,
        reader.frames_read(),
    );
    // Only a capture read to its end says a name is not in it.
    let whole = outcome.damaged.is_none() && crate::sys::signals::requested().is_none();
    let unknown_names = whole
        .then(|| unknown_names(&opts.config, &run.ex.tracker, &report, &written).err())
        .flatten();
    VoiceOutcome {
        report,
        written,
        damaged: outcome.damaged,
        nothing_found,
        unknown_names,
        filtered_out: run.ex.filtered_out,
    }
}

/// A `--speaker`, `--listener` or `--room` that names nothing in the capture is an error
/// listing what is there; the files of such a listener or room (silence) are removed.
fn unknown_names(
    cfg: &VoiceConfig,
    tracker: &Tracker,
    report: &VoiceReport,
    written: &[Written],
) -> Result<(), String> {
    let is_client = |want: &str, by_id: bool| {
        tracker
            .clients()
            .any(|c| c.name == want || (by_id && want.parse::<u16>() == Ok(c.id)))
    };
    let clients = || {
        let mut v: Vec<String> = tracker
            .clients()
            .map(|c| format!("{}({})", c.name, c.id))
            .collect();
        v.dedup();
        list(v)
    };
    let heard = |kind: &TrackKind| {
        report
            .tracks
            .iter()
            .any(|t| &t.info.kind == kind && t.spurts > 0)
    };
    let mut errors = Vec::new();
    let mut remove = Vec::new();
    for sp in &cfg.speakers {
        if !is_client(sp, true) {
            errors.push(format!(
                "no speaker '{sp}' in the capture; clients: {}",
                clients()
            ));
        }
    }
    for l in &cfg.listeners {
        if !is_client(l, false) {
            errors.push(format!(
                "no listener '{l}' in the capture; clients: {}",
                clients()
            ));
            remove.push(TrackKind::Listener(l.clone()));
        }
    }
    for r in &cfg.rooms {
        let named = tracker.rooms().values().any(|n| n == r);
        if !named && !heard(&TrackKind::Room(r.clone())) {
            let rooms: Vec<String> = tracker.rooms().values().cloned().collect();
            errors.push(format!(
                "no room '{r}' in the capture; rooms: {}",
                list(rooms)
            ));
            remove.push(TrackKind::Room(r.clone()));
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    for t in report
        .tracks
        .iter()
        .filter(|t| remove.contains(&t.info.kind))
    {
        for w in written.iter().filter(|w| w.track == t.track) {
            for p in [&w.wav, &w.json].into_iter().flatten() {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    Err(errors.join("\ndissonance: error: "))
}

/// Names for an error message: comma-separated, at most 20, "none" when empty.
fn list(mut names: Vec<String>) -> String {
    if names.is_empty() {
        return "none".into();
    }
    let more = names.len().saturating_sub(20);
    names.truncate(20);
    let mut s = names.join(", ");
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}

/// The summary table: one row per output file, then skipped speakers.
pub fn summary_table(report: &VoiceReport, written: &[Written]) -> String {
    let mut t = crate::output::width::table([
        "file",
        "spurts",
        "speech s",
        "length s",
        "decoded",
        "lost",
        "FEC",
        "PLC",
        "silenced",
        "corrupt",
        "dup",
        "late",
        "reordered",
    ]);
    let mut rows: Vec<(&Written, &TrackReport)> = written
        .iter()
        .filter_map(|w| Some((w, report.tracks.iter().find(|r| r.track == w.track)?)))
        .collect();
    // Speakers first, then mix, rooms and listeners as asked for.
    rows.sort_by_key(|(_, r)| (r.info.kind.name() != "speaker", r.track));
    for (w, r) in rows {
        let file = match &w.wav {
            Some(p) => p
                .file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into()),
            None => format!("{} (failed)", r.info.stem),
        };
        t.add_row(row(file, r));
    }
    for c in t.column_iter_mut().skip(1) {
        c.set_cell_alignment(CellAlignment::Right);
    }
    let mut s = format!("{t}\n");
    for sp in &report.speakers {
        if let Some(why) = &sp.skipped {
            s.push_str(&format!(
                "skipped: {} (session {}, id {}): {why}\n",
                sp.name, sp.session, sp.id
            ));
        }
    }
    s
}

fn row(file: String, r: &TrackReport) -> Vec<String> {
    let s = &r.stats;
    vec![
        file,
        r.spurts.to_string(),
        format!("{:.2}", r.speech_s()),
        format!("{:.2}", r.duration_s()),
        s.decoded.to_string(),
        s.lost.to_string(),
        s.recovered_fec.to_string(),
        s.concealed_plc.to_string(),
        s.silenced.to_string(),
        s.corrupt.to_string(),
        s.duplicates.to_string(),
        s.late.to_string(),
        s.reordered.to_string(),
    ]
}
