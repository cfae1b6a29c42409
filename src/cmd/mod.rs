//! Subcommands. Each is a small `run(args) -> exit code` over the library.

mod check;
mod client;
mod decode;
mod dump;
mod mmsg;
mod progress;
mod proxy;
mod replay;
mod serve;
mod simulate;
mod sniff;
mod view;
mod voice;

use clap::{Parser, Subcommand};

/// Decode, dump, check, record and replay the network traffic of Dissonance, the Unity
/// voice-chat asset.
#[derive(Parser, Debug)]
#[command(name = "dissonance", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Check(check::Args),
    Client(client::Args),
    Decode(decode::Args),
    Dump(dump::Args),
    Serve(serve::Args),
    Simulate(simulate::Args),
    Sniff(sniff::Args),
    Proxy(proxy::Args),
    Replay(replay::Args),
    Voice(voice::Args),
}

/// Any error a subcommand reports to the user (printed as `dissonance: error: ...`).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub fn run(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Check(a) => check::run(a),
        Command::Client(a) => client::run(a),
        Command::Decode(a) => decode::run(a),
        Command::Dump(a) => dump::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Simulate(a) => simulate::run(a),
        Command::Sniff(a) => sniff::run(a),
        Command::Proxy(a) => proxy::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Voice(a) => voice::run(a),
    }
}
