//! `dissonance proxy`: a decoding, recording, fault-injecting UDP relay. The shell
//! around the sans-IO core in `crate::net::proxy`: sockets, clock, signals, output.

use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;

use crate::capture::{Payload, PcapWriter, Transport, TsResolution};
use crate::dissect::locate::{FlowKey, Locator};
use crate::dissect::pipeline::Dissector;
use crate::net::proxy::counts::Counts;
use crate::net::proxy::fault::FaultKind;
use crate::net::proxy::{
    Dir, Injector, Lookup, NatTable, Outcome, Relay, Rule, ScopeMatcher, Transmit,
};
use crate::output::summary;
use crate::output::{Format, Printer};

use crate::output::View;

use crate::net::ops::{next_request, Exposition, Ops, Request};
use crate::net::Error;
use crate::output::log::{self, Field};

mod report;
use report::{finish, AddedLatency};

/// The options of [`run`] (the command line's, converted).
#[derive(Debug)]
pub struct Options {
    /// Address the clients send to (`:PORT` means 0.0.0.0:PORT).
    pub listen: String,
    /// The real server.
    pub upstream: String,
    /// Close a client's mapping after this much silence in both directions.
    pub idle: Duration,
    /// At most this many client mappings (one upstream socket each); `None`: the
    /// default, [`DEFAULT_MAX_MAPPINGS`] or half the open-file limit if that is lower.
    pub max_mappings: Option<usize>,
    /// `--tcp`: at most this many client connections at once (two descriptors each);
    /// `None`: [`DEFAULT_MAX_MAPPINGS`] or a quarter of the open-file limit if lower.
    pub max_connections: Option<usize>,
    /// Write every forwarded datagram, both directions, to this pcap file (client and
    /// server addresses, wall-clock timestamps).
    pub record: Option<PathBuf>,
    /// Stop after this many seconds.
    pub duration: Option<f64>,
    /// Print only the summary at the end, not every packet.
    pub summary: bool,
    /// Time each datagram inside the proxy, from the kernel's arrival stamp on its socket
    /// to the send call that passes it on, and print the percentiles per direction at
    /// exit. Off by default: the kernel stamps cost a few percent of throughput.
    pub measure_latency: bool,
    /// Also run the `check` rules live: findings go to stderr as they are found, the
    /// check report follows the counts at exit; exit status 1 on an error-level finding.
    pub check: bool,
    /// Relay TCP connections instead of UDP: one upstream connection per client
    /// connection, the byte stream unchanged; packets are found by --tcp-framing.
    pub tcp: bool,
    /// Seed of the fault injector: the same seed and traffic give the same faults.
    pub seed: u64,
    /// Drop this share of datagrams: `[SCOPE:]RATE`, e.g. `voice:5%`.
    pub drop: Vec<String>,
    /// Delay datagrams: `[SCOPE:]DURATION`, e.g. `down:40ms`.
    pub delay: Vec<String>,
    /// Add a random delay between 0 and this: `[SCOPE:]DURATION` (reorders, like netem).
    pub jitter: Vec<String>,
    /// Send an extra copy of this share of datagrams: `[SCOPE:]RATE`.
    pub duplicate: Vec<String>,
    /// Hold this share of datagrams back until the next one of the flow has passed
    /// (at most 50 ms): `[SCOPE:]RATE`.
    pub reorder: Vec<String>,
    /// Flip one byte inside the Dissonance packet of this share of datagrams: `[SCOPE:]RATE`.
    pub corrupt: Vec<String>,
    /// Gilbert-Elliott burst loss: `[SCOPE:]P,R` with P = chance to enter the lossy state
    /// and R = chance to leave it, per datagram (mean burst 1/R), e.g. `1%,30%`.
    pub burst_loss: Vec<String>,
    pub view: View,
    /// Serve /metrics, /healthz and /readyz over HTTP on this address.
    pub metrics: Option<SocketAddr>,
    /// On SIGTERM stop opening mappings for new clients but keep relaying for the
    /// existing ones this long, then exit (zero: at once).
    pub drain: Duration,
}

impl Options {
    fn rules(&self) -> Result<Vec<Rule>, Error> {
        let mut rules = Vec::new();
        for (flag, values) in [
            ("drop", &self.drop),
            ("delay", &self.delay),
            ("jitter", &self.jitter),
            ("duplicate", &self.duplicate),
            ("reorder", &self.reorder),
            ("corrupt", &self.corrupt),
            ("burst-loss", &self.burst_loss),
        ] {
            for v in values {
                rules.push(Rule::parse(flag, v)?);
            }
        }
        if rules.len() > 64 {
            return Err("at most 64 fault flags".into());
        }
        Ok(rules)
    }
}

fn resolve(what: &str, s: &str) -> Result<SocketAddr, Error> {
    // `:PORT` is every interface to listen on, this host to send to.
    let any = if what == "listen" {
        "0.0.0.0"
    } else {
        "127.0.0.1"
    };
    crate::sys::units::parse_addr(s, any).map_err(|e| format!("--{what} {e}").into())
}

pub fn run(args: Options) -> Result<i32, Error> {
    let rules = args.rules()?;
    let listen = resolve("listen", &args.listen)?;
    let upstream = resolve("upstream", &args.upstream)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if args.tcp {
        if !rules.is_empty() {
            return Err(
                "fault injection works on UDP datagrams only; drop --tcp or the fault flags".into(),
            );
        }
        if args.max_mappings.is_some() {
            return Err(
                "--max-mappings bounds the UDP relay; with --tcp use --max-connections".into(),
            );
        }
        if args.metrics.is_some() || !args.drain.is_zero() {
            return Err("--metrics and --drain work with the UDP relay only; drop --tcp".into());
        }
        return rt.block_on(super::tcp::serve(args, listen, upstream));
    }
    if args.max_connections.is_some() {
        return Err(
            "--max-connections bounds the TCP relay (--tcp); the UDP relay's is --max-mappings"
                .into(),
        );
    }
    rt.block_on(serve(args, rules, listen, upstream))
}

/// The `--record` pcap file, when asked for (UDP and TCP modes alike).
pub(super) fn open_record(
    path: Option<&std::path::Path>,
) -> Result<Option<PcapWriter<BufWriter<std::fs::File>>>, Error> {
    let Some(p) = path else { return Ok(None) };
    let f = std::fs::File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
    Ok(Some(PcapWriter::new(
        BufWriter::with_capacity(1 << 16, f),
        TsResolution::Microsecond,
    )?))
}

struct Upstream {
    /// Sent to by tokio; read by the main loop through [`Shell::ups_ready`].
    sock: UdpSocket,
    reported: bool,
}

/// Mappings a proxy keeps at most by default (each holds one socket).
pub const DEFAULT_MAX_MAPPINGS: usize = 4096;
/// When the table is full, a mapping silent this long (or `--idle` if shorter) may be
/// closed for a new client.
const EVICT_AFTER: Duration = Duration::from_secs(10);

/// Raises the soft open-file limit to the hard one where allowed; returns the soft limit
/// now in force (each mapping holds a socket).
fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
    }
    r.rlim_cur
}

/// The bound `--FLAG` gives, or its default: [`DEFAULT_MAX_MAPPINGS`], or half the
/// open-file limit over `fds_each` (descriptors per mapping or connection) if that is
/// lower. Above that budget it is taken but warned about (`max_mappings_high` or
/// `max_connections_high`). Shared by the UDP mappings and the TCP connections.
pub(super) fn fd_bound(flag: &str, given: Option<usize>, fds_each: u64) -> Result<usize, Error> {
    let nofile = raise_nofile();
    let fd_room = (nofile / 2 / fds_each).max(1) as usize;
    let key = flag.replace('-', "_");
    Ok(match given {
        Some(0) => return Err(format!("--{flag}: give at least 1").into()),
        Some(n) if n > fd_room => {
            log::warn(
                &format!("{key}_high"),
                &[(&key, Field::U(n as u64)), ("nofile", Field::U(nofile))],
                format_args!(
                    "proxy: warning: --{flag} {n} needs more than half the open-file limit ({nofile}); descriptors may run out first (counted as open failures)"
                ),
            );
            n
        }
        Some(n) => n,
        None => DEFAULT_MAX_MAPPINGS.min(fd_room),
    })
}

/// A datagram waiting for the next batch to clients.
struct Down {
    client: SocketAddr,
    data: Vec<u8>,
    /// Kernel arrival stamp, for `--measure-latency`.
    arrived: Option<i64>,
    /// (number, arrival time) when it is still to be observed once sent.
    seen: Option<(u64, i64)>,
}

/// Which way a datagram goes, and the client mapping it belongs to.
#[derive(Clone, Copy)]
struct Route {
    dir: Dir,
    slot: usize,
    client: SocketAddr,
}

struct Shell<W: Write> {
    start: Instant,
    wall0_ns: i64,
    listen: Arc<UdpSocket>,
    upstream: SocketAddr,
    nat: NatTable,
    relay: Relay,
    ups: Vec<Option<Upstream>>,
    /// Every upstream socket, watched as one (token = mapping slot).
    ups_ready: Arc<tokio::io::unix::AsyncFd<crate::net::mmsg::Epoll>>,
    /// Receive buffer for datagrams from upstream.
    up_buf: Vec<u8>,
    dissector: Dissector,
    printer: Option<Printer<W>>,
    matcher: ScopeMatcher,
    corrupt_locator: Option<Locator>,
    check: Option<crate::check::Live>,
    record: Option<PcapWriter<BufWriter<std::fs::File>>>,
    counts: Counts,
    number: u64,
    faults_logged: u64,
    io_error: Option<std::io::Error>,
    /// Datagrams for clients, sent together after each look at the upstream sockets and
    /// at the end of each turn of the event loop ([`Shell::flush_down`]): they all leave
    /// by the listening socket.
    down: Vec<Down>,
    down_batch: crate::net::mmsg::MultiSend,
    /// `--measure-latency`: sockets get arrival stamps, and `added` fills.
    measure_latency: bool,
    added: AddedLatency,
    /// Draining (SIGTERM with --drain): no mappings for new clients.
    draining: bool,
}

impl<W: Write> Shell<W> {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn wall_ns(&self) -> i64 {
        self.wall0_ns + self.start.elapsed().as_nanos() as i64
    }

    fn ends(&self, dir: Dir, client: SocketAddr) -> (SocketAddr, SocketAddr) {
        match dir {
            Dir::Up => (client, self.upstream),
            Dir::Down => (self.upstream, client),
        }
    }

    /// Opens the upstream socket of a new mapping; the main loop reads it.
    async fn open(&mut self, slot: usize, client: SocketAddr) -> std::io::Result<()> {
        let bind: SocketAddr = if self.upstream.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let sock = UdpSocket::bind(bind).await?;
        sock.connect(self.upstream).await?;
        if self.measure_latency {
            crate::net::mmsg::enable_rx_timestamps(std::os::fd::AsRawFd::as_raw_fd(&sock));
        }
        self.ups_ready
            .get_ref()
            .add(std::os::fd::AsRawFd::as_raw_fd(&sock), slot as u64)?;
        if self.ups.len() <= slot {
            self.ups.resize_with(slot + 1, || None);
        }
        self.ups[slot] = Some(Upstream {
            sock,
            reported: false,
        });
        self.counts.opened += 1;
        if self.counts.line() {
            log::info(
                "new_client",
                &[
                    ("client", Field::Str(&client)),
                    ("mapping", Field::U(slot as u64)),
                    ("active", Field::U(self.nat.len() as u64)),
                ],
                format_args!(
                    "proxy: new client {client} (mapping {slot}, {} active)",
                    self.nat.len()
                ),
            );
        }
        Ok(())
    }

    /// The slot for a datagram from `client`, opening (or refusing) a mapping; `None`:
    /// the datagram is dropped, counted and (throttled) logged.
    async fn slot_for(&mut self, client: SocketAddr) -> Option<usize> {
        let now = self.now();
        let slot = match self.nat.lookup(now, client) {
            Lookup::Known(s) => return Some(s),
            Lookup::New(s) => s,
            Lookup::Evicted(s, old) => {
                self.close(s);
                self.counts.evicted += 1;
                if self.counts.line() {
                    log::warn(
                        "mapping_evicted",
                        &[
                            ("client", Field::Str(&old.client)),
                            ("mapping", Field::U(s as u64)),
                            ("for", Field::Str(&client)),
                        ],
                        format_args!(
                            "proxy: mappings full (--max-mappings): client {} silent longest, mapping {s} closed for {client}",
                            old.client
                        ),
                    );
                }
                s
            }
            Lookup::Full => {
                self.counts.refused += 1;
                if self.counts.line() {
                    log::warn(
                        "client_refused",
                        &[("client", Field::Str(&client))],
                        format_args!(
                            "proxy: mappings full (--max-mappings), all recent: new client {client} refused"
                        ),
                    );
                }
                return None;
            }
        };
        if let Err(e) = self.open(slot, client).await {
            self.nat.remove(slot);
            self.counts.open_failed += 1;
            if self.counts.line() {
                log::warn(
                    "upstream_socket_error",
                    &[("client", Field::Str(&client)), ("error", Field::Str(&e))],
                    format_args!("proxy: cannot open an upstream socket for {client}: {e}"),
                );
            }
            return None;
        }
        Some(slot)
    }

    /// Closes the upstream socket of `slot` and forgets its queued datagrams.
    fn close(&mut self, slot: usize) {
        // Dropping the socket closes it, which takes it out of `ups_ready` too.
        self.ups.get_mut(slot).and_then(Option::take);
        self.relay.forget_slot(slot);
    }

    /// A send upstream failed (`on_send`: this datagram was not sent), or a receive
    /// reported an error. ECONNREFUSED either way means the ICMP for an earlier datagram
    /// came back: that one, counted as forwarded when the kernel took it, was refused,
    /// and counts as failed instead.
    fn upstream_error(&mut self, slot: usize, e: &std::io::Error, on_send: bool) {
        if on_send {
            self.counts.send_failed(e);
        }
        if e.kind() == std::io::ErrorKind::ConnectionRefused && self.counts.up > 0 {
            self.counts.up -= 1;
            self.counts.send_failed(e);
        } else if !on_send {
            self.counts.send_failed(e);
        }
        let client = self.nat.client(slot);
        if let Some(u) = self.ups.get_mut(slot).and_then(Option::as_mut) {
            if !u.reported {
                u.reported = true;
                let hint = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    " (nothing listens there: is the server running, is --upstream right?)"
                } else {
                    ""
                };
                let client = client.map(|c| c.to_string()).unwrap_or_default();
                log::warn(
                    "upstream_unreachable",
                    &[
                        ("upstream", Field::Str(&self.upstream)),
                        ("client", Field::Str(&client)),
                        ("error", Field::Str(e)),
                    ],
                    format_args!(
                        "proxy: upstream {} unreachable for client {client}: {e}{hint}",
                        self.upstream,
                    ),
                );
            }
        }
    }

    /// A datagram arrived from a client (`Up`) or from upstream (`Down`).
    /// `arrived`: the kernel's arrival time of the datagram (ns since the Unix epoch).
    async fn arrive(&mut self, route: Route, data: &[u8], arrived: Option<i64>) {
        let Route { dir, slot, client } = route;
        self.number += 1;
        let (src, dst) = self.ends(dir, client);
        let d = Payload {
            frame_number: self.number,
            ts_ns: self.wall_ns(),
            src,
            dst,
            transport: Transport::Udp,
            data,
            truncated: false,
        };
        let plan = if self.relay.injector.is_empty() {
            Default::default()
        } else {
            let bits = self.matcher.matches(&d);
            let span = self.corrupt_locator.as_mut().and_then(|l| {
                let mut span = None;
                let key = FlowKey {
                    src,
                    dst,
                    tcp: false,
                };
                l.locate(key, data, |f| {
                    if span.is_none() {
                        span = Some((f.offset, f.offset + f.bytes.len()));
                    }
                });
                span
            });
            self.relay
                .injector
                .decide(dir, data.len(), span, |i| bits >> i & 1 == 1)
        };
        for (rule, detail) in &plan.applied {
            self.faults_logged += 1;
            let spec = &self.relay.injector.rules()[*rule].spec;
            log::info(
                "fault",
                &[
                    ("direction", Field::Str(&dir.name())),
                    ("src", Field::Str(&src)),
                    ("dst", Field::Str(&dst)),
                    ("datagram", Field::U(self.number)),
                    ("detail", Field::Str(detail)),
                    ("rule", Field::Str(spec)),
                ],
                format_args!(
                    "fault: {} {src} -> {dst} datagram {}: {detail} ({spec})",
                    dir.name(),
                    self.number,
                ),
            );
        }
        let now = self.now();
        let forward = self.relay.handle(now, dir, slot, data, &plan) == Outcome::Forward;
        // Decoded and checked after it is on its way: what the proxy observes never
        // delays what it forwards. A datagram for a client leaves with the next batch,
        // so it is observed once that is sent ([`Shell::flush_down`]).
        let seen = (d.frame_number, d.ts_ns);
        let deferred = forward && dir == Dir::Down;
        if forward {
            self.send(route, data, arrived, deferred.then_some(seen))
                .await;
        }
        self.drain().await;
        if !deferred {
            self.observe(seen, src, dst, data);
        }
    }

    /// Runs the live check and the decoder/printer on a datagram that arrived as
    /// number `seen.0` at `seen.1` (ns since the Unix epoch).
    fn observe(&mut self, seen: (u64, i64), src: SocketAddr, dst: SocketAddr, data: &[u8]) {
        let (number, ts_ns) = seen;
        if let Some(live) = &mut self.check {
            live.push(&Payload {
                frame_number: number,
                ts_ns,
                src,
                dst,
                transport: Transport::Udp,
                data,
                truncated: false,
            });
            live.drain();
        }
        if self.io_error.is_none() {
            let d = Payload {
                frame_number: number,
                ts_ns,
                src,
                dst,
                transport: Transport::Udp,
                data,
                truncated: false,
            };
            if let Err(e) = self.dissector.push(&d, self.printer.as_mut()) {
                self.io_error = Some(e);
            }
        }
    }

    /// Reads what a mapping's upstream socket holds (bounded), passing it to the client;
    /// false when it may hold more.
    async fn read_upstream(&mut self, slot: usize) -> bool {
        let mut buf = std::mem::take(&mut self.up_buf);
        let mut drained = false;
        for _ in 0..64 {
            let Some(u) = self.ups.get(slot).and_then(Option::as_ref) else {
                drained = true;
                break;
            };
            let fd = std::os::fd::AsRawFd::as_raw_fd(&u.sock);
            let got = if self.measure_latency {
                crate::net::mmsg::recv_stamped(fd, &mut buf).map(|(n, _, at)| (n, at))
            } else {
                crate::net::mmsg::recv_now(fd, &mut buf).map(|n| (n, None))
            };
            match got {
                Ok((n, arrived)) => {
                    let now = self.now();
                    if let Some(client) = self.nat.touch(now, slot) {
                        let route = Route {
                            dir: Dir::Down,
                            slot,
                            client,
                        };
                        self.arrive(route, &buf[..n], arrived).await;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // An ICMP error for an earlier datagram: reported, and consumed by recv.
                Err(e) => self.upstream_error(slot, &e, false),
            }
        }
        self.up_buf = buf;
        drained
    }

    /// Reads every upstream socket that has data; true when one may hold more (or more
    /// had data than one look reports), false when all that had data were drained.
    async fn upstream_round(&mut self, tokens: &mut Vec<u64>) -> std::io::Result<bool> {
        self.ups_ready.get_ref().ready(tokens)?;
        let mut more = tokens.len() >= crate::net::mmsg::EPOLL_EVENTS;
        for &slot in tokens.iter() {
            more |= !self.read_upstream(slot as usize).await;
        }
        // Sent now, not at the end of the turn: a turn that works through a backlog can
        // take hundreds of µs, and the answers read early in it waited all of that (p99
        // 600 µs from read to send, measured inside the proxy, against ~30 µs sending
        // here). Once per round rather than per socket keeps the batches large under load.
        if !self.down.is_empty() {
            self.flush_down();
        }
        Ok(more)
    }

    /// Sends everything the core has due now.
    async fn drain(&mut self) {
        let now = self.now();
        while let Some(Transmit { dir, slot, data }) = self.relay.poll_transmit(now) {
            if let Some(client) = self.nat.client(slot) {
                // Held back on purpose by a fault: not counted as the proxy's latency.
                self.send(Route { dir, slot, client }, &data, None, None)
                    .await;
            }
        }
    }

    /// `seen`: for a datagram for a client, observe it once it is sent.
    async fn send(
        &mut self,
        route: Route,
        data: &[u8],
        arrived: Option<i64>,
        seen: Option<(u64, i64)>,
    ) {
        let Route { dir, slot, client } = route;
        let handed = arrived.map(|_| crate::net::socket::wall_ns());
        let result = match dir {
            Dir::Up => match self.ups.get(slot).and_then(Option::as_ref) {
                Some(u) => u.sock.send(data).await,
                None => return,
            },
            Dir::Down => {
                self.down.push(Down {
                    client,
                    data: data.to_vec(),
                    arrived,
                    seen,
                });
                return;
            }
        };
        if let Err(e) = result {
            self.upstream_error(slot, &e, true);
            return;
        }
        self.sent(dir, client, data);
        self.added.record(Dir::Up, arrived, handed);
    }

    /// Counts and records a datagram that went out.
    fn sent(&mut self, dir: Dir, client: SocketAddr, data: &[u8]) {
        match dir {
            Dir::Up => self.counts.up += 1,
            Dir::Down => self.counts.down += 1,
        }
        let (src, dst) = self.ends(dir, client);
        let ts = self.wall_ns();
        if let Some(w) = &mut self.record {
            match w.write_udp(ts, src, dst, data) {
                Ok(()) => self.counts.recorded += 1,
                Err(e) => {
                    if self.counts.record_errors == 0 {
                        log::warn(
                            "record_error",
                            &[("error", Field::Str(&e))],
                            format_args!("proxy: writing the --record file failed: {e}"),
                        );
                    }
                    self.counts.record_errors += 1;
                }
            }
        }
    }

    /// Sends the datagrams queued for clients, up to [`crate::net::mmsg::SEND_BATCH`] per
    /// sendmmsg(2): one system call per datagram was a third of the proxy's time under
    /// load. Bounded: every round sends or discards at least one datagram.
    fn flush_down(&mut self) {
        let listen = self.listen.clone();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&*listen);
        let mut down = std::mem::take(&mut self.down);
        let mut done = 0;
        while done < down.len() {
            let n = self
                .down_batch
                .fill(down[done..].iter().map(|d| (d.client, &d.data[..])));
            let batch = &mut self.down_batch;
            let handed = self.measure_latency.then(crate::net::socket::wall_ns);
            let r = listen.try_io(tokio::io::Interest::WRITABLE, || batch.send(fd, n));
            let k = match r {
                Ok(k) => k.clamp(1, n),
                Err(e) => {
                    // A full send buffer: wait for room rather than lose datagrams.
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && crate::net::mmsg::wait_writable(fd, 100)
                    {
                        continue;
                    }
                    // The first datagram was refused (or found no room): skip it.
                    self.down_error(down[done].client, &e);
                    self.observe_down(&down[done]);
                    done += 1;
                    continue;
                }
            };
            for d in &down[done..done + k] {
                self.sent(Dir::Down, d.client, &d.data);
                self.added.record(Dir::Down, d.arrived, handed);
            }
            for d in &down[done..done + k] {
                self.observe_down(d);
            }
            done += k;
        }
        down.clear();
        self.down = down;
    }

    fn observe_down(&mut self, d: &Down) {
        if let Some(seen) = d.seen {
            self.observe(seen, self.upstream, d.client, &d.data);
        }
    }

    fn down_error(&mut self, client: SocketAddr, e: &std::io::Error) {
        self.counts.send_failed(e);
        log::warn(
            "send_error",
            &[("client", Field::Str(&client)), ("error", Field::Str(e))],
            format_args!("proxy: cannot send to client {client}: {e}"),
        );
    }

    fn expire(&mut self) {
        let now = self.now();
        for (slot, m) in self.nat.expire(now) {
            self.close(slot);
            self.counts.expired += 1;
            if self.counts.line() {
                let idle = self.nat.idle_timeout();
                log::info(
                    "mapping_expired",
                    &[
                        ("client", Field::Str(&m.client)),
                        ("mapping", Field::U(slot as u64)),
                        ("idle_s", Field::F(idle.as_secs_f64())),
                    ],
                    format_args!(
                        "proxy: client {} idle for {idle:?}, mapping {slot} closed",
                        m.client
                    ),
                );
            }
        }
        self.counts.new_second();
    }
}

async fn serve(
    args: Options,
    rules: Vec<Rule>,
    listen: SocketAddr,
    upstream: SocketAddr,
) -> Result<i32, Error> {
    let sock = UdpSocket::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local = sock.local_addr()?;
    // Every mapping holds a socket: stay well under the open-file limit.
    let max_mappings = fd_bound("max-mappings", args.max_mappings, 1)?;
    // Every client's datagrams, both ways, pass this one socket: room for them while
    // the proxy's thread waits for a CPU (a 19 ms wait overflowed the default buffer).
    crate::net::socket::set_buffers(&sock, 16 << 20);
    if args.measure_latency {
        crate::net::mmsg::enable_rx_timestamps(std::os::fd::AsRawFd::as_raw_fd(&sock));
    }
    let record = open_record(args.record.as_deref())?;
    let has_corrupt = rules
        .iter()
        .any(|r| matches!(r.kind, FaultKind::Corrupt(_)));
    let stdout = std::io::stdout();
    let mut printer = Printer::new(args.view.format, stdout.lock(), args.view.color, true);
    printer.json_events = args.view.events;
    let mut shell = Shell {
        start: Instant::now(),
        wall0_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0),
        listen: Arc::new(sock),
        upstream,
        nat: NatTable::bounded(args.idle, max_mappings, EVICT_AFTER.min(args.idle)),
        matcher: ScopeMatcher::new(&rules, args.view.payload),
        relay: Relay::new(Injector::new(rules, args.seed)),
        ups: Vec::new(),
        // SAFETY: the Epoll owns its descriptor and returns that same one until it is
        // dropped with the AsyncFd.
        ups_ready: Arc::new(
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    crate::net::mmsg::Epoll::new()?,
                    tokio::io::Interest::READABLE,
                )
            }
            .map_err(|e| e.into_parts().1)?,
        ),
        up_buf: vec![0; 65536],
        dissector: args.view.dissector(),
        printer: (!args.summary).then_some(printer),
        corrupt_locator: has_corrupt.then(|| Locator::new(args.view.payload)),
        check: args
            .check
            .then(|| crate::check::Live::new(args.view.payload)),
        record,
        counts: Counts::default(),
        number: 0,
        faults_logged: 0,
        io_error: None,
        down: Vec::new(),
        down_batch: crate::net::mmsg::MultiSend::new(),
        measure_latency: args.measure_latency,
        added: AddedLatency::new(),
        draining: false,
    };
    log::info(
        "listening",
        &[
            ("addr", Field::Str(&local)),
            ("upstream", Field::Str(&upstream)),
        ],
        format_args!("proxy: listening on {local}, upstream {upstream}"),
    );
    let mut ops = match args.metrics {
        Some(addr) => {
            let o = Ops::start(addr).await?;
            log::info(
                "metrics",
                &[("addr", Field::Str(&o.local))],
                format_args!("proxy: metrics on http://{}/metrics", o.local),
            );
            Some(o)
        }
        None => None,
    };
    // Armed by the first SIGTERM when --drain is set.
    let drain_end = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(drain_end);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let deadline = args
        .duration
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
    let mut expiry =
        tokio::time::interval(Duration::from_secs(1).min(args.idle.max(Duration::from_millis(10))));
    let mut batch = if args.measure_latency {
        crate::net::mmsg::MultiRecv::with_stamps()
    } else {
        crate::net::mmsg::MultiRecv::default()
    };
    let listen_sock = shell.listen.clone();
    let ups_ready = shell.ups_ready.clone();
    let mut tokens = Vec::new();
    let listen_fd = std::os::fd::AsRawFd::as_raw_fd(&*listen_sock);
    // Signal streams and sleeps are made once and re-armed: building them anew on every
    // datagram (a signal registration and two timer entries each) cost throughput.
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let end = tokio::time::sleep_until(deadline.unwrap_or(far));
    tokio::pin!(end);
    let timer = tokio::time::sleep_until(far);
    tokio::pin!(timer);
    let mut armed = far;
    let stop = loop {
        let due = shell
            .relay
            .poll_timeout()
            .map(|t| tokio::time::Instant::from_std(shell.start + t))
            .unwrap_or(far);
        if due != armed {
            timer.as_mut().reset(due);
            armed = due;
        }
        tokio::select! {
            r = listen_sock.readable() => {
                if let Err(e) = r {
                    receive_error(local, &e);
                    continue;
                }
                // Everything queued, up to a few batches, one recvmmsg(2) per batch.
                for _ in 0..8 {
                    let got = listen_sock.try_io(tokio::io::Interest::READABLE, || {
                        batch.recv(listen_fd)
                    });
                    let n = match got {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        // ICMP errors from clients that went away land here on Linux; not fatal.
                        Err(e) => {
                            receive_error(local, &e);
                            break;
                        }
                    };
                    for i in 0..n {
                        let (data, client) = batch.get(i);
                        if shell.draining && !shell.nat.contains(client) {
                            shell.counts.refused_draining += 1;
                            continue;
                        }
                        let Some(slot) = shell.slot_for(client).await else {
                            continue;
                        };
                        let route = Route { dir: Dir::Up, slot, client };
                        shell.arrive(route, data, batch.stamp(i)).await;
                    }
                    if n < crate::net::mmsg::BATCH {
                        break;
                    }
                    // Working through a backlog: the server's answers to the first
                    // batches are not left waiting for the whole of it (checking more
                    // often than once a batch cost throughput).
                    if let Err(e) = shell.upstream_round(&mut tokens).await {
                        upstream_wait_error(&e);
                    }
                }
            },
            r = ups_ready.readable() => {
                let mut guard = match r {
                    Ok(g) => g,
                    Err(e) => {
                        upstream_wait_error(&e);
                        continue;
                    }
                };
                // Every upstream socket with data, until all are drained (bounded per
                // turn, so the listening socket gets its turn too). Drained, the set
                // needs no second look: a datagram arriving later wakes it again.
                for _ in 0..8 {
                    match shell.upstream_round(&mut tokens).await {
                        Ok(true) => {}
                        Ok(false) => {
                            guard.clear_ready();
                            break;
                        }
                        Err(e) => {
                            upstream_wait_error(&e);
                            break;
                        }
                    }
                }
            }
            _ = &mut timer => {
                // Fired: re-arm from the core's next timeout on the next turn.
                armed = far;
                timer.as_mut().reset(far);
                shell.drain().await
            }
            _ = expiry.tick() => shell.expire(),
            req = next_request(&mut ops) => shell.answer(req),
            _ = int.recv() => break "interrupted",
            _ = term.recv() => {
                // A second SIGTERM ends the drain early.
                if shell.draining || args.drain.is_zero() {
                    break "terminated";
                }
                shell.draining = true;
                if let Some(o) = &ops {
                    o.not_ready();
                }
                drain_end.as_mut().reset(tokio::time::Instant::now() + args.drain);
                log::info(
                    "draining",
                    &[
                        ("drain_s", Field::F(args.drain.as_secs_f64())),
                        ("mappings", Field::U(shell.nat.len() as u64)),
                    ],
                    format_args!(
                        "proxy: draining for {:?}: no new clients, {} mappings go on",
                        args.drain,
                        shell.nat.len()
                    ),
                );
            }
            _ = &mut drain_end, if shell.draining => break "drained",
            _ = &mut end => break "--duration reached",
        }
        shell.flush_down();
        if let Some(e) = shell.io_error.take() {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                // Output closed (`| head`): keep relaying, stop printing, and say so once.
                crate::output::pipe::note_log_closed("proxy");
                shell.printer = None;
            } else {
                log::warn(
                    "output_error",
                    &[("error", Field::Str(&e))],
                    format_args!(
                        "proxy: writing the output failed: {e}; printing stops, relaying goes on"
                    ),
                );
                shell.printer = None;
            }
        }
    };
    finish(shell, stop, args.summary, args.view.format)
}

fn upstream_wait_error(e: &std::io::Error) {
    log::warn(
        "upstream_wait_error",
        &[("error", Field::Str(e))],
        format_args!("proxy: waiting for upstream data: {e}"),
    );
}

fn receive_error(local: SocketAddr, e: &std::io::Error) {
    log::warn(
        "receive_error",
        &[("error", Field::Str(e))],
        format_args!("proxy: receive on {local}: {e}"),
    );
}
