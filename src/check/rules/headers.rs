//! Header rules (D001-D005): does each payload hold a well-formed message the real reader accepts?
//! The catalogue entries (id, severity, explanation) and the engine's checks side by side.

use crate::capture::Payload;
use crate::check::rules::{self, Rule, Severity};
use crate::check::{key, About, Ctx, Engine};
use crate::codec::{DecodeError, DecodeErrorKind, Packet, DEFAULT_BUFFER_SIZE};

rules! {
    BAD_MAGIC = "D001" "bad-magic" "headers" Error
        "Bad magic on a flow that carries Dissonance"
        "A payload on a flow (or inside a relay) that otherwise carries Dissonance packets does not start with the magic 8B C7 (or C7 8B for 6.0.x) where a packet was expected. The real reader drops such packets silently (a warning in the log), so whatever the sender meant is lost. Usually the integration wrote its own header at a different length, or sent a buffer from the wrong offset. Datagrams that start with a zero byte are transport control (docs/transports.md) and are not flagged.";
    UNKNOWN_TYPE = "D002" "unknown-type" "headers" Error
        "Unknown message type"
        "The magic is right but the type byte is not one of 1-11. Real readers log and ignore the packet. It is either corruption or a sender speaking another protocol version (the 1.x legacy protocol numbers its messages differently).";
    MALFORMED = "D003" "malformed" "headers" Error
        "Truncated or malformed message"
        "A field runs past the end of the packet (or a legacy HandshakeResponse names a room id missing from its name list). The real PacketReader throws on this: on the server that is a fatal error that restarts it with a new session (everyone is kicked), on a client a disconnect. The finding names the field and the byte offset where the read started.";
    TRAILING = "D004" "trailing-bytes" "headers" Warning
        "Trailing bytes after the message"
        "The packet decodes, but bytes are left after its last field. The real reader ignores them (and the server re-broadcasts ClientState/DeltaChannelState with them verbatim), so this is harmless to Dissonance but points at a sender that writes a wrong length or reuses a buffer without clearing it.";
    OVERSIZE = "D005" "oversize" "headers" Warning
        "Packet larger than the real 1024-byte buffers"
        "Dissonance's send and receive buffers are 1024 bytes, so no real client or server ever produces a larger packet (docs/protocol.md §10.1). A receiver built on the real code cannot accept it; a received audio frame over 1024 bytes makes the client throw.";
}

impl Engine {
    /// D005 and D004: a packet larger than the real buffers, bytes after the message.
    pub(in crate::check) fn size(&mut self, c: &Ctx<'_>, p: &Packet<'_>) {
        let m = &p.message;
        let session = m.session();
        let len = c.bytes.len();
        if len > DEFAULT_BUFFER_SIZE {
            let about = About {
                session,
                mark: Some((DEFAULT_BUFFER_SIZE, len - DEFAULT_BUFFER_SIZE)),
                fold: Some(key((c.src, m.message_type()))),
                ..About::default()
            };
            self.report(rules::OVERSIZE, c, about, || {
                format!(
                    "{} of {len} bytes; real buffers hold {DEFAULT_BUFFER_SIZE}",
                    m.message_type()
                )
            });
        }
        if !p.trailing.is_empty() {
            let about = About {
                session,
                mark: Some((len - p.trailing.len(), p.trailing.len())),
                fold: Some(key(c.bytes)),
                ..About::default()
            };
            self.report(rules::TRAILING, c, about, || {
                format!(
                    "{} followed by {} trailing byte(s)",
                    m.message_type(),
                    p.trailing.len()
                )
            });
        }
    }

    /// A payload on a Dissonance flow in which no packet was found.
    pub(in crate::check) fn stray_payload(&mut self, d: &Payload<'_>, at: usize) {
        // Only where packets start at the datagram's first byte does the datagram reach
        // the Dissonance reader whole (behind a game transport's header it is the
        // transport's own).
        if d.data.is_empty() && at == 0 {
            // The real reader throws reading the header: fatal to the server (D050), a
            // disconnect for a client (D003).
            let c = Ctx::new(d, 0, d.data);
            self.tracker
                .observe_undecoded(d.ts_ns, d.frame_number, d.src, d.dst, d.data, None);
            if !self.fatal_to_server(&c, None) {
                let about = About {
                    fold: Some(key((c.src, "empty"))),
                    ..About::default()
                };
                self.report(rules::MALFORMED, &c, about, || {
                    "empty datagram: the real reader throws reading the header".into()
                });
            }
            return;
        }
        if d.data.len() < 3 && at == 0 {
            self.tracker
                .observe_undecoded(d.ts_ns, d.frame_number, d.src, d.dst, d.data, None);
        }
        if d.data.first() == Some(&0) || d.data.len() <= at {
            return; // transport control, or nothing where the packet should be
        }
        let bytes = &d.data[at..];
        let c = Ctx::new(d, at, bytes);
        if let Err(err) = Packet::decode(bytes) {
            if at > 0 || !self.fatal_to_server(&c, Some(&err)) {
                self.decode_error(&c, &err, 0);
            }
        }
    }

    /// D001/D002/D003/D033 for a packet (or relay payload at `base`) that did not decode.
    pub(in crate::check) fn decode_error(&mut self, c: &Ctx<'_>, e: &DecodeError, base: usize) {
        let at = base + e.offset;
        let (rule, len) = match &e.kind {
            DecodeErrorKind::BadMagic { .. } => (rules::BAD_MAGIC, 2),
            DecodeErrorKind::UnknownType { .. } => (rules::UNKNOWN_TYPE, 1),
            DecodeErrorKind::NullString { .. } => (rules::NULL_NAME, 2),
            DecodeErrorKind::Truncated { .. } | DecodeErrorKind::UnknownRoomId { .. } => {
                (rules::MALFORMED, c.bytes.len().saturating_sub(at).max(1))
            }
        };
        let inside = if base > 0 { " (relay payload)" } else { "" };
        let session = c
            .bytes
            .get(base + 3..base + 7)
            .filter(|_| rule != rules::BAD_MAGIC && c.bytes.get(base + 2) != Some(&4))
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
        let about = About {
            session,
            mark: Some((at, len)),
            fold: Some(key(c.bytes)),
            ..About::default()
        };
        self.report(rule, c, about, || format!("{e}{inside}"));
    }
}
