//! Subcommands. Each is a small `run(args) -> exit code` over the library.

mod check;
mod client;
mod decode;
mod dump;
mod help;
pub mod ops;
#[cfg(target_os = "linux")]
mod proxy;
mod replay;
#[cfg(target_os = "linux")]
mod serve;
#[cfg(target_os = "linux")]
mod simulate;
mod sniff;
mod stats;
mod values;
mod view;
mod voice;
mod wireshark;

use clap::{Parser, Subcommand};

/// Decode, dump, check, record and replay the network traffic of Dissonance, the Unity
/// voice-chat asset.
#[derive(Parser, Debug)]
#[command(
    name = "dissonance",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "Examples (one per command; `dissonance help COMMAND` for more):\n  \
  dissonance check samples/session.pcap --fail-on warning\n  \
  dissonance client --server 127.0.0.1:47200 --name alice --rooms Global -e 'wait 1; say Global hi'\n  \
  dissonance decode 8bc70401000003c00000bb800006616c696365\n  \
  dissonance dump samples/session.pcap --summary\n  \
  dissonance serve --listen 127.0.0.1:47200\n  \
  dissonance simulate --server 127.0.0.1:47200 --clients 20 --duration 10\n  \
  sudo dissonance sniff -i lo -f 'udp port 47200'\n  \
  dissonance proxy --listen 127.0.0.1:47201 --upstream 127.0.0.1:47200\n  \
  dissonance replay samples/session.pcap --target 127.0.0.1:47200\n  \
  dissonance voice samples/session.pcap -o voice/\n  \
  dissonance wireshark --install\n  \
  dissonance completions bash > ~/.local/share/bash-completion/completions/dissonance"
)]
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
    Completions(help::CompletionsArgs),
    /// Write the man pages into a directory (`make man`).
    #[command(hide = true)]
    Man(help::ManArgs),
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
        Command::Completions(a) => help::completions(a),
        Command::Man(a) => help::man(a),
    }
}
