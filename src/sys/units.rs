//! Units every command writes the same way. Durations: a number with an optional unit
//! (`ns`, `us`, `ms`, `s`, `m`, `h`); a bare number is seconds.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// `500ms`, `2s`, `1.5m`, `1h`, `250us`, `0`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit {
        "" | "s" | "sec" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "'{s}' is not a duration: a number with an optional unit (ns, us, ms, s, m, h), e.g. 500ms, 2s, 1m"
            ))
        }
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale <= 1e9 => {
            Ok(Duration::from_secs_f64(v * scale))
        }
        _ => Err(format!("'{s}' is not a duration like 500ms, 2s or 1m")),
    }
}

/// `host:port`, `:port` (`any_host` then: all interfaces for a listener, this host for a
/// peer), `[::1]:port`, or a hostname with a port; the first address it resolves to.
pub fn parse_addr(s: &str, any_host: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("{any_host}{s}")
    } else {
        s.to_string()
    };
    full.to_socket_addrs()
        .map_err(|e| format!("'{s}': {e} (expected HOST:PORT, :PORT or [IPv6]:PORT)"))?
        .next()
        .ok_or_else(|| format!("'{s}': no address"))
}
