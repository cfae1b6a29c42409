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
}

impl Lookup {
    pub fn slot(self) -> usize {
        match self {
            Lookup::Known(s) | Lookup::New(s) => s,
        }
    }
}

/// Client address → slot, with idle expiry. Slots are reused after expiry, so the
/// table stays as small as the peak number of concurrent clients.
#[derive(Debug)]
pub struct NatTable {
    idle: Duration,
    by_client: FxHashMap<SocketAddr, usize>,
    slots: Vec<Option<Mapping>>,
    free: Vec<usize>,
}

impl NatTable {
    pub fn new(idle: Duration) -> NatTable {
        NatTable {
            idle,
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
}
