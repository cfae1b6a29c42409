//! One output layer for every subcommand that prints packets (dump, sniff, proxy): text
//! lines, a table, a JSON array or NDJSON, all from the same [`Record`], so a packet looks
//! the same wherever it is printed. The JSON object is the `decode --json` schema plus
//! capture metadata (see docs/json-schema.md).

pub mod dump;
mod printer;
mod record;
mod view;

pub mod fields;
pub mod fmtpool;
pub mod hex;
pub mod json;
pub mod log;
pub mod pipe;
pub mod progress;
pub mod summary;
pub mod text;
pub mod width;

pub use crate::dissect::record::DatagramNote;
pub use printer::Printer;
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
    /// Chosen fields, one line per packet (`-T fields -e F`, `-F csv`): the printer's
    /// [`fields::FieldsSpec`] says which and how.
    Fields,
}
