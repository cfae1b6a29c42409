//! `dissonance replay`: a capture's client traffic against a live server. The shell
//! around `crate::net::replay`: capture reading, one socket per virtual client,
//! the real clock.

use crate::output::log::{self, Field};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::capture::{DecapConfig, Decapsulator, Transport};
use crate::net::replay::{Replayer, Schedule, Script};

use crate::net::Error;

/// The options of [`run`] (the command line's, converted).
#[derive(Debug)]
pub struct Options {
    /// Capture file (pcap or pcapng) with the clients' traffic.
    pub capture: PathBuf,
    /// The live server.
    pub target: String,
    /// Replay speed factor (2.0 = twice as fast).
    pub speed: f64,
    /// Ignore the capture timing: send as fast as possible.
    pub top_speed: bool,
    /// Play the capture this many times (each round handshakes again).
    pub loops: u32,
    /// Resend the captured client→server payloads byte for byte, without handshakes or
    /// id substitution.
    pub raw: bool,
    /// Keep listening for answers this long after the last send.
    pub linger: f64,
    /// Exit status 1 when any captured-vs-live row is DIFFERENT.
    pub fail_on_diff: bool,
    /// Where the Dissonance packets are in the datagrams (`--payload`).
    pub payload: crate::dissect::locate::PayloadMode,
    /// `-Y`: send the datagrams it selects (and every session setup and goodbye).
    pub filter: Option<crate::dissect::filter::Filter>,
}

/// The script, and whether the capture is damaged part way (what was read before the
/// damage is replayed; the exit status is 1 then, as dump's, check's and voice's).
fn load(args: &Options) -> Result<(Script, bool), Error> {
    // A file, or `-` for standard input, as dump/check/voice open theirs.
    let (mut reader, _) = crate::capture::open_capture(&args.capture).map_err(|e| e.to_string())?;
    let mut decap = Decapsulator::new(DecapConfig::default());
    let mut all = Vec::new();
    let mut damaged = false;
    while let Some(frame) = reader.next_frame() {
        let frame = match frame {
            Ok(f) => f,
            // A link type nothing here decodes: the capture cannot be read at all.
            Err(e) if e.is_unsupported_linktype() => {
                return Err(format!("{}: {e}", args.capture.display()).into())
            }
            Err(e) => {
                eprintln!(
                    "dissonance: {}: {e}; replaying the {} frames before it",
                    args.capture.display(),
                    reader.frames_read()
                );
                damaged = true;
                break;
            }
        };
        decap.push(&frame, &mut |p| {
            if p.transport == Transport::Udp {
                all.push((p.ts_ns, p.src, p.dst, p.data.to_vec()));
            }
        });
    }
    let payloads = all.iter().map(|(t, s, d, b)| (*t, *s, *d, b.as_slice()));
    let script = if args.raw {
        // --raw is for servers that are not Dissonance: any UDP server will do.
        Script::from_payloads_any_server(payloads, args.payload)
    } else if let Some(f) = &args.filter {
        Script::from_payloads_filtered(payloads, args.payload, f)
    } else {
        Script::from_payloads(payloads, args.payload)
    };
    match script.server {
        None if args.raw => {
            Err(format!("{}: no UDP datagrams to replay", args.capture.display()).into())
        }
        None => Err(format!(
            "{}: no Dissonance server found in the capture (no handshake seen); \
             --raw resends the datagrams of any UDP server",
            args.capture.display()
        )
        .into()),
        Some(_) => Ok((script, damaged)),
    }
}

pub fn run(args: Options) -> Result<i32, Error> {
    if !(args.speed > 0.0 && args.speed.is_finite()) {
        return Err(format!("--speed {}: must be a positive number", args.speed).into());
    }
    if args.loops == 0 {
        return Err("--loop 0: play at least once".into());
    }
    // One address grammar for every flag; `:PORT` is this host.
    let target: SocketAddr = crate::sys::units::parse_addr(&args.target, "127.0.0.1")
        .map_err(|e| format!("--target {e}"))?;
    let (script, damaged) = load(&args)?;
    let schedule = Schedule {
        speed: args.speed,
        top_speed: args.top_speed,
        loops: args.loops,
        ..Schedule::default()
    };
    let server = script.server.map_or_else(String::new, |s| s.to_string());
    log::info(
        "start",
        &[
            ("clients", Field::U(script.clients.len() as u64)),
            ("datagrams", Field::U(script.sends.len() as u64)),
            ("server", Field::Str(&server)),
            ("capture_s", Field::F(script.duration.as_secs_f64())),
            ("target", Field::Str(&target)),
            ("raw", Field::U(u64::from(args.raw))),
            ("left_out", Field::U(script.left_out)),
        ],
        format_args!(
            "replay: {} clients, {} datagrams to server {server} over {:.3} s of capture, to {target}{}{}",
            script.clients.len(),
            script.sends.len(),
            script.duration.as_secs_f64(),
            if args.raw { " (raw)" } else { "" },
            match &args.filter {
                Some(f) => format!(" ({} left out by -Y '{}')", script.left_out, f.source()),
                None => String::new(),
            }
        ),
    );
    let replayer = Replayer::new(script, schedule, args.raw);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let speed = if args.top_speed {
        "top speed".to_string()
    } else {
        format!("speed {}", args.speed)
    };
    let code = rt.block_on(play(
        replayer,
        target,
        Duration::from_secs_f64(args.linger.max(0.0)),
        (speed, args.loops),
        args.fail_on_diff,
    ))?;
    Ok(if damaged { code.max(1) } else { code })
}

async fn play(
    mut r: Replayer,
    target: SocketAddr,
    linger: Duration,
    (speed, loops): (String, u32),
    fail_on_diff: bool,
) -> Result<i32, Error> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Vec<u8>)>();
    let mut socks = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..r.script().clients.len() {
        let s = Arc::new(UdpSocket::bind(bind).await?);
        s.connect(target).await?;
        let reader = s.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match reader.recv(&mut buf).await {
                    Ok(n) => {
                        if tx.send((i, buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                    // Refused (nothing listening yet): the send side reports it.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }));
        socks.push(s);
    }
    let start = Instant::now();
    let mut send_errors = 0u64;
    let mut first_error = None;
    let mut last_send = Duration::ZERO;
    // Once the schedule is through: listen until `linger` after the last send. Datagrams
    // that wait for a handshake answer go out when it comes (then lingering starts again).
    let mut quiet_until: Option<Instant> = None;
    loop {
        let wake = match r.poll_timeout() {
            Some(due) => start + due,
            None => {
                let end = *quiet_until.get_or_insert_with(|| Instant::now() + linger);
                if Instant::now() >= end {
                    break;
                }
                end
            }
        };
        tokio::select! {
            biased;
            Some((i, data)) = rx.recv() => r.handle(i, &data),
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                let now = start.elapsed();
                while let Some((i, bytes)) = r.poll_transmit(now) {
                    if let Err(e) = socks[i].send(&bytes).await {
                        r.send_failed(&bytes);
                        send_errors += 1;
                        first_error.get_or_insert(e);
                    }
                    last_send = start.elapsed();
                    quiet_until = None;
                }
            }
        }
    }
    for t in tasks {
        t.abort();
    }
    let mut text = r.finish();
    text.push_str(&format!(
        "schedule: capture {:.6} s, {speed}, {loops} loop(s)\n",
        r.script().duration.as_secs_f64()
    ));
    text.push_str(&format!(
        "last send at {:.6} s after the start\n",
        last_send.as_secs_f64()
    ));
    // Not print!: a closed stdout ends the command quietly (main's error path).
    crate::output::pipe::print(&text)?;
    if let Some(e) = first_error {
        log::error(
            "send_failed",
            &[
                ("failed", Field::U(send_errors)),
                ("target", Field::Str(&target)),
                ("error", Field::Str(&e)),
            ],
            format_args!(
                "replay: {send_errors} sends to {target} failed, first: {e} (is the server running?)"
            ),
        );
        return Ok(1);
    }
    if fail_on_diff && r.report.differences > 0 {
        eprintln!(
            "replay: {} differences between the captured and the live answers (--fail-on-diff)",
            r.report.differences
        );
        return Ok(1);
    }
    Ok(0)
}
