//! The JSON schema of a decoded packet, in one place. `decode --json`, `dump`, `sniff`
//! and `proxy` all print packets through this module (docs/json-schema.md).
//!
//! Field names are snake_case, numbers are numbers, byte payloads are lowercase hex
//! strings, a relay's wrapped packet is a nested object (`inner`).
//!
//! Written by hand into a byte buffer rather than through serde: `dump` prints a million
//! of these objects per second, and with serde most of that time went into escaping the
//! constant keys. Keys here are static ASCII written as is; only strings from the wire
//! (names, texts) are escaped.

use serde::ser::{Serialize, Serializer};

use crate::codec::{
    Channel, ChannelType, CodecSettings, DecodeError, DecodeErrorKind, Message, Packet,
    PacketOptions, ServerRelay, WireStr,
};

/// The name lookups of the session tracker (defined beside it: the dissecting layer
/// does not import the printers).
pub use crate::dissect::session::Names;

impl<N: Names + ?Sized> Names for &N {
    fn room(&self, room_id: u16) -> Option<&str> {
        (**self).room(room_id)
    }
    fn client(&self, client_id: u16) -> Option<&str> {
        (**self).client(client_id)
    }
    fn identity(&self) -> Option<(u64, u64)> {
        (**self).identity()
    }
}

/// No names known.
pub struct NoNames;
impl Names for NoNames {
    fn identity(&self) -> Option<(u64, u64)> {
        // The same answers as an empty name table (id 0).
        Some((0, u64::MAX))
    }
}

/// A JSON object being written into a buffer: `{` on creation, `,"key":` per field,
/// `}` on [`Obj::end`].
pub struct Obj<'o> {
    pub out: &'o mut Vec<u8>,
    first: bool,
    /// Write the wire bytes of audio frames and relay payloads (`audio_hex`,
    /// `payload_hex`); `dump` leaves them out unless `--hex` asks for them.
    pub payload_hex: bool,
}

impl<'o> Obj<'o> {
    pub fn new(out: &'o mut Vec<u8>) -> Obj<'o> {
        Obj::with_payload_hex(out, true)
    }
    /// Fields to be appended after the first field of an object written elsewhere (each
    /// key gets its comma).
    pub fn continuing(out: &'o mut Vec<u8>) -> Obj<'o> {
        Obj {
            out,
            first: false,
            payload_hex: true,
        }
    }
    pub fn with_payload_hex(out: &'o mut Vec<u8>, payload_hex: bool) -> Obj<'o> {
        out.push(b'{');
        Obj {
            out,
            first: true,
            payload_hex,
        }
    }
    /// Writes the key (a static, escape-free name) and leaves the buffer ready for a value.
    // Inlined into every call site so that the key's length is a constant there and
    // the copy is a few moves instead of a call to memcpy.
    #[inline(always)]
    pub fn key(&mut self, k: &str) -> &mut Vec<u8> {
        self.out.reserve(k.len() + 4);
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }
    /// A string value known to need no escaping (the schema's own enum names).
    #[inline(always)]
    pub fn lit(&mut self, k: &str, v: &'static str) {
        let out = self.key(k);
        out.reserve(v.len() + 2);
        out.push(b'"');
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
    }
    #[inline(always)]
    pub fn u(&mut self, k: &str, v: impl Into<u64>) {
        let v = v.into();
        uint(self.key(k), v);
    }
    #[inline]
    pub fn i(&mut self, k: &str, v: i64) {
        let out = self.key(k);
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
    #[inline(always)]
    pub fn b(&mut self, k: &str, v: bool) {
        self.key(k)
            .extend_from_slice(if v { b"true" } else { b"false" });
    }
    #[inline]
    pub fn s(&mut self, k: &str, v: &str) {
        string(self.key(k), v);
    }
    pub fn opt_s(&mut self, k: &str, v: Option<&str>) {
        match v {
            Some(v) => self.s(k, v),
            None => self.key(k).extend_from_slice(b"null"),
        }
    }
    pub fn f64(&mut self, k: &str, v: f64) {
        float(self.key(k), v);
    }
    pub fn hex(&mut self, k: &str, bytes: &[u8]) {
        hex(self.key(k), bytes);
    }
    /// Like [`Obj::hex`], but only when payload bytes were asked for.
    fn payload(&mut self, k: &str, bytes: &[u8]) {
        if self.payload_hex {
            hex(self.key(k), bytes);
        }
    }
    pub fn end(self) {
        self.out.push(b'}');
    }
}

/// The two-digit decimal texts of 0..=99.
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";

/// A decimal integer, digits written straight into the buffer's spare room (through
/// `itoa`'s buffer each number cost a call to memcpy; numbers are most of a record).
#[inline]
pub fn uint(out: &mut Vec<u8>, mut v: u64) {
    if v < 10 {
        out.push(b'0' + v as u8);
        return;
    }
    let n = v.ilog10() as usize + 1;
    out.reserve(n);
    let len = out.len();
    let spare = &mut out.spare_capacity_mut()[..n];
    let mut i = n;
    while v >= 100 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        spare[i].write(PAIRS[pair]);
        spare[i + 1].write(PAIRS[pair + 1]);
    }
    if v >= 10 {
        let pair = v as usize * 2;
        spare[i - 2].write(PAIRS[pair]);
        spare[i - 1].write(PAIRS[pair + 1]);
    } else {
        spare[i - 1].write(b'0' + v as u8);
    }
    // SAFETY: the n bytes after `len` were reserved and all written just above.
    unsafe { out.set_len(len + n) };
}

/// A finite float as the shortest decimal that reads back the same; JSON has no NaN.
pub fn float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A channel's amplitude (volume byte / 255 × 2, as an f32) from a table of the 256
/// possible texts: it is on every voice record, and formatting floats is slow.
fn amplitude(out: &mut Vec<u8>, volume: u8) {
    static TABLE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        (0..=255u8)
            .map(|v| {
                let a = crate::codec::ChannelBitfield(u16::from(v) << 8).amplitude();
                ryu::Buffer::new().format_finite(a).to_string()
            })
            .collect()
    });
    out.extend_from_slice(t[volume as usize].as_bytes());
}

/// A JSON string: quotes, and escapes for `"`, `\` and control characters.
pub fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1F => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(DIGITS[(c >> 4) as usize]);
            out.push(DIGITS[(c & 15) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Lowercase hex in quotes.
pub fn hex(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    // Size once, then fill in place: no per-byte capacity checks.
    out.resize(start + bytes.len() * 2 + 2, b'"');
    let digits = &mut out[start + 1..start + 1 + bytes.len() * 2];
    // Cannot fail: `digits` is exactly twice `bytes`.
    let _ = hex::encode_to_slice(bytes, digits);
}

/// A Unix timestamp in nanoseconds as an exact decimal number of seconds (6 decimals
/// when the capture had microsecond resolution, else 9).
pub fn seconds(out: &mut Vec<u8>, ns: i64) {
    if ns < 0 {
        out.push(b'-');
    }
    let ns = ns.unsigned_abs();
    uint(out, ns / 1_000_000_000);
    fraction(out, ns % 1_000_000_000);
}

/// The text of the whole seconds [`seconds_cached`] wrote last, per field.
#[derive(Default)]
pub struct WholeSeconds(Option<(u64, Vec<u8>)>);

/// As [`seconds`], reusing the whole seconds' text while they stay the same (records
/// come in time order, so consecutive ones mostly share it).
pub fn seconds_cached(out: &mut Vec<u8>, ns: i64, last: &mut WholeSeconds) {
    if ns < 0 {
        return seconds(out, ns);
    }
    let ns = ns as u64;
    let whole = ns / 1_000_000_000;
    match &mut last.0 {
        Some((w, text)) if *w == whole => out.extend_from_slice(text),
        slot => {
            let mut text = Vec::with_capacity(20);
            uint(&mut text, whole);
            out.extend_from_slice(&text);
            *slot = Some((whole, text));
        }
    }
    fraction(out, ns % 1_000_000_000);
}

/// `.` and the fraction of a second: 6 digits when it is whole microseconds, else 9.
fn fraction(out: &mut Vec<u8>, frac: u64) {
    let (v, n) = if frac % 1000 == 0 {
        (frac / 1000, 6)
    } else {
        (frac, 9)
    };
    out.push(b'.');
    let mut digits = [b'0'; 9];
    let (mut x, mut i) = (v, n);
    // Two digits per division, as in `uint`.
    while i >= 2 {
        let pair = (x % 100) as usize * 2;
        x /= 100;
        digits[i - 2] = PAIRS[pair];
        digits[i - 1] = PAIRS[pair + 1];
        i -= 2;
    }
    if i == 1 {
        digits[0] = b'0' + x as u8;
    }
    out.extend_from_slice(&digits[..n]);
}

/// A wire string: JSON string (invalid UTF-8 replaced as the real reader does) or null.
fn wire_str(out: &mut Vec<u8>, s: WireStr<'_>) {
    match s.to_str_lossy() {
        Some(t) => string(out, &t),
        None => out.extend_from_slice(b"null"),
    }
}

/// A decoded packet (or the error that stopped decoding) as JSON. Also implements
/// `Serialize`, so `serde_json::to_value` and friends work on it.
pub struct PacketJson<'p, 'a, N: Names + ?Sized> {
    pub bytes: &'a [u8],
    pub result: &'p Result<Packet<'a>, DecodeError>,
    pub names: &'p N,
}

impl<N: Names + ?Sized> PacketJson<'_, '_, N> {
    /// Appends the object to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut o = Obj::new(out);
        write_packet_fields(&mut o, self.bytes, self.result, self.names);
        o.end();
    }
}

impl<N: Names + ?Sized> Serialize for PacketJson<'_, '_, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Vec::new();
        self.write(&mut buf);
        // The writer only produces valid UTF-8 JSON.
        let text = String::from_utf8(buf).map_err(serde::ser::Error::custom)?;
        let raw =
            serde_json::value::RawValue::from_string(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

/// Writes the fields of a packet object into an open object, so callers (dump) can add
/// their own metadata around them in the same object.
pub fn write_packet_fields<N: Names + ?Sized>(
    o: &mut Obj<'_>,
    bytes: &[u8],
    result: &Result<Packet<'_>, DecodeError>,
    names: &N,
) {
    match result {
        Ok(p) => {
            if !o.payload_hex && !FILLING.get() {
                if let (Some(id), Some(hole)) = (names.identity(), seq_hole(bytes, p)) {
                    return cached_voice(o, bytes, p, names, id, hole);
                }
            }
            write_ok_fields(o, bytes, p, names)
        }
        Err(e) => write_error_fields(o, bytes, e),
    }
}

fn write_ok_fields<N: Names + ?Sized>(o: &mut Obj<'_>, bytes: &[u8], p: &Packet<'_>, names: &N) {
    o.b("magic_ok", true);
    o.lit("variant", p.variant.name());
    let t = p.message.message_type();
    o.lit("type", t.name());
    o.u("type_byte", t as u8);
    o.u("size", bytes.len() as u64);
    o.u("bytes_read", (bytes.len() - p.trailing.len()) as u64);
    o.u("trailing_bytes", p.trailing.len() as u64);
    if !p.trailing.is_empty() {
        o.hex("trailing_hex", p.trailing);
    }
    write_message(o, &p.message, names)
}

/// Where a voice packet's sequence number sits: the one field that changes between
/// consecutive frames of a talk spurt (besides the audio, which the record leaves out).
#[derive(Clone, Copy)]
struct SeqHole {
    /// Offset of the 2 sequence number bytes.
    at: usize,
    /// End of the bytes the record's text depends on (the audio starts there).
    end: usize,
    seq: u16,
    /// The sequence number is little-endian (the voice packet's variant is legacy 6.0).
    le: bool,
}

/// A VoiceData packet, or a server relay carrying one, with nothing trailing.
fn seq_hole(bytes: &[u8], p: &Packet<'_>) -> Option<SeqHole> {
    if !p.trailing.is_empty() {
        return None;
    }
    // magic (2), type (1), session (4), sender (2), options (1), then the sequence number.
    const SEQ_AT: usize = 10;
    let (base, v, variant) = match &p.message {
        Message::VoiceData(v) => (0, *v, p.variant),
        Message::ServerRelayReliable(r) | Message::ServerRelayUnreliable(r) => {
            let base = (r.payload.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize)?;
            if base + r.payload.len() != bytes.len() {
                return None;
            }
            let inner = r.inner().ok()?;
            match inner.message {
                Message::VoiceData(v) if inner.trailing.is_empty() => (base, v, inner.variant),
                _ => return None,
            }
        }
        _ => return None,
    };
    let at = base + SEQ_AT;
    let end = bytes.len().checked_sub(v.audio.len())?;
    let wire = bytes.get(at..at + 2)?;
    let le = variant == crate::codec::Variant::Legacy60;
    // A guard on the layout: the bytes there must be the decoded number.
    let wire_seq = if le {
        u16::from_le_bytes([wire[0], wire[1]])
    } else {
        u16::from_be_bytes([wire[0], wire[1]])
    };
    if end < at + 2 || wire_seq != v.seq {
        return None;
    }
    Some(SeqHole {
        at,
        end,
        seq: v.seq,
        le,
    })
}

/// The text of a voice record's fields, split around the sequence number.
struct VoiceText {
    identity: (u64, u64),
    len: usize,
    at: usize,
    end: usize,
    le: bool,
    /// The packet's bytes up to `end`, without the sequence number.
    key: Vec<u8>,
    before: Vec<u8>,
    after: Vec<u8>,
}

impl VoiceText {
    /// The fields with this sequence number.
    fn write(&self, o: &mut Obj<'_>, seq: u16) {
        let out = &mut *o.out;
        out.reserve(self.before.len() + self.after.len() + 6);
        if !o.first {
            out.push(b',');
        }
        o.first = false;
        out.extend_from_slice(&self.before);
        uint(out, seq.into());
        out.extend_from_slice(&self.after);
    }
}

thread_local! {
    /// Direct-mapped: a capture has few speakers and channel sets at a time.
    static VOICE_TEXT: std::cell::RefCell<Vec<Option<VoiceText>>> =
        std::cell::RefCell::new((0..256).map(|_| None).collect());
    /// Set while a cache entry's text is formatted (a relay's inner packet then goes
    /// the plain way, into the outer entry).
    static FILLING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Where the last VoiceData's `seq` value was written (start, end in the buffer).
    static SEQ_MARK: std::cell::Cell<Option<(usize, usize)>> = const { std::cell::Cell::new(None) };
}

/// The cache slot of a voice record: from the names snapshot, the length and the first
/// bytes (type, session, sender or relay header), which come before the sequence number,
/// so that [`cached_voice_raw`] finds the entry without decoding.
fn voice_slot(identity: (u64, u64), bytes: &[u8]) -> usize {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut hasher = rustc_hash::FxBuildHasher.build_hasher();
    (identity, bytes.len()).hash(&mut hasher);
    hasher.write(&bytes[..bytes.len().min(10)]);
    (hasher.finish() >> 56) as usize
}

/// Writes a voice record's fields from the cache when an entry matches `bytes` in
/// everything but the sequence number and the audio: the same bytes before the audio
/// decode to the same packet, whose text the entry holds. False (nothing written)
/// otherwise; the caller then decodes and formats as usual.
pub(crate) fn cached_voice_raw<N: Names + ?Sized>(
    o: &mut Obj<'_>,
    bytes: &[u8],
    names: &N,
) -> bool {
    if o.payload_hex || FILLING.get() {
        return false;
    }
    let Some(identity) = names.identity() else {
        return false;
    };
    let slot = voice_slot(identity, bytes);
    VOICE_TEXT.with(|cache| {
        let cache = cache.borrow();
        let Some(e) = cache[slot].as_ref() else {
            return false;
        };
        let (at, end) = (e.at, e.end);
        let hit = e.identity == identity
            && e.len == bytes.len()
            && e.key.len() + 2 == end
            && e.key[..at] == bytes[..at]
            && e.key[at..] == bytes[at + 2..end];
        if !hit {
            return false;
        }
        let wire = [bytes[at], bytes[at + 1]];
        let seq = if e.le {
            u16::from_le_bytes(wire)
        } else {
            u16::from_be_bytes(wire)
        };
        e.write(o, seq);
        true
    })
}

/// Voice records differ from the previous frame's only in the sequence number: the
/// rest of the text is formatted once per speaker, channel set and names snapshot and
/// copied after that (the output is byte-identical to formatting every field).
fn cached_voice<N: Names + ?Sized>(
    o: &mut Obj<'_>,
    bytes: &[u8],
    p: &Packet<'_>,
    names: &N,
    identity: (u64, u64),
    h: SeqHole,
) {
    let (head, tail) = (&bytes[..h.at], &bytes[h.at + 2..h.end]);
    let slot = voice_slot(identity, bytes);
    let cached = VOICE_TEXT.with(|cache| {
        let mut cache = cache.borrow_mut();
        let entry = &mut cache[slot];
        let hit = entry.as_ref().is_some_and(|e| {
            e.identity == identity
                && e.len == bytes.len()
                && e.at == h.at
                && e.key.len() == head.len() + tail.len()
                && e.key[..h.at] == *head
                && e.key[h.at..] == *tail
        });
        if !hit {
            let mut text = Vec::with_capacity(1024);
            let mut t = Obj::continuing(&mut text);
            t.payload_hex = false;
            SEQ_MARK.set(None);
            FILLING.set(true);
            write_ok_fields(&mut t, bytes, p, names);
            FILLING.set(false);
            let Some((s, e)) = SEQ_MARK.take() else {
                // Cannot happen (seq_hole found a VoiceData); format without the cache.
                *entry = None;
                return false;
            };
            *entry = Some(VoiceText {
                identity,
                len: bytes.len(),
                at: h.at,
                end: h.end,
                le: h.le,
                key: [head, tail].concat(),
                // The text starts with the comma of its first key.
                before: text[1..s].to_vec(),
                after: text[e..].to_vec(),
            });
        }
        entry.as_ref().expect("filled above").write(o, h.seq);
        true
    });
    if !cached {
        write_ok_fields(o, bytes, p, names);
    }
}

fn write_error_fields(o: &mut Obj<'_>, bytes: &[u8], e: &DecodeError) {
    let magic_ok = !matches!(e.kind, DecodeErrorKind::BadMagic { .. }) && bytes.len() >= 2;
    o.b("magic_ok", magic_ok);
    match e.kind {
        DecodeErrorKind::BadMagic { found } => {
            o.u("magic", found);
            o.lit("rejected", "bad_magic");
        }
        DecodeErrorKind::UnknownType { type_byte } => {
            o.opt_s("type", None);
            o.u("type_byte", type_byte);
            o.lit("rejected", "unknown_type");
        }
        _ => {
            if let Some(t) = e.message {
                o.lit("type", t.name());
                o.u("type_byte", t as u8);
            }
        }
    }
    o.u("size", bytes.len() as u64);
    write_error(Obj::new(o.key("error")), e);
}

/// A decode error as an object: kind, human message, offset, field, and for
/// truncations the primitive and the bytes needed and left.
fn write_error(mut o: Obj<'_>, e: &DecodeError) {
    o.lit("kind", e.kind_name());
    o.s("message", &e.to_string());
    o.u("offset", e.offset as u64);
    if let Some(f) = e.field() {
        o.s("field", &f.to_string());
    }
    match e.kind {
        DecodeErrorKind::Truncated {
            primitive,
            need,
            left,
            ..
        } => {
            o.lit("primitive", primitive.dotnet_name());
            o.u("need", need as u64);
            o.u("left", left as u64);
        }
        DecodeErrorKind::UnknownRoomId { room_id, .. } => o.u("room_id", room_id),
        _ => {}
    }
    o.end();
}

fn write_message<N: Names + ?Sized>(o: &mut Obj<'_>, msg: &Message<'_>, names: &N) {
    match msg {
        Message::ClientState(c) => {
            o.u("session", c.session);
            wire_str(o.key("name"), c.name);
            o.u("client_id", c.client_id);
            codec(o.key("codec"), c.codec);
            o.lit("rooms_encoding", c.rooms_encoding.name());
            list(o.key("rooms"), c.rooms.iter(), wire_str);
        }
        Message::VoiceData(v) => {
            o.u("session", v.session);
            o.u("sender", v.sender);
            if let Some(n) = names.client(v.sender) {
                o.s("sender_name", n);
            }
            options(o.key("options"), v.options);
            let out = o.key("seq");
            let s = out.len();
            uint(out, v.seq.into());
            SEQ_MARK.set(Some((s, out.len())));
            o.u("num_channels", v.channels.len() as u64);
            list(o.key("channels"), v.channels.iter(), |out, c| {
                channel(out, c, names)
            });
            o.u("audio_len", v.audio.len() as u64);
            o.payload("audio_hex", v.audio);
        }
        Message::TextData(t) => {
            o.u("session", t.session);
            o.u("recipient_type_byte", t.recipient_type_byte);
            o.opt_s("recipient_type", t.recipient_type().map(ChannelType::name));
            o.u("sender", t.sender);
            if let Some(n) = names.client(t.sender) {
                o.s("sender_name", n);
            }
            o.u("target", t.target);
            let target_name = match t.recipient_type() {
                Some(ChannelType::Room) => names.room(t.target),
                Some(ChannelType::Player) => names.client(t.target),
                None => None,
            };
            if let Some(n) = target_name {
                o.s("target_name", n);
            }
            wire_str(o.key("text"), t.text);
        }
        Message::HandshakeRequest(h) => {
            codec(o.key("codec"), h.codec);
            wire_str(o.key("name"), h.name);
        }
        Message::HandshakeResponse(h) => {
            o.u("session", h.session);
            o.u("client_id", h.client_id);
            o.lit("form", if h.is_modern() { "modern" } else { "legacy" });
            list(o.key("clients"), h.clients.iter(), |out, c| {
                let mut co = Obj::new(out);
                wire_str(co.key("name"), c.name);
                co.u("id", c.id);
                codec(co.key("codec"), c.codec);
                co.end();
            });
            list(o.key("rooms"), h.rooms(), |out, r| {
                let mut ro = Obj::new(out);
                wire_str(ro.key("name"), r.name);
                ro.u("room_id", r.room_id);
                list(ro.key("peers"), r.peers.iter(), |out, p| {
                    uint(out, p.into())
                });
                ro.end();
            });
        }
        Message::ErrorWrongSession(e) => o.u("session", e.session),
        Message::ServerRelayReliable(r) | Message::ServerRelayUnreliable(r) => relay(o, r, names),
        Message::DeltaChannelState(d) => {
            o.u("session", d.session);
            o.b("joined", d.joined());
            o.u("joined_raw", d.joined_raw);
            o.u("peer", d.peer);
            if let Some(n) = names.client(d.peer) {
                o.s("peer_name", n);
            }
            wire_str(o.key("name"), d.name);
        }
        Message::RemoveClient(r) => {
            o.u("session", r.session);
            o.u("client_id", r.client_id);
            if let Some(n) = names.client(r.client_id) {
                o.s("client_name", n);
            }
        }
        Message::HandshakeP2P(h) => {
            o.u("session", h.session);
            o.u("peer_id", h.peer_id);
        }
    }
}

fn relay<N: Names + ?Sized>(o: &mut Obj<'_>, r: &ServerRelay<'_>, names: &N) {
    o.u("session", r.session);
    list(o.key("destinations"), r.destinations.iter(), |out, d| {
        uint(out, d.into())
    });
    o.u("payload_len", r.payload.len() as u64);
    o.payload("payload_hex", r.payload);
    o.lit("server_relay_verdict", r.server_verdict().name());
    let inner = r.inner();
    let payload_hex = o.payload_hex;
    let mut io = Obj::with_payload_hex(o.key("inner"), payload_hex);
    write_packet_fields(&mut io, r.payload, &inner, names);
    io.end();
}

fn list<T>(out: &mut Vec<u8>, items: impl Iterator<Item = T>, mut f: impl FnMut(&mut Vec<u8>, T)) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        f(out, item);
    }
    out.push(b']');
}

fn codec(out: &mut Vec<u8>, c: CodecSettings) {
    let mut o = Obj::new(out);
    o.u("codec", c.codec_byte);
    o.opt_s("codec_name", c.codec().map(|c| c.name()));
    o.u("frame_size", c.frame_size);
    o.i("sample_rate", c.sample_rate_i32().into());
    o.end();
}

/// The options object, from a table of the 256 possible bytes' texts.
fn options(out: &mut Vec<u8>, p: PacketOptions) {
    static TABLE: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        (0..=255u8)
            .map(|raw| {
                let p = PacketOptions(raw);
                let mut text = Vec::new();
                let mut o = Obj::new(&mut text);
                o.u("raw", p.0);
                o.u("channel_session", p.channel_session());
                o.b("extended_range", p.extended_range());
                o.u("channel_session_range", p.channel_session_range());
                o.end();
                text
            })
            .collect()
    });
    out.extend_from_slice(&t[p.0 as usize]);
}

/// A cached channel object: its text depends only on the bitfield, the recipient and
/// the recipient's name, which repeat for every frame of a talk spurt.
struct ChannelText {
    bitfield: u16,
    recipient: u16,
    name: Option<String>,
    text: Vec<u8>,
}

thread_local! {
    static CHANNEL_TEXT: std::cell::RefCell<Vec<Option<ChannelText>>> =
        std::cell::RefCell::new((0..64).map(|_| None).collect());
}

fn channel<N: Names + ?Sized>(out: &mut Vec<u8>, c: Channel, names: &N) {
    let b = c.bitfield;
    let name = match b.channel_type() {
        ChannelType::Room => names.room(c.recipient),
        ChannelType::Player => names.client(c.recipient),
    };
    let slot =
        ((u32::from(b.0) << 16 | u32::from(c.recipient)).wrapping_mul(0x9E37_79B9) >> 26) as usize;
    CHANNEL_TEXT.with(|cache| {
        let mut cache = cache.borrow_mut();
        let entry = &mut cache[slot];
        let hit = entry.as_ref().is_some_and(|e| {
            e.bitfield == b.0 && e.recipient == c.recipient && e.name.as_deref() == name
        });
        if !hit {
            let mut text = Vec::with_capacity(200);
            channel_text(&mut text, c, name);
            *entry = Some(ChannelText {
                bitfield: b.0,
                recipient: c.recipient,
                name: name.map(str::to_string),
                text,
            });
        }
        out.extend_from_slice(&entry.as_ref().expect("filled above").text);
    });
}

fn channel_text(out: &mut Vec<u8>, c: Channel, name: Option<&str>) {
    let b = c.bitfield;
    let mut o = Obj::new(out);
    o.u("bitfield", b.0);
    o.u("recipient", c.recipient);
    if let Some(n) = name {
        o.s("recipient_name", n);
    }
    o.lit("type", b.channel_type().name());
    o.b("closing", b.closing());
    o.b("positional", b.positional());
    o.lit("priority", b.priority().name());
    o.u("volume", b.volume());
    amplitude(o.key("amplitude"), b.volume());
    o.u("session_id", b.session_id());
    o.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names with a fixed answer; `cache` says whether they admit text reuse.
    struct Fixed {
        cache: bool,
    }
    impl Names for Fixed {
        fn room(&self, id: u16) -> Option<&str> {
            (id % 2 == 1).then_some("Global")
        }
        fn client(&self, id: u16) -> Option<&str> {
            (id < 3).then_some("alice")
        }
        fn identity(&self) -> Option<(u64, u64)> {
            self.cache.then_some((7, 7))
        }
    }

    fn fields(bytes: &[u8], cache: bool) -> String {
        let mut out = Vec::new();
        let mut o = Obj::with_payload_hex(&mut out, false);
        write_packet_fields(&mut o, bytes, &Packet::decode(bytes), &Fixed { cache });
        o.end();
        String::from_utf8(out).unwrap()
    }

    /// The fields through [`cached_voice_raw`], or None when it does not hit.
    fn raw_fields(bytes: &[u8]) -> Option<String> {
        let mut out = Vec::new();
        let mut o = Obj::with_payload_hex(&mut out, false);
        if !cached_voice_raw(&mut o, bytes, &Fixed { cache: true }) {
            return None;
        }
        o.end();
        Some(String::from_utf8(out).unwrap())
    }

    /// The cached voice text gives exactly what formatting every field gives, for every
    /// vector (VoiceData and relays of it among them), with sequence numbers that change
    /// between calls as in a talk spurt.
    #[test]
    fn voice_text_cache_is_byte_identical() {
        let vectors = include_str!("../../tests/data/vectors/vectors.jsonl");
        let (mut voice, mut raw_voice) = (0, 0);
        for line in vectors.lines() {
            // (Lines with lone surrogates, which serde_json refuses, hold no voice.)
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let Some(hex) = v["hex"].as_str() else {
                continue;
            };
            let bytes = crate::output::hex::parse(hex).unwrap();
            let Ok(p) = Packet::decode(&bytes) else {
                continue;
            };
            let Some(h) = seq_hole(&bytes, &p) else {
                assert_eq!(fields(&bytes, true), fields(&bytes, false));
                continue;
            };
            voice += 1;
            for seq in [0u16, 1, 9, 10, 65535, 4660] {
                let mut b = bytes.clone();
                b[h.at..h.at + 2].copy_from_slice(&seq.to_be_bytes());
                assert_eq!(fields(&b, true), fields(&b, false), "{line}");
            }
            // Then from the bytes alone (no decode): other sequence numbers and audio hit
            // the entry and give the same text; a change before the audio misses it (and
            // may only hit an entry made from exactly those bytes).
            for seq in [2u16, 300, 65534] {
                let mut b = bytes.clone();
                b[h.at..h.at + 2].copy_from_slice(&seq.to_be_bytes());
                if let Some(a) = b.get_mut(h.end) {
                    *a ^= 0x5A;
                }
                assert_eq!(
                    raw_fields(&b).as_deref(),
                    Some(&*fields(&b, false)),
                    "{line}"
                );
                let mut other = b.clone();
                other[h.at - 1] ^= 1;
                if let Some(t) = raw_fields(&other) {
                    assert_eq!(t, fields(&other, false), "{line}");
                }
            }
            raw_voice += 1;
        }
        assert!(voice >= 10, "only {voice} voice vectors");
        assert_eq!(raw_voice, voice);
    }

    #[test]
    fn hex_and_seconds() {
        let mut out = Vec::new();
        super::hex(&mut out, &[0x8b, 0x00, 0xff]);
        super::seconds(&mut out, 1_795_514_472_009_966_000);
        super::seconds(&mut out, 1_000_000_001);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"8b00ff\"1795514472.0099661.000000001"
        );
    }

    #[test]
    fn integers() {
        for v in [
            0u64,
            7,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            65535,
            1 << 32,
            u64::MAX,
        ] {
            let mut out = b"x".to_vec();
            super::uint(&mut out, v);
            assert_eq!(out, format!("x{v}").into_bytes());
        }
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = Vec::new();
        super::string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\nd\u0001é""#);
        let v: String = serde_json::from_str(r#""a\"b\\c\nd\u0001é""#).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}é");
    }
}
