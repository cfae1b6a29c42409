//! One receiver's view of one speaker: talk spurts (streams) split as Dissonance's
//! receiver does (docs/protocol.md §7.2 steps 2–9) and a jitter buffer that puts frames back
//! in sequence order. Pure logic: frames in (already deduplicated, with unwrapped
//! sequence numbers), decode instructions out ([`Emit`]); no codec, no I/O.
//!
//! Differences from the real player, all because a capture can be read ahead:
//! * frames wait in the buffer until `window` frames after them have arrived (about a
//!   second), so a late frame is put where it belongs instead of being dropped;
//! * a frame that arrives before the first one of its stream is accepted while nothing
//!   of the stream has been emitted (the real receiver drops it, index < 0);
//! * an ended stream keeps accepting its own late frames (same channel session, sequence
//!   not past its end) for a grace second or until the next stream needs to play.

use std::collections::VecDeque;

use crate::codec::{Channel, ChannelType, PacketOptions};

/// An open stream with no packet for this long is ended (§7.2 step 9).
pub const IDLE_NS: i64 = 1_500_000_000;
/// A receiver idle for this long forgets the channel session it adopted (9.x, §9.7).
pub const FORGET_NS: i64 = 15_000_000_000;
/// How far (in time) frames may arrive out of order and still be placed.
pub const REORDER_NS: i64 = 1_000_000_000;
/// A jump forward of more than this many seconds' worth of frames within a stream is
/// taken as a new stream rather than as a loss to conceal frame by frame.
pub const MAX_JUMP_NS: i64 = 3_000_000_000;

/// Why a talk spurt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Every relevant channel had the closing flag.
    Closing,
    /// The packet channel session changed.
    SessionChange,
    /// Every relevant channel's 2-bit session changed (`forceReset`).
    ChannelReset,
    /// A packet with no relevant channel.
    NoChannel,
    /// No packet for 1.5 s.
    Idle,
    /// The sequence number jumped too far ahead.
    SeqJump,
    /// The speaker's client id was reused or the client reconnected.
    Rejoin,
    EndOfCapture,
}

impl EndReason {
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Closing => "closing",
            EndReason::SessionChange => "session_change",
            EndReason::ChannelReset => "channel_reset",
            EndReason::NoChannel => "no_channel",
            EndReason::Idle => "idle",
            EndReason::SeqJump => "seq_jump",
            EndReason::Rejoin => "rejoin",
            EndReason::EndOfCapture => "end_of_capture",
        }
    }
}

/// One deduplicated voice packet.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// Packet number in the capture (for warnings).
    pub number: u64,
    pub ts_ns: i64,
    /// The sequence number, unwrapped (monotonic across 16-bit wraps).
    pub seq: i64,
    pub options: PacketOptions,
    pub audio: &'a [u8],
}

/// What to do next, in output order.
#[derive(Debug, PartialEq)]
pub enum Emit<'a> {
    /// A talk spurt starts; `start_ns` is the capture time of its first frame.
    Start {
        seq: i64,
        start_ns: i64,
        first_number: u64,
    },
    /// Decode this frame. `next` is the following frame when it was received (for FEC if
    /// this one turns out to be corrupt).
    Frame {
        seq: i64,
        number: u64,
        audio: &'a [u8],
        next: Option<&'a [u8]>,
    },
    /// This frame never arrived (in time): conceal it, from `next`'s FEC data if present.
    Missing { seq: i64, next: Option<&'a [u8]> },
    /// The spurt ends after the last Frame/Missing.
    End { reason: EndReason, last_seq: i64 },
}

/// Counters of the stream logic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub streams: u64,
    /// Frames that arrived after their place was played (or too long before their stream).
    pub late: u64,
    /// Frames that arrived after a later frame of their stream and were put back in place.
    pub reordered: u64,
    /// Packets that started nothing: every relevant channel closing with no stream open,
    /// or no relevant channel at all.
    pub discarded: u64,
    /// Packets of an older channel session than the current one (§7.2 step 3).
    pub stale: u64,
    pub seq_jumps: u64,
}

#[derive(Debug, Default)]
struct Slot {
    filled: bool,
    number: u64,
    data: Vec<u8>,
}

#[derive(Debug)]
struct Stream {
    session: u8,
    /// Sequence number of the first frame (index 0).
    base: i64,
    /// Next sequence number to emit; `buf[0]` holds it.
    next: i64,
    /// Highest sequence number received.
    max: i64,
    first_rx_ns: i64,
    first_rx_seq: i64,
    first_number: u64,
    last_rx_ns: i64,
    buf: VecDeque<Slot>,
    started: bool,
    end: EndReason,
}

/// The per-view stream state machine.
#[derive(Debug)]
pub struct StreamMachine {
    frame_ns: i64,
    window: i64,
    max_jump: i64,
    current: Option<u8>,
    last_rx_ns: Option<i64>,
    /// Last 2-bit session seen per composite channel key (§6.1).
    chans: Vec<(u32, u8)>,
    chans_next: Vec<(u32, u8)>,
    open: Option<Stream>,
    /// Ended, still accepting its late frames.
    ended: Option<Stream>,
    pool: Vec<Vec<u8>>,
    pub stats: JitterStats,
}

/// The packet's channel session and the range it wraps over (§6.2).
fn channel_session(o: PacketOptions) -> (u8, u8) {
    if o.extended_range() {
        (o.channel_session(), 128)
    } else {
        // Old readers (and the 2-bit comparison) only look at the low two bits.
        (o.0 & 3, 4)
    }
}

/// `a - b` as a wrapped difference over `range` sessions.
fn session_diff(a: u8, b: u8, range: u8) -> i16 {
    let m = range as i16;
    let d = (a as i16 - b as i16).rem_euclid(m);
    if d >= m / 2 {
        d - m
    } else {
        d
    }
}

impl StreamMachine {
    /// A machine for frames of `frame_ns` nanoseconds.
    pub fn new(frame_ns: i64) -> StreamMachine {
        let frame_ns = frame_ns.max(1);
        StreamMachine {
            frame_ns,
            window: Self::window_for(frame_ns),
            max_jump: (MAX_JUMP_NS / frame_ns).max(8),
            current: None,
            last_rx_ns: None,
            chans: Vec::new(),
            chans_next: Vec::new(),
            open: None,
            ended: None,
            pool: Vec::new(),
            stats: JitterStats::default(),
        }
    }

    /// Frames held back for reordering.
    pub fn window(&self) -> i64 {
        self.window
    }

    /// The reorder window, in frames, for frames of `frame_ns` nanoseconds.
    pub fn window_for(frame_ns: i64) -> i64 {
        (REORDER_NS / frame_ns.max(1)).max(4)
    }

    /// Feeds one packet with the channels this view keeps of it (§7.2 step 4).
    pub fn push(&mut self, a: &Arrival<'_>, kept: &[Channel], emit: &mut impl FnMut(Emit<'_>)) {
        let (session, range) = channel_session(a.options);
        if let Some(t) = self.last_rx_ns {
            if a.ts_ns - t > FORGET_NS {
                self.current = None;
            }
        }
        self.last_rx_ns = Some(self.last_rx_ns.map_or(a.ts_ns, |t| t.max(a.ts_ns)));

        // A late frame of the stream that just ended goes back into it.
        if let Some(e) = &mut self.ended {
            let before_open = self.open.as_ref().is_none_or(|o| a.seq < o.base);
            if e.session == session && a.seq <= e.max && before_open {
                place(e, a, self.window, &mut self.pool, &mut self.stats);
                return;
            }
        }

        let current = *self.current.get_or_insert(session);
        let diff = session_diff(session, current, range);
        if diff < 0 {
            self.stats.stale += 1;
            return;
        }
        if diff > 0 {
            self.current = Some(session);
        }

        let any = !kept.is_empty();
        let all_closing = kept.iter().all(|c| c.bitfield.closing());
        let all_changed = self.update_channels(kept);
        if let Some(o) = &self.open {
            if all_changed || o.session != session {
                let reason = if !any {
                    EndReason::NoChannel
                } else if o.session != session {
                    EndReason::SessionChange
                } else {
                    EndReason::ChannelReset
                };
                self.end_open(reason, emit);
            }
        }
        if let Some(o) = &self.open {
            if a.seq > o.max + self.max_jump {
                self.stats.seq_jumps += 1;
                self.end_open(EndReason::SeqJump, emit);
            }
        }
        if self.open.is_none() {
            if all_closing {
                // Covers "no relevant channel": nothing to start, the audio is dropped.
                self.stats.discarded += 1;
                return;
            }
            self.start(a, session);
        }
        let Some(o) = &mut self.open else {
            return;
        };
        place(o, a, self.window, &mut self.pool, &mut self.stats);
        if all_closing {
            self.end_open(EndReason::Closing, emit);
        }
        self.drain(emit);
    }

    /// Time passes: ends idle streams and flushes ended ones whose grace is over.
    pub fn tick(&mut self, now_ns: i64, emit: &mut impl FnMut(Emit<'_>)) {
        if let Some(o) = &self.open {
            if now_ns - o.last_rx_ns > IDLE_NS {
                self.end_open(EndReason::Idle, emit);
            }
        }
        if let Some(e) = &self.ended {
            if now_ns - e.last_rx_ns > REORDER_NS {
                self.flush_ended(emit);
            }
        }
    }

    /// Ends and flushes everything (end of capture, or the speaker's id was reused).
    pub fn finish(&mut self, reason: EndReason, emit: &mut impl FnMut(Emit<'_>)) {
        self.flush_ended(emit);
        if let Some(mut o) = self.open.take() {
            o.end = reason;
            flush(&mut o, self.frame_ns, &mut self.pool, emit);
        }
        if reason != EndReason::EndOfCapture {
            self.current = None;
            self.chans.clear();
        }
    }

    /// The earliest arrival time among buffered streams that have not started playing
    /// (their start time is at most one reorder window before it), if any.
    pub fn pending_since(&self) -> Option<i64> {
        [&self.ended, &self.open]
            .into_iter()
            .flatten()
            .filter(|s| !s.started)
            .map(|s| s.first_rx_ns)
            .min()
    }

    /// True when a stream is open or waiting for late frames.
    pub fn busy(&self) -> bool {
        self.open.is_some() || self.ended.is_some()
    }

    /// §7.2 step 4's forceReset test; also remembers the kept channels' sessions.
    fn update_channels(&mut self, kept: &[Channel]) -> bool {
        let mut all_changed = true;
        self.chans_next.clear();
        for c in kept {
            // The composite key uses the C# enum values (Room 0, Player 1).
            let type_bit = u32::from(c.bitfield.channel_type() == ChannelType::Player);
            let key = type_bit | (c.recipient as u32) << 8;
            let s = c.bitfield.session_id();
            match self.chans.iter().find(|(k, _)| *k == key) {
                Some(&(_, old)) if old != s => {}
                _ => all_changed = false, // unchanged, or seen for the first time
            }
            self.chans_next.push((key, s));
        }
        std::mem::swap(&mut self.chans, &mut self.chans_next);
        all_changed
    }

    fn start(&mut self, a: &Arrival<'_>, session: u8) {
        self.stats.streams += 1;
        self.current = Some(session);
        self.open = Some(Stream {
            session,
            base: a.seq,
            next: a.seq,
            max: a.seq,
            first_rx_ns: a.ts_ns,
            first_rx_seq: a.seq,
            first_number: a.number,
            last_rx_ns: a.ts_ns,
            buf: VecDeque::new(),
            started: false,
            end: EndReason::EndOfCapture,
        });
    }

    fn end_open(&mut self, reason: EndReason, emit: &mut impl FnMut(Emit<'_>)) {
        let Some(mut o) = self.open.take() else {
            return;
        };
        o.end = reason;
        self.flush_ended(emit);
        if matches!(reason, EndReason::Idle | EndReason::EndOfCapture) {
            flush(&mut o, self.frame_ns, &mut self.pool, emit);
        } else {
            self.ended = Some(o);
        }
    }

    fn flush_ended(&mut self, emit: &mut impl FnMut(Emit<'_>)) {
        if let Some(mut e) = self.ended.take() {
            flush(&mut e, self.frame_ns, &mut self.pool, emit);
        }
    }

    /// Plays what the reorder window lets go of; the ended stream first.
    fn drain(&mut self, emit: &mut impl FnMut(Emit<'_>)) {
        let ready = self
            .open
            .as_ref()
            .is_some_and(|o| o.max - o.next >= self.window);
        if !ready {
            return;
        }
        self.flush_ended(emit);
        if let Some(o) = &mut self.open {
            while o.max - o.next >= self.window {
                emit_front(o, self.frame_ns, &mut self.pool, emit);
            }
        }
    }
}

/// Puts a frame into its stream's buffer.
fn place(
    s: &mut Stream,
    a: &Arrival<'_>,
    window: i64,
    pool: &mut Vec<Vec<u8>>,
    stats: &mut JitterStats,
) {
    s.last_rx_ns = s.last_rx_ns.max(a.ts_ns);
    if a.seq < s.next {
        // Before the stream's first frame: fine as long as nothing was played yet.
        if s.next == s.base && s.max - a.seq < window {
            for _ in a.seq..s.base {
                s.buf.push_front(Slot {
                    data: pool.pop().unwrap_or_default(),
                    ..Slot::default()
                });
            }
            s.base = a.seq;
            s.next = a.seq;
        } else {
            stats.late += 1;
            return;
        }
    }
    let idx = (a.seq - s.next) as usize;
    while s.buf.len() <= idx {
        s.buf.push_back(Slot {
            data: pool.pop().unwrap_or_default(),
            ..Slot::default()
        });
    }
    let slot = &mut s.buf[idx];
    if slot.filled {
        return; // deduplicated upstream; a second copy changes nothing
    }
    slot.filled = true;
    slot.number = a.number;
    slot.data.clear();
    slot.data.extend_from_slice(a.audio);
    if a.seq < s.max {
        stats.reordered += 1;
    }
    s.max = s.max.max(a.seq);
}

fn emit_front(
    s: &mut Stream,
    frame_ns: i64,
    pool: &mut Vec<Vec<u8>>,
    emit: &mut impl FnMut(Emit<'_>),
) {
    if !s.started {
        s.started = true;
        emit(Emit::Start {
            seq: s.base,
            start_ns: s.first_rx_ns - (s.first_rx_seq - s.base) * frame_ns,
            first_number: s.first_number,
        });
    }
    let Some(slot) = s.buf.pop_front() else {
        return;
    };
    let seq = s.next;
    s.next += 1;
    let next = s.buf.front().filter(|n| n.filled).map(|n| &n.data[..]);
    if slot.filled {
        emit(Emit::Frame {
            seq,
            number: slot.number,
            audio: &slot.data,
            next,
        });
    } else {
        emit(Emit::Missing { seq, next });
    }
    pool.push(slot.data);
}

fn flush(s: &mut Stream, frame_ns: i64, pool: &mut Vec<Vec<u8>>, emit: &mut impl FnMut(Emit<'_>)) {
    while !s.buf.is_empty() {
        emit_front(s, frame_ns, pool, emit);
    }
    if s.started {
        emit(Emit::End {
            reason: s.end,
            last_seq: s.next - 1,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ChannelBitfield, Priority};

    const MS: i64 = 1_000_000;

    /// What a test sees: a compact trace of emissions.
    #[derive(Debug, Clone, PartialEq)]
    enum E {
        Start(i64, i64),
        F(i64, u8),
        Miss(i64, Option<u8>),
        End(EndReason, i64),
    }

    struct Rig {
        m: StreamMachine,
        out: Vec<E>,
    }

    fn room(closing: bool) -> Channel {
        Channel {
            bitfield: ChannelBitfield::new(
                ChannelType::Room,
                false,
                closing,
                Priority::Default,
                0,
                1.0,
            ),
            recipient: 0x7518,
        }
    }

    impl Rig {
        fn new() -> Rig {
            Rig {
                m: StreamMachine::new(20 * MS),
                out: Vec::new(),
            }
        }
        fn rec(out: &mut Vec<E>) -> impl FnMut(Emit<'_>) + '_ {
            move |e| {
                out.push(match e {
                    Emit::Start { seq, start_ns, .. } => E::Start(seq, start_ns / MS),
                    Emit::Frame { seq, audio, .. } => E::F(seq, audio[0]),
                    Emit::Missing { seq, next } => E::Miss(seq, next.map(|n| n[0])),
                    Emit::End { reason, last_seq } => E::End(reason, last_seq),
                })
            }
        }
        /// Packet `seq` at `t` ms, channel session `cs`, closing flag.
        fn pkt(&mut self, seq: i64, t: i64, cs: u8, closing: bool) {
            self.pkt_on(seq, t, cs, &[room(closing)]);
        }
        fn pkt_on(&mut self, seq: i64, t: i64, cs: u8, kept: &[Channel]) {
            let audio = [seq as u8];
            let a = Arrival {
                number: seq as u64,
                ts_ns: t * MS,
                seq,
                options: PacketOptions::extended(cs as u32),
                audio: &audio,
            };
            self.m.push(&a, kept, &mut Self::rec(&mut self.out));
        }
        fn tick(&mut self, t: i64) {
            self.m.tick(t * MS, &mut Self::rec(&mut self.out));
        }
        fn finish(&mut self) -> Vec<E> {
            self.m
                .finish(EndReason::EndOfCapture, &mut Self::rec(&mut self.out));
            std::mem::take(&mut self.out)
        }
    }

    #[test]
    fn in_order_stream_with_closing_flag() {
        let mut r = Rig::new();
        for s in 0..5 {
            r.pkt(s, 1000 + s * 20, 0, s == 4);
        }
        let out = r.finish();
        assert_eq!(
            out,
            vec![
                E::Start(0, 1000),
                E::F(0, 0),
                E::F(1, 1),
                E::F(2, 2),
                E::F(3, 3),
                E::F(4, 4),
                E::End(EndReason::Closing, 4)
            ]
        );
        assert_eq!(r.m.stats.streams, 1);
    }

    #[test]
    fn frames_wait_for_the_window_then_play() {
        let mut r = Rig::new();
        let w = r.m.window();
        assert_eq!(w, 50);
        for s in 0..w {
            r.pkt(s, s * 20, 0, false);
        }
        assert!(r.out.is_empty());
        r.pkt(w, w * 20, 0, false);
        assert_eq!(r.out, vec![E::Start(0, 0), E::F(0, 0)]);
    }

    #[test]
    fn loss_reorder_and_late() {
        let mut r = Rig::new();
        // 0 1 3 2 5 ... : 4 lost, 2 reordered; then 7 arrives after its slot was played.
        for s in [0, 1, 3, 2, 5, 6, 8] {
            r.pkt(s, s * 20, 0, false);
        }
        for s in 9..70 {
            r.pkt(s, s * 20, 0, false);
        }
        r.pkt(7, 70 * 20, 0, false);
        let out = r.finish();
        assert_eq!(out[0], E::Start(0, 0));
        assert_eq!(
            &out[1..10],
            &[
                E::F(0, 0),
                E::F(1, 1),
                E::F(2, 2),
                E::F(3, 3),
                E::Miss(4, Some(5)),
                E::F(5, 5),
                E::F(6, 6),
                E::Miss(7, Some(8)),
                E::F(8, 8),
            ]
        );
        assert_eq!(out.last(), Some(&E::End(EndReason::EndOfCapture, 69)));
        assert_eq!(r.m.stats.reordered, 1);
        assert_eq!(r.m.stats.late, 1);
    }

    #[test]
    fn a_frame_before_the_first_one_is_placed() {
        let mut r = Rig::new();
        r.pkt(11, 1020, 0, false);
        r.pkt(10, 1025, 0, false);
        r.pkt(12, 1040, 0, true);
        let out = r.finish();
        // The spurt starts where frame 10 would have been captured: 20 ms before 11.
        assert_eq!(
            out,
            vec![
                E::Start(10, 1000),
                E::F(10, 10),
                E::F(11, 11),
                E::F(12, 12),
                E::End(EndReason::Closing, 12)
            ]
        );
        assert_eq!(r.m.stats.reordered, 1);
    }

    #[test]
    fn idle_ends_a_stream_and_the_next_packet_starts_one() {
        let mut r = Rig::new();
        r.pkt(0, 0, 0, false);
        r.pkt(1, 20, 0, false);
        r.tick(1520);
        assert!(r.out.is_empty());
        r.tick(1521);
        assert_eq!(
            r.out,
            vec![
                E::Start(0, 0),
                E::F(0, 0),
                E::F(1, 1),
                E::End(EndReason::Idle, 1)
            ]
        );
        r.out.clear();
        r.pkt(2, 3000, 0, false);
        let out = r.finish();
        assert_eq!(out[0], E::Start(2, 3000));
        assert_eq!(r.m.stats.streams, 2);
    }

    #[test]
    fn session_change_splits_and_stale_packets_are_dropped() {
        let mut r = Rig::new();
        r.pkt(0, 0, 5, false);
        r.pkt(1, 20, 5, false);
        r.pkt(2, 40, 6, false); // new channel session: new stream
        r.pkt(3, 60, 4, false); // older session: discarded
        let out = r.finish();
        assert_eq!(
            out,
            vec![
                E::Start(0, 0),
                E::F(0, 0),
                E::F(1, 1),
                E::End(EndReason::SessionChange, 1),
                E::Start(2, 40),
                E::F(2, 2),
                E::End(EndReason::EndOfCapture, 2)
            ]
        );
        assert_eq!(r.m.stats.stale, 1);
        // The 7-bit comparison wraps: 127 -> 0 is newer.
        assert_eq!(session_diff(0, 127, 128), 1);
        assert_eq!(session_diff(127, 0, 128), -1);
        assert_eq!(session_diff(0, 3, 4), 1);
        assert_eq!(session_diff(2, 0, 4), -2);
    }

    #[test]
    fn late_frames_of_a_closed_stream_go_back_into_it() {
        let mut r = Rig::new();
        r.pkt(0, 0, 0, false);
        r.pkt(2, 40, 0, true); // closing arrives before 1
        r.pkt(1, 45, 0, false);
        r.pkt(3, 500, 1, false); // next spurt (next channel session)
        r.pkt(4, 520, 1, true);
        let out = r.finish();
        assert_eq!(
            out,
            vec![
                E::Start(0, 0),
                E::F(0, 0),
                E::F(1, 1),
                E::F(2, 2),
                E::End(EndReason::Closing, 2),
                E::Start(3, 500),
                E::F(3, 3),
                E::F(4, 4),
                E::End(EndReason::Closing, 4)
            ]
        );
        assert_eq!(r.m.stats.reordered, 1);
    }

    #[test]
    fn closing_only_and_channelless_packets() {
        let mut r = Rig::new();
        r.pkt(0, 0, 0, true); // closing with nothing open: discarded
        r.pkt(1, 20, 0, false);
        r.pkt_on(2, 40, 0, &[]); // no relevant channel: ends the stream, audio dropped
        r.pkt(3, 60, 0, false);
        let out = r.finish();
        assert_eq!(
            out,
            vec![
                E::Start(1, 20),
                E::F(1, 1),
                E::End(EndReason::NoChannel, 1),
                E::Start(3, 60),
                E::F(3, 3),
                E::End(EndReason::EndOfCapture, 3)
            ]
        );
        assert_eq!(r.m.stats.discarded, 2);
    }

    #[test]
    fn channel_reset_ends_the_stream() {
        let mut r = Rig::new();
        let ch = |s: u8| Channel {
            bitfield: ChannelBitfield::new(
                ChannelType::Player,
                false,
                false,
                Priority::Default,
                s,
                1.0,
            ),
            recipient: 3,
        };
        r.pkt_on(0, 0, 0, &[ch(0)]);
        r.pkt_on(1, 20, 0, &[ch(0), room(false)]); // a new channel: not a reset
        r.pkt_on(2, 40, 0, &[ch(1)]); // every kept channel's session changed
        let out = r.finish();
        assert_eq!(out[3], E::End(EndReason::ChannelReset, 1));
        assert_eq!(out[4], E::Start(2, 40));
    }

    #[test]
    fn big_jumps_start_a_new_stream() {
        let mut r = Rig::new();
        r.pkt(0, 0, 0, false);
        r.pkt(1000, 20, 0, false);
        let out = r.finish();
        assert_eq!(out[2], E::End(EndReason::SeqJump, 0));
        assert_eq!(out[3], E::Start(1000, 20));
        assert_eq!(r.m.stats.seq_jumps, 1);
    }
}
