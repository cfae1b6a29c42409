//! What `serve` and `proxy` share for running in production: `--config FILE` (TOML) and
//! durations given in seconds or with a unit.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory};

use super::{Cli, Error};

/// Seconds (`30`, `1.5`) or a duration with a unit (`30s`, `500ms`, `2m`).
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * unit <= 86_400.0 => {
            Ok(Duration::from_secs_f64(v * unit))
        }
        _ => Err(format!(
            "'{s}' is not a duration: seconds (30) or with a unit (30s, 500ms, 2m), at most a day"
        )),
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
    let Ok(matches) = Cli::command().try_get_matches_from(&argv) else {
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
            .find(|a| a.get_long() == Some(long.as_str()))
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

    #[test]
    fn seconds_with_and_without_units() {
        assert_eq!(parse_secs("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_secs("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_secs("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_secs("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_secs("0"), Ok(Duration::ZERO));
        for bad in ["", "-1", "x", "1h", "nan", "2d", "100000"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
    }
}
