//! What the voice pipeline tells at the end: per speaker, track and spurt, with warnings.

use super::{CodecPlan, Conceal, TrackInfo, TrackKind};

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
    /// Packets whose sequence number jumped far ahead and that nothing followed: stray or
    /// forged copies, dropped (see `voice::seq`).
    pub outliers: u64,
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
        self.outliers += o.outliers;
    }
    /// Frames written: decoded plus concealed.
    pub fn frames(&self) -> u64 {
        self.decoded + self.recovered_fec + self.concealed_plc + self.silenced
    }
}

/// One talk spurt as written to one track. The pipeline hands each to the [`Sink`](super::Sink)
/// when it is complete (its end placed in the WAV), so no run keeps a list of them: a long
/// capture has millions.
#[derive(Debug, Clone, PartialEq)]
pub struct SpurtReport {
    pub session: u32,
    pub speaker_id: u16,
    /// Index into [`VoiceReport::speakers`] (whose name may be learnt only at the end).
    pub speaker: usize,
    /// The spurt's start as capture time, Unix ns.
    pub ts_ns: i64,
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

impl SpurtReport {
    /// The spurt's object in a sidecar's `spurts` array.
    pub fn to_json(&self, all: &[SpeakerReport]) -> serde_json::Value {
        serde_json::json!({
            "session": self.session,
            "speaker_id": self.speaker_id,
            "speaker": all.get(self.speaker).map_or("unknown", |s| s.name.as_str()),
            // A point in time is `ts`/`rel`, a length `*_s` (docs/json-schema.md).
            "ts": crate::output::json::secs_f64(self.ts_ns),
            "rel": self.start_s,
            "duration_s": self.end_s - self.start_s,
            "wav_offset_s": self.wav_start_s,
            "wav_duration_s": self.wav_end_s - self.wav_start_s,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "first_packet": self.first_packet,
            "frames": self.frames,
            "decoded": self.stats.decoded,
            "lost": self.stats.lost,
            "recovered_fec": self.stats.recovered_fec,
            "concealed_plc": self.stats.concealed_plc,
            "silenced": self.stats.silenced,
            "corrupt": self.stats.corrupt,
            "end": self.end,
        })
    }
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
    /// Talk spurts on this track (each went to the sink as a [`SpurtReport`]).
    pub spurts: u64,
    /// Their total length on the timeline, in samples.
    pub speech_samples: u64,
    /// Indices into [`VoiceReport::speakers`] of the speakers heard on this track.
    pub speakers: Vec<usize>,
}

impl TrackReport {
    pub fn duration_s(&self) -> f64 {
        self.samples as f64 / self.info.rate as f64
    }

    pub fn speech_s(&self) -> f64 {
        self.speech_samples as f64 / self.info.rate as f64
    }

    /// The sidecar JSON object, with an empty `spurts` array: the sink that kept the
    /// spurts fills it in ([`SpurtReport::to_json`]).
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
                "outliers": s.outliers,
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
                        "frame_duration_s": p.frame_size as f64 / p.sample_rate as f64,
                        "source": p.source.name(),
                    })
                });
                json!({"session": s.session, "id": s.id, "name": s.name, "codec": codec})
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
            "spurts": [],
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
