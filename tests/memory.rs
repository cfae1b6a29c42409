//! Constant memory: `dump` in every format and `--summary` stay under 64 MB of peak
//! resident memory on a large capture and on a capture of 4,000 clients with 1 KB names,
//! and `voice` does not grow with the number of talk spurts (the child's own peak, from
//! wait4's rusage).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dissonance_tools::capture::synth::{write_chatter, write_crowd};

const BIN: &str = env!("CARGO_BIN_EXE_dissonance");
const LIMIT_KB: i64 = 64 * 1024;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dissonance-mem-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn crowd(path: &Path, clients: u16, name_len: usize, voice: u64) -> u64 {
    let f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    write_crowd(f, clients, name_len, voice).unwrap()
}

/// Runs `dissonance ARGS` with stdout counted and dropped; (exit status, stdout bytes,
/// peak RSS in KiB).
// The child is reaped by wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn peak(args: &[&str]) -> (i32, u64, i64) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()).unwrap());
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter; wait4 reaps our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let bytes = reader.join().unwrap();
    assert!(libc::WIFEXITED(status), "{args:?}: killed ({status})");
    (libc::WEXITSTATUS(status), bytes, usage.ru_maxrss)
}

/// `-F table` streams: 300,000 datagrams (100 clients, 1,010 frames each, every frame
/// relayed and forwarded twice) print in constant memory.
#[test]
fn table_on_300k_packets_stays_under_64_mb() {
    let d = tmp("table");
    let cap = d.join("big.pcap");
    let n = crowd(&cap, 100, 16, 1010);
    assert!(n >= 300_000, "{n}");
    let (code, bytes, kb) = peak(&["dump", cap.to_str().unwrap(), "-F", "table"]);
    assert_eq!(code, 0);
    // Every record printed: a row each, plus the header every 50 rows.
    assert!(bytes > n * 100, "{bytes}");
    assert!(kb < LIMIT_KB, "-F table: peak {kb} KiB");
    std::fs::remove_dir_all(&d).ok();
}

/// 4,000 clients with 1 KB names: every format, with and without events, and the
/// summary, under 64 MB (names were copied per join for the JSON writer threads, and
/// tables padded every row to the longest name).
#[test]
fn every_format_on_4000_clients_with_1kb_names_stays_under_64_mb() {
    let d = tmp("crowd");
    let cap = d.join("crowd.pcap");
    crowd(&cap, 4000, 1024, 2);
    let cap = cap.to_str().unwrap();
    let runs: [&[&str]; 8] = [
        &["-F", "text"],
        &["-F", "table"],
        &["-F", "json"],
        &["-F", "ndjson"],
        &["-F", "ndjson", "--events"],
        &["-F", "json", "--line-buffered"],
        &["--summary"],
        &["--flows"],
    ];
    let mut report = Vec::new();
    for extra in runs {
        let args = [&["dump", cap][..], extra].concat();
        let (code, bytes, kb) = peak(&args);
        assert_eq!(code, 0, "{extra:?}");
        assert!(bytes > 0, "{extra:?}");
        report.push(format!("{extra:?}: {kb} KiB, {bytes} bytes out"));
        assert!(kb < LIMIT_KB, "{report:#?}");
    }
    // The summary's tables: names clipped to 32 characters, not padded to 1 KB.
    let (_, bytes, _) = peak(&["dump", cap, "--summary"]);
    assert!(bytes < 2_000_000, "summary of {bytes} bytes");
    std::fs::remove_dir_all(&d).ok();
}

/// `voice` keeps no per-spurt record: 40,000 talk spurts (4 speakers, 10,000 two-frame
/// spurts each, into one mix) take no more memory than 2,500. Each spurt's sidecar
/// record goes to a spool file as soon as it is placed (it used to be kept to the end,
/// then built into one JSON tree: 77 MB at 10,000 spurts, 252 MB at 40,000). The sidecar
/// still lists every spurt.
#[test]
fn voice_memory_does_not_grow_with_talk_spurts() {
    let d = tmp("spurts");
    let mut peaks = Vec::new();
    for spurts in [625u32, 10_000] {
        let cap = d.join(format!("chatter-{spurts}.pcap"));
        let f = std::io::BufWriter::new(std::fs::File::create(&cap).unwrap());
        write_chatter(f, 4, spurts, 2).unwrap();
        let out = d.join(format!("out-{spurts}"));
        std::fs::create_dir_all(&out).unwrap();
        // --trim and 8 kHz keep the WAV small (25 MB at 40,000 spurts).
        let (code, _, kb) = peak(&[
            "voice",
            cap.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--mix",
            "--trim",
            "--rate",
            "8000",
        ]);
        assert_eq!(code, 0);
        let text = std::fs::read_to_string(out.join("mix.json")).unwrap();
        let sidecar: serde_json::Value = serde_json::from_str(&text).unwrap();
        let listed = sidecar["spurts"].as_array().unwrap();
        assert_eq!(listed.len() as u32, 4 * spurts);
        // By start: the speakers take turns.
        assert_eq!(listed[5]["speaker"], "speaker-00001");
        assert_eq!(listed[5]["end"], "closing");
        peaks.push(kb);
    }
    let (few, many) = (peaks[0], peaks[1]);
    assert!(many < LIMIT_KB, "40,000 spurts: peak {many} KiB");
    assert!(
        many - few < 8 * 1024,
        "2,500 spurts: {few} KiB, 40,000: {many} KiB"
    );
    std::fs::remove_dir_all(&d).ok();
}
