//! `--tcp`: the byte streams are relayed by one pump task per direction (unchanged, as
//! fast as they come); copies go to the main loop, which frames, decodes, prints and
//! records them.

use crate::output::log::{self, Field};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::capture::{Payload, StreamFramer, TcpFlags, TcpFraming, Transport};
use crate::net::Error;
use crate::output::{summary, Printer};

use super::runtime::{open_record, Options};
use super::Dir;

enum Event {
    Open(u64, SocketAddr),
    Data(u64, Dir, Vec<u8>),
    Closed(u64, Dir),
    /// The upstream connection failed: the client connection is gone.
    Failed,
}

struct Conn {
    client: SocketAddr,
    framers: [StreamFramer; 2],
    /// Next sequence number per direction for the record.
    seq: [u32; 2],
    /// Directions whose pump still runs (each holds half of both sockets).
    open: u8,
}

fn ix(dir: Dir) -> usize {
    match dir {
        Dir::Up => 0,
        Dir::Down => 1,
    }
}

async fn pump(
    id: u64,
    dir: Dir,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    tx: mpsc::UnboundedSender<Event>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                if tx.send(Event::Data(id, dir, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
    let _ = tx.send(Event::Closed(id, dir));
}

pub(super) async fn serve(
    args: Options,
    listen: SocketAddr,
    upstream: SocketAddr,
) -> Result<i32, Error> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen} (tcp): {e}"))?;
    let local = listener.local_addr()?;
    // Each connection holds two descriptors (client and upstream).
    let max_connections = super::runtime::fd_bound("max-connections", args.max_connections, 2)?;
    let mut record = open_record(args.record.as_deref())?;
    let stdout = std::io::stdout();
    let mut printer = Printer::new(args.view.format, stdout.lock(), args.view.color, true);
    printer.json_events = args.view.events;
    let mut printer = (!args.summary).then_some(printer);
    let mut dissector = args.view.dissector();
    let framing: TcpFraming = args.view.tcp_framing;
    let mut check = args
        .check
        .then(|| crate::check::Live::new(args.view.payload));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut conns: HashMap<u64, Conn> = HashMap::new();
    let mut next_id = 0u64;
    let (mut segments, mut recorded, mut frames, mut opened) = (0u64, 0u64, 0u64, 0u64);
    // Connections holding descriptors: accepted, until both pumps end or the upstream
    // connect fails.
    let mut live = 0usize;
    let mut refused = RefusedLog::default();
    let (mut accept_errors, mut accept_warned): (u64, Option<Instant>) = (0, None);
    let wall0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let start = Instant::now();
    let wall = || wall0 + start.elapsed().as_nanos() as i64;
    log::info(
        "listening",
        &[
            ("addr", Field::Str(&local)),
            ("upstream", Field::Str(&upstream)),
            ("transport", Field::Str(&"tcp")),
        ],
        format_args!("proxy: listening on {local} (tcp), upstream {upstream}"),
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
    let deadline = args
        .duration
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)))
        .unwrap_or(far);
    let stop = loop {
        tokio::select! {
            r = listener.accept() => {
                let (client, addr) = match r {
                    Ok(v) => v,
                    Err(e) => {
                        // Out of descriptors (EMFILE, ENFILE) leaves the listener readable:
                        // retrying at once would spin. Counted, a line a second, a short pause.
                        accept_errors += 1;
                        if accept_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            accept_warned = Some(Instant::now());
                            log::warn(
                                "accept_failed",
                                &[("error", Field::Str(&e)), ("accept_errors", Field::U(accept_errors))],
                                format_args!(
                                    "proxy: accepting a connection failed: {e} ({accept_errors} in all; \
                                     retrying in 50 ms, at most one line a second)"
                                ),
                            );
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if live >= max_connections {
                    // Accepted and closed at once: the backlog keeps moving and the
                    // client sees the close instead of a hanging connect.
                    drop(client);
                    refused.refuse(addr, max_connections);
                    continue;
                }
                live += 1;
                next_id += 1;
                let id = next_id;
                let tx = tx.clone();
                // Connecting may take a while: not in the main loop.
                tokio::spawn(async move {
                    match TcpStream::connect(upstream).await {
                        Ok(server) => {
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            let _ = tx.send(Event::Open(id, addr));
                            let (cr, cw) = client.into_split();
                            let (sr, sw) = server.into_split();
                            tokio::spawn(pump(id, Dir::Up, cr, sw, tx.clone()));
                            tokio::spawn(pump(id, Dir::Down, sr, cw, tx));
                        }
                        Err(e) => {
                            let _ = tx.send(Event::Failed);
                            log::warn(
                            "upstream_unreachable",
                            &[
                                ("upstream", Field::Str(&upstream)),
                                ("client", Field::Str(&addr)),
                                ("error", Field::Str(&e)),
                            ],
                            format_args!(
                                "proxy: upstream {upstream} unreachable for client {addr}: {e} \
                                 (is the server running, is --upstream right?)"
                            ),
                        )},
                    }
                });
            }
            Some(ev) = rx.recv() => match ev {
                Event::Open(id, client) => {
                    opened += 1;
                    log::info(
                        "new_client",
                        &[("client", Field::Str(&client)), ("connection", Field::U(id))],
                        format_args!("proxy: new client {client} (tcp connection {id})"),
                    );
                    conns.insert(id, Conn {
                        client,
                        framers: [StreamFramer::new(framing, 1 << 20), StreamFramer::new(framing, 1 << 20)],
                        seq: [1, 1],
                        open: 2,
                    });
                    if let Some(w) = &mut record {
                        let syn = TcpFlags { syn: true, ..TcpFlags::default() };
                        let ts = wall();
                        let _ = w.write_tcp(ts, client, upstream, 0, syn, &[]);
                        let _ = w.write_tcp(ts, upstream, client, 0, syn, &[]);
                    }
                }
                Event::Data(id, dir, data) => {
                    let Some(c) = conns.get_mut(&id) else { continue };
                    segments += 1;
                    let (src, dst) = match dir {
                        Dir::Up => (c.client, upstream),
                        Dir::Down => (upstream, c.client),
                    };
                    let ts = wall();
                    if let Some(w) = &mut record {
                        let psh = TcpFlags { psh: true, ..TcpFlags::default() };
                        if w.write_tcp(ts, src, dst, c.seq[ix(dir)], psh, &data).is_ok() {
                            recorded += 1;
                        }
                    }
                    c.seq[ix(dir)] = c.seq[ix(dir)].wrapping_add(data.len() as u32);
                    let framer = &mut c.framers[ix(dir)];
                    let mut io = Ok(());
                    let r = framer.push(&data, |frame| {
                        frames += 1;
                        let d = Payload {
                            frame_number: frames,
                            ts_ns: ts,
                            src,
                            dst,
                            transport: Transport::Tcp,
                            data: frame,
                            truncated: false,
                        };
                        if let Some(live) = &mut check {
                            live.push(&Payload {
                                frame_number: frames, ts_ns: ts, src, dst,
                                transport: Transport::Tcp, data: frame, truncated: false,
                            });
                            live.drain();
                        }
                        if io.is_ok() {
                            io = dissector.push(&d, printer.as_mut());
                        }
                    });
                    if let Err(e) = r {
                        log::warn(
                            "framing_error",
                            &[("src", Field::Str(&src)), ("dst", Field::Str(&dst)), ("error", Field::Str(&e))],
                            format_args!("proxy: {src} -> {dst}: {e}; decoding of this direction stops (bytes still relayed)"),
                        );
                    }
                    if let Err(e) = io {
                        // Output closed or failing: relaying goes on, printing stops.
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            crate::output::pipe::note_log_closed("proxy");
                        } else {
                            eprintln!("proxy: writing the output failed: {e}; printing stops, relaying goes on");
                        }
                        printer = None;
                    }
                }
                Event::Closed(id, dir) => {
                    if let Some(c) = conns.get_mut(&id) {
                        let (src, dst) = match dir {
                            Dir::Up => (c.client, upstream),
                            Dir::Down => (upstream, c.client),
                        };
                        if let Some(w) = &mut record {
                            let fin = TcpFlags { fin: true, ..TcpFlags::default() };
                            let _ = w.write_tcp(wall(), src, dst, c.seq[ix(dir)], fin, &[]);
                        }
                        c.seq[ix(dir)] = 0;
                        c.open -= 1;
                        if c.open == 0 {
                            conns.remove(&id);
                            live -= 1;
                        }
                    }
                }
                Event::Failed => live -= 1,
            },
            _ = tokio::signal::ctrl_c() => break "interrupted",
            _ = term.recv() => break "terminated",
            _ = tokio::time::sleep_until(deadline) => break "--duration reached",
        }
    };
    if let Some(mut p) = printer.take() {
        let _ = p.finish();
    }
    if let Some(w) = &mut record {
        if let Err(e) = w.flush() {
            log::warn(
                "record_error",
                &[("error", Field::Str(&e))],
                format_args!("proxy: flushing the --record file failed: {e}"),
            );
        }
    }
    if args.summary {
        // Not print!: a closed stdout must not panic (the counts below go to stderr).
        let _ = crate::output::pipe::print(&summary::render(&dissector.tracker, &dissector.totals));
    }
    let t = &dissector.totals;
    if log::format() == log::LogFormat::Ndjson {
        log::info(
            "stopped",
            &[
                ("reason", Field::Str(&stop)),
                ("segments", Field::U(segments)),
                ("recorded", Field::U(recorded)),
                ("frames", Field::U(frames)),
                ("packets", Field::U(t.packets)),
                ("malformed", Field::U(t.malformed)),
                ("not_dissonance", Field::U(t.not_dissonance)),
                ("connections", Field::U(opened)),
                ("refused_connections", Field::U(refused.total)),
                ("max_connections", Field::U(max_connections as u64)),
                ("accept_errors", Field::U(accept_errors)),
            ],
            format_args!("proxy: stopped ({stop})"),
        );
    } else {
        eprintln!("proxy: stopped ({stop})");
        eprintln!("forwarded: {segments} segments");
        if record.is_some() {
            eprintln!("recorded: {recorded}");
        }
        eprintln!(
            "received: {frames} frames, {} Dissonance packets, {} malformed, {} not Dissonance",
            t.packets, t.malformed, t.not_dissonance
        );
        eprintln!(
            "clients: {opened} connections, {} refused (--max-connections)",
            refused.total
        );
        if accept_errors > 0 {
            eprintln!("accept errors: {accept_errors}");
        }
    }
    if let Some(live) = check {
        let (report, code) = live.finish();
        eprint!("{report}");
        return Ok(code);
    }
    Ok(0)
}

/// Connections refused at `--max-connections`: counted, and logged at most once a
/// second (a flood of connections must not become a flood of lines).
#[derive(Default)]
struct RefusedLog {
    total: u64,
    /// Refused since the last line.
    unlogged: u64,
    last_line: Option<Instant>,
}

impl RefusedLog {
    fn refuse(&mut self, client: SocketAddr, max: usize) {
        self.total += 1;
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_line
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_line = Some(now);
        log::warn(
            "connection_refused",
            &[
                ("client", Field::Str(&client)),
                ("count", Field::U(self.unlogged)),
                ("refused_connections", Field::U(self.total)),
            ],
            format_args!(
                "proxy: connections full (--max-connections {max}): client {client} refused \
                 ({} since the last such line, {} in all; at most one line a second)",
                self.unlogged, self.total
            ),
        );
        self.unlogged = 0;
    }
}
