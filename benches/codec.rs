//! Decode and encode cost of one realistic instance of every message type, VoiceData
//! (the per-frame hot path: one packet per speaker every 20 ms) first.
//!
//! Run with `cargo bench --bench codec`; add `-- --warm-up-time 1 --measurement-time 2`
//! for a quick run.

// Not criterion's black_box: without its `real_blackbox` feature that one reads the
// returned value byte by byte (volatile), which for a ~100-byte Result<Packet> costs
// more than some of the decodes measured. So each routine returns `()`.
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use dissonance_tools::codec::{
    room_id, Channel, ChannelBitfield, ChannelType, ClientInfo, ClientState, CodecSettings,
    DeltaChannelState, ErrorWrongSession, HandshakeP2P, HandshakeRequest, HandshakeResponse,
    Message, Packet, PacketOptions, Priority, RemoveClient, RoomEntry, RoomsEncoding, Seq,
    ServerRelay, TextData, Variant, VoiceData, WireStr,
};

const OPUS_FRAME: [u8; 60] = {
    let mut f = [0u8; 60];
    let mut i = 0;
    while i < 60 {
        f[i] = (i as u8).wrapping_mul(37) ^ 0x5A;
        i += 1;
    }
    f
};

/// Talking to the "Global" room and privately to player 5.
fn voice_channels() -> [Channel; 2] {
    [
        Channel {
            bitfield: ChannelBitfield::new(
                ChannelType::Room,
                false,
                false,
                Priority::Default,
                1,
                1.0,
            ),
            recipient: room_id("Global"),
        },
        Channel {
            bitfield: ChannelBitfield::new(
                ChannelType::Player,
                true,
                false,
                Priority::High,
                1,
                0.8,
            ),
            recipient: 5,
        },
    ]
}

fn voice(channels: &[Channel]) -> Message<'_> {
    Message::VoiceData(VoiceData {
        session: 0x1234_5678,
        sender: 3,
        options: PacketOptions::extended(17),
        seq: 4711,
        channels: Seq::Items(channels),
        audio: &OPUS_FRAME,
    })
}

fn benches(c: &mut Criterion) {
    let channels = voice_channels();
    let voice_bytes = voice(&channels).to_vec(Variant::Modern, 1024).unwrap();

    let rooms = [WireStr::new("Global"), WireStr::new("Red Team")];
    let clients = [
        ClientInfo {
            name: WireStr::new("alice"),
            id: 1,
            codec: CodecSettings::OPUS_48K_20MS,
        },
        ClientInfo {
            name: WireStr::new("bob"),
            id: 2,
            codec: CodecSettings::OPUS_48K_20MS,
        },
        ClientInfo {
            name: WireStr::new("carol"),
            id: 3,
            codec: CodecSettings::OPUS_48K_20MS,
        },
    ];
    let global_peers = [1u16, 2, 3];
    let red_peers = [2u16];
    let entries = [
        RoomEntry {
            room_id: room_id("Global"),
            peers: Seq::Items(&global_peers),
        },
        RoomEntry {
            room_id: room_id("Red Team"),
            peers: Seq::Items(&red_peers),
        },
    ];
    let destinations = [1u16, 2, 5];
    let relay = |reliable: bool| {
        let r = ServerRelay {
            session: 0x1234_5678,
            destinations: Seq::Items(&destinations),
            payload: &voice_bytes,
        };
        if reliable {
            Message::ServerRelayReliable(r)
        } else {
            Message::ServerRelayUnreliable(r)
        }
    };

    let cases: Vec<(&str, Message)> = vec![
        (
            "VoiceData 2 channels + 60-byte Opus frame",
            voice(&channels),
        ),
        (
            "ClientState 2 rooms",
            Message::ClientState(ClientState {
                session: 0x1234_5678,
                name: WireStr::new("alice"),
                client_id: 3,
                codec: CodecSettings::OPUS_48K_20MS,
                rooms: Seq::Items(&rooms),
                rooms_encoding: RoomsEncoding::List,
            }),
        ),
        (
            "TextData to a room",
            Message::TextData(TextData {
                session: 0x1234_5678,
                recipient_type_byte: ChannelType::Room.text_byte(),
                sender: 3,
                target: room_id("Global"),
                text: WireStr::new("hello everyone, can you hear me?"),
            }),
        ),
        (
            "HandshakeRequest",
            Message::HandshakeRequest(HandshakeRequest {
                codec: CodecSettings::OPUS_48K_20MS,
                name: WireStr::new("alice"),
            }),
        ),
        (
            "HandshakeResponse modern",
            Message::HandshakeResponse(HandshakeResponse::modern(0x1234_5678, 3)),
        ),
        (
            "HandshakeResponse legacy 3 clients 2 rooms",
            Message::HandshakeResponse(HandshakeResponse {
                session: 0x1234_5678,
                client_id: 3,
                clients: Seq::Items(&clients),
                room_names: Seq::Items(&rooms),
                room_entries: Seq::Items(&entries),
            }),
        ),
        (
            "ErrorWrongSession",
            Message::ErrorWrongSession(ErrorWrongSession {
                session: 0x1234_5678,
            }),
        ),
        (
            "ServerRelayReliable 3 destinations + VoiceData",
            relay(true),
        ),
        (
            "ServerRelayUnreliable 3 destinations + VoiceData",
            relay(false),
        ),
        (
            "DeltaChannelState",
            Message::DeltaChannelState(DeltaChannelState::new(0x1234_5678, true, 3, "Red Team")),
        ),
        (
            "RemoveClient",
            Message::RemoveClient(RemoveClient {
                session: 0x1234_5678,
                client_id: 3,
            }),
        ),
        (
            "HandshakeP2P",
            Message::HandshakeP2P(HandshakeP2P {
                session: 0x1234_5678,
                peer_id: 3,
            }),
        ),
    ];

    let mut decode = c.benchmark_group("decode");
    for (name, m) in &cases {
        let bytes = m.to_vec(Variant::Modern, 1024).unwrap();
        decode.bench_function(*name, |b| {
            b.iter(|| {
                let _ = black_box(Packet::decode(black_box(&bytes)));
            })
        });
    }
    decode.finish();

    let mut encode = c.benchmark_group("encode");
    for (name, m) in &cases {
        // One buffer for every packet, as a real sender reuses its send buffer.
        let mut buf = [0u8; 1024];
        encode.bench_function(*name, |b| {
            b.iter(|| {
                let _ = black_box(black_box(m).encode(Variant::Modern, black_box(&mut buf)));
            })
        });
    }
    encode.finish();

    // The 6.0.x byte order swaps every u16: check it costs the same.
    let legacy = voice(&channels).to_vec(Variant::Legacy60, 1024).unwrap();
    c.bench_function("decode/VoiceData legacy 6.0", |b| {
        b.iter(|| {
            let _ = black_box(Packet::decode(black_box(&legacy)));
        })
    });
}

criterion_group!(codec, benches);
criterion_main!(codec);
