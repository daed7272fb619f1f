//! Invalidation: one user's widgets (the webhook), or a widget for every
//! user at once by a generation bump, hard (gone) or soft (stale).

use std::sync::Arc;
use std::time::Duration;

use super::entry::Freshness;
use super::generations::Kind;
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

impl WidgetCache {
    /// Deletes a user's entries for `widgets`, every parameter combination
    /// of each (the invalidation webhook).
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
        match kind {
            Kind::Hard => {
                let deleted = self.store.delete(&keys).await;
                for key in &keys {
                    self.changes.announce(key, deleted.is_ok()).await;
                }
                deleted
            }
            Kind::Soft => self.soften(&keys).await,
        }
    }

    /// Makes entries stale (still served at once, and refreshed), keeping
    /// their ttl and grace. Written back, so every instance sees it.
    async fn soften(&self, keys: &[CacheKey]) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        for key in keys {
            let Some(entry) = self.store.get(key).await? else {
                continue;
            };
            if entry.freshness(now) != Freshness::Fresh {
                continue;
            }
            let mut stale = (*entry).clone();
            stale.fresh_until = now;
            let written = self.store.put(key, Arc::new(stale), store_ttl(&entry, now)).await;
            self.changes.announce(key, written.is_ok()).await;
            written?;
        }
        Ok(())
    }

    /// Invalidates `widgets` for every user at once (the webhook's
    /// `allUsers`): one generation bump per widget, no key scanned.
    pub async fn invalidate_all_users(&self, widgets: &[Arc<Widget>], kind: Kind) -> Result<(), StoreError> {
        for widget in widgets {
            let gen = self.changes.bump_generation(widget.id.as_str(), kind).await?;
            tracing::info!(widget = %widget.id, generation = gen.current, ?kind, "widget invalidated for all users");
        }
        Ok(())
    }

    /// Reloads the widgets' generations from the shared store (start-up,
    /// and periodically in case an invalidation announcement was lost).
    pub async fn reload_generations(&self) {
        let ids: Vec<&str> = self.registry.all().iter().map(|w| w.id.as_str()).collect();
        self.changes.reload_generations(&ids).await;
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
