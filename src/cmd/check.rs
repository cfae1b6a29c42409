//! `dissonance check`: run the rule catalogue over a capture and fail CI on findings.

use std::io::Write;
use std::path::PathBuf;

use dissonance_tools::capture::DecapConfig;
use dissonance_tools::check::{self, rules, Config, Severity};
use dissonance_tools::dissect::locate::PayloadMode;

use super::view::FramingArg;
use super::Error;

/// Check a capture for the ways Dissonance network integrations break: packets from
/// another session, server-only messages between clients, voice over reliable relays,
/// relays to unknown clients, names or rooms the real clients choke on, voice loss.
///
/// Prints the findings grouped by rule (most severe first) with the offending bytes in
/// hex and the bad field marked, then a voice quality table per speaker.
///
/// Exit status: 0 when no finding reaches --fail-on, 1 when one does or when the capture
/// is damaged part way (what was read is still reported), 2 when it cannot be read.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
  dissonance check samples/session.pcap\n  \
  dissonance check samples/session.pcap --fail-on warning --junit check.xml\n  \
  dissonance check samples/session.pcap -w annotated.pcapng\n  \
  dissonance check <your.pcap> --format json | jq '.findings[] | .rule'\n  \
  dissonance check --list-rules\n  \
  dissonance check --explain D010")]
pub struct Args {
    /// Capture file (pcap or pcapng), or `-` for standard input.
    #[arg(value_name = "CAPTURE", required_unless_present_any = ["list_rules", "explain", "read"])]
    capture: Option<PathBuf>,
    /// The capture file, as `tshark -r` (the positional CAPTURE works too).
    #[arg(
        short = 'r',
        long = "read",
        value_name = "FILE",
        conflicts_with = "capture"
    )]
    read: Option<PathBuf>,
    /// Report format on standard output.
    #[arg(long, short = 'F', value_enum, default_value_t = CheckFormat::Text)]
    format: CheckFormat,
    /// Also write a JUnit XML report (one test case per rule) to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Also write the capture as pcapng with each finding as a comment on the packet it
    /// concerns (rule id, severity, message), for Wireshark's `frame.comment`. Frames,
    /// bytes and timestamps are kept as they were.
    #[arg(long, short = 'w', value_name = "FILE.pcapng")]
    write: Option<PathBuf>,
    /// Exit with status 1 when a finding at or above this severity is found.
    #[arg(long, value_name = "SEVERITY", default_value = "error", value_parser = parse_fail_on)]
    fail_on: FailOn,
    /// List every rule (id, severity, title) and exit.
    #[arg(long, conflicts_with_all = ["capture", "explain"])]
    list_rules: bool,
    /// Explain one rule (id like D010, or its name) and exit.
    #[arg(long, value_name = "RULE", conflicts_with = "capture")]
    explain: Option<String>,
    /// Where Dissonance packets start in each payload (as for dump).
    #[arg(
        long,
        default_value = "auto",
        value_name = "auto|scan|raw|offset:N|mirror|ngo|fishnet"
    )]
    payload: PayloadMode,
    /// How TCP streams are cut into frames (as for dump).
    #[arg(long, value_enum, default_value_t = FramingArg::U16be)]
    tcp_framing: FramingArg,
    /// D040: flag more than this many consecutive missing voice frames.
    #[arg(long, value_name = "FRAMES", default_value_t = 2)]
    max_gap: u64,
    /// D042: flag voice packets more than this many positions late.
    #[arg(long, value_name = "FRAMES", default_value_t = 2)]
    max_reorder: u64,
    /// D012: this many stale-session packets from one client is a storm.
    #[arg(long, value_name = "PACKETS", default_value_t = 10)]
    storm: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
}

/// `--fail-on`: a severity, or `never`.
#[derive(Debug, Clone, Copy)]
pub struct FailOn(pub Option<Severity>);

fn parse_fail_on(s: &str) -> Result<FailOn, String> {
    if s.eq_ignore_ascii_case("never") {
        return Ok(FailOn(None));
    }
    Severity::parse(s)
        .map(|v| FailOn(Some(v)))
        .ok_or_else(|| format!("'{s}' is not error, warning, info or never"))
}

impl Args {
    pub fn config(&self) -> Config {
        Config {
            payload: self.payload,
            max_gap: self.max_gap,
            max_reorder: self.max_reorder,
            storm: self.storm.max(1),
            ..Config::default()
        }
    }
}

pub fn run(args: Args) -> Result<i32, Error> {
    let mut out = std::io::stdout().lock();
    if args.list_rules {
        write!(out, "{}", rules::table())?;
        return Ok(0);
    }
    if let Some(key) = &args.explain {
        let r = rules::find(key).ok_or_else(|| {
            format!("no rule '{key}'; `dissonance check --list-rules` lists them")
        })?;
        writeln!(out, "{}", r.explain())?;
        return Ok(0);
    }
    let path = args
        .read
        .clone()
        .or(args.capture.clone())
        .unwrap_or_default();
    if args.write.is_some() && path.as_os_str() == "-" {
        return Err("-w reads the capture a second time: give a file, not `-`".into());
    }
    // Send: the capture is read on its own thread (the batched front end).
    let (mut reader, _) = dissonance_tools::capture::open_capture(&path)?;
    let decap = DecapConfig {
        tcp_framing: args.tcp_framing.into(),
        ..DecapConfig::default()
    };
    let (report, damaged) = check::check_capture(&mut reader, decap, args.config());
    let written = match args.format {
        CheckFormat::Text => write!(out, "{}", report.text()),
        CheckFormat::Json => writeln!(out, "{}", report.json()),
    }
    .and_then(|()| out.flush());
    match written {
        // `check ... | head`: the reader had enough, but the verdict (exit status, JUnit)
        // is what CI acts on, so it still follows.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r?,
    }
    if let Some(j) = &args.junit {
        std::fs::write(j, report.junit(args.fail_on.0))
            .map_err(|e| format!("cannot write {}: {e}", j.display()))?;
    }
    if let Some(w) = &args.write {
        let n = write_annotated(&path, w, &report)?;
        eprintln!(
            "dissonance: wrote {} with {} findings as packet comments on {n} packets",
            w.display(),
            report.findings.len()
        );
    }
    if let Some(note) = dissonance_tools::output::summary::nothing_found(
        report.packets,
        report.payloads - report.tcp_payloads,
        report.tcp_payloads,
        reader.frames_read(),
    ) {
        eprintln!("dissonance: {note}");
    }
    if let Some(e) = damaged {
        eprintln!(
            "dissonance: {}: {e}; the {} packets before it were checked",
            path.display(),
            reader.frames_read()
        );
        // As dump and voice: 1 for damaged input that was still read, 2 for input that
        // cannot be read at all (a link type nothing here decodes).
        return Ok(if e.is_unsupported_linktype() { 2 } else { 1 });
    }
    Ok(if report.fails(args.fail_on.0) { 1 } else { 0 })
}

/// `-w`: the capture again, into a pcapng file with each finding as a comment on its
/// frame; returns how many frames got comments.
fn write_annotated(
    capture: &std::path::Path,
    out: &std::path::Path,
    report: &check::Report,
) -> Result<usize, Error> {
    let (mut reader, _) = dissonance_tools::capture::open_capture(capture)?;
    let file =
        std::fs::File::create(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    check::annotate(&mut reader, std::io::BufWriter::new(file), report)
        .map_err(|e| format!("cannot write {}: {e}", out.display()).into())
}
