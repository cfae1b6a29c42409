//! Names the printers put next to ids: the [`Names`] lookup, over the live [`Tracker`]
//! ([`SessionNames`]) or over a snapshot of it ([`NameTable`]).

use super::Tracker;

/// Names the printers may add next to ids (`room_name`, `sender_name`, ...).
pub trait Names {
    fn room(&self, _room_id: u16) -> Option<&str> {
        None
    }
    fn client(&self, _client_id: u16) -> Option<&str> {
        None
    }
    /// Two values with the same identity answer every lookup the same: formatted text
    /// may then be reused between them. `None`: never reuse.
    fn identity(&self) -> Option<(u64, u64)> {
        None
    }
}

/// A snapshot of the names a [`Tracker`] knows: rooms by id, clients by (session, id).
#[derive(Debug, Clone, Default)]
pub struct NameTable {
    /// Unique per snapshot (0: the empty default), so formatters can cache text
    /// that depends on the names (see [`crate::output::json::Names::identity`]).
    pub(super) id: u64,
    pub(super) rooms: rustc_hash::FxHashMap<u16, std::sync::Arc<str>>,
    pub(super) clients: rustc_hash::FxHashMap<(u32, u16), std::sync::Arc<str>>,
}

/// A new [`NameTable::id`], unique in the process.
pub(super) fn next_table_id() -> u64 {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl NameTable {
    /// The names as seen from one session (as [`Tracker::names`]).
    pub fn names(&self, session: Option<u32>) -> TableNames<'_> {
        TableNames {
            table: self,
            session,
        }
    }
}

/// [`Names`] over a [`NameTable`] snapshot.
pub struct TableNames<'t> {
    table: &'t NameTable,
    session: Option<u32>,
}

impl Names for TableNames<'_> {
    fn room(&self, room_id: u16) -> Option<&str> {
        self.table.rooms.get(&room_id).map(|n| &**n)
    }
    fn client(&self, client_id: u16) -> Option<&str> {
        let s = self.session?;
        self.table.clients.get(&(s, client_id)).map(|n| &**n)
    }
    fn identity(&self) -> Option<(u64, u64)> {
        Some((self.table.id, self.session.map_or(u64::MAX, u64::from)))
    }
}

/// Names of one session's clients and of every room seen, for the printers.
pub struct SessionNames<'t> {
    pub(super) tracker: &'t Tracker,
    pub(super) session: Option<u32>,
}

impl Names for SessionNames<'_> {
    fn room(&self, room_id: u16) -> Option<&str> {
        self.tracker.rooms.get(&room_id).map(String::as_str)
    }
    fn client(&self, client_id: u16) -> Option<&str> {
        let s = self.session?;
        self.tracker
            .clients
            .get(&(s, client_id))
            .map(|c| c.name.as_str())
    }
}
