//! `dissonance simulate`: arguments; the runtime is [`dissonance_tools::net::simulate`].

use std::net::SocketAddr;
use std::path::PathBuf;

use dissonance_tools::net::simulate::{run as run_lib, Options};

use super::Error;

/// Many clients in one process: joins, rooms, voice load; loss and latency per second.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Client i is `sim-i` and listens to room `room-(i mod R)`; speakers are\n\
clients 0..K, so they spread over the rooms. Each speaker sends one Opus frame per\n\
--frame-ms to its room for --duration seconds (the WAV is looped); speakers' frames are\n\
spread evenly over the frame period, as independent microphones would be.\n\n\
Examples:\n  \
  dissonance simulate --server 127.0.0.1:47200 --clients 20 --speakers 4 --rooms 2 --duration 10\n  \
  dissonance simulate --server 127.0.0.1:47200 --clients 500 --speakers 50 --rooms 5 --duration 60 --measure-latency --json"
)]
pub struct Args {
    /// Server address (`dissonance serve --listen ADDR`).
    #[arg(long, value_name = "ADDR", value_parser = super::values::peer_addr)]
    server: SocketAddr,
    /// Number of clients, each on its own UDP socket.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// How many of them talk (clients 0..K).
    #[arg(long, default_value_t = 2)]
    speakers: usize,
    /// Number of rooms (client i listens to room-(i mod R)).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Seconds of speech (after every client has joined).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = super::values::seconds)]
    duration: f64,
    /// The speech to loop (48 kHz WAV); default: a built-in voiced tone.
    #[arg(long, value_name = "FILE.wav")]
    wav: Option<PathBuf>,
    /// Opus frame duration in ms (10, 20, 40, 60).
    #[arg(long, default_value_t = 20)]
    frame_ms: u32,
    /// Opus bitrate in bit/s.
    #[arg(long, default_value_t = 24000)]
    bitrate: i32,
    /// Append a send timestamp to each frame (recognised only by the simulator) and
    /// report latency percentiles.
    #[arg(long)]
    measure_latency: bool,
    /// Summary format: `text`, or `json`, one JSON object (per-second lines stay text on
    /// stderr); schema in docs/json-schema.md.
    #[arg(long, short = 'F', value_name = "text|json", default_value = "text", value_parser = ["text", "json"])]
    format: String,
    /// The same as `-F json` (kept for existing scripts).
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Give up when not every client has joined after this many seconds.
    #[arg(long, default_value = "20s", value_name = "DURATION", value_parser = super::values::seconds)]
    join_timeout: f64,
    #[command(flatten)]
    log: super::ops::LogArgs,
}

pub fn run(a: Args) -> Result<i32, Error> {
    a.log.init("simulate");
    run_lib(Options {
        server: a.server,
        clients: a.clients,
        speakers: a.speakers,
        rooms: a.rooms,
        duration: a.duration,
        wav: a.wav,
        frame_ms: a.frame_ms,
        bitrate: a.bitrate,
        measure_latency: a.measure_latency,
        json: a.json || a.format == "json",
        join_timeout: a.join_timeout,
    })
}
