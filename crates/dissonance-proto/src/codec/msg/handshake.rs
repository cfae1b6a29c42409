use crate::codec::{
    ClientInfo, CodecSettings, DecodeError, DecodeErrorKind, EncodeError, Field, Reader, RoomEntry,
    Seq, WireItem, WireStr, Writer,
};

/// Type 4: a client asks to join, with its codec settings and player name.
/// It has no session field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HandshakeRequest<'a> {
    pub codec: CodecSettings,
    /// The player name (a null name makes the real server ignore the request).
    pub name: WireStr<'a>,
}

impl<'a> HandshakeRequest<'a> {
    pub(crate) fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(HandshakeRequest {
            codec: CodecSettings::read(r)?,
            name: r.str(Field::new("name"))?,
        })
    }
    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        self.codec.write(w)?;
        w.str(Field::new("name"), self.name)
    }
}

/// Type 5: the server's answer: session and the id it assigned. Modern servers (6.2.3+)
/// send all three lists empty (15 bytes); older ones fill them with the whole state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HandshakeResponse<'a> {
    pub session: u32,
    pub client_id: u16,
    pub clients: Seq<'a, ClientInfo<'a>>,
    pub room_names: Seq<'a, WireStr<'a>>,
    pub room_entries: Seq<'a, RoomEntry<'a>>,
}

/// A room of a legacy HandshakeResponse as the real reader resolves it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResponseRoom<'a> {
    pub name: WireStr<'a>,
    pub room_id: u16,
    pub peers: Seq<'a, u16>,
}

impl<'a> HandshakeResponse<'a> {
    /// The modern, empty response.
    pub fn modern(session: u32, client_id: u16) -> Self {
        HandshakeResponse {
            session,
            client_id,
            clients: Seq::default(),
            room_names: Seq::default(),
            room_entries: Seq::default(),
        }
    }

    /// True for the 15-byte form of 6.2.3+ servers.
    pub fn is_modern(&self) -> bool {
        self.clients.is_empty() && self.room_names.is_empty() && self.room_entries.is_empty()
    }

    /// Rooms as the real reader builds them: every non-null name, its id, and the peers
    /// of the entry with that id (the last one if several; none if there is no entry).
    pub fn rooms(&self) -> impl Iterator<Item = ResponseRoom<'a>> + '_ {
        self.room_names
            .iter()
            .filter(|n| !n.is_null())
            .map(move |name| {
                let room_id = name.room_id();
                let peers = self
                    .room_entries
                    .iter()
                    .filter(|e| e.room_id == room_id)
                    .last()
                    .map(|e| e.peers)
                    .unwrap_or_default();
                ResponseRoom {
                    name,
                    room_id,
                    peers,
                }
            })
    }

    pub(crate) fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let session = r.u32(Field::new("session"))?;
        let client_id = r.u16(Field::new("client id"))?;
        let nc = r.u16(Field::new("client count"))? as usize;
        let clients = Seq::read(r, "client", nc)?;
        let nr = r.u16(Field::new("room name count"))? as usize;
        let room_names: Seq<'a, WireStr<'a>> = Seq::read(r, "room", nr)?;
        let ne = r.u16(Field::new("room entry count"))? as usize;
        // Ids of the named rooms as a 65 536-bit set: each entry is checked in O(1).
        let mut known = vec![0u64; if ne > 0 { 1024 } else { 0 }];
        if ne > 0 {
            for n in room_names.iter().filter(|n| !n.is_null()) {
                let id = n.room_id() as usize;
                known[id / 64] |= 1 << (id % 64);
            }
        }
        let start = r.pos();
        for i in 0..ne {
            let at = r.pos();
            let entry = RoomEntry::read(r, "room entry", i)?;
            let id = entry.room_id as usize;
            if known[id / 64] & (1 << (id % 64)) == 0 {
                return Err(r.error(
                    at,
                    DecodeErrorKind::UnknownRoomId {
                        field: Field::of("room entry", i, "room id"),
                        room_id: entry.room_id,
                    },
                ));
            }
        }
        let room_entries = Seq::Wire {
            variant: r.variant(),
            count: ne,
            bytes: r.slice_from(start),
        };
        Ok(HandshakeResponse {
            session,
            client_id,
            clients,
            room_names,
            room_entries,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u32(Field::new("session"), self.session)?;
        w.u16(Field::new("client id"), self.client_id)?;
        w.count16(Field::new("client count"), self.clients.len())?;
        self.clients.write_items(w, "client")?;
        w.count16(Field::new("room name count"), self.room_names.len())?;
        self.room_names.write_items(w, "room")?;
        w.count16(Field::new("room entry count"), self.room_entries.len())?;
        self.room_entries.write_items(w, "room entry")
    }
}
