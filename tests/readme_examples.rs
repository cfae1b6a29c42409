//! The examples of README.md and docs/guide.md run as written and print what they show.
//!
//! Every `$ dissonance ...` line of a `sh` block (with `\` continuations) is run by `sh`
//! in a fresh temporary directory where `samples/`, `tests/data/` and `wireshark/` are
//! copies of the repository's (examples that write files write there, never into the
//! repository), HOME is a directory of its own and `dissonance` is the built binary; the lines shown after it, up to the
//! next `$` line or the end of the block, must equal its output (stdout and stderr, as a
//! terminal shows them), where a `...` line stands for any number of lines; a command
//! shown without output must succeed (exit status 0). Examples that
//! need what a temporary directory cannot give are marked in the document with an HTML
//! comment before the block: `<!-- not run: REASON -->` (root for `sniff`, a server for the
//! live commands); a command with a `<placeholder>` is the reader's own file and not run.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct Example {
    doc: &'static str,
    line: usize,
    command: String,
    shown: Vec<String>,
}

/// The runnable examples of one document.
fn examples(doc: &'static str) -> Vec<Example> {
    let text = std::fs::read_to_string(Path::new(ROOT).join(doc)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut skip_next_block = false;
    while i < lines.len() {
        let l = lines[i];
        if l.starts_with("<!-- not run:") {
            skip_next_block = true;
        }
        if l.trim_start().starts_with("```") && l.trim() != "```" {
            let runnable = l.trim() == "```sh" && !skip_next_block;
            skip_next_block = false;
            i += 1;
            let mut current: Option<Example> = None;
            while i < lines.len() && lines[i].trim() != "```" {
                let l = lines[i];
                if let Some(cmd) = l.strip_prefix("$ ") {
                    out.extend(current.take());
                    let start = i + 1;
                    let mut cmd = cmd.to_string();
                    while cmd.ends_with('\\') && i + 1 < lines.len() {
                        cmd.pop();
                        i += 1;
                        cmd.push(' ');
                        cmd.push_str(lines[i].trim());
                    }
                    let runs = runnable && cmd.starts_with("dissonance ") && !cmd.contains('<');
                    current = runs.then(|| Example {
                        doc,
                        line: start,
                        command: cmd,
                        shown: Vec::new(),
                    });
                } else if let Some(e) = &mut current {
                    e.shown.push(l.trim_end().to_string());
                }
                i += 1;
            }
            out.extend(current.take());
        }
        i += 1;
    }
    out
}

/// Whether `got` matches `shown`: a `...` line (or `... (what it leaves out)`) matches any
/// run of lines, a line ending
/// in ` ...` any line that starts with what comes before; blank lines at the end (the
/// space before the next command) are not compared.
fn matches(shown: &[String], got: &[&str]) -> bool {
    let trim = |n: usize, blank: &dyn Fn(usize) -> bool| {
        let mut n = n;
        while n > 0 && blank(n - 1) {
            n -= 1;
        }
        n
    };
    let s = trim(shown.len(), &|i| shown[i].trim().is_empty());
    let g = trim(got.len(), &|i| got[i].trim().is_empty());
    lines_match(&shown[..s], &got[..g])
}

fn lines_match(shown: &[String], got: &[&str]) -> bool {
    match shown.split_first() {
        None => got.is_empty(),
        // `...` alone, or with a note of what it leaves out: `... (Rooms, Per client)`.
        Some((first, rest)) if first.trim() == "..." || first.starts_with("... (") => {
            (0..=got.len()).any(|k| lines_match(rest, &got[k..]))
        }
        Some((first, rest)) => {
            let line = |g: &&str| match first.strip_suffix(" ...") {
                Some(prefix) => g.starts_with(prefix),
                None => g.trim_end() == first,
            };
            got.first().is_some_and(line) && lines_match(rest, &got[1..])
        }
    }
}

/// A fresh directory of its own (a unique name, created atomically, so two runs at once,
/// even in PID namespaces where both test processes have the same pid, never share one) that
/// looks like the repository root to the examples: `samples/`, `tests/data/` and
/// `wireshark/` are copies, so an example that writes can only write into the scratch
/// directory, never into the repository; `home/` is the examples' HOME.
fn workdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("dissonance-examples-")
        .tempdir()
        .unwrap();
    for tree in ["samples", "wireshark", "tests/data"] {
        copy_tree(&Path::new(ROOT).join(tree), &d.path().join(tree));
    }
    std::fs::create_dir(d.path().join("home")).unwrap();
    std::fs::create_dir(d.path().join("bin")).unwrap();
    // The binary is only run, never written: a link to it is enough.
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_dissonance"),
        d.path().join("bin/dissonance"),
    )
    .unwrap();
    d
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn run_all(docs: &[&'static str]) {
    let scratch = workdir();
    let dir = scratch.path();
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap()
    );
    let mut failures = Vec::new();
    let mut ran = 0;
    for doc in docs {
        for e in examples(doc) {
            ran += 1;
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("{} 2>&1", e.command))
                .current_dir(dir)
                .env("PATH", &path)
                // `wireshark --install` and anything else that writes under HOME stays here.
                .env("HOME", dir.join("home"))
                .env_remove("XDG_CONFIG_HOME")
                .env_remove("XDG_DATA_HOME")
                .env("NO_COLOR", "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let got: Vec<&str> = text.lines().collect();
            // A command shown without output (a list of variants) must at least succeed.
            let nothing_shown = e.shown.iter().all(|l| l.trim().is_empty());
            let ok = if nothing_shown {
                out.status.success()
            } else {
                matches(&e.shown, &got)
            };
            if !ok {
                failures.push(format!(
                    "{}:{}: $ {}\n--- shown\n{}\n--- printed\n{}",
                    e.doc,
                    e.line,
                    e.command,
                    e.shown.join("\n"),
                    got.join("\n")
                ));
            }
        }
    }
    drop(scratch);
    assert!(ran > 0);
    assert!(
        failures.is_empty(),
        "{} of {ran} examples differ:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn readme_examples_print_what_they_show() {
    run_all(&["README.md"]);
}

#[test]
fn guide_examples_print_what_they_show() {
    run_all(&["docs/guide.md"]);
}

#[test]
fn the_matcher_honours_ellipses() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(matches(&s(&["a", "...", "d"]), &["a", "b", "c", "d"]));
    assert!(matches(&s(&["a", "..."]), &["a"]));
    assert!(!matches(&s(&["a", "d"]), &["a", "b", "d"]));
    assert!(!matches(&s(&["a"]), &["a", "b"]));
    assert!(matches(&s(&["ab ...", ""]), &["abc", ""]));
    assert!(!matches(&s(&["ab ..."]), &["ac"]));
}

/// The client script the examples name is shipped, and parses.
#[test]
fn the_sample_script_parses() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("samples/carol.txt")).unwrap();
    let actions = dissonance_tools::net::client::runtime::parse_script(&text).unwrap();
    assert_eq!(actions.len(), 7);
}
