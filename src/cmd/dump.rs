//! `dissonance dump`: every Dissonance message in a pcap/pcapng capture.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use dissonance_tools::capture::{CaptureReader, DecapConfig, Decapsulator, TcpFraming};
use dissonance_tools::codec::MessageType;
use dissonance_tools::locate::PayloadMode;
use dissonance_tools::output::{Format, Printer};
use dissonance_tools::pipeline::{Dissector, Filters};
use dissonance_tools::summary;

use super::Error;

/// Options shared by `dump`, `sniff` and `proxy`: how to find packets, what to print.
#[derive(clap::Args, Debug, Clone)]
pub struct ViewArgs {
    /// Output format.
    #[arg(long, short = 'F', value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Where Dissonance packets start in each UDP datagram / TCP frame: `auto` (offset 0
    /// when it decodes, else scan for the magic and lock the offset per flow), `raw`
    /// (offset 0 only) or `offset:N` (a game transport header of N bytes).
    #[arg(long, default_value = "auto", value_name = "auto|raw|offset:N")]
    pub payload: PayloadMode,
    /// How TCP streams are cut into frames: a length prefix of 2 or 4 bytes in either
    /// byte order, or `none` (each run of stream data is one frame).
    #[arg(long, value_enum, default_value_t = FramingArg::U16be)]
    pub tcp_framing: FramingArg,
    /// Only messages of this type, or relays wrapping it (name or number; repeatable).
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_type)]
    pub types: Vec<MessageType>,
    /// Only messages about this client: sender, target, destination or subject (name or id; repeatable).
    #[arg(long = "client", value_name = "NAME|ID")]
    pub clients: Vec<String>,
    /// Only messages about this room (name or room id; repeatable).
    #[arg(long = "room", value_name = "NAME|ID")]
    pub rooms: Vec<String>,
    /// Only messages of this session id (repeatable).
    #[arg(long = "session", value_name = "ID")]
    pub sessions: Vec<u32>,
    /// Do not print session events (joins, room changes, leaves) between packets.
    #[arg(long, conflicts_with = "events")]
    pub no_events: bool,
    /// JSON: include the wire bytes of audio frames and relay payloads (`audio_hex`,
    /// `payload_hex`), as `decode --json` does. Off by default: they are most of the
    /// output and rarely wanted.
    #[arg(long)]
    pub hex: bool,
    /// In json/ndjson output, also print session events and transport goodbyes as objects
    /// with an `event` field (text output shows them by default).
    #[arg(long)]
    pub events: bool,
    /// Colours in text output.
    #[arg(long, value_enum, default_value_t = ColorArg::Auto)]
    pub color: ColorArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FramingArg {
    U16be,
    U16le,
    U32be,
    U32le,
    None,
}

impl From<FramingArg> for TcpFraming {
    fn from(f: FramingArg) -> TcpFraming {
        match f {
            FramingArg::U16be => TcpFraming::U16Be,
            FramingArg::U16le => TcpFraming::U16Le,
            FramingArg::U32be => TcpFraming::U32Be,
            FramingArg::U32le => TcpFraming::U32Le,
            FramingArg::None => TcpFraming::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

fn parse_type(s: &str) -> Result<MessageType, String> {
    MessageType::parse(s).ok_or_else(|| {
        let names: Vec<&str> = MessageType::ALL.iter().map(|t| t.name()).collect();
        format!("unknown message type '{s}'; one of: {}", names.join(", "))
    })
}

impl ViewArgs {
    pub fn filters(&self) -> Filters {
        Filters {
            types: self.types.clone(),
            clients: self.clients.clone(),
            rooms: self.rooms.clone(),
            sessions: self.sessions.clone(),
        }
    }
    pub fn color(&self) -> bool {
        match self.color {
            ColorArg::Always => true,
            ColorArg::Never => false,
            ColorArg::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
    pub fn dissector(&self) -> Dissector {
        let mut d = Dissector::new(self.payload, self.filters());
        d.show_events = !self.no_events;
        d
    }
    pub fn decap_config(&self) -> DecapConfig {
        DecapConfig {
            tcp_framing: self.tcp_framing.into(),
            ..DecapConfig::default()
        }
    }
}

/// Print every Dissonance message in a capture file, annotated with player names and rooms.
///
/// Reads pcap and pcapng (any mix of Ethernet, VLAN, Linux cooked v1/v2, BSD loopback
/// and raw IP link types; IPv4 fragments reassembled; TCP streams reassembled and cut by
/// --tcp-framing). Packets wrapped in a game transport's own header are found by
/// --payload auto. Malformed packets are printed with the decode error; other traffic is
/// counted in --summary.
///
/// Exit status: 0 when the whole capture was read, 1 when it is truncated or damaged
/// (everything before the damage is still printed), 2 when it cannot be opened.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
  dissonance dump samples/session.pcap\n  \
  dissonance dump samples/session.pcap --summary\n  \
  dissonance dump capture.pcapng --format ndjson | jq 'select(.type==\"TextData\") | .text'\n  \
  dissonance dump capture.pcap --client alice --type VoiceData --format table\n  \
  dissonance dump game.pcap --payload offset:12 --flows\n  \
  tcpdump -i lo -w - udp | dissonance dump -")]
pub struct Args {
    /// Capture file (pcap or pcapng), or `-` for standard input.
    #[arg(value_name = "CAPTURE")]
    capture: PathBuf,
    #[command(flatten)]
    view: ViewArgs,
    /// Print only the summary tables: sessions, clients, rooms, per-client counts.
    #[arg(long)]
    summary: bool,
    /// Print only how Dissonance was detected in each flow (offsets, confidence).
    #[arg(long)]
    flows: bool,
    /// Flush after every line (for live consumers; slower on big captures).
    #[arg(long)]
    line_buffered: bool,
}

pub fn run(args: Args) -> Result<i32, Error> {
    let (mut reader, size) = super::dump::open_capture(&args.capture)?;

    let packets_wanted = !args.summary && !args.flows;
    // JSON formatting is most of the work: a formatter per core the pipeline thread leaves
    // (one on the 2-core reference machine; more only contended); a writer thread keeps
    // capture order. Then stdout belongs to that thread, so the printer's own writer is
    // a sink.
    let parallel = packets_wanted
        && !args.line_buffered
        && matches!(args.view.format, Format::Json | Format::Ndjson);
    let out: Box<dyn Write> = if parallel {
        Box::new(std::io::sink())
    } else {
        Box::new(std::io::BufWriter::with_capacity(
            1 << 16,
            std::io::stdout().lock(),
        ))
    };
    let mut printer = Printer::new(args.view.format, out, args.view.color(), args.line_buffered);
    printer.json_events = args.view.events;
    printer.payload_hex = args.view.hex;
    if parallel {
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get().min(4).saturating_sub(1).max(1));
        printer.parallel(Box::new(std::io::stdout()), workers, reader.shared_map());
    }
    let mut dissector = args.view.dissector();
    let mut decap = Decapsulator::new(args.view.decap_config());
    let progress = super::progress::bar(size);

    let mut damaged = None;
    let mut io_result = Ok(());
    while let Some(frame) = reader.next_frame() {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                damaged = Some(e);
                break;
            }
        };
        decap.push(&frame, &mut |p| {
            dissector.push_payload(&p, packets_wanted.then_some(&mut printer), &mut io_result)
        });
        if let Err(e) = io_result {
            return broken_pipe_ok(e);
        }
        if let Some(pb) = &progress {
            pb.set_position(reader.offset());
        }
    }
    // Flush TCP data still waiting for the end of a frame, and count what stayed incomplete.
    decap.finish(&mut |p| {
        dissector.push_payload(&p, packets_wanted.then_some(&mut printer), &mut io_result)
    });
    if let Err(e) = io_result {
        return broken_pipe_ok(e);
    }
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    if let Err(e) = printer.finish() {
        return broken_pipe_ok(e);
    }
    drop(printer);
    let mut out = std::io::stdout().lock();
    let tables = (|| -> std::io::Result<()> {
        if args.summary {
            let text = summary::render(&dissector.tracker, &dissector.totals);
            write!(out, "{text}")?;
            let stats = decap.stats();
            writeln!(out, "\nCapture: {} frames; {stats}", reader.frames_read())?;
        }
        if args.flows {
            write!(out, "{}", summary::render_flows(&dissector.locator))?;
        }
        out.flush()
    })();
    if let Err(e) = tables {
        // `dump --summary | head` closing the pipe is not an error either.
        return broken_pipe_ok(e);
    }
    if let Some(e) = damaged {
        eprintln!(
            "dissonance: {}: {e}; {} packets before it were processed",
            args.capture.display(),
            reader.frames_read()
        );
        return Ok(1);
    }
    Ok(0)
}

/// A capture file (mapped), or standard input for `-`, with its size when known (for
/// the progress bar).
pub type Capture = CaptureReader<Box<dyn Read + Send>>;

pub fn open_capture(path: &std::path::Path) -> Result<(Capture, Option<u64>), Error> {
    let named = |e: dissonance_tools::capture::CaptureError| format!("{}: {e}", path.display());
    if path.as_os_str() == "-" {
        let stdin: Box<dyn Read + Send> = Box::new(std::io::stdin());
        return Ok((CaptureReader::new(stdin).map_err(named)?, None));
    }
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let size = f.metadata().ok().map(|m| m.len());
    Ok((CaptureReader::from_file(f).map_err(named)?, size))
}

/// `dissonance dump ... | head` closes the pipe early: that is success, not an error.
pub fn broken_pipe_ok(e: std::io::Error) -> Result<i32, Error> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(0)
    } else {
        Err(e.into())
    }
}
