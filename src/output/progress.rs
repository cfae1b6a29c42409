//! A progress bar on stderr for long inputs, only when stderr is a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressFinish, ProgressStyle};

/// A byte-count bar for an input of `size` bytes, or `None` when not useful.
pub fn bar(size: Option<u64>) -> Option<ProgressBar> {
    let size = size?;
    if !std::io::stderr().is_terminal() || size < (4 << 20) {
        return None;
    }
    // Cleared however the command ends (an error, `| head` closing the pipe): dropping
    // the bar clears it. `wide_bar` takes what the terminal's width leaves.
    let pb = ProgressBar::new(size).with_finish(ProgressFinish::AndClear);
    pb.set_style(
        ProgressStyle::with_template("{wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Some(pb)
}
