//! The NAT-style mapping table: one upstream slot per client address, so the server
//! sees each client as a distinct peer. Sans-IO: the shell owns the sockets and asks the
//! table which slot a client uses and which slots went idle.

use std::net::SocketAddr;
use std::time::Duration;

use rustc_hash::FxHashMap;

/// One client's mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub client: SocketAddr,
    /// When the last datagram in either direction passed.
    pub last_seen: Duration,
}

/// What [`NatTable::lookup`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// An existing mapping.
    Known(usize),
    /// A new mapping: the shell must open an upstream socket for this slot.
    New(usize),
    /// The table was full: the mapping silent longest (at least the eviction age) gave
    /// its slot to the new client. The shell closes the old socket, then opens a new one.
    Evicted(usize, Mapping),
    /// The table is full and every mapping is recent: the new client is refused.
    Full,
}

impl Lookup {
    pub fn slot(self) -> Option<usize> {
        match self {
            Lookup::Known(s) | Lookup::New(s) | Lookup::Evicted(s, _) => Some(s),
            Lookup::Full => None,
        }
    }
}

/// Client address → slot, with idle expiry. Slots are reused after expiry, so the
/// table stays as small as the peak number of concurrent clients.
#[derive(Debug)]
pub struct NatTable {
    idle: Duration,
    /// At most this many mappings (each holds an upstream socket, a file descriptor).
    max: usize,
    /// When full, a mapping silent this long may be closed for a new client.
    evict_after: Duration,
    by_client: FxHashMap<SocketAddr, usize>,
    slots: Vec<Option<Mapping>>,
    free: Vec<usize>,
}

impl NatTable {
    /// A table without a size limit.
    pub fn new(idle: Duration) -> NatTable {
        NatTable::bounded(idle, usize::MAX, idle)
    }

    /// At most `max` mappings; when full, the one silent longest is evicted for a new
    /// client if it has been silent for `evict_after`, else the new client is refused.
    pub fn bounded(idle: Duration, max: usize, evict_after: Duration) -> NatTable {
        NatTable {
            idle,
            max: max.max(1),
            evict_after,
            by_client: FxHashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    /// The slot of `client`, creating one if it has none; refreshes its idle timer.
    pub fn lookup(&mut self, now: Duration, client: SocketAddr) -> Lookup {
        if let Some(&slot) = self.by_client.get(&client) {
            if let Some(m) = self.slots[slot].as_mut() {
                m.last_seen = now;
            }
            return Lookup::Known(slot);
        }
        let mapping = Some(Mapping {
            client,
            last_seen: now,
        });
        if self.by_client.len() >= self.max {
            // Full: the mapping silent longest, if silent long enough (a scan, only when
            // full; the shell expires idle ones every second).
            let oldest = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(s, m)| m.map(|m| (s, m)))
                .min_by_key(|(_, m)| m.last_seen);
            return match oldest {
                Some((slot, old)) if now.saturating_sub(old.last_seen) >= self.evict_after => {
                    self.by_client.remove(&old.client);
                    self.slots[slot] = mapping;
                    self.by_client.insert(client, slot);
                    Lookup::Evicted(slot, old)
                }
                _ => Lookup::Full,
            };
        }
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s] = mapping;
                s
            }
            None => {
                self.slots.push(mapping);
                self.slots.len() - 1
            }
        };
        self.by_client.insert(client, slot);
        Lookup::New(slot)
    }

    /// Refreshes a slot's idle timer (a reply from upstream); returns its client.
    pub fn touch(&mut self, now: Duration, slot: usize) -> Option<SocketAddr> {
        let m = self.slots.get_mut(slot)?.as_mut()?;
        m.last_seen = now;
        Some(m.client)
    }

    /// Drops the mapping of `slot` (its socket could not be opened).
    pub fn remove(&mut self, slot: usize) {
        if let Some(m) = self.slots.get_mut(slot).and_then(Option::take) {
            self.by_client.remove(&m.client);
            self.free.push(slot);
        }
    }

    pub fn client(&self, slot: usize) -> Option<SocketAddr> {
        self.slots.get(slot).copied().flatten().map(|m| m.client)
    }

    /// Whether `client` has a mapping (without creating one).
    pub fn contains(&self, client: SocketAddr) -> bool {
        self.by_client.contains_key(&client)
    }

    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// Removes every mapping idle for at least the idle timeout and returns them
    /// (slot, mapping) so the shell can close their sockets.
    pub fn expire(&mut self, now: Duration) -> Vec<(usize, Mapping)> {
        let mut gone = Vec::new();
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            if let Some(m) = *entry {
                if now.saturating_sub(m.last_seen) >= self.idle {
                    *entry = None;
                    self.by_client.remove(&m.client);
                    self.free.push(slot);
                    gone.push((slot, m));
                }
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn one_slot_per_client_reused_after_expiry() {
        let mut t = NatTable::new(Duration::from_secs(10));
        let s = Duration::from_secs;
        assert_eq!(t.lookup(s(0), addr(1)), Lookup::New(0));
        assert_eq!(t.lookup(s(1), addr(2)), Lookup::New(1));
        assert_eq!(t.lookup(s(2), addr(1)), Lookup::Known(0));
        assert_eq!(t.touch(s(5), 1), Some(addr(2)));
        // Client 1 last seen at 2 s, client 2 at 5 s.
        assert!(t.expire(s(11)).is_empty());
        let gone = t.expire(s(12));
        assert_eq!(
            gone,
            vec![(
                0,
                Mapping {
                    client: addr(1),
                    last_seen: s(2)
                }
            )]
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t.client(0), None);
        // The freed slot goes to the next new client.
        assert_eq!(t.lookup(s(13), addr(3)), Lookup::New(0));
        assert_eq!(t.lookup(s(13), addr(1)), Lookup::New(2));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn a_full_table_evicts_the_longest_silent_or_refuses() {
        let s = Duration::from_secs;
        let mut t = NatTable::bounded(s(120), 2, s(5));
        assert_eq!(t.lookup(s(0), addr(1)), Lookup::New(0));
        assert_eq!(t.lookup(s(1), addr(2)), Lookup::New(1));
        // Everyone spoke within 5 s: refused, and nothing changes.
        assert_eq!(t.lookup(s(4), addr(3)), Lookup::Full);
        assert_eq!(t.len(), 2);
        t.touch(s(4), 0);
        // At 7 s client 2 has been silent 6 s: its slot goes to client 3.
        let old = Mapping {
            client: addr(2),
            last_seen: s(1),
        };
        assert_eq!(t.lookup(s(7), addr(3)), Lookup::Evicted(1, old));
        assert_eq!(t.client(1), Some(addr(3)));
        assert_eq!(t.lookup(s(7), addr(2)), Lookup::Full);
        t.remove(1);
        assert_eq!(t.lookup(s(7), addr(2)), Lookup::New(1));
    }
}
