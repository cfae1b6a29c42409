//! Human-readable output: a block per packet (`decode`) and a one-line summary
//! (`dump`, `sniff`, `proxy`). Names of rooms and clients are added where known.

use std::fmt::{self, Write};

use crate::codec::{
    ChannelType, CodecSettings, DecodeError, Message, Packet, RelayVerdict, Seq, WireStr,
};
use crate::output::hex::Hex;
use crate::output::json::Names;

/// Writes a multi-line description of one packet.
pub fn write_block<W: Write, N: Names + ?Sized>(
    out: &mut W,
    bytes: &[u8],
    result: &Result<Packet<'_>, DecodeError>,
    names: &N,
    indent: usize,
) -> fmt::Result {
    let pad = " ".repeat(indent);
    match result {
        Err(e) => {
            writeln!(out, "{pad}MALFORMED ({} bytes): {e}", bytes.len())?;
            writeln!(out, "{pad}  bytes:       {}", Hex(bytes))?;
            Ok(())
        }
        Ok(p) => {
            let variant = match p.variant {
                crate::codec::Variant::Modern => "6.1+ byte order",
                crate::codec::Variant::Legacy60 => "6.0.x byte order",
            };
            writeln!(
                out,
                "{pad}{} ({} bytes, {variant})",
                p.message.message_type(),
                bytes.len()
            )?;
            let f = |out: &mut W, k: &str, v: fmt::Arguments| writeln!(out, "{pad}  {k:<12} {v}");
            match &p.message {
                Message::ClientState(c) => {
                    f(out, "session:", format_args!("{}", Session(c.session)))?;
                    f(out, "name:", format_args!("{:?}", c.name))?;
                    f(out, "client id:", format_args!("{}", c.client_id))?;
                    f(out, "codec:", format_args!("{}", CodecText(c.codec)))?;
                    f(
                        out,
                        "rooms:",
                        format_args!("{}", RoomList(c.rooms, c.rooms_encoding.name())),
                    )?;
                }
                Message::VoiceData(v) => {
                    f(out, "session:", format_args!("{}", Session(v.session)))?;
                    f(out, "sender:", format_args!("{}", Client(v.sender, names)))?;
                    f(
                        out,
                        "options:",
                        format_args!(
                            "0x{:02X} (channel session {} of {}{})",
                            v.options.0,
                            v.options.channel_session(),
                            v.options.channel_session_range(),
                            if v.options.extended_range() {
                                ", 7.1.2+"
                            } else {
                                ""
                            }
                        ),
                    )?;
                    f(out, "sequence:", format_args!("{}", v.seq))?;
                    f(out, "channels:", format_args!("{}", v.channels.len()))?;
                    for (i, c) in v.channels.iter().enumerate() {
                        let b = c.bitfield;
                        write!(out, "{pad}    [{i}] ")?;
                        match b.channel_type() {
                            ChannelType::Room => write!(out, "room {}", Room(c.recipient, names))?,
                            ChannelType::Player => {
                                write!(out, "player {}", Client(c.recipient, names))?
                            }
                        }
                        write!(
                            out,
                            "  bitfield 0x{:04X}: priority {}, volume {} (x{:.4}), session {}",
                            b.0,
                            b.priority().name(),
                            b.volume(),
                            b.amplitude(),
                            b.session_id()
                        )?;
                        if b.positional() {
                            write!(out, ", positional")?;
                        }
                        if b.closing() {
                            write!(out, ", closing")?;
                        }
                        writeln!(out)?;
                    }
                    f(
                        out,
                        "audio:",
                        format_args!("{} bytes {}", v.audio.len(), Hex(v.audio)),
                    )?;
                }
                Message::TextData(t) => {
                    f(out, "session:", format_args!("{}", Session(t.session)))?;
                    f(out, "sender:", format_args!("{}", Client(t.sender, names)))?;
                    match t.recipient_type() {
                        Some(ChannelType::Room) => {
                            f(out, "to:", format_args!("room {}", Room(t.target, names)))?
                        }
                        Some(ChannelType::Player) => f(
                            out,
                            "to:",
                            format_args!("player {}", Client(t.target, names)),
                        )?,
                        None => f(
                            out,
                            "to:",
                            format_args!(
                                "recipient type {} (invalid: real clients disconnect), target {}",
                                t.recipient_type_byte, t.target
                            ),
                        )?,
                    }
                    f(out, "text:", format_args!("{:?}", t.text))?;
                }
                Message::HandshakeRequest(h) => {
                    f(out, "name:", format_args!("{:?}", h.name))?;
                    f(out, "codec:", format_args!("{}", CodecText(h.codec)))?;
                }
                Message::HandshakeResponse(h) => {
                    f(out, "session:", format_args!("{}", Session(h.session)))?;
                    f(out, "client id:", format_args!("{}", h.client_id))?;
                    if h.is_modern() {
                        f(
                            out,
                            "form:",
                            format_args!("modern (empty; state follows as ClientState packets)"),
                        )?;
                    } else {
                        f(out, "form:", format_args!("legacy (<= 6.2.2, full state)"))?;
                        for c in h.clients.iter() {
                            f(
                                out,
                                "client:",
                                format_args!("{} {:?} {}", c.id, c.name, CodecText(c.codec)),
                            )?;
                        }
                        for r in h.rooms() {
                            let peers: Vec<String> =
                                r.peers.iter().map(|p| p.to_string()).collect();
                            f(
                                out,
                                "room:",
                                format_args!(
                                    "{:?} (id {}) listeners [{}]",
                                    r.name,
                                    r.room_id,
                                    peers.join(", ")
                                ),
                            )?;
                        }
                    }
                }
                Message::ErrorWrongSession(e) => {
                    f(
                        out,
                        "session:",
                        format_args!("{} (the server's current session)", Session(e.session)),
                    )?;
                }
                Message::ServerRelayReliable(r) | Message::ServerRelayUnreliable(r) => {
                    f(out, "session:", format_args!("{}", Session(r.session)))?;
                    let d: Vec<String> = r
                        .destinations
                        .iter()
                        .map(|d| {
                            if d == 0xFFFF {
                                "always-send(65535)".into()
                            } else {
                                Client(d, names).to_string()
                            }
                        })
                        .collect();
                    f(out, "to:", format_args!("[{}]", d.join(", ")))?;
                    let verdict = match r.server_verdict() {
                        RelayVerdict::Relay => "forwarded".to_string(),
                        RelayVerdict::DropBadMagic => {
                            "dropped by the real server (bad inner magic)".into()
                        }
                        RelayVerdict::DropHandshakeP2P => {
                            "dropped by the real server (HandshakeP2P)".into()
                        }
                        RelayVerdict::Throws(e) => format!("makes the real server throw: {e}"),
                    };
                    f(out, "server:", format_args!("{verdict}"))?;
                    f(out, "payload:", format_args!("{} bytes", r.payload.len()))?;
                    write_block(out, r.payload, &r.inner(), names, indent + 4)?;
                }
                Message::DeltaChannelState(d) => {
                    f(out, "session:", format_args!("{}", Session(d.session)))?;
                    f(out, "client:", format_args!("{}", Client(d.peer, names)))?;
                    f(
                        out,
                        "change:",
                        format_args!(
                            "{} {:?} (room id {})",
                            if d.joined() { "joined" } else { "left" },
                            d.name,
                            d.name.room_id()
                        ),
                    )?;
                }
                Message::RemoveClient(r) => {
                    f(out, "session:", format_args!("{}", Session(r.session)))?;
                    f(
                        out,
                        "client:",
                        format_args!("{}", Client(r.client_id, names)),
                    )?;
                }
                Message::HandshakeP2P(h) => {
                    f(out, "session:", format_args!("{}", Session(h.session)))?;
                    f(out, "peer:", format_args!("{}", Client(h.peer_id, names)))?;
                }
            }
            if !p.trailing.is_empty() {
                f(
                    out,
                    "note:",
                    format_args!(
                        "{} trailing bytes after the message (ignored by real readers): {}",
                        p.trailing.len(),
                        Hex(p.trailing)
                    ),
                )?;
            }
            Ok(())
        }
    }
}

/// A one-line summary of a message, e.g. `VoiceData alice(0) seq 7 -> room Global [60 B]`.
pub struct Summary<'p, 'a, N: ?Sized>(pub &'p Message<'a>, pub &'p N);

impl<N: Names + ?Sized> fmt::Display for Summary<'_, '_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.1;
        let t = self.0.message_type();
        write!(f, "{t}")?;
        match self.0 {
            Message::ClientState(c) => {
                write!(
                    f,
                    " {}({}) rooms {}",
                    Name(c.name),
                    c.client_id,
                    RoomList(c.rooms, "")
                )
            }
            Message::VoiceData(v) => {
                write!(f, " {} seq {} ->", Client(v.sender, names), v.seq)?;
                for (i, c) in v.channels.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    match c.bitfield.channel_type() {
                        ChannelType::Room => write!(f, "{sep}room {}", Room(c.recipient, names))?,
                        ChannelType::Player => write!(f, "{sep}{}", Client(c.recipient, names))?,
                    }
                    if c.bitfield.closing() {
                        write!(f, " (closing)")?;
                    }
                }
                write!(f, " [{} B]", v.audio.len())
            }
            Message::TextData(t) => {
                write!(f, " {} -> ", Client(t.sender, names))?;
                match t.recipient_type() {
                    Some(ChannelType::Room) => write!(f, "room {}", Room(t.target, names))?,
                    Some(ChannelType::Player) => write!(f, "{}", Client(t.target, names))?,
                    None => write!(f, "type {} target {}", t.recipient_type_byte, t.target)?,
                }
                write!(f, ": {:?}", t.text)
            }
            Message::HandshakeRequest(h) => write!(f, " {} {}", Name(h.name), CodecText(h.codec)),
            Message::HandshakeResponse(h) => write!(
                f,
                " session {} id {}{}",
                Session(h.session),
                h.client_id,
                if h.is_modern() {
                    ""
                } else {
                    " (legacy full state)"
                }
            ),
            Message::ErrorWrongSession(e) => write!(f, " server session is {}", Session(e.session)),
            Message::ServerRelayReliable(r) | Message::ServerRelayUnreliable(r) => {
                write!(f, " to [")?;
                for (i, d) in r.destinations.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{}", Client(d, names))?;
                }
                write!(f, "]: ")?;
                match r.inner() {
                    Ok(p) => write!(f, "{}", Summary(&p.message, names)),
                    Err(e) => write!(f, "MALFORMED {e}"),
                }
            }
            Message::DeltaChannelState(d) => write!(
                f,
                " {} {} room {}",
                Client(d.peer, names),
                if d.joined() { "joined" } else { "left" },
                Name(d.name)
            ),
            Message::RemoveClient(r) => write!(f, " {}", Client(r.client_id, names)),
            Message::HandshakeP2P(h) => write!(f, " from {}", Client(h.peer_id, names)),
        }
    }
}

use super::SessionId as Session;

/// `alice(0)`, or just the id when the name is unknown.
pub struct Client<'n, N: ?Sized>(pub u16, pub &'n N);
impl<N: Names + ?Sized> fmt::Display for Client<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1.client(self.0) {
            Some(n) => write!(f, "{n}({})", self.0),
            None => write!(f, "#{}", self.0),
        }
    }
}

/// `Global`, or `#29976` when the room's name is unknown.
pub struct Room<'n, N: ?Sized>(pub u16, pub &'n N);
impl<N: Names + ?Sized> fmt::Display for Room<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1.room(self.0) {
            Some(n) => f.write_str(n),
            None => write!(f, "#{}", self.0),
        }
    }
}

struct Name<'a>(WireStr<'a>);
impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.to_str_lossy() {
            Some(s) => f.write_str(&s),
            None => f.write_str("(null)"),
        }
    }
}

struct CodecText(CodecSettings);
impl fmt::Display for CodecText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        match c.codec() {
            Some(k) => write!(f, "{}", k.name())?,
            None => write!(f, "unknown codec {}", c.codec_byte)?,
        }
        write!(f, ", {} samples", c.frame_size)?;
        if let Some(ms) = c.frame_ms() {
            write!(f, " ({ms} ms)")?;
        }
        write!(f, ", {} Hz", c.sample_rate_i32())
    }
}

struct RoomList<'a>(Seq<'a, WireStr<'a>>, &'static str);
impl fmt::Display for RoomList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{r:?}")?;
        }
        write!(f, "]")?;
        if !self.1.is_empty() && self.1 != "list" {
            write!(f, " ({})", self.1)?;
        }
        Ok(())
    }
}
