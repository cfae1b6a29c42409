use crate::codec::{ChannelType, DecodeError, EncodeError, Field, Reader, WireStr, Writer};

/// Type 3: a text message to a room or a player.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextData<'a> {
    pub session: u32,
    /// Raw recipient-type byte: 0 Room, 1 Player (anything else is fatal for real clients).
    pub recipient_type_byte: u8,
    pub sender: u16,
    /// Room id for a room, client id for a player.
    pub target: u16,
    /// May be null.
    pub text: WireStr<'a>,
}

impl<'a> TextData<'a> {
    pub fn recipient_type(&self) -> Option<ChannelType> {
        ChannelType::from_text_byte(self.recipient_type_byte)
    }

    pub(crate) fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(TextData {
            session: r.u32(Field::new("session"))?,
            recipient_type_byte: r.u8(Field::new("recipient type"))?,
            sender: r.u16(Field::new("sender id"))?,
            target: r.u16(Field::new("target"))?,
            text: r.str(Field::new("text"))?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u32(Field::new("session"), self.session)?;
        w.u8(Field::new("recipient type"), self.recipient_type_byte)?;
        w.u16(Field::new("sender id"), self.sender)?;
        w.u16(Field::new("target"), self.target)?;
        w.str(Field::new("text"), self.text)
    }
}
