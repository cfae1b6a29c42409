//! `dissonance serve`: a standalone Dissonance server on the plain UDP transport. The
//! protocol lives in the sans-IO `server` module; this is the socket, clock, signal, log
//! and pcap shell around it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::capture::{PcapWriter, TsResolution};
use crate::net::ops::{next_request, Exposition, Ops, Request};
use crate::net::server::{
    kind_name, random_session, Config, DropReason, Event, Server, Stats, MAX_UDP_PAYLOAD,
};
use crate::output::json::Obj;
use crate::output::pipe::LogOut;
use hdrhistogram::Histogram;
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};

use crate::net::Error;

mod metrics;

/// The options of [`run`] (the command line's, converted).
#[derive(Debug)]
pub struct Options {
    /// Address and UDP port to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Fix the session id (decimal or 0x hex, 1..=2147483646) instead of drawing one.
    pub session: Option<u32>,
    /// Log format on stdout.
    pub log_format: LogFormat,
    /// The least severe log lines written (drops are `warn`, the rest `info`, scrapes
    /// `debug`).
    pub log_level: Level,
    /// Also print the summary every SECS seconds.
    pub status_every: Option<f64>,
    /// Write every datagram received and sent to this pcap file (Ethernet/IP/UDP).
    pub record: Option<PathBuf>,
    /// Refuse handshakes beyond this many clients.
    pub max_clients: usize,
    /// Drop datagrams longer than this (real packets are at most 1024 bytes; longer
    /// ones are accepted up to this size and flagged in the log).
    pub max_packet: usize,
    /// Handshakes one peer may send in a burst before --handshake-rate applies.
    pub handshake_burst: u32,
    /// Steady handshakes per second allowed per peer (real clients retry every 2 s).
    pub handshake_rate: f64,
    /// Drop clients silent for this many seconds (off by default: real clients send
    /// nothing while nobody talks).
    pub idle_timeout: Option<f64>,
    /// Handshakes one source network (/24, /64) may send in a burst ...
    pub prefix_burst: u32,
    /// ... and per second after it.
    pub prefix_rate: f64,
    /// Refuse HandshakeRequests with a longer name (bytes).
    pub max_name: usize,
    /// Clients between HandshakeResponse and their own ClientState, at most.
    pub max_half_open: usize,
    /// Forget such a half-open client after this many seconds.
    pub handshake_timeout: f64,
    /// Stop after this many seconds.
    pub duration: Option<f64>,
    /// Serve /metrics, /healthz and /readyz over HTTP on this address.
    pub metrics: Option<SocketAddr>,
    /// On SIGTERM, refuse new clients but keep relaying this long, then say goodbye to
    /// every client and exit 0 (zero: at once).
    pub drain: Duration,
    /// Write the process id to this file (for `kill -USR1`); removed at exit.
    pub pid_file: Option<PathBuf>,
}

/// The --pid-file: written once the socket is bound, removed when serve ends (also on an
/// error return: it is a guard).
struct PidFile(PathBuf);

impl PidFile {
    fn create(path: &std::path::Path) -> Result<PidFile, Error> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write --pid-file {}: {e}", path.display()))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub use crate::output::log::{Level, LogFormat};

fn seconds(name: &str, v: Option<f64>) -> Result<Option<Duration>, Error> {
    match v {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(format!("--{name} {s}: give a positive number of seconds").into()),
    }
}

pub fn run(args: Options) -> Result<i32, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(args))
}

/// Lines of each kind (`join`, `drop`, `oversize`, ...) logged per second at most; the
/// rest are counted and reported once a second (a flood must not turn into a log flood).
pub const LINES_PER_KIND_PER_SEC: u32 = 20;

/// The log kinds that [`LINES_PER_KIND_PER_SEC`] applies to, each separately.
const KINDS: [&str; 6] = [
    "join",
    "leave",
    "room_join",
    "room_leave",
    "drop",
    "oversize",
];

struct Shell {
    server: Server,
    local: SocketAddr,
    /// The UDP socket's descriptor, for its kernel drop count.
    fd: std::os::fd::RawFd,
    log: Log,
    record: Option<PcapWriter<BufWriter<File>>>,
    record_error: bool,
    send_errors: u64,
    /// Times the send buffer was full.
    full_waits: u64,
    batch: crate::net::mmsg::MultiSend,
    added: AddedLatency,
}

/// The server's own added latency: from the kernel's arrival timestamp of a datagram
/// (SO_TIMESTAMPNS, so time queued in the socket counts) to the moment the last datagram
/// it caused was handed back to the kernel. Only datagrams that cause sends count.
struct AddedLatency {
    enabled: bool,
    /// Since the previous `status` line.
    interval: Histogram<u64>,
    /// Since the start, for the `final` line.
    total: Histogram<u64>,
}

impl AddedLatency {
    fn new(enabled: bool) -> AddedLatency {
        AddedLatency {
            enabled,
            interval: crate::net::socket::latency_histogram(),
            total: crate::net::socket::latency_histogram(),
        }
    }

    fn record(&mut self, arrived_ns: i64) {
        let us = crate::net::socket::latency_us(arrived_ns, crate::net::socket::wall_ns());
        self.interval.saturating_record(us);
        self.total.saturating_record(us);
    }
}

async fn serve(args: Options) -> Result<i32, Error> {
    let status_every = seconds("status-every", args.status_every)?;
    let duration = seconds("duration", args.duration)?;
    let idle = seconds("idle-timeout", args.idle_timeout)?;
    if !(args.handshake_rate.is_finite() && args.handshake_rate > 0.0) {
        return Err("--handshake-rate: give a positive number per second".into());
    }
    if !(args.prefix_rate.is_finite() && args.prefix_rate > 0.0) {
        return Err("--prefix-rate: give a positive number per second".into());
    }
    let handshake_timeout = seconds("handshake-timeout", Some(args.handshake_timeout))?
        .unwrap_or(Duration::from_secs(10));
    if args.max_packet == 0 || args.max_packet > MAX_UDP_PAYLOAD {
        return Err(format!("--max-packet: give 1..={MAX_UDP_PAYLOAD}").into());
    }
    let session = match args.session {
        Some(s) => s,
        None => random_session(&mut rand::thread_rng()),
    };
    let mut config = Config::new(session);
    config.max_clients = args.max_clients;
    config.max_packet = args.max_packet;
    config.idle_timeout = idle;
    config.handshake_burst = args.handshake_burst.max(1);
    config.handshakes_per_sec = args.handshake_rate;
    config.prefix_burst = args.prefix_burst.max(1);
    config.prefix_per_sec = args.prefix_rate;
    config.max_name = args.max_name;
    config.max_half_open = args.max_half_open;
    config.half_open_timeout = handshake_timeout;

    let record = match &args.record {
        Some(path) => {
            let f = File::create(path)
                .map_err(|e| format!("cannot create --record {}: {e}", path.display()))?;
            Some(PcapWriter::new(
                BufWriter::new(f),
                TsResolution::Microsecond,
            )?)
        }
        None => None,
    };
    let socket = UdpSocket::bind(args.listen).await.map_err(|e| {
        format!(
            "cannot listen on {}: {e} (is another server using the port? try another \
             --listen port, or port 0 for a free one)",
            args.listen
        )
    })?;
    // Room for bursts: a voice frame to a big room is hundreds of datagrams at once.
    crate::net::socket::set_buffers(&socket, 16 << 20);
    let local = socket.local_addr()?;
    // Before the first line: whoever reads it may signal at once.
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let _pid_file = args.pid_file.as_deref().map(PidFile::create).transpose()?;
    // The pid is for `kill -USR1 PID` (a live summary); other dissonance commands ignore it.
    eprintln!(
        "listening on {local} session {session} pid {}",
        std::process::id()
    );
    let mut ops = match args.metrics {
        Some(addr) => {
            let o = Ops::start(addr).await?;
            eprintln!("metrics on http://{}/metrics", o.local);
            Some(o)
        }
        None => None,
    };
    let mut shell = Shell {
        server: Server::new(config),
        local,
        fd: socket.as_raw_fd(),
        log: Log::new(args.log_format, args.log_level),
        record,
        record_error: false,
        send_errors: 0,
        full_waits: 0,
        batch: crate::net::mmsg::MultiSend::new(),
        added: AddedLatency::new(crate::net::mmsg::enable_rx_timestamps(socket.as_raw_fd())),
    };
    shell.log.listening(local, session);
    // At once: a log reader (or a pipe) sees the server is up.
    shell.log.flush();

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut status = status_every.map(|d| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let stop_at = async {
        match deadline {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop_at);
    // Armed by the first SIGTERM when --drain is set.
    let drain_end = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(drain_end);
    let mut draining = false;
    let mut buf = vec![0u8; 65_536];

    loop {
        tokio::select! {
            r = socket.readable() => {
                if let Err(e) = r {
                    return Err(format!("socket failed: {e}").into());
                }
                shell.receive_all(&socket, &mut buf).await;
            }
            _ = tick.tick() => {
                shell.server.handle_timeout(Instant::now());
                shell.send_all(&socket).await;
                shell.log_events();
                shell.log.new_second();
            }
            _ = async { status.as_mut().unwrap().tick().await }, if status.is_some() => {
                shell.status("status");
            }
            _ = usr1.recv() => shell.status("status"),
            req = next_request(&mut ops) => shell.answer(req),
            _ = term.recv() => {
                // A second SIGTERM ends the drain early.
                if draining || args.drain.is_zero() {
                    break;
                }
                draining = true;
                shell.server.stop_accepting();
                if let Some(o) = &ops {
                    o.not_ready();
                }
                drain_end.as_mut().reset(tokio::time::Instant::now() + args.drain);
                shell.log.draining(args.drain, shell.server.client_count());
                shell.log.flush();
            }
            _ = &mut drain_end, if draining => break,
            _ = int.recv() => break,
            _ = &mut stop_at => break,
        }
    }
    if let Some(o) = &ops {
        o.not_ready();
    }
    // Every client still here is told the session ended (goodbye, RemoveClient to the
    // others), as when the real server loses their connections.
    shell.server.close_all();
    shell.send_all(&socket).await;
    shell.log_events();
    if let Some(rec) = shell.record.as_mut() {
        rec.flush()
            .map_err(|e| format!("cannot write --record: {e}"))?;
    }
    shell.status("final");
    Ok(0)
}

impl Shell {
    /// Reads every datagram waiting, handling each and sending what it produces.
    async fn receive_all(&mut self, socket: &UdpSocket, buf: &mut [u8]) {
        // Bounded: at most this many per wake-up so timers and signals still run.
        for _ in 0..64 {
            let got = socket.try_io(Interest::READABLE, || {
                crate::net::mmsg::recv_stamped(socket.as_raw_fd(), buf)
            });
            match got {
                Ok((n, from, arrived)) => {
                    let data = &buf[..n];
                    self.record(from, self.local, data);
                    self.server.handle(Instant::now(), from, data);
                    let caused = self.server.pending_transmits().next().is_some();
                    self.send_all(socket).await;
                    if let (true, Some(t)) = (caused && self.added.enabled, arrived) {
                        self.added.record(t);
                    }
                    self.log_events();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors from an earlier send and the like: nothing to do.
                Err(_) => continue,
            }
        }
    }

    /// Sends everything the server queued, up to [`crate::net::mmsg::SEND_BATCH`] datagrams per sendmmsg(2):
    /// a voice relay fans out to a whole room, and one system call per copy was most of
    /// the server's CPU.
    async fn send_all(&mut self, socket: &UdpSocket) {
        // Bounded: every round sends or discards at least one datagram.
        loop {
            let n = self
                .batch
                .fill(self.server.pending_transmits().map(|t| (t.peer, t.bytes)));
            if n == 0 {
                return;
            }
            let r = socket.try_io(Interest::WRITABLE, || {
                self.batch.send(socket.as_raw_fd(), n)
            });
            let done = match r {
                Ok(sent) => sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The send buffer is full: wait for room rather than lose packets.
                    self.full_waits += 1;
                    if crate::net::mmsg::wait_writable(socket.as_raw_fd(), 100) {
                        continue;
                    }
                    self.send_errors += 1;
                    1
                }
                // The first datagram was refused (e.g. an unreachable peer): skip it.
                Err(_) => {
                    self.send_errors += 1;
                    1
                }
            };
            if let Some(rec) = self.record.as_mut() {
                for t in self.server.pending_transmits().take(done) {
                    record_to(rec, &mut self.record_error, self.local, t.peer, t.bytes);
                }
            }
            self.server.consume_transmits(done);
        }
    }

    fn record(&mut self, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
        if let Some(rec) = self.record.as_mut() {
            record_to(rec, &mut self.record_error, src, dst, data);
        }
    }

    fn log_events(&mut self) {
        // Most datagrams (voice relays) log nothing: then no flush either.
        let mut any = false;
        while let Some(e) = self.server.poll_event() {
            self.log.event(&e);
            any = true;
        }
        if any {
            self.log.flush();
        }
    }

    fn status(&mut self, kind: &str) {
        let stats = self.server.stats();
        let added = if kind == "final" {
            &self.added.total
        } else {
            &self.added.interval
        };
        let added = self.added.enabled.then_some(added);
        self.log.status(
            kind,
            &self.server,
            &stats,
            self.send_errors,
            self.full_waits,
            added,
        );
        self.log.flush();
        self.added.interval.reset();
    }
}

fn record_to(
    rec: &mut PcapWriter<BufWriter<File>>,
    failed: &mut bool,
    src: SocketAddr,
    dst: SocketAddr,
    data: &[u8],
) {
    let ts = crate::net::socket::wall_ns();
    if let Err(e) = rec.write_udp(ts, src, dst, data) {
        if !*failed {
            // Once: a full disk must not flood the log.
            eprintln!("dissonance: warning: --record: {e}; further record errors not shown");
            *failed = true;
        }
    }
}

/// The log on stdout, text or NDJSON.
struct Log {
    format: LogFormat,
    level: Level,
    /// A closed stdout stops the log, not the server (one line on stderr says so).
    out: BufWriter<LogOut>,
    line: Vec<u8>,
    start: Instant,
    /// Lines of each of [`KINDS`] this second, and those not shown.
    this_second: [u32; KINDS.len()],
    hidden: [u64; KINDS.len()],
}

impl Log {
    fn new(format: LogFormat, level: Level) -> Log {
        Log {
            format,
            level,
            out: BufWriter::new(LogOut::new("serve")),
            line: Vec::with_capacity(256),
            start: Instant::now(),
            this_second: [0; KINDS.len()],
            hidden: [0; KINDS.len()],
        }
    }

    fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn flush(&mut self) {
        // A closed stdout (e.g. `| head`) must not stop the server.
        let _ = self.out.flush();
    }

    fn emit(&mut self) {
        if self.out.get_ref().is_closed() {
            self.line.clear();
            return;
        }
        self.line.push(b'\n');
        let _ = self.out.write_all(&self.line);
        self.line.clear();
    }

    fn text(&mut self, s: std::fmt::Arguments<'_>) {
        let t = self.t();
        let _ = write!(self.line, "{t:9.3} {s}");
        self.emit();
    }

    /// A JSON record: `t`, `event`, then whatever `fill` adds.
    fn json(&mut self, event: &str, fill: impl FnOnce(&mut Obj<'_>)) {
        let t = self.t();
        let mut line = std::mem::take(&mut self.line);
        let mut o = Obj::new(&mut line);
        o.f64("t", (t * 1000.0).round() / 1000.0);
        o.s("event", event);
        fill(&mut o);
        o.end();
        self.line = line;
        self.emit();
    }

    /// Whether lines at `level` are written.
    fn at(&self, level: Level) -> bool {
        level <= self.level
    }

    /// A request on the `--metrics` listener (`debug`).
    fn request(&mut self, path: &str) {
        if !self.at(Level::Debug) {
            return;
        }
        match self.format {
            LogFormat::Text => self.text(format_args!("http path={path}")),
            LogFormat::Ndjson => self.json("http", |o| o.s("path", path)),
        }
        self.flush();
    }

    fn listening(&mut self, addr: SocketAddr, session: u32) {
        if !self.at(Level::Info) {
            return;
        }
        match self.format {
            LogFormat::Text => self.text(format_args!("listening on {addr} session {session}")),
            LogFormat::Ndjson => self.json("listening", |o| {
                o.s("addr", &addr.to_string());
                o.u("session", session);
            }),
        }
    }

    fn draining(&mut self, d: Duration, clients: usize) {
        if !self.at(Level::Info) {
            return;
        }
        let secs = d.as_secs_f64();
        match self.format {
            LogFormat::Text => self.text(format_args!(
                "draining seconds={secs} clients={clients} (SIGTERM: no new clients; \
                 goodbye to everyone at the end)"
            )),
            LogFormat::Ndjson => self.json("draining", |o| {
                o.f64("seconds", secs);
                o.u("clients", clients as u64);
            }),
        }
    }

    fn new_second(&mut self) {
        for (k, kind) in KINDS.iter().enumerate() {
            let n = std::mem::take(&mut self.hidden[k]);
            if n > 0 && self.at(Level::Warn) {
                match self.format {
                    LogFormat::Text => self.text(format_args!("hidden kind={kind} count={n}")),
                    LogFormat::Ndjson => self.json("hidden", |o| {
                        o.s("kind", kind);
                        o.u("count", n);
                    }),
                }
            }
        }
        self.flush();
        self.this_second = [0; KINDS.len()];
    }

    /// Whether a line of this event's kind may still be logged this second (else it is
    /// counted as hidden).
    fn admit(&mut self, e: &Event) -> bool {
        let k = match e {
            Event::Joined { .. } => 0,
            Event::Left { .. } => 1,
            Event::RoomJoined { .. } => 2,
            Event::RoomLeft { .. } => 3,
            Event::Dropped { .. } => 4,
            Event::Oversize { .. } => 5,
        };
        if self.this_second[k] >= LINES_PER_KIND_PER_SEC {
            self.hidden[k] += 1;
            return false;
        }
        self.this_second[k] += 1;
        true
    }

    fn event(&mut self, e: &Event) {
        let level = match e {
            Event::Dropped { .. } | Event::Oversize { .. } => Level::Warn,
            _ => Level::Info,
        };
        if !self.at(level) {
            return;
        }
        if !self.admit(e) {
            return;
        }
        let text = self.format == LogFormat::Text;
        match e {
            Event::Joined {
                id,
                name,
                peer,
                codec,
            } => {
                if text {
                    self.text(format_args!(
                        "join id={id} name={name:?} peer={peer} codec={} frame={} rate={}",
                        codec.codec().map(|c| c.name()).unwrap_or("unknown"),
                        codec.frame_size,
                        codec.sample_rate
                    ))
                } else {
                    self.json("join", |o| {
                        o.u("id", *id);
                        o.s("name", name);
                        o.s("peer", &peer.to_string());
                        o.opt_s("codec", codec.codec().map(|c| c.name()));
                        o.u("frame_size", codec.frame_size);
                        o.u("sample_rate", codec.sample_rate);
                    })
                }
            }
            Event::Left {
                id,
                name,
                peer,
                reason,
                rooms,
                by,
            } => {
                if text {
                    let by = by
                        .map(|b| format!(" (replaced by {b})"))
                        .unwrap_or_default();
                    self.text(format_args!(
                        "leave id={id} name={name:?} peer={peer} reason={} rooms={:?}{by}",
                        reason.name(),
                        rooms
                    ))
                } else {
                    self.json("leave", |o| {
                        o.u("id", *id);
                        o.s("name", name);
                        o.s("peer", &peer.to_string());
                        o.s("reason", reason.name());
                        if let Some(b) = by {
                            o.s("by", &b.to_string());
                        }
                        let out = o.key("rooms");
                        out.push(b'[');
                        for (i, r) in rooms.iter().enumerate() {
                            if i > 0 {
                                out.push(b',');
                            }
                            crate::output::json::string(out, r);
                        }
                        out.push(b']');
                    })
                }
            }
            Event::RoomJoined { id, name, room } | Event::RoomLeft { id, name, room } => {
                let ev = if matches!(e, Event::RoomJoined { .. }) {
                    "room_join"
                } else {
                    "room_leave"
                };
                if text {
                    self.text(format_args!("{ev} id={id} name={name:?} room={room:?}"))
                } else {
                    self.json(ev, |o| {
                        o.u("id", *id);
                        o.s("name", name);
                        o.s("room", room);
                    })
                }
            }
            Event::Dropped { peer, len, reason } => {
                if text {
                    self.text(format_args!(
                        "drop peer={peer} len={len} reason={} ({reason})",
                        reason.name()
                    ))
                } else {
                    self.json("drop", |o| {
                        o.s("peer", &peer.to_string());
                        o.u("len", *len as u64);
                        o.s("reason", reason.name());
                        o.s("detail", &reason.to_string());
                    })
                }
            }
            Event::Oversize { peer, len } => {
                if text {
                    self.text(format_args!(
                        "oversize peer={peer} len={len} (over the 1024 bytes of real Dissonance)"
                    ))
                } else {
                    self.json("oversize", |o| {
                        o.s("peer", &peer.to_string());
                        o.u("len", *len as u64);
                    })
                }
            }
        }
    }

    fn status(
        &mut self,
        kind: &str,
        server: &Server,
        s: &Stats,
        send_errors: u64,
        full_waits: u64,
        added: Option<&Histogram<u64>>,
    ) {
        if !self.at(Level::Info) {
            return;
        }
        // Listeners per room, in the .NET order the protocol uses elsewhere.
        let mut rooms: Vec<(&str, usize)> = Vec::new();
        for c in server.clients() {
            for r in c.rooms {
                match rooms.iter_mut().find(|(n, _)| *n == r.as_str()) {
                    Some((_, k)) => *k += 1,
                    None => rooms.push((r, 1)),
                }
            }
        }
        rooms.sort_by(|a, b| crate::collate::dotnet_compare(a.0, b.0));
        let clients = server.client_count();
        let session = server.session();
        match self.format {
            LogFormat::Text => {
                let rooms_txt: Vec<String> =
                    rooms.iter().map(|(n, k)| format!("{n:?}:{k}")).collect();
                let drop_reasons: Vec<String> =
                    s.drop_counts().map(|(r, n)| format!("{r}:{n}")).collect();
                let drop_reasons = drop_reasons.join(" ");
                self.text(format_args!(
                    "{kind} session={session} clients={clients} rooms=[{}] in={}/{}B out={}/{}B \
                     relayed={} dropped={} wrong_session={} relay_unknown={} \
                     relay_duplicate={} resets={} joins={} leaves={} drop_reasons=[{}] \
                     send_errors={send_errors} send_buffer_full={full_waits}",
                    rooms_txt.join(" "),
                    s.datagrams_in,
                    s.bytes_in,
                    s.datagrams_out,
                    s.bytes_out,
                    s.relayed,
                    s.dropped,
                    s.wrong_session,
                    s.relay_unknown,
                    s.relay_duplicate,
                    s.resets,
                    s.joins,
                    s.leaves,
                    drop_reasons
                ));
                if let Some(h) = added.filter(|h| !h.is_empty()) {
                    self.text(format_args!(
                        "{kind} added_latency_us samples={} p50={} p99={} p999={} max={}",
                        h.len(),
                        h.value_at_quantile(0.5),
                        h.value_at_quantile(0.99),
                        h.value_at_quantile(0.999),
                        h.max()
                    ));
                }
            }
            LogFormat::Ndjson => self.json(kind, |o| {
                o.u("session", session);
                o.u("clients", clients as u64);
                // Room names are arbitrary text, so they are values, never keys.
                let out = o.key("rooms");
                out.push(b'[');
                for (i, (n, k)) in rooms.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    let mut r = Obj::new(out);
                    r.s("room", n);
                    r.u("listeners", *k as u64);
                    r.end();
                }
                out.push(b']');
                o.u("datagrams_in", s.datagrams_in);
                o.u("bytes_in", s.bytes_in);
                o.u("datagrams_out", s.datagrams_out);
                o.u("bytes_out", s.bytes_out);
                o.u("relayed", s.relayed);
                o.u("dropped", s.dropped);
                o.u("wrong_session", s.wrong_session);
                o.u("relay_unknown", s.relay_unknown);
                o.u("relay_duplicate", s.relay_duplicate);
                o.u("resets", s.resets);
                // Reasons are fixed names, so they can be keys.
                let out = o.key("drop_reasons");
                let mut d = Obj::new(out);
                for (r, n) in s.drop_counts() {
                    d.u(r, n);
                }
                d.end();
                o.u("joins", s.joins);
                o.u("leaves", s.leaves);
                o.u("send_errors", send_errors);
                o.u("send_buffer_full", full_waits);
                if let Some(h) = added {
                    let out = o.key("added_latency_us");
                    let mut l = Obj::new(out);
                    l.u("samples", h.len());
                    if !h.is_empty() {
                        l.u("p50", h.value_at_quantile(0.5));
                        l.u("p99", h.value_at_quantile(0.99));
                        l.u("p999", h.value_at_quantile(0.999));
                        l.u("max", h.max());
                    }
                    l.end();
                }
            }),
        }
    }
}
