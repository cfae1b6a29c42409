//! `dissonance sniff`: live capture through libpcap, decoded like `dump`.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dissonance_tools::capture::ring::{FrameFile, Ring};
use dissonance_tools::capture::{Decapsulator, Frame};
use dissonance_tools::output::{pipe, summary};
use dissonance_tools::output::{Format, Printer};

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
  sudo dissonance sniff -i any --count 1000 --summary\n  \
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
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    status_every: Option<f64>,
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

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

/// libpcap's counters since the capture started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    received: u64,
    kernel: u64,
    interface: u64,
}

impl Counters {
    fn read(cap: &mut pcap::Capture<pcap::Active>) -> Option<Counters> {
        cap.stats().ok().map(|s| Counters {
            received: s.received.into(),
            kernel: s.dropped.into(),
            interface: s.if_dropped.into(),
        })
    }

    fn dropped(&self) -> u64 {
        self.kernel + self.interface
    }
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "libpcap: {} received, {} dropped by the kernel, {} dropped by the interface",
            self.received, self.kernel, self.interface
        )
    }
}

/// Longest delay between a frame's arrival and its output.
const LATENCY_MS: i32 = 50;

/// After Ctrl-C, frames are still read until none is left and this long has passed:
/// the kernel hands over its last partial block within [`LATENCY_MS`], so what arrived
/// before the signal is in the output and the -w file. Never longer than DRAIN_MAX.
const DRAIN: Duration = Duration::from_millis(2 * LATENCY_MS as u64);
const DRAIN_MAX: Duration = Duration::from_secs(1);

/// How often the counters are read for the drop warning.
const DROP_CHECK: Duration = Duration::from_millis(250);

pub fn run(args: Args) -> Result<i32, Error> {
    args.view.check_used(!args.summary)?;
    dissonance_tools::signals::install()
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    let mut cap = open(&args)?;
    let linktype = cap.get_datalink().0 as u32;
    if !dissonance_tools::capture::linktype::is_supported(linktype) {
        return Err(format!(
            "{}: {}",
            args.interface,
            dissonance_tools::capture::linktype::unsupported_error(linktype)
        )
        .into());
    }
    let fd = cap.as_raw_fd();
    let mut savefile = match &args.write {
        Some(p) => Some(
            FrameFile::create(p, linktype, args.ring)
                .map_err(|e| format!("cannot write {}: {e}", p.display()))?,
        ),
        None => None,
    };
    // As tcpdump: what is captured, how, before the first packet (stderr, so the output
    // stays clean; tests wait for it to know the capture is running).
    pipe::eprint(&format!(
        "dissonance: listening on {}, link type {}, snaplen {}, buffer {}\n",
        args.interface,
        dissonance_tools::capture::linktype::describe(linktype),
        snaplen(&args),
        human_size(args.buffer_size)
    ));

    let stdout = std::io::stdout();
    let mut printer = Printer::new(args.view.format(), stdout.lock(), args.view.color(), true);
    printer.json_events = args.view.events;
    printer.payload_hex = args.view.hex;
    let mut dissector = args.view.dissector();
    let mut decap = Decapsulator::new(args.view.decap_config());
    let started = Instant::now();
    let deadline = args
        .duration
        .map(|s| started + Duration::from_secs_f64(s.max(0.0)));
    let status_every = args.status_every.map(Duration::from_secs_f64);
    let mut next_status = status_every.map(|d| started + d);
    let mut next_check = started + DROP_CHECK;
    let mut warned = Counters::default();
    let mut last_warning: Option<Instant> = None;
    let mut frames = 0u64;
    let mut io_result = Ok(());
    let mut live = args
        .check
        .then(|| dissonance_tools::check::Live::new(args.view.payload));

    // Ctrl-C: the frames the kernel holds already are read first (see DRAIN).
    let mut stopping: Option<Instant> = None;
    while args.count.is_none_or(|c| frames < c) && deadline.is_none_or(|d| Instant::now() < d) {
        let now = Instant::now();
        if stopping.is_none() && dissonance_tools::signals::requested().is_some() {
            stopping = Some(now);
        }
        if stopping.is_some_and(|t| now - t >= DRAIN_MAX) {
            break;
        }
        if now >= next_check {
            next_check = now + DROP_CHECK;
            if let Some(c) = Counters::read(&mut cap) {
                // A drop is said at once (at most once a second while they go on).
                if c.dropped() > warned.dropped()
                    && last_warning.is_none_or(|t| now - t >= Duration::from_secs(1))
                {
                    warned = c;
                    last_warning = Some(now);
                    pipe::eprint(&format!(
                        "dissonance: warning: packets dropped on {}: {} by the kernel, {} by \
                         the interface, of {} received; raise -B (now {}) or narrow -f\n",
                        args.interface,
                        c.kernel,
                        c.interface,
                        c.received,
                        human_size(args.buffer_size)
                    ));
                }
                if let (Some(at), Some(every)) = (next_status, status_every) {
                    if now >= at {
                        next_status = Some(at + every);
                        pipe::eprint(&format!(
                            "dissonance: {:.1} s, {frames} frames; {c}\n",
                            (now - started).as_secs_f64()
                        ));
                        if let Some(sf) = &mut savefile {
                            sf.flush()
                                .map_err(|e| format!("flushing the -w file: {e}"))?;
                        }
                    }
                }
            }
        }
        let packet = match cap.next_packet() {
            Ok(p) => p,
            Err(pcap::Error::TimeoutExpired) => {
                if stopping.is_some_and(|t| now - t >= DRAIN) {
                    break;
                }
                // Non-blocking handle: wait for the next frame ourselves, briefly, so Ctrl-C,
                // --duration and --count are honoured even on a silent interface.
                wait_readable(fd, LATENCY_MS);
                continue;
            }
            Err(e) => return Err(format!("capture on {} failed: {e}", args.interface).into()),
        };
        frames += 1;
        let h = packet.header;
        let ts_ns = h.ts.tv_sec as i64 * 1_000_000_000 + h.ts.tv_usec as i64 * 1000;
        if let Some(sf) = &mut savefile {
            sf.write(ts_ns, packet.data, h.len)
                .map_err(|e| format!("writing the -w file: {e}"))?;
        }
        let frame = Frame {
            number: frames,
            ts_ns,
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
    if io_result.is_ok() {
        io_result = dissector.finish((!args.summary).then_some(&mut printer));
    }
    if let Err(e) = io_result {
        return Err(e.into());
    }
    if let Some(sf) = &mut savefile {
        sf.flush()
            .map_err(|e| format!("flushing the -w file: {e}"))?;
    }
    let counters = Counters::read(&mut cap).unwrap_or_default();
    if counters.dropped() > warned.dropped() {
        pipe::eprint(&format!(
            "dissonance: warning: packets dropped on {}: {} by the kernel, {} by the \
             interface, of {} received; raise -B (now {}) or narrow -f\n",
            args.interface,
            counters.kernel,
            counters.interface,
            counters.received,
            human_size(args.buffer_size)
        ));
    }
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let stats = serde_json::json!({
        "event": "capture_stats", "ts": now_ns as f64 / 1e9, "rel": dissector.rel(now_ns),
        "interface": args.interface, "frames": frames,
        "received": counters.received, "dropped_kernel": counters.kernel,
        "dropped_interface": counters.interface,
    });
    if let Err(e) = printer.json_event(&stats).and_then(|()| printer.finish()) {
        return Err(e.into());
    }
    drop(printer);
    let mut text = format!(
        "{}\nCaptured {frames} frames on {} in {:.1} s; {counters}; {}\n",
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

fn snaplen(args: &Args) -> u32 {
    if args.snaplen == 0 {
        262_144
    } else {
        args.snaplen
    }
}

/// 33554432 -> "32 MiB", 4096 -> "4 KiB".
fn human_size(b: u64) -> String {
    if b % (1 << 20) == 0 {
        format!("{} MiB", b >> 20)
    } else {
        format!("{} KiB", b >> 10)
    }
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
        .snaplen(snaplen(args) as i32)
        .buffer_size(args.buffer_size as i32)
        // Not immediate mode: on Linux it means a ring of fixed slots as large as the
        // snaplen (a 32 MiB buffer then holds a few hundred frames, and a burst of joins
        // overflows it). Without it the kernel packs frames into blocks and hands over a
        // block when full or after this timeout: the output lags by at most 50 ms.
        .immediate_mode(false)
        .timeout(LATENCY_MS);
    // Read non-blocking and poll the descriptor, so that Ctrl-C, --duration and --count
    // are honoured on a quiet interface whatever libpcap does with the timeout.
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
