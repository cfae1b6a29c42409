//! Writes a capture of a crowded session for the memory tests and benchmarks
//! ([`dissonance_tools::capture::synth::write_crowd`]): CLIENTS clients with names of
//! NAME_LEN bytes join one after the other, each speaks VOICE frames and leaves.
//!
//! Usage: cargo run --release --example gen_crowd -- CLIENTS NAME_LEN VOICE OUT.pcap

const USAGE: &str = "usage: gen_crowd CLIENTS NAME_LEN VOICE OUT.pcap\n\
    CLIENTS clients (at most 65535) with names of NAME_LEN bytes, VOICE voice frames each";

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
    let clients = num(0, "CLIENTS")?.min(65_535) as u16;
    let name_len = num(1, "NAME_LEN")?.clamp(8, 60_000) as usize;
    let voice = num(2, "VOICE")?;
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&args[3])?);
    let n = dissonance_tools::capture::synth::write_crowd(file, clients, name_len, voice)?;
    eprintln!("wrote {n} datagrams to {}", args[3]);
    Ok(())
}
