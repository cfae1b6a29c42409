//! A sans-IO Dissonance server: the modern (9.0.x) real server's behaviour of
//! docs/protocol.md §8 as a state machine. Feed it datagrams with [`Server::handle`], take what
//! to send from [`Server::poll_transmit`] and what happened from [`Server::poll_event`].
//! It owns no socket and no clock, so tests drive it in memory with a simulated time.
//!
//! Where the real server falls over (a malformed packet throws, the server restarts with a
//! new session and everyone is kicked), this one drops that single packet, reports an
//! [`Event::Dropped`] with the reason and keeps the session.
//!
//! ```
//! use dissonance_tools::net::server::{Config, Server};
//! use std::time::Instant;
//! let mut s = Server::new(Config::new(0x12345678));
//! let alice = "127.0.0.1:47001".parse().unwrap();
//! let hello = [0x8b, 0xc7, 4, 1, 0, 0, 3, 0xc0, 0, 0, 0xbb, 0x80, 0, 6, b'a', b'l', b'i', b'c', b'e'];
//! s.handle(Instant::now(), alice, &hello);
//! let t = s.poll_transmit().unwrap();
//! assert_eq!(t.bytes, [0x8b, 0xc7, 5, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 0, 0, 0, 0]);
//! ```

use std::collections::VecDeque;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::codec::{
    ClientState, CodecSettings, DeltaChannelState, ErrorWrongSession, HandshakeRequest,
    HandshakeResponse, Message, MessageType, Packet, RelayVerdict, RemoveClient, RoomsEncoding,
    Seq, ServerRelay, Variant, WireStr, ALWAYS_SEND, DEFAULT_BUFFER_SIZE, MAGIC_MODERN,
};
use crate::collate::dotnet_compare;
use crate::dissect::locate::BYE;

mod reason;
pub use reason::{DropReason, LeaveReason};

/// The largest UDP payload over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// The longest name a real client can join with: its ClientState (22 bytes + name) must fit
/// the 1024-byte send buffer (docs/protocol.md §10.1), or the real client throws.
pub const MAX_REAL_NAME: usize = DEFAULT_BUFFER_SIZE - 22;

/// Server settings. The limits default to values no real session reaches.
#[derive(Debug, Clone)]
pub struct Config {
    /// The session id (the real server draws it once; see [`random_session`]).
    pub session: u32,
    /// Handshakes beyond this many registered clients are dropped (no reply).
    pub max_clients: usize,
    /// Datagrams longer than this are dropped unread.
    pub max_packet: usize,
    /// Drop a client that sent nothing for this long (real clients are silent while
    /// nobody talks, so this is off by default).
    pub idle_timeout: Option<Duration>,
    /// Handshakes a single peer may send in a burst ...
    pub handshake_burst: u32,
    /// ... and the steady rate after it (real clients retry every 2 s).
    pub handshakes_per_sec: f64,
    /// Handshakes one source network (/24 for IPv4, /64 for IPv6) may send in a burst,
    /// whatever the ports ...
    pub prefix_burst: u32,
    /// ... and the steady rate after it.
    pub prefix_per_sec: f64,
    /// HandshakeRequests with a longer name (UTF-8 bytes) are refused.
    pub max_name: usize,
    /// Clients that got a HandshakeResponse but have not yet sent their ClientState (the
    /// proof that they receive at their address); handshakes beyond this are refused.
    pub max_half_open: usize,
    /// A half-open client is forgotten after this long (a real client sends its ClientState
    /// as soon as the response arrives).
    pub half_open_timeout: Duration,
}

impl Config {
    pub fn new(session: u32) -> Config {
        Config {
            session,
            max_clients: 4096,
            max_packet: MAX_UDP_PAYLOAD,
            idle_timeout: None,
            handshake_burst: 10,
            handshakes_per_sec: 1.0,
            prefix_burst: 256,
            prefix_per_sec: 64.0,
            max_name: MAX_REAL_NAME,
            max_half_open: 256,
            half_open_timeout: Duration::from_secs(10),
        }
    }
}

/// A session id as the real server draws it: `System.Random.Next()` (0 … 2^31−2),
/// re-drawn while 0, so never 0 and never with the top bit set.
pub fn random_session<R: rand::Rng>(rng: &mut R) -> u32 {
    loop {
        let s = rng.gen_range(0..0x7FFF_FFFFu32);
        if s != 0 {
            return s;
        }
    }
}

/// One datagram to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    pub peer: SocketAddr,
    pub bytes: &'a [u8],
    /// The channel the real server would use (the plain UDP transport sends both alike).
    pub reliable: bool,
}

/// What happened, for the shell to log.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Joined {
        id: u16,
        name: String,
        peer: SocketAddr,
        codec: CodecSettings,
    },
    Left {
        id: u16,
        name: String,
        peer: SocketAddr,
        reason: LeaveReason,
        rooms: Vec<String>,
        /// For [`LeaveReason::Replaced`]: the connection that took the name over (when it
        /// is not the client's own). A joined client evicted so is sent ErrorWrongSession
        /// (session + 1), as the real server's admin `Reset` does, so that it reconnects.
        by: Option<SocketAddr>,
    },
    RoomJoined {
        id: u16,
        name: String,
        room: String,
    },
    RoomLeft {
        id: u16,
        name: String,
        room: String,
    },
    Dropped {
        peer: SocketAddr,
        len: usize,
        reason: DropReason,
    },
    /// Accepted, but longer than the 1024 bytes real Dissonance ever sends.
    Oversize {
        peer: SocketAddr,
        len: usize,
    },
}

/// Counters since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_out: u64,
    pub bytes_out: u64,
    /// Payloads forwarded (one per destination).
    pub relayed: u64,
    pub dropped: u64,
    pub wrong_session: u64,
    /// Transport control datagrams other than goodbye (ignored).
    pub control: u64,
    /// Relay destinations that were not registered clients.
    pub relay_unknown: u64,
    /// Relay destinations listed more than once in one relay (sent once).
    pub relay_duplicate: u64,
    pub joins: u64,
    pub leaves: u64,
    /// Received datagrams by kind ([`kind_of`]).
    pub in_kinds: ByKind,
    /// Queued datagrams by kind (a relayed copy counts as its inner packet's type).
    pub out_kinds: ByKind,
    /// Dropped datagrams by reason, indexed as [`DropReason::NAMES`].
    pub drops: [u64; DropReason::NAMES.len()],
    /// ErrorWrongSession(session + 1) sent to make a peer reconnect: an evicted client, or
    /// a peer that talks in the session without being a client (forgotten or evicted).
    pub resets: u64,
}

impl Stats {
    /// `(reason, count)` of every reason seen, in [`DropReason::NAMES`] order.
    pub fn drop_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::NAMES
            .iter()
            .zip(self.drops)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (*r, n))
    }
}

/// Kinds of datagram [`kind_of`] tells apart: 1..=11 a message type, 0 transport control,
/// 12 anything else.
pub const KINDS: usize = 13;

/// Datagrams and bytes per [`kind_of`] kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByKind {
    pub datagrams: [u64; KINDS],
    pub bytes: [u64; KINDS],
}

impl ByKind {
    fn add(&mut self, data: &[u8]) {
        let k = kind_of(data);
        self.datagrams[k] += 1;
        self.bytes[k] += data.len() as u64;
    }
}

/// A datagram's kind from its first three bytes: the message type (1..=11) of a modern
/// packet, 0 for transport control (first byte zero), 12 for anything else (6.0.x byte
/// order, unknown type, not Dissonance).
pub fn kind_of(data: &[u8]) -> usize {
    match data {
        [0, ..] => 0,
        [0x8B, 0xC7, t, ..] if (1..=11).contains(t) => usize::from(*t),
        _ => 12,
    }
}

/// A [`kind_of`] kind's name: the message type's, `transport_control` or `other`.
pub fn kind_name(kind: usize) -> &'static str {
    match u8::try_from(kind).ok().and_then(MessageType::from_u8) {
        Some(t) => t.name(),
        None if kind == 0 => "transport_control",
        None => "other",
    }
}

struct Client {
    name: String,
    peer: SocketAddr,
    codec: CodecSettings,
    /// Rooms listened to, in join order.
    rooms: Vec<String>,
    last_seen: Instant,
    /// It sent its own ClientState after the HandshakeResponse: it receives at its
    /// address. Until then it gets nothing but the 15-byte response, and nobody is told of it.
    joined: bool,
    /// When the HandshakeResponse went out.
    since: Instant,
}

/// A registered client, as [`Server::clients`] shows it.
#[derive(Debug, Clone, Copy)]
pub struct ClientView<'a> {
    pub id: u16,
    pub name: &'a str,
    pub peer: SocketAddr,
    pub codec: CodecSettings,
    pub rooms: &'a [String],
    /// It has sent its ClientState (see [`Config::max_half_open`]).
    pub joined: bool,
}

#[derive(Debug, Clone, Copy)]
struct Queued {
    peer: SocketAddr,
    start: usize,
    len: usize,
    reliable: bool,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Keys remembered by a rate limiter before it forgets them all (bounds memory against a
/// flood of source addresses).
const LIMITER_MAX_PEERS: usize = 65_536;

/// Token buckets by key (a peer, or a source network).
struct Limiter<K> {
    burst: f64,
    rate: f64,
    buckets: FxHashMap<K, Bucket>,
}

impl<K: Hash + Eq> Limiter<K> {
    fn new(burst: u32, rate: f64) -> Limiter<K> {
        Limiter {
            burst: f64::from(burst.max(1)),
            rate,
            buckets: FxHashMap::default(),
        }
    }

    /// Would `key` get a token now? (Takes nothing.)
    fn has(&self, now: Instant, key: &K) -> bool {
        self.buckets.get(key).is_none_or(|b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.rate >= 1.0
        })
    }

    fn take(&mut self, now: Instant, key: K) -> bool {
        if self.buckets.len() >= LIMITER_MAX_PEERS && !self.buckets.contains_key(&key) {
            self.buckets.clear();
        }
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets full buckets (they behave as new ones).
    fn expire(&mut self, now: Instant) {
        let (full, rate) = (self.burst, self.rate);
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < full
        });
    }
}

/// The source network a handshake rate limit applies to: the /24 of an IPv4 address, the
/// /64 of an IPv6 one (one host or one site usually holds a whole /64).
fn prefix(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let [a, b, c, _] = a.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => prefix(IpAddr::V4(v4)),
            None => IpAddr::V6((u128::from(a) & !u128::from(u64::MAX)).into()),
        },
    }
}

pub struct Server {
    config: Config,
    /// The id table of §8.2: index = client id.
    clients: Vec<Option<Client>>,
    count: usize,
    by_name: FxHashMap<String, u16>,
    by_peer: FxHashMap<SocketAddr, u16>,
    /// Outgoing datagrams as ranges of `arena`; a relay fanned out to N peers stores its
    /// payload once.
    queue: VecDeque<Queued>,
    arena: Vec<u8>,
    events: VecDeque<Event>,
    limiter: Limiter<SocketAddr>,
    prefix_limiter: Limiter<IpAddr>,
    /// ErrorWrongSession(session + 1) to strangers: one a second per peer.
    reset_limiter: Limiter<SocketAddr>,
    half_open: usize,
    /// Relay destinations already sent to, one bit per client id (reused).
    seen: Vec<u64>,
    stats: Stats,
    scratch: Vec<u8>,
    /// False while draining: handshakes are refused.
    accepting: bool,
}

impl Server {
    pub fn new(config: Config) -> Server {
        Server {
            clients: Vec::new(),
            count: 0,
            by_name: FxHashMap::default(),
            by_peer: FxHashMap::default(),
            queue: VecDeque::new(),
            arena: Vec::with_capacity(64 * 1024),
            events: VecDeque::new(),
            limiter: Limiter::new(config.handshake_burst, config.handshakes_per_sec),
            prefix_limiter: Limiter::new(config.prefix_burst, config.prefix_per_sec),
            reset_limiter: Limiter::new(1, 1.0),
            half_open: 0,
            seen: Vec::new(),
            stats: Stats::default(),
            scratch: vec![0; MAX_UDP_PAYLOAD],
            accepting: true,
            config,
        }
    }

    /// Starts a drain: handshakes are refused from now on ([`DropReason::Draining`]);
    /// registered clients go on as before.
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// False once [`Server::stop_accepting`] was called.
    pub fn accepting(&self) -> bool {
        self.accepting
    }

    /// Ends the session for everyone, as the real server does for each lost connection
    /// (docs/protocol.md §8.4): in id order each client is sent the transport's goodbye,
    /// then removed, which sends RemoveClient to every client still registered.
    pub fn close_all(&mut self) {
        self.accepting = false;
        // Removing the last clients shortens the table: look ids up with `get`.
        for id in 0..self.clients.len() {
            if let Some(peer) = self
                .clients
                .get(id)
                .and_then(Option::as_ref)
                .map(|c| c.peer)
            {
                let start = self.arena.len();
                self.arena.extend_from_slice(&BYE);
                self.push(peer, start, BYE.len(), true);
                self.remove(id as u16, LeaveReason::Shutdown, None);
            }
        }
    }

    pub fn session(&self) -> u32 {
        self.config.session
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn stats(&self) -> Stats {
        self.stats
    }
    pub fn client_count(&self) -> usize {
        self.count
    }

    /// Registered clients in id order.
    pub fn clients(&self) -> impl Iterator<Item = ClientView<'_>> {
        self.clients.iter().enumerate().filter_map(|(id, c)| {
            c.as_ref().map(|c| ClientView {
                id: id as u16,
                name: &c.name,
                peer: c.peer,
                codec: c.codec,
                rooms: &c.rooms,
                joined: c.joined,
            })
        })
    }

    /// The next datagram to send, in the order the real server sends them.
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        match self.queue.pop_front() {
            Some(q) => Some(Transmit {
                peer: q.peer,
                bytes: &self.arena[q.start..q.start + q.len],
                reliable: q.reliable,
            }),
            None => {
                self.arena.clear();
                None
            }
        }
    }

    /// The datagrams waiting to be sent, without taking them: a shell sending in batches
    /// (sendmmsg) looks at these, then [`Server::consume_transmits`] what went out.
    pub fn pending_transmits(&self) -> impl Iterator<Item = Transmit<'_>> {
        self.queue.iter().map(|q| Transmit {
            peer: q.peer,
            bytes: &self.arena[q.start..q.start + q.len],
            reliable: q.reliable,
        })
    }

    /// Drops the first `n` pending datagrams (they were sent).
    pub fn consume_transmits(&mut self, n: usize) {
        self.queue.drain(..n.min(self.queue.len()));
        if self.queue.is_empty() {
            self.arena.clear();
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// One datagram from `peer`. Never panics, whatever the bytes.
    pub fn handle(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        self.stats.in_kinds.add(data);
        if self.queue.is_empty() {
            self.arena.clear();
        }
        if data.len() > self.config.max_packet {
            let max = self.config.max_packet;
            return self.drop(peer, data.len(), DropReason::TooLarge { max });
        }
        if data.first() == Some(&0) {
            // Transport control (docs/transports.md): goodbye, or something we ignore.
            if data == BYE {
                if let Some(&id) = self.by_peer.get(&peer) {
                    self.remove(id, LeaveReason::Goodbye, None);
                }
            } else {
                self.stats.control += 1;
            }
            return;
        }
        if data.len() > DEFAULT_BUFFER_SIZE {
            self.events.push_back(Event::Oversize {
                peer,
                len: data.len(),
            });
        }
        if let Some(&id) = self.by_peer.get(&peer) {
            if let Some(Some(c)) = self.clients.get_mut(id as usize) {
                c.last_seen = now;
            }
        }
        // The real server checks the session right after the type byte, before reading
        // the body, so even a truncated body with a wrong session gets ErrorWrongSession.
        if let [0x8B, 0xC7, t, s0, s1, s2, s3, ..] = *data {
            let checked = matches!(
                MessageType::from_u8(t),
                Some(
                    MessageType::ClientState
                        | MessageType::DeltaChannelState
                        | MessageType::ServerRelayReliable
                        | MessageType::ServerRelayUnreliable
                )
            );
            let got = u32::from_be_bytes([s0, s1, s2, s3]);
            if checked && got != self.config.session {
                return self.wrong_session(peer, data.len(), got);
            }
        }
        let packet = match Packet::decode(data) {
            Ok(p) => p,
            Err(e) => return self.drop(peer, data.len(), DropReason::Malformed(e)),
        };
        if packet.variant != Variant::Modern {
            return self.drop(peer, data.len(), DropReason::Legacy60);
        }
        match packet.message {
            Message::HandshakeRequest(h) => self.on_handshake(now, peer, data.len(), h),
            Message::ClientState(cs) => self.on_client_state(now, peer, data, cs),
            Message::DeltaChannelState(d) => self.on_delta(now, peer, data, d),
            Message::ServerRelayReliable(r) => self.on_relay(now, peer, data.len(), r, true),
            Message::ServerRelayUnreliable(r) => self.on_relay(now, peer, data.len(), r, false),
            other => {
                let t = other.message_type();
                self.drop(peer, data.len(), DropReason::NotForServer(t))
            }
        }
    }

    /// Expires idle clients (when configured) and old rate-limiter entries. Call it now
    /// and then (the `serve` shell does every second).
    pub fn handle_timeout(&mut self, now: Instant) {
        let idle = self.config.idle_timeout;
        let half_open = self.config.half_open_timeout;
        let expired: Vec<(u16, LeaveReason)> = self
            .clients
            .iter()
            .enumerate()
            .filter_map(|(id, c)| {
                let c = c.as_ref()?;
                if !c.joined && now.saturating_duration_since(c.since) >= half_open {
                    return Some((id as u16, LeaveReason::HandshakeTimeout));
                }
                let silent = idle.is_some_and(|i| now.saturating_duration_since(c.last_seen) >= i);
                silent.then_some((id as u16, LeaveReason::IdleTimeout))
            })
            .collect();
        for (id, reason) in expired {
            self.remove(id, reason, None);
        }
        self.limiter.expire(now);
        self.prefix_limiter.expire(now);
        self.reset_limiter.expire(now);
    }

    fn drop(&mut self, peer: SocketAddr, len: usize, reason: DropReason) {
        self.stats.dropped += 1;
        self.stats.drops[reason.index()] += 1;
        self.events.push_back(Event::Dropped { peer, len, reason });
    }

    fn wrong_session(&mut self, peer: SocketAddr, len: usize, got: u32) {
        self.stats.wrong_session += 1;
        let m = Message::ErrorWrongSession(ErrorWrongSession {
            session: self.config.session,
        });
        self.send_message(peer, &m, false);
        self.drop(peer, len, DropReason::WrongSession { got });
    }

    /// Encodes `m` into the arena and queues it for `peer`.
    fn send_message(&mut self, peer: SocketAddr, m: &Message<'_>, reliable: bool) {
        if let Some((start, n)) = encode_into(&mut self.scratch, &mut self.arena, m) {
            self.push(peer, start, n, reliable);
        }
    }

    fn push(&mut self, peer: SocketAddr, start: usize, len: usize, reliable: bool) {
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += len as u64;
        self.stats.out_kinds.add(&self.arena[start..start + len]);
        self.queue.push_back(Queued {
            peer,
            start,
            len,
            reliable,
        });
    }

    /// Queues the same bytes (already in the arena) to every joined client. Half-open
    /// ones are left out: nothing but the HandshakeResponse goes to an address that has
    /// not shown it receives there.
    fn broadcast_arena(&mut self, start: usize, len: usize) {
        for i in 0..self.clients.len() {
            if let Some(c) = self.clients[i].as_ref().filter(|c| c.joined) {
                let peer = c.peer;
                self.push(peer, start, len, true);
            }
        }
    }

    /// A datagram in the session from a peer that is no client at all: a client the server
    /// forgot (evicted, timed out) still talking. It is told to reconnect with the 7-byte
    /// ErrorWrongSession(session + 1) of the real admin `Reset`, at most once a second per
    /// peer: never more bytes than it sent.
    fn stranger(&mut self, now: Instant, peer: SocketAddr, len: usize) {
        self.drop(peer, len, DropReason::NotJoined);
        if !self.by_peer.contains_key(&peer) && self.reset_limiter.take(now, peer) {
            self.reset(peer);
        }
    }

    fn reset(&mut self, peer: SocketAddr) {
        self.stats.resets += 1;
        let m = Message::ErrorWrongSession(ErrorWrongSession {
            session: self.config.session.wrapping_add(1),
        });
        self.send_message(peer, &m, false);
    }

    fn on_handshake(&mut self, now: Instant, peer: SocketAddr, len: usize, h: HandshakeRequest) {
        let Some(name) = h.name.to_str_lossy() else {
            // The real server ignores it without a reply.
            return self.drop(peer, len, DropReason::NullName);
        };
        if !self.accepting {
            return self.drop(peer, len, DropReason::Draining);
        }
        let max = self.config.max_name;
        let name_len = h.name.as_bytes().map_or(0, <[u8]>::len);
        if name_len > max {
            let len_name = name_len;
            return self.drop(peer, len, DropReason::NameTooLong { len: len_name, max });
        }
        // Both buckets must have a token before either is charged, so a refused
        // handshake costs the peer's network nothing.
        let net = prefix(peer.ip());
        if !self.limiter.has(now, &peer) {
            return self.drop(peer, len, DropReason::RateLimited);
        }
        if !self.prefix_limiter.has(now, &net) {
            return self.drop(peer, len, DropReason::PrefixRateLimited);
        }
        self.limiter.take(now, peer);
        self.prefix_limiter.take(now, net);
        // 8.0+: a resend on the same connection re-initialises the client; otherwise the
        // newest connection evicts both the old holder of the name and the old client of
        // this connection.
        let by_conn = self.by_peer.get(&peer).copied();
        let by_name = self.by_name.get(name.as_ref()).copied();
        match (by_conn, by_name) {
            (Some(a), Some(b)) if a == b => self.remove(a, LeaveReason::Rehandshake, None),
            _ => {
                for id in [by_conn, by_name].into_iter().flatten() {
                    self.remove(id, LeaveReason::Replaced, Some(peer));
                }
            }
        }
        let max = self.config.max_clients.min(usize::from(u16::MAX));
        let Some(id) = self.free_id().filter(|_| self.count < max) else {
            return self.drop(peer, len, DropReason::ServerFull { max });
        };
        if self.half_open >= self.config.max_half_open {
            let max = self.config.max_half_open;
            return self.drop(peer, len, DropReason::HalfOpenFull { max });
        }
        let name = name.into_owned();
        let client = Client {
            name: name.clone(),
            peer,
            codec: h.codec,
            rooms: Vec::new(),
            last_seen: now,
            joined: false,
            since: now,
        };
        self.half_open += 1;
        if id as usize == self.clients.len() {
            self.clients.push(Some(client));
        } else {
            self.clients[id as usize] = Some(client);
        }
        self.count += 1;
        self.stats.joins += 1;
        self.by_name.insert(name.clone(), id);
        self.by_peer.insert(peer, id);
        self.events.push_back(Event::Joined {
            id,
            name,
            peer,
            codec: h.codec,
        });

        let session = self.config.session;
        let resp = Message::HandshakeResponse(HandshakeResponse::modern(session, id));
        self.send_message(peer, &resp, true);
        // The real server sends the whole state right now; we hold it until the client's
        // own ClientState proves it receives at this address (a real client sends it as
        // soon as the response arrives, docs/protocol.md §9.2), so a forged source address
        // gets 15 bytes, not the session.
    }

    /// The state burst of §8.3 step 4 for the newly joined client `to`: one ClientState per
    /// joined client and for `to` itself, rooms in the .NET culture-sensitive order.
    fn send_state_burst(&mut self, to: u16) {
        let session = self.config.session;
        let Some(peer) = self.clients[to as usize].as_ref().map(|c| c.peer) else {
            return;
        };
        for i in 0..self.clients.len() {
            let Some(c) = self.clients[i]
                .as_ref()
                .filter(|c| c.joined || i == to as usize)
            else {
                continue;
            };
            let mut rooms: Vec<&str> = c.rooms.iter().map(String::as_str).collect();
            rooms.sort_by(|a, b| dotnet_compare(a, b));
            let rooms: Vec<WireStr> = rooms.into_iter().map(WireStr::new).collect();
            let m = Message::ClientState(ClientState {
                session,
                name: WireStr::new(&c.name),
                client_id: i as u16,
                codec: c.codec,
                rooms: Seq::Items(&rooms),
                rooms_encoding: RoomsEncoding::List,
            });
            if let Some((start, n)) = encode_into(&mut self.scratch, &mut self.arena, &m) {
                self.push(peer, start, n, true);
            }
        }
    }

    /// The id §8.2 gives a new name: the highest empty slot, else the next one.
    fn free_id(&self) -> Option<u16> {
        let id = match self.clients.iter().rposition(Option::is_none) {
            Some(i) => i,
            None => self.clients.len(),
        };
        // 0xFFFF is the always-send pseudo client, never a real id.
        u16::try_from(id).ok().filter(|&id| id != ALWAYS_SEND)
    }

    /// Removes client `id`. `by` is the connection whose handshake caused it.
    fn remove(&mut self, id: u16, reason: LeaveReason, by: Option<SocketAddr>) {
        let Some(c) = self.clients.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        if !c.joined {
            self.half_open -= 1;
        }
        while matches!(self.clients.last(), Some(None)) {
            self.clients.pop();
        }
        self.count -= 1;
        self.stats.leaves += 1;
        self.by_name.remove(&c.name);
        if self.by_peer.get(&c.peer) == Some(&id) {
            self.by_peer.remove(&c.peer);
        }
        // Nobody was told of a half-open client (its ClientState was never echoed).
        if c.joined {
            let m = Message::RemoveClient(RemoveClient {
                session: self.config.session,
                client_id: id,
            });
            if let Some((start, n)) = encode_into(&mut self.scratch, &mut self.arena, &m) {
                self.broadcast_arena(start, n);
            }
        }
        let by = by.filter(|b| *b != c.peer);
        if by.is_some() && c.joined {
            // The real server evicts silently; we tell the evicted client to reconnect.
            self.reset(c.peer);
        }
        self.events.push_back(Event::Left {
            id,
            name: c.name,
            peer: c.peer,
            reason,
            rooms: c.rooms,
            by,
        });
    }

    /// The id `peer` owns, if it is the client's own connection.
    fn owned(&self, peer: SocketAddr, id: u16) -> bool {
        self.by_peer.get(&peer) == Some(&id)
    }

    /// `peer` is the connection of a client that has sent its ClientState.
    fn joined(&self, peer: SocketAddr) -> bool {
        let c = self
            .by_peer
            .get(&peer)
            .and_then(|&id| self.clients[id as usize].as_ref());
        c.is_some_and(|c| c.joined)
    }

    fn on_client_state(&mut self, now: Instant, peer: SocketAddr, data: &[u8], cs: ClientState) {
        let id = cs.client_id;
        if !self.by_peer.contains_key(&peer) {
            return self.stranger(now, peer, data.len());
        }
        if !self.owned(peer, id) {
            return self.drop(peer, data.len(), DropReason::NotOwner { id });
        }
        // Names compare as the real reader decodes them (invalid UTF-8 as U+FFFD).
        let known = self.clients[id as usize].as_ref().map(|c| c.name.as_str());
        let same = matches!((known, cs.name.to_str_lossy()), (Some(k), Some(n)) if k == n);
        if !same {
            return self.drop(peer, data.len(), DropReason::NameMismatch { id });
        }
        if cs.rooms.iter().any(|r| r.is_null()) {
            return self.drop(peer, data.len(), DropReason::NullRoom { id });
        }
        if let Some(c) = self.clients[id as usize].as_mut().filter(|c| !c.joined) {
            // Its first ClientState: it has the response, so it receives here. Now the
            // state burst the real server sent with the response, then the echo below.
            c.joined = true;
            self.half_open -= 1;
            self.send_state_burst(id);
        }
        // Re-broadcast the received bytes unchanged to everyone (sender included), then
        // apply.
        let start = self.arena.len();
        self.arena.extend_from_slice(data);
        self.broadcast_arena(start, data.len());

        let mut rooms: Vec<String> = Vec::with_capacity(cs.rooms.len());
        for r in cs.rooms.iter() {
            let r = r.to_str_lossy().unwrap_or_default().into_owned();
            if !rooms.contains(&r) {
                rooms.push(r);
            }
        }
        let Some(c) = self.clients[id as usize].as_mut() else {
            return;
        };
        c.codec = cs.codec;
        let old = std::mem::replace(&mut c.rooms, rooms);
        let name = c.name.clone();
        for room in old.iter().filter(|r| !c.rooms.contains(r)) {
            self.events.push_back(Event::RoomLeft {
                id,
                name: name.clone(),
                room: room.clone(),
            });
        }
        for room in c.rooms.iter().filter(|r| !old.contains(r)) {
            self.events.push_back(Event::RoomJoined {
                id,
                name: name.clone(),
                room: room.clone(),
            });
        }
    }

    fn on_delta(&mut self, now: Instant, peer: SocketAddr, data: &[u8], d: DeltaChannelState) {
        let id = d.peer;
        if !self.joined(peer) {
            return self.stranger(now, peer, data.len());
        }
        if !self.owned(peer, id) {
            return self.drop(peer, data.len(), DropReason::NotOwner { id });
        }
        let start = self.arena.len();
        self.arena.extend_from_slice(data);
        self.broadcast_arena(start, data.len());

        let room = d.name.to_str_lossy().unwrap_or_default();
        let Some(c) = self.clients[id as usize].as_mut() else {
            return;
        };
        let at = c.rooms.iter().position(|r| *r == room);
        let name = c.name.clone();
        match (d.joined(), at) {
            (true, None) => {
                c.rooms.push(room.clone().into_owned());
                self.events.push_back(Event::RoomJoined {
                    id,
                    name,
                    room: room.into_owned(),
                });
            }
            (false, Some(i)) => {
                let room = c.rooms.remove(i);
                self.events.push_back(Event::RoomLeft { id, name, room });
            }
            _ => {}
        }
    }

    fn on_relay(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        len: usize,
        r: ServerRelay,
        reliable: bool,
    ) {
        // Only a joined client may make the server send to others.
        if !self.joined(peer) {
            return self.stranger(now, peer, len);
        }
        match r.server_verdict() {
            RelayVerdict::Relay => {}
            RelayVerdict::DropBadMagic => {
                return self.drop(peer, len, DropReason::RelayRefused("bad inner magic"))
            }
            RelayVerdict::DropHandshakeP2P => {
                return self.drop(peer, len, DropReason::RelayRefused("HandshakeP2P"))
            }
            RelayVerdict::Throws(e) => return self.drop(peer, len, DropReason::Malformed(e)),
        }
        if r.payload[..2] != MAGIC_MODERN {
            // A 9.0 server reads the inner magic in the modern order only.
            return self.drop(peer, len, DropReason::RelayRefused("bad inner magic"));
        }
        let start = self.arena.len();
        self.arena.extend_from_slice(r.payload);
        // No amplification beyond the real fan-out: at most one copy per joined client.
        let mut sent = 0usize;
        self.seen.clear();
        self.seen.resize(self.clients.len().div_ceil(64), 0);
        for id in r.destinations.iter() {
            if id == ALWAYS_SEND {
                continue;
            }
            let Some(c) = self.clients.get(id as usize).and_then(Option::as_ref) else {
                self.stats.relay_unknown += 1;
                continue;
            };
            if !c.joined {
                self.stats.relay_unknown += 1;
                continue;
            }
            let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
            if self.seen[word] & bit != 0 {
                self.stats.relay_duplicate += 1;
                continue;
            }
            self.seen[word] |= bit;
            let to = c.peer;
            self.push(to, start, r.payload.len(), reliable);
            sent += 1;
        }
        self.stats.relayed += sent as u64;
        if sent == 0 {
            self.arena.truncate(start);
        }
    }
}

/// Encodes `m` through `scratch` onto the end of `arena`; returns its range. Fails only
/// for a client state too big even for a 64 KiB datagram (then nothing is sent).
fn encode_into(scratch: &mut [u8], arena: &mut Vec<u8>, m: &Message<'_>) -> Option<(usize, usize)> {
    let n = m.encode(Variant::Modern, scratch).ok()?;
    let start = arena.len();
    arena.extend_from_slice(&scratch[..n]);
    Some((start, n))
}

#[cfg(test)]
mod tests;
