//! Why the server let a client go ([`LeaveReason`]) or dropped a datagram
//! ([`DropReason`]): stable names for logs and counters, and the text for humans.

use std::fmt;

use crate::codec::{DecodeError, MessageType};

/// Why a client left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// The goodbye datagram `00 42 59 45` (a lost connection).
    Goodbye,
    IdleTimeout,
    /// It sent a new HandshakeRequest on the same connection (8.0+ re-initialises it).
    Rehandshake,
    /// A HandshakeRequest with its name came from another connection, or another name
    /// came from its connection: the newest one wins (8.0+).
    Replaced,
    /// It never sent its ClientState after the HandshakeResponse (half-open).
    HandshakeTimeout,
    /// The server is shutting down ([`Server::close_all`](super::Server::close_all)).
    Shutdown,
}

impl LeaveReason {
    pub fn name(self) -> &'static str {
        match self {
            LeaveReason::Goodbye => "goodbye",
            LeaveReason::IdleTimeout => "idle_timeout",
            LeaveReason::Rehandshake => "rehandshake",
            LeaveReason::Replaced => "replaced",
            LeaveReason::HandshakeTimeout => "handshake_timeout",
            LeaveReason::Shutdown => "shutdown",
        }
    }
}

/// Why a datagram was dropped. The session is never affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    TooLarge {
        max: usize,
    },
    /// The real reader would throw here (and the real server restart its session).
    Malformed(DecodeError),
    /// The 6.0.x byte order (`C7 8B`), which a 9.0 server does not read.
    Legacy60,
    /// A type the server does not accept (VoiceData, TextData, HandshakeResponse, ...).
    NotForServer(MessageType),
    /// Wrong session: answered with ErrorWrongSession.
    WrongSession {
        got: u32,
    },
    NullName,
    /// A ClientState/DeltaChannelState about a client the sending peer does not own
    /// (the real server trusts any id; we refuse so one peer cannot rewrite another).
    NotOwner {
        id: u16,
    },
    /// A ClientState whose name is not the one the client joined with.
    NameMismatch {
        id: u16,
    },
    /// A null room name inside a ClientState (it crashes real clients when re-broadcast).
    NullRoom {
        id: u16,
    },
    /// Relay payload with a bad magic (or the 6.0.x one), or a HandshakeP2P.
    RelayRefused(&'static str),
    ServerFull {
        max: usize,
    },
    RateLimited,
    /// Too many handshakes from this source network (/24 or /64), whatever the ports.
    PrefixRateLimited,
    /// A name longer than any real client can join with.
    NameTooLong {
        len: usize,
        max: usize,
    },
    /// Too many clients between HandshakeResponse and their own ClientState.
    HalfOpenFull {
        max: usize,
    },
    /// A relay or DeltaChannelState from a peer that has not sent its ClientState yet
    /// (or is no client at all).
    NotJoined,
    /// A handshake while the server drains ([`Server::stop_accepting`](super::Server::stop_accepting)).
    Draining,
}

impl DropReason {
    /// A short stable name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            DropReason::TooLarge { .. } => "too_large",
            DropReason::Malformed(_) => "malformed",
            DropReason::Legacy60 => "legacy_6_0",
            DropReason::NotForServer(_) => "not_for_server",
            DropReason::WrongSession { .. } => "wrong_session",
            DropReason::NullName => "null_name",
            DropReason::NotOwner { .. } => "not_owner",
            DropReason::NameMismatch { .. } => "name_mismatch",
            DropReason::NullRoom { .. } => "null_room",
            DropReason::RelayRefused(_) => "relay_refused",
            DropReason::ServerFull { .. } => "server_full",
            DropReason::RateLimited => "rate_limited",
            DropReason::PrefixRateLimited => "prefix_rate_limited",
            DropReason::NameTooLong { .. } => "name_too_long",
            DropReason::HalfOpenFull { .. } => "half_open_full",
            DropReason::NotJoined => "not_joined",
            DropReason::Draining => "draining",
        }
    }

    /// Every [`DropReason::name`], in [`DropReason::index`] order.
    pub const NAMES: [&'static str; 17] = [
        "too_large",
        "malformed",
        "legacy_6_0",
        "not_for_server",
        "wrong_session",
        "null_name",
        "not_owner",
        "name_mismatch",
        "null_room",
        "relay_refused",
        "server_full",
        "rate_limited",
        "prefix_rate_limited",
        "name_too_long",
        "half_open_full",
        "not_joined",
        "draining",
    ];

    /// This reason's slot in [`Stats::drops`](super::Stats::drops).
    pub fn index(&self) -> usize {
        let name = self.name();
        Self::NAMES.iter().position(|n| *n == name).unwrap_or(0)
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::TooLarge { max } => write!(f, "longer than --max-packet {max}"),
            DropReason::Malformed(e) => write!(f, "malformed: {e}"),
            DropReason::Legacy60 => f.write_str("6.0.x byte order (C7 8B) is not served"),
            DropReason::NotForServer(t) => write!(f, "{t} is not a message for the server"),
            DropReason::WrongSession { got } => {
                write!(f, "wrong session {got:#010x}, answered ErrorWrongSession")
            }
            DropReason::NullName => f.write_str("HandshakeRequest with a null name"),
            DropReason::NotOwner { id } => {
                write!(f, "state of client {id}, which this peer does not own")
            }
            DropReason::NameMismatch { id } => {
                write!(f, "ClientState renames client {id}")
            }
            DropReason::NullRoom { id } => write!(f, "ClientState of {id} lists a null room"),
            DropReason::RelayRefused(why) => write!(f, "relay refused: {why}"),
            DropReason::ServerFull { max } => write!(f, "server full (--max-clients {max})"),
            DropReason::RateLimited => f.write_str("too many handshakes from this peer"),
            DropReason::PrefixRateLimited => {
                f.write_str("too many handshakes from this peer's network (/24 or /64)")
            }
            DropReason::NameTooLong { len, max } => {
                write!(f, "name of {len} bytes, longer than --max-name {max}")
            }
            DropReason::HalfOpenFull { max } => write!(
                f,
                "{max} clients are waiting to send their ClientState (--max-half-open)"
            ),
            DropReason::NotJoined => {
                f.write_str("from a peer that has not sent its ClientState (not a joined client)")
            }
            DropReason::Draining => f.write_str("the server is draining: no new clients"),
        }
    }
}
