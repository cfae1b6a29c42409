//! Load tools for benches/proxy.sh and benches/replay.sh, all on 127.0.0.1:
//!   proxy_load echo ADDR SECONDS            UDP echo server (the "game server")
//!   proxy_load relay LISTEN UPSTREAM SECS   bare tokio UDP relay, one upstream socket per
//!                                           client, no decoding (the anchor)
//!   proxy_load min-relay LISTEN UPSTREAM SECS
//!                                           the least a relay does: one thread, poll(2),
//!                                           no runtime (the machine's floor)
//!   proxy_load stalls SECONDS               how often the CPUs are taken away (gaps
//!                                           seen by a pinned thread reading the clock)
//!   proxy_load throughput TARGET CLIENTS SECONDS
//!   proxy_load latency TARGET[,TARGET...] RATE SECONDS [SLICE_MS]
//!                                           paced load, round-trip percentiles; several
//!                                           targets take turns of SLICE_MS (100)
//! Datagrams are real Dissonance packets (ServerRelayUnreliable wrapping VoiceData),
//! 60–200 bytes; the last 8 bytes carry the send time. Every loop is bounded in time.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket as StdSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dissonance_tools::codec::*;
use tokio::net::UdpSocket;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn packet(client: u16, size: usize) -> Res<Vec<u8>> {
    let channels = [Channel {
        bitfield: ChannelBitfield::new(ChannelType::Room, false, false, Priority::Default, 0, 1.0),
        recipient: room_id("Global"),
    }];
    let overhead = 60 - 20; // relay + voice headers for 20 audio bytes make 60 bytes
    let audio = vec![0x48u8; size.saturating_sub(overhead).max(12)];
    let inner = Message::VoiceData(VoiceData {
        session: 0x1F2E_3D4C,
        sender: client,
        options: PacketOptions::extended(0),
        seq: 0,
        channels: Seq::Items(&channels),
        audio: &audio,
    })
    .to_vec(Variant::Modern, 4096)?;
    let dest = [client ^ 1];
    Ok(Message::ServerRelayUnreliable(ServerRelay {
        session: 0x1F2E_3D4C,
        destinations: Seq::Items(&dest),
        payload: &inner,
    })
    .to_vec(Variant::Modern, 4096)?)
}

/// CLOCK_MONOTONIC in ns: one clock for every process on the machine, so a time written
/// by one process can be read against another's (Instant hides its value).
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The client's send time, in the last 8 bytes (inside the opaque Opus frame).
fn stamp(buf: &mut [u8]) {
    let n = buf.len();
    buf[n - 8..].copy_from_slice(&mono_ns().to_le_bytes());
}

/// The echo server's send time, in the 8 bytes before the client's.
fn stamp_echo(buf: &mut [u8]) {
    let n = buf.len();
    if n >= 16 {
        buf[n - 16..n - 8].copy_from_slice(&mono_ns().to_le_bytes());
    }
}

/// (client → echo, echo → client, round trip) in ns for a datagram that came back.
fn legs(buf: &[u8]) -> Option<(u64, u64, u64)> {
    let n = buf.len();
    let word = |at: usize| Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?));
    let sent = word(n.checked_sub(8)?)?;
    let echoed = word(n.checked_sub(16)?)?;
    let now = mono_ns();
    Some((
        echoed.checked_sub(sent)?,
        now.checked_sub(echoed)?,
        now.checked_sub(sent)?,
    ))
}

fn echo(addr: SocketAddr, secs: f64) -> Res<()> {
    let s = StdSocket::bind(addr)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut buf = [0u8; 65536];
    while Instant::now() < end {
        if let Ok((n, peer)) = s.recv_from(&mut buf) {
            stamp_echo(&mut buf[..n]);
            let _ = s.send_to(&buf[..n], peer);
        }
    }
    Ok(())
}

async fn relay(listen: SocketAddr, upstream: SocketAddr, secs: f64) -> Res<()> {
    let l = Arc::new(UdpSocket::bind(listen).await?);
    let mut map: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    loop {
        let (n, client) = tokio::select! {
            r = l.recv_from(&mut buf) => match r { Ok(x) => x, Err(_) => continue },
            _ = tokio::time::sleep_until(end) => return Ok(()),
        };
        let up = match map.get(&client) {
            Some(u) => u.clone(),
            None => {
                let u = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
                u.connect(upstream).await?;
                let (u2, l2) = (u.clone(), l.clone());
                tokio::spawn(async move {
                    let mut b = vec![0u8; 65536];
                    while let Ok(n) = u2.recv(&mut b).await {
                        let _ = l2.send_to(&b[..n], client).await;
                    }
                });
                map.insert(client, u.clone());
                u
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

/// The least a relay can do: one thread, blocking poll(2) over the listening socket and
/// one upstream socket per client, one recv and one send per datagram, no runtime. The
/// floor any relay's added latency sits on, on this machine.
fn min_relay(listen: SocketAddr, upstream: SocketAddr, secs: f64) -> Res<()> {
    use std::os::fd::AsRawFd;
    let l = StdSocket::bind(listen)?;
    l.set_nonblocking(true)?;
    let mut ups: Vec<(StdSocket, SocketAddr)> = Vec::new();
    let mut map: HashMap<SocketAddr, usize> = HashMap::new();
    let mut fds = vec![libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let mut buf = vec![0u8; 65536];
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if r <= 0 {
            continue;
        }
        if fds[0].revents != 0 {
            while let Ok((n, client)) = l.recv_from(&mut buf) {
                let i = match map.get(&client) {
                    Some(&i) => i,
                    None => {
                        let u = StdSocket::bind("127.0.0.1:0")?;
                        u.connect(upstream)?;
                        u.set_nonblocking(true)?;
                        fds.push(libc::pollfd {
                            fd: u.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        });
                        ups.push((u, client));
                        map.insert(client, ups.len() - 1);
                        ups.len() - 1
                    }
                };
                let _ = ups[i].0.send(&buf[..n]);
            }
        }
        for k in 1..fds.len() {
            if fds[k].revents != 0 {
                let (u, client) = &ups[k - 1];
                while let Ok(n) = u.recv(&mut buf) {
                    let _ = l.send_to(&buf[..n], client);
                }
            }
        }
    }
    Ok(())
}

/// How often this machine takes the CPU away from a running thread: one thread per CPU,
/// pinned, reads the clock in a loop for SECONDS and counts the gaps between reads. On an
/// idle machine the gaps are interrupts and, on a VM, the host running something else on
/// the same physical CPU; every datagram in flight during one waits it out.
fn stalls(secs: f64) -> Res<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    const EDGES: [(u64, &str); 4] = [
        (50_000, "50-100us"),
        (100_000, "100us-1ms"),
        (1_000_000, ">=1ms"),
        (u64::MAX, ""),
    ];
    let threads: Vec<_> = (0..cpus)
        .map(|cpu| {
            std::thread::spawn(move || {
                // SAFETY: a zeroed cpu_set_t with one CPU set, for this thread only.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                let mut count = [0u64; 3];
                let mut lost = [0u64; 3];
                let end = mono_ns() + (secs * 1e9) as u64;
                let mut last = mono_ns();
                while last < end {
                    let now = mono_ns();
                    let gap = now - last;
                    last = now;
                    for k in 0..3 {
                        if gap >= EDGES[k].0 && gap < EDGES[k + 1].0 {
                            count[k] += 1;
                            lost[k] += gap;
                        }
                    }
                }
                (count, lost)
            })
        })
        .collect();
    for (cpu, t) in threads.into_iter().enumerate() {
        let (count, lost) = t.join().map_err(|_| "stall thread panicked")?;
        let total: u64 = lost.iter().sum();
        print!("stalls cpu {cpu}:");
        for k in 0..3 {
            print!(" {} {:.1}/s", EDGES[k].1, count[k] as f64 / secs);
        }
        println!(
            "; {:.2}% of the time lost in gaps of 50us or more",
            total as f64 / (secs * 1e9) * 100.0
        );
    }
    Ok(())
}

async fn clients(target: SocketAddr, n: usize) -> Res<Vec<Arc<UdpSocket>>> {
    let mut v = Vec::new();
    for _ in 0..n {
        let s = UdpSocket::bind("127.0.0.1:0").await?;
        s.connect(target).await?;
        v.push(Arc::new(s));
    }
    Ok(v)
}

/// Closed loop: each client keeps WINDOW datagrams in flight; packets/s of round trips.
async fn throughput(target: SocketAddr, n: usize, secs: f64) -> Res<()> {
    const WINDOW: usize = 4;
    let t0 = Instant::now();
    let socks = clients(target, n).await?;
    let dur = Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for (i, s) in socks.into_iter().enumerate() {
        let mut pkt = packet(i as u16, 60 + (i * 37) % 141)?;
        tasks.push(tokio::spawn(async move {
            for _ in 0..WINDOW {
                stamp(&mut pkt);
                let _ = s.send(&pkt).await;
            }
            let mut got = 0u64;
            let mut buf = vec![0u8; 2048];
            let warm = Duration::from_millis(500);
            loop {
                let left = (warm + dur).saturating_sub(t0.elapsed());
                match tokio::time::timeout(left.max(Duration::from_millis(1)), s.recv(&mut buf))
                    .await
                {
                    Ok(Ok(_)) => {
                        if t0.elapsed() > warm + dur {
                            break;
                        }
                        if t0.elapsed() > warm {
                            got += 1;
                        }
                        stamp(&mut pkt);
                        let _ = s.send(&pkt).await;
                    }
                    // Lost window slot (timeout or error): refill it.
                    _ => {
                        if t0.elapsed() > warm + dur {
                            break;
                        }
                        let _ = s.send(&pkt).await;
                    }
                }
            }
            got
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    println!("throughput {:.0} packets/s", total as f64 / secs);
    Ok(())
}

/// Paced at RATE datagrams/s over 16 clients per target, each datagram due at its own
/// absolute time; prints round-trip and one-way percentiles in µs, one line per target.
/// With several targets the sending switches target every SLICE (round robin), so every
/// path is measured through the same moments of the machine: on this shared 2-core VM the
/// scheduling tail moves by hundreds of µs from one second to the next, and paths measured
/// one after the other (this tool's previous way) compared different moments. The sender
/// sleeps to each due time (timer slack 1 ns) and one poll(2) thread reads all sockets: a
/// spinning sender and a reader thread per socket (the first version) took a whole core
/// of the two and put their own scheduling tail into every path measured.
fn latency(targets: &[SocketAddr], rate: u64, secs: f64, slice: Duration) -> Res<()> {
    use std::os::fd::AsRawFd;
    const N: usize = 16;
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64) };
    let mut socks = Vec::new();
    for target in targets {
        for _ in 0..N {
            let s = StdSocket::bind("127.0.0.1:0")?;
            s.connect(target)?;
            s.set_nonblocking(true)?;
            socks.push(Arc::new(s));
        }
    }
    let mut pkts: Vec<Vec<u8>> = (0..N)
        .map(|i| packet(i as u16, 60 + (i * 37) % 141))
        .collect::<Res<_>>()?;
    // Warm-up, not measured: every socket's mapping in every relay exists before timing.
    for s in &socks {
        stamp(&mut pkts[0]);
        let _ = s.send(&pkts[0]);
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut buf = [0u8; 2048];
    for s in &socks {
        while s.recv(&mut buf).is_ok() {}
    }
    let total = (rate as f64 * secs) as u64;
    let reader = {
        let socks = socks.clone();
        std::thread::spawn(move || {
            let mut fds: Vec<libc::pollfd> = socks
                .iter()
                .map(|s| libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let paths = socks.len() / N;
            let mut v: Vec<Vec<(u64, u64, u64)>> = (0..paths)
                .map(|_| Vec::with_capacity(total as usize / paths + 1))
                .collect();
            let mut buf = [0u8; 2048];
            // Ends 500 ms after the last reply.
            loop {
                // SAFETY: fds is a valid array of pollfd for the duration of the call.
                let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 500) };
                if r <= 0 {
                    break;
                }
                for (i, f) in fds.iter().enumerate() {
                    if f.revents == 0 {
                        continue;
                    }
                    while let Ok(n) = socks[i].recv(&mut buf) {
                        if let Some(l) = legs(&buf[..n]) {
                            v[i / N].push(l);
                        }
                    }
                }
            }
            v
        })
    };
    let mut sent = vec![0u64; targets.len()];
    let start = Instant::now();
    let slice_ns = slice.as_nanos().max(1) as u64;
    for k in 0..total {
        let at = k * 1_000_000_000 / rate;
        let due = start + Duration::from_nanos(at);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let path = (at / slice_ns) as usize % targets.len();
        let i = (k as usize) % N;
        stamp(&mut pkts[i]);
        let _ = socks[path * N + i].send(&pkts[i]);
        sent[path] += 1;
    }
    let all = reader.join().map_err(|_| "reader panicked")?;
    for (path, got) in all.iter().enumerate() {
        let pct = |pick: fn(&(u64, u64, u64)) -> u64| {
            let mut v: Vec<u64> = got.iter().map(pick).collect();
            v.sort_unstable();
            move |q: f64| {
                v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(0) as f64
                    / 1000.0
            }
        };
        let (up, down, rt) = (pct(|l| l.0), pct(|l| l.1), pct(|l| l.2));
        println!(
            "latency {} sent {} received {} p50 {:.1} p99 {:.1} p999 {:.1} us up_p50 {:.1} up_p99 {:.1} down_p50 {:.1} down_p99 {:.1}",
            targets[path],
            sent[path],
            got.len(),
            rt(0.50),
            rt(0.99),
            rt(0.999),
            up(0.50),
            up(0.99),
            down(0.50),
            down(0.99),
        );
    }
    Ok(())
}

fn main() -> Res<()> {
    let a: Vec<String> = std::env::args().collect();
    let usage = "usage: proxy_load echo ADDR SECS | relay LISTEN UPSTREAM SECS | min-relay LISTEN UPSTREAM SECS | stalls SECS | throughput TARGET CLIENTS SECS | latency TARGET[,TARGET...] RATE SECS [SLICE_MS]";
    let arg = |i: usize| a.get(i).ok_or(usage);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match arg(1)?.as_str() {
        "echo" => echo(arg(2)?.parse()?, arg(3)?.parse()?),
        "stalls" => stalls(arg(2)?.parse()?),
        "min-relay" => min_relay(arg(2)?.parse()?, arg(3)?.parse()?, arg(4)?.parse()?),
        "relay" => rt.block_on(relay(arg(2)?.parse()?, arg(3)?.parse()?, arg(4)?.parse()?)),
        "throughput" => rt.block_on(throughput(
            arg(2)?.parse()?,
            arg(3)?.parse()?,
            arg(4)?.parse()?,
        )),
        "latency" => {
            let targets = arg(2)?
                .split(',')
                .map(|t| t.parse())
                .collect::<Result<Vec<SocketAddr>, _>>()?;
            let slice = a
                .get(5)
                .map(|m| m.parse::<u64>())
                .transpose()?
                .unwrap_or(100);
            latency(
                &targets,
                arg(3)?.parse()?,
                arg(4)?.parse()?,
                Duration::from_millis(slice),
            )
        }
        _ => Err(usage.into()),
    }
}
