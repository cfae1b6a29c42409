//! The sans-IO core of `dissonance replay`: a capture's client traffic replayed against a
//! live server. Each captured client becomes a virtual client that does its own handshake;
//! the session and client ids the live server hands out replace the captured ones in
//! everything it sends afterwards, packets re-encoded. Timing follows an absolute
//! schedule from the capture timestamps (each send is due at start + t/speed, so lateness
//! never accumulates). The shell owns sockets and clock: it calls
//! [`Replayer::poll_transmit`] when [`Replayer::poll_timeout`] comes due and feeds every
//! datagram the live server sends back to [`Replayer::handle`].

pub mod rewrite;
pub mod runtime;
pub mod schedule;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::capture::{Payload, Transport};
use crate::codec::{Message, MessageType, Packet};
use crate::dissect::locate::{Classified, FlowKey, Locator, PayloadMode, BYE};
use crate::dissect::pipeline::{Dissector, Filters};
pub use rewrite::IdMap;
pub use schedule::Schedule;

/// One captured client.
#[derive(Debug, Clone)]
pub struct ScriptClient {
    pub addr: SocketAddr,
    /// Its player name, when the capture has its handshake.
    pub name: Option<String>,
}

/// One datagram a client sent in the capture.
#[derive(Debug, Clone)]
pub struct ScriptSend {
    /// Since the capture's first client datagram.
    pub at: Duration,
    pub client: usize,
    pub bytes: Vec<u8>,
}

/// What a capture says the clients sent and the server answered.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub server: Option<SocketAddr>,
    pub clients: Vec<ScriptClient>,
    pub sends: Vec<ScriptSend>,
    /// Captured server → client packets, per client, by type.
    pub answers: Vec<BTreeMap<MessageType, u64>>,
    /// The captured session and (id → name) of its clients, to translate ids.
    pub session: Option<u32>,
    pub names: FxHashMap<u16, String>,
    pub duration: Duration,
}

impl Script {
    /// Builds the script from every UDP payload of a capture, in capture order. The
    /// server is the address the tracker infers (where handshakes go). `mode` finds
    /// the packets: datagrams of a plain flow are replayed as they are; on a game
    /// stack's flow (named, or detected by `auto`) and with `scan` or `offset:N`, the
    /// Dissonance packets found are (each once: retransmitted copies are not packets),
    /// and the stack's disconnect becomes the plain transport's goodbye.
    pub fn from_payloads<'a>(
        payloads: impl IntoIterator<Item = (i64, SocketAddr, SocketAddr, &'a [u8])>,
        mode: PayloadMode,
    ) -> Script {
        Script::build(payloads, false, mode)
    }

    /// As [`Script::from_payloads`]; without a Dissonance server in the capture (for
    /// `--raw` against servers that are not Dissonance) the server is the address that
    /// received datagrams from the most senders (then: the most datagrams).
    pub fn from_payloads_any_server<'a>(
        payloads: impl IntoIterator<Item = (i64, SocketAddr, SocketAddr, &'a [u8])>,
        mode: PayloadMode,
    ) -> Script {
        Script::build(payloads, true, mode)
    }

    fn build<'a>(
        payloads: impl IntoIterator<Item = (i64, SocketAddr, SocketAddr, &'a [u8])>,
        any_server: bool,
        mode: PayloadMode,
    ) -> Script {
        let all: Vec<(i64, SocketAddr, SocketAddr, &[u8])> = payloads.into_iter().collect();
        let mut dis = Dissector::new(mode, Filters::default());
        for (i, &(ts_ns, src, dst, data)) in all.iter().enumerate() {
            let d = Payload {
                frame_number: i as u64 + 1,
                ts_ns,
                src,
                dst,
                transport: Transport::Udp,
                data,
                truncated: false,
            };
            // No printer: nothing to write, nothing to fail.
            let _ = dis.push::<crate::output::Printer<std::io::Sink>>(&d, None);
        }
        let tracker = &dis.tracker;
        let server = tracker
            .servers()
            .next()
            .copied()
            .or_else(|| any_server.then(|| busiest_destination(&all)).flatten());
        let mut s = Script {
            server,
            session: tracker
                .current_session
                .or_else(|| tracker.sessions().last().map(|r| r.id)),
            ..Script::default()
        };
        for c in tracker.clients() {
            if Some(c.session) == s.session {
                s.names.insert(c.id, c.name.clone());
            }
        }
        let Some(server) = server else {
            return s;
        };
        let mut index: FxHashMap<SocketAddr, usize> = FxHashMap::default();
        let mut t0 = None;
        // Finds the packets again (the dissector's locator is done): same input, same
        // packets.
        let mut locator = Locator::new(mode);
        for (i, &(ts_ns, src, dst, data)) in all.iter().enumerate() {
            let key = FlowKey {
                src,
                dst,
                tcp: false,
            };
            let packets = packets_of(&mut locator, key, (i as u64 + 1, ts_ns), data);
            let (client, to_server) = if dst == server {
                (src, true)
            } else if src == server {
                (dst, false)
            } else {
                continue;
            };
            let n = s.clients.len();
            let ci = *index.entry(client).or_insert(n);
            if ci == n {
                s.clients.push(ScriptClient {
                    addr: client,
                    name: tracker.client_at(client).map(|c| c.name.clone()),
                });
                s.answers.push(BTreeMap::new());
            }
            if to_server {
                let t0 = *t0.get_or_insert(ts_ns);
                let at = Duration::from_nanos((ts_ns - t0).max(0) as u64);
                s.duration = s.duration.max(at);
                for bytes in packets {
                    s.sends.push(ScriptSend {
                        at,
                        client: ci,
                        bytes,
                    });
                }
            } else {
                for p in packets.iter().filter_map(|b| Packet::decode(b).ok()) {
                    *s.answers[ci].entry(p.message_type()).or_default() += 1;
                }
            }
        }
        s
    }
}

/// What replay sends for one captured datagram: the datagram itself on a plain flow;
/// on a game stack's flow (and with `scan`, `offset:N`) each Dissonance packet found,
/// without what trails it, and the plain goodbye for the stack's disconnect.
fn packets_of(
    locator: &mut Locator,
    key: FlowKey,
    (number, ts_ns): (u64, i64),
    data: &[u8],
) -> Vec<Vec<u8>> {
    let mut found = vec![];
    let class = locator.locate_at(key, number, ts_ns, data, |f| {
        let len = match &f.result {
            Ok(p) => f.bytes.len() - p.trailing.len(),
            Err(_) => f.bytes.len(),
        };
        found.push(f.bytes[..len].to_vec());
    });
    let extracted = match locator.mode() {
        PayloadMode::Raw => false,
        PayloadMode::Auto => locator.flow(&key).is_some_and(|f| f.stack().is_some()),
        PayloadMode::Scan | PayloadMode::Offset(_) | PayloadMode::Stack(_) => true,
    };
    if !extracted {
        return vec![data.to_vec()];
    }
    match class {
        Classified::Bye | Classified::TransportDisconnect => vec![BYE.to_vec()],
        _ => found,
    }
}

/// The destination that received datagrams from the most distinct senders, then the
/// most datagrams (then the lowest address, so the choice is stable).
fn busiest_destination(all: &[(i64, SocketAddr, SocketAddr, &[u8])]) -> Option<SocketAddr> {
    let mut by_dst: BTreeMap<SocketAddr, (std::collections::BTreeSet<SocketAddr>, u64)> =
        BTreeMap::new();
    for &(_, src, dst, _) in all {
        let e = by_dst.entry(dst).or_default();
        e.0.insert(src);
        e.1 += 1;
    }
    let best = by_dst.iter().map(|(_, (srcs, n))| (srcs.len(), *n)).max()?;
    by_dst
        .iter()
        .find(|(_, (srcs, n))| (srcs.len(), *n) == best)
        .map(|(d, _)| *d)
}

/// One virtual client.
#[derive(Debug, Default)]
struct Virtual {
    /// Live session and id, once the live server answered the handshake.
    session: Option<u32>,
    id: Option<u16>,
    /// Datagrams due before the handshake completed, sent as soon as it does.
    waiting: VecDeque<Vec<u8>>,
    received: BTreeMap<MessageType, u64>,
}

/// The end report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub sent: u64,
    pub sent_by_type: BTreeMap<MessageType, u64>,
    pub received: u64,
    pub received_by_type: BTreeMap<MessageType, u64>,
    pub received_malformed: u64,
    pub wrong_session: u64,
    pub remove_client: u64,
    /// Sent as captured because they could not be translated (undecodable, unknown id).
    pub untranslated: u64,
    /// Still waiting for a handshake response at the end.
    pub never_sent: u64,
    /// Handed out, but the send failed (not in `sent`).
    pub send_failed: u64,
    /// Rows of the captured-vs-live comparison that differ (set by [`Replayer::finish`]).
    pub differences: u64,
}

/// The replay state machine.
pub struct Replayer {
    script: Script,
    schedule: Schedule,
    raw: bool,
    /// Next send: (loop iteration, index into the script).
    iteration: u32,
    cursor: usize,
    clients: Vec<Virtual>,
    ids: IdMap,
    out: VecDeque<(usize, Vec<u8>)>,
    pub report: Report,
}

impl Replayer {
    pub fn new(script: Script, schedule: Schedule, raw: bool) -> Replayer {
        let clients = script.clients.iter().map(|_| Virtual::default()).collect();
        let ids = IdMap::new(script.session, script.names.clone());
        Replayer {
            script,
            schedule,
            raw,
            iteration: 0,
            cursor: 0,
            clients,
            ids,
            out: VecDeque::new(),
            report: Report::default(),
        }
    }

    pub fn script(&self) -> &Script {
        &self.script
    }

    /// Every scheduled datagram has been handed out.
    pub fn is_done(&self) -> bool {
        self.iteration >= self.schedule.loops && self.out.is_empty()
    }

    /// When the next datagram is due (`None` when done). Queued datagrams (released by
    /// a handshake) are due immediately.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if !self.out.is_empty() {
            return Some(Duration::ZERO);
        }
        if self.iteration >= self.schedule.loops {
            return None;
        }
        let s = self.script.sends.get(self.cursor)?;
        Some(
            self.schedule
                .due(self.iteration, s.at, self.script.duration),
        )
    }

    /// The next datagram to send at `now`: (client index, bytes).
    pub fn poll_transmit(&mut self, now: Duration) -> Option<(usize, Vec<u8>)> {
        loop {
            if let Some(t) = self.out.pop_front() {
                self.count_sent(&t.1);
                return Some(t);
            }
            if self.poll_timeout()? > now {
                return None;
            }
            let send = &self.script.sends[self.cursor];
            let (client, bytes) = (send.client, send.bytes.clone());
            self.cursor += 1;
            if self.cursor == self.script.sends.len() {
                self.cursor = 0;
                self.iteration += 1;
                if self.iteration < self.schedule.loops {
                    // A new round: every client handshakes again.
                    for v in &mut self.clients {
                        v.session = None;
                        v.id = None;
                    }
                }
            }
            if self.raw {
                self.count_sent(&bytes);
                return Some((client, bytes));
            }
            let v = &mut self.clients[client];
            let needs_session = bytes != BYE
                && Packet::peek_type(&bytes).is_ok_and(|(_, t)| t != MessageType::HandshakeRequest);
            // A client's datagrams keep their order: anything behind one that waits for
            // the handshake (its goodbye too) waits as well.
            if (needs_session && v.session.is_none()) || !v.waiting.is_empty() {
                v.waiting.push_back(bytes);
                continue;
            }
            let bytes = self.translate(client, bytes);
            self.count_sent(&bytes);
            return Some((client, bytes));
        }
    }

    fn translate(&mut self, client: usize, bytes: Vec<u8>) -> Vec<u8> {
        let v = &self.clients[client];
        let Some(session) = v.session else {
            return bytes;
        };
        if bytes == BYE {
            return bytes;
        }
        match self.ids.rewrite(&bytes, session) {
            Some(b) => b,
            None => {
                self.report.untranslated += 1;
                bytes
            }
        }
    }

    /// Datagrams that wait for a live handshake response.
    pub fn waiting(&self) -> usize {
        self.clients.iter().map(|v| v.waiting.len()).sum()
    }

    /// A datagram [`Replayer::poll_transmit`] handed out could not be sent: counted as
    /// failed, not as sent.
    pub fn send_failed(&mut self, bytes: &[u8]) {
        self.report.sent = self.report.sent.saturating_sub(1);
        if let Ok((_, t)) = Packet::peek_type(bytes) {
            if let Some(n) = self.report.sent_by_type.get_mut(&t) {
                *n -= 1;
                if *n == 0 {
                    self.report.sent_by_type.remove(&t);
                }
            }
        }
        self.report.send_failed += 1;
    }

    fn count_sent(&mut self, bytes: &[u8]) {
        self.report.sent += 1;
        if let Ok((_, t)) = Packet::peek_type(bytes) {
            *self.report.sent_by_type.entry(t).or_default() += 1;
        }
    }

    /// A datagram from the live server to virtual client `client`.
    pub fn handle(&mut self, client: usize, bytes: &[u8]) {
        self.report.received += 1;
        let Ok(p) = Packet::decode(bytes) else {
            self.report.received_malformed += 1;
            return;
        };
        let t = p.message_type();
        *self.report.received_by_type.entry(t).or_default() += 1;
        let Some(v) = self.clients.get_mut(client) else {
            return;
        };
        *v.received.entry(t).or_default() += 1;
        match &p.message {
            Message::HandshakeResponse(h) => {
                v.session = Some(h.session);
                v.id = Some(h.client_id);
                if let Some(name) = &self.script.clients[client].name {
                    self.ids.learn(name, h.client_id);
                }
                for c in h.clients.iter() {
                    if let Some(name) = c.name.to_str_lossy() {
                        self.ids.learn(&name, c.id);
                    }
                }
                let waiting = std::mem::take(&mut self.clients[client].waiting);
                for b in waiting {
                    let b = self.translate(client, b);
                    self.out.push_back((client, b));
                }
            }
            Message::ClientState(c) => {
                if let Some(name) = c.name.to_str_lossy() {
                    self.ids.learn(&name, c.client_id);
                }
            }
            Message::ErrorWrongSession(_) => self.report.wrong_session += 1,
            Message::RemoveClient(_) => self.report.remove_client += 1,
            _ => {}
        }
    }

    /// Finishes: counts what never went out, renders the report with the difference
    /// between the captured server's answers and the live one's, per client.
    pub fn finish(&mut self) -> String {
        self.report.never_sent = self.clients.iter().map(|v| v.waiting.len() as u64).sum();
        let r = &self.report;
        let mut s = String::new();
        let types = |m: &BTreeMap<MessageType, u64>| {
            m.iter()
                .map(|(t, n)| format!("{} {n}", t.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(s, "sent: {} ({})", r.sent, types(&r.sent_by_type));
        if r.send_failed > 0 {
            let _ = writeln!(s, "failed sends: {}", r.send_failed);
        }
        let _ = writeln!(
            s,
            "received: {} ({}){}",
            r.received,
            types(&r.received_by_type),
            if r.received_malformed > 0 {
                format!(", {} malformed", r.received_malformed)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "ErrorWrongSession: {}, RemoveClient: {}, untranslated: {}, never sent (no handshake response): {}",
            r.wrong_session, r.remove_client, r.untranslated, r.never_sent
        );
        if self.raw {
            return s;
        }
        let loops = self.schedule.loops as u64;
        let _ = writeln!(
            s,
            "answers, captured (x{loops} loops) vs live, per client and type:"
        );
        let mut differences = 0;
        for (i, c) in self.script.clients.iter().enumerate() {
            let name = c.name.clone().unwrap_or_else(|| c.addr.to_string());
            let captured = &self.script.answers[i];
            let live = &self.clients[i].received;
            let mut all: Vec<MessageType> = captured.keys().chain(live.keys()).copied().collect();
            all.sort();
            all.dedup();
            for t in all {
                let a = captured.get(&t).copied().unwrap_or(0) * loops;
                let b = live.get(&t).copied().unwrap_or(0);
                let mark = if a == b {
                    "same"
                } else {
                    differences += 1;
                    "DIFFERENT"
                };
                let _ = writeln!(s, "  {name:<12} {:<22} {a:>6} {b:>6}  {mark}", t.name());
            }
        }
        let _ = writeln!(s, "differences: {differences}");
        self.report.differences = differences;
        s
    }
}

#[cfg(test)]
mod tests;
