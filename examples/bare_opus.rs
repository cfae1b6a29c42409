//! The benchmark anchor for `voice`: decode the same Opus frames with libopus and write
//! nothing. Reads the FRAMES file of examples/gen_voice.rs into memory first (not
//! timed), then decodes every frame to 16-bit PCM with one decoder, reset at each talk
//! spurt as the extractor does. Prints the time of the decode loop and a checksum so the
//! work is not optimised away.
//!
//! Usage: cargo run --release --example bare_opus -- FRAMES

use audiopus::coder::{Decoder, GenericCtl};
use audiopus::packet::Packet;
use audiopus::{Channels, MutSignals, SampleRate};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: bare_opus FRAMES")?;
    let bytes = std::fs::read(&path)?;
    let mut dec = Decoder::new(SampleRate::Hz48000, Channels::Mono)?;
    let mut pcm = vec![0i16; 5760];
    let (mut frames, mut sum) = (0u64, 0i64);
    let started = std::time::Instant::now();
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let len = u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
        at += 2;
        if len == 0 {
            dec.reset_state()?;
            continue;
        }
        let frame = bytes.get(at..at + len).ok_or("truncated frames file")?;
        at += len;
        let n = dec.decode(
            Some(Packet::try_from(frame)?),
            MutSignals::try_from(&mut pcm[..])?,
            false,
        )?;
        sum += pcm[..n].iter().map(|&s| s as i64).sum::<i64>();
        frames += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{frames} frames decoded in {secs:.3} s (checksum {sum})");
    Ok(())
}
