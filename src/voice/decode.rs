//! Frame decoding: the sender's codec settings checked and turned into a decoder plan,
//! libopus (normal decode, in-band FEC, PLC) and the Identity codec, plus two Opus
//! packet helpers that need no decoder: the frame duration from the TOC byte, and
//! whether a packet carries in-band FEC (LBRR) data for the frame before it.

use audiopus::coder::{Decoder, GenericCtl};
use audiopus::{Channels, SampleRate};

use super::sample::Sample;
use crate::codec::{Codec, CodecSettings};

/// Where a speaker's codec settings came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecSource {
    /// The sender's advertised CodecSettings (HandshakeRequest / ClientState / HandshakeResponse).
    Advertised,
    /// No handshake in the capture: Opus assumed, frame duration read from the TOC byte.
    OpusToc,
}

impl CodecSource {
    pub fn name(self) -> &'static str {
        match self {
            CodecSource::Advertised => "advertised",
            CodecSource::OpusToc => "opus_toc",
        }
    }
}

/// How one speaker's frames are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecPlan {
    pub codec: Codec,
    /// The sender's sample rate and samples per frame, as advertised (or inferred).
    pub sample_rate: u32,
    pub frame_size: u32,
    /// Samples per frame at the output rate.
    pub out_frame: usize,
    pub source: CodecSource,
}

/// Rates libopus decodes at.
pub const OPUS_RATES: [u32; 5] = [8000, 12000, 16000, 24000, 48000];

impl CodecPlan {
    /// The plan for advertised settings, or why the speaker cannot be decoded.
    pub fn from_settings(s: CodecSettings, out_rate: u32) -> Result<CodecPlan, String> {
        let codec = s.codec().ok_or_else(|| {
            format!(
                "unknown codec {} (Dissonance knows 0 Identity and 1 Opus)",
                s.codec_byte
            )
        })?;
        let rate = s.sample_rate_i32();
        if rate <= 0 {
            return Err(format!("invalid sample rate {rate}"));
        }
        let rate = rate as u32;
        match codec {
            Codec::Opus => {
                if !OPUS_RATES.contains(&rate) {
                    return Err(format!(
                        "invalid sample rate {rate} Hz for Opus (8000, 12000, 16000, 24000 or 48000)"
                    ));
                }
                if !OPUS_RATES.contains(&out_rate) {
                    return Err(format!("Opus cannot decode at {out_rate} Hz"));
                }
                // Opus packets last 2.5, 5, 10, 20, 40, 60, 80, 100 or 120 ms.
                let quarter_ms = s.frame_size as u64 * 400;
                let ok = quarter_ms % rate as u64 == 0
                    && [1, 2, 4, 8, 16, 24, 32, 40, 48].contains(&(quarter_ms / rate as u64));
                if !ok {
                    return Err(format!(
                        "invalid Opus frame size {} at {rate} Hz (not 2.5 to 120 ms)",
                        s.frame_size
                    ));
                }
            }
            Codec::Identity => {
                // At most one second per frame: a frame is decoded into one buffer.
                if rate > 384_000 || s.frame_size == 0 || s.frame_size > rate {
                    return Err(format!(
                        "invalid Identity settings: {} samples at {rate} Hz",
                        s.frame_size
                    ));
                }
            }
        }
        let scaled = s.frame_size as u64 * out_rate as u64;
        if scaled % rate as u64 != 0 {
            return Err(format!(
                "a frame of {} samples at {rate} Hz is not a whole number of samples at {out_rate} Hz",
                s.frame_size
            ));
        }
        Ok(CodecPlan {
            codec,
            sample_rate: rate,
            frame_size: s.frame_size,
            out_frame: (scaled / rate as u64) as usize,
            source: CodecSource::Advertised,
        })
    }

    /// Opus at 48 kHz with the frame duration of `first_frame`'s TOC byte (20 ms when the
    /// packet cannot be parsed).
    pub fn from_opus_toc(first_frame: &[u8], out_rate: u32) -> Result<CodecPlan, String> {
        let samples = opus_samples_48k(first_frame).unwrap_or(960);
        let mut plan = CodecPlan::from_settings(
            CodecSettings::new(Codec::Opus, samples as u32, 48000),
            out_rate,
        )?;
        plan.source = CodecSource::OpusToc;
        Ok(plan)
    }

    pub fn frame_ns(&self) -> i64 {
        (self.frame_size as i64 * 1_000_000_000) / self.sample_rate as i64
    }
}

/// Samples per channel at 48 kHz in an Opus packet, from its TOC (and frame count) byte.
pub fn opus_samples_48k(packet: &[u8]) -> Option<usize> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let per_frame = if config < 12 {
        [480, 960, 1920, 2880][(config & 3) as usize]
    } else if config < 16 {
        [480, 960][(config & 1) as usize]
    } else {
        [120, 240, 480, 960][(config & 3) as usize]
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => (*packet.get(1)? & 0x3F) as usize,
    };
    let total = per_frame * frames;
    (frames > 0 && total <= 5760).then_some(total)
}

/// Length of one frame-length field (RFC 6716 §3.2.1): value and bytes used.
fn frame_len(b: &[u8]) -> Option<(usize, usize)> {
    let b0 = *b.first()? as usize;
    if b0 < 252 {
        Some((b0, 1))
    } else {
        Some((b0 + 4 * *b.get(1)? as usize, 2))
    }
}

/// The bytes of the first frame of an Opus packet (RFC 6716 §3.2).
fn first_frame(p: &[u8]) -> Option<&[u8]> {
    let toc = *p.first()?;
    match toc & 3 {
        0 => p.get(1..),
        1 => {
            let rest = p.get(1..)?;
            rest.get(..rest.len() / 2)
        }
        2 => {
            let (len, n) = frame_len(p.get(1..)?)?;
            p.get(1 + n..1 + n + len)
        }
        _ => {
            let ch = *p.get(1)?;
            let count = (ch & 0x3F) as usize;
            if count == 0 {
                return None;
            }
            let mut pos = 2;
            let mut padding = 0usize;
            if ch & 0x40 != 0 {
                loop {
                    let b = *p.get(pos)?;
                    pos += 1;
                    padding += if b == 255 { 254 } else { b as usize };
                    if b != 255 {
                        break;
                    }
                }
            }
            if ch & 0x80 != 0 {
                let (first, n) = frame_len(p.get(pos..)?)?;
                pos += n;
                for _ in 1..count.saturating_sub(1) {
                    pos += frame_len(p.get(pos..)?)?.1;
                }
                p.get(pos..pos + first)
            } else {
                let data = p.len().checked_sub(pos + padding)?;
                p.get(pos..pos + data / count)
            }
        }
    }
}

/// The start of the Opus range decoder (RFC 6716 §4.1), enough to read SILK's header bits.
struct RangeDecoder<'a> {
    buf: &'a [u8],
    pos: usize,
    rng: u32,
    val: u32,
    rem: u32,
}

impl<'a> RangeDecoder<'a> {
    fn new(buf: &'a [u8]) -> Self {
        let mut d = RangeDecoder {
            buf,
            pos: 0,
            rng: 128,
            val: 0,
            rem: 0,
        };
        d.rem = d.byte();
        d.val = d.rng - 1 - (d.rem >> 1);
        d.normalize();
        d
    }
    fn byte(&mut self) -> u32 {
        let b = self.buf.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b as u32
    }
    fn normalize(&mut self) {
        while self.rng <= 1 << 23 {
            self.rng <<= 8;
            let sym = self.rem;
            self.rem = self.byte();
            let sym = ((sym << 8) | self.rem) >> 1;
            self.val = ((self.val << 8) + (255 & !sym)) & ((1 << 31) - 1);
        }
    }
    /// `ec_dec_bit_logp`.
    fn bit_logp(&mut self, logp: u32) -> bool {
        let s = self.rng >> logp;
        let bit = self.val < s;
        if bit {
            self.rng = s;
        } else {
            self.val -= s;
            self.rng -= s;
        }
        self.normalize();
        bit
    }
}

/// True when `packet` carries in-band FEC (SILK LBRR) data, i.e. an Opus decode with the
/// FEC flag recovers the frame before it rather than concealing it. CELT-only packets
/// never do; SILK and hybrid packets say so in their first header bits.
pub fn opus_has_fec(packet: &[u8]) -> bool {
    let Some(&toc) = packet.first() else {
        return false;
    };
    let config = toc >> 3;
    if config >= 16 {
        return false;
    }
    let silk_frames = if config < 12 {
        [1, 1, 2, 3][(config & 3) as usize]
    } else {
        1
    };
    let channels = if toc & 4 != 0 { 2 } else { 1 };
    let Some(frame) = first_frame(packet) else {
        return false;
    };
    if frame.is_empty() {
        return false;
    }
    let mut rd = RangeDecoder::new(frame);
    let mut lbrr = false;
    for _ in 0..channels {
        for _ in 0..silk_frames {
            rd.bit_logp(1); // VAD flag
        }
        lbrr |= rd.bit_logp(1);
    }
    lbrr
}

enum Kind {
    Opus(Decoder),
    Identity,
}

/// A decoder for one stream of frames, producing exactly `plan.out_frame` samples per call.
pub struct FrameDecoder<S: Sample> {
    plan: CodecPlan,
    out_rate: u32,
    kind: Kind,
    buf: Vec<S>,
    floats: Vec<f32>,
}

impl<S: Sample> FrameDecoder<S> {
    pub fn new(plan: CodecPlan, out_rate: u32) -> Result<Self, String> {
        let kind = match plan.codec {
            Codec::Opus => {
                let rate = match out_rate {
                    8000 => SampleRate::Hz8000,
                    12000 => SampleRate::Hz12000,
                    16000 => SampleRate::Hz16000,
                    24000 => SampleRate::Hz24000,
                    48000 => SampleRate::Hz48000,
                    r => return Err(format!("Opus cannot decode at {r} Hz")),
                };
                // Opus decodes any stream at any of its rates, so decoding straight at the
                // output rate avoids a resampler (and at 48 kHz matches the sender).
                Kind::Opus(
                    Decoder::new(rate, Channels::Mono)
                        .map_err(|e| format!("libopus decoder: {e}"))?,
                )
            }
            Codec::Identity => Kind::Identity,
        };
        // Room for the longest Opus packet (120 ms), to tell a wrong duration from a
        // buffer that is too small.
        let cap = plan.out_frame.max(out_rate as usize * 120 / 1000);
        Ok(FrameDecoder {
            plan,
            out_rate,
            kind,
            buf: vec![S::ZERO; cap],
            floats: Vec::new(),
        })
    }

    pub fn plan(&self) -> &CodecPlan {
        &self.plan
    }
    pub fn is_opus(&self) -> bool {
        matches!(self.kind, Kind::Opus(_))
    }

    /// Back to a fresh decoder's state: a new talk spurt.
    pub fn reset(&mut self) {
        if let Kind::Opus(d) = &mut self.kind {
            // OPUS_RESET_STATE cannot fail on a valid decoder.
            let _ = d.reset_state();
        }
    }

    fn check(&self, n: usize) -> Result<(), String> {
        if n == self.plan.out_frame {
            Ok(())
        } else {
            Err(format!(
                "frame of {n} samples, expected {} ({} ms)",
                self.plan.out_frame,
                self.plan.out_frame as f64 * 1000.0 / self.out_rate as f64
            ))
        }
    }

    /// The samples of the last successful decode, FEC, PLC or silence call.
    pub fn output(&self) -> &[S] {
        &self.buf[..self.plan.out_frame]
    }

    /// Decodes one received frame.
    pub fn decode(&mut self, frame: &[u8]) -> Result<(), String> {
        let n = match &mut self.kind {
            Kind::Opus(d) => {
                if frame.is_empty() {
                    return Err("empty Opus frame".into());
                }
                S::opus_decode(d, Some(frame), &mut self.buf, false)
                    .map_err(|e| format!("libopus: {e}"))?
            }
            Kind::Identity => {
                if frame.len() != self.plan.frame_size as usize * 4 {
                    return Err(format!(
                        "Identity frame of {} bytes, expected {} ({} samples)",
                        frame.len(),
                        self.plan.frame_size as usize * 4,
                        self.plan.frame_size
                    ));
                }
                self.floats.clear();
                self.floats.extend(
                    frame
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
                resample(&self.floats, &mut self.buf[..self.plan.out_frame]);
                self.plan.out_frame
            }
        };
        self.check(n)
    }

    /// Recovers the frame before `next` from `next`'s in-band FEC data.
    pub fn fec(&mut self, next: &[u8]) -> Result<(), String> {
        let n = self.plan.out_frame;
        match &mut self.kind {
            Kind::Opus(d) => {
                let got = S::opus_decode(d, Some(next), &mut self.buf[..n], true)
                    .map_err(|e| format!("libopus FEC: {e}"))?;
                self.check(got)
            }
            Kind::Identity => Err("the Identity codec has no FEC".into()),
        }
    }

    /// Opus packet loss concealment for one frame.
    pub fn plc(&mut self) -> Result<(), String> {
        let n = self.plan.out_frame;
        match &mut self.kind {
            Kind::Opus(d) => {
                let got = S::opus_decode(d, None, &mut self.buf[..n], false)
                    .map_err(|e| format!("libopus PLC: {e}"))?;
                self.check(got)
            }
            Kind::Identity => Err("the Identity codec has no PLC".into()),
        }
    }

    /// One frame of zeros (what Dissonance plays for a lost Identity frame).
    pub fn silence(&mut self) {
        let n = self.plan.out_frame;
        self.buf[..n].fill(S::ZERO);
    }
}

/// Linear interpolation of one frame onto `out.len()` samples (the Identity codec only:
/// 44.1 kHz frames onto the 48 kHz timeline).
fn resample<S: Sample>(input: &[f32], out: &mut [S]) {
    if input.len() == out.len() {
        for (o, &x) in out.iter_mut().zip(input) {
            *o = S::from_f32(x);
        }
        return;
    }
    let last = input.len().saturating_sub(1);
    let step = input.len() as f64 / out.len() as f64;
    for (j, o) in out.iter_mut().enumerate() {
        let t = j as f64 * step;
        let i = (t as usize).min(last);
        let frac = (t - i as f64) as f32;
        let a = input.get(i).copied().unwrap_or(0.0);
        let b = input.get(i + 1).copied().unwrap_or(a);
        *o = S::from_f32(a + (b - a) * frac);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audiopus::coder::Encoder;
    use audiopus::{Application, Bitrate};

    pub(super) fn speechy(n_frames: usize) -> Vec<f32> {
        // A voiced sound with a wandering pitch: enough for SILK to code speech.
        let mut phase = 0.0f32;
        (0..n_frames * 960)
            .map(|i| {
                let t = i as f32 / 48000.0;
                let f = 140.0 + 40.0 * (t * 3.0).sin();
                phase += 2.0 * std::f32::consts::PI * f / 48000.0;
                0.3 * (phase.sin() + 0.5 * (2.0 * phase).sin() + 0.25 * (3.0 * phase).sin())
            })
            .collect()
    }

    fn encode(fec: bool, pcm: &[f32]) -> Vec<Vec<u8>> {
        let mut enc = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip).unwrap();
        enc.set_bitrate(Bitrate::BitsPerSecond(24000)).unwrap();
        enc.set_inband_fec(fec).unwrap();
        enc.set_packet_loss_perc(if fec { 10 } else { 0 }).unwrap();
        pcm.chunks(960)
            .map(|f| {
                let mut out = [0u8; 4000];
                let n = enc.encode_float(f, &mut out).unwrap();
                out[..n].to_vec()
            })
            .collect()
    }

    #[test]
    fn toc_durations() {
        assert_eq!(opus_samples_48k(&[0x08]), Some(960)); // SILK NB 20 ms
        assert_eq!(opus_samples_48k(&[0x78]), Some(960)); // hybrid FB 20 ms
        assert_eq!(opus_samples_48k(&[0x18]), Some(2880)); // SILK NB 60 ms
        assert_eq!(opus_samples_48k(&[0xF8]), Some(960)); // CELT FB 20 ms
        assert_eq!(opus_samples_48k(&[0x09]), Some(1920)); // two 20 ms frames
        assert_eq!(opus_samples_48k(&[0x0B, 0x03]), Some(2880)); // code 3, three frames
        assert_eq!(opus_samples_48k(&[0x0B, 0x07]), None); // 140 ms: not allowed
        assert_eq!(opus_samples_48k(&[0x0B]), None);
        assert_eq!(opus_samples_48k(&[]), None);
    }

    #[test]
    fn fec_flag_agrees_with_libopus() {
        let pcm = speechy(50);
        let with = encode(true, &pcm);
        let without = encode(false, &pcm);
        assert!(without.iter().all(|p| !opus_has_fec(p)));
        assert!(!opus_has_fec(&with[0])); // LBRR needs a previous frame
                                          // The oracle: a FEC decode differs from plain concealment exactly when libopus
                                          // found LBRR data in the packet (without it libopus conceals).
        let plan = CodecPlan::from_settings(CodecSettings::OPUS_48K_20MS, 48000).unwrap();
        let mut seen = [0; 2];
        for packets in [&with, &without] {
            for i in 1..packets.len() - 1 {
                let mut a = FrameDecoder::<i16>::new(plan, 48000).unwrap();
                let mut b = FrameDecoder::<i16>::new(plan, 48000).unwrap();
                for p in &packets[..i] {
                    a.decode(p).unwrap();
                    b.decode(p).unwrap();
                }
                a.fec(&packets[i + 1]).unwrap();
                b.plc().unwrap();
                let has = opus_has_fec(&packets[i + 1]);
                assert_eq!(has, a.output() != b.output(), "packet {}", i + 1);
                seen[has as usize] += 1;
            }
        }
        assert!(seen[1] >= 20, "{seen:?}");
    }

    #[test]
    fn first_frame_of_each_packet_code() {
        assert_eq!(first_frame(&[0x00, 1, 2, 3]), Some(&[1u8, 2, 3][..]));
        assert_eq!(first_frame(&[0x01, 1, 2, 3, 4]), Some(&[1u8, 2][..]));
        assert_eq!(first_frame(&[0x02, 1, 9, 8, 7]), Some(&[9u8][..]));
        // code 3, CBR, 2 frames, 1 byte of padding
        assert_eq!(
            first_frame(&[0x03, 0x42, 1, 5, 6, 7, 8, 0]),
            Some(&[5u8, 6][..])
        );
        // code 3, VBR, 3 frames: lengths 1 and 2, the last takes the rest
        assert_eq!(
            first_frame(&[0x03, 0x83, 1, 2, 5, 6, 6, 7, 7, 7]),
            Some(&[5u8][..])
        );
        assert_eq!(first_frame(&[0x03, 0x80]), None);
        assert_eq!(first_frame(&[0x02, 200, 1]), None);
    }

    #[test]
    fn settings_checks() {
        let opus =
            |fs, rate| CodecPlan::from_settings(CodecSettings::new(Codec::Opus, fs, rate), 48000);
        assert_eq!(opus(960, 48000).unwrap().out_frame, 960);
        assert_eq!(opus(480, 24000).unwrap().out_frame, 960);
        assert_eq!(opus(2880, 48000).unwrap().out_frame, 2880);
        assert!(opus(1000, 48000).unwrap_err().contains("frame size"));
        assert!(opus(960, 44100).unwrap_err().contains("sample rate"));
        assert!(opus(960, 0x8000_0000).unwrap_err().contains("sample rate"));
        let bad = CodecSettings {
            codec_byte: 7,
            frame_size: 960,
            sample_rate: 48000,
        };
        assert!(CodecPlan::from_settings(bad, 48000)
            .unwrap_err()
            .contains("unknown codec 7"));
        let id = CodecPlan::from_settings(CodecSettings::new(Codec::Identity, 441, 44100), 48000)
            .unwrap();
        assert_eq!(id.out_frame, 480);
        assert_eq!(id.frame_ns(), 10_000_000);
        let slow = CodecSettings::new(Codec::Identity, 65536, 1);
        assert!(CodecPlan::from_settings(slow, 48000).is_err());
    }

    #[test]
    fn identity_frames() {
        let plan =
            CodecPlan::from_settings(CodecSettings::new(Codec::Identity, 4, 48000), 48000).unwrap();
        let mut d = FrameDecoder::<i16>::new(plan, 48000).unwrap();
        let bytes: Vec<u8> = [0.5f32, -0.5, 0.25, 1.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        d.decode(&bytes).unwrap();
        assert_eq!(d.output(), &[16384, -16384, 8192, 32767]);
        assert!(d.decode(&bytes[..8]).is_err());
        assert!(d.plc().is_err());
        d.silence();
        assert_eq!(d.output(), &[0, 0, 0, 0]);
    }

    #[test]
    fn corrupt_opus_is_an_error_not_a_panic() {
        let plan = CodecPlan::from_settings(CodecSettings::OPUS_48K_20MS, 48000).unwrap();
        let mut d = FrameDecoder::<f32>::new(plan, 48000).unwrap();
        assert!(d.decode(&[]).is_err());
        // code 3 with zero frames: invalid
        assert!(d.decode(&[0x0B, 0x00]).is_err());
        // a valid 40 ms packet where 20 ms frames are expected
        let pcm = speechy(2);
        let enc = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip).unwrap();
        let mut out = [0u8; 4000];
        let n = enc.encode_float(&pcm[..1920], &mut out).unwrap();
        assert!(d.decode(&out[..n]).unwrap_err().contains("1920 samples"));
        d.plc().unwrap();
        assert_eq!(d.output().len(), 960);
    }
}
