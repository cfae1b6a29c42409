//! Seeded fault injection: which faults hit a datagram, decided by rules with scopes.
//! Sans-IO and deterministic: the same seed and the same traffic give the same faults.

use std::fmt;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::codec::MessageType;
use crate::dissect::pipeline::Filters;

/// Which way a datagram travels through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dir {
    /// Client → server.
    Up,
    /// Server → client.
    Down,
}

impl Dir {
    pub fn name(self) -> &'static str {
        match self {
            Dir::Up => "up",
            Dir::Down => "down",
        }
    }
}

/// What a fault rule does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    Drop(f64),
    Delay(Duration),
    Jitter(Duration),
    Duplicate(f64),
    Reorder(f64),
    Corrupt(f64),
    /// Gilbert-Elliott burst loss: `p` = P(good → bad), `r` = P(bad → good) per
    /// datagram; every datagram in the bad state is lost.
    BurstLoss {
        p: f64,
        r: f64,
    },
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Drop(_) => "drop",
            FaultKind::Delay(_) => "delay",
            FaultKind::Jitter(_) => "jitter",
            FaultKind::Duplicate(_) => "duplicate",
            FaultKind::Reorder(_) => "reorder",
            FaultKind::Corrupt(_) => "corrupt",
            FaultKind::BurstLoss { .. } => "burst-loss",
        }
    }
}

/// Which datagrams a rule applies to: a direction and dump-style filters (message type
/// or relays wrapping it, client name or id, room name or id). Empty = everything.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub dir: Option<Dir>,
    pub filters: Filters,
}

impl Scope {
    /// Parses `up,voice,client=alice,room=Global` (terms separated by commas).
    pub fn parse(s: &str) -> Result<Scope, String> {
        let mut scope = Scope::default();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if let Some(name) = term.strip_prefix("client=") {
                scope.filters.clients.push(name.to_string());
            } else if let Some(name) = term.strip_prefix("room=") {
                scope.filters.rooms.push(name.to_string());
            } else if term == "up" {
                scope.dir = Some(Dir::Up);
            } else if term == "down" {
                scope.dir = Some(Dir::Down);
            } else if let Some(t) = type_alias(term) {
                scope.filters.types.push(t);
            } else {
                return Err(format!(
                    "unknown scope '{term}': use up, down, a message type (voice, text, state, \
                     or a full name like ClientState), client=NAME or room=NAME"
                ));
            }
        }
        Ok(scope)
    }

    pub fn needs_decoding(&self) -> bool {
        !self.filters.is_empty()
    }
}

fn type_alias(s: &str) -> Option<MessageType> {
    match s.to_ascii_lowercase().as_str() {
        "voice" => Some(MessageType::VoiceData),
        "text" => Some(MessageType::TextData),
        "state" => Some(MessageType::ClientState),
        _ => MessageType::parse(s),
    }
}

/// One `--drop`, `--delay`, ... flag.
#[derive(Debug, Clone)]
pub struct Rule {
    pub kind: FaultKind,
    pub scope: Scope,
    /// The flag as the user wrote it, for the log.
    pub spec: String,
}

impl Rule {
    /// Parses a flag value `[SCOPE:]VALUE` for the fault `flag` (`drop`, `delay`, ...).
    pub fn parse(flag: &str, value: &str) -> Result<Rule, String> {
        let (scope, v) = match value.rsplit_once(':') {
            Some((s, v)) => (Scope::parse(s)?, v),
            None => (Scope::default(), value),
        };
        let bad = |e: String| format!("--{flag} {value}: {e}");
        let kind = match flag {
            "drop" => FaultKind::Drop(parse_rate(v).map_err(bad)?),
            "delay" => FaultKind::Delay(parse_duration(v).map_err(bad)?),
            "jitter" => FaultKind::Jitter(parse_duration(v).map_err(bad)?),
            "duplicate" => FaultKind::Duplicate(parse_rate(v).map_err(bad)?),
            "reorder" => FaultKind::Reorder(parse_rate(v).map_err(bad)?),
            "corrupt" => FaultKind::Corrupt(parse_rate(v).map_err(bad)?),
            "burst-loss" => {
                let (p, r) = v
                    .split_once(',')
                    .ok_or_else(|| bad("expected P,R (e.g. 1%,30%)".into()))?;
                FaultKind::BurstLoss {
                    p: parse_rate(p).map_err(bad)?,
                    r: parse_rate(r).map_err(bad)?,
                }
            }
            _ => return Err(format!("unknown fault --{flag}")),
        };
        Ok(Rule {
            kind,
            scope,
            spec: format!("--{flag} {value}"),
        })
    }
}

/// `5%`, `0.1%` or a fraction `0.05`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, scale) = match s.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (s, 1.0),
    };
    let r = num
        .parse::<f64>()
        .map_err(|_| format!("'{s}' is not a rate like 5% or 0.05"))?
        / scale;
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("rate '{s}' is outside 0%..100%"))
    }
}

/// `40ms`, `500us`, `1.5s` (a bare number is seconds, as everywhere); under an hour.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = crate::sys::units::parse_duration(s)?;
    if d.as_secs_f64() >= 3600.0 {
        return Err(format!("'{s}' is an hour or more: too long for a delay"));
    }
    Ok(d)
}

/// What happens to one datagram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Lost, and by which rule (index into the rules).
    pub dropped: Option<usize>,
    /// Extra copies to send.
    pub duplicates: u32,
    /// Total delay (delay rules plus jitter).
    pub delay: Duration,
    /// Held back until the next datagram of the flow has passed.
    pub reorder: bool,
    /// Byte positions (in the datagram) XORed with the given non-zero masks.
    pub corrupt: Vec<(usize, u8)>,
    /// Every fault applied: (rule index, detail), for the log.
    pub applied: Vec<(usize, String)>,
}

impl Plan {
    pub fn is_clean(&self) -> bool {
        self.applied.is_empty()
    }
}

/// Per-kind totals of injected faults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub dropped: u64,
    pub burst_dropped: u64,
    pub delayed: u64,
    pub jittered: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
}

impl FaultCounts {
    pub fn total(&self) -> u64 {
        self.dropped
            + self.burst_dropped
            + self.delayed
            + self.jittered
            + self.duplicated
            + self.reordered
            + self.corrupted
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dropped {}, burst-dropped {}, delayed {}, jittered {}, duplicated {}, reordered {}, corrupted {}",
            self.dropped,
            self.burst_dropped,
            self.delayed,
            self.jittered,
            self.duplicated,
            self.reordered,
            self.corrupted
        )
    }
}

/// The seeded decision maker.
#[derive(Debug)]
pub struct Injector {
    rules: Vec<Rule>,
    rng: SmallRng,
    /// Gilbert-Elliott state per rule: true = bad.
    bad: Vec<bool>,
    pub counts: FaultCounts,
}

impl Injector {
    pub fn new(rules: Vec<Rule>, seed: u64) -> Injector {
        let bad = vec![false; rules.len()];
        Injector {
            rules,
            rng: SmallRng::seed_from_u64(seed),
            bad,
            counts: FaultCounts::default(),
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Decides the fate of one datagram of `len` bytes travelling `dir`. `matched(i)` tells
    /// whether rule `i`'s filters match it (the shell evaluates them on the decoded
    /// packets); `packet` is where the Dissonance packet lies in the datagram, if one was
    /// found (corruption stays inside it).
    pub fn decide(
        &mut self,
        dir: Dir,
        len: usize,
        packet: Option<(usize, usize)>,
        matched: impl Fn(usize) -> bool,
    ) -> Plan {
        let mut plan = Plan::default();
        for i in 0..self.rules.len() {
            let scope = &self.rules[i].scope;
            if scope.dir.is_some_and(|d| d != dir) || (scope.needs_decoding() && !matched(i)) {
                continue;
            }
            match self.rules[i].kind {
                FaultKind::Drop(rate) => {
                    if plan.dropped.is_none() && self.rng.gen_bool(rate) {
                        plan.dropped = Some(i);
                        plan.applied.push((i, "dropped".into()));
                    }
                }
                FaultKind::BurstLoss { p, r } => {
                    // Every matching datagram advances the chain, lost or not.
                    let bad = &mut self.bad[i];
                    *bad = if *bad {
                        !self.rng.gen_bool(r)
                    } else {
                        self.rng.gen_bool(p)
                    };
                    if *bad && plan.dropped.is_none() {
                        plan.dropped = Some(i);
                        plan.applied.push((i, "dropped (burst)".into()));
                    }
                }
                FaultKind::Delay(d) => {
                    if !d.is_zero() {
                        plan.delay += d;
                        plan.applied
                            .push((i, format!("delayed {} us", d.as_micros())));
                    }
                }
                FaultKind::Jitter(j) => {
                    let j = j.as_nanos() as u64;
                    if j > 0 {
                        let extra = Duration::from_nanos(self.rng.gen_range(0..=j));
                        plan.delay += extra;
                        plan.applied
                            .push((i, format!("jittered +{} us", extra.as_micros())));
                    }
                }
                FaultKind::Duplicate(rate) => {
                    if self.rng.gen_bool(rate) {
                        plan.duplicates += 1;
                        plan.applied.push((i, "duplicated".into()));
                    }
                }
                FaultKind::Reorder(rate) => {
                    if !plan.reorder && self.rng.gen_bool(rate) {
                        plan.reorder = true;
                        plan.applied.push((i, "held back (reorder)".into()));
                    }
                }
                FaultKind::Corrupt(rate) => {
                    if let Some((start, end)) = packet {
                        // Past the 2-byte magic, so the result is still seen as (malformed)
                        // Dissonance rather than vanishing into "not Dissonance".
                        let first = (start + 2).min(end);
                        if first < end && end <= len && self.rng.gen_bool(rate) {
                            let pos = self.rng.gen_range(first..end);
                            let mask = self.rng.gen_range(1..=255u8);
                            plan.corrupt.push((pos, mask));
                            plan.applied
                                .push((i, format!("corrupted byte {pos} (xor {mask:#04x})")));
                        }
                    }
                }
            }
        }
        if plan.dropped.is_some() {
            // A lost datagram has no other fate; keep only the loss in the log.
            let keep = plan.dropped;
            plan.applied.retain(|(i, _)| Some(*i) == keep);
            plan.duplicates = 0;
            plan.delay = Duration::ZERO;
            plan.reorder = false;
            plan.corrupt.clear();
        }
        // Counted only once the fate is settled: a dropped datagram was not also delayed.
        for &(i, _) in &plan.applied {
            let c = &mut self.counts;
            *match self.rules[i].kind {
                FaultKind::Drop(_) => &mut c.dropped,
                FaultKind::BurstLoss { .. } => &mut c.burst_dropped,
                FaultKind::Delay(_) => &mut c.delayed,
                FaultKind::Jitter(_) => &mut c.jittered,
                FaultKind::Duplicate(_) => &mut c.duplicated,
                FaultKind::Reorder(_) => &mut c.reordered,
                FaultKind::Corrupt(_) => &mut c.corrupted,
            } += 1;
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules_and_scopes() {
        let r = Rule::parse("drop", "up,voice,client=alice:5%").unwrap();
        assert_eq!(r.kind, FaultKind::Drop(0.05));
        assert_eq!(r.scope.dir, Some(Dir::Up));
        assert_eq!(r.scope.filters.types, vec![MessageType::VoiceData]);
        assert_eq!(r.scope.filters.clients, vec!["alice".to_string()]);
        assert_eq!(
            Rule::parse("delay", "40ms").unwrap().kind,
            FaultKind::Delay(Duration::from_millis(40))
        );
        assert_eq!(
            Rule::parse("burst-loss", "down:1%,30%").unwrap().kind,
            FaultKind::BurstLoss { p: 0.01, r: 0.3 }
        );
        assert_eq!(
            Rule::parse("corrupt", "0.1%").unwrap().kind,
            FaultKind::Corrupt(0.001)
        );
        assert!(Rule::parse("drop", "150%").is_err());
        // A bare number is seconds, as for every duration flag.
        assert_eq!(
            Rule::parse("delay", "40").unwrap().kind,
            FaultKind::Delay(Duration::from_secs(40))
        );
        assert!(Rule::parse("delay", "2h").is_err());
        assert!(Rule::parse("delay", "40 parsecs").is_err());
        assert!(Rule::parse("drop", "sideways:5%").is_err());
    }

    #[test]
    fn seeded_and_scoped() {
        let rules = vec![
            Rule::parse("drop", "up:50%").unwrap(),
            Rule::parse("duplicate", "down:100%").unwrap(),
        ];
        let run = |seed| {
            let mut inj = Injector::new(rules.clone(), seed);
            let plans: Vec<Plan> = (0..200)
                .map(|n| {
                    let dir = if n % 2 == 0 { Dir::Up } else { Dir::Down };
                    inj.decide(dir, 10, None, |_| true)
                })
                .collect();
            (plans, inj.counts)
        };
        let (a, ca) = run(7);
        let (b, cb) = run(7);
        assert_eq!(a, b);
        assert_eq!(ca, cb);
        // Every down datagram duplicated, never dropped; up ones dropped about half.
        assert_eq!(ca.duplicated, 100);
        assert!(a.iter().skip(1).step_by(2).all(|p| p.dropped.is_none()));
        assert!((30..=70).contains(&ca.dropped), "{}", ca.dropped);
        assert_eq!(ca.total(), ca.dropped + 100);
    }

    #[test]
    fn burst_loss_comes_in_runs() {
        // p = 10%, r = 50%: mean run of losses 2, loss rate p/(p+r) ≈ 16.7%.
        let mut inj = Injector::new(vec![Rule::parse("burst-loss", "10%,50%").unwrap()], 1);
        let lost: Vec<bool> = (0..20_000)
            .map(|_| inj.decide(Dir::Up, 10, None, |_| true).dropped.is_some())
            .collect();
        let losses = lost.iter().filter(|&&l| l).count();
        let runs = lost.windows(2).filter(|w| !w[0] && w[1]).count();
        assert_eq!(inj.counts.burst_dropped, losses as u64);
        let rate = losses as f64 / 20_000.0;
        let mean_run = losses as f64 / runs as f64;
        assert!((0.14..0.20).contains(&rate), "{rate}");
        assert!((1.7..2.3).contains(&mean_run), "{mean_run}");
    }

    #[test]
    fn corruption_stays_inside_the_packet() {
        let mut inj = Injector::new(vec![Rule::parse("corrupt", "100%").unwrap()], 3);
        for _ in 0..100 {
            let plan = inj.decide(Dir::Up, 40, Some((12, 40)), |_| true);
            assert_eq!(plan.corrupt.len(), 1);
            let (pos, mask) = plan.corrupt[0];
            assert!((14..40).contains(&pos));
            assert_ne!(mask, 0);
        }
        // No packet found: nothing to corrupt.
        assert!(inj.decide(Dir::Up, 40, None, |_| true).is_clean());
    }
}
