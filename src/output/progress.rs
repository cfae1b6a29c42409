//! A progress bar on stderr for long inputs, only when stderr is a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A byte-count bar for an input of `size` bytes, or `None` when not useful.
pub fn bar(size: Option<u64>) -> Option<ProgressBar> {
    let size = size?;
    if !std::io::stderr().is_terminal() || size < (4 << 20) {
        return None;
    }
    let pb = ProgressBar::new(size);
    pb.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Some(pb)
}
