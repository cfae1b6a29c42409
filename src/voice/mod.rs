//! Voice extraction: every speaker's talk spurts decoded onto one timeline, losses
//! repaired the way Dissonance's own receiver does (docs/protocol.md §7.2).
//!
//! [`VoicePipeline`] is a sans-IO state machine. Decoded packets go in (with their
//! capture time, addresses and the session [`Tracker`] that has already seen them),
//! PCM comes out through a [`Sink`], one track per output. It never touches a file:
//! [`wav::WavSink`] is the shell that writes WAVs, [`MemorySink`] keeps samples in memory.
//! [`VoiceExtractor`] puts the [`Locator`], the [`Tracker`] and the pipeline together for
//! capture payloads.
//!
//! Per speaker (session, client id, and the client's name: a reused id is another speaker):
//! 1. every copy of a frame (the client's relay to the server, one forward per listener,
//!    or P2P copies) is reduced to one per sequence number; copies seen twice on the same
//!    path are counted as duplicates;
//! 2. one or more *views* (the speaker's own, `--room`, `--listener`) keep the channels
//!    that concern them and split talk spurts as the real receiver does ([`stream`]);
//! 3. each view decodes its spurts with its own decoder (reset at every spurt), recovering
//!    a missing frame from the next frame's in-band FEC, else with Opus PLC;
//! 4. tracks place each spurt at the capture time of its first frame ([`track`]).

mod config;
pub mod decode;
mod extract;
mod report;
pub mod run;
pub mod sample;
pub mod seq;
mod sink;
mod spool;
pub mod stream;
mod track;
mod view_out;
pub mod wav;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;

use rustc_hash::FxHashMap;

use crate::capture::Payload;
use crate::codec::{room_id, Channel, ChannelType, Message, Packet, VoiceData};
use crate::dissect::session::{ClientRecord, Tracker};

pub use decode::{opus_has_fec, CodecPlan, CodecSource, FrameDecoder};
pub use sample::Sample;
use seq::{OwnedVoice, SeqGuard};
pub use stream::{Arrival, Emit, EndReason, JitterStats, StreamMachine};
use track::Track;

pub use config::*;
pub use extract::VoiceExtractor;
pub use report::*;
pub use sink::{MemorySink, Sink};

/// A name that is safe as (part of) a file name on every common file system.
pub fn safe_file_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    // No hidden files, no "." or "..".
    if s.starts_with('.') {
        s.replace_range(..1, "_");
    }
    if s.is_empty() {
        s.push('_');
    }
    s
}

/// Timeline positions: samples since the capture's first packet.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    origin: i64,
    rate: u32,
}

impl Timeline {
    fn pos(&self, ts_ns: i64) -> u64 {
        let d = ts_ns.saturating_sub(self.origin).max(0) as i128;
        ((d * self.rate as i128 + 500_000_000) / 1_000_000_000) as u64
    }
    /// A position's capture time, Unix ns.
    fn ts_ns(&self, pos: u64) -> i64 {
        let ns = pos as i128 * 1_000_000_000 / self.rate as i128;
        self.origin.saturating_add(ns as i64)
    }
}

/// Which channels of a packet a view keeps.
#[derive(Debug, Clone, Copy)]
enum Filter {
    /// The speaker's own track and the mix: every channel.
    All,
    Room(u16),
    /// Index into the listener names.
    Listener(usize),
}

/// The spurt a view is playing, or its last one.
#[derive(Debug, Default, Clone)]
struct SpurtData {
    speaker: usize,
    session: u32,
    speaker_id: u16,
    start_pos: u64,
    /// `start_pos` as capture time, Unix ns.
    ts_ns: i64,
    end_pos: u64,
    first_seq: i64,
    last_seq: i64,
    first_packet: u64,
    stats: FrameStats,
    end: Option<EndReason>,
}

struct View<S: Sample> {
    speaker: usize,
    filter: Filter,
    machine: StreamMachine,
    out: ViewOut<S>,
}

struct ViewOut<S: Sample> {
    id: usize,
    speaker: usize,
    dec: FrameDecoder<S>,
    targets: Vec<usize>,
    /// Next write position while a spurt plays; the end of the last one otherwise.
    pos: u64,
    end_pos: u64,
    in_spurt: bool,
    /// Only the current spurt: each goes to the tracks (and on to the sink) when it ends.
    spurt: SpurtData,
    stats: FrameStats,
}

/// Recent sequence numbers of one speaker and the paths each came by.
struct DedupSlot {
    seq: i64,
    flows: Vec<u32>,
}

const RING: usize = 1024;

enum Copy {
    First,
    Again,
    Duplicate,
    TooOld,
}

struct Speaker {
    session: u32,
    id: u16,
    name: String,
    name_known: bool,
    joined_ns: Option<i64>,
    plan: Option<CodecPlan>,
    selected: bool,
    skipped: Option<String>,
    /// Unwraps sequence numbers; holds a far jump until the next packet confirms it.
    guard: SeqGuard<(Payload<'static>, OwnedVoice)>,
    ring: Vec<DedupSlot>,
    views: Vec<usize>,
    stats: FrameStats,
    corrupt_reported: u32,
}

impl Speaker {
    fn label(&self) -> String {
        format!("{} (session {}, id {})", self.name, self.session, self.id)
    }

    fn dedupe(&mut self, seq: i64, flow: u32) -> Copy {
        if self.ring.is_empty() {
            self.ring = (0..RING)
                .map(|_| DedupSlot {
                    seq: i64::MIN,
                    flows: Vec::new(),
                })
                .collect();
        }
        if seq <= self.guard.hi().unwrap_or(seq) - RING as i64 {
            return Copy::TooOld;
        }
        let slot = &mut self.ring[(seq as usize) & (RING - 1)];
        if slot.seq != seq {
            slot.seq = seq;
            slot.flows.clear();
            slot.flows.push(flow);
            Copy::First
        } else if slot.flows.contains(&flow) {
            Copy::Duplicate
        } else {
            slot.flows.push(flow);
            Copy::Again
        }
    }

    /// A held suspect that nothing confirmed: counted and warned about, never played.
    fn outlier(
        &mut self,
        held: Option<(i64, (Payload<'static>, OwnedVoice))>,
        warnings: &mut VecDeque<Warning>,
    ) {
        let Some((_, (meta, v))) = held else {
            return;
        };
        self.stats.outliers += 1;
        warnings.push_back(Warning {
            packet: Some(meta.frame_number),
            message: format!(
                "{}: seq {} jumped far ahead of the stream and no packet followed it: ignored \
                 as an outlier (a stray or forged copy)",
                self.label(),
                v.seq
            ),
        });
    }

    fn reset_sequence(&mut self, warnings: &mut VecDeque<Warning>) {
        let held = self.guard.reset();
        self.outlier(held, warnings);
        for s in &mut self.ring {
            s.seq = i64::MIN;
            s.flows.clear();
        }
    }
}

/// Shared state the view handlers write to.
struct Ctx<'a, S: Sample, K: Sink<S>> {
    tracks: &'a mut [Track<S>],
    sink: &'a mut K,
    timeline: Timeline,
    conceal: Conceal,
    warnings: &'a mut VecDeque<Warning>,
    speaker: &'a mut Speaker,
}

/// The voice pipeline. `S` is the output sample type (`i16` or `f32`).
pub struct VoicePipeline<S: Sample> {
    cfg: VoiceConfig,
    origin: Option<i64>,
    now: i64,
    last_ts: Option<i64>,
    started: bool,
    speakers: Vec<Speaker>,
    by_key: FxHashMap<(u32, u16), usize>,
    views: Vec<View<S>>,
    tracks: Vec<Track<S>>,
    mix: Option<usize>,
    room_tracks: Vec<(u16, usize)>,
    listener_tracks: Vec<usize>,
    /// Last known (session, id) of each `--listener`.
    listener_ids: Vec<Option<(u32, u16)>>,
    flows: FxHashMap<(SocketAddr, SocketAddr), u32>,
    warnings: VecDeque<Warning>,
    next_tick: i64,
    next_commit: i64,
    kept: Vec<Channel>,
}

const TICK_NS: i64 = 20_000_000;
const COMMIT_NS: i64 = 250_000_000;
/// No source starts a spurt earlier than this before the current capture time.
const FLOOR_NS: i64 = 2 * stream::REORDER_NS;

impl<S: Sample> VoicePipeline<S> {
    pub fn new(cfg: VoiceConfig) -> VoicePipeline<S> {
        let mut p = VoicePipeline {
            origin: None,
            now: 0,
            last_ts: None,
            started: false,
            speakers: Vec::new(),
            by_key: FxHashMap::default(),
            views: Vec::new(),
            tracks: Vec::new(),
            mix: None,
            room_tracks: Vec::new(),
            listener_tracks: Vec::new(),
            listener_ids: vec![None; cfg.listeners.len()],
            flows: FxHashMap::default(),
            warnings: VecDeque::new(),
            next_tick: i64::MIN,
            next_commit: i64::MIN,
            kept: Vec::new(),
            cfg,
        };
        let rate = p.cfg.rate;
        let trim = p.cfg.trim;
        let add = |tracks: &mut Vec<Track<S>>, kind: TrackKind, stem: String| {
            let id = tracks.len();
            tracks.push(Track::mixed(id, TrackInfo { kind, stem, rate }, trim));
            id
        };
        if p.cfg.mix {
            p.mix = Some(add(&mut p.tracks, TrackKind::Mix, "mix".into()));
        }
        for r in p.cfg.rooms.clone() {
            let stem = format!("room-{}", safe_file_name(&r));
            let id = add(&mut p.tracks, TrackKind::Room(r.clone()), stem);
            p.room_tracks.push((room_id(&r), id));
        }
        for l in p.cfg.listeners.clone() {
            let stem = format!("listener-{}", safe_file_name(&l));
            let id = add(&mut p.tracks, TrackKind::Listener(l), stem);
            p.listener_tracks.push(id);
        }
        p
    }

    pub fn config(&self) -> &VoiceConfig {
        &self.cfg
    }

    /// The next warning, if any.
    pub fn poll_warning(&mut self) -> Option<Warning> {
        self.warnings.pop_front()
    }

    fn timeline(&self) -> Timeline {
        Timeline {
            origin: self.origin.unwrap_or(self.now),
            rate: self.cfg.rate,
        }
    }

    /// Capture time passes. Call it for every frame of the capture (the first call sets
    /// the timeline's origin); [`Self::push`] calls it too.
    pub fn advance(&mut self, ts_ns: i64, sink: &mut impl Sink<S>) {
        if self.origin.is_none() {
            self.origin = Some(ts_ns);
            self.now = ts_ns;
        }
        self.last_ts = Some(self.last_ts.map_or(ts_ns, |t| t.max(ts_ns)));
        if !self.started {
            self.started = true;
            for t in &self.tracks {
                sink.open(t.id, &t.info);
            }
        }
        self.now = self.now.max(ts_ns);
        if self.now >= self.next_tick {
            self.next_tick = self.now + TICK_NS;
            let timeline = self.timeline();
            let conceal = self.cfg.conceal;
            let now = self.now;
            for v in &mut self.views {
                if !v.machine.busy() {
                    continue;
                }
                let speaker = &mut self.speakers[v.speaker];
                let mut ctx = Ctx {
                    tracks: &mut self.tracks,
                    sink,
                    timeline,
                    conceal,
                    warnings: &mut self.warnings,
                    speaker,
                };
                let out = &mut v.out;
                v.machine.tick(now, &mut |e| out.handle(e, &mut ctx));
            }
        }
        if self.now >= self.next_commit {
            self.next_commit = self.now + COMMIT_NS;
            self.commit(sink);
        }
    }

    /// Writes out mixed tracks up to where no source can still write.
    fn commit(&mut self, sink: &mut impl Sink<S>) {
        let timeline = self.timeline();
        let floor = timeline.pos(self.now.saturating_sub(FLOOR_NS));
        for t in &mut self.tracks {
            if !t.is_mixed() || t.buffered() == 0 {
                continue;
            }
            let wm = t
                .sources
                .iter()
                .map(|&v| {
                    let v = &self.views[v];
                    v.out.lower_bound(&v.machine, &timeline, floor)
                })
                .fold(floor, u64::min);
            t.commit(wm, sink);
        }
    }

    /// Feeds one decoded packet (after the tracker has seen it). Voice is VoiceData sent
    /// directly, forwarded by the server, or wrapped in a client's relay to the server.
    pub fn push(
        &mut self,
        meta: &Payload<'_>,
        packet: &Packet<'_>,
        tracker: &Tracker,
        sink: &mut impl Sink<S>,
    ) {
        self.advance(meta.ts_ns, sink);
        match &packet.message {
            Message::VoiceData(v) => self.voice(meta, v, tracker, sink),
            Message::ServerRelayUnreliable(r) | Message::ServerRelayReliable(r) => {
                if let Ok(inner) = r.inner() {
                    if let Message::VoiceData(v) = &inner.message {
                        self.voice(meta, v, tracker, sink);
                    }
                }
            }
            _ => {}
        }
    }

    fn flow(&mut self, meta: &Payload<'_>) -> u32 {
        let n = self.flows.len() as u32;
        *self.flows.entry((meta.src, meta.dst)).or_insert(n)
    }

    fn selected(&self, name: Option<&str>, id: u16) -> bool {
        self.cfg.speakers.is_empty()
            || self
                .cfg
                .speakers
                .iter()
                .any(|s| Some(s.as_str()) == name || s.parse::<u16>() == Ok(id))
    }

    /// The speaker for a packet, created (or replaced, when the id was reused) as needed.
    fn speaker_for(
        &mut self,
        meta: &Payload<'_>,
        v: &VoiceData<'_>,
        tracker: &Tracker,
        sink: &mut impl Sink<S>,
    ) -> usize {
        let key = (v.session, v.sender);
        let rec = tracker.client(v.session, v.sender);
        if let Some(&i) = self.by_key.get(&key) {
            let sp = &mut self.speakers[i];
            let Some(rec) = rec else {
                return i;
            };
            if !sp.name_known {
                sp.name = rec.name.clone();
                sp.name_known = true;
                sp.joined_ns = rec.joined_ns;
                return i;
            }
            if sp.joined_ns == rec.joined_ns {
                return i;
            }
            // The client left and someone (maybe the same player again) got its id.
            self.end_speaker(i, sink);
            let again = self
                .speakers
                .iter()
                .position(|s| s.session == v.session && s.id == v.sender && s.name == rec.name);
            if let Some(j) = again {
                let sp = &mut self.speakers[j];
                sp.joined_ns = rec.joined_ns;
                sp.reset_sequence(&mut self.warnings);
                self.by_key.insert(key, j);
                return j;
            }
        }
        if let Some(j) = rec.and_then(|r| self.across_restart(v.session, &r.name, tracker)) {
            // The same player back after the server restarted: the same speaker, whose
            // sequence numbers start again (a new client instance).
            self.end_speaker(j, sink);
            let sp = &mut self.speakers[j];
            sp.joined_ns = rec.and_then(|r| r.joined_ns);
            sp.reset_sequence(&mut self.warnings);
            self.by_key.insert(key, j);
            return j;
        }
        let i = self.new_speaker(meta, v, rec, sink);
        self.by_key.insert(key, i);
        i
    }

    /// The speaker named `name` in a session that `session` replaced when the server
    /// restarted (directly or through earlier restarts).
    fn across_restart(&self, session: u32, name: &str, tracker: &Tracker) -> Option<usize> {
        let mut s = session;
        // Bounded: a chain of restarts cannot loop, but a forged capture could make one.
        for _ in 0..64 {
            s = tracker.restarted_from(s)?;
            let found = self
                .speakers
                .iter()
                .position(|sp| sp.session == s && sp.name_known && sp.name == name);
            if found.is_some() {
                return found;
            }
        }
        None
    }

    fn end_speaker(&mut self, i: usize, sink: &mut impl Sink<S>) {
        let timeline = self.timeline();
        let conceal = self.cfg.conceal;
        for vi in self.speakers[i].views.clone() {
            let v = &mut self.views[vi];
            let mut ctx = Ctx {
                tracks: &mut self.tracks,
                sink,
                timeline,
                conceal,
                warnings: &mut self.warnings,
                speaker: &mut self.speakers[i],
            };
            let out = &mut v.out;
            v.machine
                .finish(EndReason::Rejoin, &mut |e| out.handle(e, &mut ctx));
        }
    }

    fn new_speaker(
        &mut self,
        meta: &Payload<'_>,
        v: &VoiceData<'_>,
        rec: Option<&ClientRecord>,
        sink: &mut impl Sink<S>,
    ) -> usize {
        let idx = self.speakers.len();
        let name = rec.map_or("unknown".to_string(), |r| r.name.clone());
        let mut sp = Speaker {
            session: v.session,
            id: v.sender,
            name,
            name_known: rec.is_some(),
            joined_ns: rec.and_then(|r| r.joined_ns),
            plan: None,
            selected: true,
            skipped: None,
            guard: SeqGuard::new(StreamMachine::window_for(20_000_000)),
            ring: Vec::new(),
            views: Vec::new(),
            stats: FrameStats::default(),
            corrupt_reported: 0,
        };
        let rate = self.cfg.rate;
        if !self.selected(rec.map(|r| r.name.as_str()), v.sender) {
            sp.selected = false;
            self.speakers.push(sp);
            return idx;
        }
        let plan = match rec.and_then(|r| r.codec) {
            Some(c) => CodecPlan::from_settings(c, rate),
            None => {
                let p = CodecPlan::from_opus_toc(v.audio, rate);
                if let Ok(p) = &p {
                    self.warnings.push_back(Warning {
                        packet: Some(meta.frame_number),
                        message: format!(
                            "{}: no codec settings in the capture (handshake not captured); \
                             assuming Opus, {} ms frames from the TOC byte",
                            sp.label(),
                            p.frame_size as f64 * 1000.0 / p.sample_rate as f64
                        ),
                    });
                }
                p
            }
        };
        let plan = match plan {
            Ok(p) => p,
            Err(e) => {
                self.warnings.push_back(Warning {
                    packet: Some(meta.frame_number),
                    message: format!("{}: {e}; speaker skipped", sp.label()),
                });
                sp.skipped = Some(e);
                self.speakers.push(sp);
                return idx;
            }
        };
        sp.plan = Some(plan);
        sp.guard = SeqGuard::new(StreamMachine::window_for(plan.frame_ns()));

        // The views: own (speaker track and/or mix), each room, each listener.
        let mut wanted: Vec<(Filter, Vec<usize>)> = Vec::new();
        let mut own = Vec::new();
        if self.cfg.per_speaker {
            let id = self.tracks.len();
            let stem = speaker_stem(&sp);
            let info = TrackInfo {
                kind: TrackKind::Speaker {
                    session: sp.session,
                    id: sp.id,
                    name: sp.name.clone(),
                },
                stem,
                rate,
            };
            self.tracks.push(Track::direct(id, info, self.cfg.trim));
            if self.started {
                sink.open(id, &self.tracks[id].info);
            }
            own.push(id);
        }
        if let Some(m) = self.mix {
            own.push(m);
        }
        if !own.is_empty() {
            wanted.push((Filter::All, own));
        }
        for &(room, t) in &self.room_tracks {
            wanted.push((Filter::Room(room), vec![t]));
        }
        for (li, &t) in self.listener_tracks.iter().enumerate() {
            // A player does not hear themselves.
            if sp.name_known && sp.name == self.cfg.listeners[li] {
                continue;
            }
            wanted.push((Filter::Listener(li), vec![t]));
        }
        for (filter, targets) in wanted {
            let dec = match FrameDecoder::new(plan, rate) {
                Ok(d) => d,
                Err(e) => {
                    self.warnings.push_back(Warning {
                        packet: Some(meta.frame_number),
                        message: format!("{}: {e}; speaker skipped", sp.label()),
                    });
                    sp.skipped = Some(e);
                    break;
                }
            };
            let vi = self.views.len();
            for &t in &targets {
                self.tracks[t].sources.push(vi);
            }
            self.views.push(View {
                speaker: idx,
                filter,
                machine: StreamMachine::new(plan.frame_ns()),
                out: ViewOut {
                    id: vi,
                    speaker: idx,
                    dec,
                    targets,
                    pos: 0,
                    end_pos: 0,
                    in_spurt: false,
                    spurt: SpurtData::default(),
                    stats: FrameStats::default(),
                },
            });
            sp.views.push(vi);
        }
        self.speakers.push(sp);
        idx
    }

    fn voice(
        &mut self,
        meta: &Payload<'_>,
        v: &VoiceData<'_>,
        tracker: &Tracker,
        sink: &mut impl Sink<S>,
    ) {
        let si = self.speaker_for(meta, v, tracker, sink);
        let sp = &mut self.speakers[si];
        sp.stats.packets += 1;
        if !sp.selected || sp.skipped.is_some() || sp.views.is_empty() {
            return;
        }
        let g = sp.guard.push(v.seq, || (meta.meta(), OwnedVoice::new(v)));
        sp.outlier(g.outlier, &mut self.warnings);
        if let Some((seq, (m, held))) = g.release {
            self.deliver(si, &m, &held.view(), seq, tracker, sink);
        }
        if let Some(seq) = g.now {
            self.deliver(si, meta, v, seq, tracker, sink);
        }
    }

    /// One packet past the sequence guard, with its unwrapped sequence number: dedupe, then
    /// every view of its speaker.
    fn deliver(
        &mut self,
        si: usize,
        meta: &Payload<'_>,
        v: &VoiceData<'_>,
        seq: i64,
        tracker: &Tracker,
        sink: &mut impl Sink<S>,
    ) {
        let flow = self.flow(meta);
        let sp = &mut self.speakers[si];
        match sp.dedupe(seq, flow) {
            Copy::First => {}
            Copy::Again => return,
            Copy::Duplicate => {
                sp.stats.duplicates += 1;
                return;
            }
            Copy::TooOld => {
                sp.stats.late += 1;
                return;
            }
        }
        let arrival = Arrival {
            number: meta.frame_number,
            ts_ns: meta.ts_ns,
            seq,
            options: v.options,
            audio: v.audio,
        };
        let timeline = self.timeline();
        let conceal = self.cfg.conceal;
        let views = std::mem::take(&mut self.speakers[si].views);
        for &vi in &views {
            let view = &mut self.views[vi];
            self.kept.clear();
            match view.filter {
                Filter::All => self.kept.extend(v.channels.iter()),
                Filter::Room(room) => self.kept.extend(
                    v.channels
                        .iter()
                        .filter(|c| c.bitfield.channel_type() == ChannelType::Room)
                        .filter(|c| c.recipient == room),
                ),
                Filter::Listener(li) => {
                    let name = &self.cfg.listeners[li];
                    if let Some(l) = listener(tracker, &mut self.listener_ids[li], v.session, name)
                    {
                        if l.id != v.sender {
                            self.kept.extend(v.channels.iter().filter(|c| hears(l, c)));
                        }
                    }
                }
            }
            let mut ctx = Ctx {
                tracks: &mut self.tracks,
                sink,
                timeline,
                conceal,
                warnings: &mut self.warnings,
                speaker: &mut self.speakers[si],
            };
            let out = &mut view.out;
            view.machine
                .push(&arrival, &self.kept, &mut |e| out.handle(e, &mut ctx));
        }
        self.speakers[si].views = views;
    }

    /// Ends every spurt, writes out every track and reports.
    pub fn finish(&mut self, tracker: &Tracker, sink: &mut impl Sink<S>) -> VoiceReport {
        if !self.started {
            // An empty capture still gives the requested (empty) tracks.
            self.started = true;
            for t in &self.tracks {
                sink.open(t.id, &t.info);
            }
        }
        for sp in &mut self.speakers {
            let held = sp.guard.finish();
            sp.outlier(held, &mut self.warnings);
        }
        let timeline = self.timeline();
        let conceal = self.cfg.conceal;
        for v in &mut self.views {
            let mut ctx = Ctx {
                tracks: &mut self.tracks,
                sink,
                timeline,
                conceal,
                warnings: &mut self.warnings,
                speaker: &mut self.speakers[v.speaker],
            };
            let out = &mut v.out;
            v.machine
                .finish(EndReason::EndOfCapture, &mut |e| out.handle(e, &mut ctx));
        }
        // Without --trim every file has the same length: to the end of the capture, or of
        // the last spurt if frames were placed past it.
        let end = self
            .views
            .iter()
            .map(|v| v.out.end_pos)
            .fold(self.last_ts.map_or(0, |t| timeline.pos(t)), u64::max);
        for t in &mut self.tracks {
            t.finish(end, sink);
        }

        // Names learnt after a speaker's first packet.
        for sp in &mut self.speakers {
            if !sp.name_known {
                if let Some(r) = tracker.client(sp.session, sp.id) {
                    sp.name = r.name.clone();
                    sp.name_known = true;
                }
            }
        }
        for t in &mut self.tracks {
            if let TrackKind::Speaker { name, .. } = &mut t.info.kind {
                if let Some(&v) = t.sources.first() {
                    let sp = &self.speakers[self.views[v].speaker];
                    if *name != sp.name {
                        *name = sp.name.clone();
                        t.info.stem = speaker_stem(sp);
                    }
                }
            }
        }

        let speakers: Vec<SpeakerReport> = self
            .speakers
            .iter()
            .map(|sp| {
                let mut stats = sp.stats;
                for &vi in &sp.views {
                    let v = &self.views[vi];
                    if matches!(v.filter, Filter::All) {
                        stats.add(&view_stats(v));
                    }
                }
                SpeakerReport {
                    session: sp.session,
                    id: sp.id,
                    name: sp.name.clone(),
                    plan: sp.plan,
                    selected: sp.selected,
                    skipped: sp.skipped.clone(),
                    stats,
                }
            })
            .collect();
        let tracks = self.tracks.iter().map(|t| self.track_report(t)).collect();
        VoiceReport { tracks, speakers }
    }

    fn track_report(&self, t: &Track<S>) -> TrackReport {
        let mut stats = FrameStats::default();
        let mut speakers: Vec<usize> = Vec::new();
        for &vi in &t.sources {
            let v = &self.views[vi];
            let sp = &self.speakers[v.speaker];
            stats.add(&view_stats(v));
            // Speakers heard on this track (a room view of someone who never spoke into
            // the room does not make them part of it).
            let own = matches!(t.info.kind, TrackKind::Speaker { .. });
            if (own || v.out.stats.spurts > 0) && !speakers.contains(&v.speaker) {
                speakers.push(v.speaker);
                stats.packets += sp.stats.packets;
                stats.duplicates += sp.stats.duplicates;
                stats.late += sp.stats.late;
                stats.outliers += sp.stats.outliers;
            }
        }
        TrackReport {
            track: t.id,
            info: t.info.clone(),
            samples: t.wav_len,
            format: S::FORMAT,
            trim: self.cfg.trim,
            conceal: self.cfg.conceal,
            stats,
            spurts: t.spurts,
            speech_samples: t.speech_samples,
            speakers,
        }
    }
}

fn view_stats<S: Sample>(v: &View<S>) -> FrameStats {
    let j = &v.machine.stats;
    let mut s = v.out.stats;
    s.late += j.late;
    s.reordered += j.reordered;
    s.discarded += j.discarded + j.stale;
    s
}

fn speaker_stem(sp: &Speaker) -> String {
    format!("{}-{}-{}", sp.session, sp.id, safe_file_name(&sp.name))
}

/// The client record of a `--listener` in `session` right now.
fn listener<'t>(
    tracker: &'t Tracker,
    cache: &mut Option<(u32, u16)>,
    session: u32,
    name: &str,
) -> Option<&'t ClientRecord> {
    let ok = |c: &ClientRecord| c.session == session && c.name == name && c.left_ns.is_none();
    if let Some((s, id)) = *cache {
        if let Some(c) = tracker.client(s, id).filter(|c| ok(c)) {
            return Some(c);
        }
    }
    let c = tracker.clients().find(|c| ok(c))?;
    *cache = Some((c.session, c.id));
    Some(c)
}

/// §7.2 step 4: a player channel to the listener, or a room the listener is in now.
fn hears(l: &ClientRecord, c: &Channel) -> bool {
    match c.bitfield.channel_type() {
        ChannelType::Player => c.recipient == l.id,
        ChannelType::Room => l.rooms.iter().any(|r| room_id(r) == c.recipient),
    }
}
