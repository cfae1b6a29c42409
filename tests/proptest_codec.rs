//! Property tests of the codec: every message of every type round-trips in both byte
//! orders, and no input (random, random after a valid header, truncated or mutated
//! valid packets) makes decoding panic.
//!
//! Messages borrow their strings and lists, so the strategies generate an owned
//! [`Owned`] and [`with_message`] builds the borrowed `Message` from it.

mod common;

use common::{check_bytes, check_error, BIG};
use dissonance_tools::codec::{
    room_id, Channel, ChannelBitfield, ClientInfo, ClientState, CodecSettings, DecodeErrorKind,
    DeltaChannelState, EncodeError, ErrorWrongSession, HandshakeP2P, HandshakeRequest,
    HandshakeResponse, Message, MessageType, Packet, RemoveClient, RoomEntry, RoomsEncoding, Seq,
    ServerRelay, TextData, Variant, VoiceData, WireStr,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

type Bytes = Vec<u8>;

/// A relay payload: arbitrary bytes, or a whole packet (so relays nest).
#[derive(Debug, Clone)]
enum Payload {
    Raw(Bytes),
    Packet(Box<Owned>, Variant),
}

/// The owned data of one message; strings are bytes (not always valid UTF-8: the codec
/// keeps them as they are), `None` is the null string.
#[derive(Debug, Clone)]
enum Owned {
    ClientState {
        session: u32,
        name: Bytes,
        client_id: u16,
        codec: CodecSettings,
        rooms: Vec<Option<Bytes>>,
    },
    VoiceData {
        session: u32,
        sender: u16,
        options: u8,
        seq: u16,
        channels: Vec<Channel>,
        audio: Bytes,
    },
    TextData {
        session: u32,
        recipient_type_byte: u8,
        sender: u16,
        target: u16,
        text: Option<Bytes>,
    },
    HandshakeRequest {
        codec: CodecSettings,
        name: Option<Bytes>,
    },
    HandshakeResponse {
        session: u32,
        client_id: u16,
        clients: Vec<(Option<Bytes>, u16, CodecSettings)>,
        room_names: Vec<Option<Bytes>>,
        /// Room id and peers; every id is that of a non-null name in `room_names`.
        room_entries: Vec<(u16, Vec<u16>)>,
    },
    ErrorWrongSession {
        session: u32,
    },
    Relay {
        reliable: bool,
        session: u32,
        destinations: Vec<u16>,
        payload: Payload,
    },
    DeltaChannelState {
        session: u32,
        joined_raw: u8,
        peer: u16,
        name: Bytes,
    },
    RemoveClient {
        session: u32,
        client_id: u16,
    },
    HandshakeP2P {
        session: u32,
        peer_id: u16,
    },
}

/// Builds the borrowed message for `o` and hands it to `f`.
fn with_message<R>(o: &Owned, f: impl FnOnce(&Message<'_>) -> R) -> R {
    fn ws(s: &Option<Bytes>) -> WireStr<'_> {
        WireStr(s.as_deref())
    }
    match o {
        Owned::ClientState {
            session,
            name,
            client_id,
            codec,
            rooms,
        } => {
            let rooms: Vec<WireStr> = rooms.iter().map(ws).collect();
            f(&Message::ClientState(ClientState {
                session: *session,
                name: WireStr(Some(name)),
                client_id: *client_id,
                codec: *codec,
                rooms: Seq::Items(&rooms),
                rooms_encoding: RoomsEncoding::List,
            }))
        }
        Owned::VoiceData {
            session,
            sender,
            options,
            seq,
            channels,
            audio,
        } => f(&Message::VoiceData(VoiceData {
            session: *session,
            sender: *sender,
            options: dissonance_tools::codec::PacketOptions(*options),
            seq: *seq,
            channels: Seq::Items(channels),
            audio,
        })),
        Owned::TextData {
            session,
            recipient_type_byte,
            sender,
            target,
            text,
        } => f(&Message::TextData(TextData {
            session: *session,
            recipient_type_byte: *recipient_type_byte,
            sender: *sender,
            target: *target,
            text: ws(text),
        })),
        Owned::HandshakeRequest { codec, name } => {
            f(&Message::HandshakeRequest(HandshakeRequest {
                codec: *codec,
                name: ws(name),
            }))
        }
        Owned::HandshakeResponse {
            session,
            client_id,
            clients,
            room_names,
            room_entries,
        } => {
            let clients: Vec<ClientInfo> = clients
                .iter()
                .map(|(name, id, codec)| ClientInfo {
                    name: ws(name),
                    id: *id,
                    codec: *codec,
                })
                .collect();
            let room_names: Vec<WireStr> = room_names.iter().map(ws).collect();
            let room_entries: Vec<RoomEntry> = room_entries
                .iter()
                .map(|(room_id, peers)| RoomEntry {
                    room_id: *room_id,
                    peers: Seq::Items(peers),
                })
                .collect();
            f(&Message::HandshakeResponse(HandshakeResponse {
                session: *session,
                client_id: *client_id,
                clients: Seq::Items(&clients),
                room_names: Seq::Items(&room_names),
                room_entries: Seq::Items(&room_entries),
            }))
        }
        Owned::ErrorWrongSession { session } => f(&Message::ErrorWrongSession(ErrorWrongSession {
            session: *session,
        })),
        Owned::Relay {
            reliable,
            session,
            destinations,
            payload,
        } => {
            let payload = match payload {
                Payload::Raw(b) => b.clone(),
                Payload::Packet(inner, variant) => encode(inner, *variant),
            };
            let relay = ServerRelay {
                session: *session,
                destinations: Seq::Items(destinations),
                payload: &payload,
            };
            f(&if *reliable {
                Message::ServerRelayReliable(relay)
            } else {
                Message::ServerRelayUnreliable(relay)
            })
        }
        Owned::DeltaChannelState {
            session,
            joined_raw,
            peer,
            name,
        } => f(&Message::DeltaChannelState(DeltaChannelState {
            session: *session,
            joined_raw: *joined_raw,
            peer: *peer,
            name: WireStr(Some(name)),
        })),
        Owned::RemoveClient { session, client_id } => f(&Message::RemoveClient(RemoveClient {
            session: *session,
            client_id: *client_id,
        })),
        Owned::HandshakeP2P { session, peer_id } => f(&Message::HandshakeP2P(HandshakeP2P {
            session: *session,
            peer_id: *peer_id,
        })),
    }
}

fn encode(o: &Owned, variant: Variant) -> Bytes {
    with_message(o, |m| {
        m.to_vec(variant, BIG).expect("encode a valid message")
    })
}

fn variant() -> impl Strategy<Value = Variant> {
    prop_oneof![Just(Variant::Modern), Just(Variant::Legacy60)]
}

/// Mostly short text, sometimes raw (often invalid UTF-8) bytes, rarely a long string.
fn text() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        6 => ".{0,12}".prop_map(String::into_bytes),
        3 => vec(any::<u8>(), 0..12),
        1 => vec(any::<u8>(), 200..1500),
    ]
}

fn opt_text() -> impl Strategy<Value = Option<Bytes>> {
    prop::option::weighted(0.85, text())
}

fn codec() -> impl Strategy<Value = CodecSettings> {
    prop_oneof![
        Just(CodecSettings::OPUS_48K_20MS),
        (any::<u8>(), any::<u32>(), any::<u32>()).prop_map(
            |(codec_byte, frame_size, sample_rate)| {
                CodecSettings {
                    codec_byte,
                    frame_size,
                    sample_rate,
                }
            }
        ),
    ]
}

/// Up to `max` ids, sometimes right at the limit of a u8 count.
fn ids(max: usize) -> impl Strategy<Value = Vec<u16>> {
    prop_oneof![
        8 => vec(any::<u16>(), 0..6),
        1 => vec(any::<u16>(), max - 3..=max),
    ]
}

fn channel() -> impl Strategy<Value = Channel> {
    // Bit 7 is the one bit a real bitfield never has; the encoder refuses it.
    (any::<u16>(), any::<u16>()).prop_map(|(b, recipient)| Channel {
        bitfield: ChannelBitfield(b & !0x0080),
        recipient,
    })
}

fn response() -> impl Strategy<Value = Owned> {
    (
        any::<u32>(),
        any::<u16>(),
        vec((opt_text(), any::<u16>(), codec()), 0..4),
        vec(opt_text(), 0..5),
        vec((any::<Index>(), ids(255)), 0..5),
    )
        .prop_map(|(session, client_id, clients, room_names, raw_entries)| {
            // The reader refuses an entry whose id no non-null name hashes to; it
            // hashes the name as the real (lossy UTF-8) reader sees it.
            let known: Vec<u16> = room_names
                .iter()
                .flatten()
                .map(|n| room_id(&String::from_utf8_lossy(n)))
                .collect();
            let room_entries = if known.is_empty() {
                Vec::new()
            } else {
                raw_entries
                    .into_iter()
                    .map(|(i, peers)| (*i.get(&known), peers))
                    .collect()
            };
            Owned::HandshakeResponse {
                session,
                client_id,
                clients,
                room_names,
                room_entries,
            }
        })
}

/// Every type, relays with a raw payload.
fn leaf() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (
            any::<u32>(),
            text(),
            any::<u16>(),
            codec(),
            vec(opt_text(), 0..6)
        )
            .prop_map(
                |(session, name, client_id, codec, rooms)| Owned::ClientState {
                    session,
                    name,
                    client_id,
                    codec,
                    rooms,
                }
            ),
        (
            any::<u32>(),
            any::<u16>(),
            any::<u8>(),
            any::<u16>(),
            vec(channel(), 0..6),
            vec(any::<u8>(), 0..200),
        )
            .prop_map(|(session, sender, options, seq, channels, audio)| {
                Owned::VoiceData {
                    session,
                    sender,
                    options,
                    seq,
                    channels,
                    audio,
                }
            }),
        (
            any::<u32>(),
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            opt_text()
        )
            .prop_map(|(session, recipient_type_byte, sender, target, text)| {
                Owned::TextData {
                    session,
                    recipient_type_byte,
                    sender,
                    target,
                    text,
                }
            }),
        (codec(), opt_text()).prop_map(|(codec, name)| Owned::HandshakeRequest { codec, name }),
        response(),
        any::<u32>().prop_map(|session| Owned::ErrorWrongSession { session }),
        (
            any::<bool>(),
            any::<u32>(),
            ids(255),
            vec(any::<u8>(), 0..64)
        )
            .prop_map(|(reliable, session, destinations, payload)| Owned::Relay {
                reliable,
                session,
                destinations,
                payload: Payload::Raw(payload),
            }),
        (any::<u32>(), any::<u8>(), any::<u16>(), text()).prop_map(
            |(session, joined_raw, peer, name)| Owned::DeltaChannelState {
                session,
                joined_raw,
                peer,
                name,
            }
        ),
        (any::<u32>(), any::<u16>())
            .prop_map(|(session, client_id)| Owned::RemoveClient { session, client_id }),
        (any::<u32>(), any::<u16>())
            .prop_map(|(session, peer_id)| Owned::HandshakeP2P { session, peer_id }),
    ]
}

/// A relay wrapping a packet drawn from `inner`, in either byte order.
fn relay_of(inner: impl Strategy<Value = Owned>) -> impl Strategy<Value = Owned> {
    (any::<bool>(), any::<u32>(), ids(255), inner, variant()).prop_map(
        |(reliable, session, destinations, inner, v)| Owned::Relay {
            reliable,
            session,
            destinations,
            payload: Payload::Packet(Box::new(inner), v),
        },
    )
}

/// Any message; some relays wrap a packet, or a relay wrapping a packet.
fn owned() -> impl Strategy<Value = Owned> {
    prop_oneof![
        10 => leaf(),
        2 => relay_of(leaf()),
        1 => relay_of(relay_of(leaf())),
    ]
}

/// The length of a ClientState up to the end of its codec settings: there the reader
/// accepts the packet with its room list absent (and one byte later as a stray byte).
fn client_state_rooms_at(o: &Owned) -> Option<usize> {
    match o {
        Owned::ClientState { name, .. } => Some(3 + 4 + 2 + name.len() + 2 + 9),
        _ => None,
    }
}

fn check_roundtrip(o: &Owned, variant: Variant) -> Result<(), TestCaseError> {
    with_message(o, |m| {
        let bytes = m
            .to_vec(variant, BIG)
            .map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;

        // The writer's limit is exact: the packet fits its own size and not one less.
        let mut exact = vec![0u8; bytes.len()];
        prop_assert_eq!(m.encode(variant, &mut exact), Ok(bytes.len()));
        prop_assert_eq!(&exact, &bytes);
        let mut short = vec![0u8; bytes.len() - 1];
        let refused = m.encode(variant, &mut short);
        prop_assert!(
            matches!(refused, Err(EncodeError::BufferFull { .. })),
            "{:?}",
            refused
        );

        let p = Packet::decode(&bytes).map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
        prop_assert_eq!(p.variant, variant);
        prop_assert!(p.trailing.is_empty(), "trailing {:02x?}", p.trailing);
        prop_assert_eq!(p.message_type(), m.message_type());
        prop_assert_eq!(&p.message, m);
        // Decoded (wire) lists compare equal to the caller's items the other way round too.
        prop_assert_eq!(m, &p.message);
        // Re-encoding copies the decoded lists; the other byte order rewrites them.
        check_bytes(&bytes);
        let other = match variant {
            Variant::Modern => Variant::Legacy60,
            Variant::Legacy60 => Variant::Modern,
        };
        prop_assert_eq!(p.message.to_vec(other, BIG).ok(), m.to_vec(other, BIG).ok());

        // Every strict prefix is refused as truncated, except where a ClientState's
        // room list may legitimately be absent.
        let rooms_at = client_state_rooms_at(o);
        for k in 0..bytes.len() {
            match Packet::decode(&bytes[..k]) {
                Ok(short) => {
                    prop_assert!(
                        Some(k) == rooms_at || Some(k) == rooms_at.map(|r| r + 1),
                        "prefix {} decoded",
                        k
                    );
                    let Message::ClientState(c) = short.message else {
                        unreachable!()
                    };
                    let want = if Some(k) == rooms_at {
                        RoomsEncoding::Absent
                    } else {
                        RoomsEncoding::StrayByte
                    };
                    prop_assert_eq!(c.rooms_encoding, want);
                    prop_assert!(c.rooms.is_empty());
                    prop_assert_eq!(short.trailing.len(), k - rooms_at.unwrap());
                }
                Err(e) => {
                    prop_assert!(
                        matches!(e.kind, DecodeErrorKind::Truncated { .. }),
                        "prefix {}: {:?}",
                        k,
                        e
                    );
                    let want = (k >= 3).then(|| m.message_type());
                    prop_assert_eq!(e.message, want);
                    check_error(k, &e);
                }
            }
        }

        // A relay's payload decodes to the packet it wraps.
        if let Owned::Relay {
            payload: Payload::Packet(inner, inner_variant),
            ..
        } = o
        {
            let (Message::ServerRelayReliable(r) | Message::ServerRelayUnreliable(r)) = &p.message
            else {
                unreachable!()
            };
            let ip = r
                .inner()
                .map_err(|e| TestCaseError::fail(format!("inner: {e}")))?;
            prop_assert_eq!(ip.variant, *inner_variant);
            with_message(inner, |im| {
                prop_assert_eq!(&ip.message, im);
                Ok(())
            })?;
            check_roundtrip(inner, *inner_variant)?;
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn roundtrip(o in owned(), v in variant()) {
        check_roundtrip(&o, v)?;
    }

    #[test]
    fn decode_random_bytes(bytes in vec(any::<u8>(), 0..2000)) {
        check_bytes(&bytes);
    }

    /// Past the header, so that every body decoder sees random input.
    #[test]
    fn decode_random_body(
        legacy in any::<bool>(),
        t in 1u8..=11,
        body in prop_oneof![vec(any::<u8>(), 0..40), vec(any::<u8>(), 0..2000)],
    ) {
        let mut bytes = if legacy { vec![0xC7, 0x8B, t] } else { vec![0x8B, 0xC7, t] };
        bytes.extend_from_slice(&body);
        check_bytes(&bytes);
    }

    /// Valid packets with a few bytes overwritten and maybe cut short or extended:
    /// random input that gets past the first fields.
    #[test]
    fn decode_mutated(
        o in owned(),
        v in variant(),
        edits in vec((any::<Index>(), any::<u8>()), 1..4),
        cut in any::<Index>(),
        cut_kind in 0u8..3,
    ) {
        let mut bytes = encode(&o, v);
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        match cut_kind {
            0 => bytes.truncate(cut.index(bytes.len() + 1)),
            1 => bytes.extend(std::iter::repeat_n(0xAB, cut.index(8))),
            _ => {}
        }
        check_bytes(&bytes);
    }
}

#[test]
fn all_types_generated() {
    // The strategies above cover every type: check the leaf strategy's arms by name.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..2000 {
        let o = leaf().new_tree(&mut runner).unwrap().current();
        seen.insert(with_message(&o, |m| m.message_type()));
    }
    assert_eq!(seen.len(), MessageType::ALL.len(), "{seen:?}");
}

#[test]
fn limits_of_u8_counts() {
    let ids: Vec<u16> = (0..256).collect();
    let relay = Message::ServerRelayReliable(ServerRelay {
        session: 1,
        destinations: Seq::Items(&ids),
        payload: &[],
    });
    assert!(matches!(
        relay.to_vec(Variant::Modern, BIG),
        Err(EncodeError::TooMany { max: 255, .. })
    ));
    let names = [WireStr::new("Global")];
    let entries = [RoomEntry {
        room_id: room_id("Global"),
        peers: Seq::Items(&ids),
    }];
    let response = Message::HandshakeResponse(HandshakeResponse {
        session: 1,
        client_id: 2,
        clients: Seq::default(),
        room_names: Seq::Items(&names),
        room_entries: Seq::Items(&entries),
    });
    assert!(matches!(
        response.to_vec(Variant::Legacy60, BIG),
        Err(EncodeError::TooMany { max: 255, .. })
    ));
}

#[test]
fn null_room_name_does_not_define_an_id() {
    // A null name hashes like "" for display, but the reader only resolves non-null names.
    let names = [WireStr::NULL];
    let entries = [RoomEntry {
        room_id: room_id(""),
        peers: Seq::default(),
    }];
    let bytes = Message::HandshakeResponse(HandshakeResponse {
        session: 1,
        client_id: 2,
        clients: Seq::default(),
        room_names: Seq::Items(&names),
        room_entries: Seq::Items(&entries),
    })
    .to_vec(Variant::Modern, BIG)
    .unwrap();
    let e = Packet::decode(&bytes).unwrap_err();
    assert!(
        matches!(e.kind, DecodeErrorKind::UnknownRoomId { .. }),
        "{e:?}"
    );
}
