//! Typed decode and encode errors. Every error says which message, which field and
//! which byte offset, so a user can find the bad byte in a hex dump.

use std::fmt;

use super::MessageType;

/// The wire primitive a read or write was attempting (mirrors the real reader's
/// "Insufficient space in packet reader to read <primitive>" messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primitive {
    U8,
    U16,
    U32,
    /// A length-prefixed UTF-8 string (length + 1, 0 = null).
    Str,
    /// A length-prefixed byte array (plain length).
    Blob,
}

impl Primitive {
    /// The name the real Dissonance reader/writer uses for this primitive.
    pub fn dotnet_name(self) -> &'static str {
        match self {
            Primitive::U8 => "byte",
            Primitive::U16 => "ushort",
            Primitive::U32 => "uint",
            Primitive::Str => "string",
            Primitive::Blob => "byte[]",
        }
    }
}

/// A field name, optionally inside the `index`-th element of a list
/// ("channel 1 recipient", "room 0 name").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub item: Option<(&'static str, usize)>,
}

impl Field {
    pub const fn new(name: &'static str) -> Field {
        Field { name, item: None }
    }
    pub const fn of(list: &'static str, index: usize, name: &'static str) -> Field {
        Field {
            name,
            item: Some((list, index)),
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.item {
            Some((list, i)) => write!(f, "{list} {i} {}", self.name),
            None => f.write_str(self.name),
        }
    }
}

/// Why a packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The first two bytes are neither `8B C7` (6.1+) nor `C7 8B` (6.0.x).
    BadMagic { found: u16 },
    /// The type byte is not one of the 11 message types.
    UnknownType { type_byte: u8 },
    /// A field runs past the end of the packet.
    Truncated {
        field: Field,
        primitive: Primitive,
        need: usize,
        left: usize,
    },
    /// A string the real reader requires to be non-null was null.
    NullString { field: Field },
    /// A legacy HandshakeResponse room entry names a room id missing from its name list.
    UnknownRoomId { field: Field, room_id: u16 },
}

/// A decode failure: what went wrong, in which message, at which byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The message type, when the header got that far.
    pub message: Option<MessageType>,
    /// Byte offset (from the start of the packet) where the failing read began.
    pub offset: usize,
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// A short stable name for the kind: `bad_magic`, `unknown_type`, `truncated`,
    /// `null_string`, `unknown_room_id`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            DecodeErrorKind::BadMagic { .. } => "bad_magic",
            DecodeErrorKind::UnknownType { .. } => "unknown_type",
            DecodeErrorKind::Truncated { .. } => "truncated",
            DecodeErrorKind::NullString { .. } => "null_string",
            DecodeErrorKind::UnknownRoomId { .. } => "unknown_room_id",
        }
    }

    /// The field being read when decoding failed, if any.
    pub fn field(&self) -> Option<Field> {
        match self.kind {
            DecodeErrorKind::Truncated { field, .. }
            | DecodeErrorKind::NullString { field }
            | DecodeErrorKind::UnknownRoomId { field, .. } => Some(field),
            DecodeErrorKind::BadMagic { .. } => Some(Field::new("magic")),
            DecodeErrorKind::UnknownType { .. } => Some(Field::new("type")),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = self.message {
            write!(f, "{}: ", m.name())?;
        }
        match &self.kind {
            DecodeErrorKind::BadMagic { found } => write!(
                f,
                "bad magic 0x{found:04X} at byte {} (expected 8B C7, or C7 8B for 6.0.x)",
                self.offset
            ),
            DecodeErrorKind::UnknownType { type_byte } => write!(
                f,
                "unknown message type {type_byte} at byte {} (valid: 1-11)",
                self.offset
            ),
            DecodeErrorKind::Truncated {
                field, need, left, ..
            } => write!(
                f,
                "truncated at byte {} reading {field}: need {need} bytes, {left} left",
                self.offset
            ),
            DecodeErrorKind::NullString { field } => {
                write!(f, "null {field} at byte {} (must not be null)", self.offset)
            }
            DecodeErrorKind::UnknownRoomId { field, room_id } => write!(
                f,
                "{field} at byte {} is room id {room_id} (0x{room_id:04X}), which is not in the room name list",
                self.offset
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Inputs the writer refuses, as the real PacketWriter does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The packet does not fit the buffer (1024 bytes by default, like Dissonance's own).
    BufferFull {
        message: MessageType,
        field: Field,
        primitive: Primitive,
        offset: usize,
        need: usize,
        capacity: usize,
    },
    /// A string field the real writer refuses to serialize as null.
    NullString { message: MessageType, field: Field },
    /// More than 65 535 UTF-16 code units.
    StringTooManyChars {
        message: MessageType,
        field: Field,
        chars: usize,
    },
    /// More than 65 535 UTF-8 bytes.
    StringTooManyBytes {
        message: MessageType,
        field: Field,
        bytes: usize,
    },
    /// A channel bitfield the real ChannelBitField cannot produce (bit 7 set).
    InvalidBitfield { channel: usize, bitfield: u16 },
    /// More items than the count field can hold (relay destinations when not splitting,
    /// legacy room peers > 255, lists > 65 535).
    TooMany {
        message: MessageType,
        field: Field,
        count: usize,
        max: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferFull {
                message,
                field,
                primitive,
                offset,
                need,
                capacity,
            } => write!(
                f,
                "{}: {field} ({}) does not fit: need {need} bytes at byte {offset}, buffer holds {capacity}",
                message.name(),
                primitive.dotnet_name()
            ),
            EncodeError::NullString { message, field } => {
                write!(f, "{}: {field} must not be null", message.name())
            }
            EncodeError::StringTooManyChars {
                message,
                field,
                chars,
            } => write!(
                f,
                "{}: {field} has {chars} UTF-16 characters; at most 65535 can be encoded",
                message.name()
            ),
            EncodeError::StringTooManyBytes {
                message,
                field,
                bytes,
            } => write!(
                f,
                "{}: {field} encodes to {bytes} UTF-8 bytes; at most 65535 can be encoded",
                message.name()
            ),
            EncodeError::InvalidBitfield { channel, bitfield } => write!(
                f,
                "VoiceData: channel {channel} bitfield 0x{bitfield:04X} has bit 7 set, which no real sender produces"
            ),
            EncodeError::TooMany {
                message,
                field,
                count,
                max,
            } => write!(
                f,
                "{}: {count} {field} but the count field holds at most {max}",
                message.name()
            ),
        }
    }
}

impl std::error::Error for EncodeError {}
