use crate::codec::{
    CodecSettings, DecodeError, DecodeErrorKind, EncodeError, Field, Reader, Seq, WireStr, Writer,
};

/// How the room list of a ClientState was present on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoomsEncoding {
    /// A u16 count and that many strings (what every real sender writes).
    #[default]
    List,
    /// Nothing after the codec settings: 9.0.8+ readers take "no rooms".
    Absent,
    /// One stray byte after the codec settings: 9.0.8+ readers warn and take "no rooms"
    /// (the byte is left as trailing data).
    StrayByte,
}

impl RoomsEncoding {
    pub fn name(self) -> &'static str {
        match self {
            RoomsEncoding::List => "list",
            RoomsEncoding::Absent => "absent",
            RoomsEncoding::StrayByte => "invalid_1_byte",
        }
    }
}

/// Type 1: a client's name, id, codec and the rooms it listens to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientState<'a> {
    pub session: u32,
    /// Never null in a packet the real reader accepts.
    pub name: WireStr<'a>,
    pub client_id: u16,
    pub codec: CodecSettings,
    /// Rooms this client listens to, by name. Entries may be null (fatal for receivers).
    pub rooms: Seq<'a, WireStr<'a>>,
    pub rooms_encoding: RoomsEncoding,
}

impl<'a> ClientState<'a> {
    pub(crate) fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let session = r.u32(Field::new("session"))?;
        let name_at = r.pos();
        let name = r.str(Field::new("name"))?;
        let client_id = r.u16(Field::new("client id"))?;
        let codec = CodecSettings::read(r)?;
        if name.is_null() {
            // The real reader reads the whole record, then refuses the null name.
            return Err(r.error(
                name_at,
                DecodeErrorKind::NullString {
                    field: Field::new("name"),
                },
            ));
        }
        let (rooms, rooms_encoding) = match r.remaining() {
            0 => (Seq::default(), RoomsEncoding::Absent),
            1 => (Seq::default(), RoomsEncoding::StrayByte),
            _ => {
                let n = r.u16(Field::new("room count"))? as usize;
                (Seq::read(r, "room", n)?, RoomsEncoding::List)
            }
        };
        Ok(ClientState {
            session,
            name,
            client_id,
            codec,
            rooms,
            rooms_encoding,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        if self.name.is_null() {
            return Err(EncodeError::NullString {
                message: w.message(),
                field: Field::new("name"),
            });
        }
        w.u32(Field::new("session"), self.session)?;
        w.str(Field::new("name"), self.name)?;
        w.u16(Field::new("client id"), self.client_id)?;
        self.codec.write(w)?;
        if self.rooms_encoding == RoomsEncoding::List || !self.rooms.is_empty() {
            w.count16(Field::new("room count"), self.rooms.len())?;
            self.rooms.write_items(w, "room")?;
        }
        Ok(())
    }
}
