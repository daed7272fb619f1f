//! The on-disk store (`--data-dir`): entries in an embedded SQLite database
//! (WAL), so one instance keeps its users' data across restarts. A user who
//! comes back after a deploy sees their data at once, and stale-if-error
//! works even when the upstream is down at boot.
//!
//! SQLite's calls block, so each runs on tokio's blocking pool, one at a
//! time on one connection (WAL lets that connection read while it writes
//! pages back). Expired rows are purged in the background, and the table is
//! trimmed to `--memory-capacity` (rows, or bytes of stored values; those
//! expiring soonest go first).
//! A disk failure is a [`StoreError`] like a Redis outage: the cache fails
//! open and the breaker skips the store for a moment.
//!
//! The fetch lock and failure markers stay in memory (one instance: the
//! in-process single flight is the lock), as in [`MemoryStore`]. What
//! orders writes is kept on disk: each row's stamp (`started`; a tombstone
//! is a row with an empty value), and the widgets' `allUsers` thresholds
//! (`generations`), so a restart undoes no invalidation. Stamps after a
//! restart start above every stamp on disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::memory::MemoryStore;
use super::{Backoff, Lease, LockState, Store, StoreError, Usage};
use crate::cache::entry::Entry;
use crate::cache::fleet::generations::{Gen, Kind};
use crate::cache::key::CacheKey;
use crate::cache::store::Capacity;
use crate::clock::{Clock, SystemClock};

/// The database file in the data directory.
pub const FILE_NAME: &str = "percache.sqlite3";
/// How often expired rows are purged.
pub const PURGE_EVERY: Duration = Duration::from_secs(30);
/// Puts between two capacity checks.
const TRIM_EVERY_PUTS: u64 = 1024;

/// Entries in SQLite, each row expiring when its entry's grace ends, by the
/// cache's clock (a mock clock in tests, so that expiry needs no waiting).
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    clock: Arc<dyn Clock>,
    capacity: Capacity,
    puts: Arc<AtomicU64>,
    markers: MemoryStore,
    path: PathBuf,
    /// Where stamps come from; above every stamp on disk when opened.
    stamps: Arc<super::StampClock>,
}

fn command(e: rusqlite::Error) -> StoreError {
    StoreError::Command(e.to_string())
}

impl SqliteStore {
    /// Opens (or creates) the database in `dir` (created if missing).
    pub fn open(dir: &Path, capacity: Capacity) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Connection(format!("{}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let conn = Connection::open(&path)
            .map_err(|e| StoreError::Connection(format!("{}: {e}", path.display())))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 1000;
             CREATE TABLE IF NOT EXISTS entries (
                 key TEXT PRIMARY KEY,
                 value BLOB NOT NULL,
                 expires_at INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS entries_by_expiry ON entries (expires_at);
             CREATE TABLE IF NOT EXISTS generations (
                 widget TEXT PRIMARY KEY,
                 hard INTEGER NOT NULL,
                 soft INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS ended_sessions (
                 sid TEXT PRIMARY KEY,
                 until INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS session_floors (
                 tag TEXT PRIMARY KEY,
                 at INTEGER NOT NULL
             );",
        )
        .map_err(|e| StoreError::Connection(format!("{}: {e}", path.display())))?;
        // Databases from before stamps: add the column (older rows: stamp 0).
        let has_started: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('entries') WHERE name = 'started'")
            .and_then(|mut q| q.exists([]))
            .map_err(|e| StoreError::Connection(format!("{}: {e}", path.display())))?;
        if !has_started {
            conn.execute_batch("ALTER TABLE entries ADD COLUMN started INTEGER NOT NULL DEFAULT 0;")
                .map_err(|e| StoreError::Connection(format!("{}: {e}", path.display())))?;
        }
        let floor: i64 = conn
            .query_row(
                "SELECT MAX(COALESCE((SELECT MAX(started) FROM entries), 0),
                            COALESCE((SELECT MAX(MAX(hard, soft)) FROM generations), 0))",
                [],
                |r| r.get(0),
            )
            .map_err(|e| StoreError::Connection(format!("{}: {e}", path.display())))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            clock: Arc::new(SystemClock),
            capacity,
            puts: Arc::new(AtomicU64::new(0)),
            markers: MemoryStore::bounded(capacity),
            path,
            stamps: Arc::new(super::StampClock::after(floor.max(0) as u64)),
        })
    }

    /// Expires rows and times failure backoffs by `clock` (the cache's own).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.markers = self.markers.with_clock(Arc::clone(&clock));
        self.clock = clock;
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection, on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        run_on(Arc::clone(&self.conn), f).await
    }

    /// Deletes expired rows, then the rows beyond the capacity that expire
    /// soonest. Returns how many rows went.
    pub async fn purge(&self) -> Result<usize, StoreError> {
        let (capacity, now) = (self.capacity, self.clock.now_ms());
        self.run(move |conn| purge_rows(conn, capacity, now)).await
    }

    /// Rows in the table (for tests and gauges).
    pub async fn len(&self) -> Result<u64, StoreError> {
        self.run(|conn| conn.query_row("SELECT COUNT(*) FROM entries", [], |r| r.get::<_, i64>(0)))
            .await
            .map(|n| n.max(0) as u64)
    }

    /// Whether the table is empty.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len().await? == 0)
    }

    /// Purges every [`PURGE_EVERY`] for as long as the store lives.
    pub fn spawn_purger(&self) {
        let (conn, capacity, clock) = (Arc::downgrade(&self.conn), self.capacity, Arc::clone(&self.clock));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PURGE_EVERY);
            loop {
                tick.tick().await;
                let Some(conn) = conn.upgrade() else { return };
                let now = clock.now_ms();
                match run_on(conn, move |c| purge_rows(c, capacity, now)).await {
                    Ok(n) if n > 0 => tracing::debug!(rows = n, "purged the on-disk cache"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not purge the on-disk cache"),
                }
            }
        });
    }
}

impl SqliteStore {
    /// Records an ended session until it would have expired anyway.
    pub async fn end_session(&self, sid: &str, until: i64) -> Result<(), StoreError> {
        let sid = sid.to_owned();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO ended_sessions (sid, until) VALUES (?1, ?2)
                 ON CONFLICT (sid) DO UPDATE SET until = MAX(until, excluded.until)",
                params![sid, until],
            )
        })
        .await
        .map(drop)
    }

    /// Records "every session of the user tagged `tag` that began before `at` ended".
    pub async fn end_sessions_before(&self, tag: &str, at: i64) -> Result<(), StoreError> {
        let tag = tag.to_owned();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO session_floors (tag, at) VALUES (?1, ?2)
                 ON CONFLICT (tag) DO UPDATE SET at = MAX(at, excluded.at)",
                params![tag, at],
            )
        })
        .await
        .map(drop)
    }

    /// The ended sessions still worth refusing at `now` (the others are
    /// dropped), and the per-user floors newer than `oldest`.
    pub async fn ended_sessions(
        &self,
        now: i64,
        oldest: i64,
    ) -> Result<(Vec<String>, Vec<(String, i64)>), StoreError> {
        self.run(move |conn| {
            conn.execute("DELETE FROM ended_sessions WHERE until <= ?1", [now])?;
            conn.execute("DELETE FROM session_floors WHERE at <= ?1", [oldest])?;
            let sids = conn
                .prepare("SELECT sid FROM ended_sessions")?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let floors = conn
                .prepare("SELECT tag, at FROM session_floors")?
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((sids, floors))
        })
        .await
    }

    /// Keeps a widget's thresholds (never lower than what is on disk).
    async fn write_generation(&self, widget: &str, gen: Gen) -> Result<(), StoreError> {
        let w = widget.to_owned();
        let (hard, soft) = (
            i64::try_from(gen.hard).unwrap_or(i64::MAX),
            i64::try_from(gen.soft).unwrap_or(i64::MAX),
        );
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO generations (widget, hard, soft) VALUES (?1, ?2, ?3)
                 ON CONFLICT (widget) DO UPDATE SET hard = MAX(hard, excluded.hard),
                     soft = MAX(soft, excluded.soft)",
                params![w, hard, soft],
            )
        })
        .await
        .map(drop)
    }
}

/// Runs `f` on `conn`, on the blocking pool.
async fn run_on<T, F>(conn: Arc<Mutex<Connection>>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&conn).map_err(command)
    })
    .await
    .map_err(|e| StoreError::Command(format!("sqlite task: {e}")))?
}

/// Deletes the rows expired at `now`, then the rows beyond `capacity` that
/// expire soonest.
fn purge_rows(conn: &Connection, capacity: Capacity, now: i64) -> rusqlite::Result<usize> {
    let expired = conn.execute("DELETE FROM entries WHERE expires_at <= ?1", [now])?;
    let trimmed = match capacity {
        Capacity::Entries(max) => {
            let max = i64::try_from(max).unwrap_or(i64::MAX);
            let count: i64 = conn.query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))?;
            let excess = (count - max).max(0);
            conn.execute(
                "DELETE FROM entries WHERE key IN
                   (SELECT key FROM entries ORDER BY expires_at ASC LIMIT ?1)",
                [excess],
            )?
        }
        Capacity::Bytes(max) => {
            let total: i64 =
                conn.query_row("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM entries", [], |r| {
                    r.get(0)
                })?;
            let mut excess = total - i64::try_from(max).unwrap_or(i64::MAX);
            let mut doomed = Vec::new();
            if excess > 0 {
                let mut rows =
                    conn.prepare("SELECT key, LENGTH(value) FROM entries ORDER BY expires_at ASC")?;
                let mut rows = rows.query([])?;
                while excess > 0 {
                    let Some(row) = rows.next()? else { break };
                    doomed.push(row.get::<_, String>(0)?);
                    excess -= row.get::<_, i64>(1)?;
                }
            }
            let mut delete = conn.prepare_cached("DELETE FROM entries WHERE key = ?1")?;
            for key in &doomed {
                delete.execute([key])?;
            }
            doomed.len()
        }
    };
    Ok(expired + trimmed)
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &CacheKey) -> Result<Option<Arc<Entry>>, StoreError> {
        let (k, now) = (key.as_str().to_owned(), self.clock.now_ms());
        let raw: Option<Vec<u8>> = self
            .run(move |conn| {
                conn.query_row(
                    "SELECT value FROM entries WHERE key = ?1 AND expires_at > ?2 AND LENGTH(value) > 0",
                    params![k, now],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        Ok(raw.and_then(|bytes| match Entry::decode(&bytes) {
            Ok(entry) => Some(Arc::new(entry)),
            Err(e) => {
                tracing::warn!(key = key.as_str(), error = %e, "ignoring undecodable cache entry");
                None
            }
        }))
    }

    async fn put(
        &self,
        key: &CacheKey,
        entry: Arc<Entry>,
        ttl: Duration,
        expect: Option<u64>,
    ) -> Result<bool, StoreError> {
        let (k, value) = (key.as_str().to_owned(), entry.encode());
        let stamp = i64::try_from(entry.started).unwrap_or(i64::MAX);
        let now = self.clock.now_ms();
        let expires_at = now.saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64);
        // One statement: the compare and the write are atomic. An expired
        // row's stamp still counts (a tombstone's above all).
        let written = self
            .run(move |conn| match expect {
                None => conn.execute(
                    "INSERT INTO entries (key, value, expires_at, started) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value,
                         expires_at = excluded.expires_at, started = excluded.started
                     WHERE excluded.started > entries.started",
                    params![k, value, expires_at, stamp],
                ),
                Some(expected) => conn.execute(
                    "UPDATE entries SET value = ?2, expires_at = ?3, started = ?4
                     WHERE key = ?1 AND started = ?5 AND ?4 > started",
                    params![
                        k,
                        value,
                        expires_at,
                        stamp,
                        i64::try_from(expected).unwrap_or(i64::MAX)
                    ],
                ),
            })
            .await?;
        // Bounded between purges too: a burst of new users cannot grow the
        // file without limit.
        if self.puts.fetch_add(1, Ordering::Relaxed) % TRIM_EVERY_PUTS == TRIM_EVERY_PUTS - 1 {
            self.purge().await?;
        }
        Ok(written > 0)
    }

    async fn invalidate(&self, keys: &[CacheKey], keep: Duration) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let expires_at = now.saturating_add(keep.as_millis().min(i64::MAX as u128) as i64);
        for key in keys {
            let k = key.as_str().to_owned();
            let stamps = Arc::clone(&self.stamps);
            // The stamp is taken under the connection's lock, above the
            // row's: nothing writes between.
            self.run(move |conn| {
                let held: Option<i64> = conn
                    .query_row("SELECT started FROM entries WHERE key = ?1", [&k], |r| r.get(0))
                    .optional()?;
                stamps.observe(held.unwrap_or(0).max(0) as u64);
                let stamp = i64::try_from(stamps.next(now)).unwrap_or(i64::MAX);
                conn.execute(
                    "INSERT INTO entries (key, value, expires_at, started) VALUES (?1, X'', ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET value = X'', expires_at = excluded.expires_at,
                         started = excluded.started",
                    params![k, expires_at, stamp],
                )
            })
            .await?;
            self.markers.release(key, 0, None).await?;
        }
        Ok(())
    }

    async fn stamp(&self, key: &CacheKey) -> Result<u64, StoreError> {
        let k = key.as_str().to_owned();
        let (stamps, now) = (Arc::clone(&self.stamps), self.clock.now_ms());
        self.run(move |conn| {
            let held: Option<i64> = conn
                .query_row("SELECT started FROM entries WHERE key = ?1", [&k], |r| r.get(0))
                .optional()?;
            stamps.observe(held.unwrap_or(0).max(0) as u64);
            Ok(stamps.next(now))
        })
        .await
    }

    async fn bump_generation(&self, widget: &str, kind: Kind, known: Gen) -> Result<Gen, StoreError> {
        let kept = self.load_generation(widget, known).await?;
        let gen = kept.bumped_to(self.stamps.next(self.clock.now_ms()), kind);
        self.stamps.observe(gen.current);
        self.write_generation(widget, gen).await?;
        Ok(gen)
    }

    async fn load_generation(&self, widget: &str, known: Gen) -> Result<Gen, StoreError> {
        let w = widget.to_owned();
        let kept: Option<(i64, i64)> = self
            .run(move |conn| {
                conn.query_row(
                    "SELECT hard, soft FROM generations WHERE widget = ?1",
                    [&w],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
            })
            .await?;
        let (hard, soft) = kept.map_or((0, 0), |(h, s)| (h.max(0) as u64, s.max(0) as u64));
        let stored = Gen {
            current: hard.max(soft),
            hard,
            soft,
        };
        let merged = stored.merged(known);
        if merged != stored {
            self.write_generation(widget, merged).await?;
        }
        Ok(merged)
    }

    async fn usage(&self) -> Option<Usage> {
        let counted = self
            .run(|conn| {
                conn.query_row(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(value)), 0) FROM entries WHERE LENGTH(value) > 0",
                    [],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
            })
            .await
            .ok()?;
        Some(Usage {
            entries: counted.0.max(0) as u64,
            bytes: counted.1.max(0) as u64,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn| conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
            .await
            .map(drop)
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }
}

#[async_trait]
impl Lease for SqliteStore {
    async fn acquire(&self, key: &CacheKey, ttl: Duration, force: bool) -> Result<LockState, StoreError> {
        match self.markers.acquire(key, ttl, force).await? {
            LockState::Acquired(_) => Ok(LockState::Acquired(self.stamp(key).await?)),
            other => Ok(other),
        }
    }

    async fn renew(&self, key: &CacheKey, token: u64, ttl: Duration) -> Result<bool, StoreError> {
        self.markers.renew(key, token, ttl).await
    }

    async fn release(&self, key: &CacheKey, token: u64, failed: Option<Backoff>) -> Result<(), StoreError> {
        self.markers.release(key, token, failed).await
    }

    async fn lock_state(&self, key: &CacheKey) -> Result<LockState, StoreError> {
        self.markers.lock_state(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::UserTag;
    use crate::clock::MockClock;
    use crate::widget::Registry;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("percache-sqlite-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn entry(v: i64) -> Arc<Entry> {
        Arc::new(Entry {
            data: serde_json::value::to_raw_value(&serde_json::json!({ "v": v, "s": "<b>é</b>" })).unwrap(),
            fetched_at: v,
            fresh_until: v + 1,
            stale_until: v + 2,
            grace_until: v + 3,
            fingerprint: 42,
            generation: 0,
            started: v as u64 + 1,
            validators: Default::default(),
            rendered: Default::default(),
        })
    }

    fn key(user: &str) -> CacheKey {
        UserTag::of(user).key(&Registry::builtin().default_instance("1").unwrap())
    }

    #[tokio::test]
    async fn entries_survive_reopening_the_database() {
        let d = dir("reopen");
        let store = SqliteStore::open(&d, Capacity::Entries(100)).unwrap();
        store
            .put(&key("a"), entry(7), Duration::from_secs(60), None)
            .await
            .unwrap();
        drop(store);
        let again = SqliteStore::open(&d, Capacity::Entries(100)).unwrap();
        assert_eq!(again.get(&key("a")).await.unwrap().as_deref(), Some(&*entry(7)));
        assert_eq!(again.get(&key("b")).await.unwrap(), None);
        again
            .invalidate(&[key("a")], Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(again.get(&key("a")).await.unwrap(), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn expired_rows_are_not_served_and_are_purged() {
        // Arrange: one row for a minute, one for an hour, on a mock clock.
        let d = dir("expiry");
        let clock = MockClock::new();
        let store = SqliteStore::open(&d, Capacity::Entries(100))
            .unwrap()
            .with_clock(Arc::clone(&clock) as Arc<dyn Clock>);
        store
            .put(&key("a"), entry(1), Duration::from_secs(60), None)
            .await
            .unwrap();
        store
            .put(&key("b"), entry(2), Duration::from_secs(3600), None)
            .await
            .unwrap();
        assert!(
            store.get(&key("a")).await.unwrap().is_some(),
            "served before it expires"
        );
        assert_eq!(store.purge().await.unwrap(), 0, "nothing expired yet");

        // Act: the clock passes the first row's expiry.
        clock.advance(Duration::from_secs(61));

        // Assert: that row is no longer served, and is purged; the other stays.
        assert_eq!(store.get(&key("a")).await.unwrap(), None);
        assert!(store.get(&key("b")).await.unwrap().is_some());
        assert_eq!(store.purge().await.unwrap(), 1);
        assert_eq!(store.len().await.unwrap(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn the_capacity_bounds_the_table() {
        let d = dir("capacity");
        let store = SqliteStore::open(&d, Capacity::Entries(10)).unwrap();
        for i in 0..50 {
            store
                .put(
                    &key(&format!("u{i}")),
                    entry(i),
                    Duration::from_secs(60 + i as u64),
                    None,
                )
                .await
                .unwrap();
        }
        store.purge().await.unwrap();
        assert_eq!(store.len().await.unwrap(), 10);
        assert!(
            store.get(&key("u49")).await.unwrap().is_some(),
            "the longest-lived rows stay"
        );
        assert!(store.get(&key("u0")).await.unwrap().is_none());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn a_broken_disk_is_a_store_error_not_a_panic() {
        let d = dir("broken");
        let store = SqliteStore::open(&d, Capacity::Entries(10)).unwrap();
        store
            .run(|conn| conn.execute_batch("DROP TABLE entries"))
            .await
            .unwrap();
        assert!(matches!(store.get(&key("a")).await, Err(StoreError::Command(_))));
        assert!(store
            .put(&key("a"), entry(1), Duration::from_secs(1), None)
            .await
            .is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
