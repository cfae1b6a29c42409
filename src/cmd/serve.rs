//! `dissonance serve`: arguments; the runtime is [`dissonance_tools::net::serve`].

use dissonance_tools::net::serve::{run as run_lib, Options};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dissonance_tools::net::server::{MAX_REAL_NAME, MAX_UDP_PAYLOAD};

use super::Error;

/// Run a Dissonance server (the modern 9.0.x behaviour) on the plain UDP transport: one
/// Dissonance packet per datagram, goodbye = `00 42 59 45`.
///
/// Prints "listening on ADDR session ID pid PID" on stderr, then logs joins, leaves, room
/// changes and dropped packets on stdout (a closed stdout stops the log, not the server).
/// SIGUSR1 to that pid (or --status-every) prints a summary of the
/// session, with the server's own added latency since the previous summary (kernel
/// arrival time of a datagram to its last reply handed to the kernel); Ctrl-C or SIGTERM
/// stops (flushing --record) and prints the final summary, latency over the whole run.
/// Every client still registered at the stop gets the goodbye datagram and the others'
/// RemoveClient. With --drain, SIGTERM first refuses new clients and keeps relaying for
/// that long. A malformed packet is dropped and logged; it never restarts the session.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
  dissonance serve --listen 127.0.0.1:47200\n  \
  dissonance serve --listen 0.0.0.0:47200 --log-format ndjson --status-every 10\n  \
  dissonance serve --listen 127.0.0.1:0 --session 0x12345678 --record session.pcap\n  \
  dissonance serve --listen 0.0.0.0:7777 --metrics 0.0.0.0:9464 --drain 30s\n  \
  dissonance serve --config deploy/serve.toml --log-format ndjson\n  \
  dissonance serve --pid-file serve.pid & kill -USR1 $(cat serve.pid)   # a live summary")]
pub struct Args {
    /// Address and UDP port to listen on (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:47200", value_parser = super::values::listen_addr)]
    listen: SocketAddr,
    /// Fix the session id (decimal or 0x hex, 1..=2147483646) instead of drawing one.
    #[arg(long, value_name = "ID", value_parser = parse_session)]
    session: Option<u32>,
    #[command(flatten)]
    log: super::ops::LogArgs,
    /// Also print the summary every SECS seconds.
    #[arg(long, value_name = "DURATION", value_parser = super::values::seconds)]
    status_every: Option<f64>,
    /// Write every datagram received and sent to this pcap file (Ethernet/IP/UDP).
    #[arg(
        short = 'w',
        long = "write",
        visible_alias = "record",
        value_name = "FILE"
    )]
    record: Option<PathBuf>,
    /// Refuse handshakes beyond this many clients.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_clients: usize,
    /// Drop datagrams longer than this (real packets are at most 1024 bytes; longer
    /// ones are accepted up to this size and flagged in the log).
    #[arg(long, value_name = "BYTES", default_value_t = MAX_UDP_PAYLOAD)]
    max_packet: usize,
    /// Handshakes one peer may send in a burst before --handshake-rate applies.
    #[arg(long, value_name = "N", default_value_t = 10)]
    handshake_burst: u32,
    /// Steady handshakes per second allowed per peer (real clients retry every 2 s).
    #[arg(long, value_name = "PER_SEC", default_value_t = 1.0)]
    handshake_rate: f64,
    /// Drop clients silent for this many seconds (off by default: real clients send
    /// nothing while nobody talks).
    #[arg(long, value_name = "DURATION", value_parser = super::values::seconds)]
    idle_timeout: Option<f64>,
    /// Handshakes one source network (/24 for IPv4, /64 for IPv6) may send in a burst,
    /// whatever the ports, before --prefix-rate applies.
    #[arg(long, value_name = "N", default_value_t = 256)]
    prefix_burst: u32,
    /// Steady handshakes per second allowed per source network.
    #[arg(long, value_name = "PER_SEC", default_value_t = 64.0)]
    prefix_rate: f64,
    /// Refuse HandshakeRequests whose name is longer than this many bytes (the default
    /// is the longest name a real client can join with: its ClientState must fit 1024 bytes).
    #[arg(long, value_name = "BYTES", default_value_t = MAX_REAL_NAME)]
    max_name: usize,
    /// Clients that have the HandshakeResponse but have not yet sent their ClientState
    /// (they get nothing else until they do); further handshakes are refused.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_half_open: usize,
    /// Forget a client that sent no ClientState this many seconds after its
    /// HandshakeResponse (a real client sends it at once).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = super::values::seconds)]
    handshake_timeout: f64,
    /// Stop after this many seconds.
    #[arg(long, value_name = "DURATION", value_parser = super::values::seconds)]
    duration: Option<f64>,
    /// Serve Prometheus metrics at http://ADDR/metrics, liveness at /healthz and
    /// readiness at /readyz (503 once draining), e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// On SIGTERM refuse new clients but keep relaying this long (seconds, or with a
    /// unit: 30s, 500ms, 2m), then send every client its goodbye and RemoveClient and exit
    /// 0. A second SIGTERM ends the drain early. 0: at once.
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = super::ops::parse_secs)]
    drain: Duration,
    /// Read settings from this TOML file (keys are the long flag names; the command line
    /// overrides them). See deploy/serve.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Write the process id to FILE (for `kill -USR1 $(cat FILE)`); removed at exit.
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
}

fn parse_session(s: &str) -> Result<u32, String> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse::<u32>(),
    }
    .map_err(|_| format!("{s:?} is not a number (use decimal or 0x hex)"))?;
    if v == 0 || v >= 0x7FFF_FFFF {
        return Err(format!(
            "{v} is not a session a real server uses: pick 1..=2147483646"
        ));
    }
    Ok(v)
}

pub fn run(a: Args) -> Result<i32, Error> {
    // Already merged into the arguments by `super::ops::expand_config`.
    let _ = a.config;
    run_lib(Options {
        listen: a.listen,
        session: a.session,
        log_format: a.log.log_format.into(),
        log_level: a.log.log_level.into(),
        status_every: a.status_every,
        record: a.record,
        max_clients: a.max_clients,
        max_packet: a.max_packet,
        handshake_burst: a.handshake_burst,
        handshake_rate: a.handshake_rate,
        idle_timeout: a.idle_timeout,
        prefix_burst: a.prefix_burst,
        prefix_rate: a.prefix_rate,
        max_name: a.max_name,
        max_half_open: a.max_half_open,
        handshake_timeout: a.handshake_timeout,
        duration: a.duration,
        metrics: a.metrics,
        drain: a.drain,
        pid_file: a.pid_file,
    })
}
