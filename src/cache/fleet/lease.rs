//! Waiting on another instance's fetch: the fleet-wide fetch lock is held
//! elsewhere, so this instance waits for that fetch's entry (or its failure)
//! instead of calling the upstream too.
//!
//! The change feed announces the entry (or the failure marker) at once;
//! looking at the store every [`FLEET_WAIT_FALLBACK`] is only a fallback, in
//! case an announcement is lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::changes::Changes;
use crate::cache::entry::Entry;
use crate::cache::key::CacheKey;
use crate::cache::store::{Lease, LockState, Store};

/// How often a request waiting on another instance's fetch looks at the
/// store when no change announcement arrives (a lost message).
pub const FLEET_WAIT_FALLBACK: Duration = Duration::from_millis(250);

/// How a wait on another instance's fetch ended.
#[derive(Debug)]
pub enum Waited {
    /// Its entry landed (newer than the one the waiter saw).
    Landed(Arc<Entry>),
    /// It failed with this status: the key is in backoff.
    Failed(u16),
    /// The lock was released with no new entry: try to take it.
    Released,
    /// The store stopped answering: fetch without the lock (fail-open).
    StoreDown,
    /// Past the deadline.
    Timeout,
}

/// Waits until the fetch of `key` that another instance holds the lock of
/// ends, or `deadline`. `seen` is the `fetched_at` of the entry the waiter
/// already has (`i64::MIN` for none); `judge` says what a stored entry
/// counts as now (fingerprint, invalidations). `tag` is the user's, whose
/// changes wake the wait.
#[allow(clippy::too_many_arguments)]
pub async fn wait_for_other_fetch(
    store: &dyn Store,
    lease: &dyn Lease,
    changes: &Changes,
    tag: &str,
    key: &CacheKey,
    seen: i64,
    deadline: Instant,
    judge: impl Fn(Option<Arc<Entry>>) -> Option<Arc<Entry>>,
) -> Waited {
    let watch = changes.watch(tag).await;
    let landed = |read: Result<Option<Arc<Entry>>, _>| match read.map(&judge) {
        Ok(Some(entry)) if entry.fetched_at > seen => Some(Ok(entry)),
        Ok(_) => None,
        Err(()) => Some(Err(())),
    };
    loop {
        if Instant::now() >= deadline {
            return Waited::Timeout;
        }
        // Registered before looking, so an announcement in between is not missed.
        let change = watch.notify().notified();
        tokio::pin!(change);
        change.as_mut().enable();
        match landed(store.get(key).await.map_err(drop)) {
            Some(Ok(entry)) => return Waited::Landed(entry),
            Some(Err(())) => return Waited::StoreDown,
            None => {}
        }
        match lease.lock_state(key).await {
            Ok(LockState::Busy) => {}
            Ok(LockState::Failed(status)) => return Waited::Failed(status),
            // Released: its entry may have landed just before; look once more.
            Ok(_) => {
                return match landed(store.get(key).await.map_err(drop)) {
                    Some(Ok(entry)) => Waited::Landed(entry),
                    _ => Waited::Released,
                }
            }
            Err(_) => return Waited::StoreDown,
        }
        tokio::select! {
            _ = change => {}
            _ = tokio::time::sleep(FLEET_WAIT_FALLBACK) => {}
        }
    }
}
