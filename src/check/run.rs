//! A whole capture through the engine: the shared front end ([`feed::run_batched`]:
//! a reader thread decapsulates, the engine checks the batches in capture order) with
//! the [`Checker`] as its consumer.

use std::io::Read;

use super::{Checker, Config, Report};
use crate::capture::{CaptureError, CaptureReader, DecapConfig, Decapsulator, Payload};
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
