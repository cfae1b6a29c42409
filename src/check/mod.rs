//! `check`: a rule engine over Dissonance traffic. Sans-IO: transport payloads go in
//! through [`Checker::push`] (a [`Payload`] with its capture metadata), findings come
//! out through [`Checker::poll_finding`], and [`Checker::finish`] returns the report with
//! every finding grouped by rule and the per-speaker voice quality table. The engine owns
//! its own [`Locator`] and session [`Tracker`], so `check`, `sniff --check` and the proxy
//! all run the same rules on the same state.
//!
//! The rules are in [`rules`], one file per family: each rule's id, severity and
//! explanation beside the engine's check for it. Every real message
//! appears several times in a capture (echoed ClientStates, forwarded voice); findings
//! about the same thing are folded into one finding with a repeat count, so a report
//! stays short however long the capture.

mod live;
pub mod report;
mod report_filter;
pub mod rules;
mod run;
pub mod voice;

pub use live::Live;

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use rustc_hash::{FxHashMap, FxHasher};

use crate::capture::{Payload, Transport};
use crate::codec::{Message, Packet};
use crate::dissect::front::{self, dissect, PacketSink};
use crate::dissect::locate::{FlowKey, Found, Locator, PayloadMode};
use crate::dissect::session::{Direction, SessionEvent, Tracker};

pub use report::{Report, RuleCount, VoiceRow};
pub use report_filter::{check_capture_filtered, Selection};
pub use rules::{Rule, Severity};
pub use run::{annotate, check_capture};
use voice::Leg;

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
    /// Occurrences listed per finding (the rest are counted in `repeats`): bounds the
    /// memory a long storm of one finding takes (16 bytes each).
    pub max_occurrences: usize,
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
            max_occurrences: 100_000,
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
    /// Every occurrence, this one first: capture frame number and time. Kept up to
    /// [`Config::max_occurrences`]; `repeats` counts them all.
    pub occurrences: Vec<Occurrence>,
    /// `check -Y`: the frame the finding was first seen at when the filter does not
    /// select it (`number` is then its first selected occurrence; addresses, client and
    /// bytes are still those of this first frame).
    pub first_seen: Option<u64>,
}

/// One packet a finding was seen at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    pub number: u64,
    pub ts_ns: i64,
}

impl Finding {
    /// Folds one more occurrence into this finding.
    fn fold(&mut self, number: u64, ts_ns: i64, max: usize) {
        self.repeats += 1;
        if self.occurrences.len() < max {
            self.occurrences.push(Occurrence { number, ts_ns });
        }
    }
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
    /// The packet comment `check -w` puts on the finding's frame:
    /// `dissonance check D024 error (name): alice(0): message`.
    pub fn comment(&self) -> String {
        let mut s = format!(
            "dissonance check {} {} ({}): {}: {}",
            self.rule.id,
            self.rule.severity,
            self.rule.name,
            self.client_label(),
            self.message
        );
        if self.repeats > 0 {
            s.push_str(&format!(" (and {} more like it)", self.repeats));
        }
        s
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
#[derive(Debug)]
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
    /// The same context around other bytes (a held packet keeps its own copy).
    fn with_bytes<'q>(&self, bytes: &'q [u8]) -> Ctx<'q> {
        Ctx {
            bytes,
            number: self.number,
            ts_ns: self.ts_ns,
            src: self.src,
            dst: self.dst,
            tcp: self.tcp,
            offset: self.offset,
        }
    }

    fn new(d: &Payload<'_>, offset: usize, bytes: &'p [u8]) -> Ctx<'p> {
        Ctx {
            number: d.frame_number,
            ts_ns: d.ts_ns,
            src: d.src,
            dst: d.dst,
            tcp: d.transport == Transport::Tcp,
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
    /// Addresses whose player name another address took over (D036) → the name and the
    /// new address, until the old address sends again (D037 unless it handshakes).
    taken_over: FxHashMap<SocketAddr, (String, SocketAddr)>,
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
    /// Of them, TCP frames.
    tcp_payloads: u64,
    packets: u64,
    first_ns: Option<i64>,
    last_ns: Option<i64>,
}

/// The rule engine. See the module documentation.
pub struct Checker {
    locator: Locator,
    engine: Engine,
    /// The last payload's number and time: where the capture ended.
    last: (u64, i64),
}

impl Checker {
    pub fn new(config: Config) -> Checker {
        Checker {
            last: (0, 0),
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
                taken_over: FxHashMap::default(),
                unanswered: VecDeque::new(),
                legs: FxHashMap::default(),
                primary: FxHashMap::default(),
                findings: Vec::new(),
                folded: FxHashMap::default(),
                counts: FxHashMap::default(),
                kept: FxHashMap::default(),
                fresh: VecDeque::new(),
                payloads: 0,
                tcp_payloads: 0,
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
    pub fn push(&mut self, d: &Payload<'_>) {
        self.last = (d.frame_number, d.ts_ns);
        let e = &mut self.engine;
        e.payloads += 1;
        e.tcp_payloads += u64::from(d.transport == Transport::Tcp);
        e.first_ns.get_or_insert(d.ts_ns);
        e.last_ns = Some(d.ts_ns);
        e.expire(d.ts_ns);
        dissect(&mut self.locator, d, e);
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
        // Packets a game stack still held behind a gap are checked too.
        let (number, ts_ns) = self.last;
        front::finish(&mut self.locator, number, ts_ns, e);
        if let Some(last) = e.last_ns {
            e.expire(last);
        }
        // Voice packets still held by a sequence guard: nothing confirmed them.
        let mut held: Vec<_> = e
            .legs
            .iter_mut()
            .filter_map(|(k, l)| l.guard.finish().map(|(_, h)| (*k, h)))
            .collect();
        held.sort_by_key(|(_, h)| h.number());
        for (k, h) in held {
            e.voice_outlier(k, &h, false);
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
                let max = self.config.max_occurrences;
                self.findings[i].fold(c.number, c.ts_ns, max);
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
            occurrences: vec![Occurrence {
                number: c.number,
                ts_ns: c.ts_ns,
            }],
            first_seen: None,
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

    fn rules(&mut self, c: &Ctx<'_>, p: &Packet<'_>) {
        let m = &p.message;
        if !self.taken_over.is_empty() {
            self.still_talking(c, m);
        }
        self.size(c, p);
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
            Message::HandshakeRequest(h) => self.handshake_request(c, h),
            Message::HandshakeResponse(h) => self.handshake_response(c, h),
            Message::ErrorWrongSession(e) => self.error_wrong_session(c, e),
            Message::RemoveClient(r) => self.remove_client(c, r),
            Message::ClientState(s) => self.client_state(c, s),
            Message::DeltaChannelState(dc) => self.delta_channel_state(c, dc),
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
}

/// The engine as the dissecting front end's sink: the rules judge each packet against
/// the session as it was before the packet ([`PacketSink::before`]).
impl PacketSink for Engine {
    #[inline]
    fn tracker(&mut self) -> &mut Tracker {
        &mut self.tracker
    }

    #[inline]
    fn before(&mut self, d: &Payload<'_>, found: &Found<'_>) {
        self.packets += 1;
        match &found.result {
            Ok(p) => {
                // A packet a game stack joined from several datagrams is not in `d.data`.
                let c = match found.elsewhere {
                    Some(_) => Ctx::new(d, found.offset, found.bytes),
                    None => {
                        let end = packet_end(found, p).min(d.data.len());
                        Ctx::new(d, found.offset, &d.data[found.offset.min(end)..end])
                    }
                };
                self.rules(&c, p);
            }
            Err(err) => {
                let c = Ctx::new(d, found.offset, found.bytes);
                if !self.fatal_to_server(&c, Some(err)) {
                    self.decode_error(&c, err, 0);
                }
            }
        }
    }

    #[inline]
    fn packet(&mut self, d: &Payload<'_>, found: &Found<'_>, _index: usize, _dir: Direction) {
        if let Ok(p) = &found.result {
            // The whole payload counts once: for its first packet, or its last one.
            if found.offset == 0 || d.data.len() == packet_end(found, p) {
                self.tracker.count_bytes(d.src, d.data.len());
            }
        }
    }

    fn not_dissonance(&mut self, d: &Payload<'_>, locator: &Locator) {
        let flow = FlowKey::of(d);
        let carries = |k: &FlowKey| locator.flow(k).is_some_and(|f| f.packets > 0);
        // On a game stack's flow, datagrams without Dissonance are the game's own.
        let stack = locator.flow(&flow).is_some_and(|f| f.stack().is_some());
        if !stack && (carries(&flow) || carries(&flow.reverse())) {
            let at = locator.flow(&flow).and_then(|f| f.locked).unwrap_or(0);
            self.stray_payload(d, at);
        }
    }
}

/// Where a decoded packet ends in its payload, trailing bytes included (past the
/// payload's end for a packet a game stack joined from several datagrams).
fn packet_end(found: &Found<'_>, p: &Packet<'_>) -> usize {
    found.offset + found.bytes.len() + p.trailing.len()
}
