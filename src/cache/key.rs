//! Cache keys: namespaced, versioned, and built from a hash of the user id.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::widget::WidgetId;

/// The namespace and schema version of every key.
pub const PREFIX: &str = "percache:v1:";

/// The per-user part of the keys, computed once per request.
///
/// The user id is hashed, so no username can inject key syntax (`:`, `*`, `{`,
/// `}`) and every key has the same shape. The hash sits inside a Redis Cluster
/// hash tag (`{u:...}`), so all of one user's keys live in one slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserTag(String);

impl UserTag {
    /// Hashes a user id (SHA-256, first 128 bits in hex).
    pub fn of(user_id: &str) -> Self {
        let digest = Sha256::digest(user_id.as_bytes());
        let mut s = String::with_capacity(32);
        for byte in &digest[..16] {
            // Writing to a String cannot fail.
            let _ = write!(s, "{byte:02x}");
        }
        Self(s)
    }

    /// The key of one widget of this user.
    pub fn key(&self, widget: WidgetId) -> CacheKey {
        let mut s = String::with_capacity(PREFIX.len() + 4 + self.0.len() + 5);
        s.push_str(PREFIX);
        s.push_str("{u:");
        s.push_str(&self.0);
        s.push_str("}:w:");
        s.push_str(widget.as_str());
        CacheKey(s)
    }
}

/// A full key, e.g. `percache:v1:{u:5b1c...}:w:3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(String);

impl CacheKey {
    /// A key as read back from Redis (pub/sub messages).
    pub fn from_stored(key: &str) -> Self {
        Self(key.to_owned())
    }

    /// Whether this key belongs to `user`.
    pub fn belongs_to(&self, user: &UserTag) -> bool {
        self.0
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_prefix("{u:"))
            .and_then(|rest| rest.strip_prefix(user.0.as_str()))
            .is_some_and(|rest| rest.starts_with("}:w:"))
    }

    /// The widget of this key.
    pub fn widget(&self) -> Option<WidgetId> {
        self.0.rsplit_once(":w:").and_then(|(_, w)| WidgetId::parse(w))
    }

    /// The key as stored in Redis.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_spec_shape() {
        let key = UserTag::of("alice").key(WidgetId::ALL[2]);
        let s = key.as_str();
        assert!(s.starts_with("percache:v1:{u:"), "{s}");
        assert!(s.ends_with("}:w:3"), "{s}");
        assert_eq!(s.len(), "percache:v1:{u:}:w:3".len() + 32);
    }

    #[test]
    fn key_syntax_in_usernames_cannot_leak_into_keys() {
        for user in ["a}:w:1", "*", "{u:x}", "alice:w:2", "ali\u{202e}ce"] {
            let s = UserTag::of(user).key(WidgetId::ALL[0]).as_str().to_string();
            let tag = &s["percache:v1:{u:".len()..s.len() - "}:w:1".len()];
            assert!(tag.chars().all(|c| c.is_ascii_hexdigit()), "{s}");
        }
    }

    #[test]
    fn keys_know_their_user_and_widget() {
        let alice = UserTag::of("alice");
        let key = alice.key(WidgetId::ALL[3]);
        assert!(key.belongs_to(&alice));
        assert!(!key.belongs_to(&UserTag::of("bob")));
        assert_eq!(key.widget(), Some(WidgetId::ALL[3]));
        assert!(!CacheKey::from_stored("junk").belongs_to(&alice));
    }

    #[test]
    fn distinct_users_get_distinct_keys() {
        let a = UserTag::of("Alice").key(WidgetId::ALL[0]);
        let b = UserTag::of("alice").key(WidgetId::ALL[0]);
        assert_ne!(a, b);
    }
}
