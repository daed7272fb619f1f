//! The change feed: who waits for which user's changes in this process, and
//! the announcements that carry changes between the instances of a fleet.
//!
//! * Every write the cache makes is announced here ([`Changes::announce`]):
//!   it wakes this process's waiters of the key's user ([`Waiters`]) and,
//!   with Redis, is published for the other instances.
//! * Other instances' announcements arrive on the Redis channel [`CHANNEL`]
//!   (one server) or on the user's sharded channel (a cluster). Each one
//!   evicts the key from this instance's L1, if there is one, then wakes the
//!   key's user's waiters (`/updates` long-polls, fetches waiting on another
//!   instance's).
//! * Invalidations of a widget for all users are generation bumps, kept in
//!   Redis and announced the same way (see `cache::fleet::generations`).
//!
//! So an instance serves data older than the fleet's newest for the pub/sub
//! latency (milliseconds) normally, and never longer than `--l1-ttl` (if a
//! message is lost or the subscription is down; the L1 is also cleared when
//! the subscription comes back).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, Weak};
use std::time::Duration;

use deadpool_redis::redis;
use futures_util::StreamExt;

pub use super::sharded::CHANNEL;
use super::sharded::{channel_of, ShardedFeed};
use super::waiters::{Waiters, Watch};
use crate::cache::fleet::generations::{Gen, Generations};
use crate::cache::key::CacheKey;
use crate::cache::store::redis::RedisStore;
use crate::cache::store::Store as _;

/// A part above the feed that hears the messages with its own prefix
/// (the session record: `end:`). Defined here, so the feed points at
/// nothing above it.
pub trait Heard: Send + Sync {
    /// One message with the part's prefix, from another instance.
    fn heard(&self, message: &str);
}

/// What the feed tells an instance's L1 (the near-cache implements it): the
/// feed defines it, so the L1 points at the feed and not the other way.
pub trait Evicts: Send + Sync {
    /// Another instance changed `key`: forget it.
    fn evict(&self, key: &CacheKey);
    /// Forget everything (an invalidation for all users, a gap in the feed).
    fn clear(&self);
}
/// Announcements of a widget invalidated for all users: `gen:<widget id>`.
const GENERATION_PREFIX: &str = "gen:";
/// Announcements of a key invalidated: `inv:<key>`.
const INVALIDATION_PREFIX: &str = "inv:";
/// Invalidations remembered for [`Changes::superseded`]; a fetch older than
/// the oldest of them counts as superseded (the safe side).
const JOURNAL: usize = 4096;

/// What an invalidation touched.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Touched {
    Key(CacheKey),
    Widget(String),
}

/// The latest invalidations this instance acknowledged or heard of, each
/// with the epoch it made: a fetch begun at an older epoch is superseded
/// for the keys they touched, and nobody who came after joins it.
#[derive(Debug, Default)]
struct Journal {
    epoch: u64,
    recent: std::collections::VecDeque<(u64, Touched)>,
}

/// This process's end of the change feed.
pub struct Changes {
    waiters: Arc<Waiters>,
    /// Where to announce changes to other instances (Redis backends only).
    publisher: Option<RedisStore>,
    /// Tells our own announcements apart from other instances'.
    instance: String,
    /// The L1 that other instances' changes evict from, if there is one.
    l1: OnceLock<Weak<dyn Evicts>>,
    /// Per-widget invalidation generations (see `cache::fleet::generations`).
    widget_gens: Generations,
    /// On a cluster: the users this instance follows (sharded pub/sub).
    sharded: OnceLock<Arc<ShardedFeed>>,
    /// Change messages received from other instances (for tests and ops).
    received: AtomicU64,
    /// Invalidations, for fetches in flight to be judged by.
    journal: std::sync::Mutex<Journal>,
    /// Parts that hear messages of their own prefix (at most a few, set at start-up).
    heard: std::sync::Mutex<Vec<(&'static str, Weak<dyn Heard>)>>,
}

impl Changes {
    /// The feed of one process: changes wake only its own waiters.
    pub fn local() -> Arc<Self> {
        Self::new(None, 0)
    }

    /// The feed of an instance of a fleet sharing `redis`. `started_ms`
    /// tells this instance's announcements apart from a previous run's.
    pub fn shared(redis: RedisStore, started_ms: i64) -> Arc<Self> {
        Self::new(Some(redis), started_ms)
    }

    fn new(publisher: Option<RedisStore>, started_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            waiters: Waiters::new(),
            publisher,
            // Random: every container's process id is 1.
            instance: format!("{:016x}-{started_ms}", fastrand::u64(..)),
            l1: OnceLock::new(),
            widget_gens: Generations::default(),
            sharded: OnceLock::new(),
            received: AtomicU64::new(0),
            journal: std::sync::Mutex::new(Journal::default()),
            heard: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Lets other instances' changes evict from `l1` (set once, when the L1 is built).
    pub(crate) fn attach_l1(&self, l1: Weak<dyn Evicts>) {
        let _ = self.l1.set(l1);
    }

    fn l1(&self) -> Option<Arc<dyn Evicts>> {
        self.l1.get().and_then(Weak::upgrade)
    }

    /// A registration for the changes of the user whose keys carry `tag`,
    /// here or (with Redis) in any other instance. On a cluster it returns
    /// once this instance follows the user's sharded channel.
    pub async fn watch(&self, tag: &str) -> Watch {
        let watch = self.waiters.watch(tag);
        self.follow(tag).await;
        watch
    }

    /// Announces a change of `key` made here: its user's waiters wake, and,
    /// if it reached the shared store (`fleet`), the other instances hear of it.
    pub async fn announce(&self, key: &CacheKey, fleet: bool) {
        self.waiters.publish(key);
        if fleet {
            self.publish_for(key, "").await;
        }
    }

    /// Tells the other instances of a change of `key` (`prefix` says which
    /// kind): on a cluster to the user's own channel on the user's shard,
    /// else to [`CHANNEL`]. No-op without Redis; a lost message is only
    /// logged (other L1s expire the key by their ttl).
    async fn publish_for(&self, key: &CacheKey, prefix: &str) {
        let Some(redis) = &self.publisher else { return };
        let message = format!("{} {prefix}{}", self.instance, key.as_str());
        // Boxed: a Redis publish's future is kilobytes, and every fetch
        // announces its landing, so without the box every fetch task (a
        // queued prewarm's too, from its start) would carry room for it.
        let sent = Box::pin(async {
            match (self.sharded.get(), key.user_tag()) {
                (Some(_), Some(tag)) => redis.spublish(&channel_of(tag), &message).await,
                _ => redis.publish(CHANNEL, &message).await,
            }
        })
        .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "could not announce a change; other L1s expire it by ttl");
        }
    }

    /// The per-widget generations as this instance knows them.
    pub fn generations(&self) -> &Generations {
        &self.widget_gens
    }

    /// Lets `part` hear the messages that start with `prefix`.
    pub fn attach_heard(&self, prefix: &'static str, part: Weak<dyn Heard>) {
        self.heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((prefix, part));
    }

    /// Announces `message` (a part's own, with its prefix) to the other
    /// instances, on the fleet's channel. No-op without Redis.
    pub async fn announce_raw(&self, message: &str) {
        let Some(redis) = &self.publisher else { return };
        let message = format!("{} {message}", self.instance);
        if let Err(e) = redis.publish(CHANNEL, &message).await {
            tracing::warn!(error = %e, "could not announce a change to the other instances");
        }
    }

    /// The epoch a fetch starting now begins at (see [`Changes::superseded`]).
    pub fn epoch(&self) -> u64 {
        self.journal.lock().unwrap_or_else(PoisonError::into_inner).epoch
    }

    /// Whether an invalidation of `key` (or of its widget for all users)
    /// was acknowledged or heard of after `epoch`: a fetch begun at that
    /// epoch is not data for anyone who came after it.
    pub fn superseded(&self, key: &CacheKey, epoch: u64) -> bool {
        let journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        if journal.epoch == epoch {
            return false;
        }
        // Forgotten invalidations after `epoch`: assume one was of this key.
        if journal
            .recent
            .front()
            .is_none_or(|(oldest, _)| *oldest > epoch + 1)
        {
            return true;
        }
        let widget = key.widget();
        journal
            .recent
            .iter()
            .rev()
            .take_while(|(at, _)| *at > epoch)
            .any(|(_, touched)| match touched {
                Touched::Key(k) => k == key,
                Touched::Widget(w) => widget.as_ref().is_some_and(|id| id.as_str() == w),
            })
    }

    fn record(&self, touched: Touched) {
        let mut journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        journal.epoch += 1;
        let epoch = journal.epoch;
        if journal.recent.len() == JOURNAL {
            journal.recent.pop_front();
        }
        journal.recent.push_back((epoch, touched));
    }

    /// Announces an invalidation of `key` acknowledged here: fetches in
    /// flight for it are superseded here at once, and (if it reached the
    /// shared store, `fleet`) on the other instances when they hear of it.
    pub async fn announce_invalidation(&self, key: &CacheKey, fleet: bool) {
        self.record(Touched::Key(key.clone()));
        self.waiters.publish(key);
        if fleet {
            self.publish_for(key, INVALIDATION_PREFIX).await;
        }
    }

    /// A widget's thresholds changed here (an invalidation for all users):
    /// known here at once, and announced so every instance reloads them.
    pub async fn generation_changed(&self, widget: &str, gen: Gen) {
        self.widget_gens.set(widget, gen);
        self.record(Touched::Widget(widget.to_owned()));
        // Entries served from the L1 are checked against the table too, but
        // drop them anyway: they would only be misses or stale now.
        if let Some(l1) = self.l1() {
            l1.clear();
        }
        let Some(redis) = &self.publisher else { return };
        let message = format!("{} {GENERATION_PREFIX}{widget}", self.instance);
        if let Err(e) = redis.publish(CHANNEL, &message).await {
            tracing::warn!(error = %e, "could not announce an invalidation; instances reload it within seconds");
        }
    }

    /// Reloads a widget's thresholds from Redis (an announcement of
    /// another instance's bump). No-op without Redis.
    async fn reload_generation(&self, widget: &str) {
        let Some(redis) = &self.publisher else { return };
        let known = self.widget_gens.get(widget);
        match redis.load_generation(widget, known).await {
            Ok(gen) => self.widget_gens.set(widget, gen),
            Err(e) => tracing::debug!(error = %e, widget, "could not load a widget's generation"),
        }
    }

    /// Listens through sharded pub/sub (a cluster): only the users this
    /// instance follows. See `sharded`.
    pub fn start_sharded_feed(
        self: &Arc<Self>,
        client: redis::cluster::ClusterClient,
        pushes: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    ) {
        let listener: Weak<dyn super::sharded::Listener> = Arc::downgrade(self) as Weak<Self>;
        let feed = ShardedFeed::start(client, pushes, listener);
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
    pub(crate) fn follow_soon(&self, key: &CacheKey) {
        if let (Some(sharded), Some(tag)) = (self.sharded.get(), key.user_tag()) {
            sharded.follow_soon(tag);
        }
    }

    /// Change messages received from other instances so far.
    pub fn messages_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Per-user subscriptions the cluster has confirmed since start (0
    /// without a sharded feed).
    pub fn follows_confirmed(&self) -> u64 {
        self.sharded.get().map_or(0, |s| s.confirmed())
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
        self.apply(key).await;
        // Counted once handled: whoever waits for the count sees its effects.
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// What another instance's message changes here.
    async fn apply(&self, key: &str) {
        let parts: Vec<Arc<dyn Heard>> = self
            .heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(prefix, _)| key.starts_with(prefix))
            .filter_map(|(_, part)| part.upgrade())
            .collect();
        if !parts.is_empty() {
            parts.iter().for_each(|part| part.heard(key));
            return;
        }
        if let Some(widget) = key.strip_prefix(GENERATION_PREFIX) {
            self.record(Touched::Widget(widget.to_owned()));
            if let Some(l1) = self.l1() {
                l1.clear();
            }
            self.reload_generation(widget).await;
            return;
        }
        let invalidated = key.strip_prefix(INVALIDATION_PREFIX);
        let key = CacheKey::from_stored(invalidated.unwrap_or(key));
        if invalidated.is_some() {
            self.record(Touched::Key(key.clone()));
        }
        // Evict, then notify: a woken waiter reads the new entry.
        if let Some(l1) = self.l1() {
            l1.evict(&key);
        }
        self.waiters.publish(&key);
    }

    /// After a gap in the feed (messages may have been missed): forget the
    /// L1, and let every waiter look again.
    pub(crate) fn resync(&self) {
        {
            // Any invalidation may have been missed: every fetch in flight
            // counts as superseded.
            let mut journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
            journal.epoch += 1;
            journal.recent.clear();
        }
        if let Some(l1) = self.l1() {
            l1.clear();
        }
        self.waiters.wake_all();
    }

    /// Listens on [`CHANNEL`] of one Redis server for the life of the
    /// process, reconnecting after failures. (A cluster uses the sharded
    /// feed instead: [`Changes::start_sharded_feed`].)
    pub fn spawn_subscriber(self: &Arc<Self>, client: redis::Client) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(changes) = this.upgrade() else { return };
                match subscribe(&client).await {
                    Ok(pubsub) => {
                        // Messages may have been missed while disconnected.
                        changes.resync();
                        drop(changes);
                        let mut stream = pubsub.into_on_message();
                        while let Some(msg) = stream.next().await {
                            let Some(changes) = this.upgrade() else { return };
                            if let Ok(payload) = msg.get_payload::<String>() {
                                changes.handle_message(&payload).await;
                            }
                        }
                        tracing::warn!("change subscription lost; reconnecting");
                    }
                    Err(e) => {
                        drop(changes);
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

#[async_trait::async_trait]
impl super::sharded::Listener for Changes {
    async fn handle_message(&self, payload: &str) {
        Changes::handle_message(self, payload).await;
    }

    fn resync(&self) {
        Changes::resync(self);
    }
}
