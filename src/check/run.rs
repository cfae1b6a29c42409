//! A whole capture through the engine: the shared front end ([`feed::run_batched`]:
//! a reader thread decapsulates, the engine checks the batches in capture order) with
//! the [`Checker`] as its consumer.

use std::io::{self, Read, Write};

use super::{Checker, Config, Report};
use crate::capture::{
    CaptureError, CaptureReader, DecapConfig, Decapsulator, Payload, PcapngWriter,
};
use crate::dissect::feed::{self, Consumer};

impl Consumer for Checker {
    fn payload(&mut self, p: &Payload<'_>) {
        self.push(p);
    }
}

/// Runs a whole capture through the engine. Returns the report and, for a damaged
/// capture, the error that stopped reading (everything before it was checked).
pub fn check_capture<R: Read + Send>(
    reader: &mut CaptureReader<R>,
    decap: DecapConfig,
    config: Config,
) -> (Report, Option<CaptureError>) {
    let mut checker = Checker::new(config);
    let mut decap = Decapsulator::new(decap);
    let outcome = feed::run_batched(reader, &mut decap, &mut checker);
    (checker.finish(), outcome.damaged)
}

/// Copies a capture into pcapng with each finding of `report` as a comment on its frame
/// (`check -w`); returns how many frames got comments. Stops where the capture is
/// damaged, as the check did.
pub fn annotate<R: Read, W: Write>(
    reader: &mut CaptureReader<R>,
    out: W,
    report: &Report,
) -> io::Result<usize> {
    let mut comments: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for f in &report.findings {
        comments.entry(f.number).or_default().push(f.comment());
    }
    let mut w = PcapngWriter::new(out)?;
    while let Some(Ok(frame)) = reader.next_frame() {
        let c = comments.get(&frame.number).map_or(&[][..], Vec::as_slice);
        w.write_frame(frame.ts_ns, frame.linktype, frame.data, frame.orig_len, c)?;
    }
    w.into_inner().flush()?;
    Ok(comments.len())
}
