//! The voice pipeline on arbitrary packet sequences: no panic, and the books balance
//! (every frame written is decoded or concealed; a trimmed track holds exactly its frames).

use std::net::SocketAddr;

use dissonance_tools::capture::{Payload, Transport};
use dissonance_tools::codec::*;
use dissonance_tools::dissect::session::Tracker;
use dissonance_tools::voice::{MemorySink, VoiceConfig, VoicePipeline};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct P {
    /// Milliseconds since the previous packet (may go backwards).
    dt: i16,
    sender: u16,
    seq_step: i8,
    options: u8,
    closing: bool,
    room: bool,
    flow: u8,
    /// None: a real Opus frame; Some: arbitrary bytes.
    audio: Option<Vec<u8>>,
}

fn packet() -> impl Strategy<Value = P> {
    (
        -50i16..1700,
        0u16..3,
        -3i8..6,
        prop_oneof![Just(0x80u8), Just(0x81), any::<u8>()],
        prop::bool::weighted(0.1),
        any::<bool>(),
        0u8..3,
        prop::option::weighted(0.1, prop::collection::vec(any::<u8>(), 0..40)),
    )
        .prop_map(
            |(dt, sender, seq_step, options, closing, room, flow, audio)| P {
                dt,
                sender,
                seq_step,
                options,
                closing,
                room,
                flow,
                audio,
            },
        )
}

/// One real 20 ms Opus frame (silence encoded by libopus 1.3: a CELT frame).
const OPUS: [u8; 3] = [0xF8, 0xFF, 0xFE];

fn addr(i: u8) -> SocketAddr {
    format!("10.0.0.{}:5000", i + 2).parse().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_voice_traffic(packets in prop::collection::vec(packet(), 1..300), mix in any::<bool>()) {
        let mut tracker = Tracker::new();
        let cfg = VoiceConfig {
            trim: true,
            mix,
            per_speaker: true,
            rooms: vec!["Global".into()],
            listeners: vec!["c1".into()],
            ..VoiceConfig::default()
        };
        let mut p = VoicePipeline::<i16>::new(cfg);
        let mut sink = MemorySink::default();
        let server: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let mut ts = 1_000_000_000_000_000_000i64;
        // Clients 0 and 1 are known (Opus, 20 ms), client 2 is not (TOC inference).
        for id in 0..2u16 {
            let name = format!("c{id}");
            let rooms = [WireStr::new("Global")];
            let m = Message::ClientState(ClientState {
                session: 1,
                name: WireStr::new(&name),
                client_id: id,
                codec: CodecSettings::OPUS_48K_20MS,
                rooms: Seq::Items(&rooms),
                rooms_encoding: RoomsEncoding::List,
            });
            let bytes = m.to_vec(Variant::Modern, 1024).unwrap();
            let pkt = Packet::decode(&bytes).unwrap();
            tracker.observe(ts, addr(id as u8), server, &pkt);
        }
        let mut seqs = [0u16; 3];
        for (n, q) in packets.iter().enumerate() {
            ts += q.dt as i64 * 1_000_000;
            let s = &mut seqs[q.sender as usize];
            *s = s.wrapping_add(q.seq_step as u16);
            let chan = Channel {
                bitfield: ChannelBitfield::new(
                    if q.room { ChannelType::Room } else { ChannelType::Player },
                    false, q.closing, Priority::Default, 0, 1.0),
                recipient: if q.room { room_id("Global") } else { 1 },
            };
            let chans = [chan];
            let audio = q.audio.clone().unwrap_or(OPUS.to_vec());
            let m = Message::VoiceData(VoiceData {
                session: 1,
                sender: q.sender,
                options: PacketOptions(q.options),
                seq: *s,
                channels: Seq::Items(&chans),
                audio: &audio,
            });
            let bytes = m.to_vec(Variant::Modern, 1024).unwrap();
            let pkt = Packet::decode(&bytes).unwrap();
            let meta = Payload {
                frame_number: n as u64 + 1,
                ts_ns: ts,
                src: addr(q.flow),
                dst: server,
                transport: Transport::Udp,
                data: &bytes,
                truncated: false,
            };
            tracker.observe(ts, meta.src, meta.dst, &pkt);
            p.push(&meta, &pkt, &tracker, &mut sink);
            while p.poll_warning().is_some() {}
        }
        let report = p.finish(&tracker, &mut sink);
        for t in &report.tracks {
            let s = &t.stats;
            let samples = sink.samples(t.track).len() as u64;
            prop_assert_eq!(samples, t.samples);
            // A speaker's frames are back to back (mixes overlap); an unknown client's
            // frame duration comes from its first packet's TOC byte.
            if t.info.kind.name() == "speaker" {
                let frame = t
                    .speakers
                    .first()
                    .and_then(|&i| report.speakers[i].plan)
                    .map_or(0, |p| p.out_frame as u64);
                prop_assert_eq!(samples, s.frames() * frame, "{:?}", t.info);
            }
            prop_assert_eq!(s.frames(), s.decoded + s.lost + s.corrupt);
            let spurts = sink.spurts(t.track);
            prop_assert_eq!(spurts.len() as u64, t.spurts);
            let per_spurt: u64 = spurts.iter().map(|x| x.frames).sum();
            prop_assert_eq!(per_spurt, s.frames());
        }
    }
}
