//! One output layer for every subcommand that prints packets (dump, sniff, proxy): text
//! lines, a table, a JSON array or NDJSON, all from the same [`Record`], so a packet looks
//! the same wherever it is printed. The JSON object is the `decode --json` schema plus
//! capture metadata (see README, "JSON schema").

mod printer;
mod record;
mod view;

pub mod fmtpool;
pub mod hex;
pub mod json;
pub mod log;
pub mod pipe;
pub mod progress;
pub mod summary;
pub mod text;

pub use printer::{DatagramNote, Printer};
pub use record::{Head, Record, Rfc3339};
pub use view::View;

/// Output formats (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line per message: time, addresses, direction, annotated summary.
    Text,
    /// A table of fixed-width columns, streamed (the header repeated every 50 rows).
    Table,
    /// One JSON array of packet objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}
