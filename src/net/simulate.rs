//! `dissonance simulate`: a load generator. N client cores ([`Client`]) in one process,
//! each on its own UDP socket, K of them talking real Opus frames into their room.

use crate::output::log::{self, Field};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::codec::{Codec, CodecSettings};
use crate::net::client::audio::{encode_opus, read_wav_48k, FRAME_MS};
use crate::net::client::{Client, Event, Target};
use tokio::net::UdpSocket;

use crate::net::Error;

/// The options of [`run`] (the command line's, converted).
#[derive(Debug)]
pub struct Options {
    /// Server address (`dissonance serve --listen ADDR`).
    pub server: SocketAddr,
    /// Number of clients, each on its own UDP socket.
    pub clients: usize,
    /// How many of them talk (clients 0..K).
    pub speakers: usize,
    /// Number of rooms (client i listens to room-(i mod R)).
    pub rooms: usize,
    /// Seconds of speech (after every client has joined).
    pub duration: f64,
    /// The speech to loop (48 kHz WAV); default: a built-in voiced tone.
    pub wav: Option<PathBuf>,
    /// Opus frame duration in ms (10, 20, 40, 60).
    pub frame_ms: u32,
    /// Opus bitrate in bit/s.
    pub bitrate: i32,
    /// Append a send timestamp to each frame (recognised only by the simulator) and
    /// report latency percentiles.
    pub measure_latency: bool,
    /// Print the summary as one JSON object (per-second lines stay text on stderr).
    pub json: bool,
    /// Give up when not every client has joined after this many seconds.
    pub join_timeout: f64,
}

/// Marks a frame as ours: [opus][u64 send time in ns since start][MARK].
const MARK: &[u8; 4] = b"dsim";

#[derive(Debug, Default, Clone)]
struct Second {
    sent: u64,
    expected: u64,
    received: u64,
    latency_us: Vec<u32>,
}

#[derive(Debug, Default)]
struct Shared {
    full: usize,
    /// Clients that have seen their own ClientState echoed by the server.
    self_seen: usize,
    go: Option<Duration>,
    seconds: Vec<Second>,
    unmarked: u64,
    /// Frames speakers skipped because they were more than a frame late.
    skipped: u64,
    dropped: u64,
    errors: u64,
    /// Per speaker: (first wire sequence number, unwrapped, of a second; that second),
    /// so a receiver counts a frame in the second it was sent, measured or not.
    marks: Vec<Vec<(u64, usize)>>,
    /// Per speaker: frames sent with a sequence number so far.
    seqs: Vec<u64>,
}

impl Shared {
    /// The second speaker `sp` sent its frame with wire sequence number `seq` in, if the
    /// frame is one of this run's.
    fn sent_in(&self, sp: usize, seq: u16) -> Option<usize> {
        let count = *self.seqs.get(sp)?;
        let latest = count.checked_sub(1)?;
        // Unwrap against the latest sent: a frame in flight is never 32768 frames old.
        let back = (latest as u16).wrapping_sub(seq) as u64;
        let unwrapped = latest.checked_sub(back)?;
        let marks = &self.marks[sp];
        let i = marks.partition_point(|&(first, _)| first <= unwrapped);
        Some(marks.get(i.checked_sub(1)?)?.1)
    }

    fn second(&mut self, i: usize) -> &mut Second {
        if self.seconds.len() <= i {
            self.seconds.resize(i + 1, Second::default());
        }
        &mut self.seconds[i]
    }
}

/// The `p` quantile in ms; `None` without samples (then it is left out, never NaN).
fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    percentile_us(sorted, p).map(|us| us as f64 / 1000.0)
}

/// The same in seconds, for the JSON (`*_s`), from the µs without a detour through ms.
fn percentile_s(sorted: &[u32], p: f64) -> Option<f64> {
    percentile_us(sorted, p).map(|us| us as f64 / 1e6)
}

fn percentile_us(sorted: &[u32], p: f64) -> Option<u32> {
    let last = sorted.len().checked_sub(1)?;
    let i = (last as f64 * p).round() as usize;
    Some(sorted[i.min(last)])
}

/// Client `sim-I`'s index I, when it is one of the `n` simulated clients (others on the
/// same server are not counted).
fn sim_index(name: &str, n: usize) -> Option<usize> {
    let i: usize = name.strip_prefix("sim-")?.parse().ok()?;
    (i < n && name == format!("sim-{i}")).then_some(i)
}

/// A voiced sound with a wandering pitch, enough for Opus to code as speech.
fn tone(seconds: f64) -> Vec<f32> {
    let mut phase = 0.0f32;
    (0..(seconds * 48000.0) as usize)
        .map(|i| {
            let t = i as f32 / 48000.0;
            let f = 140.0 + 40.0 * (t * 3.0).sin();
            phase += 2.0 * std::f32::consts::PI * f / 48000.0;
            0.3 * (phase.sin() + 0.5 * (2.0 * phase).sin())
        })
        .collect()
}

pub fn run(args: Options) -> Result<i32, Error> {
    if args.clients == 0 || args.rooms == 0 || args.speakers > args.clients {
        return Err("need --clients ≥ 1, --rooms ≥ 1 and --speakers ≤ --clients".into());
    }
    if !FRAME_MS.contains(&args.frame_ms) {
        return Err(format!("--frame-ms {}: use 10, 20, 40 or 60", args.frame_ms).into());
    }
    if !(args.duration > 0.0 && args.duration.is_finite() && args.duration <= 3600.0) {
        return Err("--duration must be between 0 and 3600 seconds".into());
    }
    let pcm = match &args.wav {
        Some(p) => read_wav_48k(p)?,
        None => tone(4.0),
    };
    let frames = encode_opus(&pcm, args.frame_ms, args.bitrate)?;
    if frames.is_empty() {
        return Err("the WAV holds no samples".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run_async(args, Rc::new(frames)))
}

async fn run_async(args: Options, frames: Rc<Vec<Vec<u8>>>) -> Result<i32, Error> {
    let shared = Rc::new(RefCell::new(Shared {
        marks: vec![Vec::new(); args.speakers],
        seqs: vec![0; args.speakers],
        ..Shared::default()
    }));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let bind: SocketAddr = if args.server.is_ipv4() {
            "127.0.0.1:0".parse()?
        } else {
            "[::1]:0".parse()?
        };
        let sock = UdpSocket::bind(bind).await?;
        sock.connect(args.server).await?;
        // A newcomer gets one ClientState per client in a burst, and the plain UDP
        // transport does not retransmit: room for a few thousand datagrams.
        set_rcvbuf(&sock, 4 << 20);
        let sim = Sim {
            i,
            sock,
            start,
            shared: shared.clone(),
            frames: frames.clone(),
            n: args.clients,
            speaker: i < args.speakers,
            // Speakers' frames are spread evenly over one frame period: real microphones
            // are not in phase, and lock-step bursts of every speaker at once measured
            // the simulator's burst, not a session.
            phase: Duration::from_millis(args.frame_ms as u64) * i as u32
                / args.speakers.max(1) as u32,
            room: format!("room-{}", i % args.rooms),
            frame: Duration::from_millis(args.frame_ms as u64),
            codec: CodecSettings::new(Codec::Opus, 48 * args.frame_ms, 48000),
            duration: Duration::from_secs_f64(args.duration),
            join_timeout: Duration::from_secs_f64(args.join_timeout),
            latency: args.measure_latency,
        };
        tasks.push(tokio::task::spawn_local(sim.run()));
        // Players arrive one after the other: the next handshake waits (at most 200 ms)
        // until this client saw its own state come back. A burst of joins overflows the
        // server's receive buffer, and the UDP transport never retransmits what it drops.
        let t = Instant::now();
        while shared.borrow().self_seen <= i && t.elapsed() < Duration::from_millis(200) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut go_at = None;
    for t in tasks {
        let g = t.await?;
        go_at = go_at.or(g);
    }
    let mut sh = shared.borrow_mut();
    let Some(go) = go_at else {
        log::error(
            "join_timeout",
            &[
                ("joined", Field::U(sh.full as u64)),
                ("clients", Field::U(args.clients as u64)),
                ("timeout_s", Field::F(args.join_timeout)),
                ("server", Field::Str(&args.server)),
            ],
            format_args!(
                "dissonance: error: only {} of {} clients joined within {} s: is `dissonance serve --listen {}` running, with --max-clients ≥ {}?",
                sh.full, args.clients, args.join_timeout, args.server, args.clients
            ),
        );
        return Ok(1);
    };
    let mut all = Second::default();
    let secs = args.duration.ceil() as usize;
    fold_late(&mut sh.seconds, secs);
    for (s, sec) in sh.seconds.iter().enumerate() {
        let mut l = sec.latency_us.clone();
        l.sort_unstable();
        let mut line = format!(
            "second {:3}: sent {:6}  expected {:8}  received {:8}  loss {:6.3}%",
            s + 1,
            sec.sent,
            sec.expected,
            sec.received,
            loss(sec),
        );
        let mut fields = vec![
            ("second", Field::U(s as u64 + 1)),
            ("sent", Field::U(sec.sent)),
            ("expected", Field::U(sec.expected)),
            ("received", Field::U(sec.received)),
            ("loss_pct", Field::F(loss(sec))),
        ];
        // Latency only when measured, and only for a second that has samples.
        if let (true, Some(p50), Some(p99)) = (
            args.measure_latency,
            percentile(&l, 0.5),
            percentile(&l, 0.99),
        ) {
            line.push_str(&format!("  p50 {p50:7.3} ms  p99 {p99:7.3} ms"));
            // Durations in seconds (`*_s`), as everywhere in the JSON; the text shows ms.
            let s = |p| Field::F(percentile_s(&l, p).unwrap_or(0.0));
            fields.push(("p50_s", s(0.5)));
            fields.push(("p99_s", s(0.99)));
        }
        log::info("second", &fields, format_args!("{line}"));
        all.sent += sec.sent;
        all.expected += sec.expected;
        all.received += sec.received;
        all.latency_us.extend_from_slice(&sec.latency_us);
    }
    all.latency_us.sort_unstable();
    let l = &all.latency_us;
    let summary = serde_json::json!({
        "clients": args.clients,
        "speakers": args.speakers,
        "rooms": args.rooms,
        "duration_s": args.duration,
        "join_s": go.as_secs_f64(),
        "sent": all.sent,
        "expected": all.expected,
        "received": all.received,
        "loss_pct": loss(&all),
        "latency": latency_json(args.measure_latency, l),
        "dropped_by_clients": sh.dropped,
        "unmarked": sh.unmarked,
        "late_frames_skipped": sh.skipped,
        "send_errors": sh.errors,
    });
    // Not println!: a closed stdout ends the command quietly (main's error path).
    let mut text = String::new();
    if args.json {
        text.push_str(&format!("{summary}\n"));
    } else {
        text.push_str(&format!(
            "{} clients ({} speaking, {} rooms) joined in {:.2} s; {} s of voice: sent {} frames, expected {} deliveries, received {} (loss {:.3}%)\n",
            args.clients, args.speakers, args.rooms, go.as_secs_f64(), args.duration,
            all.sent, all.expected, all.received, loss(&all)
        ));
        if sh.skipped > 0 {
            text.push_str(&format!(
                "{} frames skipped by speakers more than a frame late (this process was busy)\n",
                sh.skipped
            ));
        }
        if let (true, Some(p50), Some(p90), Some(p99), Some(max)) = (
            args.measure_latency,
            percentile(l, 0.5),
            percentile(l, 0.9),
            percentile(l, 0.99),
            percentile(l, 1.0),
        ) {
            text.push_str(&format!(
                "latency (send to receive, ms): p50 {p50:.3}  p90 {p90:.3}  p99 {p99:.3}  max {max:.3}\n"
            ));
        }
    }
    crate::output::pipe::print(&text)?;
    Ok(0)
}

/// `latency`: null when not measured; only `samples` when nothing was received; the
/// percentiles in seconds (`*_s`).
fn latency_json(measured: bool, sorted: &[u32]) -> serde_json::Value {
    if !measured {
        return serde_json::Value::Null;
    }
    let mut o = serde_json::json!({ "samples": sorted.len() });
    for (k, p) in [
        ("p50_s", 0.5),
        ("p90_s", 0.9),
        ("p99_s", 0.99),
        ("max_s", 1.0),
    ] {
        if let Some(v) = percentile_s(sorted, p) {
            o[k] = serde_json::json!(v);
        }
    }
    o
}

/// A delivery counts in the second its frame was sent; a last frame sent a little late
/// (timers wake to the millisecond) or heard after the end belongs to the last second,
/// not to none (dropping it read as loss).
fn fold_late(seconds: &mut Vec<Second>, secs: usize) {
    let keep = secs.max(1);
    while seconds.len() > keep {
        if let Some(extra) = seconds.pop() {
            let last = &mut seconds[keep - 1];
            last.sent += extra.sent;
            last.expected += extra.expected;
            last.received += extra.received;
            last.latency_us.extend_from_slice(&extra.latency_us);
        }
    }
}

fn loss(s: &Second) -> f64 {
    if s.expected == 0 {
        0.0
    } else {
        100.0 * (1.0 - s.received as f64 / s.expected as f64)
    }
}

struct Sim {
    i: usize,
    sock: UdpSocket,
    start: Instant,
    shared: Rc<RefCell<Shared>>,
    frames: Rc<Vec<Vec<u8>>>,
    n: usize,
    speaker: bool,
    /// When in each frame period this speaker sends.
    phase: Duration,
    room: String,
    frame: Duration,
    codec: CodecSettings,
    duration: Duration,
    join_timeout: Duration,
    latency: bool,
}

/// Asks for a larger receive buffer (root may exceed net.core.rmem_max); best effort.
fn set_rcvbuf(sock: &UdpSocket, bytes: i32) {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let len = std::mem::size_of::<i32>() as libc::socklen_t;
    let p = &bytes as *const i32 as *const libc::c_void;
    // SAFETY: fd is a live socket owned by `sock`; the option value is a valid i32.
    unsafe {
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, len) != 0 {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, p, len);
        }
    }
}

impl Sim {
    /// Runs one client; returns when speech started (relative to start), if it did.
    async fn run(self) -> Option<Duration> {
        let mut c = Client::new(
            &format!("sim-{}", self.i),
            self.codec,
            std::slice::from_ref(&self.room),
        );
        let target = [Target::Room(self.room.clone())];
        let mut buf = vec![0u8; 2048];
        let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
        let timer = tokio::time::sleep_until(far);
        tokio::pin!(timer);
        let mut armed = far;
        let mut audio = Vec::with_capacity(1100);
        let mut full = false;
        let mut seen_self = false;
        let mut go: Option<Duration> = None;
        let mut next_frame = Duration::ZERO;
        let mut frame_no = 0usize;
        let mut stop: Option<Duration> = None;
        let mut own_listeners = 0u64;
        loop {
            let now = self.start.elapsed();
            while let Some(t) = c.poll_transmit() {
                if self.sock.send(&t.bytes).await.is_err() {
                    self.shared.borrow_mut().errors += 1;
                }
            }
            while let Some(e) = c.poll_event() {
                self.event(&e, go);
            }
            if !seen_self
                && c.peers()
                    .any(|(_, p)| p.name == c.name() && !p.rooms.is_empty())
            {
                seen_self = true;
                self.shared.borrow_mut().self_seen += 1;
            }
            // Joined when the peer table (self included) has every simulated client;
            // other clients on the server are not ours to wait for.
            if !full
                && c.peers()
                    .filter(|(_, p)| sim_index(&p.name, self.n).is_some())
                    .count()
                    == self.n
            {
                full = true;
                self.shared.borrow_mut().full += 1;
            }
            if c.is_quit() {
                return go;
            }
            if go.is_none() {
                let mut sh = self.shared.borrow_mut();
                if sh.full == self.n {
                    // Everyone has everyone: all start on a 100 ms boundary at least 200 ms
                    // ahead. An idle client looks at the shared start only when its
                    // 100 ms timer fires; starting sooner made late speakers send their
                    // missed frames back to back, a burst of hundreds of fan-outs that
                    // queued for 5-20 ms at the start of every run.
                    let g = *sh.go.get_or_insert_with(|| {
                        let g = Duration::from_millis((now.as_millis() as u64 / 100 + 3) * 100);
                        // Benchmarks start measuring the server here.
                        log::info(
                            "joined",
                            &[
                                ("clients", Field::U(self.n as u64)),
                                // A length from this line (`*_s`): speech starts at
                                // this line's `rel` plus it.
                                ("speech_in_s", Field::F(g.saturating_sub(now).as_secs_f64())),
                            ],
                            format_args!(
                                "all {} clients joined; speech from {:.3} s",
                                self.n,
                                g.as_secs_f64()
                            ),
                        );
                        g
                    });
                    go = Some(g);
                    next_frame = g + self.phase;
                    // Deliveries expected per frame: the simulated clients listening to
                    // this room (a foreign listener gets the frame too, but is not counted).
                    own_listeners = c
                        .peers()
                        .filter(|(_, p)| {
                            p.name != c.name()
                                && sim_index(&p.name, self.n).is_some()
                                && p.rooms.contains(&self.room)
                        })
                        .count() as u64;
                } else if now > self.join_timeout {
                    drop(sh);
                    c.quit();
                    continue;
                }
            }
            if let Some(g) = go {
                let end = g + self.duration;
                if self.speaker && stop.is_none() && now >= next_frame {
                    // More than a frame behind (this one thread was busy elsewhere): skip
                    // the frames missed. Sending them back to back turned one stall of
                    // the simulator into a burst from every speaker at once, which
                    // independent clients on their own machines never produce. The last
                    // frame (the one that closes the stream) is always sent.
                    while now >= next_frame + self.frame && next_frame + 2 * self.frame < end {
                        next_frame += self.frame;
                        frame_no += 1;
                        self.shared.borrow_mut().skipped += 1;
                    }
                    let last = next_frame + self.frame >= end;
                    let f = &self.frames[frame_no % self.frames.len()];
                    audio.clear();
                    audio.extend_from_slice(f);
                    if self.latency {
                        audio.extend_from_slice(&(now.as_nanos() as u64).to_le_bytes());
                        audio.extend_from_slice(MARK);
                    }
                    // The second of the send time: the receivers count by the same clock
                    // (the timestamp in the frame), so a frame sent just after a second's
                    // boundary is expected and received in the same second.
                    let sec = now.saturating_sub(g).as_secs() as usize;
                    if let Ok(n) = c.send_voice(&target, &audio, last) {
                        let mut sh = self.shared.borrow_mut();
                        if n > 0 {
                            // The frame went out with the next sequence number.
                            let seq = sh.seqs[self.i];
                            sh.seqs[self.i] += 1;
                            let marks = &mut sh.marks[self.i];
                            if marks.last().is_none_or(|&(_, s)| s != sec) {
                                marks.push((seq, sec));
                            }
                        }
                        let s = sh.second(sec);
                        s.sent += 1;
                        s.expected += if n > 0 { own_listeners } else { 0 };
                    }
                    frame_no += 1;
                    next_frame += self.frame;
                    if last {
                        stop = Some(now);
                    }
                    continue;
                }
                // Listen a little longer than the speech for frames in flight.
                if now >= end + Duration::from_millis(500) {
                    c.quit();
                    continue;
                }
            }
            let mut wake = now + Duration::from_millis(100);
            if let Some(t) = c.poll_timeout() {
                wake = wake.min(t);
            }
            if go.is_some() && self.speaker && stop.is_none() {
                wake = wake.min(next_frame);
            }
            // One timer per client, re-armed only when its deadline moves: a new sleep
            // per received datagram was a timer-wheel insert and removal for each of the
            // ~250,000 deliveries a second of the benchmark.
            let wake = tokio::time::Instant::from_std(self.start + wake);
            if wake != armed {
                timer.as_mut().reset(wake);
                armed = wake;
            }
            tokio::select! {
                r = self.sock.recv(&mut buf) => {
                    if let Ok(n) = r {
                        let now = self.start.elapsed();
                        c.handle(now, &buf[..n]);
                        // Drain what else is queued before re-arming the timer (bounded).
                        for _ in 0..64 {
                            let Ok(n) = self.sock.try_recv(&mut buf) else { break };
                            c.handle(now, &buf[..n]);
                        }
                    }
                }
                _ = &mut timer => {
                    // Fired: any new deadline re-arms it on the next turn.
                    armed = far;
                    timer.as_mut().reset(far);
                    c.handle_timeout(self.start.elapsed());
                }
            }
        }
    }

    fn event(&self, e: &Event, go: Option<Duration>) {
        let mut sh = self.shared.borrow_mut();
        match e {
            Event::VoicePacket {
                sender, seq, audio, ..
            } => {
                // Only the simulated speakers' frames count.
                let Some(sp) = sim_index(sender, self.n) else {
                    return;
                };
                // The shared start: this client's loop may not have looked at it yet.
                if go.or(sh.go).is_none() {
                    return;
                }
                // Counted in the second it was sent: per-second counts then agree.
                let Some(at) = sh.sent_in(sp, *seq) else {
                    return;
                };
                let now = self.start.elapsed();
                let sent = if self.latency {
                    let n = audio.len();
                    if n < 12 || &audio[n - 4..] != MARK {
                        sh.unmarked += 1;
                        return;
                    }
                    let ts =
                        u64::from_le_bytes(audio[n - 12..n - 4].try_into().unwrap_or_default());
                    Some(Duration::from_nanos(ts))
                } else {
                    None
                };
                let s = sh.second(at);
                s.received += 1;
                if let Some(t) = sent {
                    s.latency_us.push(now.saturating_sub(t).as_micros() as u32);
                }
            }
            Event::Dropped { .. } => sh.dropped += 1,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_seconds_fold_into_the_last() {
        let sec = |sent, expected, received, lat: &[u32]| Second {
            sent,
            expected,
            received,
            latency_us: lat.to_vec(),
        };
        let mut v = vec![
            sec(10, 990, 990, &[5]),
            sec(9, 891, 852, &[6]),
            sec(0, 0, 39, &[7]),
        ];
        fold_late(&mut v, 2);
        assert_eq!(v.len(), 2);
        assert_eq!((v[1].sent, v[1].expected, v[1].received), (9, 891, 891));
        assert_eq!(v[1].latency_us, vec![6, 7]);
        assert_eq!(v[0].received, 990);
        // Fewer seconds than the duration: nothing to fold.
        fold_late(&mut v, 3);
        assert_eq!(v.len(), 2);
    }
}
