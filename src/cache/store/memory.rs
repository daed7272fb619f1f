//! The in-process store: a bounded moka cache with per-entry expiry,
//! bounded by a number of entries or by the bytes of their data.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::sync::Cache;
use moka::Expiry;

use super::recent::Recent;
use super::{Backoff, Lease, LockState, Store, StoreError, Usage};
use crate::cache::entry::Entry;
use crate::cache::fleet::generations::{Gen, Kind};
use crate::cache::key::CacheKey;
use crate::cache::store::Capacity;
use crate::clock::{Clock, Millis, SystemClock};

#[derive(Clone)]
struct Stored {
    /// The entry; `None` for a tombstone (an invalidation's stamp).
    entry: Option<Arc<Entry>>,
    /// The key's stamp (see `Store`): the entry's `started`, or the tombstone's.
    stamp: u64,
    /// When moka drops it (its ttl after the put): a remembered read ends
    /// then too. (The ttl itself is not kept: 16 bytes an entry.)
    until: Instant,
    /// The entry's weight in bytes (see [`entry_bytes`]).
    bytes: u32,
}

/// What an entry weighs: the size of its data as JSON plus its fixed
/// fields, the same measure whatever the store (Redis holds about that).
pub fn entry_bytes(key: &CacheKey, entry: &Entry) -> u64 {
    let data = entry.data.get().len();
    (key.as_str().len() + data + 6 * 8) as u64
}

struct PerEntryTtl;

impl Expiry<CacheKey, Stored> for PerEntryTtl {
    fn expire_after_create(&self, _: &CacheKey, value: &Stored, now: Instant) -> Option<Duration> {
        Some(value.until.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &CacheKey,
        value: &Stored,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.until.saturating_duration_since(now))
    }
}

/// A failure marker and how long it lasts. moka drops it after `ttl` of
/// real time; `until` is when it ends by the store's clock, which decides
/// (a mock clock in tests ends a backoff without sleeping).
#[derive(Clone)]
struct Failure {
    status: u16,
    ttl: Duration,
    until: Millis,
}

struct FailureTtl;

impl Expiry<CacheKey, Failure> for FailureTtl {
    fn expire_after_create(&self, _: &CacheKey, value: &Failure, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Entries in this process's memory, at most `capacity` of them (least
/// recently used go first), each dropped when its grace ends.
///
/// The fetch lock is a no-op here (one process: the in-process single flight
/// suffices), but failure markers are kept so that the backoff after a failed
/// fetch works the same as with Redis.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<CacheKey, Stored>,
    failures: Cache<CacheKey, Failure>,
    /// Bytes of the entries held (added on insert, taken off on removal).
    bytes: Arc<AtomicU64>,
    /// What failure backoffs are timed by.
    clock: Arc<dyn Clock>,
    /// Each thread's last reads, good until the next write.
    recent: Arc<Recent>,
    /// Where stamps (fencing tokens, tombstones, generations) come from.
    stamps: Arc<super::StampClock>,
}

impl MemoryStore {
    /// A store holding at most `capacity` entries.
    pub fn new(capacity: u64) -> Self {
        Self::bounded(Capacity::Entries(capacity))
    }

    /// A store bounded by entries or by bytes (least recently used go first).
    pub fn bounded(capacity: Capacity) -> Self {
        let bytes = Arc::new(AtomicU64::new(0));
        let removed = Arc::clone(&bytes);
        // Plain LRU: every new entry is admitted. (moka's default, TinyLFU,
        // may refuse a new key on a full store, so a user's freshly fetched
        // widget would miss again on the next read and be fetched again.)
        let builder = Cache::builder()
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .expire_after(PerEntryTtl)
            .eviction_listener(move |_key, value: Stored, _cause| {
                removed.fetch_sub(u64::from(value.bytes), Ordering::Relaxed);
            });
        let (cache, markers) = match capacity {
            Capacity::Entries(n) => (builder.max_capacity(n).build(), n),
            Capacity::Bytes(n) => (
                builder
                    .max_capacity(n)
                    .weigher(|_key, value: &Stored| value.bytes)
                    .build(),
                // Markers are tiny: as many as entries of 1 KiB would be.
                (n / 1024).max(1024),
            ),
        };
        Self {
            cache,
            failures: Cache::builder()
                .max_capacity(markers)
                .expire_after(FailureTtl)
                .build(),
            bytes,
            clock: Arc::new(SystemClock),
            recent: Arc::new(Recent::new()),
            stamps: Arc::new(super::StampClock::default()),
        }
    }

    /// Times failure backoffs by `clock` (the cache's own).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The failure marker of `key`, if its backoff lasts.
    async fn failure(&self, key: &CacheKey) -> Option<Failure> {
        let now = self.clock.now_ms();
        self.failures.get(key).filter(|f| now < f.until)
    }

    /// One read: this thread's last one if no write came since `writes`
    /// and it lasts past `now`, else the store's (remembered).
    fn read(&self, key: &CacheKey, writes: u64, now: Instant) -> Option<Arc<Entry>> {
        if let Some(entry) = self.recent.get(key, writes, now) {
            return Some(entry);
        }
        let stored = self.cache.get(key)?;
        let entry = stored.entry?;
        self.recent.remember(key, &entry, stored.until, writes);
        Some(entry)
    }

    /// Writes `value` under `key` if `admit` says so, given the key's stamp
    /// (0 when it holds nothing): one atomic step.
    fn write_if(&self, key: &CacheKey, value: Stored, admit: impl FnOnce(u64) -> bool) -> bool {
        use moka::ops::compute::{CompResult, Op};
        let bytes = u64::from(value.bytes);
        let result = self.cache.entry(key.clone()).and_compute_with(|held| {
            let current = held.map_or(0, |h| h.into_value().stamp);
            if admit(current) {
                Op::Put(value)
            } else {
                Op::Nop
            }
        });
        let written = matches!(result, CompResult::Inserted(_) | CompResult::ReplacedWith(_));
        if written {
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            self.stamps.observe(self.cache.get(key).map_or(0, |s| s.stamp));
            self.recent.wrote();
        }
        written
    }

    /// What `key` holds for `entry`, for `ttl`.
    fn stored(key: &CacheKey, entry: Option<Arc<Entry>>, stamp: u64, ttl: Duration) -> Stored {
        let bytes = match &entry {
            Some(e) => entry_bytes(key, e),
            None => (key.as_str().len() + 8) as u64,
        };
        Stored {
            entry,
            stamp,
            until: Instant::now() + ttl,
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
        }
    }

    /// The next stamp for `key`: newer than the clock's last and the key's own.
    fn next_stamp(&self, key: &CacheKey) -> u64 {
        let held = self.cache.get(key).map_or(0, |s| s.stamp);
        self.stamps.observe(held);
        self.stamps.next(self.clock.now_ms())
    }

    /// Number of entries (approximate, for tests and metrics).
    pub async fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Whether the store holds nothing.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<Entry>>, StoreError> {
        // The count first: a write after it makes this read one to forget.
        Ok(self.read(key, self.recent.writes(), Instant::now()))
    }

    async fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<Arc<Entry>>>, StoreError> {
        let (writes, now) = (self.recent.writes(), Instant::now());
        Ok(keys.iter().map(|key| self.read(key, writes, now)).collect())
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: Arc<Entry>,
        ttl: Duration,
        expect: Option<u64>,
    ) -> Result<bool, StoreError> {
        let stamp = entry.started;
        let value = Self::stored(key, Some(entry), stamp, ttl);
        Ok(self.write_if(key, value, |current| match expect {
            Some(expected) => current == expected && stamp > current,
            None => stamp > current,
        }))
    }

    async fn usage(&self) -> Option<Usage> {
        self.cache.run_pending_tasks();
        Some(Usage {
            entries: self.cache.entry_count(),
            bytes: self.bytes.load(Ordering::Relaxed),
        })
    }

    async fn invalidate(&self, keys: &[CacheKey], keep: Duration) -> Result<(), StoreError> {
        for key in keys {
            // Retried if a write slipped in between the stamp and the tombstone.
            loop {
                let stamp = self.next_stamp(key);
                if self.write_if(key, Self::stored(key, None, stamp, keep), |current| {
                    stamp > current
                }) {
                    break;
                }
            }
            // A failure backoff belongs to a fetch before the invalidation.
            self.failures.invalidate(key);
        }
        Ok(())
    }

    async fn stamp(&self, key: &CacheKey) -> Result<u64, StoreError> {
        Ok(self.next_stamp(key))
    }

    async fn bump_generation(&self, _widget: &str, kind: Kind, known: Gen) -> Result<Gen, StoreError> {
        self.stamps.observe(known.current);
        Ok(known.bumped_to(self.stamps.next(self.clock.now_ms()), kind))
    }

    async fn load_generation(&self, _widget: &str, known: Gen) -> Result<Gen, StoreError> {
        // One process: what it knows is all there is.
        Ok(known)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[async_trait]
impl Lease for MemoryStore {
    async fn acquire(&self, key: &CacheKey, _: Duration, force: bool) -> Result<LockState, StoreError> {
        match self.failure(key).await {
            Some(f) if !force => Ok(LockState::Failed(f.status)),
            _ => Ok(LockState::Acquired(self.next_stamp(key))),
        }
    }

    async fn renew(&self, _: &CacheKey, _: u64, _: Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn release(&self, key: &CacheKey, _: u64, failed: Option<Backoff>) -> Result<(), StoreError> {
        match failed {
            Some((status, ttl)) => {
                let until = self.clock.now_ms().saturating_add(ttl.as_millis() as Millis);
                let failure = Failure { status, ttl, until };
                self.failures.insert(key.clone(), failure)
            }
            None => self.failures.invalidate(key),
        }
        Ok(())
    }

    async fn lock_state(&self, key: &CacheKey) -> Result<LockState, StoreError> {
        Ok(match self.failure(key).await {
            Some(f) => LockState::Failed(f.status),
            None => LockState::Free,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::UserTag;
    use crate::cache::store::Capacity;
    use crate::widget::Registry;

    fn first() -> crate::widget::Instance {
        Registry::builtin().default_instance("1").unwrap()
    }

    fn entry(v: i64) -> Arc<Entry> {
        Arc::new(Entry {
            data: serde_json::value::to_raw_value(&serde_json::json!({ "v": v })).unwrap(),
            fetched_at: v,
            fresh_until: v,
            stale_until: v,
            grace_until: v,
            fingerprint: 0,
            generation: 0,
            started: v as u64 + 1,
            validators: Default::default(),
            rendered: Default::default(),
        })
    }

    #[tokio::test]
    async fn stores_and_bounds_entries() {
        let store = MemoryStore::new(10);
        let key = UserTag::of("a").key(&first());
        store
            .put(&key, entry(1), Duration::from_secs(60), None)
            .await
            .unwrap();
        assert_eq!(store.get(&key).await.unwrap().unwrap().fetched_at, 1);

        for i in 0..200 {
            let k = UserTag::of(&format!("user{i}")).key(&first());
            store
                .put(&k, entry(i), Duration::from_secs(60), None)
                .await
                .unwrap();
        }
        assert!(store.len().await <= 10, "capacity must bound the store");
    }

    #[tokio::test]
    async fn a_byte_capacity_is_honoured_within_ten_percent() {
        const CAP: u64 = 1 << 20;
        let store = MemoryStore::bounded(Capacity::Bytes(CAP));
        let data = serde_json::value::to_raw_value(&serde_json::json!({ "pad": "x".repeat(1000) })).unwrap();
        for i in 0..5_000 {
            let key = UserTag::of(&format!("user{i}")).key(&first());
            let e = Arc::new(Entry {
                data: data.clone(),
                ..(*entry(i)).clone()
            });
            store.put(&key, e, Duration::from_secs(60), None).await.unwrap();
        }
        let usage = store.usage().await.unwrap();
        let per_entry = usage.bytes / usage.entries.max(1);
        assert!(usage.bytes <= CAP + CAP / 10, "{usage:?} over {CAP} bytes");
        assert!(
            usage.bytes >= CAP - CAP / 10,
            "{usage:?}: the capacity is used, not wasted"
        );
        assert!((1_000..1_200).contains(&per_entry), "{per_entry} bytes per entry");
    }

    #[tokio::test]
    async fn a_full_store_admits_every_new_entry() {
        for capacity in [Capacity::Entries(100), Capacity::Bytes(20_000)] {
            let store = MemoryStore::bounded(capacity);
            for i in 0..1_000 {
                let key = UserTag::of(&format!("user{i}")).key(&first());
                store
                    .put(&key, entry(i), Duration::from_secs(60), None)
                    .await
                    .unwrap();
                // Read some old keys often, as hot users would be.
                for hot in 0..5 {
                    let _ = store.get(&UserTag::of(&format!("user{hot}")).key(&first())).await;
                }
                store.cache.run_pending_tasks();
                assert!(
                    store.get(&key).await.unwrap().is_some(),
                    "{capacity:?}: entry {i} was refused on a full store"
                );
            }
        }
    }

    #[tokio::test]
    async fn drops_entries_after_their_ttl() {
        let store = MemoryStore::new(10);
        let key = UserTag::of("a").key(&first());
        store
            .put(&key, entry(1), Duration::from_millis(20), None)
            .await
            .unwrap();
        let before = store.get(&key).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(before.is_some());
        assert!(
            store.get(&key).await.unwrap().is_none(),
            "a read remembered before ends too"
        );
    }

    /// Reads are remembered per thread (`store::recent`), but never past a
    /// write, nor for another store.
    #[tokio::test]
    async fn a_read_after_a_write_or_a_delete_sees_it() {
        let store = MemoryStore::new(100);
        let other = MemoryStore::new(100);
        let key = UserTag::of("alice").key(&first());
        let ttl = Duration::from_secs(60);
        store.put(&key, entry(1), ttl, None).await.unwrap();
        other.put(&key, entry(9), ttl, None).await.unwrap();

        let first_read = store.get(&key).await.unwrap().map(|e| e.fetched_at);
        let remembered = store.get(&key).await.unwrap().map(|e| e.fetched_at);
        let others = other.get(&key).await.unwrap().map(|e| e.fetched_at);
        store.put(&key, entry(2), ttl, None).await.unwrap();
        let after_put = store.get(&key).await.unwrap().map(|e| e.fetched_at);
        store.invalidate(std::slice::from_ref(&key), ttl).await.unwrap();
        let after_delete = store.get(&key).await.unwrap();

        assert_eq!((first_read, remembered), (Some(1), Some(1)));
        assert_eq!(others, Some(9), "another store's entry, not this one's");
        assert_eq!(after_put, Some(2), "the write is seen at once");
        assert!(after_delete.is_none(), "the delete is seen at once");
    }
}
