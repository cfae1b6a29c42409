//! The engine run live (`sniff --check`, `proxy --check`): findings printed to stderr as
//! they are found, the report at the end.

use super::{Checker, Config, Severity};
use crate::dissect::locate::PayloadMode;

/// `sniff --check` (and later the proxy): the engine run live, findings printed to
/// stderr as they are found, the report at the end.
pub struct Live {
    checker: Checker,
}

impl Live {
    pub fn new(payload: PayloadMode) -> Live {
        Live {
            checker: Checker::new(Config {
                payload,
                ..Config::default()
            }),
        }
    }
    pub fn push(&mut self, p: &crate::capture::Payload<'_>) {
        self.checker.push(p);
    }
    /// Prints the findings found since the last call, one line each, to stderr.
    pub fn drain(&mut self) {
        while let Some(f) = self.checker.poll_finding() {
            eprintln!("check: {}", f.one_line());
        }
    }
    /// The report (text) and the exit status: 1 when an error-level finding was seen.
    pub fn finish(mut self) -> (String, i32) {
        self.drain();
        let report = self.checker.finish();
        let code = i32::from(report.fails(Some(Severity::Error)));
        (report.text(), code)
    }
}
