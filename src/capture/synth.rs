//! Synthetic captures for tests and benchmarks: sessions of any size, written with the
//! real codec and [`PcapWriter`], so that what is measured is what real traffic costs.

use std::io::Write;
use std::net::SocketAddr;

use super::{PcapWriter, TsResolution};
use crate::codec::*;

/// The server of every synthetic session, and client `i`'s address (250 per /24).
const SERVER: ([u8; 4], u16) = ([10, 0, 0, 1], 7777);
fn client_addr(i: u16) -> SocketAddr {
    SocketAddr::from(([10, (1 + i / 250) as u8, (i % 250) as u8, 2], 5000))
}
/// The first timestamp of every synthetic capture (Unix ns).
const T0: i64 = 1_795_514_472_000_000_000;

/// Client `id` named `name` joins room Global: HandshakeRequest, HandshakeResponse,
/// ClientState both ways, all at `ts`. Returns the datagrams written (4).
fn write_join<W: Write>(
    w: &mut PcapWriter<W>,
    buf: &mut [u8],
    ts: i64,
    session: u32,
    id: u16,
    name: &str,
) -> std::io::Result<u64> {
    let (addr, server) = (client_addr(id), SocketAddr::from(SERVER));
    let codec = CodecSettings::OPUS_48K_20MS;
    let name = WireStr::new(name);
    let global = [WireStr::new("Global")];
    let state = ClientState {
        session,
        name,
        client_id: id,
        codec,
        rooms: Seq::Items(&global),
        rooms_encoding: RoomsEncoding::List,
    };
    let mut written = 0;
    for (src, dst, m) in [
        (
            addr,
            server,
            Message::HandshakeRequest(HandshakeRequest { codec, name }),
        ),
        (
            server,
            addr,
            Message::HandshakeResponse(HandshakeResponse::modern(session, id)),
        ),
        (addr, server, Message::ClientState(state)),
        (server, addr, Message::ClientState(state)),
    ] {
        let len = m
            .encode(Variant::Modern, buf)
            .map_err(std::io::Error::other)?;
        w.write_udp(ts, src, dst, &buf[..len])?;
        written += 1;
    }
    Ok(written)
}

/// `frame` relayed by its sender to the server for `listeners` (ServerRelayUnreliable) at
/// `ts`; returns the encoded VoiceData, which the server forwards.
fn write_voice_relay<W: Write>(
    w: &mut PcapWriter<W>,
    buf: &mut [u8],
    ts: i64,
    frame: VoiceData,
    listeners: &[u16],
) -> std::io::Result<Vec<u8>> {
    let (session, sender) = (frame.session, frame.sender);
    let inner = Message::VoiceData(frame)
        .to_vec(Variant::Modern, DEFAULT_BUFFER_SIZE)
        .map_err(std::io::Error::other)?;
    let relay = Message::ServerRelayUnreliable(ServerRelay {
        session,
        destinations: Seq::Items(listeners),
        payload: &inner,
    });
    let len = relay
        .encode(Variant::Modern, buf)
        .map_err(std::io::Error::other)?;
    w.write_udp(
        ts,
        client_addr(sender),
        SocketAddr::from(SERVER),
        &buf[..len],
    )?;
    Ok(inner)
}

/// A room-Global channel; `closing` marks a spurt's last frame.
fn global_channel(closing: bool) -> Channel {
    Channel {
        bitfield: ChannelBitfield::new(
            ChannelType::Room,
            false,
            closing,
            Priority::Default,
            0,
            1.0,
        ),
        recipient: room_id("Global"),
    }
}

/// A crowded session: `clients` clients with distinct names of `name_len` bytes join one
/// after the other (HandshakeRequest, HandshakeResponse, ClientState both ways), each
/// sends `voice` frames to room Global (a relay to the server, forwarded to the two
/// previous clients) and says its transport goodbye. Returns the datagrams written.
/// Everything kept per client, per name or per event shows in a reader's memory.
pub fn write_crowd<W: Write>(
    out: W,
    clients: u16,
    name_len: usize,
    voice: u64,
) -> std::io::Result<u64> {
    let mut w = PcapWriter::new(out, TsResolution::Microsecond)?;
    let server = SocketAddr::from(SERVER);
    let session = 0x0C0F_FEE5;
    let channels = [global_channel(false)];
    let mut ts = T0;
    let mut buf = vec![0u8; 2 * name_len + 4096];
    let mut written = 0u64;
    // A valid 20 ms SILK frame's TOC, then filler the decoder takes as speech.
    let mut opus = [0x48u8; 40];
    for i in 0..clients {
        let addr = client_addr(i);
        // Distinct names: the id first, then filler up to name_len bytes.
        let mut name = format!("client-{i:05}-");
        while name.len() < name_len {
            name.push((b'a' + (name.len() % 26) as u8) as char);
        }
        written += write_join(&mut w, &mut buf, ts, session, i, &name)?;
        let listeners: Vec<u16> = (i.saturating_sub(2)..i).collect();
        for seq in 0..voice {
            ts += 20_000_000;
            opus[1] = seq as u8;
            let frame = VoiceData {
                session,
                sender: i,
                options: PacketOptions::extended(0),
                seq: seq as u16,
                channels: Seq::Items(&channels),
                audio: &opus,
            };
            let inner = write_voice_relay(&mut w, &mut buf, ts, frame, &listeners)?;
            written += 1;
            for &l in &listeners {
                w.write_udp(ts + 300_000, server, client_addr(l), &inner)?;
                written += 1;
            }
        }
        ts += 1_000_000;
        w.write_udp(ts, addr, server, &[0x00, 0x42, 0x59, 0x45])?;
        written += 1;
    }
    w.flush()?;
    Ok(written)
}

/// A chatty session: `speakers` clients join, then take turns speaking `spurts` talk
/// spurts each of `frames` 20 ms frames (the last with the closing flag, each spurt in a
/// new channel session, 100 ms apart), relayed to the server for the next client. Returns
/// the datagrams written. Everything kept per spurt shows in `voice`'s memory.
pub fn write_chatter<W: Write>(
    out: W,
    speakers: u16,
    spurts: u32,
    frames: u16,
) -> std::io::Result<u64> {
    let mut w = PcapWriter::new(out, TsResolution::Microsecond)?;
    let session = 0x5EED_0001;
    let mut ts = T0;
    let mut buf = vec![0u8; 4096];
    let mut written = 0u64;
    for i in 0..speakers {
        written += write_join(&mut w, &mut buf, ts, session, i, &format!("speaker-{i:05}"))?;
        ts += 1_000_000;
    }
    // A valid 20 ms SILK frame's TOC, then filler the decoder takes as speech.
    let mut opus = [0x48u8; 40];
    let mut seq = vec![0u16; speakers as usize];
    for round in 0..spurts {
        for i in 0..speakers {
            let listeners = [(i + 1) % speakers];
            for k in 0..frames {
                let channels = [global_channel(k + 1 == frames)];
                opus[1] = k as u8;
                let frame = VoiceData {
                    session,
                    sender: i,
                    options: PacketOptions::extended(round),
                    seq: seq[i as usize],
                    channels: Seq::Items(&channels),
                    audio: &opus,
                };
                seq[i as usize] = seq[i as usize].wrapping_add(1);
                write_voice_relay(&mut w, &mut buf, ts, frame, &listeners)?;
                written += 1;
                ts += 20_000_000;
            }
            ts += 100_000_000;
        }
    }
    w.flush()?;
    Ok(written)
}
