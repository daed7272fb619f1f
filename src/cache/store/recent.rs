//! Each thread's recent reads of one in-process store, good until the
//! store's next write.
//!
//! A read of the in-process store goes through moka's bookkeeping (the
//! access recorded for the LRU, the expiry checked, housekeeping now and
//! then): a few hundred nanoseconds, five times for a dashboard. A warm
//! cache is read far more than it is written, so each thread keeps the
//! entries it read last in a plain map of its own, and the store counts its
//! writes: a remembered entry is used only while the count has not moved
//! since it was read. Any write (a put, a delete) makes every thread read
//! the store again, so a read never returns an entry older than the store's.
//!
//! Time alone removes entries from the store, without a write: a remembered
//! entry ends when the store drops it (`until`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::cache::entry::Entry;
use crate::cache::key::CacheKey;

/// Entries a thread remembers before it starts over.
const PER_THREAD: usize = 4096;

/// The identity of each store, so that a thread's memory of one store is
/// never read for another (tests run many stores on one thread).
static NEXT_STORE: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static READS: RefCell<Reads> = RefCell::new(Reads::default());
}

/// One thread's reads: of which store, at which count of its writes.
#[derive(Default)]
struct Reads {
    store: u64,
    writes: u64,
    /// Keys are the server's own (a hash of the user, a widget id): a fast
    /// hasher, seeded per process.
    entries: HashMap<CacheKey, (Arc<Entry>, Instant), foldhash::fast::RandomState>,
}

/// The write count of one store, and its threads' reads.
pub(super) struct Recent {
    store: u64,
    writes: AtomicU64,
}

impl Recent {
    pub(super) fn new() -> Self {
        Self {
            store: NEXT_STORE.fetch_add(1, Ordering::Relaxed),
            writes: AtomicU64::new(0),
        }
    }

    /// The store's writes so far: read it before reading the store, and
    /// give it to [`Recent::remember`].
    pub(super) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Acquire)
    }

    /// The entry this thread read for `key`, if no write came since and
    /// the store still holds it at `now`.
    pub(super) fn get(&self, key: &CacheKey, writes: u64, now: Instant) -> Option<Arc<Entry>> {
        READS.with_borrow(|reads| {
            if reads.store != self.store || reads.writes != writes {
                return None;
            }
            match reads.entries.get(key) {
                Some((entry, until)) if now < *until => Some(Arc::clone(entry)),
                _ => None,
            }
        })
    }

    /// Remembers what this thread read for `key` after seeing `writes`,
    /// until the store drops it.
    pub(super) fn remember(&self, key: &CacheKey, entry: &Arc<Entry>, until: Instant, writes: u64) {
        READS.with_borrow_mut(|reads| {
            if reads.store != self.store || reads.writes != writes || reads.entries.len() >= PER_THREAD {
                reads.store = self.store;
                reads.writes = writes;
                reads.entries.clear();
            }
            // A copy of its own: its count is then touched by this thread
            // only, however many threads serve the same entry (what it
            // renders is made once per thread).
            reads
                .entries
                .insert(key.clone(), (Arc::new(Entry::clone(entry)), until));
        })
    }

    /// Counts a write, once it is in the store: every thread reads again.
    pub(super) fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Release);
    }
}
