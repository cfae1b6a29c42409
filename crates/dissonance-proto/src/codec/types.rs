//! Field types shared by several messages: strings, lists, codec settings, the
//! per-channel bitfield and the packet-options byte.

use std::borrow::Cow;
use std::fmt;

use super::error::{DecodeError, EncodeError};
use super::reader::Reader;
use super::writer::Writer;

/// The two byte orders of the modern protocol family (docs/protocol.md §0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Variant {
    /// Dissonance 6.1.0 and later: magic `8B C7`, u16 big-endian.
    #[default]
    Modern,
    /// Dissonance 6.0.x: magic `C7 8B`, u16 little-endian (u32 still big-endian).
    Legacy60,
}

impl Variant {
    /// Stable name used in JSON: `modern` or `legacy_6_0`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Modern => "modern",
            Variant::Legacy60 => "legacy_6_0",
        }
    }
}

/// A Dissonance string as it is on the wire: `None` is the null string (length
/// prefix 0), otherwise the raw UTF-8 bytes, borrowed from the packet. Invalid UTF-8 is
/// kept as is (the real reader replaces it with U+FFFD; [`WireStr::to_str_lossy`] does
/// the same) so that re-encoding a decoded packet gives back the same bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct WireStr<'a>(pub Option<&'a [u8]>);

impl<'a> WireStr<'a> {
    pub const NULL: WireStr<'static> = WireStr(None);

    pub fn new(s: &'a str) -> WireStr<'a> {
        WireStr(Some(s.as_bytes()))
    }
    pub fn is_null(&self) -> bool {
        self.0.is_none()
    }
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        self.0
    }
    /// The text as the real reader sees it (invalid UTF-8 becomes U+FFFD); `None` for null.
    pub fn to_str_lossy(&self) -> Option<Cow<'a, str>> {
        self.0.map(String::from_utf8_lossy)
    }
    /// The room id of this string taken as a room name (null hashes like "").
    pub fn room_id(&self) -> u16 {
        match self.to_str_lossy() {
            Some(s) => super::room_id(&s),
            None => super::room_id(""),
        }
    }
}

impl<'a> From<&'a str> for WireStr<'a> {
    fn from(s: &'a str) -> Self {
        WireStr::new(s)
    }
}

impl fmt::Debug for WireStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_str_lossy() {
            Some(s) => fmt::Debug::fmt(&s, f),
            None => f.write_str("null"),
        }
    }
}

impl fmt::Display for WireStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_str_lossy() {
            Some(s) => f.write_str(&s),
            None => f.write_str("(null)"),
        }
    }
}

/// One element type of a wire list ([`Seq`]).
pub trait WireItem<'a>: Sized + Copy {
    /// Reads one item; `index` names it in errors.
    /// Reads item `index` of the list named `list` (both name the field in errors).
    fn read(r: &mut Reader<'a>, list: &'static str, index: usize) -> Result<Self, DecodeError>;
    fn write(
        &self,
        w: &mut Writer<'_>,
        list: &'static str,
        index: usize,
    ) -> Result<(), EncodeError>;
}

/// A list that is either still in its wire form (decoded: validated bytes borrowed from
/// the packet, items parsed on demand, nothing allocated) or a slice of items the caller
/// built (for encoding). Both iterate the same way and compare equal item by item.
#[derive(Clone, Copy)]
pub enum Seq<'a, T> {
    Wire {
        variant: Variant,
        count: usize,
        bytes: &'a [u8],
    },
    Items(&'a [T]),
}

impl<T> Default for Seq<'_, T> {
    fn default() -> Self {
        Seq::Items(&[])
    }
}

impl<'a, T: WireItem<'a>> Seq<'a, T> {
    pub fn len(&self) -> usize {
        match self {
            Seq::Wire { count, .. } => *count,
            Seq::Items(items) => items.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn iter(&self) -> SeqIter<'a, T> {
        match *self {
            Seq::Wire {
                variant,
                count,
                bytes,
            } => SeqIter::Wire {
                reader: Reader::new(bytes, variant, None),
                index: 0,
                count,
            },
            Seq::Items(items) => SeqIter::Items(items.iter()),
        }
    }

    /// Reads `count` items, validating them, and keeps the bytes they span.
    pub(crate) fn read(
        r: &mut Reader<'a>,
        list: &'static str,
        count: usize,
    ) -> Result<Self, DecodeError> {
        let start = r.pos();
        for i in 0..count {
            T::read(r, list, i)?;
        }
        Ok(Seq::Wire {
            variant: r.variant(),
            count,
            bytes: r.slice_from(start),
        })
    }

    pub(crate) fn write_items(
        &self,
        w: &mut Writer<'_>,
        list: &'static str,
    ) -> Result<(), EncodeError> {
        match self {
            // A decoded list in the writer's byte order is copied verbatim.
            Seq::Wire { variant, bytes, .. } if *variant == w.variant() => w.raw(bytes),
            _ => {
                for (i, item) in self.iter().enumerate() {
                    item.write(w, list, i)?;
                }
                Ok(())
            }
        }
    }
}

impl<'a, T: WireItem<'a>> IntoIterator for Seq<'a, T> {
    type Item = T;
    type IntoIter = SeqIter<'a, T>;
    fn into_iter(self) -> SeqIter<'a, T> {
        self.iter()
    }
}

impl<'a, T: WireItem<'a> + PartialEq> PartialEq for Seq<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<'a, T: WireItem<'a> + fmt::Debug> fmt::Debug for Seq<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over a [`Seq`]. A wire list was validated when it was decoded; should a read
/// fail anyway the iterator just ends (it never panics).
pub enum SeqIter<'a, T> {
    Wire {
        reader: Reader<'a>,
        index: usize,
        count: usize,
    },
    Items(std::slice::Iter<'a, T>),
}

impl<'a, T: WireItem<'a>> Iterator for SeqIter<'a, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        match self {
            SeqIter::Wire {
                reader,
                index,
                count,
            } => {
                if *index >= *count {
                    return None;
                }
                let item = T::read(reader, "", *index).ok();
                *index = if item.is_some() { *index + 1 } else { *count };
                item
            }
            SeqIter::Items(it) => it.next().copied(),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            SeqIter::Wire { index, count, .. } => (0, Some(count - index)),
            SeqIter::Items(it) => it.size_hint(),
        }
    }
}

impl<'a> WireItem<'a> for u16 {
    // Inline: read for every id of a relay's destinations, also from other crates.
    #[inline]
    fn read(r: &mut Reader<'a>, list: &'static str, index: usize) -> Result<Self, DecodeError> {
        r.u16(super::Field::of(list, index, "id"))
    }
    fn write(
        &self,
        w: &mut Writer<'_>,
        list: &'static str,
        index: usize,
    ) -> Result<(), EncodeError> {
        w.u16(super::Field::of(list, index, "id"), *self)
    }
}

impl<'a> WireItem<'a> for WireStr<'a> {
    fn read(r: &mut Reader<'a>, list: &'static str, index: usize) -> Result<Self, DecodeError> {
        r.str(super::Field::of(list, index, "name"))
    }
    fn write(
        &self,
        w: &mut Writer<'_>,
        list: &'static str,
        index: usize,
    ) -> Result<(), EncodeError> {
        w.str(super::Field::of(list, index, "name"), *self)
    }
}

/// The audio codec named in CodecSettings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Raw little-endian f32 PCM (a test codec, docs/protocol.md §7.4).
    Identity = 0,
    Opus = 1,
}

impl Codec {
    pub fn from_u8(b: u8) -> Option<Codec> {
        match b {
            0 => Some(Codec::Identity),
            1 => Some(Codec::Opus),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Codec::Identity => "Identity",
            Codec::Opus => "Opus",
        }
    }
}

/// CodecSettings (9 bytes): the sender's encoder configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CodecSettings {
    /// Raw codec byte (see [`CodecSettings::codec`]).
    pub codec_byte: u8,
    /// Samples per frame per channel.
    pub frame_size: u32,
    /// Sample rate in Hz as written (a .NET `int`: see [`CodecSettings::sample_rate_i32`]).
    pub sample_rate: u32,
}

impl CodecSettings {
    pub const OPUS_48K_20MS: CodecSettings = CodecSettings {
        codec_byte: 1,
        frame_size: 960,
        sample_rate: 48000,
    };

    pub fn new(codec: Codec, frame_size: u32, sample_rate: u32) -> CodecSettings {
        CodecSettings {
            codec_byte: codec as u8,
            frame_size,
            sample_rate,
        }
    }
    pub fn codec(&self) -> Option<Codec> {
        Codec::from_u8(self.codec_byte)
    }
    /// The sample rate as the real code holds it (an `int`; values ≥ 2^31 are negative).
    pub fn sample_rate_i32(&self) -> i32 {
        self.sample_rate as i32
    }
    /// Frame duration in milliseconds, when the rate is positive.
    pub fn frame_ms(&self) -> Option<f64> {
        (self.sample_rate_i32() > 0)
            .then(|| self.frame_size as f64 * 1000.0 / self.sample_rate as f64)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<CodecSettings, DecodeError> {
        use super::Field;
        Ok(CodecSettings {
            codec_byte: r.u8(Field::new("codec"))?,
            frame_size: r.u32(Field::new("frame size"))?,
            sample_rate: r.u32(Field::new("sample rate"))?,
        })
    }
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        use super::Field;
        w.u8(Field::new("codec"), self.codec_byte)?;
        w.u32(Field::new("frame size"), self.frame_size)?;
        w.u32(Field::new("sample rate"), self.sample_rate)
    }
}

/// Room or player. Careful: the channel bitfield encodes Room as 1 and Player as 0,
/// TextData's recipient byte the other way round (Room 0, Player 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelType {
    Room,
    Player,
}

impl ChannelType {
    pub fn name(self) -> &'static str {
        match self {
            ChannelType::Room => "Room",
            ChannelType::Player => "Player",
        }
    }
    /// Decode TextData's recipient-type byte (0 Room, 1 Player, anything else: none).
    pub fn from_text_byte(b: u8) -> Option<ChannelType> {
        match b {
            0 => Some(ChannelType::Room),
            1 => Some(ChannelType::Player),
            _ => None,
        }
    }
    /// TextData's recipient-type byte.
    pub fn text_byte(self) -> u8 {
        match self {
            ChannelType::Room => 0,
            ChannelType::Player => 1,
        }
    }
}

/// Channel priority as carried in bitfield bits 3–4 (the API's "None" is sent as the
/// sender's default priority and never appears on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    Default = 0,
    Low = 1,
    Medium = 2,
    High = 3,
}

impl Priority {
    pub fn from_bits(b: u16) -> Priority {
        match b & 3 {
            0 => Priority::Default,
            1 => Priority::Low,
            2 => Priority::Medium,
            _ => Priority::High,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Priority::Default => "Default",
            Priority::Low => "Low",
            Priority::Medium => "Medium",
            Priority::High => "High",
        }
    }
}

/// The 16-bit per-channel bitfield of VoiceData (docs/protocol.md §6.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelBitfield(pub u16);

impl ChannelBitfield {
    /// Packs channel properties exactly like the real ChannelBitField: the amplitude is
    /// clamped to 0..=2, scaled to 0..=255 in f32 and rounded half to even.
    pub fn new(
        channel_type: ChannelType,
        positional: bool,
        closing: bool,
        priority: Priority,
        session_id: u8,
        amplitude: f32,
    ) -> ChannelBitfield {
        let mut b = 0u16;
        if channel_type == ChannelType::Room {
            b |= 1;
        }
        if positional {
            b |= 2;
        }
        if closing {
            b |= 4;
        }
        b |= (priority as u16) << 3;
        b |= ((session_id as u16) & 3) << 5;
        b |= (volume_byte(amplitude) as u16) << 8;
        ChannelBitfield(b)
    }
    pub fn channel_type(self) -> ChannelType {
        if self.0 & 1 != 0 {
            ChannelType::Room
        } else {
            ChannelType::Player
        }
    }
    pub fn positional(self) -> bool {
        self.0 & 2 != 0
    }
    pub fn closing(self) -> bool {
        self.0 & 4 != 0
    }
    pub fn priority(self) -> Priority {
        Priority::from_bits(self.0 >> 3)
    }
    /// The 2-bit per-channel session (bits 5–6).
    pub fn session_id(self) -> u8 {
        ((self.0 >> 5) & 3) as u8
    }
    /// The raw volume byte (bits 8–15).
    pub fn volume(self) -> u8 {
        (self.0 >> 8) as u8
    }
    /// Amplitude multiplier 0..=2, computed in f32 as the real code does (v / 255 × 2).
    pub fn amplitude(self) -> f32 {
        self.volume() as f32 / 255.0 * 2.0
    }
    /// Bit 7 is never set by a real sender.
    pub fn is_canonical(self) -> bool {
        self.0 & 0x80 == 0
    }
}

impl fmt::Debug for ChannelBitfield {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelBitfield(0x{:04X})", self.0)
    }
}

/// The volume byte for an amplitude: `round_half_even(clamp(a, 0, 2) / 2 × 255)`.
pub fn volume_byte(amplitude: f32) -> u8 {
    // NaN clamps to NaN and then casts to 0, like the real (byte) cast of NaN on x86.
    let a = amplitude.clamp(0.0, 2.0);
    let scaled = (a / 2.0 * 255.0) as f64;
    scaled.round_ties_even() as u8
}

/// One VoiceData channel: bitfield and recipient (client id, or room id for rooms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Channel {
    pub bitfield: ChannelBitfield,
    pub recipient: u16,
}

impl<'a> WireItem<'a> for Channel {
    // Inline: read for every channel of every voice packet, also from other crates.
    #[inline]
    fn read(r: &mut Reader<'a>, _list: &'static str, index: usize) -> Result<Self, DecodeError> {
        use super::Field;
        let bitfield = ChannelBitfield(r.u16(Field::of("channel", index, "bitfield"))?);
        let recipient = r.u16(Field::of("channel", index, "recipient"))?;
        Ok(Channel {
            bitfield,
            recipient,
        })
    }
    fn write(
        &self,
        w: &mut Writer<'_>,
        _list: &'static str,
        index: usize,
    ) -> Result<(), EncodeError> {
        use super::Field;
        if !self.bitfield.is_canonical() {
            return Err(EncodeError::InvalidBitfield {
                channel: index,
                bitfield: self.bitfield.0,
            });
        }
        w.u16(Field::of("channel", index, "bitfield"), self.bitfield.0)?;
        w.u16(Field::of("channel", index, "recipient"), self.recipient)
    }
}

/// The VoiceData packet-options byte (docs/protocol.md §6.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketOptions(pub u8);

impl PacketOptions {
    /// 7.1.2+ encoding: `0x80 | counter mod 128`.
    pub fn extended(counter: u32) -> PacketOptions {
        PacketOptions(0x80 | (counter % 128) as u8)
    }
    /// ≤ 7.0.x encoding: `counter mod 4`.
    pub fn legacy(counter: u32) -> PacketOptions {
        PacketOptions((counter % 4) as u8)
    }
    /// Bit 7: the 7-bit "extended range" channel session.
    pub fn extended_range(self) -> bool {
        self.0 & 0x80 != 0
    }
    /// The packet's channel session (the 7.1.2+ reader's `byte & 0x7F`).
    pub fn channel_session(self) -> u8 {
        self.0 & 0x7F
    }
    /// How many distinct sessions the comparison wraps over: 128 extended, else 4.
    pub fn channel_session_range(self) -> u8 {
        if self.extended_range() {
            128
        } else {
            4
        }
    }
}

impl fmt::Debug for PacketOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PacketOptions(0x{:02X})", self.0)
    }
}

/// One client record of a legacy HandshakeResponse: name, id, codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo<'a> {
    pub name: WireStr<'a>,
    pub id: u16,
    pub codec: CodecSettings,
}

impl<'a> WireItem<'a> for ClientInfo<'a> {
    fn read(r: &mut Reader<'a>, _list: &'static str, index: usize) -> Result<Self, DecodeError> {
        use super::Field;
        let name = r.str(Field::of("client", index, "name"))?;
        let id = r.u16(Field::of("client", index, "id"))?;
        let codec = CodecSettings::read(r)?;
        Ok(ClientInfo { name, id, codec })
    }
    fn write(
        &self,
        w: &mut Writer<'_>,
        _list: &'static str,
        index: usize,
    ) -> Result<(), EncodeError> {
        use super::Field;
        w.str(Field::of("client", index, "name"), self.name)?;
        w.u16(Field::of("client", index, "id"), self.id)?;
        self.codec.write(w)
    }
}

/// One room entry of a legacy HandshakeResponse: room id and its listeners (u8 count).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoomEntry<'a> {
    pub room_id: u16,
    pub peers: Seq<'a, u16>,
}

impl<'a> WireItem<'a> for RoomEntry<'a> {
    fn read(r: &mut Reader<'a>, _list: &'static str, index: usize) -> Result<Self, DecodeError> {
        use super::Field;
        let room_id = r.u16(Field::of("room entry", index, "room id"))?;
        let count = r.u8(Field::of("room entry", index, "peer count"))? as usize;
        let start = r.pos();
        for _ in 0..count {
            r.u16(Field::of("room entry", index, "peer id"))?;
        }
        Ok(RoomEntry {
            room_id,
            peers: Seq::Wire {
                variant: r.variant(),
                count,
                bytes: r.slice_from(start),
            },
        })
    }
    fn write(
        &self,
        w: &mut Writer<'_>,
        _list: &'static str,
        index: usize,
    ) -> Result<(), EncodeError> {
        use super::Field;
        let n = self.peers.len();
        if n > 255 {
            return Err(EncodeError::TooMany {
                message: w.message(),
                field: Field::of("room entry", index, "peers"),
                count: n,
                max: 255,
            });
        }
        w.u16(Field::of("room entry", index, "room id"), self.room_id)?;
        w.u8(Field::of("room entry", index, "peer count"), n as u8)?;
        self.peers.write_items(w, "peer")
    }
}
