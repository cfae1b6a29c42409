//! `dissonance dump`: every Dissonance message in a pcap/pcapng capture.

use std::io::Write;
use std::path::PathBuf;

use dissonance_tools::capture::Decapsulator;
use dissonance_tools::output::summary;
use dissonance_tools::output::{Format, Printer};

use super::view::ViewArgs;
use super::Error;

/// Print every Dissonance message in a capture file, annotated with player names and rooms.
///
/// Reads pcap and pcapng (any mix of Ethernet, VLAN, Linux cooked v1/v2, BSD loopback
/// and raw IP link types; IPv4 fragments reassembled; TCP streams reassembled and cut by
/// --tcp-framing). Packets wrapped in a game transport's own header are found by
/// --payload auto. Malformed packets are printed with the decode error; other traffic is
/// counted in --summary.
///
/// Ctrl-C or SIGTERM stops reading: what was read is printed as at the end of the capture
/// (JSON array closed, --summary tables), and the exit status is 130 (143 for SIGTERM).
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
    /// Flush after every line (for live consumers; slower on big captures). Implied when
    /// the capture is a pipe or FIFO (`tcpdump -w - | dissonance dump -`).
    #[arg(long)]
    line_buffered: bool,
}

pub fn run(args: Args) -> Result<i32, Error> {
    dissonance_tools::signals::install()?;
    args.view
        .check_used(!args.summary && !args.flows)
        .map_err(|e| {
            format!(
                "{e}{}",
                if args.summary || args.flows {
                    " (--summary and --flows print tables of the whole capture)"
                } else {
                    ""
                }
            )
        })?;
    if args.line_buffered && (args.summary || args.flows) {
        return Err("--line-buffered applies to packets, not to --summary or --flows".into());
    }
    let (mut reader, size) = dissonance_tools::capture::open_capture(&args.capture)?;
    // A pipe delivers records as they happen: print each one as it arrives.
    let line_buffered = args.line_buffered || !is_regular_file(&args.capture);

    let packets_wanted = !args.summary && !args.flows;
    // JSON formatting is most of the work: a formatter per core the pipeline thread leaves
    // (one on the 2-core reference machine; more only contended); a writer thread keeps
    // capture order. Then stdout belongs to that thread, so the printer's own writer is
    // a sink.
    let parallel = packets_wanted
        && !line_buffered
        && matches!(args.view.format(), Format::Json | Format::Ndjson);
    let out: Box<dyn Write> = if parallel {
        Box::new(std::io::sink())
    } else {
        Box::new(std::io::BufWriter::with_capacity(
            1 << 16,
            std::io::stdout().lock(),
        ))
    };
    let mut printer = Printer::new(args.view.format(), out, args.view.color(), line_buffered);
    printer.json_events = args.view.events;
    printer.payload_hex = args.view.hex;
    if parallel {
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get().min(4).saturating_sub(1).max(1));
        printer.parallel(Box::new(std::io::stdout()), workers, reader.shared_map());
    }
    let mut dissector = args.view.dissector();
    let mut decap = Decapsulator::new(args.view.decap_config());
    let progress = dissonance_tools::output::progress::bar(size);

    let mut damaged = None;
    let mut io_result = Ok(());
    // Ctrl-C: stop reading, finish the output as at the end of the capture.
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
        decap.push(&frame, &mut |p| {
            dissector.push_payload(&p, packets_wanted.then_some(&mut printer), &mut io_result)
        });
        if let Err(e) = io_result {
            return Err(e.into());
        }
        if let Some(pb) = &progress {
            pb.set_position(reader.offset());
        }
    }
    // Flush TCP data still waiting for the end of a frame, and count what stayed incomplete.
    decap.finish(&mut |p| {
        dissector.push_payload(&p, packets_wanted.then_some(&mut printer), &mut io_result)
    });
    // Then the game-stack decoders give up what they still hold.
    if io_result.is_ok() {
        io_result = dissector.finish(packets_wanted.then_some(&mut printer));
    }
    if let Err(e) = io_result {
        return Err(e.into());
    }
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    if let Err(e) = printer.finish() {
        return Err(e.into());
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
    tables?;
    if let Some(note) = summary::nothing_found(
        dissector.totals.packets,
        decap.stats().udp,
        decap.stats().tcp,
        reader.frames_read(),
    ) {
        eprintln!("dissonance: {note}");
    }
    if let Some(sig) = dissonance_tools::signals::requested() {
        eprintln!(
            "dissonance: interrupted after {} frames; the output covers them",
            reader.frames_read()
        );
        return Ok(dissonance_tools::signals::exit_status(sig));
    }
    if let Some(e) = damaged {
        eprintln!(
            "dissonance: {}: {e}; {} packets before it were processed",
            args.capture.display(),
            reader.frames_read()
        );
        return Ok(if e.is_unsupported_linktype() { 2 } else { 1 });
    }
    Ok(0)
}

/// Whether the capture (`-`: standard input) is a regular file, read at its own pace;
/// anything else (pipe, FIFO, terminal, socket) is a live stream.
fn is_regular_file(path: &std::path::Path) -> bool {
    if path.as_os_str() != "-" {
        return std::fs::metadata(path).is_ok_and(|m| m.is_file());
    }
    use std::os::fd::AsFd;
    std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.is_file())
}
