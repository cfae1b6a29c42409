//! `-q` and `--stats` for `dump` and `sniff`: tshark's `-q -z`.

use dissonance_tools::output::stats::Stat;

use super::view::{FormatArg, ViewArgs};

#[derive(clap::Args, Debug, Clone)]
pub struct StatsArgs {
    /// Print no packets: with --stats, only the statistics (as tshark -q -z).
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Statistics after the packets (repeatable): `io,N` packets and bytes per N
    /// seconds by direction and message type; `streams` each voice stream's loss,
    /// jitter and reordering (check's voice table); `conv` packets, bytes and texts
    /// per pair of endpoints. -Y, --type, ... and -c narrow io and conv; streams
    /// measure every packet, as check does. Text tables, or a `stats` object in JSON.
    #[arg(long = "stats", value_name = "io,N|streams|conv", value_parser = parse_stat)]
    pub stats: Vec<Stat>,
}

fn parse_stat(s: &str) -> Result<Stat, String> {
    match s {
        "streams" => Ok(Stat::Streams),
        "conv" => Ok(Stat::Conv),
        _ => {
            let Some(n) = s.strip_prefix("io,") else {
                return Err(format!(
                    "'{s}': one of io,N (N seconds, e.g. io,1 or io,500ms), streams, conv"
                ));
            };
            let secs = super::values::seconds(n)?;
            if !(0.001..=86_400.0).contains(&secs) {
                return Err(format!("'{s}': the interval is 1ms to 1 day"));
            }
            Ok(Stat::Io((secs * 1e9).round() as i64))
        }
    }
}

impl StatsArgs {
    /// Refuses combinations the statistics cannot be printed with, and `-q` where it
    /// would do nothing: `no_packets` names the flag given that prints no packets already
    /// (`--summary`, `-w`).
    pub fn check(&self, view: &ViewArgs, no_packets: Option<&str>) -> Result<(), String> {
        if self.quiet {
            if let Some(flag) = no_packets {
                return Err(format!("-q: {flag} prints no packets already"));
            }
            let per_packet = [
                (view.hex, "--hex"),
                (view.events, "--events"),
                (view.no_events, "--no-events"),
            ];
            if let Some((_, flag)) = per_packet.iter().find(|(on, _)| *on) {
                return Err(format!(
                    "{flag} applies to printed packets, and -q prints none"
                ));
            }
        }
        if self.stats.is_empty() {
            return Ok(());
        }
        if matches!(view.format, FormatArg::Fields | FormatArg::Csv) {
            return Err(
                "--stats prints tables or a JSON object: use -F text, table, json or ndjson".into(),
            );
        }
        let mut io = self.stats.iter().filter(|s| matches!(s, Stat::Io(_)));
        if io.nth(1).is_some() {
            return Err("--stats io,N: give one interval".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_tshark_spellings() {
        assert_eq!(parse_stat("io,1"), Ok(Stat::Io(1_000_000_000)));
        assert_eq!(parse_stat("io,500ms"), Ok(Stat::Io(500_000_000)));
        assert_eq!(parse_stat("streams"), Ok(Stat::Streams));
        assert_eq!(parse_stat("conv"), Ok(Stat::Conv));
        assert!(parse_stat("io,0").is_err());
        assert!(parse_stat("io").is_err());
        assert!(parse_stat("flows").is_err());
    }
}
