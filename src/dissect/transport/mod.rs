//! Game-transport decapsulation: Dissonance packets out of the datagrams of the
//! networking stacks games carry them in (Mirror over kcp2k, Netcode for GameObjects
//! over Unity Transport, FishNet over Tugboat/LiteNetLib).
//!
//! Each direction of a connection gets its own [`StackDecoder`], a sans-IO state
//! machine fed `(frame, time, datagram)` in capture order. It parses the transport,
//! follows its reliable sequence numbers (a resent unit is reported as a
//! [`Event::Retransmission`], never yielded again), reassembles what the stack split
//! (kcp fragment chains, the UTP reliable byte stream, UTP and LiteNetLib fragments)
//! and takes the Dissonance message by its stable marker. Buffers are capped per flow;
//! whatever cannot be completed or is dropped is reported as an event and counted in
//! [`TransportStats`], never lost silently.
//!
//! A packet wholly inside one datagram is handed out borrowed from it; only packets
//! joined from several datagrams (or delivered after being held for a gap) come from
//! an internal buffer.

pub mod kcp2k;
pub mod litenetlib;
mod reliable;
pub mod utp;

pub use reliable::{Reorder, Verdict};

/// A game networking stack whose framing is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stack {
    /// Mirror messages over kcp2k.
    MirrorKcp2k,
    /// Netcode for GameObjects named messages over Unity Transport.
    NgoUtp,
    /// FishNet broadcasts over Tugboat (LiteNetLib).
    FishNetTugboat,
}

impl Stack {
    pub const ALL: [Stack; 3] = [Stack::MirrorKcp2k, Stack::NgoUtp, Stack::FishNetTugboat];

    /// The name shown in `--flows` (`mirror-kcp2k`, `ngo-utp`, `fishnet-tugboat`).
    pub fn name(self) -> &'static str {
        match self {
            Stack::MirrorKcp2k => "mirror-kcp2k",
            Stack::NgoUtp => "ngo-utp",
            Stack::FishNetTugboat => "fishnet-tugboat",
        }
    }

    /// The `--payload` word naming the stack (`mirror`, `ngo`, `fishnet`).
    pub fn payload_word(self) -> &'static str {
        match self {
            Stack::MirrorKcp2k => "mirror",
            Stack::NgoUtp => "ngo",
            Stack::FishNetTugboat => "fishnet",
        }
    }

    /// The stack a `--payload` word names.
    pub fn from_payload_word(s: &str) -> Option<Stack> {
        Stack::ALL.into_iter().find(|k| k.payload_word() == s)
    }
}

/// One Dissonance packet as the stack carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carried<'b> {
    /// The packet's bytes, exactly as the integration handed them to the stack.
    pub bytes: &'b [u8],
    /// The frame holding the packet's first byte, and that byte's offset in its UDP payload.
    pub frame: u64,
    pub offset: usize,
    /// The frame holding its last byte: later than `frame` when the stack split it.
    pub last_frame: u64,
    /// Sent on the stack's reliable channel.
    pub reliable: bool,
}

impl Carried<'_> {
    /// Joined from pieces carried by more than one datagram.
    pub fn joined(&self) -> bool {
        self.last_frame != self.frame
    }
}

/// Why reassembly gave up on data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    /// The datagram (or reassembled unit) ends inside the packet.
    Truncated,
    /// Reliable units before it never appeared in the capture.
    Gap,
    /// A fragment of its message never appeared.
    LostFragment,
    /// A reassembly buffer reached its cap.
    Overflow,
    /// The capture ended before the rest arrived.
    Unfinished,
}

impl CutReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CutReason::Truncated => "truncated",
            CutReason::Gap => "gap",
            CutReason::LostFragment => "lost_fragment",
            CutReason::Overflow => "overflow",
            CutReason::Unfinished => "unfinished",
        }
    }
}

/// What a [`StackDecoder`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'b> {
    /// A Dissonance packet, seen for the first time.
    Packet(Carried<'b>),
    /// A reliable unit the stack sent again (same sequence number). Its Dissonance
    /// packets, when known, follow as [`Event::Retransmitted`].
    Retransmission {
        frame: u64,
        seq: u32,
        /// Where the unit was first seen, when still remembered.
        original_frame: Option<u64>,
    },
    /// A Dissonance packet inside a retransmitted unit: a copy, not a new packet.
    Retransmitted {
        packet: Carried<'b>,
        original_frame: Option<u64>,
    },
    /// The stack's own disconnect message (kcp `05`, UTP Disconnect, LiteNetLib `07`).
    /// Reported once per connection, however many copies the stack sends.
    Disconnect { frame: u64 },
    /// A Dissonance packet (or what was carried of it) that cannot be completed.
    Cut {
        frame: u64,
        offset: usize,
        /// The bytes present (possibly none, when only its length was seen).
        bytes: &'b [u8],
        /// The length the framing announced.
        announced: usize,
        reason: CutReason,
    },
    /// Reliable units or fragments that never appeared: their contents are unknown.
    Lost {
        frame: u64,
        units: u32,
        reason: CutReason,
    },
    /// Transport framing that does not parse: the rest of the datagram was skipped.
    Malformed {
        frame: u64,
        offset: usize,
        what: &'static str,
    },
}

/// Counters of one [`StackDecoder`] (all events, and what was skipped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub datagrams: u64,
    /// Dissonance packets yielded.
    pub packets: u64,
    /// Of them, joined from several datagrams.
    pub joined: u64,
    /// Reliable units seen again.
    pub retransmissions: u64,
    /// Dissonance packets inside those.
    pub retransmitted_packets: u64,
    pub disconnects: u64,
    /// Disconnect messages after the first of a connection.
    pub repeated_disconnects: u64,
    pub cut: u64,
    /// Reliable units or fragments that never appeared.
    pub lost_units: u64,
    pub malformed: u64,
    /// Reliable units beyond the receive window (dropped, as the real receiver does).
    pub beyond_window: u64,
    /// Bytes dropped because a buffer reached its cap.
    pub overflow_bytes: u64,
}

/// The output callback of the decoders.
pub type Sink<'s> = dyn FnMut(Event<'_>) + 's;

/// The reports every decoder makes the same way: each is counted and handed out.
impl TransportStats {
    pub(crate) fn malformed(
        &mut self,
        frame: u64,
        offset: usize,
        what: &'static str,
        out: &mut Sink<'_>,
    ) {
        self.malformed += 1;
        out(Event::Malformed {
            frame,
            offset,
            what,
        });
    }

    /// Units (reliable units, fragments, pieces) that never came.
    pub(crate) fn lost(&mut self, frame: u64, units: u32, reason: CutReason, out: &mut Sink<'_>) {
        self.lost_units += u64::from(units);
        out(Event::Lost {
            frame,
            units,
            reason,
        });
    }

    /// A disconnect: reported once per connection (`disconnected` is the
    /// connection's flag), the repeats only counted.
    pub(crate) fn disconnect(&mut self, disconnected: &mut bool, frame: u64, out: &mut Sink<'_>) {
        if *disconnected {
            self.repeated_disconnects += 1;
        } else {
            *disconnected = true;
            self.disconnects += 1;
            out(Event::Disconnect { frame });
        }
    }
}

/// The per-direction decoder of one stack.
#[derive(Debug, Clone)]
pub enum StackDecoder {
    Kcp(kcp2k::Decoder),
    Utp(utp::Decoder),
    Lnl(litenetlib::Decoder),
}

impl StackDecoder {
    pub fn new(stack: Stack) -> StackDecoder {
        match stack {
            Stack::MirrorKcp2k => StackDecoder::Kcp(kcp2k::Decoder::default()),
            Stack::NgoUtp => StackDecoder::Utp(utp::Decoder::default()),
            Stack::FishNetTugboat => StackDecoder::Lnl(litenetlib::Decoder::default()),
        }
    }

    pub fn stack(&self) -> Stack {
        match self {
            StackDecoder::Kcp(_) => Stack::MirrorKcp2k,
            StackDecoder::Utp(_) => Stack::NgoUtp,
            StackDecoder::Lnl(_) => Stack::FishNetTugboat,
        }
    }

    /// One datagram of this direction, in capture order.
    pub fn push(&mut self, frame: u64, ts_ns: i64, data: &[u8], out: &mut Sink<'_>) {
        match self {
            StackDecoder::Kcp(d) => d.push(frame, ts_ns, data, out),
            StackDecoder::Utp(d) => d.push(frame, ts_ns, data, out),
            StackDecoder::Lnl(d) => d.push(frame, ts_ns, data, out),
        }
    }

    /// The capture ended: whatever is still held is reported (as cut or lost).
    pub fn finish(&mut self, frame: u64, out: &mut Sink<'_>) {
        match self {
            StackDecoder::Kcp(d) => d.finish(frame, out),
            StackDecoder::Utp(d) => d.finish(frame, out),
            StackDecoder::Lnl(d) => d.finish(frame, out),
        }
    }

    pub fn stats(&self) -> &TransportStats {
        match self {
            StackDecoder::Kcp(d) => &d.stats,
            StackDecoder::Utp(d) => &d.stats,
            StackDecoder::Lnl(d) => &d.stats,
        }
    }
}

/// How sure a signature test is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// The cheap signature tests of one datagram: the stack it looks like, and how
/// sure that is from this datagram alone. Connection handshakes are definitive
/// (`High`); steady-state framing is `Medium`, to be confirmed over the flow.
pub fn sniff(data: &[u8]) -> Option<(Stack, Confidence)> {
    if let Some(c) = utp::signature(data) {
        return Some((Stack::NgoUtp, c));
    }
    if let Some(c) = kcp2k::signature(data) {
        return Some((Stack::MirrorKcp2k, c));
    }
    litenetlib::signature(data).map(|c| (Stack::FishNetTugboat, c))
}

/// Per-flow stack detection for `auto`: datagrams are tested until the signatures
/// agree often enough (or a handshake settles it). Costs a few compares per datagram
/// and stops testing once decided.
#[derive(Debug, Clone, Default)]
pub struct Detector {
    votes: [u16; 3],
    tested: u16,
    decided: Option<(Stack, Confidence)>,
}

/// Agreeing steady-state datagrams that settle a flow's stack.
const VOTES_TO_DECIDE: u16 = 4;
/// Datagrams tested before a flow is declared not to be a known stack.
const GIVE_UP_AFTER: u16 = 32;

impl Detector {
    /// Tests one datagram; the stack once decided. Inlined up to the test: a flow that
    /// is decided or given up (every flow after a few datagrams) costs a compare.
    #[inline]
    pub fn observe(&mut self, data: &[u8]) -> Option<(Stack, Confidence)> {
        if self.decided.is_some() || self.tested >= GIVE_UP_AFTER {
            return self.decided;
        }
        self.test(data)
    }

    fn test(&mut self, data: &[u8]) -> Option<(Stack, Confidence)> {
        self.tested += 1;
        if let Some((stack, conf)) = sniff(data) {
            let i = stack as usize;
            if conf == Confidence::High {
                self.decided = Some((stack, Confidence::High));
            } else {
                self.votes[i] += 1;
                let others: u16 = self.votes.iter().sum::<u16>() - self.votes[i];
                if self.votes[i] >= VOTES_TO_DECIDE && others == 0 {
                    self.decided = Some((stack, Confidence::Medium));
                }
            }
        }
        self.decided
    }

    pub fn decided(&self) -> Option<(Stack, Confidence)> {
        self.decided
    }

    /// Still testing (not decided, not given up).
    pub fn undecided(&self) -> bool {
        self.decided.is_none() && self.tested < GIVE_UP_AFTER
    }
}

/// Bytes accumulated from several datagrams, remembering where each piece came from,
/// so a packet found in the joined bytes can be traced to its frames and offsets.
#[derive(Debug, Clone, Default)]
pub(crate) struct Assembly {
    pub buf: Vec<u8>,
    /// (start in `buf`, frame, offset of that byte in the frame's payload)
    pieces: Vec<(usize, u64, usize)>,
}

impl Assembly {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.pieces.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn push(&mut self, frame: u64, offset: usize, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self.pieces.last() {
            // Contiguous with the previous piece of the same frame: one piece.
            Some(&(s, f, o)) if f == frame && o + (self.buf.len() - s) == offset => {}
            _ => self.pieces.push((self.buf.len(), frame, offset)),
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Frame and payload offset of byte `at`.
    pub fn origin(&self, at: usize) -> (u64, usize) {
        let i = self.pieces.partition_point(|p| p.0 <= at).saturating_sub(1);
        match self.pieces.get(i) {
            Some(&(s, f, o)) => (f, o + (at - s)),
            None => (0, 0),
        }
    }

    /// The packet at `[start, end)` of the buffer.
    pub fn carried(&self, start: usize, end: usize, reliable: bool) -> Carried<'_> {
        let (frame, offset) = self.origin(start);
        let (last_frame, _) = self.origin(end.max(start + 1) - 1);
        Carried {
            bytes: &self.buf[start..end],
            frame,
            offset,
            last_frame,
            reliable,
        }
    }
}

/// Where a framing found a Dissonance packet in a unit of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// Whole, at `[start, end)`.
    Whole(usize, usize),
    /// Announced with `len` bytes at `start`, but the unit ends first.
    Cut(usize, usize),
}

/// Hands out the spans found in a unit that lies whole in one datagram at `base`.
pub(crate) fn emit_in_place(
    spans: &[Span],
    unit: &[u8],
    frame: u64,
    base: usize,
    reliable: bool,
    stats: &mut TransportStats,
    out: &mut Sink<'_>,
) {
    for &s in spans {
        match s {
            Span::Whole(a, b) => {
                stats.packets += 1;
                out(Event::Packet(Carried {
                    bytes: &unit[a..b],
                    frame,
                    offset: base + a,
                    last_frame: frame,
                    reliable,
                }));
            }
            Span::Cut(a, len) => {
                stats.cut += 1;
                out(Event::Cut {
                    frame,
                    offset: base + a,
                    bytes: unit.get(a..).unwrap_or(&[]),
                    announced: len,
                    reason: CutReason::Truncated,
                });
            }
        }
    }
}

/// Hands out the spans found in an [`Assembly`].
pub(crate) fn emit_assembled(
    spans: &[Span],
    asm: &Assembly,
    reliable: bool,
    reason_for_cut: CutReason,
    stats: &mut TransportStats,
    out: &mut Sink<'_>,
) {
    for &s in spans {
        match s {
            Span::Whole(a, b) => {
                let c = asm.carried(a, b, reliable);
                stats.packets += 1;
                stats.joined += u64::from(c.joined());
                out(Event::Packet(c));
            }
            Span::Cut(a, len) => {
                let (frame, offset) = asm.origin(a);
                stats.cut += 1;
                out(Event::Cut {
                    frame,
                    offset,
                    bytes: asm.buf.get(a..).unwrap_or(&[]),
                    announced: len,
                    reason: reason_for_cut,
                });
            }
        }
    }
}

/// Little-endian readers that never panic.
pub(crate) fn u16_le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn u32_le(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests;
