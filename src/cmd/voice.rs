//! `dissonance voice`: every speaker's voice in a capture, decoded to WAV files.

use std::path::PathBuf;

use dissonance_tools::capture::DecapConfig;
use dissonance_tools::dissect::locate::PayloadMode;
use dissonance_tools::output::pipe;
use dissonance_tools::voice::decode::OPUS_RATES;
use dissonance_tools::voice::run::{extract_to_wav, summary_table, VoiceOptions, VoiceOutcome};
use dissonance_tools::voice::wav::WavSample;
use dissonance_tools::voice::{Conceal, VoiceConfig};

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
  dissonance voice tests/data/captures/three-friends.pcap -o out/ --speaker alice --trim\n  \
  dissonance voice <your.pcap> -o out/ --mix --room 'Red Team' --listener bob\n  \
  dissonance voice samples/session.pcap -o out/ --conceal plc --float\n  \
  dissonance voice samples/session.pcap -o out/ -Y 'sender_name == \"alice\" && rel < 5'")]
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
    /// Display filter (as dump's -Y): decode only the voice packets it selects, e.g.
    /// `-Y 'sender_name == "alice" && rel < 5'`. The files keep the capture's timeline;
    /// the packets left out are counted on stderr.
    #[arg(short = 'Y', long = "display-filter", value_name = "EXPR", value_parser = super::values::filter)]
    display_filter: Option<dissonance_tools::dissect::filter::Filter>,
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

    let opts = VoiceOptions {
        config: VoiceConfig {
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
        },
        payload: args.payload,
        decap: DecapConfig {
            tcp_framing: args.tcp_framing.into(),
            ..DecapConfig::default()
        },
        filter: args.display_filter.clone(),
    };
    dissonance_tools::sys::signals::install()?;
    let VoiceOutcome {
        report,
        written,
        damaged,
        nothing_found,
        unknown_names,
        filtered_out,
    } = extract_to_wav::<S, _>(&mut reader, size, &args.out, &opts);
    if let Some(note) = nothing_found {
        pipe::eprint(&format!("dissonance: {note}\n"));
    }
    if let Some(f) = &args.display_filter {
        // A filter that selects no voice at all writes no file: say so plainly.
        let none = if written.is_empty() && filtered_out > 0 {
            ", all of them: no WAV written"
        } else {
            ""
        };
        pipe::eprint(&format!(
            "dissonance: -Y '{}' left out {filtered_out} voice packets{none}\n",
            f.source()
        ));
    }
    if let Some(e) = unknown_names {
        return Err(e.into());
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
        pipe::eprint(&summary_table(&report, &written));
    }
    if let Some(sig) = dissonance_tools::sys::signals::requested() {
        eprintln!(
            "dissonance: interrupted after {} frames; the files cover them",
            reader.frames_read()
        );
        status = dissonance_tools::sys::signals::exit_status(sig);
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
