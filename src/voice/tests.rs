use super::*;
use crate::capture::Transport;
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
        let meta = Payload {
            frame_number: self.n,
            ts_ns: T0 + ts,
            src,
            dst,
            transport: Transport::Udp,
            data: &[],
            truncated: false,
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
    let ends: Vec<(&str, &str, u64)> = sim
        .sink
        .spurts(bob.track)
        .iter()
        .map(|s| (report.speakers[s.speaker].name.as_str(), s.end, s.frames))
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
