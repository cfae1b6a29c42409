//! `dissonance completions SHELL` and the hidden `dissonance man --out-dir DIR`: shell
//! completion scripts and man pages, both generated from the clap definition itself, so
//! they cannot drift from the flags.

use std::path::PathBuf;

use clap::CommandFactory;

use super::{Cli, Error};

/// Print a shell completion script for dissonance to standard output.
///
/// bash: `source <(dissonance completions bash)` (or save it in
/// ~/.local/share/bash-completion/completions/dissonance); zsh: save it as `_dissonance`
/// in a directory of $fpath; fish: save it in ~/.config/fish/completions/dissonance.fish.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
  source <(dissonance completions bash)\n  \
  dissonance completions zsh > ~/.zfunc/_dissonance\n  \
  dissonance completions fish > ~/.config/fish/completions/dissonance.fish")]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

pub fn completions(args: CompletionsArgs) -> Result<i32, Error> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = Cli::command();
    // Into memory first: clap_complete panics on a write error (`| head` closing the
    // pipe), which must be main's quiet broken-pipe exit instead.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "dissonance", &mut script);
    let mut out = std::io::stdout().lock();
    std::io::Write::write_all(&mut out, &script)?;
    std::io::Write::flush(&mut out)?;
    Ok(0)
}

/// Write the man pages: dissonance.1 and one dissonance-SUBCOMMAND.1 per subcommand
/// (`make man` runs this).
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing).
    #[arg(long, value_name = "DIR", default_value = "man")]
    out_dir: PathBuf,
}

pub fn man(args: ManArgs) -> Result<i32, Error> {
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|e| format!("cannot create {}: {e}", args.out_dir.display()))?;
    let cmd = Cli::command();
    // clap_mangen names the subcommands' pages after their display names, which build()
    // sets to `dissonance-SUB`.
    clap_mangen::generate_to(cmd, &args.out_dir).map_err(|e| {
        format!(
            "cannot write the man pages to {}: {e}",
            args.out_dir.display()
        )
    })?;
    Ok(0)
}
