//! `sniff --check` on the loopback interface: the rule engine runs live on what this test
//! sends to 127.0.0.1 (real libpcap, real sockets). Skipped, with the reason printed, only
//! when the process may not capture.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dissonance_tools::codec::*;

#[test]
fn sniff_check_reports_findings_live() {
    let target = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(["sniff", "-i", "lo", "-f", &format!("udp dst port {port}")])
        .args([
            "--count",
            "3",
            "--duration",
            "20",
            "--format",
            "ndjson",
            "--check",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A text relayed (to the always-send pseudo client) with recipient type 5: D034.
    let text = Message::TextData(TextData {
        session: 77,
        recipient_type_byte: 5,
        sender: 3,
        target: 0,
        text: WireStr::new("x"),
    })
    .to_vec(Variant::Modern, 1024)
    .unwrap();
    let relay = Message::ServerRelayReliable(ServerRelay {
        session: 77,
        destinations: Seq::Items(&[ALWAYS_SEND]),
        payload: &text,
    })
    .to_vec(Variant::Modern, 1024)
    .unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    let mut child = child;
    let mut sent = 0;
    // Bounded: at most 100 packets, 20 s.
    while child.try_wait().unwrap().is_none()
        && sent < 100
        && start.elapsed() < Duration::from_secs(20)
    {
        sender.send_to(&relay, ("127.0.0.1", port)).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("not allowed to capture"),
        "this test captures on lo: run it as root or with cap_net_raw: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    let live: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("check: "))
        .collect();
    assert_eq!(live.len(), 1, "{stderr}");
    assert!(
        live[0].starts_with("check: error D034 text-recipient-type packet 1 id 3 127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("Captured 3 frames on lo"), "{stderr}");
    assert!(
        stderr.contains("ERROR D034 text-recipient-type"),
        "{stderr}"
    );
    assert!(stderr.contains("(+2 more like this)"), "{stderr}");
}
