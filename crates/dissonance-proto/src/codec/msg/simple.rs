//! The three fixed-size messages.

use crate::codec::{DecodeError, EncodeError, Field, Reader, Writer};

/// Type 6: the server's current session, sent to a peer that used another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorWrongSession {
    pub session: u32,
}

/// Type 10: a client left the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoveClient {
    pub session: u32,
    pub client_id: u16,
}

/// Type 11: "the connection this arrived on reaches client `peer_id`" (direct P2P only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeP2P {
    pub session: u32,
    pub peer_id: u16,
}

impl ErrorWrongSession {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ErrorWrongSession {
            session: r.u32(Field::new("session"))?,
        })
    }
    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u32(Field::new("session"), self.session)
    }
}

impl RemoveClient {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(RemoveClient {
            session: r.u32(Field::new("session"))?,
            client_id: r.u16(Field::new("client id"))?,
        })
    }
    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u32(Field::new("session"), self.session)?;
        w.u16(Field::new("client id"), self.client_id)
    }
}

impl HandshakeP2P {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(HandshakeP2P {
            session: r.u32(Field::new("session"))?,
            peer_id: r.u16(Field::new("peer id"))?,
        })
    }
    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u32(Field::new("session"), self.session)?;
        w.u16(Field::new("peer id"), self.peer_id)
    }
}
