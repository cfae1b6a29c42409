//! A bounded byte writer: like the real PacketWriter it checks the space left before
//! each primitive and refuses (typed error) rather than writing a partial packet.

use super::error::{EncodeError, Field, Primitive};
use super::types::{Variant, WireStr};
use super::MessageType;

pub struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
    variant: Variant,
    message: MessageType,
}

impl<'b> Writer<'b> {
    pub fn new(buf: &'b mut [u8], variant: Variant, message: MessageType) -> Writer<'b> {
        Writer {
            buf,
            pos: 0,
            variant,
            message,
        }
    }
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn variant(&self) -> Variant {
        self.variant
    }
    pub fn message(&self) -> MessageType {
        self.message
    }
    pub fn set_message(&mut self, m: MessageType) {
        self.message = m;
    }

    #[inline]
    fn put(
        &mut self,
        bytes: &[u8],
        field: Field,
        primitive: Primitive,
        need: usize,
    ) -> Result<(), EncodeError> {
        let end = self.pos + bytes.len();
        if self.pos + need > self.buf.len() {
            return Err(EncodeError::BufferFull {
                message: self.message,
                field,
                primitive,
                offset: self.pos,
                need,
                capacity: self.buf.len(),
            });
        }
        self.buf[self.pos..end].copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    #[inline]
    pub fn u8(&mut self, field: Field, v: u8) -> Result<(), EncodeError> {
        self.put(&[v], field, Primitive::U8, 1)
    }
    #[inline]
    pub fn u16(&mut self, field: Field, v: u16) -> Result<(), EncodeError> {
        let b = match self.variant {
            Variant::Modern => v.to_be_bytes(),
            Variant::Legacy60 => v.to_le_bytes(),
        };
        self.put(&b, field, Primitive::U16, 2)
    }
    #[inline]
    pub fn u32(&mut self, field: Field, v: u32) -> Result<(), EncodeError> {
        self.put(&v.to_be_bytes(), field, Primitive::U32, 4)
    }

    /// Bytes copied verbatim (a decoded list re-encoded in its own byte order).
    pub fn raw(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.put(bytes, Field::new("list"), Primitive::Blob, bytes.len())
    }

    /// A string, with the real writer's checks: more than 65 535 UTF-16 chars or UTF-8
    /// bytes is refused; exactly 65 535 bytes is written with the length prefix wrapped
    /// to 0 (the real writer's `(ushort)(len + 1)` overflow), which reads back as null
    /// followed by the text as trailing bytes. Only a buffer over 64 KiB can reach it.
    pub fn str(&mut self, field: Field, s: WireStr<'_>) -> Result<(), EncodeError> {
        let Some(bytes) = s.0 else {
            return self.u16(field, 0).map_err(|e| retag(e, Primitive::Str));
        };
        if bytes.len() > 65535 {
            // UTF-16 length never exceeds the UTF-8 length, so only now can it be too long.
            let chars: usize = String::from_utf8_lossy(bytes).encode_utf16().count();
            if chars > 65535 {
                return Err(EncodeError::StringTooManyChars {
                    message: self.message,
                    field,
                    chars,
                });
            }
            return Err(EncodeError::StringTooManyBytes {
                message: self.message,
                field,
                bytes: bytes.len(),
            });
        }
        let need = 2 + bytes.len();
        if self.pos + need > self.buf.len() {
            return Err(EncodeError::BufferFull {
                message: self.message,
                field,
                primitive: Primitive::Str,
                offset: self.pos,
                need,
                capacity: self.buf.len(),
            });
        }
        self.u16(field, (bytes.len() as u16).wrapping_add(1))?;
        self.put(bytes, field, Primitive::Str, bytes.len())
    }

    /// A blob: u16 length then the bytes.
    pub fn blob(&mut self, field: Field, bytes: &[u8]) -> Result<(), EncodeError> {
        if bytes.len() > 65535 {
            return Err(EncodeError::TooMany {
                message: self.message,
                field,
                count: bytes.len(),
                max: 65535,
            });
        }
        let need = 2 + bytes.len();
        if self.pos + need > self.buf.len() {
            return Err(EncodeError::BufferFull {
                message: self.message,
                field,
                primitive: Primitive::Blob,
                offset: self.pos,
                need,
                capacity: self.buf.len(),
            });
        }
        self.u16(field, bytes.len() as u16)?;
        self.put(bytes, field, Primitive::Blob, bytes.len())
    }

    /// A u16 count, refusing lists longer than 65 535.
    pub fn count16(&mut self, field: Field, n: usize) -> Result<(), EncodeError> {
        if n > 65535 {
            return Err(EncodeError::TooMany {
                message: self.message,
                field,
                count: n,
                max: 65535,
            });
        }
        self.u16(field, n as u16)
    }
}

fn retag(e: EncodeError, p: Primitive) -> EncodeError {
    match e {
        EncodeError::BufferFull {
            message,
            field,
            offset,
            need,
            capacity,
            ..
        } => EncodeError::BufferFull {
            message,
            field,
            primitive: p,
            offset,
            need,
            capacity,
        },
        e => e,
    }
}
