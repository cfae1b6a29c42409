//! A byte cursor over one packet. Every read names its field; a read past the end
//! becomes a [`DecodeError`] with the offset where the read began, the field, and how
//! many bytes were needed and left — never a panic.

use super::error::{DecodeError, DecodeErrorKind, Field, Primitive};
use super::types::{Variant, WireStr};
use super::MessageType;

#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    variant: Variant,
    message: Option<MessageType>,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], variant: Variant, message: Option<MessageType>) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            variant,
            message,
        }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn variant(&self) -> Variant {
        self.variant
    }
    pub fn set_message(&mut self, m: MessageType) {
        self.message = Some(m);
    }
    /// The bytes from `start` to the current position.
    pub fn slice_from(&self, start: usize) -> &'a [u8] {
        &self.buf[start.min(self.pos)..self.pos]
    }
    /// Everything not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn error(&self, offset: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            message: self.message,
            offset,
            kind,
        }
    }

    #[inline]
    fn take(
        &mut self,
        n: usize,
        field: Field,
        primitive: Primitive,
    ) -> Result<&'a [u8], DecodeError> {
        match self.buf.get(self.pos..self.pos.wrapping_add(n)) {
            Some(s) if self.pos.checked_add(n).is_some() => {
                self.pos += n;
                Ok(s)
            }
            _ => Err(self.error(
                self.pos,
                DecodeErrorKind::Truncated {
                    field,
                    primitive,
                    need: n,
                    left: self.remaining(),
                },
            )),
        }
    }

    #[inline]
    pub fn u8(&mut self, field: Field) -> Result<u8, DecodeError> {
        Ok(self.take(1, field, Primitive::U8)?[0])
    }

    #[inline]
    pub fn u16(&mut self, field: Field) -> Result<u16, DecodeError> {
        let b = self.take(2, field, Primitive::U16)?;
        let b = [b[0], b[1]];
        Ok(match self.variant {
            Variant::Modern => u16::from_be_bytes(b),
            Variant::Legacy60 => u16::from_le_bytes(b),
        })
    }

    /// u32 is big-endian in every variant.
    #[inline]
    pub fn u32(&mut self, field: Field) -> Result<u32, DecodeError> {
        let b = self.take(4, field, Primitive::U32)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A string: u16 length + 1 (0 = null), then UTF-8 bytes.
    pub fn str(&mut self, field: Field) -> Result<WireStr<'a>, DecodeError> {
        let len = self.u16(field)? as usize;
        if len == 0 {
            return Ok(WireStr(None));
        }
        Ok(WireStr(Some(self.take(len - 1, field, Primitive::Str)?)))
    }

    /// A blob: u16 length, then that many bytes.
    pub fn blob(&mut self, field: Field) -> Result<&'a [u8], DecodeError> {
        let len = self.u16(field)? as usize;
        self.take(len, field, Primitive::Blob)
    }

    /// Raw bytes whose length the caller knows (a fixed-size list).
    pub fn bytes(
        &mut self,
        n: usize,
        field: Field,
        primitive: Primitive,
    ) -> Result<&'a [u8], DecodeError> {
        self.take(n, field, primitive)
    }
}

impl<'a> Reader<'a> {
    /// Skips the two magic bytes (used after the byte order has been detected).
    pub(crate) fn skip2(mut self) -> Reader<'a> {
        self.pos = 2.min(self.buf.len());
        self
    }
}
