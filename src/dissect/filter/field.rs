//! The fields a filter (and `-T fields`) can name: every key of the JSON schema
//! (docs/json-schema.md) by its dotted path, read straight from the decoded packet, its
//! capture metadata and the session's names — no JSON is built.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::codec::{
    Channel, ChannelType, CodecSettings, DecodeError, DecodeErrorKind, Message, Packet,
};
use crate::output::json::Names;
use crate::output::{Head, Rfc3339};

/// What a field holds, for checking literals when a filter is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Num,
    Str,
    Bool,
    Addr,
}

/// One value of a field (a field may have none, one, or several: `channels.*`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'v> {
    Num(f64),
    Str(&'v str),
    Bool(bool),
    Addr(IpAddr),
}

impl std::fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Num(n) => write!(f, "{n}"),
            Value::Str(s) => f.write_str(s),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// What a filter is evaluated against: one packet found in a capture (or a packet alone,
/// `head: None`, as a relay's wrapped packet), with the names its session knows.
pub struct Subject<'s, 'a> {
    pub head: Option<&'s Head>,
    pub bytes: &'a [u8],
    pub result: &'s Result<Packet<'a>, DecodeError>,
    pub names: &'s dyn Names,
}

macro_rules! fields {
    ($($id:ident $name:literal $kind:ident,)*) => {
        /// A field, by the key path of the JSON schema.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum FieldId { $($id,)* }
        /// Every field: name, id, kind (in the order of docs/json-schema.md).
        pub const FIELDS: &[(&str, FieldId, Kind)] = &[$(($name, FieldId::$id, Kind::$kind),)*];
    };
}

fields! {
    // Capture metadata.
    Packet "packet" Num,
    Ts "ts" Num,
    Time "time" Str,
    Rel "rel" Num,
    Src "src" Addr,
    SrcPort "src_port" Num,
    Dst "dst" Addr,
    DstPort "dst_port" Num,
    Transport "transport" Str,
    PayloadOffset "payload_offset" Num,
    IndexInPayload "index_in_payload" Num,
    FirstPacket "first_packet" Num,
    Direction "direction" Str,
    Malformed "malformed" Bool,
    // Either address or port (as tshark's ip.addr, udp.port).
    Addr "addr" Addr,
    Port "port" Num,
    // Every packet.
    MagicOk "magic_ok" Bool,
    Variant "variant" Str,
    Type "type" Str,
    TypeByte "type_byte" Num,
    Size "size" Num,
    BytesRead "bytes_read" Num,
    TrailingBytes "trailing_bytes" Num,
    TrailingHex "trailing_hex" Str,
    // Message keys.
    Session "session" Num,
    Name "name" Str,
    ClientId "client_id" Num,
    Codec "codec" Num,
    CodecCodec "codec.codec" Num,
    CodecName "codec.codec_name" Str,
    CodecFrameSize "codec.frame_size" Num,
    CodecSampleRate "codec.sample_rate" Num,
    RoomsEncoding "rooms_encoding" Str,
    Rooms "rooms" Str,
    RoomsName "rooms.name" Str,
    RoomsRoomId "rooms.room_id" Num,
    RoomsPeers "rooms.peers" Num,
    Sender "sender" Num,
    SenderName "sender_name" Str,
    OptionsRaw "options.raw" Num,
    OptionsChannelSession "options.channel_session" Num,
    OptionsExtendedRange "options.extended_range" Bool,
    OptionsChannelSessionRange "options.channel_session_range" Num,
    Seq "seq" Num,
    NumChannels "num_channels" Num,
    ChBitfield "channels.bitfield" Num,
    ChRecipient "channels.recipient" Num,
    ChRecipientName "channels.recipient_name" Str,
    ChType "channels.type" Str,
    ChClosing "channels.closing" Bool,
    ChPositional "channels.positional" Bool,
    ChPriority "channels.priority" Str,
    ChVolume "channels.volume" Num,
    ChAmplitude "channels.amplitude" Num,
    ChSessionId "channels.session_id" Num,
    AudioLen "audio_len" Num,
    AudioHex "audio_hex" Str,
    RecipientTypeByte "recipient_type_byte" Num,
    RecipientType "recipient_type" Str,
    Target "target" Num,
    TargetName "target_name" Str,
    Text "text" Str,
    Form "form" Str,
    ClientsName "clients.name" Str,
    ClientsId "clients.id" Num,
    ClientsCodecCodec "clients.codec.codec" Num,
    ClientsCodecName "clients.codec.codec_name" Str,
    ClientsCodecFrameSize "clients.codec.frame_size" Num,
    ClientsCodecSampleRate "clients.codec.sample_rate" Num,
    Destinations "destinations" Num,
    PayloadLen "payload_len" Num,
    PayloadHex "payload_hex" Str,
    ServerRelayVerdict "server_relay_verdict" Str,
    Joined "joined" Bool,
    JoinedRaw "joined_raw" Num,
    Peer "peer" Num,
    PeerName "peer_name" Str,
    ClientName "client_name" Str,
    PeerId "peer_id" Num,
    // Malformed packets.
    Magic "magic" Num,
    Rejected "rejected" Str,
    Error "error" Str,
    ErrorKind "error.kind" Str,
    ErrorMessage "error.message" Str,
    ErrorOffset "error.offset" Num,
    ErrorField "error.field" Str,
    ErrorPrimitive "error.primitive" Str,
    ErrorNeed "error.need" Num,
    ErrorLeft "error.left" Num,
    ErrorRoomId "error.room_id" Num,
}

/// A field path: `inner.` repeated `inner` times (a relay's wrapped packet), then a
/// field; `voice.X` is X of a VoiceData message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub inner: u8,
    pub voice_only: bool,
    pub id: FieldId,
    pub kind: Kind,
}

impl Field {
    /// Looks a dotted name up; `None` when no such field exists.
    pub fn parse(name: &str) -> Option<Field> {
        let mut rest = name;
        let mut inner = 0u8;
        while let Some(r) = rest.strip_prefix("inner.") {
            inner = inner.checked_add(1)?;
            rest = r;
        }
        let (voice_only, rest) = match rest.strip_prefix("voice.") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        // The wrapped packet has no capture metadata: `inner.src` names nothing.
        let &(_, id, kind) = FIELDS.iter().find(|(n, _, _)| *n == rest)?;
        if inner > 0 && is_head(id) {
            return None;
        }
        Some(Field {
            inner,
            voice_only,
            id,
            kind,
        })
    }

    /// Calls `f` with each value of the field until it returns true; true if it did.
    pub fn any(&self, s: &Subject<'_, '_>, f: &mut dyn FnMut(Value<'_>) -> bool) -> bool {
        if self.inner > 0 {
            let Ok(p) = s.result else { return false };
            let (Message::ServerRelayReliable(r) | Message::ServerRelayUnreliable(r)) = &p.message
            else {
                return false;
            };
            let inner = r.inner();
            let sub = Subject {
                head: None,
                bytes: r.payload,
                result: &inner,
                names: s.names,
            };
            let next = Field {
                inner: self.inner - 1,
                ..*self
            };
            return next.any(&sub, f);
        }
        if self.voice_only
            && !matches!(
                s.result,
                Ok(Packet {
                    message: Message::VoiceData(_),
                    ..
                })
            )
        {
            return false;
        }
        if is_head(self.id) {
            return match s.head {
                Some(h) => head_value(self.id, h, s.result.is_err(), f),
                None => false,
            };
        }
        match s.result {
            Ok(p) => ok_value(self.id, s.bytes, p, s.names, f),
            Err(e) => err_value(self.id, s.bytes, e, f),
        }
    }
}

fn is_head(id: FieldId) -> bool {
    use FieldId::*;
    matches!(
        id,
        Packet
            | Ts
            | Time
            | Rel
            | Src
            | SrcPort
            | Dst
            | DstPort
            | Transport
            | PayloadOffset
            | IndexInPayload
            | FirstPacket
            | Direction
            | Malformed
            | Addr
            | Port
    )
}

type Visit<'f> = &'f mut dyn FnMut(Value<'_>) -> bool;

fn num(f: Visit<'_>, v: impl Into<f64>) -> bool {
    f(Value::Num(v.into()))
}

fn head_value(id: FieldId, h: &Head, malformed: bool, f: Visit<'_>) -> bool {
    use FieldId::*;
    match id {
        Packet => num(f, h.number as f64),
        // Whole seconds and fraction apart: ns since 1970 exceed f64's exact integers.
        Ts => num(
            f,
            h.ts_ns.div_euclid(1_000_000_000) as f64
                + h.ts_ns.rem_euclid(1_000_000_000) as f64 / 1e9,
        ),
        Time => f(Value::Str(&Rfc3339(h.ts_ns).to_string())),
        Rel => num(f, h.rel_s),
        Src => f(Value::Addr(h.src.ip())),
        SrcPort => num(f, h.src.port()),
        Dst => f(Value::Addr(h.dst.ip())),
        DstPort => num(f, h.dst.port()),
        Transport => f(Value::Str(h.transport)),
        PayloadOffset => num(f, h.offset as f64),
        IndexInPayload => num(f, h.index as f64),
        FirstPacket => h.first_frame.is_some_and(|n| num(f, n as f64)),
        Direction => f(Value::Str(h.direction.name())),
        Malformed => f(Value::Bool(malformed)),
        Addr => f(Value::Addr(h.src.ip())) || f(Value::Addr(h.dst.ip())),
        Port => num(f, h.src.port()) || num(f, h.dst.port()),
        _ => false,
    }
}

/// A wire string's value; a null string has none.
fn wire(f: Visit<'_>, s: crate::codec::WireStr<'_>) -> bool {
    match s.to_str_lossy() {
        Some(t) => f(Value::Str(&t)),
        None => false,
    }
}

fn opt_str(f: Visit<'_>, s: Option<&str>) -> bool {
    s.is_some_and(|s| f(Value::Str(s)))
}

fn hex(f: Visit<'_>, bytes: &[u8]) -> bool {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    f(Value::Str(&s))
}

fn codec_value(id: FieldId, c: &CodecSettings, f: Visit<'_>) -> bool {
    use FieldId::*;
    match id {
        Codec | CodecCodec | ClientsCodecCodec => num(f, c.codec_byte),
        CodecName | ClientsCodecName => opt_str(f, c.codec().map(|c| c.name())),
        CodecFrameSize | ClientsCodecFrameSize => num(f, c.frame_size),
        CodecSampleRate | ClientsCodecSampleRate => num(f, c.sample_rate_i32()),
        _ => false,
    }
}

fn channel_value(id: FieldId, c: &Channel, names: &dyn Names, f: Visit<'_>) -> bool {
    use FieldId::*;
    let b = c.bitfield;
    match id {
        ChBitfield => num(f, b.0),
        ChRecipient => num(f, c.recipient),
        ChRecipientName => opt_str(
            f,
            match b.channel_type() {
                ChannelType::Room => names.room(c.recipient),
                ChannelType::Player => names.client(c.recipient),
            },
        ),
        ChType => f(Value::Str(b.channel_type().name())),
        ChClosing => f(Value::Bool(b.closing())),
        ChPositional => f(Value::Bool(b.positional())),
        ChPriority => f(Value::Str(b.priority().name())),
        ChVolume => num(f, b.volume()),
        ChAmplitude => num(f, b.amplitude()),
        ChSessionId => num(f, b.session_id()),
        _ => false,
    }
}

fn ok_value(id: FieldId, bytes: &[u8], p: &Packet<'_>, names: &dyn Names, f: Visit<'_>) -> bool {
    use FieldId::*;
    let m = &p.message;
    match id {
        MagicOk => return f(Value::Bool(true)),
        Variant => return f(Value::Str(p.variant.name())),
        Type => return f(Value::Str(m.message_type().name())),
        TypeByte => return num(f, m.message_type() as u8),
        Size => return num(f, bytes.len() as f64),
        BytesRead => return num(f, (bytes.len() - p.trailing.len()) as f64),
        TrailingBytes => return num(f, p.trailing.len() as f64),
        TrailingHex => return !p.trailing.is_empty() && hex(f, p.trailing),
        Session => return m.session().is_some_and(|s| num(f, s)),
        Malformed | Error | ErrorKind | ErrorMessage | ErrorOffset | ErrorField
        | ErrorPrimitive | ErrorNeed | ErrorLeft | ErrorRoomId | Magic | Rejected => return false,
        _ => {}
    }
    match m {
        Message::ClientState(c) => match id {
            Name => wire(f, c.name),
            ClientId => num(f, c.client_id),
            Codec | CodecCodec | CodecName | CodecFrameSize | CodecSampleRate => {
                codec_value(id, &c.codec, f)
            }
            RoomsEncoding => f(Value::Str(c.rooms_encoding.name())),
            Rooms => c.rooms.iter().any(|r| wire(f, r)),
            _ => false,
        },
        Message::VoiceData(v) => match id {
            Sender => num(f, v.sender),
            SenderName => opt_str(f, names.client(v.sender)),
            OptionsRaw => num(f, v.options.0),
            OptionsChannelSession => num(f, v.options.channel_session()),
            OptionsExtendedRange => f(Value::Bool(v.options.extended_range())),
            OptionsChannelSessionRange => num(f, v.options.channel_session_range()),
            Seq => num(f, v.seq),
            NumChannels => num(f, v.channels.len() as f64),
            ChBitfield | ChRecipient | ChRecipientName | ChType | ChClosing | ChPositional
            | ChPriority | ChVolume | ChAmplitude | ChSessionId => {
                v.channels.iter().any(|c| channel_value(id, &c, names, f))
            }
            AudioLen => num(f, v.audio.len() as f64),
            AudioHex => hex(f, v.audio),
            _ => false,
        },
        Message::TextData(t) => match id {
            RecipientTypeByte => num(f, t.recipient_type_byte),
            RecipientType => opt_str(f, t.recipient_type().map(ChannelType::name)),
            Sender => num(f, t.sender),
            SenderName => opt_str(f, names.client(t.sender)),
            Target => num(f, t.target),
            TargetName => opt_str(
                f,
                match t.recipient_type() {
                    Some(ChannelType::Room) => names.room(t.target),
                    Some(ChannelType::Player) => names.client(t.target),
                    None => None,
                },
            ),
            Text => wire(f, t.text),
            _ => false,
        },
        Message::HandshakeRequest(h) => match id {
            Codec | CodecCodec | CodecName | CodecFrameSize | CodecSampleRate => {
                codec_value(id, &h.codec, f)
            }
            Name => wire(f, h.name),
            _ => false,
        },
        Message::HandshakeResponse(h) => match id {
            ClientId => num(f, h.client_id),
            Form => f(Value::Str(if h.is_modern() { "modern" } else { "legacy" })),
            ClientsName => h.clients.iter().any(|c| wire(f, c.name)),
            ClientsId => h.clients.iter().any(|c| num(f, c.id)),
            ClientsCodecCodec
            | ClientsCodecName
            | ClientsCodecFrameSize
            | ClientsCodecSampleRate => h.clients.iter().any(|c| codec_value(id, &c.codec, f)),
            Rooms | RoomsName => h.rooms().any(|r| wire(f, r.name)),
            RoomsRoomId => h.rooms().any(|r| num(f, r.room_id)),
            RoomsPeers => h.rooms().any(|r| r.peers.iter().any(|p| num(f, p))),
            _ => false,
        },
        Message::ErrorWrongSession(_) => false,
        Message::ServerRelayReliable(r) | Message::ServerRelayUnreliable(r) => match id {
            Destinations => r.destinations.iter().any(|d| num(f, d)),
            PayloadLen => num(f, r.payload.len() as f64),
            PayloadHex => hex(f, r.payload),
            ServerRelayVerdict => f(Value::Str(r.server_verdict().name())),
            _ => false,
        },
        Message::DeltaChannelState(d) => match id {
            Joined => f(Value::Bool(d.joined())),
            JoinedRaw => num(f, d.joined_raw),
            Peer => num(f, d.peer),
            PeerName => opt_str(f, names.client(d.peer)),
            Name => wire(f, d.name),
            _ => false,
        },
        Message::RemoveClient(r) => match id {
            ClientId => num(f, r.client_id),
            ClientName => opt_str(f, names.client(r.client_id)),
            _ => false,
        },
        Message::HandshakeP2P(h) => match id {
            PeerId => num(f, h.peer_id),
            _ => false,
        },
    }
}

fn err_value(id: FieldId, bytes: &[u8], e: &DecodeError, f: Visit<'_>) -> bool {
    use FieldId::*;
    let bad_magic = matches!(e.kind, DecodeErrorKind::BadMagic { .. });
    match (id, &e.kind) {
        (MagicOk, _) => f(Value::Bool(!bad_magic && bytes.len() >= 2)),
        (Magic, DecodeErrorKind::BadMagic { found }) => num(f, *found),
        (Rejected, DecodeErrorKind::BadMagic { .. }) => f(Value::Str("bad_magic")),
        (Rejected, DecodeErrorKind::UnknownType { .. }) => f(Value::Str("unknown_type")),
        (TypeByte, DecodeErrorKind::UnknownType { type_byte }) => num(f, *type_byte),
        (
            Type | TypeByte,
            DecodeErrorKind::UnknownType { .. } | DecodeErrorKind::BadMagic { .. },
        ) => false,
        (Type, _) => opt_str(f, e.message.map(|t| t.name())),
        (TypeByte, _) => e.message.is_some_and(|t| num(f, t as u8)),
        (Size, _) => num(f, bytes.len() as f64),
        (Error | ErrorKind, _) => f(Value::Str(e.kind_name())),
        (ErrorMessage, _) => f(Value::Str(&e.to_string())),
        (ErrorOffset, _) => num(f, e.offset as f64),
        (ErrorField, _) => e
            .field()
            .is_some_and(|fl| f(Value::Str(&Cow::<str>::Owned(fl.to_string())))),
        (ErrorPrimitive, DecodeErrorKind::Truncated { primitive, .. }) => {
            f(Value::Str(primitive.dotnet_name()))
        }
        (ErrorNeed, DecodeErrorKind::Truncated { need, .. }) => num(f, *need as f64),
        (ErrorLeft, DecodeErrorKind::Truncated { left, .. }) => num(f, *left as f64),
        (ErrorRoomId, DecodeErrorKind::UnknownRoomId { room_id, .. }) => num(f, *room_id),
        _ => false,
    }
}
