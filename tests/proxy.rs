//! `dissonance proxy` end to end, on 127.0.0.1 only: real clients (sockets of this test)
//! ↔ the proxy binary ↔ a minimal UDP echo server (a thread of this test). The traffic
//! is the client→server traffic of the real capture three-friends.pcap.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use dissonance_tools::capture::{CaptureReader, DecapConfig, Decapsulator};

const CAPTURE: &str = "tests/data/captures/three-friends.pcap";
/// The server port in the capture.
const SERVER_PORT: u16 = 47200;

/// Client→server payloads of the capture, with the capture's client address.
fn client_payloads() -> Vec<(SocketAddr, Vec<u8>)> {
    let mut reader = CaptureReader::open(CAPTURE).unwrap();
    let mut decap = Decapsulator::new(DecapConfig::default());
    let mut out = Vec::new();
    while let Some(frame) = reader.next_frame() {
        decap.push(&frame.unwrap(), &mut |p| {
            if p.dst.port() == SERVER_PORT {
                out.push((p.src, p.data.to_vec()));
            }
        });
    }
    out
}

mod udp_peer;
use udp_peer::Log;

mod scrape;
use scrape::{http_get, metric, samples, validate_exposition};

/// A UDP echo server on 127.0.0.1 that stops by itself after `life`.
fn echo_server(life: Duration) -> (SocketAddr, Log) {
    udp_peer::spawn(life, |d| Some(d.to_vec()))
}

struct Proxy {
    child: Child,
    addr: SocketAddr,
    stderr: mpsc::Receiver<String>,
    stdout: thread::JoinHandle<String>,
}

/// Starts the proxy on an ephemeral port and waits (bounded) for its listening line.
fn start_proxy(upstream: SocketAddr, extra: &[&str]) -> Proxy {
    start_proxy_nofile(upstream, extra, None)
}

/// As [`start_proxy`], with the proxy's open-file limit set to `nofile`.
fn start_proxy_nofile(upstream: SocketAddr, extra: &[&str], nofile: Option<u64>) -> Proxy {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dissonance"));
    cmd.args(["proxy", "--listen", "127.0.0.1:0", "--upstream"])
        .arg(upstream.to_string())
        .args(["--duration", "30"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(n) = nofile {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Read stdout all along: a full pipe would stall the proxy.
    let mut out = child.stdout.take().unwrap();
    let stdout = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let mut first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("proxy starts");
    // A low open-file limit puts a warning before the listening line.
    while nofile.is_some() && first.starts_with("proxy: warning:") {
        first = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("proxy starts");
    }
    let addr = first
        .strip_prefix("proxy: listening on ")
        .and_then(|r| r.split([',', ' ']).next())
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .parse()
        .unwrap();
    Proxy {
        child,
        addr,
        stderr: rx,
        stdout,
    }
}

impl Proxy {
    /// SIGTERM, then collects stdout and every stderr line (bounded wait).
    fn stop(self) -> (String, Vec<String>) {
        let (out, lines, status) = self.stop_with_status();
        assert_eq!(status, Some(0));
        (out, lines)
    }

    fn stop_with_status(mut self) -> (String, Vec<String>, Option<i32>) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st.code();
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("proxy did not stop on SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let mut lines = Vec::new();
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            lines.push(l);
        }
        (self.stdout.join().unwrap(), lines, status)
    }
}

/// The report line starting with `key: ` (without the key).
fn report<'a>(lines: &'a [String], key: &str) -> &'a str {
    let prefix = format!("{key}: ");
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no '{key}' line in {lines:#?}"))
}

fn words(line: &str) -> Vec<&str> {
    line.split(|c: char| c == ',' || c == '(' || c == ')' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The number after `word` in a report line (`dropped 3, ...` → 3 for "dropped").
fn count(line: &str, word: &str) -> u64 {
    words(line)
        .windows(2)
        .find(|w| w[0] == word)
        .map(|w| w[1].parse().unwrap())
        .unwrap_or_else(|| panic!("no '{word}' in '{line}'"))
}

/// The number before `word` (`20 malformed` → 20 for "malformed").
fn count_before(line: &str, word: &str) -> u64 {
    words(line)
        .windows(2)
        .find(|w| w[1] == word)
        .map(|w| w[0].parse().unwrap())
        .unwrap_or_else(|| panic!("no '{word}' in '{line}'"))
}

/// One local socket per capture client; sends every payload through the proxy, paced,
/// and collects what comes back to each (by capture client address).
fn run_clients(proxy: SocketAddr, traffic: &[(SocketAddr, Vec<u8>)]) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut socks: BTreeMap<SocketAddr, UdpSocket> = BTreeMap::new();
    for (orig, _) in traffic {
        socks.entry(*orig).or_insert_with(|| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            s
        });
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let mut drain = |socks: &BTreeMap<SocketAddr, UdpSocket>, got: &mut Vec<_>| {
        for (orig, s) in socks {
            while let Ok(n) = s.recv(&mut buf) {
                got.push((*orig, buf[..n].to_vec()));
            }
        }
    };
    for (i, (orig, data)) in traffic.iter().enumerate() {
        socks[orig].send_to(data, proxy).unwrap();
        if i % 20 == 19 {
            drain(&socks, &mut got);
        }
    }
    let end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < end {
        drain(&socks, &mut got);
    }
    got
}

#[test]
fn forwards_byte_for_byte_and_records_everything() {
    let traffic = client_payloads();
    assert_eq!(traffic.len(), 435, "client→server datagrams in the capture");
    let (server, log) = echo_server(Duration::from_secs(30));
    let dir = std::env::temp_dir().join(format!("dissonance-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join("rec.pcap");
    let proxy = start_proxy(
        server,
        &[
            "--record",
            rec.to_str().unwrap(),
            "-F",
            "ndjson",
            "--measure-latency",
        ],
    );
    let echoed = run_clients(proxy.addr, &traffic);
    let (stdout, lines) = proxy.stop();

    // The server got every datagram unchanged, in order per client, from one distinct
    // upstream port per client.
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), traffic.len());
    let peers: BTreeSet<SocketAddr> = log.iter().map(|(p, _)| *p).collect();
    let clients: BTreeSet<SocketAddr> = traffic.iter().map(|(c, _)| *c).collect();
    assert_eq!(peers.len(), clients.len());
    assert_eq!(clients.len(), 3);
    let mut per_peer: BTreeMap<SocketAddr, Vec<&[u8]>> = BTreeMap::new();
    for (p, d) in &log {
        per_peer.entry(*p).or_default().push(d);
    }
    let mut per_client: BTreeMap<SocketAddr, Vec<&[u8]>> = BTreeMap::new();
    for (c, d) in &traffic {
        per_client.entry(*c).or_default().push(d);
    }
    let mut a: Vec<_> = per_peer.into_values().collect();
    let mut b: Vec<_> = per_client.into_values().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // And each client got its own echoes back, unchanged.
    let mut back: BTreeMap<SocketAddr, Vec<Vec<u8>>> = BTreeMap::new();
    for (c, d) in echoed {
        back.entry(c).or_default().push(d);
    }
    for (c, sent) in traffic.iter().fold(
        BTreeMap::<SocketAddr, Vec<Vec<u8>>>::new(),
        |mut m, (c, d)| {
            m.entry(*c).or_default().push(d.clone());
            m
        },
    ) {
        assert_eq!(back[&c], sent, "echoes for {c}");
    }

    // Both directions forwarded and recorded.
    let n = traffic.len() as u64;
    let fwd = report(&lines, "forwarded");
    assert_eq!(count(&format!("total {fwd}"), "total"), 2 * n);
    assert_eq!(count(fwd, "up"), n);
    assert_eq!(count(fwd, "down"), n);
    assert_eq!(report(&lines, "recorded"), (2 * n).to_string());
    // --measure-latency: every datagram of each direction was timed (kernel arrival
    // stamp to send call), and on an idle loopback it is well under a second.
    for dir in ["latency up", "latency down"] {
        let l = report(&lines, dir);
        assert_eq!(count(l, "us"), n, "{l}");
        assert!(count(l, "p50") <= count(l, "p99") && count(l, "p99") <= count(l, "max"));
        assert!(count(l, "max") < 1_000_000, "{l}");
    }
    let received = report(&lines, "received");
    assert_eq!(count_before(received, "datagrams"), 2 * n);
    assert_eq!(
        count_before(received, "Dissonance"),
        2 * n - 6,
        "{received}"
    );
    assert_eq!(count_before(received, "malformed"), 0);
    // Live decode: one ndjson record per Dissonance packet (goodbyes are not records).
    assert_eq!(stdout.lines().count() as u64, 2 * n - 6);
    assert!(stdout.lines().all(|l| l.starts_with('{')));

    // The record reads back: every forwarded datagram, in order, with the client and
    // server addresses, and dump decodes it.
    let mut reader = CaptureReader::open(&rec).unwrap();
    let mut decap = Decapsulator::new(DecapConfig::default());
    let mut recorded = Vec::new();
    while let Some(frame) = reader.next_frame() {
        decap.push(&frame.unwrap(), &mut |p| {
            recorded.push((p.src, p.dst, p.data.to_vec()))
        });
    }
    assert_eq!(recorded.len() as u64, 2 * n);
    let ups: Vec<&Vec<u8>> = recorded
        .iter()
        .filter(|(_, d, _)| *d == server)
        .map(|(_, _, b)| b)
        .collect();
    let sent: Vec<&Vec<u8>> = traffic.iter().map(|(_, d)| d).collect();
    let (mut ups_sorted, mut sent_sorted) = (ups.clone(), sent.clone());
    ups_sorted.sort();
    sent_sorted.sort();
    assert_eq!(ups_sorted, sent_sorted);
    assert!(recorded
        .iter()
        .filter(|(s, _, _)| *s == server)
        .all(|(_, d, _)| d.ip().is_loopback() && *d != server));
    let dump = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(["dump", "--summary"])
        .arg(&rec)
        .output()
        .unwrap();
    assert!(dump.status.success());
    let summary = String::from_utf8(dump.stdout).unwrap();
    for name in ["alice", "bob", "carol"] {
        assert!(summary.contains(name), "{summary}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_fault_type_shows_in_the_counts() {
    let traffic = client_payloads();
    let (server, log) = echo_server(Duration::from_secs(30));
    // Faults only on the way up, so the echo server sees all their effects.
    let proxy = start_proxy(
        server,
        &[
            "--summary",
            "--seed",
            "42",
            "--drop",
            "up:5%",
            "--burst-loss",
            "up:3%,40%",
            "--duplicate",
            "up:5%",
            "--corrupt",
            "up:5%",
            "--reorder",
            "up:5%",
            "--delay",
            "up,text:3ms",
            "--jitter",
            "up,voice:2ms",
        ],
    );
    run_clients(proxy.addr, &traffic);
    let (_, lines) = proxy.stop();
    let faults = report(&lines, "faults");
    let c = |w| count(faults, w);
    for w in [
        "dropped",
        "burst-dropped",
        "delayed",
        "jittered",
        "duplicated",
        "reordered",
        "corrupted",
    ] {
        assert!(c(w) > 0, "{w}: {faults}");
    }
    // Every fault is logged, one line each.
    let logged: Vec<&String> = lines.iter().filter(|l| l.starts_with("fault: ")).collect();
    assert_eq!(logged.len() as u64, count(&format!("x {faults}"), "x"));
    // Delay scoped to TextData, which matches the one relay wrapping a text.
    assert_eq!(c("delayed"), 1, "{faults}");

    let log = log.lock().unwrap().clone();
    let n = traffic.len() as u64;
    // Losses and copies: exact.
    assert_eq!(
        log.len() as u64,
        n - c("dropped") - c("burst-dropped") + c("duplicated")
    );
    let fwd = report(&lines, "forwarded");
    assert_eq!(count(fwd, "up"), log.len() as u64);
    assert_eq!(count(fwd, "down"), log.len() as u64);
    // Corruption: arrivals that match no sent datagram are the corrupted ones (a
    // duplicated corrupted datagram arrives twice).
    let sent: BTreeSet<&[u8]> = traffic.iter().map(|(_, d)| d.as_slice()).collect();
    let foreign = log
        .iter()
        .filter(|(_, d)| !sent.contains(d.as_slice()))
        .count() as u64;
    let mut fates: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for l in &logged {
        let num: u64 = l
            .split("datagram ")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .unwrap()
            .parse()
            .unwrap();
        let what = if l.contains("corrupted") {
            "corrupt"
        } else if l.contains("duplicated") {
            "dup"
        } else {
            "other"
        };
        fates.entry(num).or_default().push(what);
    }
    let corrupt_arrivals: u64 = fates
        .values()
        .filter(|f| f.contains(&"corrupt"))
        .map(|f| if f.contains(&"dup") { 2 } else { 1 })
        .sum();
    assert_eq!(foreign, corrupt_arrivals);
    // Reordering: some datagram of a client arrived after one sent later by that client.
    let order: BTreeMap<&[u8], usize> = traffic
        .iter()
        .enumerate()
        .map(|(i, (_, d))| (d.as_slice(), i))
        .collect();
    let mut last: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    let mut out_of_order = 0;
    for (peer, d) in &log {
        if let Some(&i) = order.get(d.as_slice()) {
            let l = last.entry(*peer).or_insert(0);
            if i < *l {
                out_of_order += 1;
            }
            *l = (*l).max(i);
        }
    }
    assert!(out_of_order > 0);
}

#[test]
fn malformed_forwarded_and_unreachable_upstream_reported_once() {
    // Upstream: a port with nothing behind it (bound then closed).
    let dead = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start_proxy(dead, &["-F", "text", "--color", "never", "--check"]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Magic + a valid type, then garbage: malformed Dissonance.
    let bad = [0x8b, 0xc7, 0x01, 0xff, 0xff, 0xff];
    for _ in 0..20 {
        client.send_to(&bad, proxy.addr).unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    let (stdout, lines, status) = proxy.stop_with_status();
    let unreachable = lines
        .iter()
        .filter(|l| l.contains("unreachable for client"))
        .count();
    assert_eq!(unreachable, 1, "{lines:#?}");
    let received = report(&lines, "received");
    assert_eq!(count_before(received, "datagrams"), 20);
    assert_eq!(count_before(received, "malformed"), 20, "{received}");
    assert!(stdout.contains("ClientState"), "{stdout}");
    // No --measure-latency, no latency lines (and no kernel stamps asked for).
    assert!(
        !lines.iter().any(|l| l.starts_with("latency ")),
        "{lines:#?}"
    );
    // Still running until SIGTERM, and exited cleanly.
    assert!(lines.iter().any(|l| l == "proxy: stopped (terminated)"));
    // --check: the rules ran live on the traffic.
    assert!(lines
        .iter()
        .any(|l| l.starts_with("Checked 20 payloads, 20 Dissonance packets")));
    assert!(lines
        .iter()
        .any(|l| l == "ERROR D003 malformed: Truncated or malformed message (20x)"));
    // An error-level finding: exit status 1, as for sniff --check.
    assert_eq!(status, Some(1));
}

#[test]
fn tcp_mode_relays_the_stream_unchanged_and_decodes_frames() {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    // A TCP echo server, bounded in time.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    thread::spawn(move || {
        if let Ok((mut s, _)) = server.accept() {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 65536];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    let dir = std::env::temp_dir().join(format!("dissonance-proxy-tcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join("tcp.pcap");
    let proxy = start_proxy(
        server_addr,
        &["--tcp", "--summary", "--record", rec.to_str().unwrap()],
    );
    // The capture's client payloads, each with a u16 big-endian length prefix.
    let traffic = client_payloads();
    let mut stream = Vec::new();
    for (_, d) in &traffic {
        stream.extend_from_slice(&(d.len() as u16).to_be_bytes());
        stream.extend_from_slice(d);
    }
    let mut c = TcpStream::connect(proxy.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for chunk in stream.chunks(1000) {
        c.write_all(chunk).unwrap();
    }
    let mut back = vec![0u8; stream.len()];
    c.read_exact(&mut back).unwrap();
    assert!(back == stream, "the echoed stream differs");
    drop(c);
    thread::sleep(Duration::from_millis(200));
    let (_, lines) = proxy.stop();
    let n = traffic.len() as u64;
    let received = report(&lines, "received");
    assert_eq!(count_before(received, "frames"), 2 * n, "{received}");
    assert_eq!(
        count_before(received, "Dissonance"),
        2 * n - 6,
        "{received}"
    );
    assert_eq!(count_before(received, "malformed"), 0);
    assert_eq!(
        report(&lines, "clients"),
        "1 connections, 0 refused (--max-connections)"
    );
    // The record reassembles into the same frames.
    let mut reader = CaptureReader::open(&rec).unwrap();
    let mut decap = Decapsulator::new(DecapConfig {
        tcp_framing: dissonance_tools::capture::TcpFraming::U16Be,
        ..DecapConfig::default()
    });
    let mut up = Vec::new();
    let mut down = 0;
    while let Some(frame) = reader.next_frame() {
        decap.push(&frame.unwrap(), &mut |p| {
            if p.dst == server_addr {
                up.push(p.data.to_vec());
            } else {
                down += 1;
            }
        });
    }
    decap.finish(&mut |_| {});
    let sent: Vec<Vec<u8>> = traffic.into_iter().map(|(_, d)| d).collect();
    assert!(up == sent, "recorded {} frames up", up.len());
    assert_eq!(down, n);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn idle_mappings_expire_and_come_back_with_a_new_upstream_port() {
    let (server, log) = echo_server(Duration::from_secs(20));
    let proxy = start_proxy(server, &["--idle", "200ms", "--summary"]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    client.send_to(b"\x00one", proxy.addr).unwrap();
    assert_eq!(client.recv(&mut buf).unwrap(), 4);
    thread::sleep(Duration::from_millis(700));
    client.send_to(b"\x00two", proxy.addr).unwrap();
    assert_eq!(client.recv(&mut buf).unwrap(), 4);
    let (_, lines) = proxy.stop();
    assert_eq!(
        report(&lines, "clients"),
        "2 mappings opened, 1 expired, 0 evicted, 0 refused (mappings full), 0 failed to open"
    );
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 2);
    // The server saw the client come back as a new peer.
    assert_ne!(log[0].0, log[1].0);
    assert!(lines
        .iter()
        .any(|l| l.contains("idle for 200ms, mapping 0 closed")));
}

#[test]
fn metrics_match_the_report_and_a_drain_refuses_new_clients() {
    let traffic = client_payloads();
    let (server, _log) = echo_server(Duration::from_secs(30));
    let proxy = start_proxy(
        server,
        &[
            "--summary",
            "--seed",
            "7",
            "--drop",
            "up:5%",
            "--duplicate",
            "down:5%",
            "--metrics",
            "127.0.0.1:0",
            "--drain",
            "30s",
        ],
    );
    let line = proxy
        .stderr
        .recv_timeout(Duration::from_secs(10))
        .expect("metrics line");
    let base = line
        .strip_prefix("proxy: metrics on ")
        .and_then(|u| u.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    assert_eq!(http_get(&format!("{base}/readyz"), None).0, 200);
    let known = UdpSocket::bind("127.0.0.1:0").unwrap();
    known
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    // The `up:5%` drop rule may take it: retry until one is echoed (bounded).
    let echoed = (0..20).any(|_| {
        known.send_to(b"\x00hi", proxy.addr).unwrap();
        known
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        known.recv(&mut buf).is_ok()
    });
    assert!(echoed);
    run_clients(proxy.addr, &traffic);
    let (code, text) = http_get(&format!("{base}/metrics"), None);
    assert_eq!(code, 200);
    validate_exposition(&text);

    // SIGTERM: not ready, healthy; a known client is still relayed, a new one is not.
    unsafe {
        libc::kill(proxy.child.id() as i32, libc::SIGTERM);
    }
    let end = Instant::now() + Duration::from_secs(10);
    while http_get(&format!("{base}/readyz"), None).0 != 503 {
        assert!(Instant::now() < end, "readyz stayed 200 after SIGTERM");
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        http_get(&format!("{base}/healthz"), None),
        (200, "ok\n".into())
    );
    let newcomer = UdpSocket::bind("127.0.0.1:0").unwrap();
    newcomer.send_to(b"\x00new", proxy.addr).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let m = samples(&http_get(&format!("{base}/metrics"), None).1);
        if metric(&m, "dissonance_proxy_refused_while_draining_total", &[]) == 1.0 {
            assert_eq!(metric(&m, "dissonance_proxy_accepting", &[]), 0.0);
            break;
        }
        assert!(Instant::now() < end, "the newcomer was not refused");
        thread::sleep(Duration::from_millis(20));
    }
    // The known client is still relayed (retried past the 5% drop rule, bounded).
    let relayed = (0..20).any(|_| {
        known.send_to(b"\x00again", proxy.addr).unwrap();
        known
            .recv(&mut buf)
            .is_ok_and(|n| &buf[..n] == b"\x00again")
    });
    assert!(relayed);
    // Nothing moves now: these are the final values.
    let m = samples(&http_get(&format!("{base}/metrics"), None).1);
    // A second SIGTERM ends the drain.
    let (_, lines, status) = proxy.stop_with_status();
    assert_eq!(status, Some(0));
    assert!(
        lines.iter().any(|l| l == "proxy: stopped (terminated)"),
        "{lines:#?}"
    );
    assert_eq!(report(&lines, "refused while draining"), "1 datagrams");

    let fwd = report(&lines, "forwarded");
    for dir in ["up", "down"] {
        assert_eq!(
            metric(
                &m,
                "dissonance_proxy_forwarded_datagrams_total",
                &[("direction", dir)]
            ),
            count(fwd, dir) as f64,
            "{dir}"
        );
    }
    let faults = report(&lines, "faults");
    assert_eq!(
        metric(&m, "dissonance_proxy_faults_total", &[("kind", "drop")]),
        count(faults, "dropped") as f64
    );
    assert_eq!(
        metric(
            &m,
            "dissonance_proxy_faults_total",
            &[("kind", "duplicate")]
        ),
        count(faults, "duplicated") as f64
    );
    assert!(metric(&m, "dissonance_proxy_faults_total", &[]) > 0.0);
    let received = report(&lines, "received");
    assert_eq!(
        metric(&m, "dissonance_proxy_decode_errors_total", &[]),
        count_before(received, "malformed") as f64
    );
    assert_eq!(
        metric(&m, "dissonance_proxy_observed_packets_total", &[]),
        count_before(received, "Dissonance") as f64
    );
    let clients = report(&lines, "clients");
    assert_eq!(
        metric(&m, "dissonance_proxy_mappings_opened_total", &[]),
        count_before(clients, "mappings") as f64
    );
    assert_eq!(
        metric(&m, "dissonance_proxy_mappings", &[]),
        count_before(clients, "mappings") as f64
    );
}

#[test]
fn ndjson_log_has_one_object_per_line_and_the_report_as_one_record() {
    let (server, _log) = echo_server(Duration::from_secs(20));
    let mut child = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--upstream"])
        .arg(server.to_string())
        .args(["--duration", "30", "--summary", "--log-format", "ndjson"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["event"], "listening");
    assert_eq!(first["cmd"], "proxy");
    assert_eq!(first["level"], "info");
    assert_eq!(first["upstream"], server.to_string());
    let addr: SocketAddr = first["addr"].as_str().unwrap().parse().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.send_to(b"\x00one", addr).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(client.recv(&mut buf).unwrap(), 4);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let rest: Vec<serde_json::Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert!(child.wait().unwrap().success());
    let events: Vec<&str> = rest.iter().map(|v| v["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["new_client", "stopped"]);
    assert_eq!(rest[0]["client"], client.local_addr().unwrap().to_string());
    let s = &rest[1];
    assert_eq!(s["reason"], "terminated");
    assert_eq!(
        (&s["forwarded_up"], &s["forwarded_down"]),
        (&1.into(), &1.into())
    );
    assert_eq!(s["goodbyes"], 0);
    assert_eq!(s["mappings_opened"], 1);
    assert_eq!(s["faults"], 0);
}

#[test]
fn thirty_thousand_sources_leave_legitimate_clients_working() {
    let (upstream, _log) = echo_server(Duration::from_secs(60));
    let proxy = start_proxy(
        upstream,
        &["--summary", "--max-mappings", "1000", "--idle", "2s"],
    );
    let recv = |s: &UdpSocket, want: &[u8]| -> bool {
        let mut buf = [0u8; 2048];
        // Bounded: a few datagrams of the flood's echoes cannot arrive here.
        matches!(s.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == want)
    };
    // alice talks through the proxy all along.
    let alice = UdpSocket::bind("127.0.0.1:0").unwrap();
    alice
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut alice_sent = 0u32;
    let mut alice_back = 0u32;
    let say = |alice_sent: &mut u32, alice_back: &mut u32| {
        let msg = format!("alice {alice_sent}");
        alice.send_to(msg.as_bytes(), proxy.addr).unwrap();
        *alice_sent += 1;
        if recv(&alice, msg.as_bytes()) {
            *alice_back += 1;
        }
    };
    say(&mut alice_sent, &mut alice_back);

    // 30,000 sources, one datagram each, 50 sockets open at a time (closed as we go).
    // Each on its own loopback address (127.1.x.y), so no two share an address even when
    // the kernel reuses a port.
    let started = Instant::now();
    let mut flood = 0u32;
    for round in 0..600u32 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "flood too slow"
        );
        let socks: Vec<UdpSocket> = (0..50u32)
            .map(|i| {
                let n = round * 50 + i;
                UdpSocket::bind(SocketAddr::from(([127, 1, (n >> 8) as u8, n as u8], 0))).unwrap()
            })
            .collect();
        for s in &socks {
            // A full buffer only loses a hostile datagram (then the counts differ).
            s.send_to(b"flood", proxy.addr).unwrap();
            flood += 1;
        }
        drop(socks);
        if round % 10 == 0 {
            say(&mut alice_sent, &mut alice_back);
        }
    }
    assert_eq!(flood, 30_000);
    say(&mut alice_sent, &mut alice_back);
    assert_eq!(
        alice_back, alice_sent,
        "alice lost datagrams during the flood"
    );

    // bob arrives after the flood: refused while the table is full of recent mappings,
    // then given the slot of one silent for 2 s (--idle). Bounded: 40 tries, 300 ms each.
    let bob = UdpSocket::bind("127.0.0.1:0").unwrap();
    bob.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut bob_sent = 0;
    let mut in_after = None;
    for i in 0..40 {
        bob.send_to(b"bob", proxy.addr).unwrap();
        bob_sent += 1;
        if recv(&bob, b"bob") {
            in_after = Some(i);
            break;
        }
        // alice keeps talking, as a live client does.
        say(&mut alice_sent, &mut alice_back);
    }
    assert!(in_after.is_some(), "bob never got through");
    assert_eq!(alice_back, alice_sent);

    let (_out, lines) = proxy.stop();
    let clients = report(&lines, "clients");
    let (opened, refused) = (
        count_before(clients, "mappings"),
        count_before(clients, "refused"),
    );
    assert_eq!(count_before(clients, "failed"), 0, "{clients}");
    assert!(refused > 0, "{clients}");
    // Every new source either got a mapping or was refused, counted: the flood, alice,
    // and bob's tries up to the one that opened his mapping.
    assert_eq!(opened + refused, 30_001 + bob_sent, "{clients}");
    // The log stays readable: mapping lines are limited to 20 a second.
    let mapping_lines = lines
        .iter()
        .filter(|l| l.starts_with("proxy: new client") || l.contains("mappings full"))
        .count();
    let secs = started.elapsed().as_secs() as usize + 2;
    assert!(
        mapping_lines <= 20 * secs,
        "{mapping_lines} lines in {secs} s"
    );
    assert!(lines
        .iter()
        .any(|l| l.contains("more mapping lines not shown")));
}

/// Datagrams the upstream refuses (nothing listens: ICMP port unreachable, reported on
/// the next send or receive of that socket) are failed sends, not forwarded ones.
#[test]
fn refused_sends_count_as_failed_not_forwarded() {
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start_proxy(dead, &["--summary"]);
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let payloads = client_payloads();
    for (_, d) in payloads.iter().take(20) {
        c.send_to(d, proxy.addr).unwrap();
    }
    // The first refusal is reported at once (once per client).
    let note = proxy.stderr.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(note.contains("new client"), "{note}");
    let note = proxy.stderr.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(note.contains("unreachable"), "{note}");
    let (_, lines) = proxy.stop();
    assert_eq!(report(&lines, "forwarded"), "0 (up 0, down 0)");
    assert_eq!(
        report(&lines, "errors"),
        "20 send (ConnectionRefused 20), 0 record; 0 still queued at exit"
    );
}

/// `proxy --payload mirror` decodes a game stack's traffic: the client→server datagrams
/// of the Mirror/kcp2k re-carried capture, forwarded to a sink, hold the plain
/// capture's 432 client packets, each once (the stack's one retransmitted copy in this
/// direction is reported as such, not counted).
#[test]
fn payload_mirror_decodes_the_stack() {
    let mut reader =
        CaptureReader::open("tests/data/captures/transports/mirror-kcp2k.pcap").unwrap();
    let mut decap = Decapsulator::new(DecapConfig::default());
    let mut traffic = Vec::new();
    while let Some(frame) = reader.next_frame() {
        decap.push(&frame.unwrap(), &mut |p| {
            if p.dst.port() == 7777 {
                traffic.push((p.src, p.data.to_vec()));
            }
        });
    }
    let (sink, log) = udp_peer::spawn(Duration::from_secs(30), |_| None);
    let proxy = start_proxy(sink, &["--payload", "mirror", "--summary"]);
    run_clients(proxy.addr, &traffic);
    // Everything reached the sink before the proxy is stopped (bounded wait).
    let end = Instant::now() + Duration::from_secs(10);
    while log.lock().unwrap().len() < traffic.len() && Instant::now() < end {
        thread::sleep(Duration::from_millis(20));
    }
    let (_, lines) = proxy.stop();
    let received = report(&lines, "received");
    assert_eq!(count_before(received, "datagrams"), traffic.len() as u64);
    assert_eq!(count_before(received, "Dissonance"), 432, "{received}");
    assert_eq!(count_before(received, "malformed"), 0);
    assert_eq!(count_before(received, "goodbyes"), 0);
    assert_eq!(
        report(&lines, "game transport"),
        "1 retransmitted copies (not counted as packets), 0 cut, 0 units lost"
    );
}

#[test]
fn tcp_connections_beyond_max_connections_are_refused_and_counted() {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    // A TCP echo server taking at most 6 connections, each served for at most 10 s.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    let (accepted_tx, accepted) = mpsc::channel();
    thread::spawn(move || {
        for _ in 0..6 {
            let Ok((mut s, _)) = server.accept() else {
                break;
            };
            let _ = accepted_tx.send(());
            thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let proxy = start_proxy(server_addr, &["--tcp", "--max-connections", "3"]);
    let mut conns = Vec::new();
    for _ in 0..6 {
        let c = TcpStream::connect(proxy.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        conns.push(c);
    }
    // The first three relay (twice each, so they keep working after the refusals);
    // the last three are closed by the proxy without a byte.
    for round in 0..2u8 {
        for (i, c) in conns.iter_mut().take(3).enumerate() {
            let msg = [0, 2, round, i as u8];
            c.write_all(&msg).unwrap();
            let mut back = [0u8; 4];
            c.read_exact(&mut back).unwrap();
            assert_eq!(back, msg, "connection {i}, round {round}");
        }
    }
    for (i, c) in conns.iter_mut().enumerate().skip(3) {
        let mut buf = [0u8; 16];
        // EOF (or a reset, had a byte been in flight): nothing relayed.
        let n = c.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "connection {i} was relayed");
    }
    // The upstream saw exactly the three relayed connections.
    for _ in 0..3 {
        accepted.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    assert!(
        accepted.try_recv().is_err(),
        "a refused connection reached upstream"
    );
    drop(conns);
    thread::sleep(Duration::from_millis(200));
    let (_, lines) = proxy.stop();
    assert_eq!(
        report(&lines, "clients"),
        "3 connections, 3 refused (--max-connections)"
    );
    let refusals: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("connections full (--max-connections 3)"))
        .collect();
    // Throttled to a line a second: the first refusal is logged; the others follow
    // within the second on a quiet machine (then unlogged: the report has the total).
    assert!((1..=3).contains(&refusals.len()), "{lines:#?}");
    assert!(
        refusals[0].contains("(1 since the last such line, 1 in all;"),
        "{refusals:#?}"
    );
}

/// Out of descriptors, accepting fails: the proxy counts it, logs it (a line a second),
/// pauses instead of spinning on the still-readable listener, and keeps relaying the
/// connections it has.
#[test]
fn tcp_accept_failures_are_counted_not_spun_on() {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    thread::spawn(move || {
        for _ in 0..40 {
            let Ok((mut s, _)) = server.accept() else {
                break;
            };
            thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    // 40 descriptors: the runtime, stdio and the listener take some; each relayed
    // connection takes two. --max-connections above what fits, so the kernel refuses first.
    let proxy = start_proxy_nofile(
        server_addr,
        &["--tcp", "--max-connections", "100"],
        Some(40),
    );
    let mut first = TcpStream::connect(proxy.addr).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    first.write_all(&[0, 2, 7, 7]).unwrap();
    let mut back = [0u8; 4];
    first.read_exact(&mut back).unwrap();
    assert_eq!(back, [0, 2, 7, 7]);
    // Bounded: 30 more connections, held open for a moment.
    let others: Vec<TcpStream> = (0..30)
        .filter_map(|_| TcpStream::connect(proxy.addr).ok())
        .collect();
    thread::sleep(Duration::from_millis(500));
    // The first connection still relays.
    first.write_all(&[0, 2, 8, 8]).unwrap();
    first.read_exact(&mut back).unwrap();
    assert_eq!(back, [0, 2, 8, 8]);
    drop(others);
    drop(first);
    let (_, lines) = proxy.stop();
    let errors: u64 = report(&lines, "accept errors").parse().unwrap();
    assert!(errors > 0, "{lines:#?}");
    let warned = lines
        .iter()
        .filter(|l| l.starts_with("proxy: accepting a connection failed: "))
        .count();
    // A line a second at most: the run lasted well under a few seconds.
    assert!((1..=3).contains(&warned), "{lines:#?}");
    // No spinning: 50 ms between attempts caps them at 20 a second of the run.
    assert!(errors <= 200, "{errors} accept attempts failed: spinning?");
}
