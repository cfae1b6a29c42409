//! The JSON schema of a decoded packet, in one place. `decode --json`, `dump`, `sniff`
//! and `proxy` all print packets through this module (README: "JSON schema").
//!
//! Field names are snake_case, numbers are numbers, byte payloads are lowercase hex
//! strings, a relay's wrapped packet is a nested object (`inner`). The serializer
//! streams straight into the output writer: no intermediate `serde_json::Value`.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::codec::{
    Channel, ChannelType, ClientInfo, CodecSettings, DecodeError, DecodeErrorKind, Message, Packet,
    Seq, ServerRelay, WireItem, WireStr,
};
use crate::hex::Hex;

/// Names the printer may add next to ids (`room_name`, `sender_name`, ...).
pub trait Names {
    fn room(&self, _room_id: u16) -> Option<&str> {
        None
    }
    fn client(&self, _client_id: u16) -> Option<&str> {
        None
    }
}

/// No names known.
pub struct NoNames;
impl Names for NoNames {}

/// A decoded packet (or the error that stopped decoding) as JSON.
pub struct PacketJson<'p, 'a, N: Names + ?Sized> {
    pub bytes: &'a [u8],
    pub result: &'p Result<Packet<'a>, DecodeError>,
    pub names: &'p N,
}

impl<N: Names + ?Sized> Serialize for PacketJson<'_, '_, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        write_packet_fields(&mut m, self.bytes, self.result, self.names)?;
        m.end()
    }
}

/// Writes the fields of a packet object into an open map, so callers (dump) can add
/// their own metadata around them in the same object.
pub fn write_packet_fields<M: SerializeMap, N: Names + ?Sized>(
    m: &mut M,
    bytes: &[u8],
    result: &Result<Packet<'_>, DecodeError>,
    names: &N,
) -> Result<(), M::Error> {
    match result {
        Ok(p) => {
            m.serialize_entry("magic_ok", &true)?;
            m.serialize_entry("variant", p.variant.name())?;
            let t = p.message.message_type();
            m.serialize_entry("type", t.name())?;
            m.serialize_entry("type_byte", &(t as u8))?;
            m.serialize_entry("size", &bytes.len())?;
            m.serialize_entry("bytes_read", &(bytes.len() - p.trailing.len()))?;
            m.serialize_entry("trailing_bytes", &p.trailing.len())?;
            if !p.trailing.is_empty() {
                m.serialize_entry("trailing_hex", &HexStr(p.trailing))?;
            }
            write_message(m, &p.message, names)
        }
        Err(e) => write_error_fields(m, bytes, e),
    }
}

fn write_error_fields<M: SerializeMap>(
    m: &mut M,
    bytes: &[u8],
    e: &DecodeError,
) -> Result<(), M::Error> {
    let magic_ok = !matches!(e.kind, DecodeErrorKind::BadMagic { .. }) && bytes.len() >= 2;
    m.serialize_entry("magic_ok", &magic_ok)?;
    match e.kind {
        DecodeErrorKind::BadMagic { found } => {
            m.serialize_entry("magic", &found)?;
            m.serialize_entry("rejected", "bad_magic")?;
        }
        DecodeErrorKind::UnknownType { type_byte } => {
            m.serialize_entry("type", &None::<&str>)?;
            m.serialize_entry("type_byte", &type_byte)?;
            m.serialize_entry("rejected", "unknown_type")?;
        }
        _ => {
            if let Some(t) = e.message {
                m.serialize_entry("type", t.name())?;
                m.serialize_entry("type_byte", &(t as u8))?;
            }
        }
    }
    m.serialize_entry("size", &bytes.len())?;
    m.serialize_entry("error", &ErrorJson(e))?;
    Ok(())
}

/// A decode error as an object: kind, human message, offset, field, and for
/// truncations the primitive and the bytes needed and left.
pub struct ErrorJson<'e>(pub &'e DecodeError);

impl Serialize for ErrorJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("kind", e.kind_name())?;
        m.serialize_entry("message", &e.to_string())?;
        m.serialize_entry("offset", &e.offset)?;
        if let Some(f) = e.field() {
            m.serialize_entry("field", &f.to_string())?;
        }
        match e.kind {
            DecodeErrorKind::Truncated {
                primitive,
                need,
                left,
                ..
            } => {
                m.serialize_entry("primitive", primitive.dotnet_name())?;
                m.serialize_entry("need", &need)?;
                m.serialize_entry("left", &left)?;
            }
            DecodeErrorKind::UnknownRoomId { room_id, .. } => {
                m.serialize_entry("room_id", &room_id)?;
            }
            _ => {}
        }
        m.end()
    }
}

fn write_message<M: SerializeMap, N: Names + ?Sized>(
    m: &mut M,
    msg: &Message<'_>,
    names: &N,
) -> Result<(), M::Error> {
    match msg {
        Message::ClientState(c) => {
            m.serialize_entry("session", &c.session)?;
            m.serialize_entry("name", &Str(c.name))?;
            m.serialize_entry("client_id", &c.client_id)?;
            m.serialize_entry("codec", &Codec(c.codec))?;
            m.serialize_entry("rooms_encoding", c.rooms_encoding.name())?;
            m.serialize_entry("rooms", &List(c.rooms, Str))?;
        }
        Message::VoiceData(v) => {
            m.serialize_entry("session", &v.session)?;
            m.serialize_entry("sender", &v.sender)?;
            if let Some(n) = names.client(v.sender) {
                m.serialize_entry("sender_name", n)?;
            }
            m.serialize_entry("options", &Options(v.options))?;
            m.serialize_entry("seq", &v.seq)?;
            m.serialize_entry("num_channels", &v.channels.len())?;
            m.serialize_entry("channels", &Channels(v.channels, names))?;
            m.serialize_entry("audio_len", &v.audio.len())?;
            m.serialize_entry("audio_hex", &HexStr(v.audio))?;
        }
        Message::TextData(t) => {
            m.serialize_entry("session", &t.session)?;
            m.serialize_entry("recipient_type_byte", &t.recipient_type_byte)?;
            m.serialize_entry("recipient_type", &t.recipient_type().map(ChannelType::name))?;
            m.serialize_entry("sender", &t.sender)?;
            if let Some(n) = names.client(t.sender) {
                m.serialize_entry("sender_name", n)?;
            }
            m.serialize_entry("target", &t.target)?;
            let target_name = match t.recipient_type() {
                Some(ChannelType::Room) => names.room(t.target),
                Some(ChannelType::Player) => names.client(t.target),
                None => None,
            };
            if let Some(n) = target_name {
                m.serialize_entry("target_name", n)?;
            }
            m.serialize_entry("text", &Str(t.text))?;
        }
        Message::HandshakeRequest(h) => {
            m.serialize_entry("codec", &Codec(h.codec))?;
            m.serialize_entry("name", &Str(h.name))?;
        }
        Message::HandshakeResponse(h) => {
            m.serialize_entry("session", &h.session)?;
            m.serialize_entry("client_id", &h.client_id)?;
            m.serialize_entry("form", if h.is_modern() { "modern" } else { "legacy" })?;
            m.serialize_entry("clients", &List(h.clients, ClientJson))?;
            m.serialize_entry("rooms", &ResponseRooms(h))?;
        }
        Message::ErrorWrongSession(e) => {
            m.serialize_entry("session", &e.session)?;
        }
        Message::ServerRelayReliable(r) | Message::ServerRelayUnreliable(r) => {
            write_relay(m, r, names)?;
        }
        Message::DeltaChannelState(d) => {
            m.serialize_entry("session", &d.session)?;
            m.serialize_entry("joined", &d.joined())?;
            m.serialize_entry("joined_raw", &d.joined_raw)?;
            m.serialize_entry("peer", &d.peer)?;
            if let Some(n) = names.client(d.peer) {
                m.serialize_entry("peer_name", n)?;
            }
            m.serialize_entry("name", &Str(d.name))?;
        }
        Message::RemoveClient(r) => {
            m.serialize_entry("session", &r.session)?;
            m.serialize_entry("client_id", &r.client_id)?;
            if let Some(n) = names.client(r.client_id) {
                m.serialize_entry("client_name", n)?;
            }
        }
        Message::HandshakeP2P(h) => {
            m.serialize_entry("session", &h.session)?;
            m.serialize_entry("peer_id", &h.peer_id)?;
        }
    }
    Ok(())
}

fn write_relay<M: SerializeMap, N: Names + ?Sized>(
    m: &mut M,
    r: &ServerRelay<'_>,
    names: &N,
) -> Result<(), M::Error> {
    m.serialize_entry("session", &r.session)?;
    m.serialize_entry("destinations", &List(r.destinations, |d: u16| d))?;
    m.serialize_entry("payload_len", &r.payload.len())?;
    m.serialize_entry("payload_hex", &HexStr(r.payload))?;
    m.serialize_entry("server_relay_verdict", r.server_verdict().name())?;
    let inner = r.inner();
    m.serialize_entry(
        "inner",
        &PacketJson {
            bytes: r.payload,
            result: &inner,
            names,
        },
    )
}

/// Hex string of bytes, streamed.
pub struct HexStr<'a>(pub &'a [u8]);
impl Serialize for HexStr<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Hex(self.0))
    }
}

/// A wire string: JSON string (lossy UTF-8) or null.
struct Str<'a>(WireStr<'a>);
impl Serialize for Str<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.to_str_lossy() {
            Some(t) => s.serialize_str(&t),
            None => s.serialize_none(),
        }
    }
}

struct Codec(CodecSettings);
impl Serialize for Codec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("codec", &c.codec_byte)?;
        m.serialize_entry("codec_name", &c.codec().map(|c| c.name()))?;
        m.serialize_entry("frame_size", &c.frame_size)?;
        m.serialize_entry("sample_rate", &c.sample_rate_i32())?;
        m.end()
    }
}

struct Options(crate::codec::PacketOptions);
impl Serialize for Options {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let o = self.0;
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("raw", &o.0)?;
        m.serialize_entry("channel_session", &o.channel_session())?;
        m.serialize_entry("extended_range", &o.extended_range())?;
        m.serialize_entry("channel_session_range", &o.channel_session_range())?;
        m.end()
    }
}

struct List<'a, T, F>(Seq<'a, T>, F);
impl<'a, T: WireItem<'a>, R: Serialize, F: Fn(T) -> R> Serialize for List<'a, T, F> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut q = s.serialize_seq(Some(self.0.len()))?;
        for item in self.0.iter() {
            q.serialize_element(&(self.1)(item))?;
        }
        q.end()
    }
}

#[allow(non_snake_case)]
fn ClientJson(c: ClientInfo<'_>) -> impl Serialize + '_ {
    struct C<'a>(ClientInfo<'a>);
    impl Serialize for C<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(3))?;
            m.serialize_entry("name", &Str(self.0.name))?;
            m.serialize_entry("id", &self.0.id)?;
            m.serialize_entry("codec", &Codec(self.0.codec))?;
            m.end()
        }
    }
    C(c)
}

struct ResponseRooms<'p, 'a>(&'p crate::codec::HandshakeResponse<'a>);
impl Serialize for ResponseRooms<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut q = s.serialize_seq(None)?;
        for r in self.0.rooms() {
            q.serialize_element(&RoomJson(r))?;
        }
        q.end()
    }
}

struct RoomJson<'a>(crate::codec::ResponseRoom<'a>);
impl Serialize for RoomJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("name", &Str(self.0.name))?;
        m.serialize_entry("room_id", &self.0.room_id)?;
        m.serialize_entry("peers", &List(self.0.peers, |p: u16| p))?;
        m.end()
    }
}

struct Channels<'p, 'a, N: ?Sized>(Seq<'a, Channel>, &'p N);
impl<N: Names + ?Sized> Serialize for Channels<'_, '_, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut q = s.serialize_seq(Some(self.0.len()))?;
        for c in self.0.iter() {
            q.serialize_element(&ChannelJson(c, self.1))?;
        }
        q.end()
    }
}

struct ChannelJson<'p, N: ?Sized>(Channel, &'p N);
impl<N: Names + ?Sized> Serialize for ChannelJson<'_, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let b = c.bitfield;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("bitfield", &b.0)?;
        m.serialize_entry("recipient", &c.recipient)?;
        let name = match b.channel_type() {
            ChannelType::Room => self.1.room(c.recipient),
            ChannelType::Player => self.1.client(c.recipient),
        };
        if let Some(n) = name {
            m.serialize_entry("recipient_name", n)?;
        }
        m.serialize_entry("type", b.channel_type().name())?;
        m.serialize_entry("closing", &b.closing())?;
        m.serialize_entry("positional", &b.positional())?;
        m.serialize_entry("priority", b.priority().name())?;
        m.serialize_entry("volume", &b.volume())?;
        m.serialize_entry("amplitude", &b.amplitude())?;
        m.serialize_entry("session_id", &b.session_id())?;
        m.end()
    }
}
