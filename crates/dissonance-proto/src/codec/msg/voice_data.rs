use crate::codec::{
    Channel, DecodeError, EncodeError, Field, PacketOptions, Primitive, Reader, Seq, Writer,
};

/// Type 2: one encoded audio frame and the channels it is sent on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoiceData<'a> {
    pub session: u32,
    /// The speaking client.
    pub sender: u16,
    pub options: PacketOptions,
    /// Sequence number, +1 per packet sent, wrapping at 65 536.
    pub seq: u16,
    /// Every channel the sender has open or is closing.
    pub channels: Seq<'a, Channel>,
    /// One encoded frame (one Opus packet), borrowed from the input.
    pub audio: &'a [u8],
}

impl<'a> VoiceData<'a> {
    // Inline into Packet::decode: most packets of a capture are voice.
    #[inline]
    pub(crate) fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let session = r.u32(Field::new("session"))?;
        let sender = r.u16(Field::new("sender id"))?;
        let options = PacketOptions(r.u8(Field::new("options"))?);
        let seq = r.u16(Field::new("sequence number"))?;
        let n = r.u16(Field::new("channel count"))? as usize;
        let channels = if r.remaining() >= 4 * n {
            // Fixed-size items: one bounds check instead of one per field.
            Seq::Wire {
                variant: r.variant(),
                count: n,
                bytes: r.bytes(4 * n, Field::new("channels"), Primitive::U16)?,
            }
        } else {
            // Walk item by item to name the exact field that is cut off.
            Seq::read(r, "channel", n)?
        };
        let audio = r.blob(Field::new("audio"))?;
        Ok(VoiceData {
            session,
            sender,
            options,
            seq,
            channels,
            audio,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u32(Field::new("session"), self.session)?;
        w.u16(Field::new("sender id"), self.sender)?;
        w.u8(Field::new("options"), self.options.0)?;
        w.u16(Field::new("sequence number"), self.seq)?;
        w.count16(Field::new("channel count"), self.channels.len())?;
        // Caller-built channels are checked for the bit-7 rule; decoded ones are copied
        // verbatim so a packet from a non-conforming sender re-encodes unchanged.
        self.channels.write_items(w, "channel")?;
        w.blob(Field::new("audio"), self.audio)
    }
}
