//! Writes a capture of many short talk spurts for the voice memory test and benchmarks
//! ([`dissonance_tools::capture::synth::write_chatter`]): SPEAKERS clients take turns,
//! SPURTS spurts each of FRAMES 20 ms frames.
//!
//! Usage: cargo run --release --example gen_chatter -- SPEAKERS SPURTS FRAMES OUT.pcap

const USAGE: &str = "usage: gen_chatter SPEAKERS SPURTS FRAMES OUT.pcap\n\
    SPEAKERS clients (at most 65535) speak SPURTS talk spurts each of FRAMES 20 ms frames";

#[path = "shared/args.rs"]
mod args;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (n, out) = args::numbers_then_path(USAGE, &["SPEAKERS", "SPURTS", "FRAMES"])?;
    let speakers = n[0].clamp(1, 65_535) as u16;
    let spurts = n[1].min(u32::MAX as u64) as u32;
    let frames = n[2].clamp(1, 65_535) as u16;
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
    let n = dissonance_tools::capture::synth::write_chatter(file, speakers, spurts, frames)?;
    eprintln!("wrote {n} datagrams to {out}");
    Ok(())
}
