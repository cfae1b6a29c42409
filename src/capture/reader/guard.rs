//! A capture file that shrinks while it is mapped: reading the pages past its new end
//! raises SIGBUS, which kills the process by default. The handler here recognises a
//! fault inside a registered map, puts zero pages over the rest of that map (so the
//! faulting read completes) and marks the map as truncated; the reader checks the mark
//! after each record and reports a truncated capture. A fault anywhere else gets the
//! previous disposition back and happens again, as if there were no handler.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

/// Maps registered at once (a command reads one or two captures).
const SLOTS: usize = 8;

struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    truncated: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // Only used to build SLOT_TABLE.
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    truncated: AtomicBool::new(false),
};
static SLOT_TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static INSTALL: Once = Once::new();
/// The disposition before ours, restored for faults that are not ours.
static mut PREVIOUS: Option<libc::sigaction> = None;

/// A registered map: the mark the handler sets when the file under it shrank (its
/// slot, and the slot's mark, read for every record without an index).
#[derive(Debug)]
pub struct Guard(Option<usize>, &'static AtomicBool);

/// The mark of an unguarded map: never set.
static NEVER: AtomicBool = AtomicBool::new(false);

impl Guard {
    /// Watches `len` bytes at `start` (a file map). Without a free slot (or a handler),
    /// the map is unguarded, as any mapped file.
    pub fn register(start: *const u8, len: usize) -> Guard {
        INSTALL.call_once(install);
        for (i, s) in SLOT_TABLE.iter().enumerate() {
            if s.len
                .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                s.truncated.store(false, Ordering::Relaxed);
                s.start.store(start as usize, Ordering::Relaxed);
                s.len.store(len, Ordering::Release);
                return Guard(Some(i), &s.truncated);
            }
        }
        Guard(None, &NEVER)
    }

    /// Whether a read of the map faulted because the file shrank.
    #[inline]
    pub fn truncated(&self) -> bool {
        self.1.load(Ordering::Relaxed)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            SLOT_TABLE[i].len.store(0, Ordering::Release);
        }
    }
}

fn install() {
    // SAFETY: sysconf and sigaction with a zeroed, then filled, sigaction; PREVIOUS is
    // written once here, before the handler can run.
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE);
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, &action, &mut old) == 0 {
            PREVIOUS = Some(old);
        }
    }
}

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers. Only atomics,
    // mmap and sigaction are used: async-signal-safe.
    unsafe {
        let addr = (*info).si_addr() as usize;
        let page = PAGE.load(Ordering::Relaxed);
        for s in &SLOT_TABLE {
            let len = s.len.load(Ordering::Acquire);
            let start = s.start.load(Ordering::Relaxed);
            if len == 0 || len == usize::MAX || addr < start || addr >= start + len {
                continue;
            }
            let from = addr & !(page - 1);
            let p = libc::mmap(
                from as *mut libc::c_void,
                start + len - from,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            if p != libc::MAP_FAILED {
                s.truncated.store(true, Ordering::Relaxed);
                return;
            }
        }
        // Not ours (or the zero pages could not be mapped): the fault happens again
        // under the previous disposition.
        #[allow(static_mut_refs)] // Written once before the handler was installed.
        match PREVIOUS.as_ref() {
            Some(old) => libc::sigaction(libc::SIGBUS, old, std::ptr::null_mut()),
            None => libc::signal(libc::SIGBUS, libc::SIG_DFL) as libc::c_int,
        };
    }
}
