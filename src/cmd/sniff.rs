//! `dissonance sniff`: live capture through libpcap, decoded like `dump`.

use std::path::PathBuf;

use dissonance_tools::capture::ring::Ring;
use dissonance_tools::net::sniff::{sniff, SniffOptions};

use super::view::ViewArgs;
use super::Error;

/// Capture live traffic with libpcap and print every Dissonance message as it arrives.
///
/// Needs permission to capture: run as root, or give the binary the capability once:
/// `sudo setcap cap_net_raw,cap_net_admin=eip $(which dissonance)`. Ctrl-C (or SIGTERM)
/// stops, flushes the output and the -w file, and prints the summary.
///
/// Nothing is lost silently: libpcap's counters (received, dropped by the kernel, dropped
/// by the interface) are in the summary, every --status-every seconds, and a warning goes
/// to stderr as soon as a packet is dropped (raise -B, or narrow the -f filter).
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
  sudo dissonance sniff -i lo -f 'udp port 47200'\n  \
  sudo dissonance sniff -i eth0 -w session.pcap --format ndjson | jq .type\n  \
  sudo dissonance sniff -i any -c 1000 --summary\n  \
  sudo dissonance sniff -i eth0 -f 'udp' -w ring.pcapng -b filesize:100,files:10 --summary")]
pub struct Args {
    /// Network interface (`any` for all; see `ip link`).
    #[arg(short = 'i', long, value_name = "IFACE")]
    interface: String,
    /// BPF capture filter, as for tcpdump (e.g. 'udp port 47200').
    #[arg(short = 'f', long, value_name = "BPF")]
    filter: Option<String>,
    /// Also write every captured frame to this file: pcapng when the name ends in
    /// `.pcapng`, else pcap.
    #[arg(short = 'w', long, value_name = "FILE")]
    write: Option<PathBuf>,
    /// With -w, a ring of files: start a new one (NAME_00001.EXT, NAME_00002.EXT, ...)
    /// after filesize megabytes (10^6 bytes) and keep only the last N.
    #[arg(
        short = 'b',
        long = "ring",
        value_name = "filesize:MB[,files:N]",
        requires = "write"
    )]
    ring: Option<Ring>,
    /// Kernel capture buffer: bytes with a K, M or G suffix (powers of 1024); a plain
    /// number is KiB, as tcpdump's -B. Too small a buffer drops packets in bursts.
    #[arg(short = 'B', long, value_name = "SIZE", default_value = "32M", value_parser = parse_size)]
    buffer_size: u64,
    /// Bytes kept of each frame (0: the maximum, 262144).
    #[arg(short = 's', long, value_name = "BYTES", default_value_t = 262_144,
          value_parser = clap::value_parser!(u32).range(0..=262_144))]
    snaplen: u32,
    /// Print libpcap's counters (received, dropped) on stderr every SECS seconds.
    #[arg(long, value_name = "DURATION", value_parser = parse_secs)]
    status_every: Option<f64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "DURATION", value_parser = super::values::seconds)]
    duration: Option<f64>,
    /// Print only the summary at the end, not every packet.
    #[arg(long)]
    summary: bool,
    /// Also run the `check` rules live: findings go to stderr as they are found, the
    /// check report follows the summary; exit status 1 on an error-level finding.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    view: ViewArgs,
}

/// `-B`: a byte count with K, M or G (powers of 1024), or a plain number of KiB.
fn parse_size(s: &str) -> Result<u64, String> {
    let (num, unit) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "K"),
    };
    let unit: u64 = match unit.to_ascii_uppercase().as_str() {
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(format!("'{s}': the unit is K, M or G")),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size like 32M, 512K or 4096 (KiB)"))?;
    match n.checked_mul(unit) {
        Some(b) if (4096..=i32::MAX as u64).contains(&b) => Ok(b),
        _ => Err(format!("'{s}': the buffer is 4 KiB to 2 GiB")),
    }
}

/// A positive duration (units as everywhere; a bare number is seconds).
fn parse_secs(s: &str) -> Result<f64, String> {
    match super::values::seconds(s)? {
        v if v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive duration")),
    }
}

pub fn run(args: Args) -> Result<i32, Error> {
    args.view.check_used(!args.summary)?;
    dissonance_tools::sys::signals::install()
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    let opts = SniffOptions {
        interface: args.interface,
        filter: args.filter,
        write: args.write,
        ring: args.ring,
        buffer_size: args.buffer_size,
        snaplen: args.snaplen,
        status_every: args.status_every,
        duration: args.duration,
        summary: args.summary,
        check: args.check,
        view: args.view.view()?,
    };
    sniff(&opts)
}
