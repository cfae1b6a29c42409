//! Exit statuses in one table, every command (docs/guide.md, "Exit status"): 0 ok, 1
//! findings, malformed or damaged input, 2 usage error or input that cannot be read. Each
//! command is run with a flag it does not have, with a file that does not exist, and
//! where it reads captures with one cut short in its last record.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CAPTURE: &str = "tests/data/captures/three-friends.pcap";

/// Runs the binary with a bounded wait; its exit status and stderr.
fn status(args: &[String]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("{args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// three-friends.pcap with its last record cut 10 bytes short.
fn damaged() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dissonance-exit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(CAPTURE).unwrap();
    let path = dir.join("damaged.pcap");
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    path
}

#[test]
fn every_command_follows_the_exit_status_table() {
    let damaged = damaged();
    let damaged = damaged.to_str().unwrap();
    let out = std::env::temp_dir().join(format!("dissonance-exit-out-{}", std::process::id()));
    let out = out.to_str().unwrap();
    // Replay's target: a socket that takes the datagrams and never answers (the sends
    // succeed; the datagrams behind the unanswered handshakes are counted as never sent).
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = sink.local_addr().unwrap().to_string();
    let missing = "/nonexistent/dissonance-capture.pcap";

    // (command, its usual arguments, unreadable-input arguments, damaged-input arguments)
    #[allow(clippy::type_complexity)]
    let mut table: Vec<(&str, Vec<&str>, Option<Vec<&str>>, Option<Vec<&str>>)> = vec![
        (
            "decode",
            vec!["8bc7"],
            Some(vec!["--file", missing]),
            Some(vec!["8bc70761"]),
        ),
        (
            "dump",
            vec![CAPTURE],
            Some(vec![missing]),
            Some(vec![damaged]),
        ),
        (
            "check",
            vec![CAPTURE],
            Some(vec![missing]),
            Some(vec![damaged]),
        ),
        (
            "voice",
            vec![CAPTURE, "-o", out],
            Some(vec![missing, "-o", out]),
            Some(vec![damaged, "-o", out, "-q"]),
        ),
        (
            "replay",
            vec![CAPTURE, "--target", &target],
            Some(vec![missing, "--target", &target]),
            Some(vec![
                damaged,
                "--target",
                &target,
                "--top-speed",
                "--linger",
                "0.1",
            ]),
        ),
        (
            "sniff",
            vec!["-i", "lo"],
            Some(vec!["-i", "nonexistent-iface0", "-c", "1"]),
            None,
        ),
        (
            "client",
            vec!["--server", ":9", "--name", "x"],
            Some(vec!["--server", ":9", "--name", "x", "--script", missing]),
            None,
        ),
        ("wireshark", vec!["--print"], None, None),
    ];
    if cfg!(target_os = "linux") {
        table.extend([
            (
                "serve",
                vec!["--listen", "127.0.0.1:0"],
                Some(vec!["--config", missing]),
                None,
            ),
            (
                "proxy",
                vec!["--upstream", ":9"],
                Some(vec!["--config", missing]),
                None,
            ),
            ("simulate", vec!["--server", ":9"], None, None),
        ]);
    }
    for (cmd, usual, unreadable, bad_input) in &table {
        let args = |rest: &[&str]| -> Vec<String> {
            std::iter::once(*cmd)
                .chain(rest.iter().copied())
                .map(String::from)
                .collect()
        };
        let (code, err) = status(&args(&[&usual[..], &["--no-such-flag"]].concat()));
        assert_eq!(code, Some(2), "{cmd} with a bad flag: {err}");
        assert!(
            err.contains("unexpected argument '--no-such-flag'"),
            "{cmd}: {err}"
        );
        if let Some(a) = unreadable {
            let (code, err) = status(&args(a));
            assert_eq!(code, Some(2), "{cmd} {a:?}: {err}");
            assert!(err.contains("dissonance: error: "), "{cmd}: {err}");
        }
        if let Some(a) = bad_input {
            let (code, err) = status(&args(a));
            assert_eq!(code, Some(1), "{cmd} {a:?}: {err}");
            if *cmd == "decode" {
                assert!(err.contains("1 of 1 packets malformed"), "{err}");
            } else {
                assert!(
                    err.contains("capture truncated at packet 884"),
                    "{cmd}: {err}"
                );
            }
        }
    }
    // The undamaged capture replays with status 0 (the 1 above is the damage).
    let (code, err) = status(&[
        "replay".into(),
        CAPTURE.into(),
        "--target".into(),
        target.clone(),
        "--top-speed".into(),
        "--linger".into(),
        "0.1".into(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let _ = std::fs::remove_dir_all(out);
}
