//! Help that teaches: the top-level `--help` gives an example of every subcommand, the
//! shell completion scripts parse and complete, and the man pages render cleanly and
//! list every long flag. All generated from the clap definition by the binary itself.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dissonance"))
}

fn stdout(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands the top-level `--help` lists (clap's own `help` aside).
fn subcommands() -> Vec<String> {
    let help = stdout(&["--help"]);
    let listing = help
        .split("Commands:\n")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .unwrap();
    let subs: Vec<String> = listing
        .lines()
        // A command's line is indented by two; its wrapped description by more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect();
    assert!(subs.len() >= 12, "{subs:?}");
    subs
}

/// The long flags a subcommand's `--help` lists (`--help` and `--version` included).
fn long_flags(sub: &str) -> BTreeSet<String> {
    stdout(&[sub, "--help"])
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| {
            l.split([' ', ','])
                .filter(|w| !w.is_empty())
                .take_while(|w| w.starts_with('-'))
                .filter(|w| w.starts_with("--"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn top_level_help_gives_an_example_of_every_subcommand() {
    let help = stdout(&["--help"]);
    let examples = help.split("Examples").nth(1).expect("an Examples section");
    for sub in subcommands() {
        let needle = format!("dissonance {sub} ");
        assert!(
            examples.lines().any(|l| l.contains(&needle)),
            "no example of `{sub}` in the top-level --help:\n{examples}"
        );
    }
}

/// Runs the bash completion function on a command line, returns the candidates.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let line = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={cword}; COMP_LINE='{}'; \
         COMP_POINT=${{#COMP_LINE}}; _dissonance dissonance '{}' '{prev}'; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.join(" "),
        words[cword],
    );
    let out = Command::new("bash").args(["-c", &line]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_parses_and_completes_subcommands_and_flags() {
    let script = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dissonance.bash");
    std::fs::write(&script, stdout(&["completions", "bash"])).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    assert_eq!(bash_complete(&script, &["dissonance", "du"]), ["dump"]);
    assert_eq!(
        bash_complete(&script, &["dissonance", "s"]),
        ["serve", "simulate", "sniff"]
    );
    let all = bash_complete(&script, &["dissonance", ""]);
    for sub in subcommands() {
        assert!(all.contains(&sub), "{sub} not completed: {all:?}");
    }
    assert_eq!(
        bash_complete(&script, &["dissonance", "dump", "--summ"]),
        ["--summary"]
    );
}

#[test]
fn zsh_and_fish_completions_name_every_subcommand() {
    let subs = subcommands();
    for shell in ["zsh", "fish"] {
        let script = stdout(&["completions", shell]);
        assert!(!script.is_empty());
        for sub in &subs {
            assert!(
                script.contains(&format!("\"{sub}\""))
                    || script.contains(&format!("'{sub}"))
                    || script.contains(&format!(" {sub} ")),
                "{shell}: {sub} missing"
            );
        }
    }
}

#[test]
fn man_pages_render_without_warnings_and_list_every_long_flag() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("man");
    let _ = std::fs::remove_dir_all(&dir);
    stdout(&["man", "--out-dir", dir.to_str().unwrap()]);
    let mut pages = vec![("dissonance.1".to_string(), None)];
    for sub in subcommands() {
        pages.push((format!("dissonance-{sub}.1"), Some(sub)));
    }
    for (page, sub) in pages {
        let path = dir.join(&page);
        let roff = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
        // -k: preconv, as man does, for the non-ASCII characters in the text; -ww: every
        // warning.
        let out = Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
            .expect("groff (the Makefile installs groff-base)");
        assert!(out.status.success(), "{page}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{page} warns");
        // In roff a hyphen is `\-`.
        let text = roff.replace("\\-", "-");
        let flags = match &sub {
            Some(s) => long_flags(s),
            None => ["--help", "--version"].map(String::from).into(),
        };
        assert!(flags.contains("--help"), "{sub:?}: {flags:?}");
        for flag in flags {
            assert!(text.contains(&flag), "{page} does not mention {flag}");
        }
        if sub.is_none() {
            for s in subcommands() {
                assert!(text.contains(&format!("dissonance-{s}(1)")), "{s}");
            }
        }
    }
}
