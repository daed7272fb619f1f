//! What single flight hands around: a fetch's result, how a fetch starts,
//! and a fetch in flight. A leaf: the read policy (`service`) and single
//! flight (`flight`) both use these, and neither imports the other's types.

use std::sync::Arc;

use tokio::sync::watch;

use super::entry::Entry;
use crate::upstream::FetchError;

/// A fetch's result as handed to every waiter.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub(crate) entry: Arc<Entry>,
    /// The data came from another fetch (another instance's, or one that had
    /// just landed), not from this task's upstream call.
    pub(crate) remote: bool,
    /// The upstream said the entry had not changed (`304`): it was renewed
    /// without a body.
    pub(crate) revalidated: bool,
}

impl Fetched {
    /// Data another fetch landed (another instance's, or one that had just
    /// landed here): not this task's upstream call.
    pub(crate) fn remote(entry: Arc<Entry>) -> Self {
        Self {
            entry,
            remote: true,
            revalidated: false,
        }
    }
}

pub(crate) type FetchResult = Result<Fetched, FetchError>;

/// What a new fetch does before calling the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Re-read the store and use a fresh entry newer than the one the caller
    /// saw (its `fetched_at`; `i64::MIN` for none): a fetch may have landed
    /// since. Respects a failure backoff.
    Recheck(i64),
    /// Fetch regardless (a forced refresh); may take over a failure backoff.
    Force,
}

/// The `fetched_at` of an entry the caller saw, for [`Start::Recheck`].
pub(crate) fn seen(entry: Option<&Arc<Entry>>) -> i64 {
    entry.map_or(i64::MIN, |e| e.fetched_at)
}
pub(crate) type Flight = watch::Receiver<Option<FetchResult>>;

/// A fetch in flight: its channel, and the change feed's epoch it began at.
#[derive(Clone)]
pub(crate) struct InFlight {
    pub(crate) flight: Flight,
    pub(crate) epoch: u64,
    /// Raised when a request joins a background fetch still waiting for
    /// its upstream slot (a queued prewarm): it then waits as a request.
    pub(crate) urgency: std::sync::Arc<super::turns::Urgency>,
}
