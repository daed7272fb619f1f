//! The near-cache (L1): a small, short-lived moka cache in each instance in
//! front of Redis, so a hot hit does not pay a Redis round trip. Bounded by
//! `--l1-capacity`; entries live at most `--l1-ttl` (0: no L1 at all).
//!
//! It is kept coherent by the change feed (`changes`): another instance's
//! change evicts its key here. A read from Redis is only kept if no such
//! change arrived while it was in flight, and a write goes to Redis before
//! the L1, so a hit here implies every instance can read the same entry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::sync::Cache;

use super::{Store, StoreError};
use crate::cache::entry::Entry;
use crate::cache::fleet::changes::{Changes, Evicts};
use crate::cache::fleet::generations::{Gen, Kind};
use crate::cache::key::CacheKey;
use crate::clock::{Clock, Millis};

/// An entry in the L1 and when it leaves it by the cache's clock (moka
/// drops it after `--l1-ttl` of real time too, to free the memory).
#[derive(Clone)]
struct Near {
    entry: Arc<Entry>,
    until: Millis,
}

/// An L1 over another store.
pub struct NearCache {
    inner: Arc<dyn Store>,
    l1: Cache<CacheKey, Near>,
    /// How long an entry stays in the L1.
    l1_ttl: Duration,
    /// What the L1's ttl is timed by.
    clock: Arc<dyn Clock>,
    /// Whose announcements evict from here; told when a user's entry is kept.
    changes: Arc<Changes>,
    /// Bumped by every change another instance announces. A read from Redis
    /// is only kept in the L1 if no change arrived while it was in flight:
    /// otherwise an old value read just before the eviction could be put
    /// back right after it.
    generation: AtomicU64,
}

impl NearCache {
    /// An L1 of `l1_capacity` entries for `l1_ttl` over `inner`, evicted by `changes`.
    pub fn new(
        inner: Arc<dyn Store>,
        l1_ttl: Duration,
        l1_capacity: u64,
        changes: Arc<Changes>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let l1 = Cache::builder()
            .max_capacity(l1_capacity)
            .time_to_live(l1_ttl)
            .build();
        let near = Arc::new(Self {
            inner,
            l1,
            l1_ttl,
            clock,
            changes: Arc::clone(&changes),
            generation: AtomicU64::new(0),
        });
        let evicts: std::sync::Weak<dyn Evicts> = Arc::downgrade(&near) as std::sync::Weak<NearCache>;
        changes.attach_l1(evicts);
        near
    }

    /// `key`'s entry in the L1, if it is there and its time there lasts.
    async fn l1_get(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        let now = self.clock.now_ms();
        self.l1.get(key).filter(|n| now < n.until).map(|n| n.entry)
    }

    /// Keeps `entry` in the L1 for `--l1-ttl` and follows its user's changes.
    async fn l1_put(&self, key: &CacheKey, entry: Arc<Entry>) {
        let until = self
            .clock
            .now_ms()
            .saturating_add(self.l1_ttl.as_millis() as Millis);
        self.l1.insert(key.clone(), Near { entry, until });
        self.changes.follow_soon(key);
    }
}

impl Evicts for NearCache {
    /// Another instance changed `key`: forget it here.
    fn evict(&self, key: &CacheKey) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.l1.invalidate(key);
    }

    /// Forgets everything (an invalidation for all users, a gap in the feed).
    fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.l1.invalidate_all();
    }
}

#[async_trait]
impl Store for NearCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<Entry>>, StoreError> {
        if let Some(entry) = self.l1_get(key).await {
            return Ok(Some(entry));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let entry = self.inner.get(key).await?;
        if let Some(entry) = &entry {
            if self.generation.load(Ordering::SeqCst) == generation {
                self.l1_put(key, Arc::clone(entry)).await;
            }
        }
        Ok(entry)
    }

    async fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<Arc<Entry>>>, StoreError> {
        let mut out: Vec<Option<Arc<Entry>>> = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.l1_get(key).await);
        }
        let missing: Vec<CacheKey> = keys
            .iter()
            .zip(&out)
            .filter(|(_, hit)| hit.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        if missing.is_empty() {
            return Ok(out);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let mut fetched = self.inner.get_many(&missing).await?.into_iter();
        let keep = self.generation.load(Ordering::SeqCst) == generation;
        for (key, slot) in keys.iter().zip(out.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            let entry = fetched.next().flatten();
            if let (Some(e), true) = (&entry, keep) {
                self.l1_put(key, Arc::clone(e)).await;
            }
            *slot = entry;
        }
        Ok(out)
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: Arc<Entry>,
        ttl: Duration,
        expect: Option<u64>,
    ) -> Result<bool, StoreError> {
        // Redis first: a hit in this instance's L1 then implies every other
        // instance can read the same entry. A refused write (something newer
        // is there) leaves nothing here; a failed one is kept for the L1's
        // short life (the store is down: serve what we fetched).
        let written = self.inner.put(key, Arc::clone(&entry), ttl, expect).await;
        match &written {
            Ok(true) | Err(_) => self.l1_put(key, entry).await,
            Ok(false) => self.l1.invalidate(key),
        }
        written
    }

    async fn invalidate(&self, keys: &[CacheKey], keep: Duration) -> Result<(), StoreError> {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for key in keys {
            self.l1.invalidate(key);
        }
        self.inner.invalidate(keys, keep).await
    }

    async fn stamp(&self, key: &CacheKey) -> Result<u64, StoreError> {
        self.inner.stamp(key).await
    }

    async fn bump_generation(&self, widget: &str, kind: Kind, known: Gen) -> Result<Gen, StoreError> {
        self.inner.bump_generation(widget, kind, known).await
    }

    async fn load_generation(&self, widget: &str, known: Gen) -> Result<Gen, StoreError> {
        self.inner.load_generation(widget, known).await
    }

    async fn usage(&self) -> Option<super::Usage> {
        self.inner.usage().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}
