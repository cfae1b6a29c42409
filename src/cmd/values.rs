//! Parsers for flag values every subcommand shares, so a duration, a time or an address
//! is written the same way on every flag: durations with units (`500ms`, `2s`, `1m`; a
//! bare number is seconds), times as seconds from the start or as a UTC date and time,
//! addresses as `host:port`, `:port` or `[v6]:port`.

use std::net::SocketAddr;
use std::time::Duration;

use dissonance_tools::dissect::filter::Filter;
use dissonance_tools::dissect::pipeline::TimeBound;

/// `500ms`, `2s`, `1.5m`, `1h`, `250us`, `0`; a bare number is seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    dissonance_tools::sys::units::parse_duration(s)
}

/// A duration in seconds (for flags whose library option is an f64).
pub fn seconds(s: &str) -> Result<f64, String> {
    duration(s).map(|d| d.as_secs_f64())
}

/// `--from`/`--to`: a duration from the capture's first packet (`90`, `1.5s`, `2m`), or
/// a UTC time `YYYY-MM-DDTHH:MM:SS[.frac][Z]` (a space may replace the `T`).
pub fn time_bound(s: &str) -> Result<TimeBound, String> {
    if let Ok(d) = duration(s) {
        return Ok(TimeBound::Rel(d.as_secs_f64()));
    }
    utc_ns(s).map(TimeBound::At).ok_or_else(|| {
        format!("'{s}' is neither seconds from the start (30, 1.5s, 2m) nor a UTC time like 2024-05-01T12:00:00Z")
    })
}

/// Nanoseconds since 1970 of a UTC `YYYY-MM-DD[T ]HH:MM:SS[.frac][Z]`.
fn utc_ns(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = s.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, mi, se) = (t.next()??, t.next()??, t.next().unwrap_or(Some(0))?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        frac.parse::<i64>().ok()? * 10i64.pow(9 - frac.len() as u32)
    };
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) * 1_000_000_000) + nanos)
}

/// `-Y EXPR`: compiled now, so a mistake is a usage error pointing at its column.
pub fn filter(s: &str) -> Result<Filter, String> {
    Filter::compile(s).map_err(|e| e.to_string())
}

/// `host:port`, `:port`, `[::1]:port`, or a hostname with a port (one grammar for every
/// address flag: see [`dissonance_tools::sys::units::parse_addr`]).
pub fn address(s: &str, any_host: &str) -> Result<SocketAddr, String> {
    dissonance_tools::sys::units::parse_addr(s, any_host)
}

/// An address to listen on; `:PORT` is every interface.
pub fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    address(s, "0.0.0.0")
}

/// An address to send to; `:PORT` is this host (127.0.0.1).
pub fn peer_addr(s: &str) -> Result<SocketAddr, String> {
    address(s, "127.0.0.1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("250us"), Ok(Duration::from_micros(250)));
        assert!(duration("2 parsecs").is_err());
        assert!(duration("-1s").is_err());
        assert!(duration("").is_err());
    }

    #[test]
    fn time_bounds() {
        assert_eq!(time_bound("2.5"), Ok(TimeBound::Rel(2.5)));
        assert_eq!(time_bound("1m"), Ok(TimeBound::Rel(60.0)));
        assert_eq!(
            time_bound("2023-11-14T22:13:20Z"),
            Ok(TimeBound::At(1_700_000_000_000_000_000))
        );
        assert_eq!(
            time_bound("2023-11-14 22:13:20.25"),
            Ok(TimeBound::At(1_700_000_000_250_000_000))
        );
        assert_eq!(time_bound("1970-01-01T00:00:00"), Ok(TimeBound::At(0)));
        assert!(time_bound("2023-13-01T00:00:00").is_err());
        assert!(time_bound("yesterday").is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(peer_addr(":47200"), Ok("127.0.0.1:47200".parse().unwrap()));
        assert_eq!(listen_addr(":47200"), Ok("0.0.0.0:47200".parse().unwrap()));
        assert_eq!(peer_addr("[::1]:5"), Ok("[::1]:5".parse().unwrap()));
        assert_eq!(peer_addr("localhost:9").map(|a| a.port()), Ok(9));
        assert!(peer_addr("127.0.0.1").is_err());
    }
}
