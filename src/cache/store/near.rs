//! The outermost store layer: a near-cache (L1) in front of Redis, and the
//! change feed that keeps it coherent and drives live refresh.
//!
//! * L1: a small, short-lived moka cache in each instance, so a hot hit does
//!   not pay a Redis round trip. Bounded by `--l1-capacity`, entries live at
//!   most `--l1-ttl` (0 turns it off).
//! * Coherence: every write or delete through this layer is announced on the
//!   Redis channel [`CHANNEL`]; every instance subscribes and evicts the key
//!   from its L1. So an instance serves data older than the fleet's newest for
//!   the pub/sub latency (milliseconds) normally, and never longer than
//!   `--l1-ttl` (if a message is lost or the subscription is down; the L1 is
//!   also cleared when the subscription comes back).
//! * Change feed: the same announcements (local and remote) are relayed to
//!   the process's [`ChangeFeed`], which wakes only the waiters of the
//!   changed key's user (`/updates` long-polls, fetches waiting on another
//!   instance's).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis;
use futures_util::StreamExt;
use moka::future::Cache;

use super::feed::ChangeFeed;
use super::redis::RedisStore;
use super::sharded::{channel_of, ShardedFeed};
use super::{LockState, Store, StoreError};
use crate::cache::entry::Entry;
use crate::cache::generations::{Gen, Generations, Kind};
use crate::cache::key::CacheKey;
use crate::clock::{Clock, Millis};

/// The pub/sub channel of entry changes.
pub const CHANNEL: &str = "percache:v1:changes";
/// Announcements of a widget invalidated for all users: `gen:<widget id>`.
const GENERATION_PREFIX: &str = "gen:";

/// An entry in the L1 and when it leaves it by the cache's clock (moka
/// drops it after `--l1-ttl` of real time too, to free the memory).
#[derive(Clone)]
struct Near {
    entry: Arc<Entry>,
    until: Millis,
}

/// L1 + change feed over another store.
pub struct NearCache {
    inner: Arc<dyn Store>,
    l1: Option<Cache<CacheKey, Near>>,
    /// How long an entry stays in the L1.
    l1_ttl: Duration,
    /// What the L1's ttl is timed by.
    clock: Arc<dyn Clock>,
    feed: Arc<ChangeFeed>,
    /// Where to announce changes to other instances (Redis backends only).
    publisher: Option<RedisStore>,
    /// Tells our own announcements apart from other instances'.
    instance: String,
    /// Bumped by every change another instance announces. A read from Redis
    /// is only kept in the L1 if no change arrived while it was in flight:
    /// otherwise an old value read just before the eviction could be put
    /// back right after it.
    generation: AtomicU64,
    /// Per-widget invalidation generations (see `cache::generations`).
    widget_gens: Generations,
    /// On a cluster: the users this instance follows (sharded pub/sub).
    sharded: std::sync::OnceLock<Arc<ShardedFeed>>,
    /// Change messages received from other instances (for tests and ops).
    received: AtomicU64,
}

impl NearCache {
    /// Wraps `inner`. `l1_ttl` zero: no L1. `publisher`: announce changes on Redis.
    pub fn new(
        inner: Arc<dyn Store>,
        l1_ttl: Duration,
        l1_capacity: u64,
        publisher: Option<RedisStore>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let l1 = (!l1_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(l1_capacity)
                .time_to_live(l1_ttl)
                .build()
        });
        let instance = format!("{}-{}", std::process::id(), clock.now_ms());
        Arc::new(Self {
            inner,
            l1,
            l1_ttl,
            clock,
            feed: ChangeFeed::new(),
            publisher,
            instance,
            generation: AtomicU64::new(0),
            widget_gens: Generations::default(),
            sharded: std::sync::OnceLock::new(),
            received: AtomicU64::new(0),
        })
    }

    /// Who waits for which user's changes (local writes and other instances').
    pub fn feed(&self) -> &Arc<ChangeFeed> {
        &self.feed
    }

    /// The per-widget generations as this instance knows them.
    pub fn generations(&self) -> &Generations {
        &self.widget_gens
    }

    /// Invalidates `widget` for every user (hard or soft): in Redis, for the
    /// whole fleet, announced so every instance reloads it at once; else here.
    pub async fn bump_generation(&self, widget: &str, kind: Kind) -> Result<Gen, StoreError> {
        let Some(redis) = &self.publisher else {
            return Ok(self.widget_gens.bump(widget, kind));
        };
        let gen = redis.bump_generation(widget, kind).await?;
        self.widget_gens.set(widget, gen);
        // Entries served from the L1 are checked against the table too, but
        // drop them anyway: they would only be misses or stale now.
        if let Some(l1) = &self.l1 {
            l1.invalidate_all();
        }
        let message = format!("{} {GENERATION_PREFIX}{widget}", self.instance);
        if let Err(e) = redis.publish(CHANNEL, &message).await {
            tracing::warn!(error = %e, "could not announce an invalidation; instances reload it within seconds");
        }
        Ok(gen)
    }

    /// Reloads these widgets' generations from Redis (at start-up, and
    /// periodically in case an announcement was lost). No-op without Redis.
    pub async fn reload_generations(&self, widgets: &[&str]) {
        let Some(redis) = &self.publisher else { return };
        for widget in widgets {
            match redis.load_generation(widget).await {
                Ok(gen) => self.widget_gens.set(widget, gen),
                Err(e) => tracing::debug!(error = %e, widget, "could not load a widget's generation"),
            }
        }
    }

    /// `key`'s entry in the L1, if it is there and its time there lasts.
    async fn l1_get(&self, l1: &Cache<CacheKey, Near>, key: &CacheKey) -> Option<Arc<Entry>> {
        let now = self.clock.now_ms();
        l1.get(key).await.filter(|n| now < n.until).map(|n| n.entry)
    }

    /// Keeps `entry` in the L1 for `--l1-ttl` and follows its user's changes.
    async fn l1_put(&self, l1: &Cache<CacheKey, Near>, key: &CacheKey, entry: Arc<Entry>) {
        let until = self
            .clock
            .now_ms()
            .saturating_add(self.l1_ttl.as_millis() as Millis);
        l1.insert(key.clone(), Near { entry, until }).await;
        self.follow_soon(key);
    }

    /// Applies a change announced by another instance: evict, then notify.
    async fn remote_change(&self, key: CacheKey) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(l1) = &self.l1 {
            l1.invalidate(&key).await;
        }
        self.feed.publish(&key);
    }

    async fn announce(&self, key: &CacheKey, fleet: bool) {
        self.feed.publish(key);
        if let Some(redis) = self.publisher.as_ref().filter(|_| fleet) {
            let message = format!("{} {}", self.instance, key.as_str());
            // On a cluster, to the user's own channel on the user's shard.
            let sent = match (self.sharded.get(), key.user_tag()) {
                (Some(_), Some(tag)) => redis.spublish(&channel_of(tag), &message).await,
                _ => redis.publish(CHANNEL, &message).await,
            };
            if let Err(e) = sent {
                tracing::debug!(error = %e, "could not announce a change; other L1s expire it by ttl");
            }
        }
    }

    /// Listens to changes through sharded pub/sub (a cluster): only the
    /// users this instance follows. See `sharded`.
    pub fn start_sharded_feed(
        self: &Arc<Self>,
        client: redis::cluster::ClusterClient,
        pushes: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    ) {
        let feed = ShardedFeed::start(client, pushes, Arc::downgrade(self));
        let _ = self.sharded.set(feed);
    }

    /// Makes sure this instance hears of `tag`'s user's changes from other
    /// instances (a no-op but on a cluster, where it subscribes and waits
    /// for the subscription).
    pub async fn follow(&self, tag: &str) {
        if let Some(sharded) = self.sharded.get() {
            sharded.follow(tag).await;
        }
    }

    /// An entry of `key`'s user is now in the L1: hear of its changes.
    fn follow_soon(&self, key: &CacheKey) {
        if let (Some(sharded), Some(tag)) = (self.sharded.get(), key.user_tag()) {
            sharded.follow_soon(tag);
        }
    }

    /// Change messages received from other instances so far.
    pub fn messages_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Users followed on the sharded feed (0 without one).
    pub fn users_followed(&self) -> u64 {
        self.sharded.get().map_or(0, |s| s.followed())
    }

    /// Handles one message of the change feed: `<instance> <key>`, or
    /// `<instance> gen:<widget>` for an invalidation for all users.
    pub(crate) async fn handle_message(&self, payload: &str) {
        let Some((from, key)) = payload.split_once(' ') else {
            return;
        };
        if from == self.instance {
            return;
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        match key.strip_prefix(GENERATION_PREFIX) {
            Some(widget) => {
                if let Some(l1) = &self.l1 {
                    l1.invalidate_all();
                }
                self.reload_generations(&[widget]).await;
            }
            None => self.remote_change(CacheKey::from_stored(key)).await,
        }
    }

    /// After a gap in the feed (messages may have been missed): forget the
    /// L1, and let every waiter look again.
    pub(crate) fn resync(&self) {
        if let Some(l1) = &self.l1 {
            l1.invalidate_all();
        }
        self.feed.wake_all();
    }

    /// Listens on [`CHANNEL`] of one Redis server for the life of the
    /// process, reconnecting after failures. (A cluster uses the sharded
    /// feed instead: [`NearCache::start_sharded_feed`].)
    pub fn spawn_subscriber(self: &Arc<Self>, client: redis::Client) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(near) = this.upgrade() else { return };
                match subscribe(&client).await {
                    Ok(pubsub) => {
                        // Messages may have been missed while disconnected.
                        near.resync();
                        drop(near);
                        let mut stream = pubsub.into_on_message();
                        while let Some(msg) = stream.next().await {
                            let Some(near) = this.upgrade() else { return };
                            if let Ok(payload) = msg.get_payload::<String>() {
                                near.handle_message(&payload).await;
                            }
                        }
                        tracing::warn!("change subscription lost; reconnecting");
                    }
                    Err(e) => {
                        drop(near);
                        tracing::debug!(error = %e, "cannot subscribe to changes yet");
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

async fn subscribe(client: &redis::Client) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub())
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "pub/sub connect timed out")))??;
    pubsub.subscribe(CHANNEL).await?;
    Ok(pubsub)
}

#[async_trait]
impl Store for NearCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<Entry>>, StoreError> {
        if let Some(l1) = &self.l1 {
            if let Some(entry) = self.l1_get(l1, key).await {
                return Ok(Some(entry));
            }
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let entry = self.inner.get(key).await?;
        if let (Some(l1), Some(entry)) = (&self.l1, &entry) {
            if self.generation.load(Ordering::SeqCst) == generation {
                self.l1_put(l1, key, Arc::clone(entry)).await;
            }
        }
        Ok(entry)
    }

    async fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<Arc<Entry>>>, StoreError> {
        let mut out: Vec<Option<Arc<Entry>>> = Vec::with_capacity(keys.len());
        if let Some(l1) = &self.l1 {
            for key in keys {
                out.push(self.l1_get(l1, key).await);
            }
        } else {
            out.resize(keys.len(), None);
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
            if let (Some(l1), Some(e), true) = (&self.l1, &entry, keep) {
                self.l1_put(l1, key, Arc::clone(e)).await;
            }
            *slot = entry;
        }
        Ok(out)
    }

    async fn put(&self, key: &CacheKey, entry: Arc<Entry>, ttl: Duration) -> Result<(), StoreError> {
        // Redis first: a hit in this instance's L1 then implies every other
        // instance can read the same entry.
        let result = self.inner.put(key, Arc::clone(&entry), ttl).await;
        if let Some(l1) = &self.l1 {
            self.l1_put(l1, key, entry).await;
        }
        // Other instances can only have seen the new value if it reached Redis.
        self.announce(key, result.is_ok()).await;
        result
    }

    async fn delete(&self, keys: &[CacheKey]) -> Result<(), StoreError> {
        if let Some(l1) = &self.l1 {
            for key in keys {
                l1.invalidate(key).await;
            }
        }
        let result = self.inner.delete(keys).await;
        for key in keys {
            self.announce(key, result.is_ok()).await;
        }
        result
    }

    async fn acquire(
        &self,
        key: &CacheKey,
        token: &str,
        ttl: Duration,
        force: bool,
    ) -> Result<LockState, StoreError> {
        self.inner.acquire(key, token, ttl, force).await
    }

    async fn release(
        &self,
        key: &CacheKey,
        token: &str,
        failed: Option<(u16, Duration)>,
    ) -> Result<(), StoreError> {
        let result = self.inner.release(key, token, failed).await;
        // A failure leaves no entry to announce: announce the key anyway, so
        // that other instances' requests waiting on this fetch learn of the
        // failure marker at once.
        if failed.is_some() {
            self.announce(key, result.is_ok()).await;
        }
        result
    }

    async fn lock_state(&self, key: &CacheKey) -> Result<LockState, StoreError> {
        self.inner.lock_state(key).await
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
