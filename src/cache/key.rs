//! Cache keys: namespaced, versioned, and built from a hash of the user id.

use crate::widget::{Instance, WidgetId};

/// The namespace and schema version of every key.
pub const PREFIX: &str = "percache:v1:";

pub use crate::user::UserTag;

impl UserTag {
    /// The key of one widget instance of this user: `…}:w:<id>`, plus
    /// `:p:<hash of the canonical parameters>` for a widget with parameters.
    pub fn key(&self, instance: &Instance) -> CacheKey {
        let id = instance.id().as_str();
        let hash = instance.hash.as_deref();
        let tag = self.as_str();
        let mut s = String::with_capacity(PREFIX.len() + 8 + tag.len() + id.len() + 20);
        s.push_str(PREFIX);
        s.push_str("{u:");
        s.push_str(tag);
        s.push_str("}:w:");
        s.push_str(id);
        if let Some(hash) = hash {
            s.push_str(":p:");
            s.push_str(hash);
        }
        CacheKey(s.into_boxed_str())
    }
}

/// A full key, e.g. `percache:v1:{u:5b1c...}:w:3`. A boxed `str`, exactly
/// as long as the key: the in-process store keeps one per entry (issue 26).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(Box<str>);

impl CacheKey {
    /// A key as read back from Redis (pub/sub messages).
    pub fn from_stored(key: &str) -> Self {
        Self(key.into())
    }

    /// The user tag inside the key's `{u:…}`, if it has one.
    pub fn user_tag(&self) -> Option<&str> {
        let rest = self.0.strip_prefix(PREFIX)?.strip_prefix("{u:")?;
        rest.split_once('}').map(|(tag, _)| tag)
    }

    /// The widget id of this key.
    pub fn widget(&self) -> Option<WidgetId> {
        let (_, rest) = self.0.rsplit_once(":w:")?;
        WidgetId::parse(rest.split_once(":p:").map_or(rest, |(id, _)| id))
    }

    /// The key as stored in Redis.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::widget::Registry;

    fn instance(id: &str) -> Instance {
        Registry::builtin().get(id).unwrap().default_instance()
    }

    #[test]
    fn keys_have_the_spec_shape() {
        let key = UserTag::of("alice").key(&instance("2"));
        let s = key.as_str();
        assert!(s.starts_with("percache:v1:{u:"), "{s}");
        assert!(s.ends_with("}:w:2"), "{s}");
        assert_eq!(s.len(), "percache:v1:{u:}:w:2".len() + 32);
        let days = UserTag::of("alice").key(&instance("3"));
        assert!(days.as_str().contains("}:w:3:p:"), "{days:?}");
    }

    #[test]
    fn key_syntax_in_usernames_cannot_leak_into_keys() {
        for user in ["a}:w:1", "*", "{u:x}", "alice:w:2", "ali\u{202e}ce"] {
            let s = UserTag::of(user).key(&instance("1")).as_str().to_string();
            let tag = &s["percache:v1:{u:".len()..s.len() - "}:w:1".len()];
            assert!(tag.chars().all(|c| c.is_ascii_hexdigit()), "{s}");
        }
    }

    #[test]
    fn keys_know_their_user_and_widget() {
        let alice = UserTag::of("alice");
        let key = alice.key(&instance("4"));
        assert_eq!(key.user_tag(), Some(alice.as_str()));
        assert_ne!(key.user_tag(), Some(UserTag::of("bob").as_str()));
        assert_eq!(key.widget(), WidgetId::parse("4"));
        assert_eq!(alice.key(&instance("3")).widget(), WidgetId::parse("3"));
        let bob = UserTag::of("bob");
        assert_eq!(
            bob.key(&instance("4")).user_tag(),
            Some(bob.as_str()),
            "each key its own user"
        );
        assert_eq!(CacheKey::from_stored("junk").user_tag(), None);
    }

    #[test]
    fn distinct_users_get_distinct_keys() {
        let a = UserTag::of("Alice").key(&instance("1"));
        let b = UserTag::of("alice").key(&instance("1"));
        assert_ne!(a, b);
    }
}
