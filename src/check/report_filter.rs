//! `check -Y EXPR`: the rules still run over every packet (a session's handshake, names
//! and voice sequence are needed to judge any one packet), and the report keeps the
//! findings at the frames the filter selects, as `dump -Y EXPR` would print them. What
//! is left out is counted in the report, never dropped silently.

use std::io::Read;

use super::{Checker, Config, Report};
use crate::capture::{CaptureError, CaptureReader, DecapConfig, Decapsulator, Payload};
use crate::dissect::feed::{self, Consumer};
use crate::dissect::filter::Filter;
use crate::dissect::selected::{FrameSelector, FrameSet};

/// What `-Y` left out of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// The filter, as given.
    pub expr: String,
    /// Frames the filter selected.
    pub frames: u64,
    /// Findings none of whose occurrences is at a selected frame.
    pub findings_left_out: u64,
    /// Occurrences at frames the filter does not select (in kept findings too), and
    /// those past the findings kept per rule or the occurrences listed per finding,
    /// whose frames are not known.
    pub occurrences_left_out: u64,
}

/// The checker and the frame selector side by side over the same payloads.
struct Both {
    checker: Checker,
    selector: FrameSelector,
}

impl Consumer for Both {
    fn payload(&mut self, p: &Payload<'_>) {
        self.selector.push(p);
        self.checker.push(p);
    }
}

/// As [`super::check_capture`], the report reduced to the frames `filter` selects.
pub fn check_capture_filtered<R: Read + Send>(
    reader: &mut CaptureReader<R>,
    decap: DecapConfig,
    config: Config,
    filter: Filter,
) -> (Report, Option<CaptureError>) {
    let expr = filter.source().to_string();
    let mut both = Both {
        selector: FrameSelector::new(config.payload, filter),
        checker: Checker::new(config),
    };
    let mut decap = Decapsulator::new(decap);
    let outcome = feed::run_batched(reader, &mut decap, &mut both);
    let frames = both.selector.finish();
    let mut report = both.checker.finish();
    report.select(&frames, expr);
    (report, outcome.damaged)
}

impl Report {
    /// Keeps the findings at frames in `frames`: each keeps its occurrences there (the
    /// first of them becomes its frame), its repeats are recounted, and each rule's
    /// occurrences are those kept.
    pub fn select(&mut self, frames: &FrameSet, expr: String) {
        let before: u64 = self.rules.iter().map(|r| r.occurrences).sum();
        let mut findings_left_out = 0;
        self.findings.retain_mut(|f| {
            f.occurrences.retain(|o| frames.contains(o.number));
            let Some(first) = f.occurrences.first() else {
                findings_left_out += 1;
                return false;
            };
            if first.number != f.number {
                f.first_seen = Some(f.number);
            }
            f.number = first.number;
            f.ts_ns = first.ts_ns;
            f.repeats = f.occurrences.len() as u64 - 1;
            true
        });
        for r in &mut self.rules {
            let kept = self.findings.iter().filter(|f| f.rule == r.rule);
            r.findings = kept.clone().count();
            r.occurrences = kept.map(|f| f.repeats + 1).sum();
        }
        let after: u64 = self.rules.iter().map(|r| r.occurrences).sum();
        self.selection = Some(Selection {
            expr,
            frames: frames.len(),
            findings_left_out,
            occurrences_left_out: before - after,
        });
    }
}
