//! The benchmark anchor for `dump`: read a capture and parse every frame's headers with
//! etherparse, nothing else. Prints the number of UDP payload bytes so the work is not
//! optimised away.
//!
//! Usage: cargo run --release --example bare_loop -- FILE.pcap

use dissonance_tools::capture::CaptureReader;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: bare_loop FILE.pcap")?;
    let file = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(&path)?);
    let mut reader = CaptureReader::new(file)?;
    let (mut frames, mut udp_bytes) = (0u64, 0u64);
    while let Some(frame) = reader.next_frame() {
        let frame = frame?;
        frames += 1;
        if let Ok(p) = etherparse::SlicedPacket::from_ethernet(frame.data) {
            if let Some(etherparse::TransportSlice::Udp(u)) = p.transport {
                udp_bytes += u.payload().len() as u64;
            }
        }
    }
    println!("{frames} frames, {udp_bytes} UDP payload bytes");
    Ok(())
}
