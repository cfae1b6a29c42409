use crate::codec::{DecodeError, DecodeErrorKind, EncodeError, Field, Reader, WireStr, Writer};

/// Type 9: a client started (joined) or stopped listening to a room.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeltaChannelState<'a> {
    pub session: u32,
    /// The raw bool byte; any non-zero value means "joined".
    pub joined_raw: u8,
    /// The client whose membership changed.
    pub peer: u16,
    /// Room name; never null in a packet the real reader accepts.
    pub name: WireStr<'a>,
}

impl<'a> DeltaChannelState<'a> {
    pub fn new(session: u32, joined: bool, peer: u16, name: &'a str) -> Self {
        DeltaChannelState {
            session,
            joined_raw: joined as u8,
            peer,
            name: WireStr::new(name),
        }
    }
    pub fn joined(&self) -> bool {
        self.joined_raw != 0
    }

    pub(crate) fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let session = r.u32(Field::new("session"))?;
        let joined_raw = r.u8(Field::new("joined"))?;
        let peer = r.u16(Field::new("peer id"))?;
        let name_at = r.pos();
        let name = r.str(Field::new("room name"))?;
        if name.is_null() {
            return Err(r.error(
                name_at,
                DecodeErrorKind::NullString {
                    field: Field::new("room name"),
                },
            ));
        }
        Ok(DeltaChannelState {
            session,
            joined_raw,
            peer,
            name,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        if self.name.is_null() {
            return Err(EncodeError::NullString {
                message: w.message(),
                field: Field::new("room name"),
            });
        }
        w.u32(Field::new("session"), self.session)?;
        w.u8(Field::new("joined"), self.joined_raw)?;
        w.u16(Field::new("peer id"), self.peer)?;
        w.str(Field::new("room name"), self.name)
    }
}
