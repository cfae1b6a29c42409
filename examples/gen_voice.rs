//! Writes a synthetic capture for the `voice` benchmark: one speaker (alice) talking for
//! SECONDS in 20 ms Opus frames to a listener (bob) through the server, in talk spurts of
//! 30 s (closing flag on the last frame, channel session +1, 100 ms pause), each frame
//! relayed client -> server and forwarded server -> bob: two copies per frame, 16-bit
//! sequence numbers wrapping on long runs. The speech is the repository's reference
//! recordings, encoded once with libopus as Dissonance does (48 kHz mono, VOIP,
//! 24 kbit/s, in-band FEC) and repeated.
//!
//! It also writes FRAMES, the same Opus frames in order for the bare decode loop
//! (examples/bare_opus.rs): `u16 LE length, bytes` per frame, a length of 0 ends a spurt.
//!
//! Usage: cargo run --release --example gen_voice -- SECONDS OUT.pcap FRAMES

use std::io::Write;
use std::net::SocketAddr;

use audiopus::coder::Encoder;
use audiopus::{Application, Bitrate, Channels, SampleRate};
use dissonance_tools::capture::{PcapWriter, TsResolution};
use dissonance_tools::codec::*;

type Error = Box<dyn std::error::Error>;

const SPURT_FRAMES: usize = 1500; // 30 s
const MS: i64 = 1_000_000;

/// 30 s of speech: the reference WAVs back to back, repeated, encoded once.
fn speech_frames() -> Result<Vec<Vec<u8>>, Error> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/captures");
    let mut pcm: Vec<f32> = Vec::new();
    for name in ["alice", "bob"] {
        let r = hound::WavReader::open(format!("{dir}/three-friends.{name}.ref.wav"))?;
        for s in r.into_samples::<i16>() {
            pcm.push(s? as f32 / 32768.0);
        }
    }
    let unique = pcm.clone();
    while pcm.len() < SPURT_FRAMES * 960 {
        pcm.extend_from_slice(&unique);
    }
    let mut enc = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip)?;
    enc.set_bitrate(Bitrate::BitsPerSecond(24000))?;
    enc.set_inband_fec(true)?;
    enc.set_packet_loss_perc(10)?;
    let mut out = Vec::with_capacity(SPURT_FRAMES);
    let mut buf = [0u8; 960 * 8];
    for frame in pcm.chunks_exact(960).take(SPURT_FRAMES) {
        let n = enc.encode_float(frame, &mut buf)?;
        out.push(buf[..n].to_vec());
    }
    Ok(out)
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: gen_voice SECONDS OUT.pcap FRAMES";
    let seconds: u64 = args.get(1).ok_or(usage)?.parse()?;
    let (out, frames_out) = (args.get(2).ok_or(usage)?, args.get(3).ok_or(usage)?);
    let speech = speech_frames()?;

    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let mut w = PcapWriter::new(file, TsResolution::Microsecond)?;
    let mut raw = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(frames_out)?);
    let server: SocketAddr = "10.0.0.1:7777".parse()?;
    let clients: [SocketAddr; 2] = ["10.0.0.2:5000".parse()?, "10.0.0.3:5000".parse()?];
    let session = 0x1F2E_3D4C;
    let codec = CodecSettings::OPUS_48K_20MS;
    let mut ts: i64 = 1_795_514_472_000_000_000;
    let mut buf = [0u8; 1024];
    let global = [WireStr::new("Global")];
    for (i, name) in ["alice", "bob"].iter().enumerate() {
        let name = WireStr::new(name);
        let mut put = |ts, src, dst, m: Message<'_>| -> Result<(), Error> {
            let len = m.encode(Variant::Modern, &mut buf)?;
            w.write_udp(ts, src, dst, &buf[..len])?;
            Ok(())
        };
        let hello = HandshakeRequest { codec, name };
        put(ts, clients[i], server, Message::HandshakeRequest(hello))?;
        let resp = HandshakeResponse::modern(session, i as u16);
        put(ts, server, clients[i], Message::HandshakeResponse(resp))?;
        let state = ClientState {
            session,
            name,
            client_id: i as u16,
            codec,
            rooms: Seq::Items(&global),
            rooms_encoding: RoomsEncoding::List,
        };
        put(ts, clients[i], server, Message::ClientState(state))?;
        for d in &clients[..=i] {
            put(ts, server, *d, Message::ClientState(state))?;
        }
        ts += MS;
    }

    let total = (seconds * 50) as usize;
    let mut seq = 0u16;
    let mut sent = 0usize;
    let mut spurt = 0u32;
    while sent < total {
        let n = SPURT_FRAMES.min(total - sent);
        for (k, opus) in speech.iter().take(n).enumerate() {
            let closing = k + 1 == n;
            let channels = [Channel {
                bitfield: ChannelBitfield::new(
                    ChannelType::Room,
                    false,
                    closing,
                    Priority::Default,
                    0,
                    1.0,
                ),
                recipient: room_id("Global"),
            }];
            let voice = VoiceData {
                session,
                sender: 0,
                options: PacketOptions::extended(spurt),
                seq,
                channels: Seq::Items(&channels),
                audio: opus,
            };
            seq = seq.wrapping_add(1);
            let inner = Message::VoiceData(voice).to_vec(Variant::Modern, DEFAULT_BUFFER_SIZE)?;
            let relay = ServerRelay {
                session,
                destinations: Seq::Items(&[1]),
                payload: &inner,
            };
            let len = Message::ServerRelayUnreliable(relay).encode(Variant::Modern, &mut buf)?;
            w.write_udp(ts, clients[0], server, &buf[..len])?;
            w.write_udp(ts + 300_000, server, clients[1], &inner)?;
            raw.write_all(&(opus.len() as u16).to_le_bytes())?;
            raw.write_all(opus)?;
            ts += 20 * MS;
        }
        raw.write_all(&0u16.to_le_bytes())?;
        sent += n;
        spurt += 1;
        ts += 100 * MS;
    }
    w.flush()?;
    raw.flush()?;
    eprintln!(
        "wrote {total} frames in {spurt} spurts ({seconds} s of speech) to {out} and {frames_out}"
    );
    Ok(())
}
