//! `dissonance replay`: a capture's client traffic against a live server. The shell
//! around `crate::net::replay`: capture reading, one socket per virtual client,
//! the real clock.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::capture::{CaptureReader, Decapsulator, Transport};
use crate::net::replay::{Replayer, Schedule, Script};

use crate::net::Error;
use crate::output::View;

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
    pub view: View,
}

fn load(args: &Options) -> Result<Script, Error> {
    let mut reader = CaptureReader::open(&args.capture)
        .map_err(|e| format!("{}: {e}", args.capture.display()))?;
    let mut decap = Decapsulator::new(args.view.decap_config());
    let mut all = Vec::new();
    while let Some(frame) = reader.next_frame() {
        let frame = frame.map_err(|e| format!("{}: {e}", args.capture.display()))?;
        decap.push(&frame, &mut |p| {
            if p.transport == Transport::Udp {
                all.push((p.ts_ns, p.src, p.dst, p.data.to_vec()));
            }
        });
    }
    let script = Script::from_payloads(
        all.iter().map(|(t, s, d, b)| (*t, *s, *d, b.as_slice())),
        args.view.payload,
    );
    if script.server.is_none() {
        return Err(format!(
            "{}: no Dissonance server found in the capture (no handshake seen)",
            args.capture.display()
        )
        .into());
    }
    Ok(script)
}

pub fn run(args: Options) -> Result<i32, Error> {
    if !(args.speed > 0.0 && args.speed.is_finite()) {
        return Err(format!("--speed {}: must be a positive number", args.speed).into());
    }
    if args.loops == 0 {
        return Err("--loop 0: play at least once".into());
    }
    let target: SocketAddr = args
        .target
        .to_socket_addrs()
        .map_err(|e| format!("--target {}: {e} (expected HOST:PORT)", args.target))?
        .next()
        .ok_or("--target: no address")?;
    let script = load(&args)?;
    let schedule = Schedule {
        speed: args.speed,
        top_speed: args.top_speed,
        loops: args.loops,
        ..Schedule::default()
    };
    eprintln!(
        "replay: {} clients, {} datagrams over {:.3} s of capture, to {target}{}",
        script.clients.len(),
        script.sends.len(),
        script.duration.as_secs_f64(),
        if args.raw { " (raw)" } else { "" }
    );
    let replayer = Replayer::new(script, schedule, args.raw);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(play(
        replayer,
        target,
        Duration::from_secs_f64(args.linger.max(0.0)),
        (args.speed, args.loops),
    ))
}

async fn play(
    mut r: Replayer,
    target: SocketAddr,
    linger: Duration,
    (speed, loops): (f64, u32),
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
    // The linger starts when the schedule is first done; an answer during it (a late
    // handshake response) can release datagrams that waited for it: they go out too.
    let mut linger_end = None;
    loop {
        while let Some(due) = r.poll_timeout() {
            let wake = tokio::time::Instant::from_std(start + due);
            tokio::select! {
                biased;
                Some((i, data)) = rx.recv() => r.handle(i, &data),
                _ = tokio::time::sleep_until(wake) => {
                    let now = start.elapsed();
                    while let Some((i, bytes)) = r.poll_transmit(now) {
                        if let Err(e) = socks[i].send(&bytes).await {
                            send_errors += 1;
                            first_error.get_or_insert(e);
                        }
                        last_send = start.elapsed();
                    }
                }
            }
        }
        let end = *linger_end.get_or_insert_with(|| tokio::time::Instant::now() + linger);
        tokio::select! {
            Some((i, data)) = rx.recv() => r.handle(i, &data),
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    for t in tasks {
        t.abort();
    }
    print!("{}", r.finish());
    println!(
        "schedule: capture {:.6} s, speed {speed}, {loops} loop(s)",
        r.script().duration.as_secs_f64()
    );
    println!(
        "last send at {:.6} s after the start",
        last_send.as_secs_f64()
    );
    if let Some(e) = first_error {
        eprintln!(
            "replay: {send_errors} sends to {target} failed, first: {e} (is the server running?)"
        );
        return Ok(1);
    }
    Ok(0)
}
