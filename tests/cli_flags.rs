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
                "-F, --format <FORMAT>",
            ],
        ),
        ("voice", &["-r, --read <FILE>"]),
        ("decode", &[]),
        ("replay", &[]),
        ("wireshark", &[]),
        (
            "client",
            &["-F, --log-format <LOG_FORMAT>", "--duration <DURATION>"],
        ),
        #[cfg(target_os = "linux")]
        (
            "serve",
            &[
                "-w, --write <FILE>",
                "[alias: --record]",
                "--log-format <LOG_FORMAT>",
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
            ],
        ),
        #[cfg(target_os = "linux")]
        ("simulate", &["--duration <DURATION>"]),
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
