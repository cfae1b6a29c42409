//! The absolute replay schedule: each send is due at `(round × (capture + gap) + t) / speed`
//! after the start, computed from the capture timestamp itself, never from the previous
//! send, so a late wake-up delays one datagram and not the rest.

use std::time::Duration;

/// How fast and how often to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// 2.0 = twice as fast as captured.
    pub speed: f64,
    /// Ignore timestamps: send as fast as possible.
    pub top_speed: bool,
    /// How many times to play the capture.
    pub loops: u32,
    /// Pause between rounds, in capture time.
    pub gap: Duration,
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule {
            speed: 1.0,
            top_speed: false,
            loops: 1,
            gap: Duration::from_secs(1),
        }
    }
}

impl Schedule {
    /// When the datagram captured `at` after the start is due in round `round`.
    pub fn due(&self, round: u32, at: Duration, capture: Duration) -> Duration {
        if self.top_speed {
            return Duration::ZERO;
        }
        let ns = round as f64 * (capture + self.gap).as_nanos() as f64 + at.as_nanos() as f64;
        Duration::from_nanos((ns / self.speed).round() as u64)
    }
}
