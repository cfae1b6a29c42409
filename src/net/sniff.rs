//! The `sniff` runtime: live capture through libpcap, decoded like `dump` (the
//! dissector and a printer), optionally checked live, summary at the end. Nothing is lost
//! silently: libpcap's counters are in the summary, every `status_every` seconds and in
//! a warning as soon as a packet is dropped.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Error;
use crate::capture::ring::{FrameFile, Ring};
use crate::capture::{Decapsulator, Frame};
use crate::check::Live;
use crate::output::{pipe, summary, Format, View};

/// Everything `sniff` needs to know.
#[derive(Debug, Clone)]
pub struct SniffOptions {
    /// Network interface (`any` for all).
    pub interface: String,
    /// BPF capture filter.
    pub filter: Option<String>,
    /// Also write every captured frame to this file: pcapng when the name ends in
    /// `.pcapng`, else pcap.
    pub write: Option<PathBuf>,
    /// With `write`, a ring of files.
    pub ring: Option<Ring>,
    /// Kernel capture buffer, bytes.
    pub buffer_size: u64,
    /// Bytes kept of each frame (0: the maximum, 262144).
    pub snaplen: u32,
    /// Print libpcap's counters on stderr this often (seconds).
    pub status_every: Option<f64>,
    /// Stop after this many seconds.
    pub duration: Option<f64>,
    /// Only the summary at the end, not every packet.
    pub summary: bool,
    /// Also run the `check` rules live.
    pub check: bool,
    pub view: View,
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

/// Captures until Ctrl-C or SIGTERM ([`crate::sys::signals`], installed by the caller;
/// the frames the kernel holds already are read first) or until `-c` (the view's limits)
/// or `duration` is reached, printing to standard output; returns the exit status (1
/// when `check` found an error-level finding). An output error, a closed pipe too, is returned (the caller's
/// error path turns a closed pipe into a quiet exit).
pub fn sniff(opts: &SniffOptions) -> Result<i32, Error> {
    let args = opts;
    let mut cap = open(args)?;
    let linktype = cap.get_datalink().0 as u32;
    if !crate::capture::linktype::is_supported(linktype) {
        return Err(format!(
            "{}: {}",
            args.interface,
            crate::capture::linktype::unsupported_error(linktype)
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
        crate::capture::linktype::describe(linktype),
        snaplen(args),
        human_size(args.buffer_size)
    ));

    let stdout = std::io::stdout();
    let mut printer = args.view.printer(stdout.lock());
    printer.payload_hex = args.view.hex;
    let mut dissector = args.view.dissector();
    // -c (in the view's limits) counts selected packets, with `summary` too.
    dissector.always_select = true;
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
    let mut live = args.check.then(|| Live::new(args.view.payload));

    // Ctrl-C: the frames the kernel holds already are read first (see DRAIN).
    let mut stopping: Option<Instant> = None;
    while !dissector.done() && deadline.is_none_or(|d| Instant::now() < d) {
        let now = Instant::now();
        if stopping.is_none() && crate::sys::signals::requested().is_some() {
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
                // --duration and -c are honoured even on a silent interface.
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
    if matches!(args.view.format, Format::Json | Format::Ndjson) {
        eprint!("{text}");
    } else {
        let mut out = std::io::stdout().lock();
        write!(out, "{text}")?;
        out.flush()?;
    }
    Ok(code)
}

fn snaplen(args: &SniffOptions) -> u32 {
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

fn open(args: &SniffOptions) -> Result<pcap::Capture<pcap::Active>, Error> {
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
