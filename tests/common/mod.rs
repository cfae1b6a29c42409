//! Checks shared by the property tests and the fuzz target (which includes this file by
//! path): whatever bytes come in, decoding must not panic, a successful decode must be
//! fully walkable, and what it decoded must encode back to the same bytes.

use dissonance_tools::codec::{
    DecodeError, DecodeErrorKind, Message, Packet, RoomsEncoding, Variant,
};

/// Big enough for any packet a test or the fuzzer makes: the 1024-byte default would
/// turn large (but valid) decoded packets into encode errors.
pub const BIG: usize = 1 << 17;

/// Decodes `bytes` and runs every check on the result, whether it decoded or not.
pub fn check_bytes(bytes: &[u8]) {
    match Packet::decode(bytes) {
        Ok(p) => check_decoded(bytes, &p),
        Err(e) => check_error(bytes.len(), &e),
    }
}

/// An error must describe the input it came from.
pub fn check_error(len: usize, e: &DecodeError) {
    assert!(
        e.offset <= len,
        "offset {} past the end ({len}): {e:?}",
        e.offset
    );
    if let DecodeErrorKind::Truncated { need, left, .. } = e.kind {
        // `offset` is where the failing read began, `left` what was left there.
        assert_eq!(e.offset + left, len, "{e:?}");
        assert!(need > left, "{e:?}");
    }
    // Display, kind_name and field must cope with every error.
    let _ = (e.to_string(), e.kind_name(), e.field());
}

/// Everything a successful decode promises: lists iterate to their full length, relay
/// payloads decode (or fail) without panicking, and the message re-encodes to the bytes
/// it came from, in its own byte order and (round trip) in the other one.
pub fn check_decoded(bytes: &[u8], p: &Packet<'_>) {
    walk(p);

    // Same byte order: header and body are reproduced exactly, the trailing bytes
    // are what the reader left over.
    let used = p.len_without_trailing(bytes.len());
    let again = p
        .message
        .to_vec(p.variant, BIG)
        .expect("re-encode a decoded message");
    assert_eq!(again, &bytes[..used], "re-encoding changed the bytes");
    assert_eq!(p.trailing, &bytes[used..]);

    // decode(encode(decoded)) == decoded, except that a ClientState's stray byte is
    // trailing data the message does not carry (it comes back as "absent").
    let p2 = Packet::decode(&again).expect("decode a re-encoded message");
    assert!(p2.trailing.is_empty());
    assert_eq!(p2.variant, p.variant);
    assert_eq!(p2.message, without_stray_byte(&p.message));

    // With the trailing bytes put back the whole packet comes back, stray byte included.
    let mut whole = again.clone();
    whole.extend_from_slice(p.trailing);
    assert_eq!(&Packet::decode(&whole).expect("decode with trailing"), p);

    // The other byte order re-writes every list item by item. Only a channel bitfield
    // with bit 7 set (which the encoder refuses from callers) may stop it.
    let other = match p.variant {
        Variant::Modern => Variant::Legacy60,
        Variant::Legacy60 => Variant::Modern,
    };
    match p.message.to_vec(other, BIG) {
        Ok(swapped) => {
            assert_eq!(swapped.len(), again.len());
            let p3 = Packet::decode(&swapped).expect("decode in the other byte order");
            assert_eq!(p3.variant, other);
            assert!(p3.trailing.is_empty());
            assert_eq!(p3.message, without_stray_byte(&p.message));
        }
        Err(e) => {
            let Message::VoiceData(v) = &p.message else {
                panic!("other byte order refused: {e:?}");
            };
            assert!(
                v.channels.iter().any(|c| !c.bitfield.is_canonical()),
                "{e:?}"
            );
        }
    }
}

fn without_stray_byte<'a>(m: &Message<'a>) -> Message<'a> {
    match m {
        Message::ClientState(c) if c.rooms_encoding == RoomsEncoding::StrayByte => {
            let mut c = *c;
            c.rooms_encoding = RoomsEncoding::Absent;
            Message::ClientState(c)
        }
        m => m.clone(),
    }
}

/// Touches every field of a decoded packet: all list items, every accessor, relay
/// payloads recursively (each level costs at least 10 input bytes, so the depth is
/// bounded by the input size).
pub fn walk(p: &Packet<'_>) {
    let _ = format!("{p:?}");
    let _ = (p.message_type().name(), p.message.session());
    match &p.message {
        Message::ClientState(m) => {
            assert!(!m.name.is_null());
            let _ = (m.name.to_string(), m.codec.codec(), m.codec.frame_ms());
            assert_eq!(m.rooms.iter().count(), m.rooms.len());
            for r in m.rooms {
                let _ = (r.to_str_lossy(), r.room_id());
            }
        }
        Message::VoiceData(m) => {
            assert_eq!(m.channels.iter().count(), m.channels.len());
            for c in m.channels {
                let b = c.bitfield;
                let _ = (b.channel_type(), b.positional(), b.closing(), b.priority());
                let _ = (b.session_id(), b.volume(), b.amplitude(), c.recipient);
            }
            let o = m.options;
            let _ = (
                o.extended_range(),
                o.channel_session(),
                o.channel_session_range(),
            );
        }
        Message::TextData(m) => {
            let _ = (m.recipient_type(), m.text.to_str_lossy());
        }
        Message::HandshakeRequest(m) => {
            let _ = (m.codec.codec(), m.codec.frame_ms(), m.name.to_str_lossy());
        }
        Message::HandshakeResponse(m) => {
            assert_eq!(m.clients.iter().count(), m.clients.len());
            assert_eq!(m.room_names.iter().count(), m.room_names.len());
            assert_eq!(m.room_entries.iter().count(), m.room_entries.len());
            for c in m.clients {
                let _ = (c.name.to_str_lossy(), c.codec.frame_ms());
            }
            for e in m.room_entries {
                assert_eq!(e.peers.iter().count(), e.peers.len());
            }
            let _ = m.is_modern();
            for room in m.rooms() {
                assert!(!room.name.is_null());
                assert_eq!(room.peers.iter().count(), room.peers.len());
            }
        }
        Message::ServerRelayReliable(m) | Message::ServerRelayUnreliable(m) => {
            assert_eq!(m.destinations.iter().count(), m.destinations.len());
            let _ = m.server_verdict().name();
            match m.inner() {
                Ok(inner) => check_decoded(m.payload, &inner),
                Err(e) => check_error(m.payload.len(), &e),
            }
        }
        Message::DeltaChannelState(m) => {
            assert!(!m.name.is_null());
            let _ = (m.joined(), m.name.room_id());
        }
        Message::ErrorWrongSession(_) | Message::RemoveClient(_) | Message::HandshakeP2P(_) => {}
    }
}
