//! `dissonance`: the command-line tool. Parsing and dispatch only; each subcommand lives
//! in `cmd/<name>.rs`.

mod cmd;

use clap::Parser;

fn main() {
    let argv = match cmd::ops::expand_config(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("dissonance: error: {e:#}");
            std::process::exit(2);
        }
    };
    let cli = cmd::Cli::parse_from(argv);
    let code = match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dissonance: error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
