//! Invalidation: one user's widgets (the webhook), or a widget for every
//! user at once by a generation bump, hard (gone) or soft (stale).

use std::sync::Arc;
use std::time::Duration;

use super::fleet::generations::{Kind, Verdict};
use super::key::CacheKey;
use super::policy::store_ttl;
use super::service::WidgetCache;
use super::store::StoreError;
use crate::user::UserId;
use crate::widget::Widget;

/// Most parameter combinations of one widget that an invalidation deletes.
/// Parameters are enumerations, so this covers every real widget; a file
/// with more combinations than this has its rarest ones expire by ttl.
pub const MAX_INSTANCES_INVALIDATED: usize = 256;

/// How often every widget's invalidation generation is reloaded from Redis.
pub const GENERATION_RELOAD: Duration = Duration::from_secs(5);

/// How many times a soft invalidation retries its compare-and-set when a
/// write slips in between its read and its write.
const SOFTEN_TRIES: usize = 8;

impl WidgetCache {
    /// Invalidates a user's entries for `widgets`, every parameter
    /// combination of each (the invalidation webhook). Hard: each entry is
    /// replaced by a tombstone; soft: each turns stale. Either way, a fetch
    /// of those keys that began before this call cannot store its result
    /// afterwards, and nobody who asks after it joins that fetch.
    pub async fn invalidate(
        &self,
        user: &UserId,
        widgets: &[Arc<Widget>],
        kind: Kind,
    ) -> Result<(), StoreError> {
        let keys: Vec<CacheKey> = widgets
            .iter()
            .flat_map(|w| w.instances(MAX_INSTANCES_INVALIDATED))
            .map(|i| user.tag().key(&i))
            .collect();
        let done = match kind {
            Kind::Hard => self.store().invalidate(&keys, self.tombstone_life()).await,
            Kind::Soft => self.soften(&keys).await,
        };
        for key in &keys {
            self.changes().announce_invalidation(key, done.is_ok()).await;
        }
        done
    }

    /// How long a tombstone outlives its invalidation: longer than any
    /// fetch that began before it can still be running.
    fn tombstone_life(&self) -> Duration {
        (self.wait_deadline() * 2).max(Duration::from_secs(60))
    }

    /// Makes entries stale (still served at once, and refreshed), keeping
    /// their ttl and grace; a key with no entry gets a tombstone. The stale
    /// copy carries a new stamp, written only over the entry it was made
    /// from (compare-and-set), so older fetches cannot land after it and a
    /// newer one is never overwritten.
    async fn soften(&self, keys: &[CacheKey]) -> Result<(), StoreError> {
        for key in keys {
            let mut softened = false;
            for _ in 0..SOFTEN_TRIES {
                let stamp = self.store().stamp(key).await?;
                let now = self.now();
                let Some(entry) = self.store().get(key).await? else {
                    break;
                };
                // Gone for all users already: nothing to keep, not even stale.
                let gone = key.widget().is_some_and(|w| {
                    self.changes()
                        .generations()
                        .get(w.as_str())
                        .verdict(entry.generation)
                        == Verdict::Gone
                });
                if gone {
                    break;
                }
                if entry.started > stamp {
                    // Written by a fetch that began after us: current.
                    softened = true;
                    break;
                }
                let mut stale = (*entry).clone();
                stale.fresh_until = stale.fresh_until.min(now);
                stale.started = stamp;
                // The next fetch is unconditional: what the upstream would
                // call unchanged was invalidated.
                stale.validators = Default::default();
                let ttl = store_ttl(&entry, now);
                if self
                    .store()
                    .put(key, Arc::new(stale), ttl, Some(entry.started))
                    .await?
                {
                    softened = true;
                    break;
                }
            }
            if !softened {
                // Nothing to keep stale (or it kept changing): a tombstone.
                self.store()
                    .invalidate(std::slice::from_ref(key), self.tombstone_life())
                    .await?;
            }
        }
        Ok(())
    }

    /// Invalidates `widgets` for every user at once (the webhook's
    /// `allUsers`): one threshold per widget, no key scanned.
    pub async fn invalidate_all_users(&self, widgets: &[Arc<Widget>], kind: Kind) -> Result<(), StoreError> {
        for widget in widgets {
            let id = widget.id.as_str();
            let known = self.changes().generations().get(id);
            let gen = self.store().bump_generation(id, kind, known).await?;
            self.changes().generation_changed(id, gen).await;
            tracing::info!(widget = %widget.id, threshold = gen.current, ?kind, "widget invalidated for all users");
        }
        Ok(())
    }

    /// Reloads the widgets' thresholds from the store (start-up, and
    /// periodically in case an invalidation announcement was lost), writing
    /// back what this instance knew if the store lost it.
    pub async fn reload_generations(&self) {
        for widget in self.registry().all() {
            let id = widget.id.as_str();
            let known = self.changes().generations().get(id);
            match self.store().load_generation(id, known).await {
                Ok(gen) => self.changes().generations().set(id, gen),
                Err(e) => tracing::debug!(error = %e, widget = id, "could not load a widget's generation"),
            }
        }
    }

    /// Reloads the generations every [`GENERATION_RELOAD`] for as long as
    /// the cache lives: the longest an instance that missed an `allUsers`
    /// announcement serves what it invalidated.
    pub fn spawn_generation_reloads(self: &Arc<Self>) {
        let cache = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(GENERATION_RELOAD);
            loop {
                tick.tick().await;
                let Some(cache) = cache.upgrade() else { return };
                cache.reload_generations().await;
            }
        });
    }
}
