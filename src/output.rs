//! One output layer for every subcommand that prints packets (dump, sniff, proxy): text
//! lines, a table, a JSON array or NDJSON, all from the same [`Record`], so a packet looks
//! the same wherever it is printed. The JSON object is the `decode --json` schema plus
//! capture metadata (see README, "JSON schema").

use std::io::{self, Write};
use std::net::SocketAddr;

use serde::ser::{Serialize, Serializer};

use crate::codec::{DecodeError, Packet};
use crate::json::{write_packet_fields, Names, Obj};
use crate::session::{Direction, SessionEvent};

/// Output formats (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per message: time, addresses, direction, annotated summary.
    Text,
    /// A table (comfy-table); rows are kept until the end, so prefer it for small captures.
    Table,
    /// One JSON array of packet objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// One Dissonance packet found in a capture, with where and when it was seen (the
/// [`Head`] fields read through `Deref`).
pub struct Record<'r, 'a> {
    pub head: Head,
    pub bytes: &'a [u8],
    pub result: &'r Result<Packet<'a>, DecodeError>,
}

impl std::ops::Deref for Record<'_, '_> {
    type Target = Head;
    fn deref(&self) -> &Head {
        &self.head
    }
}

/// Where and when a packet was seen: a [`Record`] without the packet.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    /// Packet number in the capture (1-based).
    pub number: u64,
    /// Capture timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// Seconds since the first packet of the capture.
    pub rel_s: f64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transport: &'static str,
    /// Where the packet starts in the transport payload.
    pub offset: usize,
    /// Its position among the packets of the same payload (0 for the first).
    pub index: usize,
    pub direction: Direction,
}

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
/// [`crate::json::cached_voice_raw`]), from its bytes alone: no decode. False when it is
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
    if crate::json::cached_voice_raw(&mut o, bytes, names) {
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
        static WHOLE: std::cell::RefCell<[crate::json::WholeSeconds; 2]> =
            std::cell::RefCell::new(Default::default());
    }
    WHOLE.with(|w| {
        let [ts, rel] = &mut *w.borrow_mut();
        crate::json::seconds_cached(o.key("ts"), r.ts_ns, ts);
        Rfc3339(r.ts_ns).write_json_cached(o.key("time"));
        // rel_s is a whole number of nanoseconds over 1e9: print it exactly, without ryu.
        crate::json::seconds_cached(o.key("rel"), (r.rel_s * 1e9).round() as i64, rel);
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
        use crate::locate::addr_word as word;
        let h = (word(&self.src) ^ word(&self.dst).rotate_left(29) ^ self.offset as u64)
            .wrapping_add(((self.index as u64) << 3) ^ ((self.direction as u64) << 1))
            .wrapping_add(u64::from(self.tcp) << 7 | u64::from(self.malformed));
        crate::locate::slot_of(h, 6)
    }
}

thread_local! {
    /// 64 direct-mapped slots: a capture has few flows, a miss just formats again.
    static FLOW_TEXT: std::cell::RefCell<Vec<(Option<FlowText>, Vec<u8>)>> =
        std::cell::RefCell::new(vec![(None, Vec::new()); 64]);
}

/// What goes before the `count`-th object: the array's opening or a comma (JSON), or
/// nothing (NDJSON).
fn json_separator(array: bool, count: u64) -> &'static [u8] {
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
                crate::json::uint(out, u64::from(*b));
            }
            out.push(b'"');
        }
        v6 => crate::json::string(out, &v6.to_string()),
    }
}

/// Formats a Unix nanosecond timestamp as RFC 3339 UTC with microseconds.
pub struct Rfc3339(pub i64);

impl Rfc3339 {
    /// (year, month, day, hour, minute, second, microsecond), UTC.
    fn parts(&self) -> (i64, i64, i64, i64, i64, i64, i64) {
        let secs = self.0.div_euclid(1_000_000_000);
        let micros = self.0.rem_euclid(1_000_000_000) / 1000;
        let days = secs.div_euclid(86400);
        let sod = secs.rem_euclid(86400);
        // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d, sod / 3600, (sod / 60) % 60, sod % 60, micros)
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

/// Writes records in the chosen format.
pub struct Printer<W: Write> {
    format: Format,
    out: W,
    color: bool,
    line_buffered: bool,
    count: u64,
    table: Option<comfy_table::Table>,
    /// Also print session events as JSON objects (`"event": ...`) in json/ndjson.
    pub json_events: bool,
    /// Include `audio_hex` / `payload_hex` in JSON records.
    pub payload_hex: bool,
    /// One record's JSON, reused.
    buf: Vec<u8>,
    /// JSON formatting on worker threads ([`Printer::parallel`]).
    pool: Option<crate::fmtpool::Pool>,
}

impl<W: Write> Printer<W> {
    pub fn new(format: Format, out: W, color: bool, line_buffered: bool) -> Printer<W> {
        let table = (format == Format::Table).then(|| {
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
            t.set_header(["No.", "Time", "Source", "Destination", "Dir", "Message"]);
            t
        });
        Printer {
            format,
            out,
            color,
            line_buffered,
            count: 0,
            table,
            json_events: false,
            payload_hex: true,
            buf: Vec::with_capacity(4096),
            pool: None,
        }
    }

    /// Formats JSON/NDJSON records on `workers` threads and writes them, in order, to
    /// `out` from another thread (instead of this printer's own writer). Other formats
    /// are not affected. Used by `dump` on files, where formatting is most of the work.
    /// `map`: the mapped capture the records' bytes come from, if any (read in place).
    pub fn parallel(
        &mut self,
        out: Box<dyn Write + Send>,
        workers: usize,
        map: Option<crate::capture::SharedMap>,
    ) {
        if matches!(self.format, Format::Json | Format::Ndjson) {
            self.pool = Some(crate::fmtpool::Pool::new(
                out,
                workers.max(1),
                self.payload_hex,
                map,
            ));
        }
    }

    /// Like [`Printer::record`], with the names taken from the tracker.
    pub fn record_tracked(
        &mut self,
        r: &Record<'_, '_>,
        tracker: &crate::session::Tracker,
        session: Option<u32>,
    ) -> io::Result<()> {
        if let Some(pool) = &mut self.pool {
            let sep = self.format == Format::Json;
            pool.record(r, tracker, session, json_separator(sep, self.count))?;
            self.count += 1;
            return Ok(());
        }
        self.record(r, &tracker.names(session))
    }

    pub fn record<N: Names + ?Sized>(&mut self, r: &Record<'_, '_>, names: &N) -> io::Result<()> {
        match self.format {
            Format::Ndjson => {
                record_json(&mut self.buf, r, names, self.payload_hex);
                self.buf.push(b'\n');
            }
            Format::Json => {
                self.buf.extend_from_slice(json_separator(true, self.count));
                record_json(&mut self.buf, r, names, self.payload_hex);
            }
            Format::Text => {
                let (c0, c1) = if !self.color {
                    ("", "")
                } else if r.result.is_err() {
                    ("\x1b[31m", "\x1b[0m")
                } else {
                    (type_color(r.result), "\x1b[0m")
                };
                writeln!(
                    self.out,
                    "{:>6} {:>11.6} {:>21} -> {:<21} {} {c0}{}{c1}",
                    r.number,
                    r.rel_s,
                    r.src.to_string(),
                    r.dst.to_string(),
                    r.direction.arrow(),
                    Describe(r, names)
                )?;
            }
            Format::Table => {
                if let Some(t) = &mut self.table {
                    t.add_row([
                        r.number.to_string(),
                        format!("{:.6}", r.rel_s),
                        r.src.to_string(),
                        r.dst.to_string(),
                        r.direction.arrow().trim().to_string(),
                        Describe(r, names).to_string(),
                    ]);
                }
            }
        }
        self.count += 1;
        self.flush_buf(self.line_buffered)
    }

    /// Hands the JSON gathered so far to the writer: when asked, or in 64 KiB blocks
    /// (records are built in our own buffer, so a BufWriter would only copy them again).
    fn flush_buf(&mut self, now: bool) -> io::Result<()> {
        if now || self.buf.len() >= 1 << 16 {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
            if now {
                self.out.flush()?;
            }
        }
        Ok(())
    }

    /// A session event (text format only: the structured formats carry the packets).
    pub fn event<N: Names + ?Sized>(
        &mut self,
        ev: &SessionEvent,
        rel_s: f64,
        names: &N,
    ) -> io::Result<()> {
        if matches!(self.format, Format::Json | Format::Ndjson) && self.json_events {
            let v = event_json(ev, rel_s, names);
            return self.json_object(&v);
        }
        if self.format != Format::Text {
            return Ok(());
        }
        let (c0, c1) = if self.color {
            ("\x1b[2m", "\x1b[0m")
        } else {
            ("", "")
        };
        let who = |id: u16| crate::text::Client(id, names).to_string();
        let line = match ev {
            SessionEvent::SessionStarted {
                session, server, ..
            } => format!(
                "session {session} (0x{session:08X}){}",
                server
                    .map(|s| format!(" on server {s}"))
                    .unwrap_or_default()
            ),
            SessionEvent::ClientJoined {
                client_id,
                name,
                addr,
                ..
            } => format!(
                "{name}({client_id}) joined{}",
                addr.map(|a| format!(" from {a}")).unwrap_or_default()
            ),
            SessionEvent::RoomJoined {
                client_id, room, ..
            } => format!("{} listens to room {room}", who(*client_id)),
            SessionEvent::RoomLeft {
                client_id, room, ..
            } => format!("{} stopped listening to room {room}", who(*client_id)),
            SessionEvent::ClientLeft {
                client_id, reason, ..
            } => format!("{} left ({reason})", who(*client_id)),
        };
        writeln!(self.out, "{c0}{:>6} {rel_s:>11.6}   * {line}{c1}", "")?;
        if self.line_buffered {
            self.out.flush()?;
        }
        Ok(())
    }

    fn json_object(&mut self, v: &serde_json::Value) -> io::Result<()> {
        // Into the same buffer as the records, so events stay in order with them.
        let start = self.buf.len();
        self.buf
            .extend_from_slice(json_separator(self.format == Format::Json, self.count));
        serde_json::to_writer(&mut self.buf, v)?;
        if self.format == Format::Ndjson {
            self.buf.push(b'\n');
        }
        self.count += 1;
        if let Some(pool) = &mut self.pool {
            pool.raw(&self.buf[start..])?;
            self.buf.truncate(start);
            return Ok(());
        }
        self.flush_buf(self.line_buffered)
    }

    /// The plain UDP transport's goodbye datagram: a note in text output, an event
    /// object in JSON output with events on.
    pub fn bye(
        &mut self,
        number: u64,
        ts_ns: i64,
        rel_s: f64,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> io::Result<()> {
        if matches!(self.format, Format::Json | Format::Ndjson) && self.json_events {
            let v = serde_json::json!({
                "event": "transport_goodbye", "packet": number, "ts": ts_ns as f64 / 1e9,
                "time": Rfc3339(ts_ns).to_string(), "rel": rel_s, "src": src.ip(), "src_port": src.port(),
                "dst": dst.ip(), "dst_port": dst.port(),
            });
            return self.json_object(&v);
        }
        self.note(number, rel_s, src, dst, "transport goodbye (00 42 59 45)")
    }

    /// A note line in text output.
    pub fn note(
        &mut self,
        number: u64,
        rel_s: f64,
        src: SocketAddr,
        dst: SocketAddr,
        what: &str,
    ) -> io::Result<()> {
        if self.format == Format::Text {
            writeln!(
                self.out,
                "{number:>6} {rel_s:>11.6} {:>21} -> {:<21}      {what}",
                src.to_string(),
                dst.to_string()
            )?;
        }
        Ok(())
    }

    /// Ends the output (closes the JSON array, prints the table) and flushes.
    pub fn finish(&mut self) -> io::Result<()> {
        if let Some(mut pool) = self.pool.take() {
            if self.format == Format::Json {
                pool.raw(if self.count == 0 { b"[]\n" } else { b"\n]\n" })?;
            }
            return pool.finish();
        }
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        match self.format {
            Format::Json => self
                .out
                .write_all(if self.count == 0 { b"[]\n" } else { b"\n]\n" })?,
            Format::Table => {
                if let Some(t) = self.table.take() {
                    writeln!(self.out, "{t}")?;
                }
            }
            _ => {}
        }
        self.out.flush()
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

fn event_json<N: Names + ?Sized>(ev: &SessionEvent, rel_s: f64, names: &N) -> serde_json::Value {
    use serde_json::json;
    let name = |id: u16| names.client(id).map(str::to_string);
    match ev {
        SessionEvent::SessionStarted {
            ts_ns,
            session,
            server,
        } => json!({
            "event": "session_started", "ts": *ts_ns as f64 / 1e9, "rel": rel_s, "session": session,
            "server": server.map(|s| s.to_string()),
        }),
        SessionEvent::ClientJoined {
            ts_ns,
            session,
            client_id,
            name,
            addr,
        } => json!({
            "event": "client_joined", "ts": *ts_ns as f64 / 1e9, "rel": rel_s, "session": session,
            "client_id": client_id, "name": name, "addr": addr.map(|a| a.to_string()),
        }),
        SessionEvent::RoomJoined {
            ts_ns,
            session,
            client_id,
            room,
        } => json!({
            "event": "room_joined", "ts": *ts_ns as f64 / 1e9, "rel": rel_s, "session": session,
            "client_id": client_id, "name": name(*client_id), "room": room,
            "room_id": crate::codec::room_id(room),
        }),
        SessionEvent::RoomLeft {
            ts_ns,
            session,
            client_id,
            room,
        } => json!({
            "event": "room_left", "ts": *ts_ns as f64 / 1e9, "rel": rel_s, "session": session,
            "client_id": client_id, "name": name(*client_id), "room": room,
            "room_id": crate::codec::room_id(room),
        }),
        SessionEvent::ClientLeft {
            ts_ns,
            session,
            client_id,
            reason,
        } => json!({
            "event": "client_left", "ts": *ts_ns as f64 / 1e9, "rel": rel_s, "session": session,
            "client_id": client_id, "name": name(*client_id), "reason": reason,
        }),
    }
}

fn type_color(r: &Result<Packet<'_>, DecodeError>) -> &'static str {
    use crate::codec::MessageType as T;
    match r.as_ref().map(|p| p.message_type()) {
        Ok(T::VoiceData | T::ServerRelayUnreliable) => "\x1b[36m",
        Ok(T::TextData | T::ServerRelayReliable) => "\x1b[32m",
        Ok(T::HandshakeRequest | T::HandshakeResponse | T::ClientState | T::DeltaChannelState) => {
            "\x1b[33m"
        }
        Ok(T::ErrorWrongSession | T::RemoveClient) => "\x1b[35m",
        _ => "",
    }
}

/// The one-line description used by text and table output.
struct Describe<'p, 'r, 'a, N: ?Sized>(&'p Record<'r, 'a>, &'p N);

impl<N: Names + ?Sized> std::fmt::Display for Describe<'_, '_, '_, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.0;
        if r.offset > 0 {
            write!(f, "@{} ", r.offset)?;
        }
        match r.result {
            Ok(p) => {
                write!(f, "{}", crate::text::Summary(&p.message, self.1))?;
                if !p.trailing.is_empty() {
                    write!(f, " (+{} trailing bytes)", p.trailing.len())?;
                }
                Ok(())
            }
            Err(e) => write!(f, "MALFORMED {e}"),
        }
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
    }
}
