//! The proxy's own counters (forwarded, recorded, failed sends by kind, mappings) and
//! the rate limit on its mapping log lines.

use crate::output::log::{self, Field};

#[derive(Default)]
pub(super) struct Counts {
    pub(super) up: u64,
    pub(super) down: u64,
    pub(super) recorded: u64,
    pub(super) record_errors: u64,
    pub(super) send_errors: u64,
    /// Send failures by reason (the I/O error kind), in first-seen order.
    pub(super) send_reasons: Vec<(std::io::ErrorKind, u64)>,
    pub(super) opened: u64,
    pub(super) expired: u64,
    /// Datagrams from new clients refused while draining.
    pub(super) refused_draining: u64,
    /// Mappings closed early to make room for a new client (table full).
    pub(super) evicted: u64,
    /// Datagrams of new clients refused: the table was full of recent mappings.
    pub(super) refused: u64,
    /// New clients whose upstream socket could not be opened (e.g. out of descriptors).
    pub(super) open_failed: u64,
    /// Mapping lines (new, expired, evicted, refused, failed) not printed this second.
    lines_this_second: u32,
    lines_hidden: u64,
}

/// Mapping log lines per second at most; the rest are counted (a flood of sources must
/// not become a flood of lines).
const MAPPING_LINES_PER_SEC: u32 = 20;

impl Counts {
    pub(super) fn send_failed(&mut self, e: &std::io::Error) {
        self.send_errors += 1;
        match self.send_reasons.iter_mut().find(|(k, _)| *k == e.kind()) {
            Some((_, n)) => *n += 1,
            None => self.send_reasons.push((e.kind(), 1)),
        }
    }

    /// Whether a mapping line may be printed now.
    pub(super) fn line(&mut self) -> bool {
        if self.lines_this_second >= MAPPING_LINES_PER_SEC {
            self.lines_hidden += 1;
            return false;
        }
        self.lines_this_second += 1;
        true
    }

    pub(super) fn new_second(&mut self) {
        if self.lines_hidden > 0 {
            log::warn(
                "hidden",
                &[("count", Field::U(self.lines_hidden))],
                format_args!(
                    "proxy: {} more mapping lines not shown (at most {MAPPING_LINES_PER_SEC} a second)",
                    self.lines_hidden
                ),
            );
        }
        self.lines_this_second = 0;
        self.lines_hidden = 0;
    }
}
