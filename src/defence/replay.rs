//! "Seen once": the webhook's replay check.
//!
//! A signed webhook request is accepted once: its signature (the HMAC bytes)
//! is recorded for as long as its timestamp could still be accepted, and the
//! same signature again is a replay. With Redis the record is a marker key
//! `percache:v1:webhook:<sha256 of the HMAC>` set with `SET NX PX`, so the
//! whole fleet sees it; without Redis it is a bounded in-process map whose
//! entries expire by themselves.

use std::time::Duration;

use moka::sync::Cache;
use sha2::{Digest, Sha256};

use crate::cache::store::redis::RedisStore;
use crate::cache::store::StoreError;

/// Prefix of the marker keys in Redis.
const KEY_PREFIX: &str = "percache:v1:webhook:";

/// Most signatures one instance remembers without Redis. Only correctly
/// signed requests are recorded, so only the secret's holder can fill it.
pub const MEMORY_CAPACITY: u64 = 100_000;

/// Where seen signatures are recorded.
#[derive(Clone)]
enum Backend {
    Memory(Cache<[u8; 32], ()>),
    Redis(RedisStore),
}

/// Records signatures and tells the first use of one from a replay.
#[derive(Clone)]
pub struct ReplayGuard {
    backend: Backend,
    remember: Duration,
}

impl ReplayGuard {
    /// In this process's memory: at most `capacity` signatures, each for `remember`.
    pub fn in_memory(capacity: u64, remember: Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .time_to_live(remember)
            .build();
        Self {
            backend: Backend::Memory(cache),
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

    /// Records `signature`: true the first time within the window, false
    /// for a replay. A store error means nothing was recorded.
    pub async fn first_use(&self, signature: &[u8]) -> Result<bool, StoreError> {
        let digest = digest(signature);
        match &self.backend {
            Backend::Memory(cache) => Ok(cache.entry(digest).or_insert(()).is_fresh()),
            Backend::Redis(store) => store.set_once(&redis_key(&digest), self.remember).await,
        }
    }

    /// Forgets `signature`, so the same request can be sent again (after
    /// the work it asked for failed).
    pub async fn forget(&self, signature: &[u8]) -> Result<(), StoreError> {
        let digest = digest(signature);
        match &self.backend {
            Backend::Memory(cache) => {
                cache.invalidate(&digest);
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
        assert!(guard.first_use(b"sig-a").await.unwrap());
        assert!(!guard.first_use(b"sig-a").await.unwrap(), "a replay");
        assert!(guard.first_use(b"sig-b").await.unwrap());
        guard.forget(b"sig-a").await.unwrap();
        assert!(guard.first_use(b"sig-a").await.unwrap(), "forgotten: new again");
    }

    #[test]
    fn keys_are_namespaced_hashes() {
        let key = redis_key_of(b"sig");
        assert!(key.starts_with("percache:v1:webhook:"));
        assert_eq!(key.len(), KEY_PREFIX.len() + 64);
    }
}
