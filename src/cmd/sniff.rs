//! `dissonance sniff`: live capture through libpcap, decoded like `dump`.

use std::path::PathBuf;

use dissonance_tools::net::sniff::{sniff, SniffOptions};

use super::view::ViewArgs;
use super::Error;

/// Capture live traffic with libpcap and print every Dissonance message as it arrives.
///
/// Needs permission to capture: run as root, or give the binary the capability once:
/// `sudo setcap cap_net_raw,cap_net_admin=eip $(which dissonance)`. Ctrl-C (or SIGTERM)
/// stops, flushes the output and the -w file, and prints the summary.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
  sudo dissonance sniff -i lo -f 'udp port 47200'\n  \
  sudo dissonance sniff -i eth0 -w session.pcap --format ndjson | jq .type\n  \
  sudo dissonance sniff -i any --count 1000 --summary")]
pub struct Args {
    /// Network interface (`any` for all; see `ip link`).
    #[arg(short = 'i', long, value_name = "IFACE")]
    interface: String,
    /// BPF capture filter, as for tcpdump (e.g. 'udp port 47200').
    #[arg(short = 'f', long, value_name = "BPF")]
    filter: Option<String>,
    /// Also write every captured frame to this pcap file.
    #[arg(short = 'w', long, value_name = "FILE")]
    write: Option<PathBuf>,
    /// Stop after this many captured frames.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
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

pub fn run(args: Args) -> Result<i32, Error> {
    dissonance_tools::sys::signals::install()
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    let opts = SniffOptions {
        interface: args.interface,
        filter: args.filter,
        write: args.write,
        count: args.count,
        duration: args.duration,
        summary: args.summary,
        check: args.check,
        view: args.view.view(),
    };
    sniff(&opts)
}
