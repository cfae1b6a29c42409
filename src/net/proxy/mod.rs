//! The sans-IO core of `dissonance proxy`: NAT-style mappings ([`nat`]), seeded fault
//! injection ([`fault`]) and the queue of datagrams it delays or holds back. The shell
//! ([`runtime`], and `tcp.rs` for `--tcp`) owns the sockets, the clock, the decoder and
//! the pcap writer; it feeds each received datagram to [`Relay::handle`], sends what that says to send now,
//! and drains [`Relay::poll_transmit`] whenever [`Relay::poll_timeout`] comes due.

#[cfg(target_os = "linux")]
mod counts;
pub mod fault;
pub mod nat;
#[cfg(target_os = "linux")]
pub mod runtime;
#[cfg(target_os = "linux")]
mod tcp;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::capture::Payload;
use crate::dissect::pipeline::Dissector;
use crate::output::{Format, Printer};
pub use fault::{Dir, FaultCounts, Injector, Plan, Rule, Scope};
pub use nat::{Lookup, NatTable};

/// A datagram held back for reordering is released after at most this long, when no
/// later datagram of its flow comes to overtake it.
pub const REORDER_HOLD: Duration = Duration::from_millis(50);

/// A datagram to send: `slot` is the mapping (its upstream socket for `Up`, its client
/// address for `Down`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dir: Dir,
    pub slot: usize,
    pub data: Vec<u8>,
}

/// What to do with the datagram just handled.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Send it now, unchanged (then drain [`Relay::poll_transmit`]).
    Forward,
    /// Not now: the core dropped it or keeps a (possibly modified) copy in its queue.
    Taken,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Duration,
    order: u64,
}

/// Delays, duplicates, reorders and corrupts datagrams as the injector decides.
pub struct Relay {
    pub injector: Injector,
    queue: BinaryHeap<Reverse<(Due, usize)>>,
    pending: FxHashMap<usize, Transmit>,
    held: BTreeMap<(Dir, usize), (Duration, Transmit)>,
    next_id: usize,
    order: u64,
}

impl Relay {
    pub fn new(injector: Injector) -> Relay {
        Relay {
            injector,
            queue: BinaryHeap::new(),
            pending: FxHashMap::default(),
            held: BTreeMap::new(),
            next_id: 0,
            order: 0,
        }
    }

    fn schedule(&mut self, at: Duration, t: Transmit) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.order += 1;
        self.pending.insert(id, t);
        self.queue.push(Reverse((
            Due {
                at,
                order: self.order,
            },
            id,
        )));
    }

    /// Applies `plan` to a datagram received at `now`. A datagram held back on this
    /// flow is released right after it.
    pub fn handle(
        &mut self,
        now: Duration,
        dir: Dir,
        slot: usize,
        data: &[u8],
        plan: &Plan,
    ) -> Outcome {
        let released = self.held.remove(&(dir, slot));
        let outcome = if plan.is_clean() {
            Outcome::Forward
        } else if plan.dropped.is_some() {
            Outcome::Taken
        } else {
            let mut bytes = data.to_vec();
            for &(pos, mask) in &plan.corrupt {
                if let Some(b) = bytes.get_mut(pos) {
                    *b ^= mask;
                }
            }
            let t = Transmit {
                dir,
                slot,
                data: bytes,
            };
            let at = now + plan.delay;
            let mut outcome = Outcome::Taken;
            if plan.reorder && released.is_none() {
                self.held
                    .insert((dir, slot), (at + REORDER_HOLD, t.clone()));
            } else if plan.delay.is_zero() && plan.corrupt.is_empty() {
                // Duplicated only: the original goes now, the copies follow it.
                outcome = Outcome::Forward;
            } else {
                self.schedule(at, t.clone());
            }
            for _ in 0..plan.duplicates {
                self.schedule(at, t.clone());
            }
            outcome
        };
        if let Some((_, t)) = released {
            self.schedule(now, t);
        }
        outcome
    }

    /// The next datagram due at `now`, if any.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<Transmit> {
        if let Some(Reverse((due, id))) = self.queue.peek() {
            if due.at <= now {
                let id = *id;
                self.queue.pop();
                return self.pending.remove(&id);
            }
        }
        let expired = self
            .held
            .iter()
            .find(|(_, (at, _))| *at <= now)
            .map(|(k, _)| *k)?;
        self.held.remove(&expired).map(|(_, t)| t)
    }

    /// When [`Relay::poll_transmit`] will next have something.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let q = self.queue.peek().map(|Reverse((d, _))| d.at);
        let h = self.held.values().map(|(at, _)| *at).min();
        match (q, h) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Datagrams still waiting (delayed or held).
    pub fn queued(&self) -> usize {
        self.pending.len() + self.held.len()
    }

    /// Forgets everything queued for a mapping that expired.
    pub fn forget_slot(&mut self, slot: usize) {
        self.pending.retain(|_, t| t.slot != slot);
        self.held.retain(|(_, s), _| *s != slot);
    }
}

/// Evaluates the rules' dump-style filters on each datagram, each with a tracker of its
/// own (the filters need names and rooms learned from earlier traffic). Only rules that
/// filter by type, client or room cost anything.
pub struct ScopeMatcher {
    dissectors: Vec<Option<(Dissector, Printer<io::Sink>)>>,
}

impl ScopeMatcher {
    pub fn new(rules: &[Rule], payload: crate::dissect::locate::PayloadMode) -> ScopeMatcher {
        let dissectors = rules
            .iter()
            .map(|r| {
                r.scope.needs_decoding().then(|| {
                    let mut d = Dissector::new(payload, r.scope.filters.clone());
                    d.show_events = false;
                    (d, Printer::new(Format::Ndjson, io::sink(), false, false))
                })
            })
            .collect();
        ScopeMatcher { dissectors }
    }

    /// Bit `i` set when rule `i` filters and one of the datagram's packets passes.
    pub fn matches(&mut self, d: &Payload<'_>) -> u64 {
        let mut bits = 0u64;
        for (i, slot) in self.dissectors.iter_mut().enumerate().take(64) {
            if let Some((dis, pr)) = slot {
                let before = dis.totals.printed;
                // Writes go to io::sink, which cannot fail.
                let _ = dis.push(d, Some(pr));
                if dis.totals.printed > before {
                    bits |= 1 << i;
                }
            }
        }
        bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(specs: &[(&str, &str)]) -> Injector {
        Injector::new(
            specs
                .iter()
                .map(|(f, v)| Rule::parse(f, v).unwrap())
                .collect(),
            9,
        )
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn clean_datagrams_pass_straight_through() {
        let mut r = Relay::new(rules(&[]));
        let plan = r.injector.decide(Dir::Up, 3, None, |_| true);
        assert_eq!(r.handle(ms(0), Dir::Up, 0, b"abc", &plan), Outcome::Forward);
        assert_eq!(r.poll_transmit(ms(0)), None);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn delay_then_release_on_time() {
        let mut r = Relay::new(rules(&[("delay", "40ms")]));
        let plan = r.injector.decide(Dir::Down, 3, None, |_| true);
        assert_eq!(
            r.handle(ms(10), Dir::Down, 2, b"abc", &plan),
            Outcome::Taken
        );
        assert_eq!(r.poll_timeout(), Some(ms(50)));
        assert_eq!(r.poll_transmit(ms(49)), None);
        assert_eq!(
            r.poll_transmit(ms(50)),
            Some(Transmit {
                dir: Dir::Down,
                slot: 2,
                data: b"abc".to_vec()
            })
        );
        assert_eq!(r.queued(), 0);
    }

    #[test]
    fn duplicate_sends_original_then_copy() {
        let mut r = Relay::new(rules(&[("duplicate", "100%")]));
        let plan = r.injector.decide(Dir::Up, 1, None, |_| true);
        assert_eq!(r.handle(ms(0), Dir::Up, 0, b"x", &plan), Outcome::Forward);
        assert_eq!(r.poll_transmit(ms(0)).unwrap().data, b"x");
        assert_eq!(r.poll_transmit(ms(0)), None);
    }

    #[test]
    fn reorder_releases_after_the_next_datagram_or_the_hold_time() {
        let mut r = Relay::new(Injector::new(vec![], 0));
        let held = Plan {
            reorder: true,
            applied: vec![(0, "held".into())],
            ..Plan::default()
        };
        assert_eq!(r.handle(ms(0), Dir::Up, 1, b"1", &held), Outcome::Taken);
        // The next datagram of the flow goes first, then the held one.
        let clean = Plan::default();
        assert_eq!(r.handle(ms(5), Dir::Up, 1, b"2", &clean), Outcome::Forward);
        assert_eq!(r.poll_transmit(ms(5)).unwrap().data, b"1");
        // Nobody overtakes: released after REORDER_HOLD.
        assert_eq!(r.handle(ms(10), Dir::Up, 1, b"3", &held), Outcome::Taken);
        assert_eq!(r.poll_timeout(), Some(ms(10) + REORDER_HOLD));
        assert_eq!(r.poll_transmit(ms(59)), None);
        assert_eq!(r.poll_transmit(ms(60)).unwrap().data, b"3");
    }

    #[test]
    fn corrupt_flips_the_chosen_byte() {
        let mut r = Relay::new(Injector::new(vec![], 0));
        let plan = Plan {
            corrupt: vec![(1, 0xff)],
            applied: vec![(0, "corrupted".into())],
            ..Plan::default()
        };
        assert_eq!(
            r.handle(ms(0), Dir::Up, 0, &[1, 2, 3], &plan),
            Outcome::Taken
        );
        assert_eq!(r.poll_transmit(ms(0)).unwrap().data, vec![1, 0xfd, 3]);
    }
}
