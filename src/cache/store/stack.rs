//! The store stack as the settings ask for it: Redis or Redis Cluster (behind
//! the breaker, with the L1 and the change feed), SQLite on disk, or memory.
//! Start-up code: errors are `anyhow`, with the flag they come from.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::breaker::Breaker;
use super::memory::MemoryStore;
use super::near::NearCache;
use super::redis::{self, RedisStore};
use super::sqlite::SqliteStore;
use super::{parse_capacity, Capacity, Lease, Store};
use crate::cache::fleet::changes::Changes;
use crate::clock::Clock;

/// How long a failing store is skipped before it is tried again.
pub const STORE_COOL_DOWN: Duration = Duration::from_millis(500);

/// The store's own settings (the flags of SPEC §4 that choose and bound
/// it): a group of `percache`'s flags, handed to the store alone.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreSettings {
    /// Redis URL (`redis://host:port/db`, or `rediss://` for TLS). Unset: the in-process store.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Comma-separated node URLs of a Redis Cluster.
    #[arg(long, env = "REDIS_CLUSTER_NODES", hide_env_values = true)]
    pub redis_cluster: Option<String>,

    /// Extra PEM CA bundle trusted for a `rediss://` Redis, besides the
    /// system's roots.
    #[arg(long, env = "REDIS_CA")]
    pub redis_ca: Option<PathBuf>,

    /// Keep the cache in an embedded SQLite database in this folder, so it
    /// survives restarts (one instance, no Redis).
    #[arg(long, env = "PERCACHE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Bound of the in-process (or on-disk) store: a number of entries
    /// (`100000`) or a size (`256MiB`, `1GiB`, `500MB`), counted in the
    /// bytes of the entries' data.
    #[arg(long, env = "MEMORY_CAPACITY", default_value = "100000", value_parser = parse_capacity)]
    pub memory_capacity: Capacity,

    /// Longest a store (Redis) command may take before the cache fails open
    /// and asks the upstream directly.
    #[arg(long, env = "STORE_TIMEOUT", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub store_timeout: Duration,

    /// Lifetime of the near-cache (L1) in front of Redis: the longest an
    /// instance may serve an entry older than the fleet's newest if an
    /// invalidation message is lost. 0 turns the near-cache off.
    #[arg(long, env = "L1_TTL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub l1_ttl: Duration,

    /// Maximum number of entries of the near-cache.
    #[arg(long, env = "L1_CAPACITY", default_value_t = 10_000)]
    pub l1_capacity: u64,
}

impl Default for StoreSettings {
    /// The flags' defaults (and the environment's twins, if set).
    fn default() -> Self {
        crate::cache::settings::flag_defaults()
    }
}

/// What the cache and the webhook's replay guard are built on.
pub struct StoreStack {
    /// The outermost layer, which the cache reads and writes.
    pub store: Arc<dyn Store>,
    /// The fetch lease (behind the same breaker as the store, without the L1).
    pub lease: Arc<dyn Lease>,
    /// The change feed: this process's waiters and, with Redis, the fleet's announcements.
    pub changes: Arc<Changes>,
    /// The shared Redis, when there is one (the replay guard keeps its record there).
    pub redis: Option<RedisStore>,
    /// The on-disk store, with `--data-dir` (ended sessions are kept there too).
    pub sqlite: Option<SqliteStore>,
}

/// Builds the store stack of `settings`. With Redis down it still builds
/// (fail-open: the breaker skips it until it answers).
pub async fn from_settings(settings: &StoreSettings, clock: Arc<dyn Clock>) -> anyhow::Result<StoreStack> {
    anyhow::ensure!(
        settings.data_dir.is_none() || (settings.redis_url.is_none() && settings.redis_cluster.is_none()),
        "--data-dir keeps one instance's cache on disk; with Redis, Redis is the store: use one or the other"
    );
    let ca = match &settings.redis_ca {
        Some(path) => Some(crate::tls::pem_bundle(path).context("--redis-ca")?),
        None => None,
    };
    if let Some(nodes) = &settings.redis_cluster {
        let urls: Vec<String> = nodes
            .split(',')
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        anyhow::ensure!(!urls.is_empty(), "--redis-cluster needs at least one node URL");
        // The change feed: sharded pub/sub on its own RESP3 connection.
        let (client, pushes) =
            redis::cluster_push_client(urls.clone(), ca.as_deref()).context("configuring Redis Cluster")?;
        let cluster = RedisStore::cluster_with_ca(urls, ca.as_deref(), settings.store_timeout)
            .context("configuring Redis Cluster")?;
        let (store, lease, changes) = shared(cluster.clone(), settings, clock).await;
        changes.start_sharded_feed(client, pushes);
        return Ok(StoreStack {
            store,
            lease,
            changes,
            redis: Some(cluster),
            sqlite: None,
        });
    }
    if let Some(url) = &settings.redis_url {
        let redis =
            RedisStore::with_ca(url, ca.as_deref(), settings.store_timeout).context("configuring Redis")?;
        let subscriber = redis::client(url, ca.as_deref()).context("configuring Redis")?;
        let (store, lease, changes) = shared(redis.clone(), settings, clock).await;
        changes.spawn_subscriber(subscriber);
        return Ok(StoreStack {
            store,
            lease,
            changes,
            redis: Some(redis),
            sqlite: None,
        });
    }
    // One process: no L1 in front of it (it is in-process or on local
    // disk); its change feed is local, and still drives live refresh.
    let (local, lease, on_disk): (Arc<dyn Store>, Arc<dyn Lease>, Option<SqliteStore>) =
        match settings.data_dir.as_deref() {
            // On disk, behind the breaker like Redis: a failing disk fails open.
            Some(dir) => {
                let sqlite = SqliteStore::open(dir, settings.memory_capacity)
                    .with_context(|| format!("--data-dir {}", dir.display()))?
                    .with_clock(Arc::clone(&clock));
                sqlite.spawn_purger();
                tracing::info!(path = %sqlite.path().display(), "cache kept on disk");
                let disk = Arc::new(sqlite.clone());
                let guarded = Arc::new(Breaker::new(
                    disk.clone(),
                    disk,
                    STORE_COOL_DOWN,
                    Arc::clone(&clock),
                ));
                (guarded.clone(), guarded, Some(sqlite))
            }
            None => {
                let memory =
                    Arc::new(MemoryStore::bounded(settings.memory_capacity).with_clock(Arc::clone(&clock)));
                (memory.clone(), memory, None)
            }
        };
    Ok(StoreStack {
        store: local,
        lease,
        changes: Changes::local(),
        redis: None,
        sqlite: on_disk,
    })
}

/// Redis (one server or a cluster) behind the breaker, with the L1 in front
/// unless `--l1-ttl 0`, and the fleet's change feed over it.
async fn shared(
    redis: RedisStore,
    settings: &StoreSettings,
    clock: Arc<dyn Clock>,
) -> (Arc<dyn Store>, Arc<dyn Lease>, Arc<Changes>) {
    redis.warm_up().await;
    let changes = Changes::shared(redis.clone(), clock.now_ms());
    let backend = Arc::new(redis);
    let guarded = Arc::new(Breaker::new(
        backend.clone(),
        backend,
        STORE_COOL_DOWN,
        Arc::clone(&clock),
    ));
    let lease: Arc<dyn Lease> = guarded.clone();
    if settings.l1_ttl.is_zero() {
        return (guarded, lease, changes);
    }
    let near = NearCache::new(
        guarded,
        settings.l1_ttl,
        settings.l1_capacity,
        Arc::clone(&changes),
        clock,
    );
    (near, lease, changes)
}
