//! The signed-in user's id: validated once, hashed once.

use std::fmt;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// A user's hashed id: the per-user part of every cache key, computed once
/// per request.
///
/// The user id is hashed, so no username can inject key syntax (`:`, `*`, `{`,
/// `}`) and every key has the same shape. The cache puts it inside a Redis
/// Cluster hash tag (`{u:...}`), so all of one user's keys live in one slot.
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

    /// The tag as text (hex).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest username accepted, in characters, after trimming.
pub const MAX_USERNAME_CHARS: usize = 64;

/// A valid username and its cache tag.
///
/// Usernames are kept exactly as typed (after trimming surrounding
/// whitespace): `Alice` and `alice` are two users with two sets of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId {
    name: String,
    tag: UserTag,
}

/// Why a username was refused; the message is shown on the sign-in form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Nothing but whitespace.
    #[error("Please enter a username.")]
    Empty,
    /// More than 64 characters.
    #[error("A username has at most 64 characters.")]
    TooLong,
    /// Control characters (newlines, NUL, escapes...).
    #[error("A username cannot contain control characters.")]
    ControlCharacter,
    /// `.` or `..`: in a URL path segment they mean "here" and "up", and
    /// proxies that normalise paths (RFC 3986) would fetch another path.
    #[error("A username cannot be \".\" or \"..\".")]
    DotSegment,
}

impl UserId {
    /// Validates a raw username: 1 to 64 characters after trimming, no control characters.
    pub fn parse(raw: &str) -> Result<Self, UsernameError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(UsernameError::Empty);
        }
        if name.chars().count() > MAX_USERNAME_CHARS {
            return Err(UsernameError::TooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(UsernameError::ControlCharacter);
        }
        if name == "." || name == ".." {
            return Err(UsernameError::DotSegment);
        }
        Ok(Self {
            name: name.to_owned(),
            tag: UserTag::of(name),
        })
    }

    /// The username.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The hashed tag all of this user's cache keys are built from.
    pub fn tag(&self) -> &UserTag {
        &self.tag
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_trims_usernames() {
        assert_eq!(UserId::parse("  alice ").unwrap().as_str(), "alice");
        assert_eq!(UserId::parse("<script>").unwrap().as_str(), "<script>");
        assert_eq!(UserId::parse("😀 émile").unwrap().as_str(), "😀 émile");
        assert!(UserId::parse(&"é".repeat(64)).is_ok());
    }

    #[test]
    fn refuses_bad_usernames() {
        assert_eq!(UserId::parse(""), Err(UsernameError::Empty));
        assert_eq!(UserId::parse(" \t "), Err(UsernameError::Empty));
        assert_eq!(UserId::parse(&"a".repeat(65)), Err(UsernameError::TooLong));
        assert_eq!(UserId::parse("a\u{0}b"), Err(UsernameError::ControlCharacter));
        assert_eq!(UserId::parse("a\nb"), Err(UsernameError::ControlCharacter));
        assert_eq!(UserId::parse("a\u{1b}b"), Err(UsernameError::ControlCharacter));
        assert_eq!(UserId::parse("."), Err(UsernameError::DotSegment));
        assert_eq!(UserId::parse(" .. "), Err(UsernameError::DotSegment));
        assert!(UserId::parse("...").is_ok(), "not a dot segment");
        assert!(UserId::parse(".alice").is_ok());
    }
}
