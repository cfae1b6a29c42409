//! The exit status table (tests/exit_status.rs: every command), the same for `dump`,
//! `check` and `voice` whatever the damage and wherever it is: 1 for a capture damaged or
//! cut part way (everything before the damage is used), 2 for input that cannot be read as
//! a capture at all (missing, a directory, not a capture, a cut header, an unsupported link
//! type).

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dissonance");
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/session.pcap");

/// Offset of record `n` (0-based) of a classic pcap.
fn record_offset(pcap: &[u8], n: usize) -> usize {
    let mut off = 24;
    for _ in 0..n {
        let incl = u32::from_le_bytes(pcap[off + 8..off + 12].try_into().unwrap()) as usize;
        off += 16 + incl;
    }
    off
}

#[test]
fn dump_check_and_voice_agree_on_exit_statuses() {
    let d = tempfile::tempdir().unwrap();
    let sample = std::fs::read(SAMPLE).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = d.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    // A record length of 2 GiB at packet 201.
    let mut damaged = sample.clone();
    let at = record_offset(&sample, 200);
    damaged[at + 8..at + 16].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f]);
    let mut linktype = sample.clone();
    linktype[20..24].copy_from_slice(&147u32.to_le_bytes());
    let cases = [
        (write("damaged.pcap", &damaged), 1),
        (write("cut.pcap", &sample[..30_000]), 1),
        (write("first-record-cut.pcap", &sample[..40]), 1),
        (write("header-cut.pcap", &sample[..10]), 2),
        (write("empty.pcap", b""), 2),
        (
            write("text.pcap", b"not a capture file at all, just text"),
            2,
        ),
        (write("linktype.pcap", &linktype), 2),
        (d.path().join("missing.pcap").to_str().unwrap().into(), 2),
        (d.path().to_str().unwrap().into(), 2),
    ];
    let out = d.path().join("wav");
    std::fs::create_dir(&out).unwrap();
    let mut wrong = Vec::new();
    for (file, want) in &cases {
        for cmd in [
            &["dump"][..],
            &["check"],
            &["voice", "-o", out.to_str().unwrap()],
        ] {
            let o = Command::new(BIN).args(cmd).arg(file).output().unwrap();
            let got = o.status.code();
            let stderr = String::from_utf8_lossy(&o.stderr);
            // Every failure says why, naming the file.
            let name = Path::new(file).file_name().unwrap().to_str().unwrap();
            if got != Some(*want) || !stderr.contains(name) {
                wrong.push(format!("{cmd:?} {name}: {got:?} (want {want}): {stderr}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // voice left no partial file behind.
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
