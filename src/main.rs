//! `dissonance`: the command-line tool. Parsing and dispatch only; each subcommand lives
//! in `cmd/<name>.rs`.

mod cmd;

use clap::Parser;

fn main() {
    let cli = cmd::Cli::parse();
    let code = match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dissonance: error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
