//! `dissonance client`: arguments; the runtime is [`dissonance_tools::net::client::runtime`].

use std::net::SocketAddr;
use std::path::PathBuf;

use dissonance_tools::net::client::runtime::{run as run_lib, Options};

use super::Error;

/// Join a Dissonance server as one player and run a script of actions.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Script actions (separated by `;` or new lines, `#` starts a comment):\n  \
  join ROOM | leave ROOM         start/stop listening to a room\n  \
  say ROOM|@PLAYER TEXT          text to a room's listeners or to one player\n  \
  speak FILE.wav ROOM|@PLAYER    Opus-encode a 48 kHz WAV and send it in real time\n  \
  wait SECS                      keep listening\n  \
  quit                           leave (also done at the end of the script)\n\
Quote names with spaces: say \"Red Team\" hello.\n\n\
Examples:\n  \
  dissonance client --server 127.0.0.1:47200 --name alice --rooms Global -e 'wait 1; say Global hi; wait 5'\n  \
  dissonance client --server 127.0.0.1:47200 --name bob --rooms Global --record-voice heard/ -e 'wait 30'\n  \
  dissonance client --server 127.0.0.1:47200 --name carol --script samples/carol.txt -F ndjson"
)]
pub struct Args {
    /// Server address (a `dissonance serve` or any server on the plain UDP transport).
    #[arg(long, value_name = "ADDR", value_parser = super::values::peer_addr)]
    server: SocketAddr,
    /// Player name (unique in the session).
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Rooms to listen to from the start, comma separated.
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    rooms: Vec<String>,
    /// Script file of actions.
    #[arg(long, value_name = "FILE", conflicts_with = "execute")]
    script: Option<PathBuf>,
    /// Actions on the command line: -e 'join Global; say Global hi; wait 2'.
    #[arg(short = 'e', long = "execute", value_name = "ACTIONS")]
    execute: Option<String>,
    /// Opus frame duration in ms (10, 20, 40, 60); advertised in the handshake.
    #[arg(long, default_value_t = 20)]
    frame_ms: u32,
    /// Opus bitrate in bit/s (Dissonance: 10000, 17000 or 24000).
    #[arg(long, default_value_t = 24000)]
    bitrate: i32,
    /// Event log on stdout: `text` lines, or `ndjson`, one JSON object per line (schema
    /// in docs/json-schema.md). `--log-format` is the same flag.
    #[arg(
        long = "format",
        short = 'F',
        alias = "log-format",
        value_name = "text|ndjson",
        default_value = "text",
        value_parser = super::ops::log_format
    )]
    log_format: super::ops::LogFormatArg,
    /// Log every voice packet received (otherwise only talk spurt starts and ends).
    #[arg(long)]
    log_voice_packets: bool,
    /// Write what was heard as one WAV per speaker into DIR.
    #[arg(long, value_name = "DIR")]
    record_voice: Option<PathBuf>,
    /// Stop after this many seconds, script finished or not.
    #[arg(long, default_value = "300s", value_name = "DURATION", value_parser = super::values::seconds)]
    duration: f64,
    /// Local address to send from (default: an ephemeral port on the matching family).
    #[arg(long, value_name = "ADDR", value_parser = super::values::listen_addr)]
    bind: Option<SocketAddr>,
}

pub fn run(a: Args) -> Result<i32, Error> {
    run_lib(Options {
        server: a.server,
        name: a.name,
        rooms: a.rooms,
        script: a.script,
        execute: a.execute,
        frame_ms: a.frame_ms,
        bitrate: a.bitrate,
        log_format: a.log_format.into(),
        log_voice_packets: a.log_voice_packets,
        record_voice: a.record_voice,
        duration: a.duration,
        bind: a.bind,
    })
}
