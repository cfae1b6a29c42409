//! TCP: stream reassembly per direction, then framing into messages.
//!
//! [`StreamFramer`] cuts an in-order byte stream into frames by a length prefix
//! ([`TcpFraming`]); it is public because the proxy frames live socket bytes the same
//! way. `TcpReassembler` (crate-private, driven by the decapsulator) puts captured
//! segments back in sequence order per (source, destination) pair:
//!
//! * SYN fixes the initial sequence number; without one (capture started mid-stream)
//!   the first data segment anchors the stream.
//! * Sequence numbers are turned into 64-bit stream offsets relative to the next
//!   expected byte, so wrap-around is harmless.
//! * Data before the next expected byte is a retransmission (its new tail, if any, is
//!   used); data after it waits in a sorted map until the gap is filled.
//! * Waiting data is bounded per stream and overall; when a bound is hit the gap is
//!   declared lost, the framer restarts at the next segment (counted in `tcp_gaps`).
//! * FIN (once all data before it arrived) and RST close the direction; a closed
//!   direction stays as a small tombstone so late retransmissions are not mistaken for
//!   a new stream. The number of directions is bounded; the least recently active one
//!   is evicted.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use super::decap::{DecapStats, Payload, Transport};

/// How a TCP byte stream is cut into frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcpFraming {
    /// 2-byte big-endian length, then that many bytes.
    U16Be,
    /// 2-byte little-endian length, then that many bytes.
    U16Le,
    /// 4-byte big-endian length, then that many bytes.
    U32Be,
    /// 4-byte little-endian length, then that many bytes.
    U32Le,
    /// No framing: each in-order chunk of stream data is one payload, as it arrives.
    #[default]
    None,
}

impl TcpFraming {
    /// Length of the prefix in bytes (0 for [`TcpFraming::None`]).
    pub fn prefix_len(self) -> usize {
        match self {
            TcpFraming::U16Be | TcpFraming::U16Le => 2,
            TcpFraming::U32Be | TcpFraming::U32Le => 4,
            TcpFraming::None => 0,
        }
    }

    /// Reads a prefix of exactly [`Self::prefix_len`] bytes.
    fn read_len(self, p: &[u8]) -> u64 {
        match self {
            TcpFraming::U16Be => u64::from(u16::from_be_bytes([p[0], p[1]])),
            TcpFraming::U16Le => u64::from(u16::from_le_bytes([p[0], p[1]])),
            TcpFraming::U32Be => u64::from(u32::from_be_bytes([p[0], p[1], p[2], p[3]])),
            TcpFraming::U32Le => u64::from(u32::from_le_bytes([p[0], p[1], p[2], p[3]])),
            TcpFraming::None => 0,
        }
    }
}

impl fmt::Display for TcpFraming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcpFraming::U16Be => "u16be",
            TcpFraming::U16Le => "u16le",
            TcpFraming::U32Be => "u32be",
            TcpFraming::U32Le => "u32le",
            TcpFraming::None => "none",
        })
    }
}

impl FromStr for TcpFraming {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "u16be" => Ok(TcpFraming::U16Be),
            "u16le" => Ok(TcpFraming::U16Le),
            "u32be" => Ok(TcpFraming::U32Be),
            "u32le" => Ok(TcpFraming::U32Le),
            "none" => Ok(TcpFraming::None),
            _ => Err(format!(
                "unknown TCP framing {s:?}: expected u16be, u16le, u32be, u32le or none"
            )),
        }
    }
}

/// A length prefix announced a frame larger than the framer accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingError {
    pub length: u64,
    pub max: usize,
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "length prefix announces a {}-byte frame, more than the maximum of {}",
            self.length, self.max
        )
    }
}

impl std::error::Error for FramingError {}

/// Cuts an in-order byte stream into frames. Complete frames inside one `push` are
/// handed out straight from the input; only an incomplete tail is copied.
#[derive(Debug, Clone)]
pub struct StreamFramer {
    framing: TcpFraming,
    max_frame: usize,
    buf: Vec<u8>,
    broken: bool,
}

impl StreamFramer {
    pub fn new(framing: TcpFraming, max_frame: usize) -> Self {
        StreamFramer {
            framing,
            max_frame,
            buf: Vec::new(),
            broken: false,
        }
    }

    /// Bytes held of an incomplete frame (prefix included).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True after a [`FramingError`]: the stream position is lost, input is ignored
    /// until [`Self::reset`].
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Forgets any incomplete frame and the broken state; the next byte pushed is taken
    /// as the start of a frame.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.broken = false;
    }

    /// Feeds the next in-order bytes; calls `out` with each complete frame (without its
    /// prefix). Returns an error once, when a prefix exceeds the maximum.
    pub fn push(&mut self, data: &[u8], mut out: impl FnMut(&[u8])) -> Result<(), FramingError> {
        let p = self.framing.prefix_len();
        if self.broken {
            return Ok(());
        }
        if p == 0 {
            if !data.is_empty() {
                out(data);
            }
            return Ok(());
        }
        let mut data = data;
        if !self.buf.is_empty() {
            if self.buf.len() < p {
                let take = (p - self.buf.len()).min(data.len());
                self.buf.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.buf.len() < p {
                    return Ok(());
                }
            }
            let len = self.check_len(self.framing.read_len(&self.buf[..p]))?;
            let take = (p + len - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() < p + len {
                return Ok(());
            }
            out(&self.buf[p..]);
            self.buf.clear();
        }
        while data.len() >= p {
            let len = self.check_len(self.framing.read_len(&data[..p]))?;
            if data.len() < p + len {
                break;
            }
            out(&data[p..p + len]);
            data = &data[p + len..];
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn check_len(&mut self, len: u64) -> Result<usize, FramingError> {
        if len > self.max_frame as u64 {
            self.broken = true;
            self.buf.clear();
            return Err(FramingError {
                length: len,
                max: self.max_frame,
            });
        }
        Ok(len as usize)
    }
}

/// Limits for [`TcpReassembler`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    pub framing: TcpFraming,
    pub max_frame: usize,
    pub max_streams: usize,
    pub max_stream_buffer: usize,
    pub max_total_buffer: usize,
}

/// One captured TCP segment, as the reassembler needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub data: &'a [u8],
}

/// Where and when a frame was completed.
#[derive(Debug, Clone, Copy)]
struct Origin {
    frame_number: u64,
    ts_ns: i64,
    src: SocketAddr,
    dst: SocketAddr,
}

#[derive(Debug)]
struct Stream {
    /// Sequence number of stream offset 0.
    base_seq: u32,
    /// Offset of the next byte expected in order.
    next_off: u64,
    fin_off: Option<u64>,
    closed: bool,
    framer: StreamFramer,
    /// Out-of-order data by stream offset.
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    last_frame: u64,
    last_ts: i64,
}

impl Stream {
    fn new(base_seq: u32, limits: &TcpLimits) -> Self {
        Stream {
            base_seq,
            next_off: 0,
            fin_off: None,
            closed: false,
            framer: StreamFramer::new(limits.framing, limits.max_frame),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            last_frame: 0,
            last_ts: 0,
        }
    }

    fn held(&self) -> usize {
        self.framer.buffered() + self.pending_bytes
    }

    /// Stream offset of a sequence number, taken as the nearest one to the next
    /// expected byte (negative: before the stream start).
    fn offset_of(&self, seq: u32) -> i64 {
        let next_seq = self.base_seq.wrapping_add(self.next_off as u32);
        self.next_off as i64 + i64::from(seq.wrapping_sub(next_seq) as i32)
    }

    fn deliver<F: FnMut(Payload<'_>)>(
        &mut self,
        data: &[u8],
        origin: Origin,
        stats: &mut DecapStats,
        out: &mut F,
    ) {
        self.next_off += data.len() as u64;
        let tcp = &mut stats.tcp;
        let result = self.framer.push(data, |frame| {
            *tcp += 1;
            out(Payload {
                frame_number: origin.frame_number,
                ts_ns: origin.ts_ns,
                src: origin.src,
                dst: origin.dst,
                transport: Transport::Tcp,
                data: frame,
                truncated: false,
            })
        });
        if result.is_err() {
            stats.tcp_framing_errors += 1;
        }
    }

    /// Delivers waiting segments that have become in order.
    fn drain<F: FnMut(Payload<'_>)>(
        &mut self,
        origin: Origin,
        stats: &mut DecapStats,
        out: &mut F,
    ) {
        while let Some(entry) = self.pending.first_entry() {
            let start = *entry.key();
            if start > self.next_off {
                break;
            }
            let seg = entry.remove();
            self.pending_bytes -= seg.len();
            let end = start + seg.len() as u64;
            if end > self.next_off {
                let skip = (self.next_off - start) as usize;
                self.deliver(&seg[skip..], origin, stats, out);
            }
        }
    }

    /// Gives up on the missing bytes before `to`: the framer restarts there.
    fn skip_to(&mut self, to: u64, stats: &mut DecapStats) {
        if to <= self.next_off {
            return;
        }
        stats.tcp_gaps += 1;
        if self.framer.buffered() > 0 {
            stats.tcp_incomplete_frames += 1;
        }
        self.framer.reset();
        self.next_off = to;
    }

    fn close(&mut self, stats: &mut DecapStats) {
        if self.framer.buffered() > 0 {
            stats.tcp_incomplete_frames += 1;
        }
        self.framer = StreamFramer::new(TcpFraming::None, 0);
        self.pending = BTreeMap::new();
        self.pending_bytes = 0;
        self.closed = true;
    }
}

/// Reassembles the TCP streams of a capture and frames them.
#[derive(Debug)]
pub(crate) struct TcpReassembler {
    limits: TcpLimits,
    streams: HashMap<(SocketAddr, SocketAddr), Stream>,
    /// Bytes held by all streams (incomplete frames and waiting segments).
    held: usize,
}

impl TcpReassembler {
    pub fn new(limits: TcpLimits) -> Self {
        TcpReassembler {
            limits,
            streams: HashMap::new(),
            held: 0,
        }
    }

    fn evict_if_full(&mut self, stats: &mut DecapStats) {
        if self.streams.len() < self.limits.max_streams.max(1) {
            return;
        }
        let oldest = self
            .streams
            .iter()
            .min_by_key(|(_, s)| s.last_frame)
            .map(|(k, _)| *k);
        if let Some(key) = oldest {
            if let Some(mut s) = self.streams.remove(&key) {
                self.held -= s.held();
                if !s.closed {
                    s.close(stats);
                }
                stats.tcp_streams_evicted += 1;
            }
        }
    }

    pub fn segment<F: FnMut(Payload<'_>)>(
        &mut self,
        seg: Segment<'_>,
        frame_number: u64,
        ts_ns: i64,
        stats: &mut DecapStats,
        out: &mut F,
    ) {
        let key = (seg.src, seg.dst);
        let limits = self.limits;
        if seg.syn {
            let first = seg.seq.wrapping_add(1);
            let retransmitted_syn = matches!(
                self.streams.get(&key),
                Some(s) if !s.closed && s.base_seq == first
            );
            if !retransmitted_syn {
                // A new connection on this 4-tuple replaces whatever was there.
                if let Some(mut old) = self.streams.remove(&key) {
                    self.held -= old.held();
                    if !old.closed {
                        old.close(stats);
                    }
                }
                self.evict_if_full(stats);
                self.streams.insert(key, Stream::new(first, &limits));
            }
        } else if !self.streams.contains_key(&key) {
            if seg.data.is_empty() || seg.rst {
                return;
            }
            // Capture started mid-stream: this segment anchors it.
            self.evict_if_full(stats);
            self.streams.insert(key, Stream::new(seg.seq, &limits));
        }
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        s.last_frame = frame_number;
        s.last_ts = ts_ns;
        let before = s.held();
        let origin = Origin {
            frame_number,
            ts_ns,
            src: seg.src,
            dst: seg.dst,
        };
        if s.closed {
            if !seg.data.is_empty() {
                stats.tcp_retransmitted += 1;
            }
        } else if seg.rst {
            s.close(stats);
        } else {
            let data_seq = if seg.syn {
                seg.seq.wrapping_add(1)
            } else {
                seg.seq
            };
            let mut off = s.offset_of(data_seq);
            let mut data = seg.data;
            if off < 0 {
                // Bytes before the stream start (bogus or pre-SYN): drop them.
                let cut = ((-off) as usize).min(data.len());
                data = &data[cut..];
                off = 0;
            }
            let off = off as u64;
            let end = off + data.len() as u64;
            if seg.fin {
                s.fin_off = Some(end);
            }
            let others_held = self.held - before;
            place(s, off, data, others_held, &limits, origin, stats, out);
            if matches!(s.fin_off, Some(f) if s.next_off >= f) {
                s.close(stats);
            }
        }
        let after = s.held();
        self.held = self.held - before + after;
    }

    /// Delivers everything still waiting (across gaps) and counts incomplete frames;
    /// called at the end of a capture.
    pub fn finish<F: FnMut(Payload<'_>)>(&mut self, stats: &mut DecapStats, out: &mut F) {
        let mut streams: Vec<_> = self.streams.drain().collect();
        // Deterministic output order: by last activity.
        streams.sort_by_key(|(_, s)| s.last_frame);
        for ((src, dst), mut s) in streams {
            if s.closed {
                continue;
            }
            let origin = Origin {
                frame_number: s.last_frame,
                ts_ns: s.last_ts,
                src,
                dst,
            };
            while let Some((&start, _)) = s.pending.first_key_value() {
                s.skip_to(start, stats);
                s.drain(origin, stats, out);
            }
            s.close(stats);
        }
        self.held = 0;
    }
}

/// Puts one segment's data (at stream offset `off`) into the stream: delivered if in
/// order, ignored if old, kept if early; gaps are abandoned when waiting data would
/// exceed the limits.
#[allow(clippy::too_many_arguments)]
fn place<F: FnMut(Payload<'_>)>(
    s: &mut Stream,
    off: u64,
    data: &[u8],
    others_held: usize,
    limits: &TcpLimits,
    origin: Origin,
    stats: &mut DecapStats,
    out: &mut F,
) {
    if data.is_empty() {
        return; // a bare FIN or ACK: its position, if any, is already noted
    }
    let end = off + data.len() as u64;
    loop {
        if end <= s.next_off {
            stats.tcp_retransmitted += 1;
            return;
        }
        if off <= s.next_off {
            let skip = (s.next_off - off) as usize;
            s.deliver(&data[skip..], origin, stats, out);
            s.drain(origin, stats, out);
            return;
        }
        let fits = s.pending_bytes + data.len() <= limits.max_stream_buffer
            && others_held + s.held() + data.len() <= limits.max_total_buffer;
        if fits {
            stats.tcp_out_of_order += 1;
            let slot = s.pending.entry(off).or_default();
            if slot.len() < data.len() {
                s.pending_bytes = s.pending_bytes - slot.len() + data.len();
                slot.clear();
                slot.extend_from_slice(data);
            }
            return;
        }
        // No room to wait for the gap: declare it lost and resume at the earliest data.
        let to = match s.pending.first_key_value() {
            Some((&first, _)) if first < off => first,
            _ => off,
        };
        s.skip_to(to, stats);
        s.drain(origin, stats, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framing: TcpFraming, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut f = StreamFramer::new(framing, 1000);
        let mut got = Vec::new();
        for c in chunks {
            f.push(c, |x| got.push(x.to_vec())).unwrap();
        }
        got
    }

    #[test]
    fn framer_all_prefixes_split_everywhere() {
        let msgs: [&[u8]; 3] = [b"hello", b"", b"dissonance"];
        for framing in [
            TcpFraming::U16Be,
            TcpFraming::U16Le,
            TcpFraming::U32Be,
            TcpFraming::U32Le,
        ] {
            let mut stream = Vec::new();
            for m in msgs {
                let n = m.len() as u32;
                let prefix = match framing {
                    TcpFraming::U16Be => (n as u16).to_be_bytes().to_vec(),
                    TcpFraming::U16Le => (n as u16).to_le_bytes().to_vec(),
                    TcpFraming::U32Be => n.to_be_bytes().to_vec(),
                    _ => n.to_le_bytes().to_vec(),
                };
                stream.extend_from_slice(&prefix);
                stream.extend_from_slice(m);
            }
            let want: Vec<Vec<u8>> = msgs.iter().map(|m| m.to_vec()).collect();
            assert_eq!(frames(framing, &[&stream]), want);
            for i in 0..=stream.len() {
                for j in i..=stream.len() {
                    let got = frames(framing, &[&stream[..i], &stream[i..j], &stream[j..]]);
                    assert_eq!(got, want, "{framing} split at {i},{j}");
                }
            }
        }
    }

    #[test]
    fn framer_none_passes_chunks() {
        assert_eq!(
            frames(TcpFraming::None, &[b"ab", b"", b"c"]),
            vec![b"ab".to_vec(), b"c".to_vec()]
        );
    }

    #[test]
    fn framer_rejects_oversized_then_resets() {
        let mut f = StreamFramer::new(TcpFraming::U16Be, 4);
        let mut got = Vec::new();
        let err = f.push(&[0, 5, 1, 2, 3, 4, 5], |x| got.push(x.to_vec()));
        assert_eq!(err, Err(FramingError { length: 5, max: 4 }));
        assert!(f.is_broken());
        f.push(&[0, 1, 9], |x| got.push(x.to_vec())).unwrap();
        assert!(got.is_empty());
        f.reset();
        f.push(&[0, 1, 9], |x| got.push(x.to_vec())).unwrap();
        assert_eq!(got, vec![vec![9]]);
    }

    #[test]
    fn framing_names_round_trip() {
        for f in [
            TcpFraming::U16Be,
            TcpFraming::U16Le,
            TcpFraming::U32Be,
            TcpFraming::U32Le,
            TcpFraming::None,
        ] {
            assert_eq!(f.to_string().parse::<TcpFraming>(), Ok(f));
        }
        assert!("u24".parse::<TcpFraming>().is_err());
    }

    fn limits(framing: TcpFraming) -> TcpLimits {
        TcpLimits {
            framing,
            max_frame: 1 << 16,
            max_streams: 4,
            max_stream_buffer: 64,
            max_total_buffer: 1 << 20,
        }
    }

    fn seg(seq: u32, data: &[u8]) -> Segment<'_> {
        Segment {
            src: "10.0.0.1:1000".parse().unwrap(),
            dst: "10.0.0.2:2000".parse().unwrap(),
            seq,
            syn: false,
            fin: false,
            rst: false,
            data,
        }
    }

    fn run(r: &mut TcpReassembler, stats: &mut DecapStats, segs: &[Segment<'_>]) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            r.segment(*s, i as u64 + 1, 0, stats, &mut |p: Payload<'_>| {
                got.push(p.data.to_vec())
            });
        }
        r.finish(stats, &mut |p: Payload<'_>| got.push(p.data.to_vec()));
        got
    }

    #[test]
    fn sequence_wraps_around() {
        let mut r = TcpReassembler::new(limits(TcpFraming::None));
        let mut stats = DecapStats::default();
        let isn = u32::MAX - 2;
        let syn = Segment {
            syn: true,
            ..seg(isn, b"")
        };
        let got = run(
            &mut r,
            &mut stats,
            &[
                syn,
                seg(isn.wrapping_add(4), b"de"),
                seg(isn.wrapping_add(1), b"abc"),
            ],
        );
        assert_eq!(got, vec![b"abc".to_vec(), b"de".to_vec()]);
        assert_eq!(stats.tcp_out_of_order, 1);
    }

    #[test]
    fn gap_is_abandoned_when_the_buffer_is_full() {
        let mut r = TcpReassembler::new(limits(TcpFraming::None));
        let mut stats = DecapStats::default();
        let big = [7u8; 40];
        // Byte 100..110 never arrives; two 40-byte segments after it exceed 64 bytes.
        let got = run(
            &mut r,
            &mut stats,
            &[seg(0, &[1; 100]), seg(110, &big), seg(150, &big)],
        );
        assert_eq!(got, vec![vec![1; 100], big.to_vec(), big.to_vec()]);
        assert_eq!(stats.tcp_gaps, 1);
        assert_eq!(r.held, 0);
    }

    #[test]
    fn streams_are_bounded() {
        let mut r = TcpReassembler::new(limits(TcpFraming::None));
        let mut stats = DecapStats::default();
        for port in 0..10u16 {
            let mut s = seg(0, b"x");
            s.src.set_port(port);
            r.segment(s, u64::from(port), 0, &mut stats, &mut |_| {});
        }
        assert_eq!(r.streams.len(), 4);
        assert_eq!(stats.tcp_streams_evicted, 6);
    }
}
