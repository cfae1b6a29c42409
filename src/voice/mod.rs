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

pub mod decode;
pub mod sample;
pub mod stream;
mod track;
pub mod wav;

use std::collections::VecDeque;
use std::net::SocketAddr;

use rustc_hash::FxHashMap;

use crate::capture::{Payload, Transport};
use crate::codec::{room_id, Channel, ChannelType, Message, Packet, VoiceData};
use crate::dissect::locate::{Classified, FlowKey, Locator, PayloadMode};
use crate::dissect::session::{ClientRecord, Tracker};

pub use decode::{opus_has_fec, CodecPlan, CodecSource, FrameDecoder};
pub use sample::Sample;
pub use stream::{Arrival, Emit, EndReason, JitterStats, StreamMachine};
use track::{MarkKey, Track};

/// How a missing frame is filled (`--conceal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Conceal {
    /// In-band FEC from the next frame when it carries FEC data, else PLC (Dissonance's way).
    #[default]
    Fec,
    /// Opus packet loss concealment only.
    Plc,
    /// Zeros.
    Silence,
}

impl Conceal {
    pub fn name(self) -> &'static str {
        match self {
            Conceal::Fec => "fec",
            Conceal::Plc => "plc",
            Conceal::Silence => "silence",
        }
    }
}

/// What to extract.
#[derive(Debug, Clone)]
pub struct VoiceConfig {
    /// Output sample rate (an Opus rate; 48 000 by default).
    pub rate: u32,
    pub conceal: Conceal,
    /// Speech only: no silence between spurts, no silence before the first.
    pub trim: bool,
    /// One track per speaker.
    pub per_speaker: bool,
    /// One track with every speaker.
    pub mix: bool,
    /// One track per room: what was sent to it.
    pub rooms: Vec<String>,
    /// One track per player: what they heard.
    pub listeners: Vec<String>,
    /// Only these speakers (names or client ids); empty: everyone.
    pub speakers: Vec<String>,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        VoiceConfig {
            rate: 48000,
            conceal: Conceal::Fec,
            trim: false,
            per_speaker: true,
            mix: false,
            rooms: Vec::new(),
            listeners: Vec::new(),
            speakers: Vec::new(),
        }
    }
}

/// What a track holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackKind {
    Speaker {
        session: u32,
        id: u16,
        /// "unknown" when the capture never names the client.
        name: String,
    },
    Mix,
    Room(String),
    Listener(String),
}

impl TrackKind {
    pub fn name(&self) -> &'static str {
        match self {
            TrackKind::Speaker { .. } => "speaker",
            TrackKind::Mix => "mix",
            TrackKind::Room(_) => "room",
            TrackKind::Listener(_) => "listener",
        }
    }
}

/// One output track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    pub kind: TrackKind,
    /// A file-system-safe file name without extension: `<session>-<id>-<name>`, `mix`,
    /// `room-<name>`, `listener-<name>`.
    pub stem: String,
    pub rate: u32,
}

/// Where PCM goes. Samples of one track arrive in order; `silence` stands for zeros.
pub trait Sink<S> {
    fn open(&mut self, track: usize, info: &TrackInfo);
    fn write(&mut self, track: usize, samples: &[S]);
    fn silence(&mut self, track: usize, n: u64);
}

/// A sink that keeps every track in memory (tests, library use on short captures).
#[derive(Debug, Clone)]
pub struct MemorySink<S> {
    pub tracks: Vec<Option<(TrackInfo, Vec<S>)>>,
}

impl<S> Default for MemorySink<S> {
    fn default() -> Self {
        MemorySink { tracks: Vec::new() }
    }
}

impl<S: Sample> MemorySink<S> {
    pub fn samples(&self, track: usize) -> &[S] {
        self.tracks
            .get(track)
            .and_then(|t| t.as_ref())
            .map(|(_, s)| &s[..])
            .unwrap_or(&[])
    }
    /// The track with this stem.
    pub fn find(&self, stem: &str) -> Option<&[S]> {
        self.tracks
            .iter()
            .flatten()
            .find(|(i, _)| i.stem == stem)
            .map(|(_, s)| &s[..])
    }
}

impl<S: Sample> Sink<S> for MemorySink<S> {
    fn open(&mut self, track: usize, info: &TrackInfo) {
        if self.tracks.len() <= track {
            self.tracks.resize_with(track + 1, || None);
        }
        self.tracks[track] = Some((info.clone(), Vec::new()));
    }
    fn write(&mut self, track: usize, samples: &[S]) {
        if let Some(Some((_, v))) = self.tracks.get_mut(track) {
            v.extend_from_slice(samples);
        }
    }
    fn silence(&mut self, track: usize, n: u64) {
        if let Some(Some((_, v))) = self.tracks.get_mut(track) {
            v.resize(v.len() + n as usize, S::ZERO);
        }
    }
}

/// A problem worth telling the user about; nothing stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The packet concerned, when there is one.
    pub packet: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.packet {
            Some(n) => write!(f, "packet {n}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Frame counters (per view, per speaker, per track).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Voice packets seen, every copy.
    pub packets: u64,
    /// Copies of a frame seen again on a path it had already come by.
    pub duplicates: u64,
    /// Frames decoded as received.
    pub decoded: u64,
    /// Frames missing inside a talk spurt (never received, or too late).
    pub lost: u64,
    /// Lost or corrupt frames recovered from the next frame's in-band FEC.
    pub recovered_fec: u64,
    /// Lost or corrupt frames concealed by Opus PLC.
    pub concealed_plc: u64,
    /// Lost or corrupt frames written as silence (`--conceal silence`, Identity codec).
    pub silenced: u64,
    /// Frames the decoder refused (then concealed).
    pub corrupt: u64,
    /// Frames that arrived after their place was played.
    pub late: u64,
    /// Frames that arrived after a later frame and were put back in place.
    pub reordered: u64,
    /// Packets that started or continued no spurt (closing flags only, no relevant channel,
    /// an older channel session).
    pub discarded: u64,
    pub spurts: u64,
}

impl FrameStats {
    pub fn add(&mut self, o: &FrameStats) {
        self.packets += o.packets;
        self.duplicates += o.duplicates;
        self.decoded += o.decoded;
        self.lost += o.lost;
        self.recovered_fec += o.recovered_fec;
        self.concealed_plc += o.concealed_plc;
        self.silenced += o.silenced;
        self.corrupt += o.corrupt;
        self.late += o.late;
        self.reordered += o.reordered;
        self.discarded += o.discarded;
        self.spurts += o.spurts;
    }
    /// Frames written: decoded plus concealed.
    pub fn frames(&self) -> u64 {
        self.decoded + self.recovered_fec + self.concealed_plc + self.silenced
    }
}

/// One talk spurt as written to one track.
#[derive(Debug, Clone, PartialEq)]
pub struct SpurtReport {
    pub session: u32,
    pub speaker_id: u16,
    pub speaker: String,
    /// Seconds since the capture's first packet.
    pub start_s: f64,
    pub end_s: f64,
    /// Where it is in the WAV (differs from the timeline with `--trim`).
    pub wav_start_s: f64,
    pub wav_end_s: f64,
    /// Wire (16-bit) sequence numbers.
    pub first_seq: u16,
    pub last_seq: u16,
    /// Packet number of the first packet that arrived.
    pub first_packet: u64,
    pub frames: u64,
    pub stats: FrameStats,
    pub end: &'static str,
}

/// A speaker seen in the capture.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerReport {
    pub session: u32,
    pub id: u16,
    pub name: String,
    pub plan: Option<CodecPlan>,
    /// False when `--speaker` left this speaker out.
    pub selected: bool,
    /// Why a selected speaker could not be extracted (unknown codec, invalid rate).
    pub skipped: Option<String>,
    /// Copies and duplicates, plus the speaker's own view's counters when it has one.
    pub stats: FrameStats,
}

/// One output track's report.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackReport {
    pub track: usize,
    pub info: TrackInfo,
    pub samples: u64,
    pub format: &'static str,
    pub trim: bool,
    pub conceal: Conceal,
    pub stats: FrameStats,
    pub spurts: Vec<SpurtReport>,
    /// Indices into [`VoiceReport::speakers`] of the speakers heard on this track.
    pub speakers: Vec<usize>,
}

impl TrackReport {
    pub fn duration_s(&self) -> f64 {
        self.samples as f64 / self.info.rate as f64
    }

    /// The sidecar JSON object.
    pub fn to_json(&self, all: &[SpeakerReport]) -> serde_json::Value {
        use serde_json::json;
        let stats = |s: &FrameStats| {
            json!({
                "packets": s.packets,
                "duplicates": s.duplicates,
                "decoded": s.decoded,
                "lost": s.lost,
                "recovered_fec": s.recovered_fec,
                "concealed_plc": s.concealed_plc,
                "silenced": s.silenced,
                "corrupt": s.corrupt,
                "late": s.late,
                "reordered": s.reordered,
                "discarded": s.discarded,
            })
        };
        let (speaker, room, listener) = match &self.info.kind {
            TrackKind::Speaker { name, .. } => (Some(name.as_str()), None, None),
            TrackKind::Room(r) => (None, Some(r.as_str()), None),
            TrackKind::Listener(l) => (None, None, Some(l.as_str())),
            TrackKind::Mix => (None, None, None),
        };
        let speakers: Vec<serde_json::Value> = self
            .speakers
            .iter()
            .filter_map(|&i| all.get(i))
            .map(|s| {
                let codec = s.plan.map(|p| {
                    json!({
                        "codec": p.codec.name(),
                        "frame_size": p.frame_size,
                        "sample_rate": p.sample_rate,
                        "frame_ms": p.frame_size as f64 * 1000.0 / p.sample_rate as f64,
                        "source": p.source.name(),
                    })
                });
                json!({"session": s.session, "id": s.id, "name": s.name, "codec": codec})
            })
            .collect();
        let spurts: Vec<serde_json::Value> = self
            .spurts
            .iter()
            .map(|s| {
                json!({
                    "session": s.session,
                    "speaker_id": s.speaker_id,
                    "speaker": s.speaker,
                    "start_s": s.start_s,
                    "end_s": s.end_s,
                    "wav_start_s": s.wav_start_s,
                    "wav_end_s": s.wav_end_s,
                    "first_seq": s.first_seq,
                    "last_seq": s.last_seq,
                    "first_packet": s.first_packet,
                    "frames": s.frames,
                    "decoded": s.stats.decoded,
                    "lost": s.stats.lost,
                    "recovered_fec": s.stats.recovered_fec,
                    "concealed_plc": s.stats.concealed_plc,
                    "silenced": s.stats.silenced,
                    "corrupt": s.stats.corrupt,
                    "end": s.end,
                })
            })
            .collect();
        json!({
            "kind": self.info.kind.name(),
            "speaker": speaker,
            "room": room,
            "listener": listener,
            "sample_rate": self.info.rate,
            "channels": 1,
            "format": self.format,
            "samples": self.samples,
            "duration_s": self.duration_s(),
            "trim": self.trim,
            "conceal": self.conceal.name(),
            "frames": stats(&self.stats),
            "spurts": spurts,
            "speakers": speakers,
        })
    }
}

/// Everything [`VoicePipeline::finish`] knows.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceReport {
    pub tracks: Vec<TrackReport>,
    pub speakers: Vec<SpeakerReport>,
}

/// Capture metadata of one packet.
#[derive(Debug, Clone, Copy)]
pub struct PacketMeta {
    pub number: u64,
    pub ts_ns: i64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

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
    fn secs(&self, pos: u64) -> f64 {
        pos as f64 / self.rate as f64
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

#[derive(Debug, Default)]
struct SpurtData {
    start_pos: u64,
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
    dec: FrameDecoder<S>,
    targets: Vec<usize>,
    /// Next write position while a spurt plays; the end of the last one otherwise.
    pos: u64,
    end_pos: u64,
    in_spurt: bool,
    spurts: Vec<SpurtData>,
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
    /// Highest unwrapped sequence number.
    hi: Option<i64>,
    ring: Vec<DedupSlot>,
    views: Vec<usize>,
    stats: FrameStats,
    corrupt_reported: u32,
}

impl Speaker {
    fn label(&self) -> String {
        format!("{} (session {}, id {})", self.name, self.session, self.id)
    }

    fn unwrap_seq(&mut self, seq: u16) -> i64 {
        let u = match self.hi {
            None => seq as i64,
            Some(h) => h + seq.wrapping_sub(h as u16) as i16 as i64,
        };
        self.hi = Some(self.hi.map_or(u, |h| h.max(u)));
        u
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
        if seq <= self.hi.unwrap_or(seq) - RING as i64 {
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

    fn reset_sequence(&mut self) {
        self.hi = None;
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

/// Most corrupt-frame warnings printed per speaker (every one is counted).
const MAX_CORRUPT_WARNINGS: u32 = 10;

impl<S: Sample> ViewOut<S> {
    fn handle<K: Sink<S>>(&mut self, e: Emit<'_>, ctx: &mut Ctx<'_, S, K>) {
        match e {
            Emit::Start {
                seq,
                start_ns,
                first_number,
            } => {
                self.dec.reset();
                let p = ctx.timeline.pos(start_ns).max(self.end_pos);
                self.pos = p;
                self.in_spurt = true;
                self.stats.spurts += 1;
                let spurt = self.spurts.len();
                self.spurts.push(SpurtData {
                    start_pos: p,
                    first_seq: seq,
                    last_seq: seq,
                    first_packet: first_number,
                    ..SpurtData::default()
                });
                for &t in &self.targets {
                    ctx.tracks[t].mark(
                        p,
                        MarkKey {
                            view: self.id,
                            spurt,
                            end: false,
                        },
                    );
                }
            }
            Emit::Frame {
                seq,
                number,
                audio,
                next,
            } => match self.dec.decode(audio) {
                Ok(()) => {
                    self.count(|s| s.decoded += 1);
                    self.write(ctx);
                }
                Err(msg) => {
                    self.count(|s| s.corrupt += 1);
                    let sp = &mut *ctx.speaker;
                    sp.corrupt_reported += 1;
                    if sp.corrupt_reported <= MAX_CORRUPT_WARNINGS {
                        let more = if sp.corrupt_reported == MAX_CORRUPT_WARNINGS {
                            "; further corrupt frames of this speaker are only counted"
                        } else {
                            ""
                        };
                        ctx.warnings.push_back(Warning {
                            packet: Some(number),
                            message: format!(
                                "{} seq {}: corrupt frame ({msg}), concealed{more}",
                                sp.label(),
                                seq.rem_euclid(65536)
                            ),
                        });
                    }
                    self.conceal(next, ctx);
                }
            },
            Emit::Missing { next, .. } => {
                self.count(|s| s.lost += 1);
                self.conceal(next, ctx);
            }
            Emit::End { reason, last_seq } => {
                if let Some(s) = self.spurts.last_mut() {
                    s.end_pos = self.pos;
                    s.last_seq = last_seq;
                    s.end = Some(reason);
                }
                self.end_pos = self.pos;
                self.in_spurt = false;
                let spurt = self.spurts.len().saturating_sub(1);
                for &t in &self.targets {
                    ctx.tracks[t].mark(
                        self.pos,
                        MarkKey {
                            view: self.id,
                            spurt,
                            end: true,
                        },
                    );
                }
            }
        }
    }

    fn count(&mut self, f: impl Fn(&mut FrameStats)) {
        f(&mut self.stats);
        if let Some(s) = self.spurts.last_mut() {
            f(&mut s.stats);
        }
    }

    fn conceal<K: Sink<S>>(&mut self, next: Option<&[u8]>, ctx: &mut Ctx<'_, S, K>) {
        let opus = self.dec.is_opus();
        if ctx.conceal == Conceal::Fec && opus {
            if let Some(n) = next.filter(|n| opus_has_fec(n)) {
                if self.dec.fec(n).is_ok() {
                    self.count(|s| s.recovered_fec += 1);
                    return self.write(ctx);
                }
            }
        }
        if ctx.conceal != Conceal::Silence && opus && self.dec.plc().is_ok() {
            self.count(|s| s.concealed_plc += 1);
            return self.write(ctx);
        }
        self.dec.silence();
        self.count(|s| s.silenced += 1);
        self.write(ctx);
    }

    /// Writes the decoder's last output at the current position.
    fn write<K: Sink<S>>(&mut self, ctx: &mut Ctx<'_, S, K>) {
        let pcm = self.dec.output();
        for &t in &self.targets {
            ctx.tracks[t].write(self.pos, pcm, ctx.sink);
        }
        self.pos += pcm.len() as u64;
    }

    /// No write of this view will ever land before the returned position.
    fn lower_bound(&self, machine: &StreamMachine, timeline: &Timeline, floor: u64) -> u64 {
        if self.in_spurt {
            return self.pos;
        }
        match machine.pending_since() {
            Some(t) => timeline.pos(t - 2 * stream::REORDER_NS).max(self.end_pos),
            None => floor.max(self.end_pos),
        }
    }
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
        meta: &PacketMeta,
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

    fn flow(&mut self, meta: &PacketMeta) -> u32 {
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
        meta: &PacketMeta,
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
                sp.reset_sequence();
                self.by_key.insert(key, j);
                return j;
            }
        }
        let i = self.new_speaker(meta, v, rec, sink);
        self.by_key.insert(key, i);
        i
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
        meta: &PacketMeta,
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
            hi: None,
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
                        packet: Some(meta.number),
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
                    packet: Some(meta.number),
                    message: format!("{}: {e}; speaker skipped", sp.label()),
                });
                sp.skipped = Some(e);
                self.speakers.push(sp);
                return idx;
            }
        };
        sp.plan = Some(plan);

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
                        packet: Some(meta.number),
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
                    dec,
                    targets,
                    pos: 0,
                    end_pos: 0,
                    in_spurt: false,
                    spurts: Vec::new(),
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
        meta: &PacketMeta,
        v: &VoiceData<'_>,
        tracker: &Tracker,
        sink: &mut impl Sink<S>,
    ) {
        let si = self.speaker_for(meta, v, tracker, sink);
        let flow = self.flow(meta);
        let sp = &mut self.speakers[si];
        sp.stats.packets += 1;
        if !sp.selected || sp.skipped.is_some() || sp.views.is_empty() {
            return;
        }
        let seq = sp.unwrap_seq(v.seq);
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
            number: meta.number,
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
        let tracks = self
            .tracks
            .iter()
            .map(|t| self.track_report(t, &timeline))
            .collect();
        VoiceReport { tracks, speakers }
    }

    fn track_report(&self, t: &Track<S>, timeline: &Timeline) -> TrackReport {
        let mut stats = FrameStats::default();
        let mut spurts = Vec::new();
        let mut speakers: Vec<usize> = Vec::new();
        for &vi in &t.sources {
            let v = &self.views[vi];
            let sp = &self.speakers[v.speaker];
            stats.add(&view_stats(v));
            // Speakers heard on this track (a room view of someone who never spoke into
            // the room does not make them part of it).
            let own = matches!(t.info.kind, TrackKind::Speaker { .. });
            if (own || !v.out.spurts.is_empty()) && !speakers.contains(&v.speaker) {
                speakers.push(v.speaker);
                stats.packets += sp.stats.packets;
                stats.duplicates += sp.stats.duplicates;
                stats.late += sp.stats.late;
            }
            for (k, s) in v.out.spurts.iter().enumerate() {
                let wav = |end: bool| {
                    t.marks
                        .iter()
                        .find(|(m, _)| m.view == vi && m.spurt == k && m.end == end)
                        .map_or(0, |&(_, at)| at)
                };
                spurts.push(SpurtReport {
                    session: sp.session,
                    speaker_id: sp.id,
                    speaker: sp.name.clone(),
                    start_s: timeline.secs(s.start_pos),
                    end_s: timeline.secs(s.end_pos),
                    wav_start_s: timeline.secs(wav(false)),
                    wav_end_s: timeline.secs(wav(true)),
                    first_seq: s.first_seq.rem_euclid(65536) as u16,
                    last_seq: s.last_seq.rem_euclid(65536) as u16,
                    first_packet: s.first_packet,
                    frames: s.stats.frames(),
                    stats: s.stats,
                    end: s.end.map_or("end_of_capture", EndReason::name),
                });
            }
        }
        spurts.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
        TrackReport {
            track: t.id,
            info: t.info.clone(),
            samples: t.wav_len,
            format: S::FORMAT,
            trim: self.cfg.trim,
            conceal: self.cfg.conceal,
            stats,
            spurts,
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

/// Capture payloads in, tracks out: the [`Locator`], the [`Tracker`] and the pipeline.
pub struct VoiceExtractor<S: Sample> {
    pub locator: Locator,
    pub tracker: Tracker,
    pub pipeline: VoicePipeline<S>,
    /// Dissonance packets found, and those that did not decode.
    pub packets: u64,
    pub malformed: u64,
}

impl<S: Sample> VoiceExtractor<S> {
    pub fn new(mode: PayloadMode, cfg: VoiceConfig) -> VoiceExtractor<S> {
        VoiceExtractor {
            locator: Locator::new(mode),
            tracker: Tracker::new(),
            pipeline: VoicePipeline::new(cfg),
            packets: 0,
            malformed: 0,
        }
    }

    /// A capture frame's time (call for every frame, so the timeline starts at the first).
    pub fn frame_time(&mut self, ts_ns: i64, sink: &mut impl Sink<S>) {
        self.pipeline.advance(ts_ns, sink);
    }

    /// One transport payload.
    pub fn push_payload(&mut self, p: &Payload<'_>, sink: &mut impl Sink<S>) {
        let key = FlowKey {
            src: p.src,
            dst: p.dst,
            tcp: p.transport == Transport::Tcp,
        };
        let meta = PacketMeta {
            number: p.frame_number,
            ts_ns: p.ts_ns,
            src: p.src,
            dst: p.dst,
        };
        let VoiceExtractor {
            locator,
            tracker,
            pipeline,
            packets,
            malformed,
        } = self;
        let class = locator.locate(key, p.data, |found| {
            *packets += 1;
            match &found.result {
                Ok(pkt) => {
                    tracker.observe(meta.ts_ns, meta.src, meta.dst, pkt);
                    pipeline.push(&meta, pkt, tracker, sink);
                }
                Err(_) => *malformed += 1,
            }
        });
        if class == Classified::Bye {
            self.tracker.observe_bye(p.ts_ns, p.src);
        }
    }

    pub fn finish(&mut self, sink: &mut impl Sink<S>) -> VoiceReport {
        self.pipeline.finish(&self.tracker, sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::*;

    const T0: i64 = 1_000_000_000_000_000_000;
    const MS: i64 = 1_000_000;
    const S: u32 = 1;
    /// Identity codec, 10 ms frames at 48 kHz: samples come out exactly as sent.
    const RAW: CodecSettings = CodecSettings {
        codec_byte: 0,
        frame_size: 480,
        sample_rate: 48000,
    };

    fn server() -> SocketAddr {
        "10.0.0.1:7000".parse().unwrap()
    }
    fn addr(id: u16) -> SocketAddr {
        format!("10.0.1.{}:5000", id + 1).parse().unwrap()
    }

    /// A tracker and a pipeline fed with packets built on the fly.
    struct Sim {
        tracker: Tracker,
        p: VoicePipeline<i16>,
        sink: MemorySink<i16>,
        n: u64,
    }

    impl Sim {
        fn new(cfg: VoiceConfig) -> Sim {
            let mut s = Sim {
                tracker: Tracker::new(),
                p: VoicePipeline::new(cfg),
                sink: MemorySink::default(),
                n: 0,
            };
            s.p.advance(T0, &mut s.sink);
            s
        }
        fn send(&mut self, ts: i64, src: SocketAddr, dst: SocketAddr, m: Message<'_>) {
            let bytes = m.to_vec(Variant::Modern, 8192).unwrap();
            let pkt = Packet::decode(&bytes).unwrap();
            self.n += 1;
            self.tracker.observe(T0 + ts, src, dst, &pkt);
            let meta = PacketMeta {
                number: self.n,
                ts_ns: T0 + ts,
                src,
                dst,
            };
            self.p.push(&meta, &pkt, &self.tracker, &mut self.sink);
        }
        fn state(&mut self, ts: i64, id: u16, name: &str, rooms: &[&str]) {
            let rooms: Vec<WireStr<'_>> = rooms.iter().map(|r| WireStr::new(r)).collect();
            let m = Message::ClientState(ClientState {
                session: S,
                name: WireStr::new(name),
                client_id: id,
                codec: RAW,
                rooms: Seq::Items(&rooms),
                rooms_encoding: RoomsEncoding::List,
            });
            self.send(ts, addr(id), server(), m);
        }
        /// Frame `seq` of `id`, every sample `value`.
        fn voice(&mut self, ts: i64, id: u16, seq: u16, chans: &[Channel], value: i16) {
            let pcm: Vec<u8> = (0..480)
                .flat_map(|_| (value as f32 / 32768.0).to_le_bytes())
                .collect();
            let m = Message::VoiceData(VoiceData {
                session: S,
                sender: id,
                options: PacketOptions::extended(0),
                seq,
                channels: Seq::Items(chans),
                audio: &pcm,
            });
            self.send(ts, addr(id), server(), m);
        }
        fn finish(&mut self) -> VoiceReport {
            self.p.finish(&self.tracker, &mut self.sink)
        }
        fn track(&self, stem: &str) -> Vec<i16> {
            self.sink
                .find(stem)
                .unwrap_or_else(|| panic!("no {stem}"))
                .to_vec()
        }
    }

    /// Compares two tracks as runs of equal samples (readable when they differ).
    fn runs(s: &[i16]) -> Vec<(i16, usize)> {
        let mut r: Vec<(i16, usize)> = Vec::new();
        for &x in s {
            match r.last_mut() {
                Some((v, n)) if *v == x => *n += 1,
                _ => r.push((x, 1)),
            }
        }
        r
    }

    #[track_caller]
    fn same(got: &[i16], want: &[i16]) {
        assert_eq!(runs(got), runs(want));
    }

    fn room(name: &str, closing: bool) -> Channel {
        Channel {
            bitfield: ChannelBitfield::new(
                ChannelType::Room,
                false,
                closing,
                Priority::Default,
                0,
                1.0,
            ),
            recipient: room_id(name),
        }
    }
    fn player(id: u16, closing: bool) -> Channel {
        Channel {
            bitfield: ChannelBitfield::new(
                ChannelType::Player,
                false,
                closing,
                Priority::Default,
                0,
                1.0,
            ),
            recipient: id,
        }
    }

    /// `frames` frames of 480 samples with values v, v+100, ... at sample `at`.
    fn put(out: &mut [i16], at: usize, v: i16, frames: usize) {
        for k in 0..frames {
            out[at + k * 480..at + (k + 1) * 480].fill(v + 100 * k as i16);
        }
    }

    #[test]
    fn listeners_hear_their_rooms_at_the_time_and_their_player_channels() {
        let mut sim = Sim::new(VoiceConfig {
            rooms: vec!["Global".into()],
            listeners: vec!["alice".into(), "bob".into()],
            ..VoiceConfig::default()
        });
        sim.state(0, 0, "alice", &["Global"]);
        sim.state(0, 1, "bob", &["Global", "Red"]);
        sim.state(0, 2, "carol", &["Red"]);
        // alice into Global, 10 frames from 1 s; bob stops listening after 5 of them.
        for k in 0..10u16 {
            if k == 5 {
                let d = DeltaChannelState::new(S, false, 1, "Global");
                sim.send(
                    1000 * MS + 45 * MS,
                    addr(1),
                    server(),
                    Message::DeltaChannelState(d),
                );
            }
            let ts = 1000 * MS + k as i64 * 10 * MS;
            sim.voice(ts, 0, k, &[room("Global", k == 9)], 100 + 100 * k as i16);
        }
        // carol to bob on a player channel and into Red, 5 frames from 2 s.
        for k in 0..5u16 {
            let ts = 2000 * MS + k as i64 * 10 * MS;
            let chans = [player(1, k == 4), room("Red", k == 4)];
            sim.voice(ts, 2, k, &chans, 5000 + 100 * k as i16);
        }
        let report = sim.finish();
        let len = 2050 * 48; // the end of carol's last frame
        let mut alice = vec![0i16; len];
        put(&mut alice, 48000, 100, 10);
        let mut carol = vec![0i16; len];
        put(&mut carol, 96000, 5000, 5);
        let mut bob_heard = vec![0i16; len];
        put(&mut bob_heard, 48000, 100, 5);
        put(&mut bob_heard, 96000, 5000, 5);
        same(&sim.track("1-0-alice"), &alice);
        same(&sim.track("1-2-carol"), &carol);
        same(&sim.track("room-Global"), &alice);
        same(&sim.track("listener-bob"), &bob_heard);
        assert_eq!(sim.track("listener-alice"), vec![0i16; len]);

        let bob = report
            .tracks
            .iter()
            .find(|t| t.info.stem == "listener-bob")
            .unwrap();
        let ends: Vec<(&str, &str, u64)> = bob
            .spurts
            .iter()
            .map(|s| (s.speaker.as_str(), s.end, s.frames))
            .collect();
        assert_eq!(ends, [("alice", "no_channel", 5), ("carol", "closing", 5)]);
        assert_eq!(bob.stats.decoded, 10);
        // alice's last 5 frames: the first ended the stream, the others started nothing.
        assert_eq!(bob.stats.discarded, 5);
        assert_eq!(bob.speakers.len(), 2);
    }

    #[test]
    fn a_reused_id_is_another_speaker_and_a_rejoin_restarts_sequences() {
        let mut sim = Sim::new(VoiceConfig::default());
        sim.state(0, 0, "alice", &["Global"]);
        for k in 0..3u16 {
            sim.voice(
                100 * MS + k as i64 * 10 * MS,
                0,
                k,
                &[room("Global", k == 2)],
                1000,
            );
        }
        sim.send(
            500 * MS,
            server(),
            addr(0),
            Message::RemoveClient(RemoveClient {
                session: S,
                client_id: 0,
            }),
        );
        sim.state(600 * MS, 0, "carol", &["Global"]);
        for k in 0..3u16 {
            sim.voice(
                700 * MS + k as i64 * 10 * MS,
                0,
                k,
                &[room("Global", k == 2)],
                2000,
            );
        }
        sim.send(
            800 * MS,
            server(),
            addr(0),
            Message::RemoveClient(RemoveClient {
                session: S,
                client_id: 0,
            }),
        );
        sim.state(900 * MS, 0, "alice", &["Global"]);
        for k in 0..3u16 {
            sim.voice(
                1000 * MS + k as i64 * 10 * MS,
                0,
                k,
                &[room("Global", k == 2)],
                3000,
            );
        }
        let report = sim.finish();
        let len = 1030 * 48;
        let mut alice = vec![0i16; len];
        alice[4800..4800 + 1440].fill(1000);
        alice[48000..48000 + 1440].fill(3000);
        let mut carol = vec![0i16; len];
        carol[33600..33600 + 1440].fill(2000);
        same(&sim.track("1-0-alice"), &alice);
        same(&sim.track("1-0-carol"), &carol);
        assert_eq!(report.speakers.len(), 2);
        assert_eq!(report.speakers[0].stats.decoded, 6);
        assert_eq!(report.speakers[0].stats.duplicates, 0);
    }

    #[test]
    fn identity_resampled_and_lost_frames_silenced() {
        let mut sim = Sim::new(VoiceConfig {
            trim: true,
            ..VoiceConfig::default()
        });
        let m = Message::ClientState(ClientState {
            session: S,
            name: WireStr::new("bot"),
            client_id: 0,
            codec: CodecSettings::new(Codec::Identity, 441, 44100),
            rooms: Seq::Items(&[]),
            rooms_encoding: RoomsEncoding::List,
        });
        sim.send(0, addr(0), server(), m);
        for k in [0u16, 1, 3] {
            let pcm: Vec<u8> = (0..441).flat_map(|_| 0.25f32.to_le_bytes()).collect();
            let v = Message::VoiceData(VoiceData {
                session: S,
                sender: 0,
                options: PacketOptions::extended(0),
                seq: k,
                channels: Seq::Items(&[room("Global", k == 3)]),
                audio: &pcm,
            });
            sim.send(k as i64 * 10 * MS, addr(0), server(), v);
        }
        let r = sim.finish();
        let mut want = vec![8192i16; 4 * 480];
        want[960..1440].fill(0);
        same(&sim.track("1-0-bot"), &want);
        let s = r.tracks[0].stats;
        assert_eq!(
            (s.decoded, s.lost, s.silenced, s.concealed_plc),
            (3, 1, 1, 0)
        );
    }

    #[test]
    fn mixed_tracks_keep_a_few_seconds_in_memory() {
        let mut sim = Sim::new(VoiceConfig {
            mix: true,
            per_speaker: false,
            ..VoiceConfig::default()
        });
        sim.state(0, 0, "alice", &["Global"]);
        sim.state(0, 1, "bob", &["Global"]);
        let mix = sim.p.mix.unwrap();
        let mut worst = 0;
        let mut seq = [0u16; 2];
        // Two minutes: alice and bob take turns of 3 s, overlapping by half a second.
        for k in 0..12_000i64 {
            let ts = 1000 * MS + k * 10 * MS;
            let turn = (k / 250) as usize;
            for who in 0..2u16 {
                let mine = turn % 2 == who as usize;
                let overlap = k % 250 >= 200 && !mine;
                if mine || overlap {
                    let last = k % 250 == 249;
                    let s = &mut seq[who as usize];
                    sim.voice(ts, who, *s, &[room("Global", last)], 10 + who as i16);
                    *s = s.wrapping_add(1);
                }
            }
            worst = worst.max(sim.p.tracks[mix].buffered());
        }
        let report = sim.finish();
        assert!(worst <= 4 * 48000, "{worst} samples buffered");
        let m = sim.track("mix");
        assert_eq!(report.tracks[mix].stats.lost, 0);
        // Overlaps add up, nothing is dropped.
        assert_eq!(sim.p.tracks[mix].dropped, 0);
        assert_eq!(m[48000 + 100], 10);
        assert_eq!(m[48000 + 48 * 2100], 21);
    }

    #[test]
    fn file_names_are_made_safe() {
        assert_eq!(safe_file_name("Red Team"), "Red_Team");
        assert_eq!(safe_file_name("../etc/passwd"), "_._etc_passwd");
        assert_eq!(safe_file_name(".hidden"), "_hidden");
        assert_eq!(safe_file_name("a:b*c?d\"e<f>g|h\\i"), "a_b_c_d_e_f_g_h_i");
        assert_eq!(safe_file_name(""), "_");
        assert_eq!(safe_file_name("Zoë_日本"), "Zoë_日本");
        assert_eq!(safe_file_name(&"x".repeat(100)).len(), 64);
    }
}
