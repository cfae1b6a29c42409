//! What `serve` and `proxy` share for running in production: `--config FILE` (TOML) and
//! durations given in seconds or with a unit.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory};

use dissonance_tools::output::log::{self, Level, LogFormat};

use super::{Cli, Error};

/// `--log-format` and `--log-level` of the long-running commands.
#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// Log format: text lines, or one JSON object per line (schema in docs/json-schema.md).
    #[arg(long, value_enum, default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,
    /// The least severe log lines written: error, warn, info or debug.
    #[arg(long, value_enum, default_value_t = LevelArg::Info)]
    pub log_level: LevelArg,
}

impl LogArgs {
    /// Sets up the process's diagnostic log ([`log::init`]).
    pub fn init(&self, cmd: &'static str) {
        log::init(cmd, self.log_format.into(), self.log_level.into());
    }
}

/// `-F/--format` and `--log-level` of `serve`, `client` and `replay` (whose logs are what
/// they print); `--log-format` is the same flag, kept for existing scripts and config files.
#[derive(clap::Args, Debug)]
pub struct OutputLogArgs {
    /// Log format: `text` lines, or `ndjson`, one JSON object per line (schema in
    /// docs/json-schema.md). `--log-format` is the same flag.
    #[arg(
        long = "format",
        short = 'F',
        alias = "log-format",
        value_name = "text|ndjson",
        default_value = "text",
        value_parser = log_format
    )]
    pub log_format: LogFormatArg,
    /// The least severe log lines written: error, warn, info or debug.
    #[arg(long, value_enum, default_value_t = LevelArg::Info)]
    pub log_level: LevelArg,
}

/// A log format: `text` or `ndjson`. `json` is refused with the reason: a log is a
/// stream of lines, never one document (an array would end only when the process does).
pub fn log_format(s: &str) -> Result<LogFormatArg, String> {
    match s {
        "text" => Ok(LogFormatArg::Text),
        "ndjson" => Ok(LogFormatArg::Ndjson),
        "json" => {
            Err("a log is a stream of lines: -F ndjson writes one JSON object per line".into())
        }
        _ => Err(format!("'{s}' is not a log format: text or ndjson")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    Text,
    Ndjson,
}

impl From<LogFormatArg> for LogFormat {
    fn from(f: LogFormatArg) -> LogFormat {
        match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Ndjson => LogFormat::Ndjson,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LevelArg {
    Error,
    Warn,
    Info,
    Debug,
}

impl From<LevelArg> for Level {
    fn from(l: LevelArg) -> Level {
        match l {
            LevelArg::Error => Level::Error,
            LevelArg::Warn => Level::Warn,
            LevelArg::Info => Level::Info,
            LevelArg::Debug => Level::Debug,
        }
    }
}

/// Seconds (`30`, `1.5`) or a duration with a unit (`30s`, `500ms`, `2m`): the one
/// duration grammar ([`dissonance_tools::sys::units::parse_duration`]), at most a day.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    match dissonance_tools::sys::units::parse_duration(s)? {
        d if d.as_secs_f64() <= 86_400.0 => Ok(d),
        _ => Err(format!("'{s}' is more than a day")),
    }
}

/// The subcommands that take `--config`.
const WITH_CONFIG: [&str; 2] = ["serve", "proxy"];

/// Turns `--config FILE` into command-line arguments: every key of the TOML file is a long
/// flag name (`max-clients`, or `max_clients`), placed before the user's own arguments,
/// and skipped when the command line gives that flag itself, so the command line wins.
/// Values are checked by the same parsers as on the command line. Argument lists without
/// `--config` come back unchanged (clap then reports any mistake in them as usual).
pub fn expand_config(argv: Vec<OsString>) -> Result<Vec<OsString>, Error> {
    let Some(sub) = argv.get(1).and_then(|s| s.to_str()) else {
        return Ok(argv);
    };
    if !WITH_CONFIG.contains(&sub) {
        return Ok(argv);
    }
    // Required flags may come from the file: not required in this first look.
    let relaxed = Cli::command().mut_subcommand(sub, |c| c.mut_args(|a| a.required(false)));
    let Ok(matches) = relaxed.try_get_matches_from(&argv) else {
        return Ok(argv);
    };
    let Some((_, given)) = matches.subcommand() else {
        return Ok(argv);
    };
    let Some(path) = given.get_one::<PathBuf>("config") else {
        return Ok(argv);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --config {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("--config {}: {e}", path.display()))?;
    let cmd = Cli::command();
    let sub_cmd = cmd
        .find_subcommand(sub)
        .ok_or_else(|| format!("no subcommand {sub}"))?;
    let mut extra: Vec<OsString> = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let bad =
            |why: &str| -> Error { format!("--config {}: `{key}`: {why}", path.display()).into() };
        let arg = sub_cmd
            .get_arguments()
            // A flag's aliases are keys too (`record` for `write`).
            .find(|a| {
                a.get_long() == Some(long.as_str())
                    || a.get_all_aliases()
                        .is_some_and(|al| al.contains(&long.as_str()))
            })
            .filter(|a| !matches!(a.get_id().as_str(), "config" | "help" | "version"))
            .ok_or_else(|| {
                bad(&format!(
                    "not a setting of `dissonance {sub}` (keys are its long flag names, see --help)"
                ))
            })?;
        if given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            continue;
        }
        let flag = matches!(arg.get_action(), ArgAction::SetTrue);
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(items) => items.iter().collect(),
            v => vec![v],
        };
        for v in values {
            let text = match v {
                toml::Value::Boolean(b) if flag => {
                    if *b {
                        extra.push(format!("--{long}").into());
                    }
                    continue;
                }
                _ if flag => return Err(bad("a switch: give true or false")),
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => return Err(bad("give a string, a number or a list of them")),
            };
            // `--flag=value`: a value starting with '-' stays a value.
            extra.push(format!("--{long}={text}").into());
        }
    }
    let mut out = argv;
    out.splice(2..2, extra);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// A value for every long flag of `serve` and `proxy` (not its default), as the command
    /// line and the TOML file give it. A new flag without an entry here fails the test.
    fn every_flag(sub: &str) -> Vec<(&'static str, &'static str, &'static str)> {
        // (flag, command-line value, TOML value); "" = a switch.
        let log = [
            ("log-format", "ndjson", "\"ndjson\""),
            ("log-level", "warn", "\"warn\""),
        ];
        let ops = [
            ("metrics", "127.0.0.1:9464", "\"127.0.0.1:9464\""),
            ("drain", "25s", "\"25s\""),
        ];
        let own: &[(&str, &str, &str)] = match sub {
            "serve" => &[
                ("listen", "127.0.0.1:47999", "\"127.0.0.1:47999\""),
                ("session", "0x12345678", "\"0x12345678\""),
                ("status-every", "7.5", "7.5"),
                ("write", "x.pcap", "\"x.pcap\""),
                ("max-clients", "12", "12"),
                ("max-packet", "2048", "2048"),
                ("handshake-burst", "3", "3"),
                ("handshake-rate", "0.5", "0.5"),
                ("idle-timeout", "600", "600"),
                ("duration", "3600", "3600"),
                ("prefix-burst", "100", "100"),
                ("prefix-rate", "20.5", "20.5"),
                ("max-name", "64", "64"),
                ("max-half-open", "32", "32"),
                ("handshake-timeout", "5", "5"),
                ("pid-file", "serve.pid", "\"serve.pid\""),
            ],
            _ => &[
                ("listen", ":47201", "\":47201\""),
                ("upstream", "127.0.0.1:47200", "\"127.0.0.1:47200\""),
                ("idle", "30s", "\"30s\""),
                ("write", "x.pcap", "\"x.pcap\""),
                ("duration", "60", "60"),
                ("summary", "", "true"),
                ("measure-latency", "", "true"),
                ("check", "", "true"),
                ("tcp", "", "true"),
                ("seed", "7", "7"),
                ("drop", "voice:5%", "[\"voice:5%\"]"),
                ("delay", "down:40ms", "[\"down:40ms\"]"),
                ("jitter", "10ms", "[\"10ms\"]"),
                ("duplicate", "1%", "[\"1%\"]"),
                ("reorder", "2%", "[\"2%\"]"),
                ("corrupt", "3%", "[\"3%\"]"),
                ("burst-loss", "1%,30%", "[\"1%,30%\"]"),
                ("format", "ndjson", "\"ndjson\""),
                ("color", "always", "\"always\""),
                ("no-events", "", "true"),
                ("payload", "offset:4", "\"offset:4\""),
                ("tcp-framing", "u32le", "\"u32le\""),
                ("type", "VoiceData", "[\"VoiceData\"]"),
                ("client", "alice", "[\"alice\"]"),
                ("room", "lobby", "[\"lobby\"]"),
                ("session", "305419896", "[305419896]"),
                ("hex", "", "true"),
                ("max-mappings", "100", "100"),
                ("max-connections", "100", "100"),
                ("display-filter", "seq > 5", "\"seq > 5\""),
                ("count", "5", "5"),
                ("skip", "1", "1"),
                ("from", "1s", "\"1s\""),
                ("to", "60", "60"),
                ("field", "seq", "[\"seq\"]"),
                ("field-option", "header=y", "[\"header=y\"]"),
            ],
        };
        // serve's log is its output: `--format` (`--log-format` is its alias).
        let log = match sub {
            "serve" => [("format", "ndjson", "\"ndjson\""), log[1]],
            _ => log,
        };
        own.iter().chain(&log).chain(&ops).copied().collect()
    }

    /// Flags that conflict with one in [`every_flag`], tried in a file of their own.
    fn apart(sub: &str) -> Vec<(&'static str, &'static str, &'static str)> {
        match sub {
            "proxy" => vec![
                ("listen", ":47201", "\":47201\""),
                ("upstream", "127.0.0.1:47200", "\"127.0.0.1:47200\""),
                ("events", "", "true"),
            ],
            _ => vec![],
        }
    }

    fn argv(words: &[String]) -> Vec<OsString> {
        std::iter::once("dissonance".into())
            .chain(words.iter().map(OsString::from))
            .collect()
    }

    /// Every flag set in a file parses exactly as the same flags on the command line.
    #[test]
    fn every_flag_of_serve_and_proxy_is_settable_in_the_config_file() {
        let dir = std::env::temp_dir().join(format!("dissonance-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for sub in WITH_CONFIG {
            let cmd = Cli::command();
            let longs: Vec<String> = cmd
                .find_subcommand(sub)
                .unwrap()
                .get_arguments()
                .filter_map(|a| a.get_long().map(str::to_string))
                .filter(|l| l != "config")
                .collect();
            let mut covered: Vec<String> = every_flag(sub)
                .iter()
                .chain(&apart(sub))
                .map(|f| f.0.to_string())
                .collect();
            covered.sort();
            covered.dedup();
            let mut longs_sorted = longs.clone();
            longs_sorted.sort();
            assert_eq!(covered, longs_sorted, "{sub}: flags and their test values");
            for flags in [every_flag(sub), apart(sub)] {
                same_from_file_and_command_line(&dir, sub, &flags);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn same_from_file_and_command_line(
        dir: &std::path::Path,
        sub: &str,
        flags: &[(&str, &str, &str)],
    ) {
        {
            let file = dir.join(format!("{sub}.toml"));
            let toml: String = flags
                .iter()
                .map(|(k, _, v)| format!("{k} = {v}\n"))
                .collect();
            std::fs::write(&file, toml).unwrap();
            let from_file = expand_config(argv(&[
                sub.to_string(),
                "--config".into(),
                file.display().to_string(),
            ]))
            .unwrap();
            let mut cli = vec![
                sub.to_string(),
                "--config".into(),
                file.display().to_string(),
            ];
            for (k, v, _) in flags {
                cli.push(format!("--{k}"));
                if !v.is_empty() {
                    cli.push(v.to_string());
                }
            }
            let a = format!("{:?}", Cli::try_parse_from(from_file).unwrap());
            let b = format!("{:?}", Cli::try_parse_from(argv(&cli)).unwrap());
            assert_eq!(a, b, "{sub}");
        }
    }

    #[test]
    fn the_command_line_overrides_the_file_and_unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("dissonance-override-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("proxy.toml");
        std::fs::write(
            &file,
            "listen = \":1\"\nupstream = \"127.0.0.1:2\"\ndrop = [\"up:1%\", \"down:2%\"]\nseed = 3\nsummary = false\n",
        )
        .unwrap();
        let f = file.display().to_string();
        let words = |w: &[&str]| argv(&w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let got = expand_config(words(&[
            "proxy", "--config", &f, "--drop", "voice:5%", "--seed=9",
        ]))
        .unwrap();
        let got: Vec<String> = got
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        // From the file: listen, upstream; the command line's --drop replaces the file's
        // list and its --seed wins; `summary = false` adds nothing.
        assert_eq!(
            got,
            [
                "dissonance",
                "proxy",
                "--listen=:1",
                "--upstream=127.0.0.1:2",
                "--config",
                &f,
                "--drop",
                "voice:5%",
                "--seed=9"
            ]
        );
        std::fs::write(&file, "listen = \":1\"\nmax-clients = 3\n").unwrap();
        let e = expand_config(words(&["proxy", "--config", &f, "--upstream", "x:1"])).unwrap_err();
        assert!(
            e.to_string()
                .contains("`max-clients`: not a setting of `dissonance proxy`"),
            "{e}"
        );
        std::fs::write(&file, "summary = \"yes\"\n").unwrap();
        let e = expand_config(words(&["proxy", "--config", &f])).unwrap_err();
        assert!(
            e.to_string().contains("a switch: give true or false"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn seconds_with_and_without_units() {
        assert_eq!(parse_secs("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_secs("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_secs("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_secs("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_secs("0"), Ok(Duration::ZERO));
        assert_eq!(parse_secs("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "-1", "x", "25h", "nan", "2d", "100000"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
    }
}
