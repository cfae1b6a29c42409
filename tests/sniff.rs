//! A live `dissonance sniff` on the loopback interface, capturing datagrams this test
//! sends to 127.0.0.1 (real libpcap, real sockets). Capturing needs root or cap_net_raw
//! (CI runs as root): without them the tests fail, saying so.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sniff_on_loopback_decodes_what_we_send() {
    let target = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("dissonance-sniff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("live.pcap");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args([
            "sniff",
            "-i",
            "lo",
            "-f",
            &format!("udp dst port {port}"),
            "--count",
            "5",
        ])
        .args([
            "--format",
            "ndjson",
            "-w",
            pcap.to_str().unwrap(),
            "--duration",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The capture starts asynchronously: send one packet every 100 ms until sniff has
    // seen five and exits (bounded: at most 100 packets, 20 s).
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hello =
        dissonance_tools::output::hex::parse("8bc70401000003c00000bb800006616c696365").unwrap();
    let start = Instant::now();
    let mut sent = 0;
    while child.try_wait().unwrap().is_none()
        && sent < 100
        && start.elapsed() < Duration::from_secs(20)
    {
        sender.send_to(&hello, ("127.0.0.1", port)).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    require_capture(&stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    for l in &lines {
        assert_eq!(l["type"], "HandshakeRequest");
        assert_eq!(l["name"], "alice");
        assert_eq!(l["dst_port"], port);
        assert_eq!(l["direction"], "client_to_server");
    }
    assert!(stderr.contains("Captured 5 frames on lo"), "{stderr}");

    // The -w file is a real pcap that dump reads back.
    let back = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(["dump", pcap.to_str().unwrap(), "--format", "ndjson"])
        .output()
        .unwrap();
    assert_eq!(back.status.code(), Some(0));
    assert_eq!(String::from_utf8(back.stdout).unwrap().lines().count(), 5);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sniff_reports_a_missing_interface() {
    let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(["sniff", "-i", "nosuchif0", "--count", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no network interface named 'nosuchif0'"),
        "{err}"
    );
}

#[test]
fn ctrl_c_flushes_and_prints_the_summary() {
    let target = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args([
            "sniff",
            "-i",
            "lo",
            "-f",
            &format!("udp dst port {port}"),
            "--duration",
            "20",
        ])
        .args(["--color", "never"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hello =
        dissonance_tools::output::hex::parse("8bc70401000003c00000bb800006616c696365").unwrap();
    // Send for 1.5 s (15 packets), then interrupt as a user's Ctrl-C would.
    for _ in 0..15 {
        sender.send_to(&hello, ("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    // Watchdog: a sniff that ignores Ctrl-C must fail this test, not hang the suite.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let (done, pid) = (done.clone(), pid.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            true
        })
    };
    let out = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        !watchdog.join().unwrap(),
        "sniff did not stop within 10 s of SIGINT"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    require_capture(&stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let seen = stdout.matches("HandshakeRequest alice").count();
    assert!((1..=15).contains(&seen), "{stdout}");
    assert!(
        stdout.contains(&format!("Captured {seen} frames on lo")),
        "{stdout}"
    );
    assert!(stdout.contains("Payloads"), "{stdout}");
}

/// Fails the test, with the reason, when sniff was not allowed to capture.
fn require_capture(stderr: &str) {
    assert!(
        !stderr.contains("not allowed to capture"),
        "these tests capture on lo: run them as root or give the test binary's dissonance \
         cap_net_raw,cap_net_admin: {stderr}"
    );
}

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;

use dissonance_tools::capture::{CaptureReader, DecapConfig, Decapsulator};

const BIN: &str = env!("CARGO_BIN_EXE_dissonance");
const LIMIT: Duration = Duration::from_secs(120);

/// Kills the child when dropped, so a failed assertion leaves no process behind.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn interrupt(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGINT);
        }
    }

    /// Waits (bounded) for the exit status.
    fn status(&mut self) -> i32 {
        let t = Instant::now();
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s.code().unwrap_or_else(|| panic!("killed: {s:?}"));
            }
            assert!(t.elapsed() < LIMIT, "still running after {LIMIT:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The lines of a child's stream, on a channel.
fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dissonance-sniff-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `dissonance sniff -i lo ARGS`, once it is capturing (its "listening on" line read);
/// its stderr lines (that one included) on the channel.
fn sniff(args: &[&str]) -> (Proc, mpsc::Receiver<String>) {
    let mut p = Command::new(BIN)
        .args(["sniff", "-i", "lo"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(p.stderr.take().unwrap());
    let first = rx.recv_timeout(LIMIT).expect("sniff's first line");
    require_capture(&first);
    assert!(
        first.starts_with("dissonance: listening on lo, "),
        "{first}"
    );
    (Proc(p), rx)
}

type Datagrams = Vec<(SocketAddr, SocketAddr, Vec<u8>)>;

/// The UDP datagrams of a capture file, in order.
fn datagrams(path: &Path) -> Datagrams {
    let mut reader = CaptureReader::open(path).unwrap();
    let mut decap = Decapsulator::new(DecapConfig::default());
    let mut out = Vec::new();
    while let Some(f) = reader.next_frame() {
        decap.push(&f.unwrap(), &mut |p| {
            out.push((p.src, p.dst, p.data.to_vec()))
        });
    }
    out
}

/// Per flow (source, destination), the payloads in order: what two captures of the
/// same traffic must agree on (the order between flows depends on who timestamped).
fn by_flow(d: &Datagrams) -> std::collections::BTreeMap<(SocketAddr, SocketAddr), Vec<&[u8]>> {
    let mut m: std::collections::BTreeMap<_, Vec<&[u8]>> = Default::default();
    for (s, t, p) in d {
        m.entry((*s, *t)).or_default().push(p.as_slice());
    }
    m
}

/// The files of a ring, oldest first.
fn ring_files(dir: &Path, stem: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{stem}_"))
        })
        .collect();
    v.sort();
    v
}

/// 200 clients join within a second (and leave): every datagram serve recorded is in
/// sniff's -w file, in each flow's order, in pcap, in pcapng and in a ring of pcapng
/// files; a ring that keeps 2 files holds the end of each flow; no drop is reported.
#[test]
fn a_burst_of_200_joins_is_captured_datagram_for_datagram() {
    let d = tmp("burst");
    let rec = d.join("serve.pcap");
    let mut serve = Proc(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--duration", "100"])
            .args(["--record", rec.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let first = lines(serve.0.stderr.take().unwrap())
        .recv_timeout(LIMIT)
        .expect("serve's first line");
    let addr: SocketAddr = first
        .strip_prefix("listening on ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("{first}"))
        .parse()
        .unwrap();
    let filter = format!("udp port {}", addr.port());
    let path = |n: &str| d.join(n).to_str().unwrap().to_string();
    let outputs = [
        vec!["-w".to_string(), path("all.pcap")],
        vec!["-w".into(), path("all.pcapng")],
        vec![
            "-w".into(),
            path("ring.pcapng"),
            "-b".into(),
            "filesize:1,files:100".into(),
        ],
        vec![
            "-w".into(),
            path("last.pcap"),
            "-b".into(),
            "filesize:1,files:2".into(),
        ],
    ];
    let mut sniffs: Vec<(Proc, mpsc::Receiver<String>)> = outputs
        .iter()
        .map(|w| {
            let mut args = vec!["-f", filter.as_str(), "--summary", "--duration", "100"];
            args.extend(w.iter().map(String::as_str));
            sniff(&args)
        })
        .collect();

    let sim = Command::new(BIN)
        .args([
            "simulate",
            "--server",
            &addr.to_string(),
            "--clients",
            "200",
        ])
        .args(["--speakers", "0", "--duration", "1"])
        .output()
        .unwrap();
    assert_eq!(
        sim.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    serve.interrupt();
    assert_eq!(serve.status(), 0);
    // Every datagram is in the kernel's buffers by now; Ctrl-C reads them out first.
    let mut summaries = Vec::new();
    for (p, rx) in &mut sniffs {
        p.interrupt();
        let mut out = String::new();
        std::io::Read::read_to_string(p.0.stdout.as_mut().unwrap(), &mut out).unwrap();
        assert_eq!(p.status(), 0);
        let err: Vec<String> = rx.try_iter().collect();
        assert!(!err.iter().any(|l| l.contains("warning")), "{err:?}");
        summaries.push(out);
    }

    let want = datagrams(&rec);
    // Joins, states to everyone, leaves: tens of thousands of datagrams.
    assert!(want.len() > 40_000, "{}", want.len());
    let want_flows = by_flow(&want);
    for s in &summaries {
        let line = s.lines().find(|l| l.starts_with("Captured ")).unwrap();
        assert!(
            line.starts_with(&format!("Captured {} frames on lo in ", want.len())),
            "{line}"
        );
        assert!(
            line.contains(" 0 dropped by the kernel, 0 dropped by the interface;"),
            "{line}"
        );
    }
    for name in ["all.pcap", "all.pcapng"] {
        let got = datagrams(&d.join(name));
        assert_eq!(got.len(), want.len(), "{name}");
        assert!(by_flow(&got) == want_flows, "{name}: the flows differ");
    }
    assert_eq!(
        std::fs::read(d.join("all.pcapng")).unwrap()[..4],
        [0x0A, 0x0D, 0x0D, 0x0A],
        "pcapng by its name"
    );

    let ring = ring_files(&d, "ring");
    assert!(ring.len() >= 3, "{ring:?}");
    let mut got = Vec::new();
    for f in &ring {
        assert!(std::fs::metadata(f).unwrap().len() <= 1_000_000, "{f:?}");
        got.extend(datagrams(f));
    }
    assert!(by_flow(&got) == want_flows, "the ring's flows differ");

    let last = ring_files(&d, "last");
    assert_eq!(last.len(), 2, "{last:?}");
    // The two newest of at least three (8 MB or so of frames, 1 MB each).
    let index = |p: &PathBuf| -> u32 {
        let n = p.file_stem().unwrap().to_str().unwrap();
        n.strip_prefix("last_").unwrap().parse().unwrap()
    };
    assert!(
        index(&last[1]) >= 3 && index(&last[0]) == index(&last[1]) - 1,
        "{last:?}"
    );
    let mut tail = Vec::new();
    for f in &last {
        tail.extend(datagrams(f));
    }
    for (flow, seq) in by_flow(&tail) {
        let all = &want_flows[&flow];
        assert!(all.ends_with(&seq), "{flow:?}: not the end of the flow");
    }
    std::fs::remove_dir_all(&d).ok();
}

/// A tiny kernel buffer and a burst: the drops are counted, reported in the summary and
/// warned about on stderr as they happen.
#[test]
fn a_tiny_buffer_reports_its_drops() {
    let target = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    let filter = format!("udp port {port}");
    let (mut p, rx) = sniff(&["-f", &filter, "-B", "4K", "--summary", "--duration", "100"]);
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Bounded burst: 20,000 datagrams of 100 bytes, as fast as the socket takes them.
    for _ in 0..20_000 {
        sender.send_to(&[0u8; 100], ("127.0.0.1", port)).unwrap();
    }
    // The warning comes while sniff is still running.
    let warning = loop {
        let l = rx.recv_timeout(LIMIT).expect("a warning line");
        if l.contains("warning") {
            break l;
        }
    };
    assert!(
        warning.starts_with("dissonance: warning: packets dropped on lo: "),
        "{warning}"
    );
    assert!(
        warning.ends_with("; raise -B (now 4 KiB) or narrow -f"),
        "{warning}"
    );
    p.interrupt();
    let mut out = String::new();
    std::io::Read::read_to_string(p.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(p.status(), 0);
    let line = out.lines().find(|l| l.starts_with("Captured ")).unwrap();
    let kernel: u64 = line
        .split(" dropped by the kernel")
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let captured: u64 = line.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(kernel > 0, "{line}");
    assert!(captured < 20_000, "{line}");
}

/// `sniff -q --stats` on a live capture: six handshakes sent to one port are six packets
/// of one conversation in the `stats` object, and nothing else is printed.
#[test]
fn sniff_prints_live_statistics() {
    let target = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    let filter = format!("udp dst port {port}");
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hello =
        dissonance_tools::output::hex::parse("8bc70401000003c00000bb800006616c696365").unwrap();
    // sniff -q --stats ARGS while exactly six handshakes are sent (sniff is capturing
    // already); -c 6 ends it, --duration bounds it. Its stdout.
    let six = |args: &[&str]| {
        let mut all = vec!["-f", &filter, "-c", "6", "--duration", "60", "-q"];
        all.extend_from_slice(args);
        let (mut p, _rx) = sniff(&all);
        for _ in 0..6 {
            sender.send_to(&hello, ("127.0.0.1", port)).unwrap();
        }
        assert_eq!(p.status(), 0);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut p.0.stdout.take().unwrap(), &mut out).unwrap();
        out
    };
    let out = six(&["--stats", "io,1", "--stats", "conv", "-F", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 1, "{out}");
    let stats = &arr[0]["stats"];
    let conv = stats["conv"]["conversations"].as_array().unwrap();
    assert_eq!(conv.len(), 1, "{out}");
    assert_eq!(
        conv[0]["a"]["addr"],
        sender.local_addr().unwrap().to_string()
    );
    assert_eq!(conv[0]["b"]["addr"], format!("127.0.0.1:{port}"));
    assert_eq!(
        conv[0]["a_to_b"],
        serde_json::json!({"packets": 6, "bytes": 6 * hello.len(), "texts": 0})
    );
    assert_eq!(conv[0]["b_to_a"]["packets"], 0);
    let totals = stats["io"]["totals"].as_array().unwrap();
    assert_eq!(totals.len(), 1, "{out}");
    assert_eq!(totals[0]["type"], "HandshakeRequest");
    assert_eq!(totals[0]["direction"], "client_to_server");
    assert_eq!(totals[0]["packets"], 6);
    assert_eq!(totals[0]["bytes"], 6 * hello.len());
    let intervals = stats["io"]["intervals"].as_array().unwrap();
    let sum: u64 = intervals
        .iter()
        .map(|i| i["packets"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, 6);

    // Text: the io rows stream out as the intervals close, the totals follow the summary.
    let out = six(&["--stats", "io,1"]);
    assert!(
        out.starts_with("IO statistics: intervals of 1 s (those with packets)\n"),
        "{out}"
    );
    // The streamed table ends at its first bottom border; the summary follows.
    let rows: u64 = out
        .split('└')
        .next()
        .unwrap()
        .lines()
        .filter(|l| l.contains("HandshakeRequest"))
        .map(|l| l.split('┆').nth(3).unwrap().trim().parse::<u64>().unwrap())
        .sum();
    assert_eq!(rows, 6, "{out}");
    let summary = out.find("Captured 6 frames on lo").expect("the summary");
    assert!(out.find("IO totals").unwrap() > summary, "{out}");
}

/// The largest UDP datagram over IPv4 (65,507 bytes) is a 65,549-byte frame on `lo`: the
/// default snaplen (262,144) keeps it whole (65,535 used to cut it), and `-s` still cuts.
#[test]
fn the_default_snaplen_keeps_the_largest_datagram_whole() {
    let d = tmp("snaplen");
    let target = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    let filter = format!("udp port {port}");
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let payload: Vec<u8> = (0..65_507u32).map(|i| (i % 251) as u8).collect();
    for (name, extra) in [("whole.pcap", &[][..]), ("cut.pcap", &["-s", "1000"][..])] {
        let file = d.join(name);
        let mut args = vec!["-f", filter.as_str(), "-w", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (mut p, _rx) = sniff(&args);
        sender.send_to(&payload, ("127.0.0.1", port)).unwrap();
        let mut buf = vec![0u8; 70_000];
        assert_eq!(target.recv(&mut buf).unwrap(), payload.len());
        // Received, so in the capture's kernel buffer: Ctrl-C reads it out first.
        p.interrupt();
        assert_eq!(p.status(), 0);
        let mut reader = CaptureReader::open(&file).unwrap();
        let f = reader.next_frame().expect("one frame").unwrap();
        assert_eq!(f.orig_len, 65_549, "{name}");
        let kept = if extra.is_empty() { 65_549 } else { 1000 };
        assert_eq!(f.data.len(), kept, "{name}");
        if extra.is_empty() {
            assert_eq!(
                datagrams(&file),
                [(
                    sender.local_addr().unwrap(),
                    target.local_addr().unwrap(),
                    payload.clone()
                )]
            );
        }
    }
    std::fs::remove_dir_all(&d).ok();
}
