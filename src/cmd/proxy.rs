//! `dissonance proxy`: arguments; the runtime is [`dissonance_tools::net::proxy::runtime`].

use std::path::PathBuf;
use std::time::Duration;

use dissonance_tools::net::proxy::runtime::{run as run_lib, Options};

use super::view::ViewArgs;
use super::Error;

/// Relay UDP between game clients and a server, decoding every Dissonance packet that
/// passes, optionally recording both directions and injecting faults.
///
/// Each client address gets its own upstream socket (NAT-style), so the server sees
/// distinct peers; a mapping closes after --idle of silence. Datagrams are forwarded
/// byte for byte (malformed ones too: the proxy is transparent). Faults take an optional
/// scope before a colon: comma-separated `up`, `down`, a message type (`voice`, `text`,
/// `state` or any full type name; relays wrapping it match too), `client=NAME` and
/// `room=NAME`. Every injected fault is logged to stderr and counted.
///
/// Ctrl-C or SIGTERM stops: the --record file is flushed and the counts (forwarded,
/// recorded, faults) are printed to stderr.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
  dissonance proxy --listen 127.0.0.1:47201 --upstream 127.0.0.1:47200\n  \
  dissonance proxy --listen 0.0.0.0:47201 --upstream game:47200 --record session.pcap --summary\n  \
  dissonance proxy --listen :47201 --upstream 127.0.0.1:47200 --seed 7 --drop voice:5% \\\n      \
  --delay down:40ms --jitter voice:10ms --burst-loss client=alice:1%,30%\n  \
  dissonance proxy --listen 127.0.0.1:47201 --upstream 127.0.0.1:47200 -F ndjson | jq .type\n  \
  dissonance proxy --tcp --tcp-framing u32le --listen :7000 --upstream game:7000 --check")]
pub struct Args {
    /// Address the clients send to (`:PORT` means 0.0.0.0:PORT).
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// The real server.
    #[arg(long, value_name = "ADDR")]
    upstream: String,
    /// Close a client's mapping after this much silence in both directions.
    #[arg(long, default_value = "120s", value_name = "DURATION", value_parser = super::values::duration)]
    idle: Duration,
    /// UDP: at most this many client mappings (one upstream socket each). When full, the
    /// mapping silent longest is closed for a new client if silent for 10 s (or --idle),
    /// otherwise the new client is refused (counted, logged). Default: 4096, or half the
    /// open-file limit (raised to its hard maximum at start) if that is lower.
    #[arg(long, value_name = "N")]
    max_mappings: Option<usize>,
    /// With --tcp: at most this many client connections at once (each holds two
    /// descriptors: client and upstream). Beyond it a new connection is accepted and
    /// closed at once, counted (`refused` in the exit report) and logged (at most a line
    /// a second). Default: 4096, or a quarter of the open-file limit (raised to its hard
    /// maximum at start) if that is lower: the same half of the descriptors as UDP's
    /// --max-mappings.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Write every forwarded datagram, both directions, to this pcap file (client and
    /// server addresses, wall-clock timestamps).
    #[arg(
        short = 'w',
        long = "write",
        visible_alias = "record",
        value_name = "FILE.pcap"
    )]
    record: Option<PathBuf>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "DURATION", value_parser = super::values::seconds)]
    duration: Option<f64>,
    /// Print only the summary at the end, not every packet.
    #[arg(long)]
    summary: bool,
    /// Time each datagram inside the proxy, from the kernel's arrival stamp on its socket
    /// to the send call that passes it on, and print the percentiles per direction at
    /// exit. Off by default: the kernel stamps cost a few percent of throughput.
    #[arg(long)]
    measure_latency: bool,
    /// Also run the `check` rules live: findings go to stderr as they are found, the
    /// check report follows the counts at exit; exit status 1 on an error-level finding.
    #[arg(long)]
    check: bool,
    /// Relay TCP connections instead of UDP: one upstream connection per client
    /// connection, the byte stream unchanged; packets are found by --tcp-framing.
    #[arg(long)]
    tcp: bool,
    /// Seed of the fault injector: the same seed and traffic give the same faults.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Drop this share of datagrams: `[SCOPE:]RATE`, e.g. `voice:5%`.
    #[arg(long, value_name = "[SCOPE:]RATE")]
    drop: Vec<String>,
    /// Delay datagrams: `[SCOPE:]DURATION`, e.g. `down:40ms`.
    #[arg(long, value_name = "[SCOPE:]DURATION")]
    delay: Vec<String>,
    /// Add a random delay between 0 and this: `[SCOPE:]DURATION` (reorders, like netem).
    #[arg(long, value_name = "[SCOPE:]DURATION")]
    jitter: Vec<String>,
    /// Send an extra copy of this share of datagrams: `[SCOPE:]RATE`.
    #[arg(long, value_name = "[SCOPE:]RATE")]
    duplicate: Vec<String>,
    /// Hold this share of datagrams back until the next one of the flow has passed
    /// (at most 50 ms): `[SCOPE:]RATE`.
    #[arg(long, value_name = "[SCOPE:]RATE")]
    reorder: Vec<String>,
    /// Flip one byte inside the Dissonance packet of this share of datagrams: `[SCOPE:]RATE`.
    #[arg(long, value_name = "[SCOPE:]RATE")]
    corrupt: Vec<String>,
    /// Gilbert-Elliott burst loss: `[SCOPE:]P,R` with P = chance to enter the lossy state
    /// and R = chance to leave it, per datagram (mean burst 1/R), e.g. `1%,30%`.
    #[arg(long, value_name = "[SCOPE:]P,R")]
    burst_loss: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics, liveness at /healthz and
    /// readiness at /readyz (503 once draining), e.g. 127.0.0.1:9465.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// On SIGTERM stop taking new clients but keep relaying for the existing ones this
    /// long (seconds, or with a unit: 30s, 500ms, 2m), then exit 0. A second SIGTERM ends
    /// the drain early. 0: at once.
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = super::ops::parse_secs)]
    drain: Duration,
    /// Read settings from this TOML file (keys are the long flag names; the command line
    /// overrides them).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    view: ViewArgs,
    #[command(flatten)]
    log: super::ops::LogArgs,
}

pub fn run(a: Args) -> Result<i32, Error> {
    a.log.init("proxy");
    // Already merged into the arguments by `super::ops::expand_config`.
    let _ = a.config;
    a.view.check_used(!a.summary)?;
    run_lib(Options {
        listen: a.listen,
        upstream: a.upstream,
        idle: a.idle,
        max_mappings: a.max_mappings,
        max_connections: a.max_connections,
        record: a.record,
        duration: a.duration,
        summary: a.summary,
        measure_latency: a.measure_latency,
        check: a.check,
        tcp: a.tcp,
        seed: a.seed,
        drop: a.drop,
        delay: a.delay,
        jitter: a.jitter,
        duplicate: a.duplicate,
        reorder: a.reorder,
        corrupt: a.corrupt,
        burst_loss: a.burst_loss,
        view: a.view.view()?,
        metrics: a.metrics,
        drain: a.drain,
    })
}
