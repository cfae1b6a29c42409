//! Subcommands. Each is a small `run(args) -> exit code` over the library.

mod check;
mod client;
mod decode;
mod dump;
pub mod ops;
#[cfg(target_os = "linux")]
mod proxy;
mod replay;
#[cfg(target_os = "linux")]
mod serve;
#[cfg(target_os = "linux")]
mod simulate;
mod sniff;
mod values;
mod view;
mod voice;
mod wireshark;

use clap::{Parser, Subcommand};

/// Decode, dump, check, record and replay the network traffic of Dissonance, the Unity
/// voice-chat asset.
#[derive(Parser, Debug)]
#[command(name = "dissonance", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// One value per process, parsed once: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    Check(check::Args),
    Client(client::Args),
    Decode(decode::Args),
    Dump(dump::Args),
    #[cfg(target_os = "linux")]
    Serve(serve::Args),
    #[cfg(target_os = "linux")]
    Simulate(simulate::Args),
    Sniff(sniff::Args),
    #[cfg(target_os = "linux")]
    Proxy(Box<proxy::Args>),
    Replay(replay::Args),
    Voice(voice::Args),
    Wireshark(wireshark::Args),
}

/// Any error a subcommand reports to the user (printed as `dissonance: error: ...`).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub fn run(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Check(a) => check::run(a),
        Command::Client(a) => client::run(a),
        Command::Decode(a) => decode::run(a),
        Command::Dump(a) => dump::run(a),
        #[cfg(target_os = "linux")]
        Command::Serve(a) => serve::run(a),
        #[cfg(target_os = "linux")]
        Command::Simulate(a) => simulate::run(a),
        Command::Sniff(a) => sniff::run(a),
        #[cfg(target_os = "linux")]
        Command::Proxy(a) => proxy::run(*a),
        Command::Replay(a) => replay::run(a),
        Command::Voice(a) => voice::run(a),
        Command::Wireshark(a) => wireshark::run(a),
    }
}
