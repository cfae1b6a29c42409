//! A capture that becomes shorter while it is read (another process truncates it):
//! reported as a truncated capture with exit status 1, what came before it processed,
//! no process killed by SIGBUS and no partial file left behind.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dissonance_tools::capture::synth::write_crowd;

const BIN: &str = env!("CARGO_BIN_EXE_dissonance");
const LIMIT: Duration = Duration::from_secs(120);

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dissonance-shrink-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A capture of 300,000 datagrams (100 speakers), about 30 MB.
fn big(dir: &Path) -> PathBuf {
    let p = dir.join("big.pcap");
    let f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    write_crowd(f, 100, 16, 1010).unwrap();
    p
}

fn truncate(p: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Waits (bounded) for the exit status; a death by signal fails with its number.
fn status(child: &mut Child) -> i32 {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s
                .code()
                .unwrap_or_else(|| panic!("killed by a signal: {s:?}"));
        }
        assert!(t.elapsed() < LIMIT, "still running after {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads the child's stderr to the end; it must exit 1 saying the file shrank. Its stderr.
fn reported_shrunk(child: &mut Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status(child), 1, "{err}");
    assert!(
        err.contains(": the file became shorter while it was read;"),
        "{err}"
    );
    err
}

#[test]
fn dump_reports_a_capture_truncated_while_it_is_read() {
    let d = tmp("dump");
    let cap = big(&d);
    let size = std::fs::metadata(&cap).unwrap().len();
    let mut child = Command::new(BIN)
        .args(["dump", cap.to_str().unwrap(), "--color", "never"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // Its first line: dump has mapped the file and is reading. Until this test reads
    // on, dump is held by the full pipe a few hundred kilobytes into the file.
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    truncate(&cap, size / 2);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let err = reported_shrunk(&mut child);
    assert!(err.starts_with("dissonance: "), "{err}");
    // What was printed are whole records of the capture (no zeros read as packets).
    assert!(!rest.contains("MALFORMED"), "a record read from zeros");
    assert!(rest.lines().count() > 1000);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn voice_reports_a_capture_truncated_while_it_is_read_and_leaves_no_partial_file() {
    let d = tmp("voice");
    let cap = big(&d);
    let size = std::fs::metadata(&cap).unwrap().len();
    let out = d.join("out");
    let mut child = Command::new(BIN)
        .args([
            "voice",
            cap.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-q",
        ])
        .args(["--trim"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first WAV being written: voice is reading the first speaker's frames, a
    // hundredth of the way into the file.
    let t = Instant::now();
    while !std::fs::read_dir(&out).is_ok_and(|mut r| r.next().is_some()) {
        assert!(t.elapsed() < LIMIT, "voice wrote nothing");
        std::thread::sleep(Duration::from_millis(1));
    }
    truncate(&cap, size / 2);
    reported_shrunk(&mut child);
    let files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!files.iter().any(|f| f.ends_with(".tmp")), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with(".wav")), "{files:?}");
    std::fs::remove_dir_all(&d).ok();
}

/// `check` prints nothing until the end: the file is cut as soon as it shows in the
/// process's maps (mapped, reading from the start), long before check gets half way.
#[test]
fn check_reports_a_capture_truncated_while_it_is_read() {
    let d = tmp("check");
    let cap = big(&d);
    let size = std::fs::metadata(&cap).unwrap().len();
    let mut child = Command::new(BIN)
        .args(["check", cap.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let maps = format!("/proc/{}/maps", child.id());
    let name = cap.to_str().unwrap().to_string();
    let t = Instant::now();
    while !std::fs::read_to_string(&maps).is_ok_and(|m| m.contains(&name)) {
        assert!(t.elapsed() < LIMIT, "check never mapped the capture");
        assert!(child.try_wait().unwrap().is_none(), "check ended first");
        std::thread::sleep(Duration::from_millis(1));
    }
    truncate(&cap, size / 2);
    reported_shrunk(&mut child);
    std::fs::remove_dir_all(&d).ok();
}
