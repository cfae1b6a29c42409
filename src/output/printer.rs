//! The [`Printer`]: records and session events in the chosen [`Format`].

use std::io::{self, Write};
use std::net::SocketAddr;

use super::record::*;
use super::Format;

use crate::codec::{DecodeError, Packet};
use crate::dissect::locate::{Note, NoteKind};
use crate::dissect::pipeline::RecordSink;
use crate::dissect::record::DatagramNote;
use crate::dissect::session::{SessionEvent, SessionNames, Tracker};
use crate::output::json::{secs_f64, Names};

/// Writes records in the chosen format.
pub struct Printer<W: Write> {
    format: Format,
    out: W,
    color: bool,
    line_buffered: bool,
    count: u64,
    /// Table rows written so far (the header is repeated every [`TABLE_PAGE`] rows).
    table_rows: u64,
    /// `-F table` on a terminal (or `COLUMNS`): its width; narrower address columns
    /// below [`crate::output::width::WIDE`], every line cut to fit.
    table_width: Option<usize>,
    /// Also print session events as JSON objects (`"event": ...`) in json/ndjson.
    pub json_events: bool,
    /// Include `audio_hex` / `payload_hex` in JSON records.
    pub payload_hex: bool,
    /// One record's JSON, reused.
    buf: Vec<u8>,
    /// JSON formatting on worker threads ([`Printer::parallel`]).
    pool: Option<crate::output::fmtpool::Pool>,
    /// [`Format::Fields`]: the columns; their header is written once.
    pub fields: Option<crate::output::fields::FieldsSpec>,
    header_done: bool,
    /// Text lines for a terminal narrower than [`crate::output::width::WIDE`]: its width.
    narrow: Option<usize>,
}

impl<W: Write> Printer<W> {
    pub fn new(format: Format, out: W, color: bool, line_buffered: bool) -> Printer<W> {
        Printer {
            format,
            out,
            color,
            line_buffered,
            count: 0,
            table_rows: 0,
            table_width: (format == Format::Table)
                .then(crate::output::width::columns)
                .flatten(),
            json_events: false,
            payload_hex: true,
            buf: Vec::with_capacity(4096),
            pool: None,
            fields: None,
            header_done: false,
            narrow: (format == Format::Text)
                .then(crate::output::width::columns)
                .flatten()
                .filter(|&w| w < crate::output::width::WIDE),
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
            self.pool = Some(crate::output::fmtpool::Pool::new(
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
        tracker: &crate::dissect::session::Tracker,
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
            Format::Text if self.narrow.is_some() => {
                let w = self.narrow.unwrap_or(crate::output::width::WIDE);
                // Compact: 3 decimals, no column padding for the addresses.
                let head = format!(
                    "{:>5} {:>8.3} {}>{} {} ",
                    r.number,
                    r.rel_s,
                    r.src,
                    r.dst,
                    r.direction.arrow().trim()
                );
                let room = w.saturating_sub(head.chars().count()).max(1);
                let desc = Describe(r, names).to_string();
                let desc = crate::output::width::fit(&desc, room);
                let (c0, c1) = match (self.color, r.result.is_err()) {
                    (false, _) => ("", ""),
                    (true, true) => ("\x1b[31m", "\x1b[0m"),
                    (true, false) => (type_color(r.result), "\x1b[0m"),
                };
                writeln!(self.out, "{head}{c0}{desc}{c1}")?;
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
            Format::Fields => {
                if let Some(spec) = &self.fields {
                    if spec.header && !self.header_done {
                        spec.write_header(&mut self.out)?;
                        self.header_done = true;
                    }
                    spec.write_row(
                        &mut self.out,
                        &crate::dissect::filter::Subject {
                            head: Some(&r.head),
                            bytes: r.bytes,
                            result: r.result,
                            names: &names,
                        },
                    )?;
                }
            }
            Format::Table => {
                let a = self.table_addr_width();
                if self.table_rows % TABLE_PAGE == 0 {
                    let top = if self.table_rows == 0 {
                        table_rule(a, '┌', '─', '┬')
                    } else {
                        table_rule(a, '├', '─', '┼')
                    };
                    let header = format!(
                        "│ {:<6} ┆ {:<11} ┆ {:<a$} ┆ {:<a$} ┆ {:<4} ┆ Message",
                        "No.", "Time", "Source", "Destination", "Dir"
                    );
                    self.table_line(&top)?;
                    self.table_line(&header)?;
                    self.table_line(&table_rule(a, '╞', '═', '╪'))?;
                }
                self.table_rows += 1;
                let row = format!(
                    "│ {:<6} ┆ {:<11.6} ┆ {:<a$} ┆ {:<a$} ┆ {:<4} ┆ {}",
                    r.number,
                    r.rel_s,
                    r.src.to_string(),
                    r.dst.to_string(),
                    r.direction.arrow().trim(),
                    Describe(r, names)
                );
                self.table_line(&row)?;
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
        let who = |id: u16| crate::output::text::Client(id, names).to_string();
        let line = match ev {
            SessionEvent::SessionStarted {
                session, server, ..
            } => format!(
                "session {}{}",
                super::SessionId(*session),
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
            SessionEvent::ServerRestarted {
                server,
                old_session,
                new_session,
                cause,
                ..
            } => format!(
                "server {server} restarted: session {} -> {}, every client dropped{}",
                super::SessionId(*old_session),
                super::SessionId(*new_session),
                cause
                    .map(|c| format!(
                        "; likely cause: packet {} from {}, which the real server's reader throws on",
                        c.number, c.src
                    ))
                    .unwrap_or_default()
            ),
        };
        match self.narrow {
            Some(w) => {
                let line = format!("{:>5} {rel_s:>8.3} * {line}", "");
                writeln!(self.out, "{c0}{}{c1}", crate::output::width::fit(&line, w))?
            }
            None => writeln!(self.out, "{c0}{:>6} {rel_s:>11.6}   * {line}{c1}", "")?,
        }
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

    /// An event object of the caller's (e.g. `sniff`'s `capture_stats`): written in JSON
    /// output with events on, nothing otherwise.
    pub fn json_event(&mut self, v: &serde_json::Value) -> io::Result<()> {
        if matches!(self.format, Format::Json | Format::Ndjson) && self.json_events {
            return self.json_object(v);
        }
        Ok(())
    }

    /// The `--stats` object: written in JSON output (the array's last element, the last
    /// NDJSON line), nothing otherwise (text gets the tables).
    pub fn stats_json(&mut self, v: &serde_json::Value) -> io::Result<()> {
        if matches!(self.format, Format::Json | Format::Ndjson) {
            return self.json_object(v);
        }
        Ok(())
    }

    /// A datagram that holds no packet: the plain UDP transport's goodbye, or an empty
    /// datagram on a Dissonance flow (the real reader throws on it). A note in text
    /// output, an event object (`transport_goodbye`, `empty_datagram`) in JSON output
    /// with events on.
    pub fn datagram_note(
        &mut self,
        note: DatagramNote,
        number: u64,
        ts_ns: i64,
        rel_s: f64,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> io::Result<()> {
        let (event, text) = match note {
            DatagramNote::Goodbye => ("transport_goodbye", "transport goodbye (00 42 59 45)"),
            DatagramNote::Empty => (
                "empty_datagram",
                "empty datagram (the real reader throws on it)",
            ),
        };
        if matches!(self.format, Format::Json | Format::Ndjson) && self.json_events {
            let v = serde_json::json!({
                "event": event, "packet": number, "ts": secs_f64(ts_ns),
                "time": Rfc3339(ts_ns).to_string(), "rel": rel_s, "src": src.ip(), "src_port": src.port(),
                "dst": dst.ip(), "dst_port": dst.port(),
            });
            return self.json_object(&v);
        }
        self.note(number, rel_s, src, dst, text)
    }

    /// A game stack's retransmitted copy, a packet that cannot be completed, or units
    /// that never appeared ([`Note`]), reported while the payload at `ts_ns` was read:
    /// an object with an `event` field in JSON output (always: they stand for packets),
    /// a note line in text output. `copy_of`: the retransmitted packet's type.
    pub fn transport_note(
        &mut self,
        n: &Note,
        ts_ns: i64,
        rel_s: f64,
        copy_of: Option<crate::codec::MessageType>,
    ) -> io::Result<()> {
        use serde_json::json;
        let (src, dst) = (n.flow.src, n.flow.dst);
        // (event name, frame, its own JSON keys, the text line)
        let (event, frame, keys, text) = match &n.kind {
            NoteKind::Retransmission {
                frame,
                offset,
                bytes,
                original_frame,
            } => (
                "retransmission",
                frame,
                json!({
                    "payload_offset": offset, "size": bytes.len(),
                    "type": copy_of.map(|t| t.name()), "original_packet": original_frame,
                }),
                format!(
                    "@{offset} retransmitted copy of {}{} ({} bytes; not a new packet)",
                    copy_of.map_or("a malformed packet", |t| t.name()),
                    original_frame
                        .map(|o| format!(" first sent in #{o}"))
                        .unwrap_or_default(),
                    bytes.len()
                ),
            ),
            NoteKind::Cut {
                frame,
                offset,
                bytes,
                announced,
                reason,
            } => (
                "cut",
                frame,
                json!({
                    "payload_offset": offset, "size": bytes.len(), "announced": announced,
                    "reason": reason.as_str(), "hex": crate::output::hex::encode(bytes),
                }),
                format!(
                    "@{offset} CUT packet: {} bytes{} ({})",
                    bytes.len(),
                    announced.map(|a| format!(" of {a}")).unwrap_or_default(),
                    reason.as_str()
                ),
            ),
            NoteKind::Lost {
                frame,
                units,
                reason,
            } => (
                "lost",
                frame,
                json!({ "units": units, "reason": reason.as_str() }),
                format!(
                    "LOST {units} transport unit{} ({})",
                    if *units == 1 { "" } else { "s" },
                    reason.as_str()
                ),
            ),
        };
        if !matches!(self.format, Format::Json | Format::Ndjson) {
            return self.note(*frame, rel_s, src, dst, &text);
        }
        let mut o = json!({
            "event": event, "packet": frame, "ts": secs_f64(ts_ns),
            "time": Rfc3339(ts_ns).to_string(), "rel": rel_s, "src": src.ip(), "src_port": src.port(),
            "dst": dst.ip(), "dst_port": dst.port(),
            "transport": if n.flow.tcp { "tcp" } else { "udp" },
        });
        if let (Some(o), Some(keys)) = (o.as_object_mut(), keys.as_object()) {
            o.extend(keys.clone());
        }
        self.json_object(&o)
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
        if self.format != Format::Text {
            return Ok(());
        }
        match self.narrow {
            Some(w) => {
                let line = format!("{number:>5} {rel_s:>8.3} {src}>{dst} {what}");
                writeln!(self.out, "{}", crate::output::width::fit(&line, w))?
            }
            None => writeln!(
                self.out,
                "{number:>6} {rel_s:>11.6} {:>21} -> {:<21}      {what}",
                src.to_string(),
                dst.to_string()
            )?,
        }
        Ok(())
    }

    /// `-F table`'s address columns: full width unless the terminal is narrow.
    fn table_addr_width(&self) -> usize {
        match self.table_width {
            Some(w) if w < crate::output::width::WIDE => 15,
            _ => 21,
        }
    }

    /// One table line, cut to the terminal's width when there is one.
    fn table_line(&mut self, line: &str) -> io::Result<()> {
        match self.table_width {
            Some(w) => writeln!(self.out, "{}", crate::output::width::fit(line, w)),
            None => writeln!(self.out, "{line}"),
        }
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
            Format::Table if self.table_rows > 0 => {
                let bottom = table_rule(self.table_addr_width(), '└', '─', '┴');
                self.table_line(&bottom)?;
            }
            // The header even when no packet matched: the columns are still known.
            Format::Fields => {
                if let Some(spec) = self
                    .fields
                    .as_ref()
                    .filter(|s| s.header && !self.header_done)
                {
                    spec.write_header(&mut self.out)?;
                    self.header_done = true;
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

/// `-F table`: rows stream out as they come (nothing is kept), in columns of fixed
/// width (longer addresses push their row's later columns right); the header is
/// repeated every this many rows.
const TABLE_PAGE: u64 = 50;

/// A table's border line: the fixed columns (number, time, two addresses of width
/// `addr`, direction), then the message column's start.
fn table_rule(addr: usize, left: char, fill: char, sep: char) -> String {
    let mut s = String::new();
    s.push(left);
    for w in [6, 11, addr, addr, 4] {
        s.extend(std::iter::repeat_n(fill, w + 2));
        s.push(sep);
    }
    s.extend(std::iter::repeat_n(fill, 9));
    s
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
            "event": "session_started", "ts": secs_f64(*ts_ns), "rel": rel_s, "session": session,
            "server": server.map(|s| s.to_string()),
        }),
        SessionEvent::ClientJoined {
            ts_ns,
            session,
            client_id,
            name,
            addr,
        } => json!({
            "event": "client_joined", "ts": secs_f64(*ts_ns), "rel": rel_s, "session": session,
            "client_id": client_id, "name": name, "addr": addr.map(|a| a.to_string()),
        }),
        SessionEvent::RoomJoined {
            ts_ns,
            session,
            client_id,
            room,
        }
        | SessionEvent::RoomLeft {
            ts_ns,
            session,
            client_id,
            room,
        } => json!({
            "event": if matches!(ev, SessionEvent::RoomJoined { .. }) { "room_joined" } else { "room_left" },
            "ts": secs_f64(*ts_ns), "rel": rel_s, "session": session,
            "client_id": client_id, "name": name(*client_id), "room": room,
            "room_id": crate::codec::room_id(room),
        }),
        SessionEvent::ClientLeft {
            ts_ns,
            session,
            client_id,
            reason,
        } => json!({
            "event": "client_left", "ts": secs_f64(*ts_ns), "rel": rel_s, "session": session,
            "client_id": client_id, "name": name(*client_id), "reason": reason,
        }),
        SessionEvent::ServerRestarted {
            ts_ns,
            server,
            old_session,
            new_session,
            cause,
        } => json!({
            "event": "server_restarted", "ts": secs_f64(*ts_ns), "rel": rel_s,
            "session": new_session, "old_session": old_session, "new_session": new_session,
            "server": server.to_string(),
            "cause": cause.map(|c| json!({
                "packet": c.number, "ts": secs_f64(c.ts_ns),
                "time": Rfc3339(c.ts_ns).to_string(), "src": c.src.to_string(),
            })),
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
        match r.first_frame {
            // Joined from (or held since) an earlier datagram: where it started.
            Some(first) => write!(f, "from #{first}@{} ", r.offset)?,
            None if r.offset > 0 => write!(f, "@{} ", r.offset)?,
            None => {}
        }
        match r.result {
            Ok(p) => {
                write!(f, "{}", crate::output::text::Summary(&p.message, self.1))?;
                if !p.trailing.is_empty() {
                    write!(f, " (+{} trailing bytes)", p.trailing.len())?;
                }
                Ok(())
            }
            Err(e) => write!(f, "MALFORMED {e}"),
        }
    }
}

/// The dissector prints through this.
impl<W: Write> RecordSink for Printer<W> {
    fn on_record(
        &mut self,
        r: &Record<'_, '_>,
        tracker: &Tracker,
        session: Option<u32>,
    ) -> io::Result<()> {
        self.record_tracked(r, tracker, session)
    }
    fn on_event(
        &mut self,
        ev: &SessionEvent,
        rel_s: f64,
        names: &SessionNames<'_>,
    ) -> io::Result<()> {
        self.event(ev, rel_s, names)
    }
    fn on_note(
        &mut self,
        note: DatagramNote,
        number: u64,
        ts_ns: i64,
        rel_s: f64,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> io::Result<()> {
        self.datagram_note(note, number, ts_ns, rel_s, src, dst)
    }
    fn on_transport_note(
        &mut self,
        note: &Note,
        ts_ns: i64,
        rel_s: f64,
        copy_of: Option<crate::codec::MessageType>,
    ) -> io::Result<()> {
        self.transport_note(note, ts_ns, rel_s, copy_of)
    }
}
