//! Sessions that end (SPEC §8, v3): on the server, not only in the cookie.
//!
//! A session cookie is sealed by the server's key and keeps no state on
//! the server, so by itself nothing could refuse a copy of it taken before
//! its sign-out. Each session therefore carries an id and its sign-in time,
//! and this record refuses, on every request:
//!
//! - a session older than `--session-max-age` (reason `expired`; so is a
//!   cookie from before v3, which has no id: its user signs in again, once);
//! - a session that was signed out, or that began before its user's "sign
//!   out everywhere" (reason `signed_out`).
//!
//! The check is a lookup in this instance's memory, so it costs a request
//! no round trip. A sign-out is recorded here at once, written to Redis (a
//! sorted set of ended ids by expiry, a hash of per-user floors) and
//! announced on the change feed, so every instance refuses the cookie as
//! soon as the message arrives; an instance that starts later loads the
//! record from Redis, and every instance reloads it every
//! [`RELOAD_EVERY`] in case a message was lost. With `--data-dir` the record
//! is kept on disk too, so a restart undoes no sign-out; with the in-process
//! store alone, it lives as long as the process.
//!
//! Bounded: an ended id is kept until the session would have expired
//! anyway, at most [`CAPACITY`] of them; only signed-in users can add one.

use std::sync::{Arc, Weak};
use std::time::Duration;

use moka::sync::Cache;

use super::SignedIn;
use crate::cache::fleet::changes::{Changes, Heard};
use crate::cache::store::redis::RedisStore;
use crate::cache::store::sqlite::SqliteStore;
use crate::clock::{Clock, Millis};
use crate::user::UserId;

/// Most ended sessions (and per-user floors) an instance remembers.
pub const CAPACITY: u64 = 1_000_000;
/// How often the record is reloaded from Redis.
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// Feed messages of this record: `end:s:<id>` and `end:u:<tag>:<floor>`.
pub const PREFIX: &str = "end:";
/// The Redis sorted set of ended session ids (score: when they expire).
const ENDED_KEY: &str = "percache:v1:sessions:ended";
/// The Redis hash of per-user floors (field: the user's tag).
const FLOORS_KEY: &str = "percache:v1:sessions:floors";

/// Why a session is refused (`percache_sessions_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Past `--session-max-age`, or from before sessions had an id.
    Expired,
    /// Signed out, here or everywhere.
    SignedOut,
}

impl Refusal {
    /// The metric's label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Expired => "expired",
            Refusal::SignedOut => "signed_out",
        }
    }
}

/// The record of ended sessions, shared by the workers of an instance.
pub struct SessionEnds {
    max_age: Duration,
    clock: Arc<dyn Clock>,
    /// Ended session ids, each kept until it would have expired anyway.
    ended: Cache<Box<str>, ()>,
    /// Per user tag: sessions that began before this (ms) are ended.
    floors: Cache<Box<str>, Millis>,
    redis: Option<RedisStore>,
    /// With `--data-dir`: sign-outs survive a restart.
    disk: Option<SqliteStore>,
    changes: Arc<Changes>,
}

impl SessionEnds {
    /// A record for sessions of `max_age`, kept in `redis` when there is
    /// one and announced on `changes`.
    pub fn new(
        max_age: Duration,
        clock: Arc<dyn Clock>,
        redis: Option<RedisStore>,
        changes: Arc<Changes>,
    ) -> Arc<Self> {
        Self::kept(max_age, clock, redis, None, changes)
    }

    /// As [`SessionEnds::new`], sign-outs also kept on disk (`--data-dir`).
    pub fn kept(
        max_age: Duration,
        clock: Arc<dyn Clock>,
        redis: Option<RedisStore>,
        disk: Option<SqliteStore>,
        changes: Arc<Changes>,
    ) -> Arc<Self> {
        let keep = max_age.max(Duration::from_secs(1));
        let ends = Arc::new(Self {
            max_age,
            clock,
            ended: Cache::builder().max_capacity(CAPACITY).time_to_live(keep).build(),
            floors: Cache::builder().max_capacity(CAPACITY).time_to_live(keep).build(),
            redis,
            disk,
            changes: Arc::clone(&changes),
        });
        let heard: Weak<dyn Heard> = Arc::downgrade(&ends) as Weak<SessionEnds>;
        changes.attach_heard(PREFIX, heard);
        ends
    }

    /// How long a session lasts after its sign-in.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Now, by the cache's clock.
    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// Why `session` is refused now, if it is.
    pub fn refuses(&self, session: &SignedIn) -> Option<Refusal> {
        let Some(sid) = session.sid.as_deref() else {
            return Some(Refusal::Expired);
        };
        let age = self.clock.now_ms().saturating_sub(session.iat);
        if age >= self.max_age.as_millis() as i64 || age < -60_000 {
            return Some(Refusal::Expired);
        }
        if self.ended.contains_key(sid) {
            return Some(Refusal::SignedOut);
        }
        let floor = self.floors.get(session.user.tag().as_str());
        if floor.is_some_and(|floor| session.iat < floor) {
            return Some(Refusal::SignedOut);
        }
        None
    }

    /// Ends one session, in the fleet.
    pub async fn end(&self, session: &SignedIn) {
        let Some(sid) = session.sid.as_deref() else { return };
        let until = session.iat.saturating_add(self.max_age.as_millis() as i64);
        self.end_id(sid, until).await;
    }

    /// Whether the session or sign-in `id` was ended (an operator's admin
    /// cookie is recorded here too, under an `admin:` id).
    pub fn is_ended(&self, id: &str) -> bool {
        self.ended.get(id).is_some()
    }

    /// Ends the session or sign-in `id`, which would expire by itself at
    /// `until`, in the fleet: here at once, in Redis and on disk, and on
    /// the feed.
    pub async fn end_id(&self, sid: &str, until: Millis) {
        self.ended.insert(sid.into(), ());
        if let Some(disk) = &self.disk {
            if let Err(e) = disk.end_session(sid, until).await {
                tracing::warn!(error = %e, "could not keep a sign-out on disk");
            }
        }
        if let Some(redis) = &self.redis {
            if let Err(e) = redis.zadd(ENDED_KEY, sid, until).await {
                tracing::warn!(error = %e, "could not record a sign-out in Redis; the other instances hear of it on the feed");
            }
        }
        self.changes.announce_raw(&format!("{PREFIX}s:{sid}")).await;
    }

    /// Ends every session of `user` that began before `at`, in the fleet.
    pub async fn end_everywhere(&self, user: &UserId, at: Millis) {
        let tag = user.tag().as_str();
        self.raise_floor(tag, at);
        if let Some(disk) = &self.disk {
            if let Err(e) = disk.end_sessions_before(tag, at).await {
                tracing::warn!(error = %e, "could not keep a sign-out everywhere on disk");
            }
        }
        if let Some(redis) = &self.redis {
            if let Err(e) = redis.hset_max(FLOORS_KEY, tag, at).await {
                tracing::warn!(error = %e, "could not record a sign-out everywhere in Redis");
            }
        }
        self.changes.announce_raw(&format!("{PREFIX}u:{tag}:{at}")).await;
    }

    fn raise_floor(&self, tag: &str, at: Millis) {
        let floor = self.floors.get(tag).unwrap_or(Millis::MIN).max(at);
        self.floors.insert(tag.into(), floor);
    }

    /// Loads the fleet's record from Redis (start-up, then every
    /// [`RELOAD_EVERY`]), dropping what has expired there.
    pub async fn reload(&self) {
        let now = self.clock.now_ms();
        let oldest = now.saturating_sub(self.max_age.as_millis() as i64);
        if let Some(disk) = &self.disk {
            match disk.ended_sessions(now, oldest).await {
                Ok((sids, floors)) => {
                    sids.into_iter().for_each(|sid| self.ended.insert(sid.into(), ()));
                    floors
                        .into_iter()
                        .for_each(|(tag, at)| self.raise_floor(&tag, at));
                }
                Err(e) => tracing::warn!(error = %e, "could not load the sign-outs kept on disk"),
            }
        }
        let Some(redis) = &self.redis else { return };
        match redis.zmembers_after(ENDED_KEY, now).await {
            Ok(ids) => ids.into_iter().for_each(|id| self.ended.insert(id.into(), ())),
            Err(e) => tracing::debug!(error = %e, "could not load ended sessions"),
        }
        match redis.hgetall_i64(FLOORS_KEY).await {
            Ok(floors) => {
                for (tag, floor) in floors {
                    if floor > oldest {
                        self.raise_floor(&tag, floor);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not load sign-outs everywhere"),
        }
    }

    /// Reloads every [`RELOAD_EVERY`] for as long as the record lives.
    pub fn spawn_reloads(self: &Arc<Self>) {
        if self.redis.is_none() {
            return;
        }
        let ends = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            loop {
                tick.tick().await;
                let Some(ends) = ends.upgrade() else { return };
                ends.reload().await;
            }
        });
    }
}

impl Heard for SessionEnds {
    fn heard(&self, message: &str) {
        let Some(rest) = message.strip_prefix(PREFIX) else {
            return;
        };
        if let Some(sid) = rest.strip_prefix("s:") {
            self.ended.insert(sid.into(), ());
        } else if let Some((tag, at)) = rest.strip_prefix("u:").and_then(|r| r.rsplit_once(':')) {
            if let Ok(at) = at.parse::<Millis>() {
                self.raise_floor(tag, at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::MockClock;

    fn session(user: &str, sid: Option<&str>, iat: Millis) -> SignedIn {
        SignedIn {
            user: Arc::new(UserId::parse(user).unwrap()),
            sid: sid.map(Into::into),
            iat,
        }
    }

    #[tokio::test]
    async fn a_session_ends_at_its_max_age_at_sign_out_and_everywhere() {
        let clock = MockClock::new();
        let ends = SessionEnds::new(Duration::from_secs(3600), clock.clone(), None, Changes::local());
        let now = clock.now_ms();
        let (a, b) = (
            session("alice", Some("a1"), now),
            session("alice", Some("a2"), now),
        );
        assert_eq!(ends.refuses(&a), None);
        assert_eq!(
            ends.refuses(&session("alice", None, now)),
            Some(Refusal::Expired),
            "no id: from before v3"
        );

        ends.end(&a).await;
        assert_eq!(ends.refuses(&a), Some(Refusal::SignedOut));
        assert_eq!(ends.refuses(&b), None, "only that session");

        clock.advance(Duration::from_secs(10));
        let later = session("alice", Some("a3"), clock.now_ms());
        ends.end_everywhere(&a.user, clock.now_ms()).await;
        assert_eq!(ends.refuses(&b), Some(Refusal::SignedOut), "began before: ended");
        clock.advance(Duration::from_millis(1));
        let after = session("alice", Some("a4"), clock.now_ms());
        assert_eq!(ends.refuses(&after), None, "a sign-in after it stands");
        assert_eq!(
            ends.refuses(&session("bob", Some("b1"), now)),
            None,
            "another user's stands"
        );
        let _ = later;

        clock.advance(Duration::from_secs(3600));
        assert_eq!(ends.refuses(&after), Some(Refusal::Expired), "past the max age");
    }

    #[tokio::test]
    async fn what_another_instance_announces_is_refused_here() {
        let clock = MockClock::new();
        let ends = SessionEnds::new(Duration::from_secs(3600), clock.clone(), None, Changes::local());
        let now = clock.now_ms();
        let s = session("carol", Some("c1"), now - 5);
        ends.heard("end:s:c1");
        assert_eq!(ends.refuses(&s), Some(Refusal::SignedOut));
        let t = session("dave", Some("d1"), now - 5);
        ends.heard(&format!("end:u:{}:{now}", t.user.tag().as_str()));
        assert_eq!(ends.refuses(&t), Some(Refusal::SignedOut));
        ends.heard("end:u:garbage");
        ends.heard("nonsense");
    }
}
