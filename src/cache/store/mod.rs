//! Where entries live: the [`Store`] trait and its backends, an in-process
//! bounded store ([`memory::MemoryStore`]), SQLite on disk
//! ([`sqlite::SqliteStore`]) and Redis or Redis Cluster
//! ([`redis::RedisStore`]); the layers over them, [`breaker::Breaker`]
//! (a failing store does not slow requests down) and [`near::NearCache`]
//! (the L1). [`stack::from_settings`] puts them together. What a fleet
//! shares besides entries (the change feed, the waiters, the fetch lease's
//! waiting side, the generations) is in [`crate::cache::fleet`].

pub mod breaker;
pub mod memory;
pub mod near;
mod recent;
pub mod redis;
pub mod sqlite;
pub mod stack;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::cache::entry::Entry;
use crate::cache::fleet::generations::{Gen, Kind};
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

/// The state of the fetch lease of one key, shared by every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// Nobody fetches this key.
    Free,
    /// We hold the lease (after [`Lease::acquire`]), under this fencing
    /// token: a stamp newer than every one issued for the key before it.
    /// The fetch's entry carries it ([`Entry::started`]), and the store's
    /// write is refused if a newer stamp is already there.
    Acquired(u64),
    /// Another instance is fetching it.
    Busy,
    /// The last fetch failed with this status; the key is in backoff.
    Failed(u16),
}

/// A failed fetch's status and how long its key's backoff lasts: what a
/// released lease leaves behind ([`Lease::release`]).
pub type Backoff = (u16, Duration);

/// A key-value store of cache entries with per-key expiry and writes
/// ordered by stamps. (The fetch lease is apart: [`Lease`].)
///
/// Ordering (SPEC §7): every key has a stamp, the greatest one written to
/// it (an entry's [`Entry::started`], or a tombstone's). A stamp is issued
/// by the store ([`Store::stamp`], [`Store::acquire`]) and is greater than
/// every stamp issued for the key before it. A write lands only if its
/// stamp is greater than the key's; an invalidation leaves a tombstone with
/// a new stamp. So a fetch that began before an invalidation (an older
/// stamp) can never be stored after it, and writes never go backwards.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The entry under `key`, if any. Undecodable values and tombstones are misses, not errors.
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
    /// Stores `entry`, to be dropped by the backend after `ttl`, if its
    /// stamp (`entry.started`, the fetch's fencing token) is greater than
    /// the key's; with `expect`, only if the key's stamp is exactly that
    /// (a compare-and-set, for rewriting an entry read before). One atomic
    /// step. `Ok(false)`: refused, the key holds something newer.
    async fn put(
        &self,
        key: &CacheKey,
        entry: Arc<Entry>,
        ttl: Duration,
        expect: Option<u64>,
    ) -> Result<bool, StoreError>;
    /// Invalidates keys: each entry is replaced by a tombstone with a new
    /// stamp that lives `keep` (longer than any fetch can last), and the
    /// key's fetch lease is dropped (a fetch that began before may not
    /// store its result, and the next one need not wait for it).
    async fn invalidate(&self, keys: &[CacheKey], keep: Duration) -> Result<(), StoreError>;
    /// A new stamp for `key`, greater than every one issued for it before.
    async fn stamp(&self, key: &CacheKey) -> Result<u64, StoreError>;
    /// Records an invalidation of `widget` for every user: its `kind`
    /// threshold becomes a stamp newer than every fetch begun so far. Never
    /// lower than `known` (what this instance already knew), even if the
    /// store lost its record. Returns the thresholds as now kept.
    async fn bump_generation(&self, widget: &str, kind: Kind, known: Gen) -> Result<Gen, StoreError>;
    /// A widget's thresholds as kept, merged with `known`; written back if
    /// the store had lost them (so they never regress for the fleet).
    async fn load_generation(&self, widget: &str, known: Gen) -> Result<Gen, StoreError>;
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

/// The per-key fetch lease, so that one fetch per key runs in the whole
/// fleet. Apart from [`Store`]: the cache's reads and writes go through
/// layers (the L1, the breaker) that a lease must not (an L1 cannot hold
/// one), and single flight is the lease's only user. The backends hold
/// both, since a lease's token is a stamp of the same key, checked by
/// [`Store::put`], and an invalidation drops the key's lease.
#[async_trait]
pub trait Lease: Send + Sync + 'static {
    /// Tries to take the fetch lease of `key` for `ttl`. Returns
    /// [`LockState::Acquired`] with its fencing token, or who has it.
    /// `force` takes over a failure backoff (not a live lease).
    async fn acquire(&self, key: &CacheKey, ttl: Duration, force: bool) -> Result<LockState, StoreError>;
    /// Extends a lease we hold (by its token) to `ttl` from now. `Ok(false)`:
    /// it is no longer ours (it lapsed, or an invalidation dropped it).
    async fn renew(&self, key: &CacheKey, token: u64, ttl: Duration) -> Result<bool, StoreError>;
    /// Releases a lease we hold; with `failed`, leaves a failure marker for
    /// the backoff instead, so no instance retries the key before it expires.
    async fn release(&self, key: &CacheKey, token: u64, failed: Option<Backoff>) -> Result<(), StoreError>;
    /// The lease's state as seen by someone who does not hold it.
    async fn lock_state(&self, key: &CacheKey) -> Result<LockState, StoreError>;
}

/// Parses a lease value: a failure marker `failed:<status>` or an owner's token.
pub(crate) fn parse_lock_value(value: Option<&str>, token: u64) -> LockState {
    match value {
        None => LockState::Free,
        Some(v) => match v.strip_prefix("failed:").map(str::parse::<u16>) {
            Some(Ok(status)) => LockState::Failed(status),
            _ => match v.parse::<u64>() {
                Ok(t) if t == token => LockState::Acquired(t),
                _ => LockState::Busy,
            },
        },
    }
}

/// A stamp clock: `max(now in microseconds, last + 1)`, so stamps only grow
/// even if the clock steps back. What the in-process and on-disk stores
/// issue stamps from (Redis uses its own `TIME` the same way).
#[derive(Debug, Default)]
pub struct StampClock {
    last: std::sync::atomic::AtomicU64,
}

impl StampClock {
    /// A clock whose stamps are all greater than `floor`.
    pub fn after(floor: u64) -> Self {
        Self {
            last: std::sync::atomic::AtomicU64::new(floor),
        }
    }

    /// The next stamp at `now_ms` (the cache's clock).
    pub fn next(&self, now_ms: i64) -> u64 {
        use std::sync::atomic::Ordering;
        let now = u64::try_from(now_ms).unwrap_or(0).saturating_mul(1000);
        let mut last = self.last.load(Ordering::SeqCst);
        loop {
            let next = now.max(last + 1);
            match self
                .last
                .compare_exchange(last, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Makes every later stamp greater than `floor` too.
    pub fn observe(&self, floor: u64) {
        self.last.fetch_max(floor, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How the in-process store is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// At most this many entries.
    Entries(u64),
    /// At most this many bytes of entry data.
    Bytes(u64),
}

/// Parses `100000` (entries) or `256MiB`, `1GiB`, `64KiB`, `500MB`, `2GB`, `800B` (bytes).
pub fn parse_capacity(raw: &str) -> Result<Capacity, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{raw}`: expected a number of entries (100000) or a size (256MiB)"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" => return Ok(Capacity::Entries(n)),
        "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "`{raw}`: unknown unit `{other}` (B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(scale)
        .map(Capacity::Bytes)
        .ok_or_else(|| format!("`{raw}`: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lock_values() {
        assert_eq!(parse_lock_value(None, 7), LockState::Free);
        assert_eq!(parse_lock_value(Some("7"), 7), LockState::Acquired(7));
        assert_eq!(parse_lock_value(Some("8"), 7), LockState::Busy);
        assert_eq!(parse_lock_value(Some("failed:503"), 7), LockState::Failed(503));
        assert_eq!(parse_lock_value(Some("failed:x"), 7), LockState::Busy);
    }

    #[test]
    fn stamps_only_grow_even_when_the_clock_steps_back() {
        let clock = StampClock::default();
        let a = clock.next(1_000);
        let b = clock.next(1_000);
        let c = clock.next(500);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(a, 1_000_000);
        clock.observe(5_000_000);
        assert!(clock.next(1_000) > 5_000_000);
    }
}
