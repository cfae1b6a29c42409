//! `--stats` (dump, sniff), as tshark's `-z`: statistics over the packets, printed after
//! them (or alone with `-q`).
//!
//! - `io,N`: per interval of N seconds from the first packet, packets and bytes by
//!   direction and message type (relays by their wrapped type too, as `--summary`
//!   counts them), then the totals. Intervals without packets are left out.
//! - `streams`: per voice stream, the loss, jitter and reorder figures of `check`'s voice
//!   table: the check engine itself runs beside the dissector and its table is printed.
//! - `conv`: per pair of endpoints (a client, the server, or an unknown address): packets,
//!   bytes and texts each way.
//!
//! Memory: the open interval is a fixed array; with nothing else printed (`-q`, text)
//! each closed interval is written out at once and nothing is kept
//! ([`Stats::stream_io`]); otherwise closed intervals keep their non-zero rows, at most
//! [`MAX_IO_ROWS`] (then the later intervals go into the totals only and
//! are counted as not listed); conversations are one entry per address pair, bounded by
//! clients² and at most [`MAX_CONVERSATIONS`] (later pairs counted, not listed); streams
//! are the check engine's constant state per voice path.
//!
//! No I/O here: the caller prints [`Stats::text`] or writes [`Stats::json`].

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;

use rustc_hash::FxHashMap;

use super::{Printer, Record};
use crate::capture::Payload;
use crate::check::{Checker, Config, Report};
use crate::codec::{Message, MessageType};
use crate::dissect::locate::{Note, PayloadMode};
use crate::dissect::pipeline::{Dissector, RecordSink};
use crate::dissect::record::DatagramNote;
use crate::dissect::session::{Direction, SessionEvent, SessionNames, Tracker};

/// One `--stats` request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    /// `io,N`: intervals of this many nanoseconds.
    Io(i64),
    Streams,
    Conv,
}

/// Closed-interval rows kept for the io table (32 bytes each).
pub const MAX_IO_ROWS: usize = 1 << 18;
/// Endpoint pairs kept for the conv table.
pub const MAX_CONVERSATIONS: usize = 1 << 16;

const DIRECTIONS: [Direction; 4] = [
    Direction::ClientToServer,
    Direction::ServerToClient,
    Direction::PeerToPeer,
    Direction::Unknown,
];

/// What a packet is counted as: direction, type (`None`: malformed) and, for a relay,
/// the wrapped type. A dense index, as it is bumped for every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    dir: Direction,
    ty: Option<MessageType>,
    inner: Option<MessageType>,
}

/// 12 type slots (malformed + 11 types) × 12 wrapped slots (none + 11) per direction.
const KEYS: usize = DIRECTIONS.len() * 12 * 12;

impl Key {
    fn index(self) -> usize {
        let t = self.ty.map_or(0, |t| t as usize);
        let i = self.inner.map_or(0, |t| t as usize);
        (self.dir as usize * 12 + t) * 12 + i
    }
    fn all() -> impl Iterator<Item = Key> {
        let types = || std::iter::once(None).chain(MessageType::ALL.iter().map(|&t| Some(t)));
        DIRECTIONS.iter().flat_map(move |&dir| {
            types().flat_map(move |ty| types().map(move |inner| Key { dir, ty, inner }))
        })
    }
    /// The message column, as `--summary` writes it: `ServerRelayReliable(TextData)`.
    fn label(self) -> String {
        match (self.ty, self.inner) {
            (None, _) => "MALFORMED".into(),
            (Some(t), Some(i)) => format!("{t}({i})"),
            (Some(t), None) => t.to_string(),
        }
    }
}

/// Packets and bytes per [`Key`].
#[derive(Debug, Clone)]
struct Counts(Vec<[u64; 2]>);

impl Counts {
    fn new() -> Counts {
        Counts(vec![[0; 2]; KEYS])
    }
    fn add(&mut self, k: Key, bytes: u64) {
        let c = &mut self.0[k.index()];
        c[0] += 1;
        c[1] += bytes;
    }
    /// The non-zero counts, by direction, type, wrapped type.
    fn rows(&self) -> impl Iterator<Item = (Key, [u64; 2])> + '_ {
        Key::all()
            .map(|k| (k, self.0[k.index()]))
            .filter(|(_, c)| c[0] > 0)
    }
    fn clear(&mut self) {
        self.0.iter_mut().for_each(|c| *c = [0; 2]);
    }
}

/// One row of a closed interval.
#[derive(Debug, Clone, Copy)]
struct IoRow {
    interval: u64,
    key: Key,
    packets: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Io {
    interval_ns: i64,
    /// Text rows written as intervals close ([`Stats::stream_io`]) instead of kept.
    stream: Option<Stream>,
    /// The open interval and its counts.
    open: Option<u64>,
    current: Counts,
    rows: Vec<IoRow>,
    /// Intervals (with packets) that did not fit in [`MAX_IO_ROWS`].
    not_listed: u64,
    totals: Counts,
}

impl Io {
    fn push(&mut self, rel_ns: i64, key: Key, bytes: u64) {
        let at = (rel_ns.max(0) / self.interval_ns) as u64;
        if self.open.is_some_and(|o| o != at) {
            self.close();
        }
        self.open = Some(at);
        self.current.add(key, bytes);
        self.totals.add(key, bytes);
    }
    fn close(&mut self) {
        let Some(interval) = self.open.take() else {
            return;
        };
        let (a, b) = self.bounds(interval);
        if let Some(st) = &mut self.stream {
            let span = format!("{}-{}", secs(a), secs(b));
            for (n, (key, [p, by])) in self.current.rows().enumerate() {
                st.row(
                    if n == 0 { &span } else { "" },
                    key,
                    p,
                    by,
                    self.interval_ns,
                );
            }
            self.current.clear();
            return;
        }
        let n = self.current.rows().count();
        if self.rows.len() + n > MAX_IO_ROWS {
            self.not_listed += 1;
        } else {
            let rows = self.current.rows().map(|(key, [packets, bytes])| IoRow {
                interval,
                key,
                packets,
                bytes,
            });
            self.rows.extend(rows);
        }
        self.current.clear();
    }
    /// `[start, end)` of an interval, in seconds from the first packet.
    fn bounds(&self, interval: u64) -> (i64, i64) {
        let a = interval as i64 * self.interval_ns;
        (a, a + self.interval_ns)
    }
}

/// The io rows streamed as text: a table of fixed columns in the house style, the header
/// once, each interval's rows when it closes (nothing kept), narrower below
/// [`super::width::WIDE`] columns (arrows for the direction, the message cut with `…`).
#[derive(Debug)]
struct Stream {
    /// Column widths: interval, direction, message, packets, bytes.
    widths: [usize; 5],
    narrow: bool,
    started: bool,
    out: String,
}

impl Stream {
    fn new() -> Stream {
        let narrow = super::width::columns().is_some_and(|w| w < super::width::WIDE);
        Stream {
            widths: if narrow {
                [12, 4, 32, 7, 9]
            } else {
                [12, 16, 32, 9, 12]
            },
            narrow,
            started: false,
            out: String::new(),
        }
    }
    fn rule(&mut self, left: char, fill: char, sep: char, right: char) {
        self.out.push(left);
        for (i, w) in self.widths.iter().enumerate() {
            if i > 0 {
                self.out.push(sep);
            }
            self.out.extend(std::iter::repeat_n(fill, w + 2));
        }
        self.out.push(right);
        self.out.push('\n');
    }
    fn line(&mut self, cells: [&str; 5]) {
        let w = self.widths;
        let _ = writeln!(
            self.out,
            "│ {:<a$} ┆ {:<b$} ┆ {:<c$} ┆ {:>d$} ┆ {:>e$} │",
            cells[0],
            cells[1],
            super::width::fit(cells[2], w[2]),
            cells[3],
            cells[4],
            a = w[0],
            b = w[1],
            c = w[2],
            d = w[3],
            e = w[4],
        );
    }
    fn row(&mut self, span: &str, key: Key, packets: u64, bytes: u64, interval_ns: i64) {
        if !self.started {
            self.started = true;
            let _ = writeln!(
                self.out,
                "IO statistics: intervals of {} s (those with packets)",
                secs(interval_ns)
            );
            self.rule('┌', '─', '┬', '┐');
            let dir = if self.narrow { "Dir" } else { "Direction" };
            self.line(["Interval (s)", dir, "Message", "Packets", "Bytes"]);
            self.rule('╞', '═', '╪', '╡');
        }
        let dir = if self.narrow {
            key.dir.arrow().trim()
        } else {
            key.dir.name()
        };
        self.line([
            span,
            dir,
            &key.label(),
            &packets.to_string(),
            &bytes.to_string(),
        ]);
    }
    fn end(&mut self) {
        if self.started {
            self.rule('└', '─', '┴', '┘');
        }
    }
}

/// Seconds as short as they can be written exactly: `1`, `0.5`, `2.25`.
fn secs(ns: i64) -> String {
    let s = format!("{}.{:09}", ns / 1_000_000_000, (ns % 1_000_000_000).abs());
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Who an address is, as far as the session says.
#[derive(Debug, Clone, PartialEq)]
enum Party {
    Unknown,
    Server,
    Client { name: String, id: u16 },
}

#[derive(Debug, Clone, Copy, Default)]
struct Way {
    packets: u64,
    bytes: u64,
    texts: u64,
}

#[derive(Debug)]
struct Conversation {
    /// A sent the first packet seen between the two.
    a: SocketAddr,
    b: SocketAddr,
    a_to_b: Way,
    b_to_a: Way,
    /// The session's names generation both endpoints were named at (`None`: to do).
    named: Option<u64>,
}

#[derive(Debug, Default)]
struct Conv {
    /// (src, dst) in either order → index in `list`.
    index: FxHashMap<(SocketAddr, SocketAddr), usize>,
    list: Vec<Conversation>,
    parties: FxHashMap<SocketAddr, Party>,
    /// Packets between pairs beyond [`MAX_CONVERSATIONS`] (in no row).
    not_listed_packets: u64,
}

impl Conv {
    fn push(&mut self, r: &Record<'_, '_>, tracker: &Tracker, text: bool) {
        let (src, dst) = (r.src, r.dst);
        let i = match self.index.get(&(src, dst)) {
            Some(&i) => i,
            None if self.list.len() >= MAX_CONVERSATIONS => {
                self.not_listed_packets += 1;
                return;
            }
            None => {
                let i = self.list.len();
                self.list.push(Conversation {
                    a: src,
                    b: dst,
                    a_to_b: Way::default(),
                    b_to_a: Way::default(),
                    named: None,
                });
                self.index.insert((src, dst), i);
                self.index.insert((dst, src), i);
                i
            }
        };
        // The session names the endpoints; looked up again only when it learnt a name
        // since, or while an endpoint is unknown (not per packet). An address keeps the
        // last name it had (a client that left is still named).
        let generation = tracker.names_generation();
        if self.list[i].named != Some(generation) {
            let a = self.resolve(src, r.direction == Direction::ServerToClient, tracker);
            let b = self.resolve(dst, r.direction == Direction::ClientToServer, tracker);
            self.list[i].named = (a && b).then_some(generation);
        }
        let c = &mut self.list[i];
        let way = if c.a == src {
            &mut c.a_to_b
        } else {
            &mut c.b_to_a
        };
        way.packets += 1;
        way.bytes += r.bytes.len() as u64;
        way.texts += u64::from(text);
    }

    /// Names `addr` from the session; false while it is unknown.
    fn resolve(&mut self, addr: SocketAddr, server: bool, tracker: &Tracker) -> bool {
        let known = self.parties.get(&addr);
        if server {
            if known != Some(&Party::Server) {
                self.parties.insert(addr, Party::Server);
            }
            return true;
        }
        // Compared in place: a name is copied only when it changes.
        match (tracker.client_at(addr), known) {
            (Some(c), Some(Party::Client { name, id })) if *id == c.id && *name == c.name => true,
            (Some(c), _) => {
                let p = Party::Client {
                    name: c.name.clone(),
                    id: c.id,
                };
                self.parties.insert(addr, p);
                true
            }
            (None, Some(Party::Unknown)) => false,
            (None, Some(_)) => true,
            (None, None) => {
                self.parties.insert(addr, Party::Unknown);
                false
            }
        }
    }

    fn label(&self, addr: SocketAddr) -> String {
        match self.parties.get(&addr) {
            Some(Party::Server) => format!("server\n{addr}"),
            Some(Party::Client { name, id }) => {
                format!("{}({id})\n{addr}", super::summary::clip(name))
            }
            _ => addr.to_string(),
        }
    }
    fn party_json(&self, addr: SocketAddr) -> serde_json::Value {
        use serde_json::json;
        match self.parties.get(&addr) {
            Some(Party::Server) => json!({"addr": addr.to_string(), "role": "server"}),
            Some(Party::Client { name, id }) => json!({
                "addr": addr.to_string(), "role": "client", "name": name, "client_id": id,
            }),
            _ => json!({"addr": addr.to_string(), "role": null}),
        }
    }
}

/// The `--stats` accumulators of one run.
pub struct Stats {
    io: Option<Io>,
    conv: Option<Conv>,
    /// `streams`: the check engine, fed every payload (its voice table is the result).
    checker: Option<Checker>,
    report: Option<Report>,
    first_ns: Option<i64>,
}

impl Stats {
    /// `None` when nothing was asked for.
    pub fn new(asked: &[Stat], payload: PayloadMode) -> Option<Stats> {
        if asked.is_empty() {
            return None;
        }
        let io = asked.iter().find_map(|s| match s {
            Stat::Io(ns) => Some(Io {
                interval_ns: (*ns).max(1),
                stream: None,
                open: None,
                current: Counts::new(),
                rows: Vec::new(),
                not_listed: 0,
                totals: Counts::new(),
            }),
            _ => None,
        });
        Some(Stats {
            io,
            conv: asked.contains(&Stat::Conv).then(Conv::default),
            checker: asked.contains(&Stat::Streams).then(|| {
                Checker::new(Config {
                    payload,
                    ..Config::default()
                })
            }),
            report: None,
            first_ns: None,
        })
    }

    /// Text output with nothing else printed (`-q`): the io rows are written as their
    /// intervals close, for [`Stats::take_streamed`], and not kept.
    pub fn stream_io(&mut self) {
        if let Some(io) = &mut self.io {
            io.stream = Some(Stream::new());
        }
    }

    /// Whether io rows were streamed ([`Stats::stream_io`]).
    pub fn io_streamed(&self) -> bool {
        self.io
            .as_ref()
            .and_then(|io| io.stream.as_ref())
            .is_some_and(|st| st.started)
    }

    /// The io text streamed since the last call (empty when none).
    pub fn take_streamed(&mut self) -> String {
        self.io
            .as_mut()
            .and_then(|io| io.stream.as_mut())
            .map(|st| std::mem::take(&mut st.out))
            .unwrap_or_default()
    }

    /// Feeds one payload to the dissector, printing through `printer` when given, and
    /// counts what the dissector selects (the filters and `-c` apply to `io` and `conv`;
    /// `streams` sees every payload, as `check`).
    pub fn push<W: io::Write>(
        &mut self,
        dissector: &mut Dissector,
        p: &Payload<'_>,
        printer: Option<&mut Printer<W>>,
        result: &mut io::Result<()>,
    ) {
        if let Some(c) = &mut self.checker {
            c.push(p);
        }
        self.first_ns.get_or_insert(p.ts_ns);
        if self.io.is_none() && self.conv.is_none() {
            return dissector.push_payload(p, printer, result);
        }
        let mut tee = Tee {
            stats: self,
            printer,
        };
        dissector.push_payload(p, Some(&mut tee), result);
    }

    /// The end of the input: the dissector's held packets, then the check engine's report.
    pub fn finish<W: io::Write>(
        &mut self,
        dissector: &mut Dissector,
        printer: Option<&mut Printer<W>>,
    ) -> io::Result<()> {
        let done = if self.io.is_none() && self.conv.is_none() {
            dissector.finish(printer)
        } else {
            let mut tee = Tee {
                stats: self,
                printer,
            };
            dissector.finish(Some(&mut tee))
        };
        if let Some(io) = &mut self.io {
            io.close();
            if let Some(st) = &mut io.stream {
                st.end();
            }
        }
        if let Some(c) = self.checker.take() {
            self.report = Some(c.finish());
        }
        done
    }

    fn record(&mut self, r: &Record<'_, '_>, tracker: &Tracker) {
        let (ty, inner) = match r.result {
            Ok(p) => (
                Some(p.message_type()),
                match p.message {
                    Message::ServerRelayReliable(_) | Message::ServerRelayUnreliable(_) => {
                        tracker.last_relayed_type()
                    }
                    _ => None,
                },
            ),
            Err(_) => (None, None),
        };
        let key = Key {
            dir: r.direction,
            ty,
            inner,
        };
        let bytes = r.bytes.len() as u64;
        if let Some(io) = &mut self.io {
            let rel_ns = r.ts_ns - self.first_ns.unwrap_or(r.ts_ns);
            io.push(rel_ns, key, bytes);
        }
        if let Some(c) = &mut self.conv {
            let text = ty == Some(MessageType::TextData) || inner == Some(MessageType::TextData);
            c.push(r, tracker, text);
        }
    }

    /// The tables, in text (arranged to the terminal's width), separated by blank lines.
    pub fn text(&self) -> String {
        let mut s = String::new();
        self.write_text(&mut s);
        s.trim_start_matches('\n').to_string()
    }

    fn write_text(&self, s: &mut String) {
        if let Some(io) = &self.io {
            match &io.stream {
                // The rows went out as the intervals closed.
                Some(st) if st.started => {}
                Some(_) => {
                    let _ = writeln!(s, "\nIO statistics: no packets");
                }
                None => {
                    let mut t = super::width::table([
                        "Interval (s)",
                        "Direction",
                        "Message",
                        "Packets",
                        "Bytes",
                    ]);
                    let mut last = None;
                    for r in &io.rows {
                        let (a, b) = io.bounds(r.interval);
                        let first = last != Some(r.interval);
                        last = Some(r.interval);
                        t.add_row([
                            if first {
                                format!("{}-{}", secs(a), secs(b))
                            } else {
                                String::new()
                            },
                            r.key.dir.name().to_string(),
                            r.key.label(),
                            r.packets.to_string(),
                            r.bytes.to_string(),
                        ]);
                    }
                    right_align(&mut t, &[3, 4]);
                    let _ = writeln!(
                        s,
                        "\nIO statistics: intervals of {} s (those with packets){}\n{t}",
                        secs(io.interval_ns),
                        if io.not_listed > 0 {
                            format!(
                                "; {} later intervals not listed (more than {MAX_IO_ROWS} \
                                 rows): the totals include them",
                                io.not_listed
                            )
                        } else {
                            String::new()
                        }
                    );
                }
            }
            let mut t = super::width::table(["Direction", "Message", "Packets", "Bytes"]);
            for (k, [p, b]) in io.totals.rows() {
                t.add_row([
                    k.dir.name().to_string(),
                    k.label(),
                    p.to_string(),
                    b.to_string(),
                ]);
            }
            right_align(&mut t, &[2, 3]);
            let _ = writeln!(s, "\nIO totals\n{t}");
        }
        if let Some(r) = &self.report {
            let _ = writeln!(
                s,
                "\nVoice streams (each speaker's first path, as check measures it)\n{}",
                r.voice_table()
            );
        }
        if let Some(c) = &self.conv {
            let mut t = super::width::table([
                "Endpoint A",
                "Endpoint B",
                "Packets\nA>B / B>A",
                "Bytes\nA>B / B>A",
                "Texts\nA>B / B>A",
            ]);
            for x in &c.list {
                let (ab, ba) = (&x.a_to_b, &x.b_to_a);
                t.add_row([
                    c.label(x.a),
                    c.label(x.b),
                    format!("{} / {}", ab.packets, ba.packets),
                    format!("{} / {}", ab.bytes, ba.bytes),
                    format!("{} / {}", ab.texts, ba.texts),
                ]);
            }
            right_align(&mut t, &[2, 3, 4]);
            let _ = writeln!(s, "\nConversations{}\n{t}", not_listed_note(c));
        }
    }

    /// The `stats` object (`{"stats": {...}}`), docs/json-schema.md.
    pub fn json(&self) -> serde_json::Value {
        use serde_json::json;
        let mut o = serde_json::Map::new();
        let first = self.first_ns.unwrap_or(0);
        if let Some(io) = &self.io {
            let row = |k: Key, p: u64, b: u64| {
                json!({
                    "direction": k.dir.name(), "type": k.ty.map(|t| t.name()),
                    "inner_type": k.inner.map(|t| t.name()),
                    "packets": p, "bytes": b,
                })
            };
            let mut intervals: Vec<serde_json::Value> = Vec::new();
            let mut i = 0;
            while i < io.rows.len() {
                let n = io.rows[i].interval;
                let end = io.rows[i..]
                    .iter()
                    .position(|r| r.interval != n)
                    .map_or(io.rows.len(), |e| i + e);
                let rows = &io.rows[i..end];
                let (a, _) = io.bounds(n);
                intervals.push(json!({
                    "ts": (first + a) as f64 / 1e9, "rel": a as f64 / 1e9,
                    "packets": rows.iter().map(|r| r.packets).sum::<u64>(),
                    "bytes": rows.iter().map(|r| r.bytes).sum::<u64>(),
                    "messages": rows.iter().map(|r| row(r.key, r.packets, r.bytes)).collect::<Vec<_>>(),
                }));
                i = end;
            }
            let totals: Vec<_> = io.totals.rows().map(|(k, [p, b])| row(k, p, b)).collect();
            o.insert(
                "io".into(),
                json!({
                    "interval_s": io.interval_ns as f64 / 1e9, "intervals": intervals,
                    "intervals_not_listed": io.not_listed, "totals": totals,
                }),
            );
        }
        if let Some(r) = &self.report {
            let mut out = Vec::new();
            out.push(b'[');
            for (n, v) in r.voice.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                v.json(&mut out);
            }
            out.push(b']');
            o.insert(
                "streams".into(),
                serde_json::from_slice(&out).unwrap_or_default(),
            );
        }
        if let Some(c) = &self.conv {
            let way = |w: &Way| json!({"packets": w.packets, "bytes": w.bytes, "texts": w.texts});
            let list: Vec<_> = c
                .list
                .iter()
                .map(|x| {
                    json!({
                        "a": c.party_json(x.a), "b": c.party_json(x.b),
                        "a_to_b": way(&x.a_to_b), "b_to_a": way(&x.b_to_a),
                    })
                })
                .collect();
            o.insert(
                "conv".into(),
                json!({
                    "conversations": list, "packets_not_listed": c.not_listed_packets,
                }),
            );
        }
        json!({ "stats": o })
    }
}

fn not_listed_note(c: &Conv) -> String {
    if c.not_listed_packets == 0 {
        return String::new();
    }
    format!(
        " ({} packets of later pairs not listed: more than {MAX_CONVERSATIONS} pairs)",
        c.not_listed_packets
    )
}

fn right_align(t: &mut comfy_table::Table, cols: &[usize]) {
    for &i in cols {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
}

/// The stats and the printer (if any) as one record sink.
struct Tee<'a, W: io::Write> {
    stats: &'a mut Stats,
    printer: Option<&'a mut Printer<W>>,
}

impl<W: io::Write> RecordSink for Tee<'_, W> {
    fn on_record(
        &mut self,
        r: &Record<'_, '_>,
        tracker: &Tracker,
        session: Option<u32>,
    ) -> io::Result<()> {
        self.stats.record(r, tracker);
        match &mut self.printer {
            Some(p) => p.on_record(r, tracker, session),
            None => Ok(()),
        }
    }
    fn on_event(
        &mut self,
        ev: &SessionEvent,
        rel_s: f64,
        names: &SessionNames<'_>,
    ) -> io::Result<()> {
        match &mut self.printer {
            Some(p) => p.on_event(ev, rel_s, names),
            None => Ok(()),
        }
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
        match &mut self.printer {
            Some(p) => p.on_note(note, number, ts_ns, rel_s, src, dst),
            None => Ok(()),
        }
    }
    fn on_transport_note(
        &mut self,
        note: &Note,
        ts_ns: i64,
        rel_s: f64,
        copy_of: Option<MessageType>,
    ) -> io::Result<()> {
        match &mut self.printer {
            Some(p) => p.on_transport_note(note, ts_ns, rel_s, copy_of),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_written_exactly() {
        assert_eq!(secs(1_000_000_000), "1");
        assert_eq!(secs(500_000_000), "0.5");
        assert_eq!(secs(2_250_000_000), "2.25");
        assert_eq!(secs(0), "0");
    }

    #[test]
    fn keys_are_dense_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for k in Key::all() {
            assert!(k.index() < KEYS);
            assert!(seen.insert(k.index()));
        }
        assert_eq!(seen.len(), KEYS);
    }
}
