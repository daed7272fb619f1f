//! "Seen once": the webhook's replay check.
//!
//! A signed webhook request is accepted once: its signature (the HMAC bytes)
//! is recorded for as long as its timestamp could still be accepted, and the
//! same signature again is a replay. With Redis the record is a marker key
//! `percache:v1:webhook:<sha256 of the HMAC>` set with `SET NX PX`, so the
//! whole fleet sees it; without Redis it is a bounded in-process record.
//!
//! The in-process record never accepts a replay, whatever the load: when it
//! is full it forgets its oldest signature (by the request's timestamp)
//! and raises a timestamp floor to that signature's timestamp, and any
//! request whose timestamp is not above the floor is refused as stale. So
//! what it forgot can never come back as new. (A cache that admits or
//! evicts by popularity, as moka's default does, could drop a fresh
//! signature and then accept its replay.)

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::cache::store::redis::RedisStore;
use crate::cache::store::StoreError;

/// Prefix of the marker keys in Redis.
const KEY_PREFIX: &str = "percache:v1:webhook:";

/// Most signatures one instance remembers without Redis. Only correctly
/// signed requests are recorded, so only the secret's holder can fill it.
pub const MEMORY_CAPACITY: u64 = 100_000;

/// What the record says of a signed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Its first use: carry it out.
    First,
    /// Used before: a replay.
    Replay,
    /// Its timestamp is not above the floor of a full record: refused as stale.
    BelowFloor,
}

/// The in-process record: each signature with its request's timestamp,
/// ordered by timestamp, and the floor raised by what was forgotten.
#[derive(Debug, Default)]
struct Memory {
    capacity: usize,
    by_digest: HashMap<[u8; 32], i64>,
    by_time: BTreeSet<(i64, [u8; 32])>,
    /// Requests with a timestamp at or below this are refused.
    floor: i64,
}

impl Memory {
    fn first_use(&mut self, digest: [u8; 32], ts: i64) -> Seen {
        if self.by_digest.contains_key(&digest) {
            return Seen::Replay;
        }
        if ts <= self.floor {
            return Seen::BelowFloor;
        }
        while self.by_digest.len() >= self.capacity.max(1) {
            let Some((oldest, forgotten)) = self.by_time.pop_first() else {
                break;
            };
            self.by_digest.remove(&forgotten);
            self.floor = self.floor.max(oldest);
        }
        if ts <= self.floor {
            return Seen::BelowFloor;
        }
        self.by_digest.insert(digest, ts);
        self.by_time.insert((ts, digest));
        Seen::First
    }

    fn forget(&mut self, digest: &[u8; 32]) {
        if let Some(ts) = self.by_digest.remove(digest) {
            self.by_time.remove(&(ts, *digest));
        }
    }
}

/// Where seen signatures are recorded.
#[derive(Clone)]
enum Backend {
    Memory(Arc<Mutex<Memory>>),
    Redis(RedisStore),
}

/// Records signatures and tells the first use of one from a replay.
#[derive(Clone)]
pub struct ReplayGuard {
    backend: Backend,
    remember: Duration,
}

impl ReplayGuard {
    /// In this process's memory: at most `capacity` signatures (requests
    /// older than the window are refused before they get here).
    pub fn in_memory(capacity: u64, remember: Duration) -> Self {
        let memory = Memory {
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
            ..Memory::default()
        };
        Self {
            backend: Backend::Memory(Arc::new(Mutex::new(memory))),
            remember,
        }
    }

    /// In Redis, shared by every instance that uses the same server or cluster.
    pub fn redis(store: RedisStore, remember: Duration) -> Self {
        Self {
            backend: Backend::Redis(store),
            remember,
        }
    }

    /// Records `signature` of a request stamped `ts` (unix seconds): its
    /// first use, a replay, or (a full in-process record) refused as stale.
    /// A store error means nothing was recorded.
    pub async fn first_use(&self, signature: &[u8], ts: i64) -> Result<Seen, StoreError> {
        let digest = digest(signature);
        match &self.backend {
            Backend::Memory(memory) => Ok(memory
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .first_use(digest, ts)),
            Backend::Redis(store) => {
                let first = store.set_once(&redis_key(&digest), self.remember).await?;
                Ok(if first { Seen::First } else { Seen::Replay })
            }
        }
    }

    /// Forgets `signature`, so the same request can be sent again (after
    /// the work it asked for failed).
    pub async fn forget(&self, signature: &[u8]) -> Result<(), StoreError> {
        let digest = digest(signature);
        match &self.backend {
            Backend::Memory(memory) => {
                memory
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .forget(&digest);
                Ok(())
            }
            Backend::Redis(store) => store.unset(&redis_key(&digest)).await,
        }
    }

    /// `memory` or `redis`.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }
}

fn digest(signature: &[u8]) -> [u8; 32] {
    Sha256::digest(signature).into()
}

/// The marker key of a signature's digest.
fn redis_key(digest: &[u8; 32]) -> String {
    format!("{KEY_PREFIX}{}", hex::encode(digest))
}

/// The marker key Redis holds for a signature (for tests and operators).
pub fn redis_key_of(signature: &[u8]) -> String {
    redis_key(&digest(signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signature_is_new_once_until_forgotten() {
        let guard = ReplayGuard::in_memory(10, Duration::from_secs(600));
        assert_eq!(guard.first_use(b"sig-a", 100).await.unwrap(), Seen::First);
        assert_eq!(guard.first_use(b"sig-a", 100).await.unwrap(), Seen::Replay);
        assert_eq!(guard.first_use(b"sig-b", 100).await.unwrap(), Seen::First);
        guard.forget(b"sig-a").await.unwrap();
        assert_eq!(
            guard.first_use(b"sig-a", 100).await.unwrap(),
            Seen::First,
            "forgotten: new again"
        );
    }

    /// Far more signatures than the record holds, then every one again:
    /// none is ever accepted twice. The oldest are refused as stale (below
    /// the floor their eviction raised), the rest as replays.
    #[tokio::test]
    async fn a_full_record_never_accepts_a_replay() {
        const CAPACITY: u64 = 100;
        let guard = ReplayGuard::in_memory(CAPACITY, Duration::from_secs(600));
        let seed = fastrand::u64(..);
        println!("seed {seed}");
        let mut rng = fastrand::Rng::with_seed(seed);
        // Timestamps within a 600 s window, in any order (clients' clocks differ).
        let requests: Vec<(Vec<u8>, i64)> = (0..1_000u32)
            .map(|i| (i.to_be_bytes().to_vec(), 1_000 + rng.i64(0..600)))
            .collect();
        let mut accepted = 0;
        for (sig, ts) in &requests {
            if guard.first_use(sig, *ts).await.unwrap() == Seen::First {
                accepted += 1;
            }
        }
        for (sig, ts) in &requests {
            let again = guard.first_use(sig, *ts).await.unwrap();
            assert_ne!(
                again,
                Seen::First,
                "seed {seed}: a replay of {sig:?} (ts {ts}) was accepted"
            );
        }
        assert!(
            accepted >= CAPACITY as usize,
            "seed {seed}: only {accepted} first uses accepted"
        );
    }

    #[test]
    fn keys_are_namespaced_hashes() {
        let key = redis_key_of(b"sig");
        assert!(key.starts_with("percache:v1:webhook:"));
        assert_eq!(key.len(), KEY_PREFIX.len() + 64);
    }
}
