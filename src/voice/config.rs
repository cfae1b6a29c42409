//! What the voice pipeline is asked to do: concealment, views, tracks.

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
