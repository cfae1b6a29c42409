//! `dissonance decode`: decode packets given as hex or as a raw file.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use dissonance_tools::codec::{Message, Packet};
use dissonance_tools::output::json::{Names, PacketJson};
use dissonance_tools::output::{hex, text};

use super::Error;

/// Decode Dissonance packets given as hex (or a raw binary file) and print every field.
///
/// Room ids are shown with their room name when a name in the input (ClientState,
/// DeltaChannelState, legacy HandshakeResponse) or a --room flag hashes to them, and
/// client ids with the player name when a ClientState in the input names them.
///
/// Exit status: 0 when every packet decoded, 1 when any was malformed, 2 on bad input
/// (not hex, unreadable file).
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
  dissonance decode 8bc70401000003c00000bb800006616c696365\n  \
  dissonance decode --json 8bc70a123456780001 | jq .\n  \
  printf '8bc70a123456780001\\n8bc70600000007\\n' | dissonance decode --stdin\n  \
  dissonance decode --file packet.bin")]
pub struct Args {
    /// Packets as hex strings (spaces, ':' and '-' between bytes are ignored).
    #[arg(value_name = "HEX")]
    packets: Vec<String>,
    /// Read packets from standard input, one hex packet per line ('#' starts a comment).
    #[arg(long)]
    stdin: bool,
    /// Read one raw binary packet from this file.
    #[arg(long, value_name = "F")]
    file: Vec<PathBuf>,
    /// Output format: `text`, `json` (one array of packet objects) or `ndjson` (one
    /// object per line); schema in docs/json-schema.md.
    #[arg(long, short = 'F', value_enum, default_value_t = DecodeFormat::Text)]
    format: DecodeFormat,
    /// The same as `-F ndjson` (kept for existing scripts).
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// A room name to recognise in room ids (repeatable).
    #[arg(long = "room", value_name = "NAME")]
    rooms: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DecodeFormat {
    Text,
    Json,
    Ndjson,
}

pub fn run(args: Args) -> Result<i32, Error> {
    let format = if args.json {
        DecodeFormat::Ndjson
    } else {
        args.format
    };
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, h) in args.packets.iter().enumerate() {
        let bytes = hex::parse(h).map_err(|e| format!("argument {}: {e}", i + 1))?;
        inputs.push((format!("argument {}", i + 1), bytes));
    }
    if args.stdin {
        for (n, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.map_err(|e| format!("reading standard input: {e}"))?;
            let content = line.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let bytes = hex::parse(content).map_err(|e| format!("stdin line {}: {e}", n + 1))?;
            inputs.push((format!("line {}", n + 1), bytes));
        }
    }
    for f in &args.file {
        let bytes = std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        inputs.push((f.display().to_string(), bytes));
    }
    if inputs.is_empty() {
        return Err("no packets given: pass hex arguments, --stdin or --file (see --help)".into());
    }

    let decoded: Vec<_> = inputs.iter().map(|(_, b)| Packet::decode(b)).collect();
    let mut names = LearnedNames::default();
    for r in &args.rooms {
        names
            .rooms
            .insert(dissonance_tools::codec::room_id(r), r.clone());
    }
    for p in decoded.iter().flatten() {
        names.learn(&p.message);
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut malformed = 0;
    if format == DecodeFormat::Json {
        write!(out, "[")?;
    }
    for (i, ((label, bytes), result)) in inputs.iter().zip(&decoded).enumerate() {
        if result.is_err() {
            malformed += 1;
        }
        if format != DecodeFormat::Text {
            if format == DecodeFormat::Json && i > 0 {
                write!(out, ",")?;
            }
            serde_json::to_writer(
                &mut out,
                &PacketJson {
                    bytes,
                    result,
                    names: &names,
                },
            )?;
            if format == DecodeFormat::Ndjson {
                writeln!(out)?;
            }
        } else {
            let mut s = String::new();
            if inputs.len() > 1 {
                s.push_str(&format!("# {label}\n"));
            }
            text::write_block(&mut s, bytes, result, &names, 0)?;
            writeln!(out, "{s}")?;
        }
    }
    if format == DecodeFormat::Json {
        writeln!(out, "]")?;
    }
    if malformed > 0 && format == DecodeFormat::Text {
        eprintln!(
            "dissonance: {malformed} of {} packets malformed",
            inputs.len()
        );
    }
    Ok(if malformed > 0 { 1 } else { 0 })
}

/// Names found in the input itself.
#[derive(Default)]
struct LearnedNames {
    rooms: HashMap<u16, String>,
    clients: HashMap<u16, String>,
}

impl LearnedNames {
    fn learn(&mut self, m: &Message<'_>) {
        let mut room = |n: dissonance_tools::codec::WireStr<'_>| {
            if let Some(s) = n.to_str_lossy() {
                self.rooms
                    .entry(n.room_id())
                    .or_insert_with(|| s.into_owned());
            }
        };
        match m {
            Message::ClientState(c) => {
                c.rooms.iter().for_each(&mut room);
                if let Some(s) = c.name.to_str_lossy() {
                    self.clients.insert(c.client_id, s.into_owned());
                }
            }
            Message::DeltaChannelState(d) => room(d.name),
            Message::HandshakeResponse(h) => {
                h.room_names.iter().for_each(&mut room);
                for c in h.clients.iter() {
                    if let Some(s) = c.name.to_str_lossy() {
                        self.clients.insert(c.id, s.into_owned());
                    }
                }
            }
            Message::ServerRelayReliable(r) | Message::ServerRelayUnreliable(r) => {
                if let Ok(p) = r.inner() {
                    self.learn(&p.message);
                }
            }
            _ => {}
        }
    }
}

impl Names for LearnedNames {
    fn room(&self, id: u16) -> Option<&str> {
        self.rooms.get(&id).map(String::as_str)
    }
    fn client(&self, id: u16) -> Option<&str> {
        self.clients.get(&id).map(String::as_str)
    }
}
