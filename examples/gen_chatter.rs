//! Writes a capture of many short talk spurts for the voice memory test and benchmarks
//! ([`dissonance_tools::capture::synth::write_chatter`]): SPEAKERS clients take turns,
//! SPURTS spurts each of FRAMES 20 ms frames.
//!
//! Usage: cargo run --release --example gen_chatter -- SPEAKERS SPURTS FRAMES OUT.pcap

const USAGE: &str = "usage: gen_chatter SPEAKERS SPURTS FRAMES OUT.pcap\n\
    SPEAKERS clients (at most 65535) speak SPURTS talk spurts each of FRAMES 20 ms frames";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let help = args.iter().any(|a| a == "--help" || a == "-h");
    if help || args.len() != 4 {
        eprintln!("{USAGE}");
        std::process::exit(if help { 0 } else { 2 });
    }
    let num = |i: usize, what: &str| -> Result<u64, String> {
        args[i]
            .parse()
            .map_err(|_| format!("{what} '{}' is not a whole number\n{USAGE}", args[i]))
    };
    let speakers = num(0, "SPEAKERS")?.clamp(1, 65_535) as u16;
    let spurts = num(1, "SPURTS")?.min(u32::MAX as u64) as u32;
    let frames = num(2, "FRAMES")?.clamp(1, 65_535) as u16;
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&args[3])?);
    let n = dissonance_tools::capture::synth::write_chatter(file, speakers, spurts, frames)?;
    eprintln!("wrote {n} datagrams to {}", args[3]);
    Ok(())
}
