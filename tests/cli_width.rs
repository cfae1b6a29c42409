//! Output fits the terminal: with `COLUMNS=80`, no line of the tables (summary, flows,
//! voice, check) or of the packet lines is longer than 80 characters (characters, not
//! bytes: the tables draw with box characters).

use std::process::Command;

const CAPTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/captures/three-friends.pcap"
);

fn widest(args: &[&str], columns: &str) -> (usize, usize) {
    let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(args)
        .env("COLUMNS", columns)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // voice prints its table on stderr: both streams count.
    let text = String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap();
    let lines = text.lines().count();
    (
        text.lines().map(|l| l.chars().count()).max().unwrap_or(0),
        lines,
    )
}

#[test]
fn every_table_and_line_fits_80_columns() {
    let dir = std::env::temp_dir().join(format!("dissonance-width-{}", std::process::id()));
    let dir_s = dir.to_str().unwrap();
    let runs: [&[&str]; 6] = [
        &["dump", CAPTURE, "--summary"],
        &["dump", CAPTURE, "--flows"],
        &["dump", CAPTURE],
        &["dump", CAPTURE, "-F", "table", "-c", "20"],
        &["check", CAPTURE],
        &["voice", CAPTURE, "-o", dir_s],
    ];
    for args in runs {
        let (w, lines) = widest(args, "80");
        assert!(lines > 3, "{args:?} printed {lines} lines");
        assert!(w <= 80, "{args:?}: a line of {w} characters");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn wide_terminals_keep_the_full_line() {
    // At 200 columns the packet lines are the full format (6-digit number, 6 decimals).
    let out = Command::new(env!("CARGO_BIN_EXE_dissonance"))
        .args(["dump", CAPTURE, "-c", "1", "--no-events"])
        .env("COLUMNS", "200")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("     1    0.000000       127.0.0.1:47201 -> "),
        "{text}"
    );
    let (w, _) = widest(&["dump", CAPTURE, "--summary"], "200");
    assert!(
        w > 80,
        "the summary is not squeezed when there is room: {w}"
    );
}
