//! Where entries live: the [`Store`] trait and its backends, an in-process
//! bounded store ([`memory::MemoryStore`]), SQLite on disk
//! ([`sqlite::SqliteStore`]) and Redis or Redis Cluster
//! ([`redis::RedisStore`]); the layers over them, [`breaker::Breaker`]
//! (a failing store does not slow requests down) and [`near::NearCache`]
//! (the L1); and what a fleet shares besides entries: the change feed
//! ([`changes::Changes`]) and the wait on another instance's fetch
//! ([`fleet_lock`]). [`stack::from_settings`] puts them together.

pub mod breaker;
pub mod changes;
pub mod fleet_lock;
pub mod memory;
pub mod near;
mod recent;
pub mod redis;
pub mod sharded;
pub mod sqlite;
pub mod stack;
pub mod waiters;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::cache::entry::Entry;
use crate::cache::key::CacheKey;

/// A store failure. The cache treats every one of them as "store unavailable"
/// and keeps serving from the upstream (fail-open).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend did not answer within its bound.
    #[error("store timed out")]
    Timeout,
    /// No connection could be had from the pool.
    #[error("store connection: {0}")]
    Connection(String),
    /// The backend answered with an error.
    #[error("store command failed: {0}")]
    Command(String),
    /// The store failed recently and is skipped for a moment (circuit open).
    #[error("store unavailable (recent failures)")]
    Open,
}

/// How much an in-process store holds (`percache_cache_entries`, `percache_cache_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Entries held.
    pub entries: u64,
    /// Bytes of their data (see `memory::entry_bytes`).
    pub bytes: u64,
}

/// The state of the fetch lock of one key, shared by every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// Nobody fetches this key.
    Free,
    /// We hold the lock (after [`Store::acquire`]).
    Acquired,
    /// Another instance is fetching it.
    Busy,
    /// The last fetch failed with this status; the key is in backoff.
    Failed(u16),
}

/// A key-value store of cache entries with per-key expiry, and a per-key
/// fetch lock so that one fetch per key runs in the whole fleet.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The entry under `key`, if any. Undecodable values are misses, not errors.
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<Entry>>, StoreError>;
    /// The entries under `keys`, in order: one user's keys (one hash tag, so
    /// one cluster slot), read in one round trip where the backend can.
    async fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<Arc<Entry>>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key).await?);
        }
        Ok(out)
    }
    /// Stores `entry`, to be dropped by the backend after `ttl`.
    async fn put(&self, key: &CacheKey, entry: Arc<Entry>, ttl: Duration) -> Result<(), StoreError>;
    /// Deletes keys.
    async fn delete(&self, keys: &[CacheKey]) -> Result<(), StoreError>;
    /// Tries to take the fetch lock of `key` for `ttl` under `token`.
    /// Returns [`LockState::Acquired`], or who has it. `force` takes over a
    /// failure backoff (not a live lock).
    async fn acquire(
        &self,
        key: &CacheKey,
        token: &str,
        ttl: Duration,
        force: bool,
    ) -> Result<LockState, StoreError>;
    /// Releases a lock we hold; with `failed`, leaves a failure marker for
    /// the backoff instead, so no instance retries the key before it expires.
    async fn release(
        &self,
        key: &CacheKey,
        token: &str,
        failed: Option<(u16, Duration)>,
    ) -> Result<(), StoreError>;
    /// The lock's state as seen by someone who does not hold it.
    async fn lock_state(&self, key: &CacheKey) -> Result<LockState, StoreError>;
    /// How much the store holds, for an in-process store; `None` for a
    /// shared one (Redis reports its own memory).
    async fn usage(&self) -> Option<Usage> {
        None
    }
    /// Checks the backend answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
    /// A short name for `/readyz` and logs: `memory`, `redis`, `redis-cluster`.
    fn kind(&self) -> &'static str;
}

/// Parses a lock value: a failure marker `failed:<status>` or an owner token.
pub(crate) fn parse_lock_value(value: Option<&str>, token: &str) -> LockState {
    match value {
        None => LockState::Free,
        Some(v) if v == token => LockState::Acquired,
        Some(v) => match v.strip_prefix("failed:").map(str::parse::<u16>) {
            Some(Ok(status)) => LockState::Failed(status),
            _ => LockState::Busy,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lock_values() {
        assert_eq!(parse_lock_value(None, "t"), LockState::Free);
        assert_eq!(parse_lock_value(Some("t"), "t"), LockState::Acquired);
        assert_eq!(parse_lock_value(Some("other"), "t"), LockState::Busy);
        assert_eq!(parse_lock_value(Some("failed:503"), "t"), LockState::Failed(503));
        assert_eq!(parse_lock_value(Some("failed:x"), "t"), LockState::Busy);
    }
}
