//! The change feed on a Redis Cluster: sharded pub/sub.
//!
//! Each user has a channel, `percache:v1:changes:{u:<tag>}`, whose hash tag
//! puts it in the user's own slot: `SPUBLISH` sends a change only to the
//! shard that holds the user's keys, and only instances that `SSUBSCRIBE`d
//! to that user receive it. An instance follows the users it serves: those
//! with an open page or a request waiting on another instance's fetch (it
//! waits until the subscription is confirmed, so nothing is missed), and
//! those whose entries it just put in its L1. A user nobody asked for in
//! [`FOLLOW_IDLE`] is unfollowed. So an instance receives the changes of the
//! users it serves, not every change of the fleet.
//!
//! Generation bumps (an invalidation for all users) are rare and concern
//! everyone: they stay on the classic channel, which reaches every node.
//! redis-rs's cluster connection (RESP3) re-subscribes by itself after a node
//! fails or slots move.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_redis::redis;
use redis::{PushInfo, PushKind};
use tokio::sync::{mpsc, oneshot};

/// The pub/sub channel of entry changes (one server); on a cluster, each
/// user's channel is this plus the user's hash tag.
pub const CHANNEL: &str = "percache:v1:changes";

/// What the sharded feed hands its messages to (the change feed, which
/// owns the sharded feed: defined here, so this file points at nothing above).
#[async_trait::async_trait]
pub trait Listener: Send + Sync {
    /// One message of the feed.
    async fn handle_message(&self, payload: &str);
    /// The connection dropped: messages may have been missed.
    fn resync(&self);
}

/// A user no request has followed for this long is unfollowed.
pub const FOLLOW_IDLE: Duration = Duration::from_secs(60);
/// The longest a request waits for its user's subscription to be confirmed.
const FOLLOW_WAIT: Duration = Duration::from_millis(250);

/// The sharded channel of the user whose keys carry `tag`.
pub fn channel_of(tag: &str) -> String {
    format!("{CHANNEL}:{{u:{tag}}}")
}

enum Request {
    Follow(String, Option<oneshot::Sender<()>>),
    Unfollow(String),
}

/// The users this instance follows, and the task that holds the subscriptions.
pub struct ShardedFeed {
    requests: mpsc::UnboundedSender<Request>,
    followed: moka::sync::Cache<String, ()>,
    /// Subscriptions the cluster has confirmed so far: the event after which
    /// a change published for that user arrives (tests wait on it).
    confirmed: Arc<AtomicU64>,
}

impl ShardedFeed {
    /// Starts following through a RESP3 cluster client built with `pushes`
    /// as its push sender; messages go to `near`.
    pub fn start(
        client: redis::cluster::ClusterClient,
        mut pushes: mpsc::UnboundedReceiver<PushInfo>,
        near: Weak<dyn Listener>,
    ) -> Arc<Self> {
        let (tx, mut requests) = mpsc::unbounded_channel::<Request>();
        let unfollow = tx.clone();
        let followed = moka::sync::Cache::builder()
            .time_to_idle(FOLLOW_IDLE)
            .eviction_listener(move |tag: Arc<String>, _, _| {
                let _ = unfollow.send(Request::Unfollow((*tag).clone()));
            })
            .build();
        let confirmed = Arc::new(AtomicU64::new(0));
        let confirms = Arc::clone(&confirmed);
        tokio::spawn(async move {
            let mut conn = loop {
                match client.get_async_connection().await {
                    Ok(conn) => break conn,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot reach the cluster's change feed yet");
                        if near.strong_count() == 0 {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            if let Err(e) = conn.subscribe(CHANNEL).await {
                tracing::warn!(error = %e, "could not subscribe to invalidation announcements");
            }
            loop {
                tokio::select! {
                    request = requests.recv() => match request {
                        None => return,
                        Some(Request::Follow(tag, ack)) => {
                            match conn.ssubscribe(channel_of(&tag)).await {
                                Ok(()) => {
                                    confirms.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => tracing::debug!(error = %e, "could not follow a user's changes"),
                            }
                            if let Some(ack) = ack {
                                let _ = ack.send(());
                            }
                        }
                        Some(Request::Unfollow(tag)) => {
                            let _ = conn.sunsubscribe(channel_of(&tag)).await;
                        }
                    },
                    push = pushes.recv() => {
                        let Some(push) = push else { return };
                        let Some(near) = near.upgrade() else { return };
                        match push.kind {
                            PushKind::SMessage | PushKind::Message => {
                                if let Some(payload) = push.data.get(1).and_then(|v| {
                                    redis::from_redis_value_ref::<String>(v).ok()
                                }) {
                                    near.handle_message(&payload).await;
                                }
                            }
                            // Messages may have been missed meanwhile.
                            PushKind::Disconnection => near.resync(),
                            _ => {}
                        }
                    }
                }
            }
        });
        Arc::new(Self {
            requests: tx,
            followed,
            confirmed,
        })
    }

    /// Follows `tag`'s user, and waits (briefly) until the subscription is
    /// confirmed, so that a change published from now on arrives.
    pub async fn follow(&self, tag: &str) {
        if self.followed.get(tag).is_some() {
            return;
        }
        self.followed.insert(tag.to_owned(), ());
        let (ack, confirmed) = oneshot::channel();
        if self
            .requests
            .send(Request::Follow(tag.to_owned(), Some(ack)))
            .is_ok()
        {
            let _ = tokio::time::timeout(FOLLOW_WAIT, confirmed).await;
        }
    }

    /// Follows `tag`'s user without waiting (an entry just put in the L1).
    pub fn follow_soon(&self, tag: &str) {
        if self.followed.get(tag).is_none() {
            self.followed.insert(tag.to_owned(), ());
            let _ = self.requests.send(Request::Follow(tag.to_owned(), None));
        }
    }

    /// Subscriptions confirmed by the cluster since start.
    pub fn confirmed(&self) -> u64 {
        self.confirmed.load(Ordering::Relaxed)
    }

    /// Users followed right now.
    pub fn followed(&self) -> u64 {
        self.followed.run_pending_tasks();
        self.followed.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_channel_lives_in_the_users_slot() {
        assert_eq!(channel_of("ab12"), "percache:v1:changes:{u:ab12}");
    }
}
