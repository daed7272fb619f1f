//! The Redis store, through a deadpool-redis pool, for a single server or a
//! Redis Cluster: entries, the fetch lease, thresholds and markers, over
//! the connections of [`conn`] and the scripts of [`scripts`].
//!
//! Every call is bounded by a short timeout: a slow or dead Redis must cost a
//! request milliseconds, not seconds, because the cache then fails open and
//! asks the upstream directly. All of a user's keys (entries and locks) carry
//! the same hash tag, so every command touches one cluster slot.

mod conn;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool::managed;
use deadpool_redis::redis::{self, FromRedisValue};
use deadpool_redis::{Runtime, Timeouts};
use futures_util::future::join_all;

pub use conn::{client, cluster_push_client, ClusterManager, SingleManager};
use conn::{pool_config, run_on, Backend, Op, CLUSTER_POOL_SIZE, POOL_SIZE};
use scripts::*;

use super::{parse_lock_value, Backoff, Lease, LockState, Store, StoreError};
use crate::cache::entry::Entry;
use crate::cache::fleet::generations::{Gen, Kind};
use crate::cache::key::CacheKey;

/// Entries in Redis, shared by every instance that points at the same server
/// or cluster.
#[derive(Clone)]
pub struct RedisStore {
    backend: Backend,
    op_timeout: Duration,
    /// How many connections [`RedisStore::warm_up`] opens by default.
    warm: usize,
}

impl RedisStore {
    /// A pool for `url` (`redis://host:port/db`, `rediss://` for TLS). Does
    /// not connect yet, so the server starts (degraded) even when Redis is down.
    pub fn new(url: &str, op_timeout: Duration) -> Result<Self, StoreError> {
        Self::with_ca(url, None, op_timeout)
    }

    /// As [`RedisStore::new`], trusting the PEM bundle `ca` (the system's
    /// roots included) for `rediss://`.
    pub fn with_ca(url: &str, ca: Option<&[u8]>, op_timeout: Duration) -> Result<Self, StoreError> {
        let client = client(url, ca).map_err(|e| StoreError::Connection(e.to_string()))?;
        let pool = managed::Pool::builder(SingleManager(client))
            .config(pool_config(POOL_SIZE, op_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Connection(e.to_string()))?;
        Ok(Self {
            backend: Backend::Single(pool),
            op_timeout,
            warm: POOL_SIZE,
        })
    }

    /// A pool for a Redis Cluster, given some of its nodes' URLs.
    pub fn cluster(urls: Vec<String>, op_timeout: Duration) -> Result<Self, StoreError> {
        Self::cluster_with_ca(urls, None, op_timeout)
    }

    /// As [`RedisStore::cluster`], trusting the PEM bundle `ca` for `rediss://` nodes.
    pub fn cluster_with_ca(
        urls: Vec<String>,
        ca: Option<&[u8]>,
        op_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(urls);
        if let Some(pem) = ca {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            });
        }
        let client = builder
            .build()
            .map_err(|e| StoreError::Connection(e.to_string()))?;
        let pool = managed::Pool::builder(ClusterManager(client))
            .config(pool_config(CLUSTER_POOL_SIZE, op_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Connection(e.to_string()))?;
        Ok(Self {
            backend: Backend::Cluster(pool),
            op_timeout,
            warm: CLUSTER_POOL_SIZE,
        })
    }

    /// Runs one command on a pooled connection within the timeout.
    async fn query<T: FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        self.run(Op::Cmd(&cmd)).await
    }

    /// Runs one script invocation within the timeout.
    async fn eval<T: FromRedisValue>(&self, script: &redis::ScriptInvocation<'_>) -> Result<T, StoreError> {
        self.run(Op::Script(script)).await
    }

    async fn run<T: FromRedisValue>(&self, op: Op<'_>) -> Result<T, StoreError> {
        match &self.backend {
            Backend::Single(pool) => run_on(pool, op, self.op_timeout).await,
            Backend::Cluster(pool) => run_on(pool, op, self.op_timeout).await,
        }
    }

    /// Opens up to `n` pooled connections ahead of traffic, so the first
    /// burst of requests does not pay for (and time out on) connection set-up.
    /// Failures are only logged: a Redis that is down at start-up is handled
    /// like one that goes down later (fail-open).
    pub async fn warm_up(&self) {
        let n = self.warm;
        let patient = Timeouts {
            wait: Some(Duration::from_secs(2)),
            create: Some(Duration::from_secs(2)),
            recycle: Some(Duration::from_secs(2)),
        };
        let opened = match &self.backend {
            Backend::Single(pool) => {
                let conns = join_all((0..n).map(|_| pool.timeout_get(&patient))).await;
                conns.iter().filter(|c| c.is_ok()).count()
            }
            Backend::Cluster(pool) => {
                let conns = join_all((0..n).map(|_| pool.timeout_get(&patient))).await;
                conns.iter().filter(|c| c.is_ok()).count()
            }
        };
        if opened < n {
            tracing::warn!(
                opened,
                wanted = n,
                "could not open all Redis connections at start-up"
            );
        }
        self.load_scripts().await;
    }

    /// Loads every script ahead of traffic (`SCRIPT LOAD`; on a cluster,
    /// redis-rs sends it to every primary), so the first write of each
    /// does not pay a `NOSCRIPT` and a second round trip within the store's
    /// timeout. A failure is only logged: `EVALSHA` loads them on demand.
    async fn load_scripts(&self) {
        for body in ALL {
            let code = format!("{LUA_PRELUDE}{body}");
            let cmd = redis::cmd("SCRIPT").arg("LOAD").arg(code).clone();
            if let Err(e) = self.query::<redis::Value>(cmd).await {
                tracing::debug!(error = %e, "could not load a script ahead of traffic");
            }
        }
    }

    /// Publishes `message` on the sharded `channel` (a cluster: only the
    /// shard of the channel's slot, and its subscribers).
    pub async fn spublish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        self.query::<i64>(redis::cmd("SPUBLISH").arg(channel).arg(message).clone())
            .await
            .map(drop)
    }

    /// Publishes `message` on `channel` (cluster: reaches every node).
    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        self.query::<i64>(redis::cmd("PUBLISH").arg(channel).arg(message).clone())
            .await
            .map(drop)
    }

    /// A widget's thresholds merged with `known`, and with `kind`, one of
    /// them set to a new stamp (SPEC §5 `allUsers`): one script on one key,
    /// however many users there are.
    async fn generation(&self, widget: &str, kind: Option<Kind>, known: Gen) -> Result<Gen, StoreError> {
        let mut script = GENERATION_SCRIPT.prepare_invoke();
        script
            .key(generation_key(widget))
            .arg(kind.map_or("", Kind::field))
            .arg(known.current)
            .arg(known.hard)
            .arg(known.soft);
        self.eval::<Vec<Option<u64>>>(&script).await.map(gen_of)
    }

    /// Adds `member` to the sorted set `key` with score `score` (`ZADD`);
    /// members whose score has passed are dropped by
    /// [`RedisStore::zmembers_after`].
    pub async fn zadd(&self, key: &str, member: &str, score: i64) -> Result<(), StoreError> {
        let cmd = redis::cmd("ZADD").arg(key).arg(score).arg(member).clone();
        self.query::<i64>(cmd).await.map(drop)
    }

    /// The members of the sorted set `key` scored after `after`, having
    /// dropped the others (`ZREMRANGEBYSCORE`, then `ZRANGEBYSCORE`).
    pub async fn zmembers_after(&self, key: &str, after: i64) -> Result<Vec<String>, StoreError> {
        let trim = redis::cmd("ZREMRANGEBYSCORE")
            .arg(key)
            .arg("-inf")
            .arg(after)
            .clone();
        self.query::<i64>(trim).await?;
        let cmd = redis::cmd("ZRANGEBYSCORE")
            .arg(key)
            .arg(format!("({after}"))
            .arg("+inf")
            .clone();
        self.query(cmd).await
    }

    /// Sets `field` of the hash `key` to `value` unless it holds more.
    pub async fn hset_max(&self, key: &str, field: &str, value: i64) -> Result<(), StoreError> {
        let mut script = HSET_MAX_SCRIPT.prepare_invoke();
        script.key(key).arg(field).arg(value);
        self.eval::<i64>(&script).await.map(drop)
    }

    /// Every field of the hash `key` that reads as a number.
    pub async fn hgetall_i64(&self, key: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let all: Vec<(String, String)> = self.query(redis::cmd("HGETALL").arg(key).clone()).await?;
        Ok(all
            .into_iter()
            .filter_map(|(field, value)| Some((field, value.parse().ok()?)))
            .collect())
    }

    /// The remaining time to live of a key in milliseconds (for tests and ops).
    pub async fn pttl(&self, key: &CacheKey) -> Result<i64, StoreError> {
        self.query(redis::cmd("PTTL").arg(key.as_str()).clone()).await
    }

    /// Sets the marker `key` unless it exists (`SET key 1 NX PX ttl`): true
    /// when this call made it, false when it was already there. For one-time
    /// tokens (the webhook's replay check), not cache entries.
    pub async fn set_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let cmd = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .clone();
        let answer: Option<String> = self.query(cmd).await?;
        Ok(answer.is_some())
    }

    /// Deletes a marker made by [`RedisStore::set_once`].
    pub async fn unset(&self, key: &str) -> Result<(), StoreError> {
        self.query::<i64>(redis::cmd("DEL").arg(key).clone())
            .await
            .map(drop)
    }
}

/// The hash of a widget's generation counter and thresholds.
fn generation_key(widget: &str) -> String {
    format!("{}gen:w:{widget}", crate::cache::key::PREFIX)
}

/// `[current, hard, soft]` as Redis answers them (missing fields: 0).
fn gen_of(fields: Vec<Option<u64>>) -> Gen {
    let at = |i: usize| fields.get(i).copied().flatten().unwrap_or(0);
    Gen {
        current: at(0),
        hard: at(1),
        soft: at(2),
    }
}

/// An entry from its stored bytes (`<stamp>|<JSON>`, or plain JSON from
/// before stamps); a tombstone (`<stamp>|`) is none; garbage is a miss, logged.
fn decode(key: &CacheKey, bytes: &[u8]) -> Option<Arc<Entry>> {
    let json = match memchr::memchr(b'|', bytes) {
        Some(bar) if bytes[..bar].iter().all(u8::is_ascii_digit) => &bytes[bar + 1..],
        _ => bytes,
    };
    if json.is_empty() {
        return None;
    }
    match Entry::decode(json) {
        Ok(entry) => Some(Arc::new(entry)),
        Err(e) => {
            tracing::warn!(key = key.as_str(), error = %e, "ignoring undecodable cache entry");
            None
        }
    }
}

fn lock_key(key: &CacheKey) -> String {
    format!("{}:lock", key.as_str())
}

fn millis(d: Duration) -> u64 {
    d.as_millis().clamp(1, u64::MAX as u128) as u64
}

#[async_trait]
impl Store for RedisStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<Entry>>, StoreError> {
        let raw: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(key.as_str()).clone()).await?;
        Ok(raw.and_then(|bytes| decode(key, &bytes)))
    }

    async fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<Arc<Entry>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // One user's keys share a hash tag, so MGET works on a cluster too.
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(key.as_str());
        }
        let raw: Vec<Option<Vec<u8>>> = self.query(cmd).await?;
        Ok(keys
            .iter()
            .zip(raw)
            .map(|(key, bytes)| bytes.and_then(|b| decode(key, &b)))
            .collect())
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: Arc<Entry>,
        ttl: Duration,
        expect: Option<u64>,
    ) -> Result<bool, StoreError> {
        let mut value = format!("{}|", entry.started).into_bytes();
        value.extend_from_slice(&entry.encode());
        let mut script = PUT_SCRIPT.prepare_invoke();
        script
            .key(key.as_str())
            .arg(entry.started)
            .arg(value)
            .arg(millis(ttl))
            .arg(expect.map(|e| e.to_string()).unwrap_or_default());
        self.eval::<i64>(&script).await.map(|written| written == 1)
    }

    async fn invalidate(&self, keys: &[CacheKey], keep: Duration) -> Result<(), StoreError> {
        // One script per key: keys of different users live in different slots.
        for key in keys {
            let mut script = INVALIDATE_SCRIPT.prepare_invoke();
            script.key(key.as_str()).key(lock_key(key)).arg(millis(keep));
            self.eval::<String>(&script).await?;
        }
        Ok(())
    }

    async fn stamp(&self, key: &CacheKey) -> Result<u64, StoreError> {
        let mut script = STAMP_SCRIPT.prepare_invoke();
        script.key(key.as_str());
        let stamp: String = self.eval(&script).await?;
        stamp
            .parse()
            .map_err(|_| StoreError::Command(format!("not a stamp: {stamp}")))
    }

    async fn bump_generation(&self, widget: &str, kind: Kind, known: Gen) -> Result<Gen, StoreError> {
        self.generation(widget, Some(kind), known).await
    }

    async fn load_generation(&self, widget: &str, known: Gen) -> Result<Gen, StoreError> {
        self.generation(widget, None, known).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.query(redis::cmd("PING")).await.map(|_: String| ())
    }

    fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Single(_) => "redis",
            Backend::Cluster(_) => "redis-cluster",
        }
    }
}

#[async_trait]
impl Lease for RedisStore {
    async fn acquire(&self, key: &CacheKey, ttl: Duration, force: bool) -> Result<LockState, StoreError> {
        let mut script = ACQUIRE_SCRIPT.prepare_invoke();
        script
            .key(lock_key(key))
            .key(key.as_str())
            .arg(millis(ttl))
            .arg(if force { "1" } else { "0" });
        let answer: String = self.eval(&script).await?;
        Ok(match answer.strip_prefix("OK:").map(str::parse::<u64>) {
            Some(Ok(token)) => LockState::Acquired(token),
            _ => parse_lock_value(Some(&answer), 0),
        })
    }

    async fn renew(&self, key: &CacheKey, token: u64, ttl: Duration) -> Result<bool, StoreError> {
        let mut script = RENEW_SCRIPT.prepare_invoke();
        script.key(lock_key(key)).arg(token).arg(millis(ttl));
        self.eval::<i64>(&script).await.map(|renewed| renewed == 1)
    }

    async fn release(&self, key: &CacheKey, token: u64, failed: Option<Backoff>) -> Result<(), StoreError> {
        let (marker, ttl) = match failed {
            Some((status, ttl)) => (format!("failed:{status}"), millis(ttl)),
            None => (String::new(), 0),
        };
        let mut script = RELEASE_SCRIPT.prepare_invoke();
        script.key(lock_key(key)).arg(token).arg(marker).arg(ttl);
        self.eval::<i64>(&script).await.map(drop)
    }

    async fn lock_state(&self, key: &CacheKey) -> Result<LockState, StoreError> {
        let value: Option<String> = self.query(redis::cmd("GET").arg(lock_key(key)).clone()).await?;
        Ok(parse_lock_value(value.as_deref(), 0))
    }
}
