//! A packet with where and when it was seen ([`Record`]): what the dissector hands to
//! a [`RecordSink`](super::pipeline::RecordSink) (the printers write it out).

use std::net::SocketAddr;

use crate::codec::{DecodeError, Packet};
use crate::dissect::session::Direction;

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
    /// Where the packet starts in the transport payload (in `first_frame`'s when set).
    pub offset: usize,
    /// A game stack delivered the packet from earlier datagrams (joined from several,
    /// or held behind a gap): the frame holding its first byte.
    pub first_frame: Option<u64>,
    /// Its position among the packets of the same payload (0 for the first).
    pub index: usize,
    pub direction: Direction,
}

impl Head {
    /// The head of a packet `found` in payload `d`, `rel_s` after the capture's start.
    #[inline]
    pub fn of(
        d: &crate::capture::Payload<'_>,
        found: &crate::dissect::locate::Found<'_>,
        rel_s: f64,
        index: usize,
        direction: Direction,
    ) -> Head {
        Head {
            number: d.frame_number,
            ts_ns: d.ts_ns,
            rel_s,
            src: d.src,
            dst: d.dst,
            transport: match d.transport {
                crate::capture::Transport::Tcp => "tcp",
                crate::capture::Transport::Udp => "udp",
            },
            offset: found.offset,
            first_frame: found.elsewhere.map(|e| e.0),
            index,
            direction,
        }
    }
}

/// A datagram that holds no packet but is noted between the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramNote {
    /// The plain UDP transport's goodbye `00 42 59 45`.
    Goodbye,
    /// A zero-length datagram on a Dissonance flow.
    Empty,
}
