//! `check`: a rule engine over Dissonance traffic. Sans-IO: transport payloads go in
//! through [`Checker::push`] (a [`Datagram`] with its capture metadata), findings come
//! out through [`Checker::poll_finding`], and [`Checker::finish`] returns the report with
//! every finding grouped by rule and the per-speaker voice quality table. The engine owns
//! its own [`Locator`] and session [`Tracker`], so `check`, `sniff --check` and the proxy
//! all run the same rules on the same state.
//!
//! The rules are in [`rules`] (stable ids, severities, explanations). Every real message
//! appears several times in a capture (echoed ClientStates, forwarded voice); findings
//! about the same thing are folded into one finding with a repeat count, so a report
//! stays short however long the capture.

mod feed;
mod live;
pub mod report;
pub mod rules;
pub mod voice;

pub use live::Live;

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use rustc_hash::{FxHashMap, FxHasher};

use crate::codec::{
    CodecSettings, DecodeError, DecodeErrorKind, Message, MessageType, Packet, ServerRelay,
    ALWAYS_SEND, DEFAULT_BUFFER_SIZE,
};
use crate::dissect::locate::{Classified, FlowKey, Found, Locator, PayloadMode};
use crate::dissect::pipeline::Datagram;
use crate::dissect::session::{SessionEvent, Tracker};

pub use feed::check_capture;
pub use report::{Report, RuleCount, VoiceRow};
pub use rules::{Rule, Severity};
use voice::{Arrival, Leg};

/// Thresholds and settings of the engine.
#[derive(Debug, Clone)]
pub struct Config {
    pub payload: PayloadMode,
    /// D040: more consecutive missing voice frames than this is a finding.
    pub max_gap: u64,
    /// D042: a packet later than this many positions is a finding.
    pub max_reorder: u64,
    /// D012: this many stale-session packets from one client is a storm.
    pub storm: u64,
    /// D011: how long the server has to answer a wrong session.
    pub answer_timeout_ns: i64,
    /// Findings kept in full per rule (the rest are counted).
    pub max_kept_per_rule: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            payload: PayloadMode::Auto,
            max_gap: 2,
            max_reorder: 2,
            storm: 10,
            answer_timeout_ns: 1_000_000_000,
            max_kept_per_rule: 100,
        }
    }
}

/// Packet bytes shown with a finding are cut to this length.
const SHOWN_BYTES: usize = 256;

/// One rule violation at one packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule: &'static Rule,
    /// Capture frame number of the packet.
    pub number: u64,
    pub ts_ns: i64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub tcp: bool,
    /// Where the packet starts in the datagram.
    pub offset: usize,
    pub session: Option<u32>,
    /// The client the finding is about (name as the session knows it).
    pub client: Option<String>,
    pub client_id: Option<u16>,
    pub message: String,
    /// The packet (cut to 256 bytes), and the byte range of the offending field in it.
    pub bytes: Vec<u8>,
    pub mark: Option<(usize, usize)>,
    /// Further occurrences folded into this finding (echoes, forwards, repeats).
    pub repeats: u64,
}

impl Finding {
    pub fn severity(&self) -> Severity {
        self.rule.severity
    }
    /// `alice(0)`, `id 7`, or `-`.
    pub fn client_label(&self) -> String {
        match (&self.client, self.client_id) {
            (Some(n), Some(id)) => format!("{n}({id})"),
            (Some(n), None) => n.clone(),
            (None, Some(id)) => format!("id {id}"),
            (None, None) => "-".into(),
        }
    }
    /// One line for live output: `error D024 #12 alice(0) 127.0.0.1:1 -> ...: message`.
    pub fn one_line(&self) -> String {
        format!(
            "{} {} {} packet {} {} {} -> {}: {}",
            self.rule.severity,
            self.rule.id,
            self.rule.name,
            self.number,
            self.client_label(),
            self.src,
            self.dst,
            self.message
        )
    }
}

const CLIENT: u8 = 1;
const SERVER: u8 = 2;

#[derive(Debug, Default)]
struct AddrState {
    /// HandshakeRequests not answered yet.
    requests: u32,
    requested_name: Option<String>,
    /// Session and id the last HandshakeResponse to this address assigned.
    assigned: Option<(u32, u16)>,
    /// The server told this address its session is wrong (ErrorWrongSession).
    told: bool,
    /// Stale-session packets sent after being told, by session.
    stale: FxHashMap<u32, u64>,
}

/// Packet context shared by every rule check of one packet.
struct Ctx<'p> {
    number: u64,
    ts_ns: i64,
    src: SocketAddr,
    dst: SocketAddr,
    tcp: bool,
    offset: usize,
    /// The whole packet, trailing bytes included.
    bytes: &'p [u8],
}

impl<'p> Ctx<'p> {
    fn new(d: &Datagram<'_>, offset: usize, bytes: &'p [u8]) -> Ctx<'p> {
        Ctx {
            number: d.number,
            ts_ns: d.ts_ns,
            src: d.src,
            dst: d.dst,
            tcp: d.tcp,
            offset,
            bytes,
        }
    }
}

/// What a finding is about, beyond the packet.
#[derive(Clone, Copy, Default)]
struct About {
    session: Option<u32>,
    client: Option<u16>,
    mark: Option<(usize, usize)>,
    /// Findings with the same rule and key are folded into the first.
    fold: Option<u64>,
}

fn key(parts: impl Hash) -> u64 {
    let mut h = FxHasher::default();
    parts.hash(&mut h);
    h.finish()
}

/// The roles seen of each address (CLIENT, SERVER bits). Asked several times for every
/// packet, so a direct-mapped cache of the map's answers sits in front of it.
struct Roles {
    map: FxHashMap<SocketAddr, u8>,
    cache: [std::cell::Cell<Option<(SocketAddr, u8)>>; 64],
}

impl Default for Roles {
    fn default() -> Self {
        Roles {
            map: FxHashMap::default(),
            cache: std::array::from_fn(|_| std::cell::Cell::new(None)),
        }
    }
}

impl Roles {
    fn slot(&self, a: SocketAddr) -> &std::cell::Cell<Option<(SocketAddr, u8)>> {
        &self.cache[crate::dissect::locate::slot_of(crate::dissect::locate::addr_word(&a), 6)]
    }

    fn get(&self, a: SocketAddr) -> u8 {
        let slot = self.slot(a);
        match slot.get() {
            Some((b, r)) if b == a => r,
            _ => {
                let r = self.map.get(&a).copied().unwrap_or(0);
                slot.set(Some((a, r)));
                r
            }
        }
    }

    fn mark(&mut self, a: SocketAddr, role: u8) {
        if self.get(a) & role == role {
            return;
        }
        let r = self.map.entry(a).or_default();
        *r |= role;
        let r = *r;
        self.slot(a).set(Some((a, r)));
    }
}

/// Everything but the locator, so the locator's callback can borrow it.
struct Engine {
    config: Config,
    tracker: Tracker,
    roles: Roles,
    /// The current session of each server address.
    server_session: FxHashMap<SocketAddr, u32>,
    last_server_session: Option<u32>,
    addrs: FxHashMap<SocketAddr, AddrState>,
    /// Player names of connected clients → their address.
    names: FxHashMap<String, SocketAddr>,
    /// Wrong-session packets waiting for an ErrorWrongSession (D011).
    unanswered: VecDeque<(i64, Finding)>,
    /// Voice paths: (session, speaker, destination address).
    legs: FxHashMap<(u32, u16, SocketAddr), Leg>,
    /// The first path of each speaker: content rules and the table use it.
    primary: FxHashMap<(u32, u16), SocketAddr>,
    findings: Vec<Finding>,
    folded: FxHashMap<(&'static str, u64), usize>,
    counts: FxHashMap<&'static str, u64>,
    kept: FxHashMap<&'static str, usize>,
    fresh: VecDeque<usize>,
    payloads: u64,
    packets: u64,
    first_ns: Option<i64>,
    last_ns: Option<i64>,
}

/// The rule engine. See the module documentation.
pub struct Checker {
    locator: Locator,
    engine: Engine,
}

impl Checker {
    pub fn new(config: Config) -> Checker {
        Checker {
            locator: Locator::new(config.payload),
            engine: Engine {
                config,
                // Its per-client statistics are not part of the report.
                tracker: Tracker::without_stats(),
                roles: Roles::default(),
                server_session: FxHashMap::default(),
                last_server_session: None,
                addrs: FxHashMap::default(),
                names: FxHashMap::default(),
                unanswered: VecDeque::new(),
                legs: FxHashMap::default(),
                primary: FxHashMap::default(),
                findings: Vec::new(),
                folded: FxHashMap::default(),
                counts: FxHashMap::default(),
                kept: FxHashMap::default(),
                fresh: VecDeque::new(),
                payloads: 0,
                packets: 0,
                first_ns: None,
                last_ns: None,
            },
        }
    }

    /// The session as the engine rebuilt it.
    pub fn tracker(&self) -> &Tracker {
        &self.engine.tracker
    }

    /// Feeds one transport payload.
    pub fn push(&mut self, d: &Datagram<'_>) {
        let e = &mut self.engine;
        e.payloads += 1;
        e.first_ns.get_or_insert(d.ts_ns);
        e.last_ns = Some(d.ts_ns);
        e.expire(d.ts_ns);
        let flow = FlowKey {
            src: d.src,
            dst: d.dst,
            tcp: d.tcp,
        };
        let class = self
            .locator
            .locate(flow, d.data, |found| e.packet(d, found));
        match class {
            Classified::Bye => e.tracker.observe_bye(d.ts_ns, d.src),
            Classified::NotDissonance => {
                let reverse = FlowKey {
                    src: d.dst,
                    dst: d.src,
                    tcp: d.tcp,
                };
                let locator = &self.locator;
                let carries = |k: &FlowKey| locator.flow(k).is_some_and(|f| f.packets > 0);
                if carries(&flow) || carries(&reverse) {
                    let at = locator.flow(&flow).and_then(|f| f.locked).unwrap_or(0);
                    e.not_dissonance(d, at);
                }
            }
            Classified::Dissonance(_) => {}
        }
        e.drain_events();
    }

    /// The next finding not yet polled (folded repeats are not returned again).
    pub fn poll_finding(&mut self) -> Option<Finding> {
        let i = self.engine.fresh.pop_front()?;
        self.engine.findings.get(i).cloned()
    }

    /// Ends the input: settles timeouts and voice windows and builds the report.
    pub fn finish(mut self) -> Report {
        let e = &mut self.engine;
        if let Some(last) = e.last_ns {
            e.expire(last);
        }
        e.unanswered.clear();
        report::build(e)
    }
}

impl Engine {
    fn is(&self, a: SocketAddr, role: u8) -> bool {
        self.roles.get(a) & (CLIENT | SERVER) == role
    }
    fn mark_role(&mut self, a: SocketAddr, role: u8) {
        self.roles.mark(a, role);
    }

    fn name_of(&self, session: Option<u32>, id: u16) -> Option<String> {
        let s = session?;
        self.tracker.client(s, id).map(|c| c.name.clone())
    }

    /// Records a finding (or folds it into an earlier one). The message is built only
    /// for a finding that is kept: most occurrences are folded or over the limit.
    fn report(
        &mut self,
        rule: &'static Rule,
        c: &Ctx<'_>,
        about: About,
        message: impl FnOnce() -> String,
    ) {
        *self.counts.entry(rule.id).or_default() += 1;
        if let Some(k) = about.fold {
            if let Some(&i) = self.folded.get(&(rule.id, k)) {
                self.findings[i].repeats += 1;
                return;
            }
        }
        let kept = self.kept.entry(rule.id).or_default();
        if *kept >= self.config.max_kept_per_rule {
            return;
        }
        *kept += 1;
        let f = self.finding(rule, c, about, message());
        let i = self.findings.len();
        self.findings.push(f);
        if let Some(k) = about.fold {
            self.folded.insert((rule.id, k), i);
        }
        self.fresh.push_back(i);
    }

    fn finding(&self, rule: &'static Rule, c: &Ctx<'_>, about: About, message: String) -> Finding {
        let at = self
            .tracker
            .client_at(c.src)
            .filter(|_| !self.is(c.src, SERVER))
            .or_else(|| self.tracker.client_at(c.dst));
        let (client, client_id) = match about.client {
            // The id's name in its session, else the name of that id at the address
            // (a client that moved to another session).
            Some(id) => (
                self.name_of(about.session, id).or_else(|| {
                    at.filter(|r| r.id == id && r.addr == Some(c.src))
                        .map(|r| r.name.clone())
                }),
                Some(id),
            ),
            None => match at {
                Some(r) => (Some(r.name.clone()), Some(r.id)),
                None => (
                    self.addrs
                        .get(&c.src)
                        .and_then(|a| a.requested_name.clone()),
                    None,
                ),
            },
        };
        let shown = &c.bytes[..c.bytes.len().min(SHOWN_BYTES)];
        Finding {
            rule,
            number: c.number,
            ts_ns: c.ts_ns,
            src: c.src,
            dst: c.dst,
            tcp: c.tcp,
            offset: c.offset,
            session: about.session,
            client,
            client_id,
            message,
            bytes: shown.to_vec(),
            mark: about
                .mark
                .filter(|&(s, _)| s < shown.len())
                .map(|(s, n)| (s, n.min(shown.len() - s))),
            repeats: 0,
        }
    }

    /// Wrong-session packets the server did not answer in time (D011).
    fn expire(&mut self, now: i64) {
        while self.unanswered.front().is_some_and(|(t, _)| *t < now) {
            let Some((_, f)) = self.unanswered.pop_front() else {
                break;
            };
            let rule = rules::WRONG_SESSION_UNANSWERED;
            *self.counts.entry(rule.id).or_default() += 1;
            let k = key((f.src, f.session));
            if let Some(&i) = self.folded.get(&(rule.id, k)) {
                self.findings[i].repeats += 1;
                continue;
            }
            let i = self.findings.len();
            *self.kept.entry(rule.id).or_default() += 1;
            self.findings.push(Finding { rule, ..f });
            self.folded.insert((rule.id, k), i);
            self.fresh.push_back(i);
        }
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.tracker.poll_event() {
            if let SessionEvent::ClientLeft {
                session, client_id, ..
            } = ev
            {
                if let Some(c) = self.tracker.client(session, client_id) {
                    if self.names.get(&c.name) == c.addr.as_ref() {
                        self.names.remove(&c.name);
                    }
                }
            }
        }
    }

    /// A payload on a Dissonance flow in which no packet was found.
    fn not_dissonance(&mut self, d: &Datagram<'_>, at: usize) {
        if d.data.first() == Some(&0) || d.data.len() <= at {
            return; // transport control, or nothing where the packet should be
        }
        let bytes = &d.data[at..];
        let c = Ctx::new(d, at, bytes);
        if let Err(err) = Packet::decode(bytes) {
            self.decode_error(&c, &err, 0);
        }
    }

    /// D001/D002/D003/D033 for a packet (or relay payload at `base`) that did not decode.
    fn decode_error(&mut self, c: &Ctx<'_>, e: &DecodeError, base: usize) {
        let at = base + e.offset;
        let (rule, len) = match &e.kind {
            DecodeErrorKind::BadMagic { .. } => (rules::BAD_MAGIC, 2),
            DecodeErrorKind::UnknownType { .. } => (rules::UNKNOWN_TYPE, 1),
            DecodeErrorKind::NullString { .. } => (rules::NULL_NAME, 2),
            DecodeErrorKind::Truncated { .. } | DecodeErrorKind::UnknownRoomId { .. } => {
                (rules::MALFORMED, c.bytes.len().saturating_sub(at).max(1))
            }
        };
        let inside = if base > 0 { " (relay payload)" } else { "" };
        let session = c
            .bytes
            .get(base + 3..base + 7)
            .filter(|_| rule != rules::BAD_MAGIC && c.bytes.get(base + 2) != Some(&4))
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
        let about = About {
            session,
            mark: Some((at, len)),
            fold: Some(key(c.bytes)),
            ..About::default()
        };
        self.report(rule, c, about, || format!("{e}{inside}"));
    }

    fn packet(&mut self, d: &Datagram<'_>, found: Found<'_>) {
        self.packets += 1;
        let p = match &found.result {
            Ok(p) => p,
            Err(err) => {
                let c = Ctx::new(d, found.offset, found.bytes);
                self.decode_error(&c, err, 0);
                return;
            }
        };
        let end = (found.offset + found.bytes.len() + p.trailing.len()).min(d.data.len());
        let c = Ctx::new(d, found.offset, &d.data[found.offset..end]);
        self.rules(&c, p);
        self.tracker.observe(d.ts_ns, d.src, d.dst, p);
        if found.offset == 0 || d.data.len() == end {
            self.tracker.count_bytes(d.src, d.data.len());
        }
    }

    fn rules(&mut self, c: &Ctx<'_>, p: &Packet<'_>) {
        let m = &p.message;
        let session = m.session();
        let len = c.bytes.len();
        if len > DEFAULT_BUFFER_SIZE {
            let about = About {
                session,
                mark: Some((DEFAULT_BUFFER_SIZE, len - DEFAULT_BUFFER_SIZE)),
                fold: Some(key((c.src, m.message_type()))),
                ..About::default()
            };
            self.report(rules::OVERSIZE, c, about, || {
                format!(
                    "{} of {len} bytes; real buffers hold {DEFAULT_BUFFER_SIZE}",
                    m.message_type()
                )
            });
        }
        if !p.trailing.is_empty() {
            let about = About {
                session,
                mark: Some((len - p.trailing.len(), p.trailing.len())),
                fold: Some(key(c.bytes)),
                ..About::default()
            };
            self.report(rules::TRAILING, c, about, || {
                format!(
                    "{} followed by {} trailing byte(s)",
                    m.message_type(),
                    p.trailing.len()
                )
            });
        }
        self.direction(c, m);
        if !self.session(c, m) {
            // Dropped by its receiver: the other rules would only repeat that.
            if matches!(
                m,
                Message::ServerRelayReliable(_) | Message::ServerRelayUnreliable(_)
            ) {
                self.mark_role(c.src, CLIENT);
                self.mark_role(c.dst, SERVER);
            }
            return;
        }
        match m {
            Message::HandshakeRequest(h) => {
                self.mark_role(c.src, CLIENT);
                self.mark_role(c.dst, SERVER);
                let name = h.name.to_str_lossy().map(|s| s.into_owned());
                let a = self.addrs.entry(c.src).or_default();
                a.requests += 1;
                a.requested_name = name.clone();
                self.codec(c, h.codec, None, None, 3);
                match name {
                    None => {
                        let about = About {
                            mark: Some((12, 2)),
                            fold: Some(key(c.bytes)),
                            ..About::default()
                        };
                        self.report(rules::NULL_NAME, c, about, || {
                            "HandshakeRequest with a null player name: the server ignores it".into()
                        });
                    }
                    Some(name) => {
                        if let Some(&other) = self.names.get(&name) {
                            if other != c.src {
                                let about = About {
                                    mark: Some((12, len - 12)),
                                    fold: Some(key((c.src, other, &name))),
                                    ..About::default()
                                };
                                self.report(rules::NAME_REUSED, c, about, || {
                                    format!(
                                        "player name \"{name}\" is still connected from {other}"
                                    )
                                });
                            }
                        }
                        self.names.insert(name, c.src);
                    }
                }
            }
            Message::HandshakeResponse(h) => {
                if !self.is(c.src, CLIENT) {
                    self.mark_role(c.src, SERVER);
                    self.mark_role(c.dst, CLIENT);
                    self.server_session.insert(c.src, h.session);
                    self.last_server_session = Some(h.session);
                    let a = self.addrs.entry(c.dst).or_default();
                    a.assigned = Some((h.session, h.client_id));
                    if a.requests == 0 {
                        let about = About {
                            session: Some(h.session),
                            client: Some(h.client_id),
                            mark: Some((2, 1)),
                            fold: Some(key((c.dst, h.session, h.client_id))),
                        };
                        self.report(rules::RESPONSE_WITHOUT_REQUEST, c, about, || {
                            format!(
                                "HandshakeResponse (id {}) to {}, which sent no HandshakeRequest",
                                h.client_id, c.dst
                            )
                        });
                    } else {
                        a.requests -= 1;
                    }
                }
            }
            Message::ErrorWrongSession(e) => {
                if !self.is(c.src, CLIENT) {
                    self.server_session.insert(c.src, e.session);
                    self.last_server_session = Some(e.session);
                    let dst = c.dst;
                    self.unanswered.retain(|(_, f)| f.src != dst);
                    self.addrs.entry(dst).or_default().told = true;
                }
            }
            Message::RemoveClient(r) => {
                if self.tracker.client(r.session, r.client_id).is_none() {
                    let about = About {
                        session: Some(r.session),
                        client: Some(r.client_id),
                        mark: Some((7, 2)),
                        fold: Some(key((r.session, r.client_id))),
                    };
                    self.report(rules::REMOVE_UNKNOWN, c, about, || {
                        format!(
                            "RemoveClient for id {}, never a client of session {}",
                            r.client_id, r.session
                        )
                    });
                }
            }
            Message::ClientState(s) => {
                let to_server = self.is(c.dst, SERVER) || self.is(c.src, CLIENT);
                if to_server {
                    let a = self.addrs.get(&c.src);
                    let assigned = a.and_then(|a| a.assigned);
                    let requested = a.and_then(|a| a.requested_name.clone());
                    let name = s.name.to_string();
                    let name_end = 9 + s.name.as_bytes().map_or(0, |b| b.len());
                    let mut wrong = Vec::new();
                    let mut mark = None;
                    if let Some((sess, id)) = assigned {
                        if sess == s.session && id != s.client_id {
                            wrong.push(format!("client id {} (assigned {id})", s.client_id));
                            mark = Some((name_end, 2));
                        }
                    }
                    if let Some(req) = requested.filter(|r| *r != name) {
                        wrong.push(format!("name \"{name}\" (handshake \"{req}\")"));
                        mark = Some((7, name_end - 7));
                    }
                    if !wrong.is_empty() {
                        let about = About {
                            session: Some(s.session),
                            client: assigned.map(|(_, id)| id),
                            mark,
                            fold: Some(key(c.bytes)),
                        };
                        self.report(rules::STATE_MISMATCH, c, about, || {
                            format!("ClientState from {} carries {}", c.src, wrong.join(" and "))
                        });
                    }
                }
                let codec_at = 11 + s.name.as_bytes().map_or(0, |b| b.len());
                self.codec(c, s.codec, Some(s.session), Some(s.client_id), codec_at);
                self.client_state_rooms(c, s);
            }
            Message::DeltaChannelState(dc) => {
                let about = About {
                    session: Some(dc.session),
                    client: Some(dc.peer),
                    mark: Some((8, 2)),
                    fold: Some(key(c.bytes)),
                };
                let rec = self.tracker.client(dc.session, dc.peer);
                let name = dc.name.to_string();
                let id = dc.name.room_id();
                let clash = rec.filter(|_| dc.joined()).and_then(|rec| {
                    rec.rooms
                        .iter()
                        .find(|r| **r != name && crate::codec::room_id(r) == id)
                        .cloned()
                });
                if rec.is_none() {
                    self.report(
                        rules::DELTA_UNKNOWN,
                        c,
                        about,
                        || format!(
                            "DeltaChannelState ({} \"{name}\") for id {}, not a client of session {}",
                            if dc.joined() { "join" } else { "leave" },
                            dc.peer,
                            dc.session
                        ),
                    );
                } else if let Some(other) = clash {
                    let about = About {
                        mark: Some((10, len - 10)),
                        ..about
                    };
                    self.report(
                        rules::ROOM_COLLISION,
                        c,
                        about,
                        || format!(
                            "joins \"{name}\" while listening to \"{other}\": both are room id {id} (0x{id:04X})"
                        ),
                    );
                }
            }
            Message::TextData(t) => self.text(c, t, 0),
            Message::VoiceData(v) => self.voice(c, v, 0),
            Message::ServerRelayReliable(r) | Message::ServerRelayUnreliable(r) => {
                self.mark_role(c.src, CLIENT);
                self.mark_role(c.dst, SERVER);
                self.relay(c, m.message_type(), r);
            }
            Message::HandshakeP2P(_) => {}
        }
    }

    /// D020, D021, D022.
    fn direction(&mut self, c: &Ctx<'_>, m: &Message<'_>) {
        let t = m.message_type();
        let session = m.session();
        let about = About {
            session,
            mark: Some((2, 1)),
            fold: Some(key((c.src, c.dst, t))),
            ..About::default()
        };
        if t.is_server_only_send() && self.is(c.src, CLIENT) {
            self.report(rules::CLIENT_SENT_SERVER_TYPE, c, about, || {
                format!("{t} sent by client {} to {}", c.src, c.dst)
            });
        } else if matches!(
            t,
            MessageType::HandshakeRequest
                | MessageType::ServerRelayReliable
                | MessageType::ServerRelayUnreliable
                | MessageType::HandshakeP2P
        ) && self.is(c.src, SERVER)
        {
            self.report(rules::SERVER_SENT_CLIENT_TYPE, c, about, || {
                format!("{t} sent by server {} to {}", c.src, c.dst)
            });
        } else if matches!(
            t,
            MessageType::VoiceData | MessageType::TextData | MessageType::HandshakeP2P
        ) && self.is(c.dst, SERVER)
        {
            self.report(rules::IGNORED_BY_SERVER, c, about, || {
                format!("{t} sent to the server {} without a relay: dropped", c.dst)
            });
        }
    }

    /// D010, D011, D012, D013. False when the packet's session is wrong.
    fn session(&mut self, c: &Ctx<'_>, m: &Message<'_>) -> bool {
        let t = m.message_type();
        let Some(session) = m.session() else {
            return true;
        };
        if matches!(
            t,
            MessageType::HandshakeResponse | MessageType::ErrorWrongSession
        ) {
            return true;
        }
        let from_client = self.is(c.src, CLIENT);
        let current = if self.is(c.dst, SERVER) {
            self.server_session.get(&c.dst).copied()
        } else if self.is(c.src, SERVER) {
            self.server_session.get(&c.src).copied()
        } else {
            self.last_server_session
        };
        let Some(current) = current else {
            return true;
        };
        let mark = Some((3, 4));
        if session != current {
            let about = About {
                session: Some(session),
                mark,
                fold: Some(key((c.src, session))),
                ..About::default()
            };
            self.report(rules::WRONG_SESSION, c, about, || {
                format!("{t} with session {session}; the server's session is {current}")
            });
            if !from_client {
                return false;
            }
            let answered_types = matches!(
                t,
                MessageType::ClientState
                    | MessageType::DeltaChannelState
                    | MessageType::ServerRelayReliable
                    | MessageType::ServerRelayUnreliable
            );
            if answered_types && self.is(c.dst, SERVER) {
                let f = self.finding(
                    rules::WRONG_SESSION_UNANSWERED,
                    c,
                    about,
                    format!(
                        "{t} with stale session {session} got no ErrorWrongSession({current}) within {} ms",
                        self.config.answer_timeout_ns / 1_000_000
                    ),
                );
                let deadline = c.ts_ns + self.config.answer_timeout_ns;
                self.unanswered.push_back((deadline, f));
            }
            let storm = self.config.storm;
            let a = self.addrs.entry(c.src).or_default();
            let n = a.stale.entry(session).or_default();
            *n += u64::from(a.told);
            if a.told && *n == storm {
                let about = About {
                    fold: Some(key((c.src, session, "storm"))),
                    ..about
                };
                self.report(
                    rules::STALE_STORM,
                    c,
                    about,
                    || format!(
                        "{storm} packets from {} with stale session {session} after ErrorWrongSession({current}), and no new handshake",
                        c.src
                    ),
                );
            }
            return false;
        } else if from_client {
            if let Some((assigned, id)) = self.addrs.get(&c.src).and_then(|a| a.assigned) {
                if assigned != session {
                    let about = About {
                        session: Some(session),
                        client: Some(id),
                        mark,
                        fold: Some(key((c.src, session, "nohs"))),
                    };
                    self.report(
                        rules::SESSION_NO_HANDSHAKE,
                        c,
                        about,
                        || format!(
                            "{} switched from session {assigned} to {session} without a HandshakeRequest/HandshakeResponse",
                            c.src
                        ),
                    );
                }
            }
        }
        true
    }

    /// D044 on advertised codec settings at byte `at` of the packet.
    fn codec(
        &mut self,
        c: &Ctx<'_>,
        s: CodecSettings,
        session: Option<u32>,
        id: Option<u16>,
        at: usize,
    ) {
        let problem = match s.codec() {
            None => Some((at, 1, format!("unknown codec byte {}", s.codec_byte))),
            Some(crate::codec::Codec::Opus)
                if ![8000, 12000, 16000, 24000, 48000].contains(&s.sample_rate) =>
            {
                Some((
                    at + 5,
                    4,
                    format!(
                        "Opus at {} Hz (Opus decodes 8, 12, 16, 24 or 48 kHz)",
                        s.sample_rate_i32()
                    ),
                ))
            }
            _ => None,
        };
        if let Some((start, n, msg)) = problem {
            let about = About {
                session,
                client: id,
                mark: Some((start, n)),
                fold: Some(key((c.src, s, id))),
            };
            self.report(rules::OPUS_RATE, c, about, || msg);
        }
    }

    /// D033 (null room in the list) and D035 (two rooms with one id) in a ClientState.
    fn client_state_rooms(&mut self, c: &Ctx<'_>, s: &crate::codec::ClientState<'_>) {
        let mut seen: Vec<(u16, String)> = Vec::new();
        let about = About {
            session: Some(s.session),
            client: Some(s.client_id),
            fold: Some(key(c.bytes)),
            ..About::default()
        };
        for (i, r) in s.rooms.iter().enumerate() {
            match r.to_str_lossy() {
                None => {
                    self.report(
                        rules::NULL_NAME,
                        c,
                        About {
                            mark: room_mark(c.bytes, s, i),
                            ..about
                        },
                        || {
                            format!(
                                "ClientState room {i} is null: every receiver throws joining it"
                            )
                        },
                    );
                }
                Some(name) => {
                    let id = crate::codec::room_id(&name);
                    if let Some((_, other)) = seen.iter().find(|(o, n)| *o == id && *n != *name) {
                        let msg = format!(
                            "listens to \"{other}\" and \"{name}\": both are room id {id} (0x{id:04X})"
                        );
                        self.report(
                            rules::ROOM_COLLISION,
                            c,
                            About {
                                mark: room_mark(c.bytes, s, i),
                                ..about
                            },
                            || msg,
                        );
                    }
                    seen.push((id, name.into_owned()));
                }
            }
        }
    }

    /// TextData rules; `base` is its offset inside the packet (a relay payload).
    fn text(&mut self, c: &Ctx<'_>, t: &crate::codec::TextData<'_>, base: usize) {
        if t.recipient_type().is_none() {
            let about = About {
                session: Some(t.session),
                client: Some(t.sender),
                mark: Some((base + 7, 1)),
                fold: Some(key(&c.bytes[base..])),
            };
            self.report(rules::TEXT_RECIPIENT_TYPE, c, about, || {
                format!(
                    "TextData recipient type {} (0 room, 1 player): the receiver throws",
                    t.recipient_type_byte
                )
            });
        }
    }

    /// Voice path statistics and content rules; `base` as for [`Engine::text`].
    fn voice(&mut self, c: &Ctx<'_>, v: &crate::codec::VoiceData<'_>, base: usize) {
        let speaker = (v.session, v.sender);
        let record = self.tracker.client(v.session, v.sender);
        let known = record.is_some();
        let codec = record.and_then(|k| k.codec);
        let primary = *self.primary.entry(speaker).or_insert(c.dst);
        let frame_ns = codec
            .and_then(|k| k.frame_ms())
            .map(|ms| (ms * 1e6) as i64)
            .or_else(|| {
                crate::voice::decode::opus_samples_48k(v.audio)
                    .map(|n| n as i64 * 1_000_000_000 / 48000)
            })
            .unwrap_or(20_000_000);
        let closing = v.channels.iter().all(|ch| ch.bitfield.closing());
        let leg = self
            .legs
            .entry((v.session, v.sender, c.dst))
            .or_insert_with(|| Leg::new(frame_ns));
        let arrival = leg.push(v.seq, c.ts_ns, v.audio.len(), closing);
        let about = About {
            session: Some(v.session),
            client: Some(v.sender),
            mark: Some((base + 10, 2)),
            fold: None,
        };
        let path = || format!("{} -> {}", c.src, c.dst);
        match arrival {
            Arrival::Next { missing } if missing > self.config.max_gap => {
                self.report(rules::VOICE_GAP, c, about, || {
                    format!(
                        "{missing} frames missing before seq {} on {}",
                        v.seq,
                        path()
                    )
                })
            }
            Arrival::Duplicate => self.report(rules::VOICE_DUPLICATE, c, about, || {
                format!("seq {} arrived again on {}", v.seq, path())
            }),
            Arrival::Late { late_by } if late_by > self.config.max_reorder => {
                self.report(rules::VOICE_REORDER, c, about, || {
                    format!(
                        "seq {} arrived {late_by} positions late on {}",
                        v.seq,
                        path()
                    )
                })
            }
            _ => {}
        }
        if primary != c.dst || matches!(arrival, Arrival::Duplicate) {
            return; // content rules once per frame: on the speaker's first path
        }
        let fold = Some(key(speaker));
        if !known {
            let about = About {
                mark: Some((base + 7, 2)),
                fold,
                ..about
            };
            self.report(rules::VOICE_UNKNOWN_SENDER, c, about, || {
                format!(
                    "VoiceData from id {}, never a client of session {}",
                    v.sender, v.session
                )
            });
        }
        if let (Some(k), Some(samples)) = (codec, crate::voice::decode::opus_samples_48k(v.audio)) {
            let opus = k.codec() == Some(crate::codec::Codec::Opus) && k.sample_rate > 0;
            let expected = k.frame_size as u64 * 48000 / (k.sample_rate.max(1) as u64);
            if opus && samples as u64 != expected {
                let audio_at = base + 16 + 4 * v.channels.len();
                let about = About {
                    mark: Some((audio_at, 1)),
                    fold,
                    ..about
                };
                self.report(
                    rules::OPUS_FRAME_MISMATCH,
                    c,
                    about,
                    || format!(
                        "Opus TOC says {:.1} ms, the speaker advertised {} samples at {} Hz ({:.1} ms)",
                        samples as f64 / 48.0,
                        k.frame_size,
                        k.sample_rate,
                        k.frame_size as f64 * 1000.0 / k.sample_rate as f64
                    ),
                );
            }
        }
    }

    /// Relay rules (D023-D027) and the rules of the wrapped packet.
    fn relay(&mut self, c: &Ctx<'_>, t: MessageType, r: &ServerRelay<'_>) {
        // Where the payload starts in the packet (it borrows from the same bytes).
        let base = (r.payload.as_ptr() as usize)
            .checked_sub(c.bytes.as_ptr() as usize)
            .filter(|b| b + r.payload.len() <= c.bytes.len())
            .unwrap_or(0);
        let session = Some(r.session);
        for (i, dest) in r.destinations.iter().enumerate() {
            if dest == ALWAYS_SEND {
                continue;
            }
            let live = self
                .tracker
                .client(r.session, dest)
                .is_some_and(|k| k.left_ns.is_none());
            if !live {
                let about = About {
                    session,
                    client: Some(dest),
                    mark: Some((8 + 2 * i, 2)),
                    fold: Some(key((c.src, r.session, dest))),
                };
                self.report(rules::RELAY_UNKNOWN_DEST, c, about, || {
                    format!(
                        "{t} to id {dest}, not a client of session {} now",
                        r.session
                    )
                });
            }
        }
        let inner = match r.inner() {
            Ok(p) => p,
            Err(e) => {
                self.decode_error(c, &e, base);
                return;
            }
        };
        let it = inner.message_type();
        let about = About {
            session,
            mark: Some((base + 2, 1)),
            fold: Some(key((c.src, t, it))),
            ..About::default()
        };
        match (t, it) {
            (MessageType::ServerRelayReliable, MessageType::VoiceData) => {
                self.report(rules::VOICE_RELIABLE, c, about, || {
                    "VoiceData in ServerRelayReliable: forwarded on the reliable channel".into()
                })
            }
            (MessageType::ServerRelayUnreliable, MessageType::TextData) => {
                self.report(rules::TEXT_UNRELIABLE, c, about, || {
                    "TextData in ServerRelayUnreliable: forwarded unreliably, may be lost".into()
                })
            }
            (_, MessageType::HandshakeP2P) => self.report(rules::RELAYED_P2P, c, about, || {
                format!("HandshakeP2P in {t}: the server drops it")
            }),
            (_, MessageType::VoiceData | MessageType::TextData) => {}
            (_, other) => self.report(rules::RELAY_SERVER_TYPE, c, about, || {
                format!("{t} wraps {other}: the server forwards it unchanged")
            }),
        }
        if inner.message.session().is_some_and(|s| s != r.session) {
            let about = About {
                mark: Some((base + 3, 4)),
                fold: Some(key((c.src, inner.message.session()))),
                ..about
            };
            self.report(rules::WRONG_SESSION, c, about, || {
                format!(
                    "wrapped {it} has session {}, the relay {}",
                    inner.message.session().unwrap_or(0),
                    r.session
                )
            });
        }
        match &inner.message {
            Message::TextData(td) => self.text(c, td, base),
            Message::VoiceData(v) => self.voice(c, v, base),
            _ => {}
        }
    }
}

/// Byte range of room `index`'s length prefix in a ClientState.
fn room_mark(
    bytes: &[u8],
    s: &crate::codec::ClientState<'_>,
    index: usize,
) -> Option<(usize, usize)> {
    let mut at = 7 + 2 + s.name.as_bytes().map_or(0, |b| b.len()) + 2 + 9 + 2;
    for r in s.rooms.iter().take(index) {
        at += 2 + r.as_bytes().map_or(0, |b| b.len());
    }
    (at + 2 <= bytes.len()).then_some((at, 2))
}
