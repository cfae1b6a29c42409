//! `dissonance`: the command-line tool. Parsing and dispatch only; each subcommand lives
//! in `cmd/<name>.rs`.

mod cmd;

use clap::Parser;
use dissonance_tools::output::pipe::is_broken_pipe;

fn main() {
    // Only `serve` handles SIGUSR1 (it installs its own handler); for every other command
    // the default action, death, would be a trap for `kill -USR1`.
    dissonance_tools::sys::signals::ignore_usr1();
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
        // `dissonance ... | head` closed the pipe: the reader had enough, not an error.
        Err(e) if is_broken_pipe(e.as_ref()) => 0,
        Err(e) => {
            eprintln!("dissonance: error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
