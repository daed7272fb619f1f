//! The Redis store, through a deadpool-redis connection pool.
//!
//! Every call is bounded by a short timeout: a slow or dead Redis must cost a
//! request milliseconds, not seconds, because the cache then fails open and
//! asks the upstream directly.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis;
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};

use super::{Store, StoreError};
use crate::cache::entry::Entry;
use crate::cache::key::CacheKey;

/// Entries in Redis, shared by every instance that points at the same server.
#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    op_timeout: Duration,
}

impl RedisStore {
    /// A pool for `url` (`redis://host:port/db`). Does not connect yet, so the
    /// server starts (degraded) even when Redis is down.
    pub fn new(url: &str, op_timeout: Duration) -> Result<Self, StoreError> {
        let mut cfg = Config::from_url(url);
        let mut pool_cfg = PoolConfig::new(64);
        pool_cfg.timeouts = Timeouts {
            wait: Some(op_timeout),
            create: Some(op_timeout),
            recycle: Some(op_timeout),
        };
        cfg.pool = Some(pool_cfg);
        let pool = cfg
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| StoreError::Connection(e.to_string()))?;
        Ok(Self { pool, op_timeout })
    }

    /// Runs one command on a pooled connection within the timeout.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(deadpool_redis::Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let work = async {
            let conn = self
                .pool
                .get()
                .await
                .map_err(|e| StoreError::Connection(e.to_string()))?;
            f(conn)
                .await
                .map_err(|e| StoreError::Command(e.to_string()))
        };
        tokio::time::timeout(self.op_timeout, work)
            .await
            .map_err(|_| StoreError::Timeout)?
    }

    /// The remaining time to live of a key in milliseconds (for tests and ops).
    pub async fn pttl(&self, key: &CacheKey) -> Result<i64, StoreError> {
        let key = key.as_str().to_owned();
        self.run(|mut conn| async move {
            redis::cmd("PTTL")
                .arg(key)
                .query_async::<i64>(&mut conn)
                .await
        })
        .await
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<Entry>>, StoreError> {
        let k = key.as_str().to_owned();
        let raw: Option<Vec<u8>> = self
            .run(|mut conn| async move { redis::cmd("GET").arg(k).query_async(&mut conn).await })
            .await?;
        Ok(raw.and_then(|bytes| match Entry::decode(&bytes) {
            Ok(entry) => Some(Arc::new(entry)),
            Err(e) => {
                tracing::warn!(key = key.as_str(), error = %e, "ignoring undecodable cache entry");
                None
            }
        }))
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: Arc<Entry>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let k = key.as_str().to_owned();
        let bytes = entry.encode();
        let px = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        self.run(|mut conn| async move {
            redis::cmd("SET")
                .arg(k)
                .arg(bytes)
                .arg("PX")
                .arg(px)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn delete(&self, keys: &[CacheKey]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = keys.iter().map(|k| k.as_str().to_owned()).collect();
        self.run(|mut conn| async move {
            redis::cmd("DEL")
                .arg(keys)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|mut conn| async move { redis::cmd("PING").query_async::<()>(&mut conn).await })
            .await
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
