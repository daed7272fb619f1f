//! Where entries live: the [`Store`] trait and its two backends, an
//! in-process bounded store ([`memory::MemoryStore`]) and Redis
//! ([`redis::RedisStore`]).

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::cache::entry::Entry;
use crate::cache::key::CacheKey;

/// A store failure. The cache treats every one of them as "store unavailable"
/// and keeps serving from the upstream (fail-open).
#[derive(Debug, thiserror::Error)]
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
}

/// A key-value store of cache entries with per-key expiry.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The entry under `key`, if any. Undecodable values are misses, not errors.
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<Entry>>, StoreError>;
    /// Stores `entry`, to be dropped by the backend after `ttl`.
    async fn put(&self, key: &CacheKey, entry: Arc<Entry>, ttl: Duration)
        -> Result<(), StoreError>;
    /// Deletes keys.
    async fn delete(&self, keys: &[CacheKey]) -> Result<(), StoreError>;
    /// Checks the backend answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;
    /// A short name for `/readyz` and logs: `memory`, `redis`.
    fn kind(&self) -> &'static str;
}
