//! Every subcommand parses (clap's debug checks run on `--help` in a debug build: a
//! flag defined twice is a panic there) and offers the common flags the README's table
//! promises, read from its `--help` output.

use std::process::Command;

fn help(sub: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args([sub, "--help"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{sub} --help: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_subcommand_offers_the_common_flags() {
    // (subcommand, flags its --help must list)
    let table: &[(&str, &[&str])] = &[
        (
            "dump",
            &[
                "-r, --read <FILE>",
                "-w, --write <FILE>",
                "-Y, --display-filter <EXPR>",
                "-c, --count <COUNT>",
                "--skip <N>",
                "--from <TIME>",
                "--to <TIME>",
                "-F, --format <FORMAT>",
                "-e, --field <FIELD>",
                "-E, --field-option <NAME=VALUE>",
            ],
        ),
        (
            "sniff",
            &[
                "-i, --interface <IFACE>",
                "-f, --filter <BPF>",
                "-w, --write <FILE>",
                "-Y, --display-filter <EXPR>",
                "-c, --count <COUNT>",
                "-F, --format <FORMAT>",
                "--duration <DURATION>",
            ],
        ),
        (
            "check",
            &[
                "-r, --read <FILE>",
                "-w, --write <FILE.pcapng>",
                "-Y, --display-filter <EXPR>",
                "-F, --format <FORMAT>",
                "- ndjson: One finding per line",
            ],
        ),
        (
            "voice",
            &["-r, --read <FILE>", "-Y, --display-filter <EXPR>"],
        ),
        ("decode", &["-F, --format <FORMAT>"]),
        (
            "replay",
            &[
                "-r, --read <FILE>",
                "-Y, --display-filter <EXPR>",
                "-F, --format <text|ndjson>",
            ],
        ),
        ("wireshark", &[]),
        (
            "client",
            &[
                "-F, --format <text|ndjson>",
                "`--log-format` is the same flag",
                "--duration <DURATION>",
            ],
        ),
        #[cfg(target_os = "linux")]
        (
            "serve",
            &[
                "-w, --write <FILE>",
                "[alias: --record]",
                "-F, --format <text|ndjson>",
                "`--log-format` is the same flag",
                "--duration <DURATION>",
            ],
        ),
        #[cfg(target_os = "linux")]
        (
            "proxy",
            &[
                "-w, --write <FILE.pcap>",
                "-Y, --display-filter <EXPR>",
                "-c, --count <COUNT>",
                "-F, --format <FORMAT>",
                "--idle <DURATION>",
                "--max-mappings <N>",
                "--max-connections <N>",
            ],
        ),
        #[cfg(target_os = "linux")]
        (
            "simulate",
            &["--duration <DURATION>", "-F, --format <text|json>"],
        ),
    ];
    for (sub, flags) in table {
        let h = help(sub);
        for f in *flags {
            assert!(h.contains(f), "{sub} --help lacks {f:?}:\n{h}");
        }
    }
}

#[test]
fn durations_and_addresses_are_written_the_same_everywhere() {
    // A bad duration or address is a usage error naming the accepted forms, whatever
    // the flag; parsing happens before anything is opened or sent.
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[
        "client",
        "--server",
        ":1",
        "--name",
        "x",
        "--duration",
        "2 parsecs",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("e.g. 500ms, 2s, 1m"), "{err}");
    let (code, err) = run(&["client", "--server", "127.0.0.1", "--name", "x"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("expected HOST:PORT, :PORT or [IPv6]:PORT"),
        "{err}"
    );
}

/// The log of serve and client is their output: `-F/--format` (`--log-format` the same
/// flag); `json` is refused with the reason, before anything is opened.
#[test]
fn serve_and_client_take_f_for_their_log() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dissonance"))
            .args(args)
            .output()
            .unwrap()
    };
    let mut subs = vec![vec!["client", "--server", ":1", "--name", "x"]];
    if cfg!(target_os = "linux") {
        subs.push(vec!["serve", "--listen", "127.0.0.1:0"]);
    }
    for sub in subs {
        let out = run(&[&sub[..], &["-F", "json"]].concat());
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("a log is a stream of lines: -F ndjson writes one JSON object per line"),
            "{err}"
        );
        let out = run(&[&sub[..], &["--log-format", "xml"]].concat());
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr)
            .contains("'xml' is not a log format: text or ndjson"));
    }
    if cfg!(target_os = "linux") {
        // Both spellings give the NDJSON log: its first line is the `listening` event.
        for flag in ["-F", "--format", "--log-format"] {
            let out = run(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                flag,
                "ndjson",
                "--duration",
                "0.2",
            ]);
            assert_eq!(out.status.code(), Some(0), "{out:?}");
            let first = String::from_utf8(out.stdout).unwrap();
            let v: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
            assert_eq!(v["event"], "listening", "{flag}");
        }
    }
}

/// Session ids in one notation: decimal, the hex beside it in text (serve, client, dump,
/// sniff and proxy share dump's printer, check); JSON keeps the decimal number.
#[test]
fn session_ids_are_decimal_with_hex_beside_in_text() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let dump = run(&["dump", "tests/data/captures/three-friends.pcap"]);
    assert!(dump.contains("* session 523124044 (0x1F2E3D4C) on server 127.0.0.1:47200"));
    assert!(dump.contains("S->C HandshakeResponse session 523124044 (0x1F2E3D4C) id 0"));
    let check = run(&["check", "tests/data/captures/restart.pcap"]);
    assert!(
        check.contains("client alice(0)  session 1633131490 (0x61579BE2)"),
        "{check}"
    );
    let json = run(&["check", "tests/data/captures/restart.pcap", "-F", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["findings"][0]["session"], 1633131490);
    #[cfg(target_os = "linux")]
    {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;
        let mut serve = Command::new(env!("CARGO_BIN_EXE_dissonance"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--session",
                "0x12345678",
            ])
            .args(["--duration", "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(serve.stderr.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first.split_whitespace().nth(2).unwrap().to_string();
        assert!(
            first.starts_with(&format!(
                "listening on {addr} session 305419896 (0x12345678) pid "
            )),
            "{first}"
        );
        let client = run(&[
            "client",
            "--server",
            &addr,
            "--name",
            "ann",
            "-e",
            "wait 0.1",
            "--duration",
            "10",
        ]);
        assert!(
            client.contains("ann connected session=305419896 (0x12345678) id=0"),
            "{client}"
        );
        unsafe {
            libc::kill(serve.id() as i32, libc::SIGTERM);
        }
        let out = serve.wait_with_output().unwrap();
        let log = String::from_utf8(out.stdout).unwrap();
        assert!(
            log.contains("listening on 127.0.0.1:")
                && log.contains(" session 305419896 (0x12345678)\n"),
            "{log}"
        );
        assert!(
            log.contains(" final session=305419896 (0x12345678) clients=0 "),
            "{log}"
        );
    }
}

/// Each relay's bound is refused in the other mode (it would be ignored there), before
/// any socket is opened; exit status 2 with the flag to use instead.
#[cfg(target_os = "linux")]
#[test]
fn proxy_bounds_belong_to_their_mode() {
    for (args, says) in [
        (
            &["--max-connections", "3"][..],
            "--max-connections bounds the TCP relay (--tcp); the UDP relay's is --max-mappings",
        ),
        (
            &["--tcp", "--max-mappings", "3"][..],
            "--max-mappings bounds the UDP relay; with --tcp use --max-connections",
        ),
        (
            &["--tcp", "--max-connections", "0"][..],
            "--max-connections: give at least 1",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
            .args([
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "127.0.0.1:9",
            ])
            .args(["--duration", "1"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
