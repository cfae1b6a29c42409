//! The two output sample formats: 16-bit integers (the default, decoded with libopus'
//! `opus_decode`, so the samples are exactly what the reference decoder produces) and
//! 32-bit floats (`--float`, decoded with `opus_decode_float`).

use audiopus::coder::Decoder;
use audiopus::packet::Packet as OpusPacket;
use audiopus::MutSignals;

/// An output sample type. Mixing accumulates in [`Sample::Acc`] so that overlapping
/// speakers clip once, at the end, instead of at every addition.
pub trait Sample: Copy + Default + PartialEq + std::fmt::Debug + Send + 'static {
    type Acc: Copy + Default + std::fmt::Debug;
    /// `int16` or `float32`, for reports.
    const FORMAT: &'static str;
    const ZERO: Self;

    /// One libopus decode call (`input` None = packet loss concealment).
    fn opus_decode(
        dec: &mut Decoder,
        input: Option<&[u8]>,
        out: &mut [Self],
        fec: bool,
    ) -> Result<usize, audiopus::Error>;
    /// From a float in -1..1 (the Identity codec's samples).
    fn from_f32(x: f32) -> Self;
    fn add(acc: &mut Self::Acc, s: Self);
    fn from_acc(acc: Self::Acc) -> Self;
}

fn opus_io<'a, T>(
    input: Option<&'a [u8]>,
    out: &'a mut [T],
) -> Result<(Option<OpusPacket<'a>>, MutSignals<'a, T>), audiopus::Error> {
    let packet = match input {
        Some(bytes) => Some(OpusPacket::try_from(bytes)?),
        None => None,
    };
    Ok((packet, MutSignals::try_from(out)?))
}

impl Sample for i16 {
    type Acc = i32;
    const FORMAT: &'static str = "int16";
    const ZERO: i16 = 0;

    fn opus_decode(
        dec: &mut Decoder,
        input: Option<&[u8]>,
        out: &mut [i16],
        fec: bool,
    ) -> Result<usize, audiopus::Error> {
        let (p, o) = opus_io(input, out)?;
        dec.decode(p, o, fec)
    }
    fn from_f32(x: f32) -> i16 {
        // NaN becomes 0 through the saturating cast.
        (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16
    }
    fn add(acc: &mut i32, s: i16) {
        *acc += s as i32;
    }
    fn from_acc(acc: i32) -> i16 {
        acc.clamp(i16::MIN as i32, i16::MAX as i32) as i16
    }
}

impl Sample for f32 {
    type Acc = f32;
    const FORMAT: &'static str = "float32";
    const ZERO: f32 = 0.0;

    fn opus_decode(
        dec: &mut Decoder,
        input: Option<&[u8]>,
        out: &mut [f32],
        fec: bool,
    ) -> Result<usize, audiopus::Error> {
        let (p, o) = opus_io(input, out)?;
        dec.decode_float(p, o, fec)
    }
    fn from_f32(x: f32) -> f32 {
        x
    }
    fn add(acc: &mut f32, s: f32) {
        *acc += s;
    }
    fn from_acc(acc: f32) -> f32 {
        // Float WAVs may exceed full scale; players clip. Keeping the sum keeps the mix
        // exactly the sum of the sources.
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(i16::from_f32(1.0), 32767);
        assert_eq!(i16::from_f32(-1.0), -32768);
        assert_eq!(i16::from_f32(0.5), 16384);
        assert_eq!(i16::from_f32(f32::NAN), 0);
        let mut acc = 0i32;
        i16::add(&mut acc, 30000);
        i16::add(&mut acc, 30000);
        assert_eq!(i16::from_acc(acc), 32767);
    }
}
