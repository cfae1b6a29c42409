//! Writes a synthetic capture of a Dissonance session for benchmarks: `N` packets, mostly
//! voice (each frame relayed client -> server, then forwarded to two listeners), with the
//! handshakes and room joins of a real session first.
//!
//! With `--mirror` every packet is carried the way Mirror over kcp2k carries Dissonance
//! (a `55 D3 | len | packet` message in a Mirror batch; reliable ones in kcp PUSH
//! segments, voice in unreliable datagrams), for the named-decapsulation benchmark.
//!
//! Usage: cargo run --release --example gen_capture -- N OUT.pcap [--mirror]

use std::collections::HashMap;
use std::net::SocketAddr;

use dissonance_tools::capture::{PcapWriter, TsResolution};
use dissonance_tools::codec::*;

const USAGE: &str = "usage: gen_capture N OUT.pcap [--mirror]\n\
    N packets of a three-client session (mostly voice); --mirror carries them as \
    Mirror over kcp2k does";

/// The command line: `None` for `--help`, else (N, OUT, --mirror); an error says what is
/// wrong and gives the usage.
fn parse(args: &[String]) -> Result<Option<(u64, String, bool)>, String> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(None);
    }
    let mirror = args.iter().any(|a| a == "--mirror");
    let rest: Vec<&String> = args.iter().skip(1).filter(|a| *a != "--mirror").collect();
    let [n, out] = rest[..] else {
        return Err(USAGE.into());
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("N '{n}' is not a whole number\n{USAGE}"))?;
    Ok(Some((n, out.clone(), mirror)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some((n, out, mirror)) = parse(&args)? else {
        println!("{USAGE}");
        return Ok(());
    };
    let mut carrier = Carrier {
        mirror,
        sn: HashMap::new(),
        out: Vec::with_capacity(2048),
    };
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
    let mut w = PcapWriter::new(file, TsResolution::Microsecond)?;
    let server: SocketAddr = "10.0.0.1:7777".parse()?;
    let clients: Vec<SocketAddr> = (0..3)
        .map(|i| format!("10.0.0.{}:5000", i + 2).parse().unwrap())
        .collect();
    let names = ["alice", "bob", "carol"];
    let session = 0x1F2E_3D4C;
    let codec = CodecSettings::OPUS_48K_20MS;
    let mut ts: i64 = 1_795_514_472_000_000_000;
    let mut buf = [0u8; 1024];
    let mut written = 0u64;
    let mut put = |w: &mut PcapWriter<_>,
                   ts: i64,
                   src,
                   dst,
                   m: Message<'_>|
     -> Result<(), Box<dyn std::error::Error>> {
        let len = m.encode(Variant::Modern, &mut buf)?;
        w.write_udp(ts, src, dst, carrier.wrap(src, dst, true, &buf[..len]))?;
        Ok(())
    };
    let global = [WireStr::new("Global")];
    for (i, c) in clients.iter().enumerate() {
        let name = WireStr::new(names[i]);
        put(
            &mut w,
            ts,
            *c,
            server,
            Message::HandshakeRequest(HandshakeRequest { codec, name }),
        )?;
        put(
            &mut w,
            ts,
            server,
            *c,
            Message::HandshakeResponse(HandshakeResponse::modern(session, i as u16)),
        )?;
        let state = ClientState {
            session,
            name,
            client_id: i as u16,
            codec,
            rooms: Seq::Items(&global),
            rooms_encoding: RoomsEncoding::List,
        };
        put(&mut w, ts, *c, server, Message::ClientState(state))?;
        for d in &clients[..=i] {
            put(&mut w, ts, server, *d, Message::ClientState(state))?;
        }
        written += 4 + i as u64;
        ts += 1_000_000;
    }
    // Voice: speakers take turns; every frame is one relay and two forwards.
    let mut opus = [0u8; 60];
    let mut seq = [0u16; 3];
    let channels = [Channel {
        bitfield: ChannelBitfield::new(ChannelType::Room, false, false, Priority::Default, 0, 1.0),
        recipient: room_id("Global"),
    }];
    let mut k = 0u64;
    while written < n {
        let speaker = ((k / 250) % 3) as usize;
        for (j, b) in opus.iter_mut().enumerate() {
            *b = (k as u8).wrapping_add(j as u8).wrapping_mul(31);
        }
        opus[0] = 0x48; // TOC: SILK-only wideband, 20 ms, mono
        let voice = VoiceData {
            session,
            sender: speaker as u16,
            options: PacketOptions::extended(0),
            seq: seq[speaker],
            channels: Seq::Items(&channels),
            audio: &opus,
        };
        seq[speaker] = seq[speaker].wrapping_add(1);
        let inner = Message::VoiceData(voice).to_vec(Variant::Modern, DEFAULT_BUFFER_SIZE)?;
        let listeners: Vec<u16> = (0..3u16).filter(|&l| l as usize != speaker).collect();
        let relay = ServerRelay {
            session,
            destinations: Seq::Items(&listeners),
            payload: &inner,
        };
        let len = Message::ServerRelayUnreliable(relay).encode(Variant::Modern, &mut buf)?;
        let d = carrier.wrap(clients[speaker], server, false, &buf[..len]);
        w.write_udp(ts, clients[speaker], server, d)?;
        written += 1;
        for &l in &listeners {
            if written >= n {
                break;
            }
            let d = carrier.wrap(server, clients[l as usize], false, &inner);
            w.write_udp(ts + 300_000, server, clients[l as usize], d)?;
            written += 1;
        }
        ts += 20_000_000 / 3;
        k += 1;
    }
    w.flush()?;
    eprintln!("wrote {written} packets to {out}");
    Ok(())
}

/// Carries packets as they are, or as Mirror over kcp2k does (GAME-TRANSPORTS §1).
struct Carrier {
    mirror: bool,
    /// The next kcp sequence number per direction.
    sn: HashMap<(SocketAddr, SocketAddr), u32>,
    out: Vec<u8>,
}

impl Carrier {
    fn wrap<'a>(
        &'a mut self,
        src: SocketAddr,
        dst: SocketAddr,
        reliable: bool,
        packet: &'a [u8],
    ) -> &'a [u8] {
        if !self.mirror {
            return packet;
        }
        let o = &mut self.out;
        o.clear();
        let cookie = [0x5a, 0x17, 0xc0, 0x0c];
        // The Mirror batch: timestamp, varuint size, id 0xD355, u16 length, packet.
        let mut batch = 12.5f64.to_le_bytes().to_vec();
        let size = 4 + packet.len();
        if size <= 240 {
            batch.push(size as u8);
        } else {
            let v = size - 240;
            batch.extend_from_slice(&[(v >> 8) as u8 + 241, v as u8]);
        }
        batch.extend_from_slice(&0xD355u16.to_le_bytes());
        batch.extend_from_slice(&(packet.len() as u16).to_le_bytes());
        batch.extend_from_slice(packet);
        if reliable {
            let sn = self.sn.entry((src, dst)).or_default();
            o.push(1);
            o.extend_from_slice(&cookie);
            o.extend_from_slice(&[0, 0, 0, 0, 81, 0, 0x00, 0x10]);
            o.extend_from_slice(&(*sn * 20).to_le_bytes());
            o.extend_from_slice(&sn.to_le_bytes());
            o.extend_from_slice(&0u32.to_le_bytes());
            o.extend_from_slice(&(1 + batch.len() as u32).to_le_bytes());
            o.push(3);
            *sn += 1;
        } else {
            o.push(2);
            o.extend_from_slice(&cookie);
            o.push(4);
        }
        o.extend_from_slice(&batch);
        o
    }
}

/// Built and run by `cargo test` (`test = true` in Cargo.toml): `--help` prints the usage,
/// it is not read as N (it printed a ParseIntError).
#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        std::iter::once("gen_capture")
            .chain(a.iter().copied())
            .map(String::from)
            .collect()
    }

    #[test]
    fn help_is_the_usage_and_bad_arguments_say_why() {
        assert_eq!(parse(&args(&["--help"])), Ok(None));
        assert_eq!(parse(&args(&["-h", "3"])), Ok(None));
        assert_eq!(
            parse(&args(&["100", "x.pcap", "--mirror"])),
            Ok(Some((100, "x.pcap".into(), true)))
        );
        let e = parse(&args(&["many", "x.pcap"])).unwrap_err();
        assert_eq!(e, format!("N 'many' is not a whole number\n{USAGE}"));
        assert_eq!(parse(&args(&["100"])).unwrap_err(), USAGE);
        assert!(USAGE.starts_with("usage: gen_capture N OUT.pcap"));
    }
}
