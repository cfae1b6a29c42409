//! `dissonance voice`: every speaker's voice in a capture, decoded to WAV files.

use std::path::PathBuf;

use comfy_table::CellAlignment;
use dissonance_tools::capture::{DecapConfig, Decapsulator};
use dissonance_tools::dissect::locate::PayloadMode;
use dissonance_tools::output::pipe;
use dissonance_tools::voice::decode::OPUS_RATES;
use dissonance_tools::voice::wav::{WavSample, WavSink, Written};
use dissonance_tools::voice::{Conceal, TrackReport, VoiceConfig, VoiceExtractor, VoiceReport};

use super::view::FramingArg;
use super::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConcealArg {
    /// In-band FEC from the next frame when it has FEC data, else Opus PLC.
    Fec,
    /// Opus packet loss concealment only.
    Plc,
    /// Zeros.
    Silence,
}

/// Decode the voice in a capture to WAV files: one per speaker, on one timeline.
///
/// Every WAV starts at the capture's first packet; each talk spurt is placed at the
/// capture time of its first frame, silence in between (--trim: speech only). Frames are
/// deduplicated (relay and forwarded copies), put in sequence order, and a lost frame is
/// recovered from the next frame's in-band FEC, else concealed by Opus PLC, as
/// Dissonance's own receiver does. Each WAV gets a sidecar JSON with frame counts and
/// talk spurts; a summary table goes to stderr.
///
/// Ctrl-C or SIGTERM stops reading: the files are finished with what was read (no
/// `.wav.tmp` is left behind) and the exit status is 130 (143 for SIGTERM).
///
/// Exit status: 0 all written, 1 when the capture is damaged, a speaker was skipped or an
/// output failed, 2 when the capture cannot be opened, 130 when interrupted.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
  dissonance voice samples/session.pcap -o voice/\n  \
  dissonance voice capture.pcap -o out/ --speaker alice --trim\n  \
  dissonance voice capture.pcap -o out/ --mix --room 'Red Team' --listener bob\n  \
  dissonance voice capture.pcap -o out/ --conceal plc --float")]
pub struct Args {
    #[command(flatten)]
    input: super::view::Input,
    /// Directory for the WAV and JSON files (created if missing).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    out: PathBuf,
    /// Only this speaker (player name or client id; repeatable).
    #[arg(long = "speaker", value_name = "NAME|ID")]
    speakers: Vec<String>,
    /// Write one mixdown of all (selected) speakers: mix.wav.
    #[arg(long)]
    mix: bool,
    /// Write what was sent to this room: room-NAME.wav (repeatable).
    #[arg(long = "room", value_name = "NAME")]
    rooms: Vec<String>,
    /// Write what this player heard: voice on rooms they listened to at the time and
    /// player channels to them: listener-NAME.wav (repeatable).
    #[arg(long = "listener", value_name = "NAME")]
    listeners: Vec<String>,
    /// Also write one WAV per speaker when --mix, --room or --listener is given (without
    /// them, per-speaker files are what is written).
    #[arg(long)]
    per_speaker: bool,
    /// Speech only: talk spurts back to back, no silence.
    #[arg(long)]
    trim: bool,
    /// 32-bit float samples instead of 16-bit integers.
    #[arg(long)]
    float: bool,
    /// How a lost frame is filled.
    #[arg(long, value_enum, default_value_t = ConcealArg::Fec)]
    conceal: ConcealArg,
    /// Output sample rate (8000, 12000, 16000, 24000 or 48000).
    #[arg(long, default_value_t = 48000, value_parser = parse_rate)]
    rate: u32,
    /// Where Dissonance packets start in each datagram: auto, raw or offset:N (as for dump).
    #[arg(
        long,
        default_value = "auto",
        value_name = "auto|scan|raw|offset:N|mirror|ngo|fishnet"
    )]
    payload: PayloadMode,
    /// How TCP streams are cut into frames (as for dump).
    #[arg(long, value_enum, default_value_t = FramingArg::U16be)]
    tcp_framing: FramingArg,
    /// No summary table on stderr (warnings are still printed).
    #[arg(short, long)]
    quiet: bool,
}

fn parse_rate(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(r) if OPUS_RATES.contains(&r) => Ok(r),
        _ => Err(format!(
            "'{s}' is not one of 8000, 12000, 16000, 24000, 48000"
        )),
    }
}

pub fn run(args: Args) -> Result<i32, Error> {
    if args.float {
        run_as::<f32>(args)
    } else {
        run_as::<i16>(args)
    }
}

fn run_as<S: WavSample>(args: Args) -> Result<i32, Error> {
    let capture = args.input.path();
    let others = args.mix || !args.rooms.is_empty() || !args.listeners.is_empty();
    if args.per_speaker && !others {
        return Err(
            "--per-speaker applies with --mix, --room or --listener (per-speaker files are \
             the default without them)"
                .into(),
        );
    }
    let (mut reader, size) = dissonance_tools::capture::open_capture(&capture)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;

    let cfg = VoiceConfig {
        rate: args.rate,
        conceal: match args.conceal {
            ConcealArg::Fec => Conceal::Fec,
            ConcealArg::Plc => Conceal::Plc,
            ConcealArg::Silence => Conceal::Silence,
        },
        trim: args.trim,
        per_speaker: args.per_speaker || !others,
        mix: args.mix,
        rooms: args.rooms.clone(),
        listeners: args.listeners.clone(),
        speakers: args.speakers.clone(),
    };
    dissonance_tools::signals::install()?;

    let mut sink = WavSink::<S>::new(&args.out);
    let mut ex = VoiceExtractor::<S>::new(args.payload, cfg);
    let mut decap = Decapsulator::new(DecapConfig {
        tcp_framing: args.tcp_framing.into(),
        ..DecapConfig::default()
    });
    let progress = dissonance_tools::output::progress::bar(size);
    let warn = |ex: &mut VoiceExtractor<S>| {
        while let Some(w) = ex.pipeline.poll_warning() {
            let line = format!("dissonance: warning: {w}\n");
            match &progress {
                Some(pb) => pb.suspend(|| pipe::eprint(&line)),
                None => pipe::eprint(&line),
            }
        }
    };

    let mut damaged = None;
    // Ctrl-C: stop reading, finish the files as at the end of the capture.
    while dissonance_tools::signals::requested().is_none() {
        let Some(frame) = reader.next_frame() else {
            break;
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                damaged = Some(e);
                break;
            }
        };
        ex.frame_time(frame.ts_ns, &mut sink);
        decap.push(&frame, &mut |p| ex.push_payload(&p, &mut sink));
        warn(&mut ex);
        if let Some(pb) = &progress {
            pb.set_position(reader.offset());
        }
    }
    decap.finish(&mut |p| ex.push_payload(&p, &mut sink));
    let report = ex.finish(&mut sink);
    warn(&mut ex);
    if let Some(pb) = &progress {
        pb.finish_and_clear();
    }
    let written = sink.finish(&report.tracks, &report.speakers);
    let frames = reader.frames_read();
    if let Some(note) = dissonance_tools::output::summary::nothing_found(
        ex.packets,
        decap.stats().udp,
        decap.stats().tcp,
        frames,
    ) {
        pipe::eprint(&format!("dissonance: {note}\n"));
    }
    let interrupted = dissonance_tools::signals::requested().is_some();
    if damaged.is_none() && !interrupted {
        if let Err(e) = unknown_names(&args, &ex.tracker, &report, &written) {
            return Err(e.into());
        }
    }

    let mut status = 0;
    for w in &written {
        if let Some(e) = &w.error {
            eprintln!("dissonance: error: {e}");
            status = 1;
        }
    }
    if report.speakers.iter().any(|s| s.skipped.is_some()) {
        status = 1;
    }
    if !args.quiet {
        // Not eprint!: a closed stderr (`2>&1 | head`) must not panic.
        pipe::eprint(&render(&report, &written));
    }
    if let Some(sig) = dissonance_tools::signals::requested() {
        eprintln!(
            "dissonance: interrupted after {} frames; the files cover them",
            reader.frames_read()
        );
        status = dissonance_tools::signals::exit_status(sig);
    }
    if let Some(e) = damaged {
        eprintln!(
            "dissonance: {}: {e}; {} packets before it were processed",
            capture.display(),
            reader.frames_read()
        );
        status = if e.is_unsupported_linktype() { 2 } else { 1 };
    }
    Ok(status)
}

/// A `--speaker`, `--listener` or `--room` that names nothing in the capture is an error
/// listing what is there; the files of such a listener or room (silence) are removed.
fn unknown_names(
    args: &Args,
    tracker: &dissonance_tools::dissect::session::Tracker,
    report: &VoiceReport,
    written: &[Written],
) -> Result<(), String> {
    use dissonance_tools::voice::TrackKind;
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
            .any(|t| &t.info.kind == kind && !t.spurts.is_empty())
    };
    let mut errors = Vec::new();
    let mut remove = Vec::new();
    for sp in &args.speakers {
        if !is_client(sp, true) {
            errors.push(format!(
                "no speaker '{sp}' in the capture; clients: {}",
                clients()
            ));
        }
    }
    for l in &args.listeners {
        if !is_client(l, false) {
            errors.push(format!(
                "no listener '{l}' in the capture; clients: {}",
                clients()
            ));
            remove.push(TrackKind::Listener(l.clone()));
        }
    }
    for r in &args.rooms {
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
fn render(report: &VoiceReport, written: &[Written]) -> String {
    let mut t = dissonance_tools::output::width::table([
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
    let speech = r.spurts.iter().fold(0.0, |a, s| a + s.end_s - s.start_s);
    let s = &r.stats;
    vec![
        file,
        r.spurts.len().to_string(),
        format!("{speech:.2}"),
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
