//! `dissonance replay`: arguments; the runtime is [`dissonance_tools::net::replay::runtime`].

use dissonance_tools::net::replay::runtime::{run as run_lib, Options};

use super::Error;
use dissonance_tools::dissect::locate::PayloadMode;

/// Replay the clients of a capture against a live server.
///
/// Each client in the capture becomes a virtual client with its own UDP socket that
/// performs its own handshake; the session and client ids the live server hands out
/// replace the captured ones in everything it sends afterwards (packets re-encoded).
/// Timing follows the capture timestamps on an absolute schedule. With --raw the
/// captured client→server payloads are resent byte for byte instead (for servers that
/// are not Dissonance-aware; the server is then the address most clients sent to, Dissonance
/// or not). At the end a report compares what the captured server answered with what the
/// live one answered (exit status 1 on a difference with --fail-on-diff).
///
/// Exit status: 0 when every datagram was sent, 1 when a send failed, the capture is
/// damaged part way (what was read is replayed) or, with --fail-on-diff, an answer count
/// differed; 2 on bad arguments or an unreadable capture.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
  dissonance replay session.pcap --target 127.0.0.1:47200\n  \
  dissonance replay session.pcap --target 127.0.0.1:47200 --speed 2.0 --loop 3\n  \
  dissonance replay session.pcap --target 127.0.0.1:47200 --top-speed --fail-on-diff\n  \
  dissonance replay session.pcap --target 127.0.0.1:9000 --raw --top-speed\n  \
  dissonance replay session.pcap --target :47200 -Y 'type == \"TextData\"'")]
pub struct Args {
    /// The capture with the clients' traffic (pcap or pcapng; `-r FILE` or positional).
    #[command(flatten)]
    input: super::view::Input,
    /// The live server.
    #[arg(long, value_name = "ADDR")]
    target: String,
    /// Replay speed factor (2.0 = twice as fast).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Ignore the capture timing: send as fast as possible.
    #[arg(long)]
    top_speed: bool,
    /// Play the capture this many times (each round handshakes again).
    #[arg(long = "loop", default_value_t = 1, value_name = "N")]
    loops: u32,
    /// Resend the captured client→server payloads byte for byte, without handshakes or
    /// id substitution.
    #[arg(long)]
    raw: bool,
    /// Keep listening for answers this long after the last send.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    linger: f64,
    /// Exit with status 1 when the live server's answers differ from the captured ones
    /// (any DIFFERENT row of the report).
    #[arg(long, conflicts_with = "raw")]
    fail_on_diff: bool,
    /// Where the Dissonance packets are in the captured datagrams: plain datagrams are
    /// replayed as they are; in a game stack's (`mirror`, `ngo`, `fishnet`, or one `auto`
    /// detects; also `scan`, `offset:N`) the packets found are, each once, the stack's
    /// disconnect as the plain goodbye.
    #[arg(
        long,
        default_value = "auto",
        value_name = "auto|scan|raw|offset:N|mirror|ngo|fishnet"
    )]
    payload: PayloadMode,
    /// Display filter (as dump's -Y): send only the client datagrams holding a packet it
    /// selects, and each client's HandshakeRequest, ClientState and goodbye whatever it
    /// says (without them the live server drops the rest, or keeps the client until it
    /// times out). The captured answers are to everything, so not with --fail-on-diff.
    #[arg(
        short = 'Y',
        long = "display-filter",
        value_name = "EXPR",
        value_parser = super::values::filter,
        conflicts_with_all = ["raw", "fail_on_diff"]
    )]
    display_filter: Option<dissonance_tools::dissect::filter::Filter>,
    #[command(flatten)]
    log: super::ops::OutputLogArgs,
}

pub fn run(a: Args) -> Result<i32, Error> {
    dissonance_tools::output::log::init("replay", a.log.log_format.into(), a.log.log_level.into());
    run_lib(Options {
        capture: a.input.path(),
        target: a.target,
        speed: a.speed,
        top_speed: a.top_speed,
        loops: a.loops,
        raw: a.raw,
        linger: a.linger,
        fail_on_diff: a.fail_on_diff,
        payload: a.payload,
        filter: a.display_filter,
    })
}
