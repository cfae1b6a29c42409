//! `dissonance dump`: every Dissonance message in a pcap/pcapng capture.

use std::path::PathBuf;

use dissonance_tools::output::dump::{dump, DumpOptions};

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
  dissonance dump samples/session.pcap --format ndjson | jq 'select(.type==\"TextData\") | .text'\n  \
  dissonance dump tests/data/captures/three-friends.pcap --client alice --type VoiceData --format table\n  \
  dissonance dump <your.pcap> --payload offset:12 --flows\n  \
  tcpdump -i lo -w - udp | dissonance dump -")]
pub struct Args {
    #[command(flatten)]
    input: super::view::Input,
    #[command(flatten)]
    view: ViewArgs,
    /// Print only the summary tables: sessions, clients, rooms, per-client counts.
    #[arg(long)]
    summary: bool,
    /// Print only how Dissonance was detected in each flow (offsets, confidence).
    #[arg(long)]
    flows: bool,
    /// Write the frames holding the selected packets to FILE, unchanged (original bytes
    /// and timestamps): pcapng when FILE ends in .pcapng, else pcap; `-` for standard
    /// output. Nothing is printed then.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    write: Option<PathBuf>,
    /// Flush after every line (for live consumers; slower on big captures). Implied when
    /// the capture is a pipe or FIFO (`tcpdump -w - | dissonance dump -`).
    #[arg(long)]
    line_buffered: bool,
}

pub fn run(args: Args) -> Result<i32, Error> {
    let capture = args.input.path();
    dissonance_tools::sys::signals::install()?;
    args.view
        .check_used(!args.summary && !args.flows || args.write.is_some())
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
    let (mut reader, size) = dissonance_tools::capture::open_capture(&capture)?;
    let opts = DumpOptions {
        view: args.view.view()?,
        summary: args.summary,
        flows: args.flows,
        // A pipe delivers records as they happen: print each one as it arrives.
        line_buffered: args.line_buffered || !is_regular_file(&capture),
        write: args.write,
    };
    // An output error (`dump | head` closing the pipe, too) goes to main's error path.
    let dumped = dump(&mut reader, size, &opts)?;
    if let Some(note) = dumped.nothing_found {
        eprintln!("dissonance: {note}");
    }
    if let Some(sig) = dissonance_tools::sys::signals::requested() {
        eprintln!(
            "dissonance: interrupted after {} frames; the output covers them",
            reader.frames_read()
        );
        return Ok(dissonance_tools::sys::signals::exit_status(sig));
    }
    if let Some(e) = dumped.damaged {
        eprintln!(
            "dissonance: {}: {e}; {} packets before it were processed",
            capture.display(),
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
