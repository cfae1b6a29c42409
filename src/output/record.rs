//! A packet with where and when it was seen ([`Record`]), and its JSON object: capture
//! metadata, then the packet schema. Shared by the [`Printer`](super::Printer) and the
//! formatter pool ([`super::fmtpool`]).

use std::net::SocketAddr;

use serde::ser::{Serialize, Serializer};

use crate::codec::{DecodeError, Packet};
use crate::dissect::session::Direction;
use crate::output::json::{write_packet_fields, Names, Obj};

pub use crate::dissect::record::{Head, Record};

/// Appends the JSON object of a record: capture metadata, then the packet schema.
pub(crate) fn record_json<N: Names + ?Sized>(
    out: &mut Vec<u8>,
    r: &Record<'_, '_>,
    names: &N,
    payload_hex: bool,
) {
    record_json_parts(out, &r.head, r.bytes, r.result, names, payload_hex)
}

/// [`record_json`] of a record given in parts.
pub(crate) fn record_json_parts<N: Names + ?Sized>(
    out: &mut Vec<u8>,
    head: &Head,
    bytes: &[u8],
    result: &Result<Packet<'_>, DecodeError>,
    names: &N,
    payload_hex: bool,
) {
    let mut o = Obj::with_payload_hex(out, payload_hex);
    write_head(&mut o, head, result.is_err());
    write_packet_fields(&mut o, bytes, result, names);
    o.end();
}

/// As [`record_json`] for a voice record whose text is cached (see
/// [`crate::output::json::cached_voice_raw`]), from its bytes alone: no decode. False when it is
/// not cached; nothing is written then.
pub(crate) fn record_json_cached_voice<N: Names + ?Sized>(
    out: &mut Vec<u8>,
    head: &Head,
    bytes: &[u8],
    names: &N,
) -> bool {
    let mark = out.len();
    let mut o = Obj::with_payload_hex(out, false);
    write_head(&mut o, head, false);
    if crate::output::json::cached_voice_raw(&mut o, bytes, names) {
        o.end();
        true
    } else {
        out.truncate(mark);
        false
    }
}

fn write_head(o: &mut Obj<'_>, r: &Head, malformed: bool) {
    o.u("packet", r.number);
    thread_local! {
        static WHOLE: std::cell::RefCell<[crate::output::json::WholeSeconds; 2]> =
            std::cell::RefCell::new(Default::default());
    }
    WHOLE.with(|w| {
        let [ts, rel] = &mut *w.borrow_mut();
        crate::output::json::seconds_cached(o.key("ts"), r.ts_ns, ts);
        Rfc3339(r.ts_ns).write_json_cached(o.key("time"));
        // rel_s is a whole number of nanoseconds over 1e9: print it exactly, without ryu.
        crate::output::json::seconds_cached(o.key("rel"), (r.rel_s * 1e9).round() as i64, rel);
    });
    // Addresses to direction are the same for every packet of a flow: their text is
    // cached per flow (the output is byte-identical, just formatted once).
    let key = FlowText {
        src: r.src,
        dst: r.dst,
        tcp: r.transport == "tcp",
        offset: r.offset,
        index: r.index,
        direction: r.direction,
        malformed,
    };
    FLOW_TEXT.with(|cache| {
        let mut cache = cache.borrow_mut();
        let slot = &mut cache[key.slot()];
        if slot.0.as_ref() != Some(&key) {
            let mut text = Vec::with_capacity(160);
            let mut f = Obj::continuing(&mut text);
            ip(f.key("src"), r.src.ip());
            f.u("src_port", r.src.port());
            ip(f.key("dst"), r.dst.ip());
            f.u("dst_port", r.dst.port());
            f.lit("transport", r.transport);
            f.u("payload_offset", r.offset as u64);
            if r.index > 0 {
                f.u("index_in_payload", r.index as u64);
            }
            f.lit("direction", r.direction.name());
            f.b("malformed", malformed);
            *slot = (Some(key), text);
        }
        o.out.extend_from_slice(&slot.1);
    });
    if let Some(f) = r.first_frame {
        o.u("first_packet", f);
    }
}

/// The flow part of a record's metadata, the key of its cached text.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FlowText {
    src: SocketAddr,
    dst: SocketAddr,
    /// The transport, as a flag: the key is hashed and compared for every record.
    tcp: bool,
    offset: usize,
    index: usize,
    direction: Direction,
    malformed: bool,
}

impl FlowText {
    fn slot(&self) -> usize {
        use crate::dissect::locate::addr_word as word;
        let h = (word(&self.src) ^ word(&self.dst).rotate_left(29) ^ self.offset as u64)
            .wrapping_add(((self.index as u64) << 3) ^ ((self.direction as u64) << 1))
            .wrapping_add(u64::from(self.tcp) << 7 | u64::from(self.malformed));
        crate::dissect::locate::slot_of(h, 6)
    }
}

thread_local! {
    /// 64 direct-mapped slots: a capture has few flows, a miss just formats again.
    static FLOW_TEXT: std::cell::RefCell<Vec<(Option<FlowText>, Vec<u8>)>> =
        std::cell::RefCell::new(vec![(None, Vec::new()); 64]);
}

/// What goes before the `count`-th object: the array's opening or a comma (JSON), or
/// nothing (NDJSON).
pub(super) fn json_separator(array: bool, count: u64) -> &'static [u8] {
    match (array, count) {
        (false, _) => b"",
        (true, 0) => b"[\n",
        (true, _) => b",\n",
    }
}

/// An IP address as a JSON string (IPv4 by hand: it is on every record).
fn ip(out: &mut Vec<u8>, a: std::net::IpAddr) {
    match a {
        std::net::IpAddr::V4(v4) => {
            out.push(b'"');
            for (i, b) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                crate::output::json::uint(out, u64::from(*b));
            }
            out.push(b'"');
        }
        v6 => crate::output::json::string(out, &v6.to_string()),
    }
}

/// Formats a Unix nanosecond timestamp as RFC 3339 UTC with microseconds.
pub struct Rfc3339(pub i64);

impl Rfc3339 {
    /// (year, month, day, hour, minute, second, microsecond), UTC, from the `time`
    /// crate's calendar. Every i64 of nanoseconds is a valid `time` instant.
    fn parts(&self) -> (i64, i64, i64, i64, i64, i64, i64) {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        (
            i64::from(t.year()),
            i64::from(u8::from(t.month())),
            i64::from(t.day()),
            i64::from(t.hour()),
            i64::from(t.minute()),
            i64::from(t.second()),
            i64::from(t.microsecond()),
        )
    }

    /// As [`Rfc3339::write_json`], reusing the date and time of day while the second
    /// stays the same (consecutive records mostly share it).
    pub fn write_json_cached(&self, out: &mut Vec<u8>) {
        thread_local! {
            static LAST: std::cell::RefCell<(i64, Vec<u8>)> = const {
                std::cell::RefCell::new((i64::MIN, Vec::new()))
            };
        }
        let secs = self.0.div_euclid(1_000_000_000);
        let micros = self.0.rem_euclid(1_000_000_000) / 1000;
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            if last.0 != secs {
                let mut full = Vec::with_capacity(32);
                Rfc3339(secs * 1_000_000_000).write_json(&mut full);
                // Keep `"YYYY-MM-DDTHH:MM:SS.`; the microseconds and `Z"` follow.
                full.truncate(full.len() - 8);
                *last = (secs, full);
            }
            out.extend_from_slice(&last.1);
        });
        let mut digits = [b'0'; 8];
        let mut x = micros;
        for d in digits[..6].iter_mut().rev() {
            *d = b'0' + (x % 10) as u8;
            x /= 10;
        }
        digits[6] = b'Z';
        digits[7] = b'"';
        out.extend_from_slice(&digits);
    }

    /// As a JSON string, without going through `fmt` (it is on every dump record).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let (y, mo, d, h, mi, s, us) = self.parts();
        let digits = |out: &mut Vec<u8>, v: i64, n: u32| {
            for k in (0..n).rev() {
                out.push(b'0' + ((v / 10i64.pow(k)) % 10) as u8);
            }
        };
        out.push(b'"');
        if (0..10000).contains(&y) {
            digits(out, y, 4);
        } else {
            out.extend_from_slice(y.to_string().as_bytes());
        }
        for (sep, v) in [(b'-', mo), (b'-', d), (b'T', h), (b':', mi), (b':', s)] {
            out.push(sep);
            digits(out, v, 2);
        }
        out.push(b'.');
        digits(out, us, 6);
        out.extend_from_slice(b"Z\"");
    }
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d, h, mi, s, us) = self.parts();
        write!(f, "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        assert_eq!(
            super::Rfc3339(1_795_514_472_912_907_000).to_string(),
            "2026-11-24T10:01:12.912907Z"
        );
        assert_eq!(super::Rfc3339(0).to_string(), "1970-01-01T00:00:00.000000Z");
        // Before the epoch, and the ends of the i64 range.
        assert_eq!(
            super::Rfc3339(-1_000).to_string(),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            super::Rfc3339(i64::MAX).to_string(),
            "2262-04-11T23:47:16.854775Z"
        );
        assert_eq!(
            super::Rfc3339(i64::MIN).to_string(),
            "1677-09-21T00:12:43.145224Z"
        );
    }
}
