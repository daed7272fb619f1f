//! A circuit breaker in front of a store.
//!
//! Each Redis command is already bounded by a short timeout, but a request
//! makes several of them; once a few fail in a row, the breaker skips the
//! store for a short cool-down so requests go straight to the upstream without paying the
//! timeout again and again. After the cool-down the next call tries the
//! store again (half-open), so the server reconnects by itself when Redis
//! returns. Every failure is counted in `percache_store_errors_total`.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Backoff, Lease, LockState, Store, StoreError};
use crate::cache::entry::Entry;
use crate::cache::fleet::generations::{Gen, Kind};
use crate::cache::key::CacheKey;
use crate::clock::Clock;

/// A store and its lease wrapped with one circuit breaker (a failing
/// backend fails both).
pub struct Breaker {
    inner: Arc<dyn Store>,
    lease: Arc<dyn Lease>,
    cool_down: Duration,
    /// What the cool-down is timed by (the cache's clock).
    clock: Arc<dyn Clock>,
    /// Time (ms, by `clock`) until which the store is skipped.
    open_until: AtomicI64,
    /// Failures since the last success.
    consecutive: AtomicU32,
}

/// Consecutive failures that open the breaker: one slow answer under a
/// burst is not an outage.
const THRESHOLD: u32 = 3;

impl Breaker {
    /// Wraps `inner` and its `lease` (the same backend); after a few
    /// failures both are skipped for `cool_down`, by `clock`.
    pub fn new(
        inner: Arc<dyn Store>,
        lease: Arc<dyn Lease>,
        cool_down: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner,
            lease,
            cool_down,
            clock,
            open_until: AtomicI64::new(0),
            consecutive: AtomicU32::new(0),
        }
    }

    /// Whether the store is currently skipped.
    pub fn is_open(&self) -> bool {
        self.clock.now_ms() < self.open_until.load(Ordering::Relaxed)
    }

    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        if self.is_open() {
            return Err(StoreError::Open);
        }
        let result = f.await;
        if result.is_ok() {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        if let Err(e) = &result {
            metrics::counter!("percache_store_errors_total").increment(1);
            if self.consecutive.fetch_add(1, Ordering::Relaxed) + 1 < THRESHOLD {
                return result;
            }
            let until = self.clock.now_ms() + self.cool_down.as_millis() as i64;
            if self.open_until.swap(until, Ordering::Relaxed) < self.clock.now_ms() {
                tracing::warn!(error = %e, store = self.inner.kind(), "store failing; skipping it for a moment");
            }
        }
        result
    }
}

#[async_trait]
impl Store for Breaker {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<Entry>>, StoreError> {
        self.call(self.inner.get(key)).await
    }

    async fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<Arc<Entry>>>, StoreError> {
        self.call(self.inner.get_many(keys)).await
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: Arc<Entry>,
        ttl: Duration,
        expect: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.call(self.inner.put(key, entry, ttl, expect)).await
    }

    async fn invalidate(&self, keys: &[CacheKey], keep: Duration) -> Result<(), StoreError> {
        self.call(self.inner.invalidate(keys, keep)).await
    }

    async fn stamp(&self, key: &CacheKey) -> Result<u64, StoreError> {
        self.call(self.inner.stamp(key)).await
    }

    async fn bump_generation(&self, widget: &str, kind: Kind, known: Gen) -> Result<Gen, StoreError> {
        self.call(self.inner.bump_generation(widget, kind, known)).await
    }

    async fn load_generation(&self, widget: &str, known: Gen) -> Result<Gen, StoreError> {
        self.call(self.inner.load_generation(widget, known)).await
    }

    /// Always asks the backend (readiness must see a recovery at once).
    async fn usage(&self) -> Option<super::Usage> {
        self.inner.usage().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let result = self.inner.ping().await;
        if result.is_ok() {
            self.open_until.store(0, Ordering::Relaxed);
        }
        result
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

#[async_trait]
impl Lease for Breaker {
    async fn acquire(&self, key: &CacheKey, ttl: Duration, force: bool) -> Result<LockState, StoreError> {
        self.call(self.lease.acquire(key, ttl, force)).await
    }

    async fn renew(&self, key: &CacheKey, token: u64, ttl: Duration) -> Result<bool, StoreError> {
        self.call(self.lease.renew(key, token, ttl)).await
    }

    async fn release(&self, key: &CacheKey, token: u64, failed: Option<Backoff>) -> Result<(), StoreError> {
        self.call(self.lease.release(key, token, failed)).await
    }

    async fn lock_state(&self, key: &CacheKey) -> Result<LockState, StoreError> {
        self.call(self.lease.lock_state(key)).await
    }
}
