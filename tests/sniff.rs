//! A live `dissonance sniff` on the loopback interface, capturing datagrams this test
//! sends to 127.0.0.1 (real libpcap, real sockets). Skipped, with the reason printed,
//! only when the process may not capture.

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
    if stderr.contains("not allowed to capture") {
        eprintln!("SKIPPED: this process may not capture on lo: {stderr}");
        return;
    }
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
    if stderr.contains("not allowed to capture") {
        eprintln!("SKIPPED: this process may not capture on lo: {stderr}");
        return;
    }
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
