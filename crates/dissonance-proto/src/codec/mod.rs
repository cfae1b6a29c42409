//! The Dissonance wire codec: every message type, both byte orders, decode and encode.
//!
//! Decoding borrows from the input: strings, lists and audio are views into the packet
//! bytes, so decoding a VoiceData allocates nothing. Encoding writes into a caller's
//! buffer with the real writer's limits (1024 bytes by default).
//!
//! ```
//! use dissonance_proto::codec::{Packet, Message};
//! let bytes = [0x8b, 0xc7, 0x0a, 0x12, 0x34, 0xab, 0xcd, 0x00, 0x01];
//! let p = Packet::decode(&bytes).unwrap();
//! assert!(matches!(p.message, Message::RemoveClient(ref m) if m.client_id == 1));
//! assert_eq!(p.to_vec().unwrap(), bytes);
//! ```

mod error;
pub mod msg;
mod reader;
mod room_id;
mod types;
mod writer;

pub use error::{DecodeError, DecodeErrorKind, EncodeError, Field, Primitive};
pub use msg::*;
pub use reader::Reader;
pub use room_id::{fnv1a_utf16be, room_id, room_id_utf16};
pub use types::*;
pub use writer::Writer;

/// A counter per message type (a fixed array: it is bumped for every packet of a dump).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TypeCounts([u64; 11]);

impl TypeCounts {
    #[inline]
    pub fn add(&mut self, t: MessageType) {
        self.0[t as usize - 1] += 1;
    }
    pub fn get(&self, t: MessageType) -> u64 {
        self.0[t as usize - 1]
    }
    /// The non-zero counts, in type order.
    pub fn iter(&self) -> impl Iterator<Item = (MessageType, u64)> + '_ {
        MessageType::ALL
            .iter()
            .map(|&t| (t, self.get(t)))
            .filter(|&(_, n)| n > 0)
    }
}

/// The size of the real Dissonance send and receive buffers.
pub const DEFAULT_BUFFER_SIZE: usize = 1024;
/// Magic in the modern (6.1+) byte order.
pub const MAGIC_MODERN: [u8; 2] = [0x8B, 0xC7];
/// Magic in the 6.0.x byte order.
pub const MAGIC_LEGACY: [u8; 2] = [0xC7, 0x8B];

/// The 11 message types (docs/protocol.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageType {
    ClientState = 1,
    VoiceData = 2,
    TextData = 3,
    HandshakeRequest = 4,
    HandshakeResponse = 5,
    ErrorWrongSession = 6,
    ServerRelayReliable = 7,
    ServerRelayUnreliable = 8,
    DeltaChannelState = 9,
    RemoveClient = 10,
    HandshakeP2P = 11,
}

impl MessageType {
    pub const ALL: [MessageType; 11] = [
        MessageType::ClientState,
        MessageType::VoiceData,
        MessageType::TextData,
        MessageType::HandshakeRequest,
        MessageType::HandshakeResponse,
        MessageType::ErrorWrongSession,
        MessageType::ServerRelayReliable,
        MessageType::ServerRelayUnreliable,
        MessageType::DeltaChannelState,
        MessageType::RemoveClient,
        MessageType::HandshakeP2P,
    ];

    pub fn from_u8(b: u8) -> Option<MessageType> {
        MessageType::ALL.get((b as usize).wrapping_sub(1)).copied()
    }
    pub fn name(self) -> &'static str {
        match self {
            MessageType::ClientState => "ClientState",
            MessageType::VoiceData => "VoiceData",
            MessageType::TextData => "TextData",
            MessageType::HandshakeRequest => "HandshakeRequest",
            MessageType::HandshakeResponse => "HandshakeResponse",
            MessageType::ErrorWrongSession => "ErrorWrongSession",
            MessageType::ServerRelayReliable => "ServerRelayReliable",
            MessageType::ServerRelayUnreliable => "ServerRelayUnreliable",
            MessageType::DeltaChannelState => "DeltaChannelState",
            MessageType::RemoveClient => "RemoveClient",
            MessageType::HandshakeP2P => "HandshakeP2P",
        }
    }
    /// Parses a type name, case-insensitively, or its number.
    pub fn parse(s: &str) -> Option<MessageType> {
        if let Ok(n) = s.parse::<u8>() {
            return MessageType::from_u8(n);
        }
        MessageType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }
    /// Types only a server sends (a client receiving them from a client is suspicious).
    pub fn is_server_only_send(self) -> bool {
        matches!(
            self,
            MessageType::HandshakeResponse
                | MessageType::ErrorWrongSession
                | MessageType::RemoveClient
        )
    }
    /// Types the real server refuses ("client-only": 2, 3, 5, 6, 10, 11).
    pub fn server_ignores(self) -> bool {
        matches!(
            self,
            MessageType::VoiceData
                | MessageType::TextData
                | MessageType::HandshakeResponse
                | MessageType::ErrorWrongSession
                | MessageType::RemoveClient
                | MessageType::HandshakeP2P
        )
    }
    /// Types the real client refuses ("server-only": 4, 7, 8).
    pub fn client_ignores(self) -> bool {
        matches!(
            self,
            MessageType::HandshakeRequest
                | MessageType::ServerRelayReliable
                | MessageType::ServerRelayUnreliable
        )
    }
    /// The channel the real code sends this type on.
    pub fn is_reliable(self) -> bool {
        !matches!(
            self,
            MessageType::VoiceData
                | MessageType::ErrorWrongSession
                | MessageType::ServerRelayUnreliable
        )
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    ClientState(ClientState<'a>),
    VoiceData(VoiceData<'a>),
    TextData(TextData<'a>),
    HandshakeRequest(HandshakeRequest<'a>),
    HandshakeResponse(HandshakeResponse<'a>),
    ErrorWrongSession(ErrorWrongSession),
    ServerRelayReliable(ServerRelay<'a>),
    ServerRelayUnreliable(ServerRelay<'a>),
    DeltaChannelState(DeltaChannelState<'a>),
    RemoveClient(RemoveClient),
    HandshakeP2P(HandshakeP2P),
}

impl<'a> Message<'a> {
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::ClientState(_) => MessageType::ClientState,
            Message::VoiceData(_) => MessageType::VoiceData,
            Message::TextData(_) => MessageType::TextData,
            Message::HandshakeRequest(_) => MessageType::HandshakeRequest,
            Message::HandshakeResponse(_) => MessageType::HandshakeResponse,
            Message::ErrorWrongSession(_) => MessageType::ErrorWrongSession,
            Message::ServerRelayReliable(_) => MessageType::ServerRelayReliable,
            Message::ServerRelayUnreliable(_) => MessageType::ServerRelayUnreliable,
            Message::DeltaChannelState(_) => MessageType::DeltaChannelState,
            Message::RemoveClient(_) => MessageType::RemoveClient,
            Message::HandshakeP2P(_) => MessageType::HandshakeP2P,
        }
    }

    /// The session field; HandshakeRequest has none.
    pub fn session(&self) -> Option<u32> {
        Some(match self {
            Message::ClientState(m) => m.session,
            Message::VoiceData(m) => m.session,
            Message::TextData(m) => m.session,
            Message::HandshakeRequest(_) => return None,
            Message::HandshakeResponse(m) => m.session,
            Message::ErrorWrongSession(m) => m.session,
            Message::ServerRelayReliable(m) | Message::ServerRelayUnreliable(m) => m.session,
            Message::DeltaChannelState(m) => m.session,
            Message::RemoveClient(m) => m.session,
            Message::HandshakeP2P(m) => m.session,
        })
    }

    fn decode_body(t: MessageType, r: &mut Reader<'a>) -> Result<Message<'a>, DecodeError> {
        Ok(match t {
            MessageType::ClientState => Message::ClientState(ClientState::decode(r)?),
            MessageType::VoiceData => Message::VoiceData(VoiceData::decode(r)?),
            MessageType::TextData => Message::TextData(TextData::decode(r)?),
            MessageType::HandshakeRequest => {
                Message::HandshakeRequest(HandshakeRequest::decode(r)?)
            }
            MessageType::HandshakeResponse => {
                Message::HandshakeResponse(HandshakeResponse::decode(r)?)
            }
            MessageType::ErrorWrongSession => {
                Message::ErrorWrongSession(ErrorWrongSession::decode(r)?)
            }
            MessageType::ServerRelayReliable => {
                Message::ServerRelayReliable(ServerRelay::decode(r)?)
            }
            MessageType::ServerRelayUnreliable => {
                Message::ServerRelayUnreliable(ServerRelay::decode(r)?)
            }
            MessageType::DeltaChannelState => {
                Message::DeltaChannelState(DeltaChannelState::decode(r)?)
            }
            MessageType::RemoveClient => Message::RemoveClient(RemoveClient::decode(r)?),
            MessageType::HandshakeP2P => Message::HandshakeP2P(HandshakeP2P::decode(r)?),
        })
    }

    fn encode_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match self {
            Message::ClientState(m) => m.encode(w),
            Message::VoiceData(m) => m.encode(w),
            Message::TextData(m) => m.encode(w),
            Message::HandshakeRequest(m) => m.encode(w),
            Message::HandshakeResponse(m) => m.encode(w),
            Message::ErrorWrongSession(m) => m.encode(w),
            Message::ServerRelayReliable(m) | Message::ServerRelayUnreliable(m) => m.encode(w),
            Message::DeltaChannelState(m) => m.encode(w),
            Message::RemoveClient(m) => m.encode(w),
            Message::HandshakeP2P(m) => m.encode(w),
        }
    }

    /// Encodes header and body into `buf` (its length is the buffer limit) and returns
    /// the number of bytes written.
    pub fn encode(&self, variant: Variant, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let t = self.message_type();
        let mut w = Writer::new(buf, variant, t);
        let magic = match variant {
            Variant::Modern => MAGIC_MODERN,
            Variant::Legacy60 => MAGIC_LEGACY,
        };
        w.u8(Field::new("magic"), magic[0])?;
        w.u8(Field::new("magic"), magic[1])?;
        w.u8(Field::new("type"), t as u8)?;
        self.encode_body(&mut w)?;
        Ok(w.pos())
    }

    /// Encodes into a new vector, with a buffer limit of `buffer_size` bytes.
    pub fn to_vec(&self, variant: Variant, buffer_size: usize) -> Result<Vec<u8>, EncodeError> {
        let mut buf = vec![0u8; buffer_size];
        let n = self.encode(variant, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Encodes like the real client sends: a relay with more than 255 destinations
    /// becomes several relay packets of at most 255 destinations each (9.0.5+); any
    /// other message is one packet.
    pub fn encode_split(
        &self,
        variant: Variant,
        buffer_size: usize,
    ) -> Result<Vec<Vec<u8>>, EncodeError> {
        let (relay, reliable) = match self {
            Message::ServerRelayReliable(r) => (r, true),
            Message::ServerRelayUnreliable(r) => (r, false),
            _ => return Ok(vec![self.to_vec(variant, buffer_size)?]),
        };
        let dests: Vec<u16> = relay.destinations.iter().collect();
        if dests.len() <= 255 {
            return Ok(vec![self.to_vec(variant, buffer_size)?]);
        }
        dests
            .chunks(255)
            .map(|chunk| {
                let part = ServerRelay {
                    destinations: Seq::Items(chunk),
                    ..*relay
                };
                let m = if reliable {
                    Message::ServerRelayReliable(part)
                } else {
                    Message::ServerRelayUnreliable(part)
                };
                m.to_vec(variant, buffer_size)
            })
            .collect()
    }
}

/// A decoded packet: the byte order it used, the message, and any bytes after it
/// (the real reader ignores trailing bytes; we keep them so they can be reported).
#[derive(Debug, Clone, PartialEq)]
pub struct Packet<'a> {
    pub variant: Variant,
    pub message: Message<'a>,
    pub trailing: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Decodes one packet. The byte order is detected from the magic.
    pub fn decode(bytes: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let (t, mut r) = header(bytes)?;
        let message = Message::decode_body(t, &mut r)?;
        Ok(Packet {
            variant: r.variant(),
            message,
            trailing: r.rest(),
        })
    }

    /// Reads only magic and type: what the real server looks at in a relay payload.
    pub fn peek_type(bytes: &[u8]) -> Result<(Variant, MessageType), DecodeError> {
        let (t, r) = header(bytes)?;
        Ok((r.variant(), t))
    }

    /// Bytes consumed by the message (header included), not counting trailing bytes.
    pub fn len_without_trailing(&self, total: usize) -> usize {
        total - self.trailing.len()
    }

    pub fn message_type(&self) -> MessageType {
        self.message.message_type()
    }

    /// Re-encodes in the packet's own byte order with the default 1024-byte limit.
    pub fn to_vec(&self) -> Result<Vec<u8>, EncodeError> {
        self.message.to_vec(self.variant, DEFAULT_BUFFER_SIZE)
    }
}

/// Reads magic (detecting the byte order) and type.
fn header(bytes: &[u8]) -> Result<(MessageType, Reader<'_>), DecodeError> {
    let mut r = Reader::new(bytes, Variant::Modern, None);
    let magic = r.u16(Field::new("magic"))?;
    match magic.to_be_bytes() {
        MAGIC_MODERN => {}
        MAGIC_LEGACY => r = Reader::new(bytes, Variant::Legacy60, None).skip2(),
        _ => {
            return Err(DecodeError {
                message: None,
                offset: 0,
                kind: DecodeErrorKind::BadMagic { found: magic },
            })
        }
    }
    let type_byte = r.u8(Field::new("type"))?;
    let t = MessageType::from_u8(type_byte).ok_or(DecodeError {
        message: None,
        offset: 2,
        kind: DecodeErrorKind::UnknownType { type_byte },
    })?;
    r.set_message(t);
    Ok((t, r))
}

/// True when `bytes` starts with either magic: a cheap test before a full decode.
pub fn has_magic(bytes: &[u8]) -> bool {
    matches!(bytes, [0x8B, 0xC7, ..] | [0xC7, 0x8B, ..])
}
