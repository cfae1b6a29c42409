//! Writes a capture of a crowded session for the memory tests and benchmarks
//! ([`dissonance_tools::capture::synth::write_crowd`]): CLIENTS clients with names of
//! NAME_LEN bytes join one after the other, each speaks VOICE frames and leaves.
//!
//! Usage: cargo run --release --example gen_crowd -- CLIENTS NAME_LEN VOICE OUT.pcap

const USAGE: &str = "usage: gen_crowd CLIENTS NAME_LEN VOICE OUT.pcap\n\
    CLIENTS clients (at most 65535) with names of NAME_LEN bytes, VOICE voice frames each";

#[path = "shared/args.rs"]
mod args;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (n, out) = args::numbers_then_path(USAGE, &["CLIENTS", "NAME_LEN", "VOICE"])?;
    let clients = n[0].min(65_535) as u16;
    let name_len = n[1].clamp(8, 60_000) as usize;
    let voice = n[2];
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
    let n = dissonance_tools::capture::synth::write_crowd(file, clients, name_len, voice)?;
    eprintln!("wrote {n} datagrams to {out}");
    Ok(())
}
