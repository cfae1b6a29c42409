//! Builds `samples/session.pcap`: a realistic Dissonance session over the plain UDP
//! transport (docs/transports.md), with voice made from speech WAVs encoded by libopus the way
//! Dissonance encodes (48 kHz mono, VOIP, 20 ms frames, in-band FEC). The server side
//! behaves like the real 9.0.8 server (docs/protocol.md §8): empty HandshakeResponse then one
//! ClientState per client, ClientState/DeltaChannelState echoed to every client, relays
//! unwrapped and forwarded, RemoveClient on goodbye. See samples/README.md.
//!
//! Usage: cargo run --release --example make_sample -- OUT.pcap ALICE.wav BOB.wav DAVE.wav
//! (48 kHz mono 16-bit WAVs; samples/make.sh makes them with espeak-ng and sox).

use std::net::SocketAddr;

use audiopus::coder::Encoder;
use audiopus::{Application, Bitrate, Channels, SampleRate};
use dissonance_tools::capture::{PcapWriter, TsResolution};
use dissonance_tools::codec::*;
use dissonance_tools::collate::sort_dotnet;

type Error = Box<dyn std::error::Error>;

const SESSION: u32 = 0x2A3B_4C5D;
const SERVER: &str = "127.0.0.1:47300";
const MS: i64 = 1_000_000;

struct Client {
    name: &'static str,
    addr: SocketAddr,
    id: u16,
    rooms: Vec<String>,
    seq: u16,
    online: bool,
}

struct Sim {
    w: PcapWriter<std::io::BufWriter<std::fs::File>>,
    ts: i64,
    server: SocketAddr,
    clients: Vec<Client>,
}

impl Sim {
    fn send(&mut self, src: SocketAddr, dst: SocketAddr, bytes: &[u8]) -> Result<(), Error> {
        self.w.write_udp(self.ts, src, dst, bytes)?;
        self.ts += 150_000; // 0.15 ms between datagrams
        Ok(())
    }

    fn encode(m: Message<'_>) -> Result<Vec<u8>, Error> {
        Ok(m.to_vec(Variant::Modern, DEFAULT_BUFFER_SIZE)?)
    }

    fn state(c: &Client) -> Result<Vec<u8>, Error> {
        let rooms: Vec<WireStr<'_>> = c.rooms.iter().map(|r| WireStr::new(r)).collect();
        Self::encode(Message::ClientState(ClientState {
            session: SESSION,
            name: WireStr::new(c.name),
            client_id: c.id,
            codec: CodecSettings::OPUS_48K_20MS,
            rooms: Seq::Items(&rooms),
            rooms_encoding: RoomsEncoding::List,
        }))
    }

    /// Server sends `bytes` to every online client, reliably.
    fn broadcast(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let dsts: Vec<SocketAddr> = self
            .clients
            .iter()
            .filter(|c| c.online)
            .map(|c| c.addr)
            .collect();
        for d in dsts {
            self.send(self.server, d, bytes)?;
        }
        Ok(())
    }

    fn join(&mut self, i: usize, rooms: &[&str]) -> Result<(), Error> {
        let (addr, name) = (self.clients[i].addr, self.clients[i].name);
        let hello = Self::encode(Message::HandshakeRequest(HandshakeRequest {
            codec: CodecSettings::OPUS_48K_20MS,
            name: WireStr::new(name),
        }))?;
        self.send(addr, self.server, &hello)?;
        self.clients[i].online = true;
        let id = self.clients[i].id;
        let resp = Self::encode(Message::HandshakeResponse(HandshakeResponse::modern(
            SESSION, id,
        )))?;
        self.send(self.server, addr, &resp)?;
        // One ClientState per registered client, the newcomer included (no rooms yet).
        let states: Vec<Vec<u8>> = self
            .clients
            .iter()
            .filter(|c| c.online)
            .map(Self::state)
            .collect::<Result<_, _>>()?;
        for s in states {
            self.send(self.server, addr, &s)?;
        }
        self.ts += 10 * MS;
        let mut rooms: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
        sort_dotnet(&mut rooms);
        self.clients[i].rooms = rooms;
        let own = Self::state(&self.clients[i])?;
        self.send(addr, self.server, &own)?;
        self.broadcast(&own)?;
        self.ts += 200 * MS;
        Ok(())
    }

    fn delta(&mut self, i: usize, joined: bool, room: &str) -> Result<(), Error> {
        let c = &mut self.clients[i];
        if joined {
            c.rooms.push(room.to_string());
            sort_dotnet(&mut c.rooms);
        } else {
            c.rooms.retain(|r| r != room);
        }
        let bytes = Self::encode(Message::DeltaChannelState(DeltaChannelState::new(
            SESSION, joined, c.id, room,
        )))?;
        let addr = c.addr;
        self.send(addr, self.server, &bytes)?;
        self.broadcast(&bytes)
    }

    /// Ids of the online clients other than `i` listening to `room`.
    fn listeners(&self, i: usize, room: &str) -> Vec<u16> {
        self.clients
            .iter()
            .enumerate()
            .filter(|(j, c)| *j != i && c.online && c.rooms.iter().any(|r| r == room))
            .map(|(_, c)| c.id)
            .collect()
    }

    /// Relays `payload` to `dests` through the server, which forwards it to each.
    fn relay(
        &mut self,
        i: usize,
        reliable: bool,
        dests: &[u16],
        payload: &[u8],
    ) -> Result<(), Error> {
        let r = ServerRelay {
            session: SESSION,
            destinations: Seq::Items(dests),
            payload,
        };
        let m = if reliable {
            Message::ServerRelayReliable(r)
        } else {
            Message::ServerRelayUnreliable(r)
        };
        let bytes = Self::encode(m)?;
        self.send(self.clients[i].addr, self.server, &bytes)?;
        for d in dests {
            let addr = self.clients.iter().find(|c| c.id == *d).map(|c| c.addr);
            if let Some(a) = addr {
                self.send(self.server, a, payload)?;
            }
        }
        Ok(())
    }

    /// Speaks a whole WAV on `channels`, one VoiceData per 20 ms frame, the last closing.
    fn speak(
        &mut self,
        i: usize,
        wav: &str,
        channels: &[(ChannelType, u16)],
        channel_session: u32,
    ) -> Result<(), Error> {
        let samples: Vec<f32> = hound::WavReader::open(wav)?
            .into_samples::<i16>()
            .map(|s| s.map(|v| v as f32 / 32768.0))
            .collect::<Result<_, _>>()?;
        let mut enc = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip)?;
        enc.set_bitrate(Bitrate::BitsPerSecond(24000))?;
        enc.set_inband_fec(true)?;
        enc.set_packet_loss_perc(10)?;
        let frames: Vec<&[f32]> = samples.chunks(960).collect();
        let mut dests: Vec<u16> = Vec::new();
        for (ty, r) in channels {
            match ty {
                ChannelType::Player => dests.push(*r),
                ChannelType::Room => {
                    let name = ["Global", "Red Team", "Blue Team"]
                        .into_iter()
                        .find(|n| room_id(n) == *r)
                        .unwrap_or("");
                    dests.extend(self.listeners(i, name));
                }
            }
        }
        dests.sort();
        dests.dedup();
        let start = self.ts;
        for (k, frame) in frames.iter().enumerate() {
            let mut pcm = [0f32; 960];
            pcm[..frame.len()].copy_from_slice(frame); // the last frame is zero padded
            let mut opus = [0u8; 960 * 8];
            let n = enc.encode_float(&pcm, &mut opus)?;
            let closing = k + 1 == frames.len();
            let chans: Vec<Channel> = channels
                .iter()
                .map(|(ty, r)| Channel {
                    bitfield: ChannelBitfield::new(*ty, false, closing, Priority::Default, 0, 1.0),
                    recipient: *r,
                })
                .collect();
            let c = &mut self.clients[i];
            let voice = Self::encode(Message::VoiceData(VoiceData {
                session: SESSION,
                sender: c.id,
                options: PacketOptions::extended(channel_session),
                seq: c.seq,
                channels: Seq::Items(&chans),
                audio: &opus[..n],
            }))?;
            c.seq = c.seq.wrapping_add(1);
            self.ts = start + k as i64 * 20 * MS;
            self.relay(i, false, &dests, &voice)?;
        }
        self.ts += 200 * MS;
        Ok(())
    }

    fn text(
        &mut self,
        i: usize,
        ty: ChannelType,
        target: u16,
        dests: &[u16],
        text: &str,
    ) -> Result<(), Error> {
        let bytes = Self::encode(Message::TextData(TextData {
            session: SESSION,
            recipient_type_byte: ty.text_byte(),
            sender: self.clients[i].id,
            target,
            text: WireStr::new(text),
        }))?;
        self.relay(i, true, dests, &bytes)?;
        self.ts += 300 * MS;
        Ok(())
    }

    fn bye(&mut self, i: usize) -> Result<(), Error> {
        self.send(self.clients[i].addr, self.server, &[0x00, 0x42, 0x59, 0x45])?;
        self.clients[i].online = false;
        let remove = Self::encode(Message::RemoveClient(RemoveClient {
            session: SESSION,
            client_id: self.clients[i].id,
        }))?;
        self.broadcast(&remove)?;
        self.ts += 400 * MS;
        Ok(())
    }
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        return Err("usage: make_sample OUT.pcap ALICE.wav BOB.wav DAVE.wav".into());
    }
    let file = std::io::BufWriter::new(std::fs::File::create(&args[1])?);
    let names = ["alice", "bob", "carol", "dave"];
    let mut sim = Sim {
        w: PcapWriter::new(file, TsResolution::Microsecond)?,
        ts: 1_795_600_000_000_000_000,
        server: SERVER.parse()?,
        clients: names
            .iter()
            .enumerate()
            .map(|(i, n)| Client {
                name: n,
                addr: format!("127.0.0.1:{}", 47301 + i).parse().unwrap(),
                id: i as u16,
                rooms: vec![],
                seq: 0,
                online: false,
            })
            .collect(),
    };
    let (global, red) = (room_id("Global"), room_id("Red Team"));
    sim.join(0, &["Global"])?;
    sim.join(1, &["Global", "Red Team"])?;
    sim.join(2, &["Global", "Blue Team"])?;
    sim.ts += 500 * MS;
    // alice talks to the Global room (bob and carol hear her).
    sim.speak(0, &args[2], &[(ChannelType::Room, global)], 0)?;
    // bob answers alice on a player channel while also talking into Red Team.
    sim.speak(
        1,
        &args[3],
        &[(ChannelType::Room, red), (ChannelType::Player, 0)],
        0,
    )?;
    let everyone_else = sim.listeners(2, "Global");
    sim.text(
        2,
        ChannelType::Room,
        global,
        &everyone_else,
        "carol here, switching to Red Team",
    )?;
    sim.join(3, &["Red Team"])?;
    sim.delta(2, false, "Global")?;
    sim.delta(2, true, "Red Team")?;
    sim.ts += 300 * MS;
    // dave talks to Red Team (bob and carol).
    sim.speak(3, &args[4], &[(ChannelType::Room, red)], 0)?;
    sim.text(1, ChannelType::Player, 3, &[3], "welcome dave")?;
    sim.bye(2)?;
    sim.bye(3)?;
    sim.bye(1)?;
    sim.bye(0)?;
    sim.w.flush()?;
    Ok(())
}
