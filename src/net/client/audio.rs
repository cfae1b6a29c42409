//! Sender-side audio: a WAV file to Opus frames as a Dissonance client encodes them
//! (48 kHz mono, VOIP application, in-band FEC, docs/protocol.md §7.1).

use std::path::Path;

use audiopus::coder::Encoder;
use audiopus::{Application, Bitrate, Channels, SampleRate};

/// Frame durations Dissonance knows (Tiny, Small, Medium, Large).
pub const FRAME_MS: [u32; 4] = [10, 20, 40, 60];

/// Reads a 48 kHz WAV (the first channel of a multi-channel file) as samples in -1..1.
pub fn read_wav_48k(path: &Path) -> Result<Vec<f32>, String> {
    let mut r = hound::WavReader::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec = r.spec();
    if spec.sample_rate != 48000 {
        return Err(format!(
            "{}: {} Hz; Dissonance sends 48 kHz: convert it first (e.g. `sox IN -r 48000 -c 1 OUT.wav`)",
            path.display(),
            spec.sample_rate
        ));
    }
    let ch = spec.channels.max(1) as usize;
    let samples: Result<Vec<f32>, hound::Error> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().collect(),
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect()
        }
    };
    let samples = samples.map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(samples.into_iter().step_by(ch).collect())
}

/// Encodes `pcm` (48 kHz mono) into one Opus packet per `frame_ms`, the last frame
/// zero padded.
pub fn encode_opus(pcm: &[f32], frame_ms: u32, bitrate: i32) -> Result<Vec<Vec<u8>>, String> {
    if !FRAME_MS.contains(&frame_ms) {
        return Err(format!("frame size {frame_ms} ms: use 10, 20, 40 or 60"));
    }
    let err = |e: audiopus::Error| format!("opus encoder: {e}");
    let mut enc =
        Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip).map_err(err)?;
    enc.set_bitrate(Bitrate::BitsPerSecond(bitrate))
        .map_err(err)?;
    enc.set_inband_fec(true).map_err(err)?;
    enc.set_packet_loss_perc(10).map_err(err)?;
    let n = (48 * frame_ms) as usize;
    // The real encoder's scratch buffer is frameSize × 8 bytes.
    let mut out = vec![0u8; n * 8];
    let mut frame = vec![0f32; n];
    pcm.chunks(n)
        .map(|c| {
            frame[..c.len()].copy_from_slice(c);
            frame[c.len()..].fill(0.0);
            let len = enc.encode_float(&frame, &mut out).map_err(err)?;
            Ok(out[..len].to_vec())
        })
        .collect()
}
