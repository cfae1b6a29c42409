use crate::codec::{DecodeError, EncodeError, Field, MessageType, Packet, Reader, Seq, Writer};

/// Types 7 and 8: a client asks the server to forward `payload` (a whole Dissonance
/// packet) to each destination, reliably (7) or not (8).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerRelay<'a> {
    pub session: u32,
    /// Destination client ids (a u8 count on the wire: at most 255 per packet).
    /// 0xFFFF is the "always send" pseudo client of 9.0.2+.
    pub destinations: Seq<'a, u16>,
    /// The wrapped packet, borrowed from the input.
    pub payload: &'a [u8],
}

/// What the real server does with a relay (docs/protocol.md §8.6), judged from the
/// payload's magic and type only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayVerdict {
    Relay,
    DropBadMagic,
    DropHandshakeP2P,
    /// The payload is too short for magic and type: the real server throws.
    Throws(DecodeError),
}

impl RelayVerdict {
    pub fn name(&self) -> &'static str {
        match self {
            RelayVerdict::Relay => "relay",
            RelayVerdict::DropBadMagic => "drop_bad_magic",
            RelayVerdict::DropHandshakeP2P => "drop_handshake_p2p",
            RelayVerdict::Throws(_) => "throws",
        }
    }
}

/// The always-send pseudo destination.
pub const ALWAYS_SEND: u16 = 0xFFFF;

impl<'a> ServerRelay<'a> {
    /// The wrapped packet, decoded. Inline: once per relay in the dissector and check,
    /// which live in another crate.
    #[inline]
    pub fn inner(&self) -> Result<Packet<'a>, DecodeError> {
        Packet::decode(self.payload)
    }

    pub fn server_verdict(&self) -> RelayVerdict {
        match Packet::peek_type(self.payload) {
            Ok((_, MessageType::HandshakeP2P)) => RelayVerdict::DropHandshakeP2P,
            Ok(_) => RelayVerdict::Relay,
            Err(e) => match e.kind {
                crate::codec::DecodeErrorKind::BadMagic { .. } => RelayVerdict::DropBadMagic,
                // Unknown inner types are forwarded: the server reads no further.
                crate::codec::DecodeErrorKind::UnknownType { .. } => RelayVerdict::Relay,
                _ => RelayVerdict::Throws(e),
            },
        }
    }

    pub(crate) fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let session = r.u32(Field::new("session"))?;
        let n = r.u8(Field::new("destination count"))? as usize;
        let destinations = Seq::read(r, "destination", n)?;
        let payload = r.blob(Field::new("payload"))?;
        Ok(ServerRelay {
            session,
            destinations,
            payload,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let n = self.destinations.len();
        if n > 255 {
            return Err(EncodeError::TooMany {
                message: w.message(),
                field: Field::new("destinations"),
                count: n,
                max: 255,
            });
        }
        w.u32(Field::new("session"), self.session)?;
        w.u8(Field::new("destination count"), n as u8)?;
        self.destinations.write_items(w, "destination")?;
        w.blob(Field::new("payload"), self.payload)
    }
}
