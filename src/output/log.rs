//! The diagnostic log of the long-running commands (proxy, replay, simulate) on stderr:
//! text lines as they always were, or with `--log-format ndjson` one JSON object per line
//! with a stable schema (docs/json-schema.md "Diagnostic log"): `ts`, `rel`, `level`,
//! `cmd`, `event`, the event's own keys, and `msg` (the text line). `--log-level` drops lines
//! below the level. Set once per process by [`init`]; until then: text, `info`.

use std::fmt::{self, Display};
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::output::json::Obj;

/// Text lines or NDJSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Ndjson,
}

/// How much to log; each level includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Level {
    /// The command cannot do what was asked.
    Error,
    /// Something went wrong with one datagram, client or file; the command goes on.
    Warn,
    /// What happens: start, clients, faults, progress, the end.
    #[default]
    Info,
    /// Also the routine: e.g. every metrics scrape.
    Debug,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// A key's value in an NDJSON line.
pub enum Field<'a> {
    /// Written as a JSON string.
    Str(&'a dyn Display),
    U(u64),
    F(f64),
}

/// A log's time keys: `ts`, the wall clock as Unix seconds, and `rel`, seconds since the
/// process (or the run) started; both in µs. `ts` is the wall clock at the start plus the
/// monotonic time since, so `ts - rel` stays the same on every line of a run even when the
/// system clock is stepped.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    start: Instant,
    wall0_ns: i64,
}

impl RunClock {
    pub fn new() -> RunClock {
        RunClock::since(Instant::now())
    }

    /// A clock whose `rel` counts from `start` (an instant taken a moment ago).
    pub fn since(start: Instant) -> RunClock {
        let wall_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        RunClock {
            start,
            wall0_ns: wall_now - start.elapsed().as_nanos() as i64,
        }
    }

    /// Seconds since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// (`ts`, `rel`) in ns, rounded to µs, `rel` after `since` the start.
    pub fn at(&self, since: Duration) -> (i64, i64) {
        let rel = (since.as_nanos() as i64 + 500) / 1000 * 1000;
        (self.wall0_ns / 1000 * 1000 + rel, rel)
    }

    /// Writes `ts` and `rel` for `since` the start.
    pub fn write(&self, o: &mut Obj<'_>, since: Duration) {
        let (ts, rel) = self.at(since);
        crate::output::json::seconds(o.key("ts"), ts);
        crate::output::json::seconds(o.key("rel"), rel);
    }

    /// `ts` and `rel` as floats, for a `serde_json` object.
    pub fn floats(&self, since: Duration) -> (f64, f64) {
        // From whole µs: one rounding, so the shortest text is the µs decimal.
        let (ts, rel) = self.at(since);
        ((ts / 1000) as f64 / 1e6, (rel / 1000) as f64 / 1e6)
    }
}

impl Default for RunClock {
    fn default() -> RunClock {
        RunClock::new()
    }
}

struct Config {
    cmd: &'static str,
    format: LogFormat,
    level: Level,
    clock: RunClock,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

fn config() -> &'static Config {
    CONFIG.get_or_init(|| Config {
        cmd: "dissonance",
        format: LogFormat::Text,
        level: Level::Info,
        clock: RunClock::new(),
    })
}

/// Sets the command name, format and level for this process (the first call wins).
pub fn init(cmd: &'static str, format: LogFormat, level: Level) {
    let _ = CONFIG.set(Config {
        cmd,
        format,
        level,
        clock: RunClock::new(),
    });
}

/// Whether a line at `level` is written (check before building costly fields).
pub fn enabled(level: Level) -> bool {
    level <= config().level
}

pub fn format() -> LogFormat {
    config().format
}

/// Writes one line: `text` as is in text format; in NDJSON `ts`, `rel`, `level`, `cmd`, `event`,
/// `fields`, then `msg` = `text`.
pub fn emit(level: Level, event: &str, fields: &[(&str, Field<'_>)], text: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let c = config();
    let mut line = Vec::with_capacity(160);
    match c.format {
        LogFormat::Text => {
            let _ = line.write_fmt(text);
        }
        LogFormat::Ndjson => {
            let mut o = Obj::new(&mut line);
            c.clock.write(&mut o, c.clock.elapsed());
            o.s("level", level.name());
            o.s("cmd", c.cmd);
            o.s("event", event);
            for (k, v) in fields {
                match v {
                    Field::Str(d) => o.s(k, &d.to_string()),
                    Field::U(n) => o.u(k, *n),
                    Field::F(x) => o.f64(k, *x),
                }
            }
            o.s("msg", &text.to_string());
            o.end();
        }
    }
    line.push(b'\n');
    // One write per line, so lines from several threads do not interleave; a closed
    // stderr must not stop the command.
    let _ = std::io::stderr().lock().write_all(&line);
}

/// `emit` at [`Level::Error`].
pub fn error(event: &str, fields: &[(&str, Field<'_>)], text: fmt::Arguments<'_>) {
    emit(Level::Error, event, fields, text)
}
/// `emit` at [`Level::Warn`].
pub fn warn(event: &str, fields: &[(&str, Field<'_>)], text: fmt::Arguments<'_>) {
    emit(Level::Warn, event, fields, text)
}
/// `emit` at [`Level::Info`].
pub fn info(event: &str, fields: &[(&str, Field<'_>)], text: fmt::Arguments<'_>) {
    emit(Level::Info, event, fields, text)
}
/// `emit` at [`Level::Debug`].
pub fn debug(event: &str, fields: &[(&str, Field<'_>)], text: fmt::Arguments<'_>) {
    emit(Level::Debug, event, fields, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_include_the_ones_before() {
        assert!(Level::Error < Level::Warn && Level::Warn < Level::Info);
        assert!(Level::Info < Level::Debug);
        assert_eq!(Level::default(), Level::Info);
    }
}
