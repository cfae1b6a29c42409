//! `dissonance sniff`: live capture through libpcap, decoded like `dump`.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dissonance_tools::capture::{Decapsulator, Frame};
use dissonance_tools::output::summary;
use dissonance_tools::output::{Format, Printer};

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
  sudo dissonance sniff -i any -c 1000 --summary")]
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

pub fn run(args: Args) -> Result<i32, Error> {
    dissonance_tools::signals::install()
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    let mut cap = open(&args)?;
    let linktype = cap.get_datalink().0 as u32;
    let fd = cap.as_raw_fd();
    let mut savefile = match &args.write {
        Some(p) => Some(
            cap.savefile(p)
                .map_err(|e| format!("cannot write {}: {e}", p.display()))?,
        ),
        None => None,
    };

    let stdout = std::io::stdout();
    let mut printer = Printer::new(args.view.format(), stdout.lock(), args.view.color(), true);
    printer.json_events = args.view.events;
    printer.fields = args.view.fields_spec()?;
    printer.payload_hex = args.view.hex;
    let mut dissector = args.view.dissector();
    // -c counts selected packets with --summary too.
    dissector.always_select = true;
    let mut decap = Decapsulator::new(args.view.decap_config());
    let started = Instant::now();
    let deadline = args
        .duration
        .map(|s| started + Duration::from_secs_f64(s.max(0.0)));
    let mut frames = 0u64;
    let mut io_result = Ok(());
    let mut live = args
        .check
        .then(|| dissonance_tools::check::Live::new(args.view.payload));

    while dissonance_tools::signals::requested().is_none()
        && !dissector.done()
        && deadline.is_none_or(|d| Instant::now() < d)
    {
        let packet = match cap.next_packet() {
            Ok(p) => p,
            Err(pcap::Error::TimeoutExpired) => {
                // Non-blocking handle: wait for the next frame ourselves, briefly, so Ctrl-C,
                // --duration and --count are honoured even on a silent interface.
                wait_readable(fd, 100);
                continue;
            }
            Err(e) => return Err(format!("capture on {} failed: {e}", args.interface).into()),
        };
        frames += 1;
        if let Some(sf) = &mut savefile {
            sf.write(&packet);
        }
        let h = packet.header;
        let frame = Frame {
            number: frames,
            ts_ns: h.ts.tv_sec as i64 * 1_000_000_000 + h.ts.tv_usec as i64 * 1000,
            linktype,
            interface: 0,
            data: packet.data,
            orig_len: h.len,
        };
        decap.push(&frame, &mut |p| {
            dissector.push_payload(&p, (!args.summary).then_some(&mut printer), &mut io_result);
            live.iter_mut().for_each(|l| l.push(&p));
        });
        if let Err(e) = std::mem::replace(&mut io_result, Ok(())) {
            return Err(e.into());
        }
        live.iter_mut().for_each(|l| l.drain());
    }
    decap.finish(&mut |p| {
        dissector.push_payload(&p, (!args.summary).then_some(&mut printer), &mut io_result);
        live.iter_mut().for_each(|l| l.push(&p));
    });
    if let Err(e) = io_result {
        return Err(e.into());
    }
    if let Some(sf) = &mut savefile {
        sf.flush()
            .map_err(|e| format!("flushing the -w file: {e}"))?;
    }
    if let Err(e) = printer.finish() {
        return Err(e.into());
    }
    drop(printer);
    let mut text = format!(
        "{}\nCaptured {frames} frames on {} in {:.1} s; {}\n",
        summary::render(&dissector.tracker, &dissector.totals),
        args.interface,
        started.elapsed().as_secs_f64(),
        decap.stats()
    );
    let (report, code) = live.map(|l| l.finish()).unwrap_or_default();
    text.push_str(&report);
    // Keep machine-readable output clean: the summary goes to stderr for JSON formats.
    if matches!(args.view.format(), Format::Json | Format::Ndjson) {
        eprint!("{text}");
    } else {
        let mut out = std::io::stdout().lock();
        write!(out, "{text}")?;
        out.flush()?;
    }
    Ok(code)
}

fn open(args: &Args) -> Result<pcap::Capture<pcap::Active>, Error> {
    let iface = &args.interface;
    let devices = pcap::Device::list().unwrap_or_default();
    if iface != "any" && !devices.iter().any(|d| &d.name == iface) {
        let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        return Err(format!(
            "no network interface named '{iface}'; available: {}",
            if names.is_empty() {
                "none visible (are you allowed to capture?)".to_string()
            } else {
                names.join(", ")
            }
        )
        .into());
    }
    let inactive = pcap::Capture::from_device(iface.as_str())
        .map_err(|e| format!("cannot use interface '{iface}': {e}"))?
        .snaplen(65535)
        .immediate_mode(true)
        .timeout(200);
    // libpcap ignores the read timeout in immediate mode on Linux, so a blocking read on a
    // quiet interface never returns: read non-blocking and poll the descriptor instead.
    let mut cap = inactive
        .open()
        .map_err(|e| permission_hint(iface, e))?
        .setnonblock()
        .map_err(|e| format!("cannot set '{iface}' non-blocking: {e}"))?;
    if let Some(f) = &args.filter {
        cap.filter(f, true)
            .map_err(|e| format!("bad capture filter '{f}': {e}"))?;
    }
    Ok(cap)
}

/// Sleeps until `fd` is readable or `ms` milliseconds have passed.
fn wait_readable(fd: std::os::fd::RawFd, ms: i32) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call; EINTR just returns early.
    unsafe {
        libc::poll(&mut pfd, 1, ms);
    }
}

fn permission_hint(iface: &str, e: pcap::Error) -> Error {
    let msg = e.to_string();
    if msg.contains("permission") || msg.contains("not permitted") {
        format!(
            "not allowed to capture on '{iface}' ({msg}); run as root, or once: \
             sudo setcap cap_net_raw,cap_net_admin=eip $(which dissonance)"
        )
        .into()
    } else {
        format!("cannot capture on '{iface}': {msg}").into()
    }
}
