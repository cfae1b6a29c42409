//! `dissonance wireshark`: hand out the Lua dissector that ships with this binary.

use std::io::Write;
use std::path::PathBuf;

use super::Error;

/// The dissector, built into the binary so `--install` needs no source checkout.
const DISSECTOR: &str = include_str!("../../wireshark/dissonance.lua");
const FILE_NAME: &str = "dissonance.lua";

/// Install or print the Wireshark dissector for Dissonance (wireshark/dissonance.lua).
///
/// The dissector decodes every message type in both byte orders, finds packets inside
/// game-transport headers as `dump --payload auto` does, names clients and rooms in the
/// Info column, and flags malformed packets with our decoder's error text. Its fields are
/// named after the JSON schema: `dissonance.type`, `dissonance.voice.sender`,
/// `dissonance.text.text`, ...
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
  dissonance wireshark --install\n  \
  dissonance wireshark --print > dissonance.lua\n  \
  tshark -X lua_script:dissonance.lua -Y 'dissonance.type == \"TextData\"' -T fields -e dissonance.text.text -r capture.pcap")]
#[group(required = true, multiple = false)]
pub struct Args {
    /// Copy the dissector into the personal Lua plugin folder
    /// (~/.local/lib/wireshark/plugins/, created if missing) and print where it went.
    #[arg(long, group = "action")]
    install: bool,
    /// Write the dissector to standard output.
    #[arg(long, group = "action")]
    print: bool,
}

/// Wireshark's personal plugin folder (Lua plugins are loaded from it at start-up).
fn plugin_dir() -> Result<PathBuf, Error> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or("HOME is not set: cannot find the personal plugin folder")?;
    Ok(PathBuf::from(home).join(".local/lib/wireshark/plugins"))
}

pub fn run(args: Args) -> Result<i32, Error> {
    if args.print {
        std::io::stdout().lock().write_all(DISSECTOR.as_bytes())?;
        return Ok(0);
    }
    let dir = plugin_dir()?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(FILE_NAME);
    std::fs::write(&path, DISSECTOR)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("installed the Dissonance dissector to {}", path.display());
    println!("restart Wireshark (or press Ctrl+Shift+L to reload Lua plugins) to load it");
    Ok(0)
}
