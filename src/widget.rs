//! The five dashboard widgets and their ids.

use std::fmt;

/// A widget id known to be 1 to 5. Parsing is strict: `"01"`, `"+1"`, `"1.0"`
/// and anything else that is not exactly one of the five ids is rejected, so
/// one widget has exactly one URL and one cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WidgetId(u8);

impl WidgetId {
    /// All widgets, in page order.
    pub const ALL: [WidgetId; 5] = [WidgetId(1), WidgetId(2), WidgetId(3), WidgetId(4), WidgetId(5)];

    /// Parses a path segment; `None` for anything but `1`..`5`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "1" => Some(Self(1)),
            "2" => Some(Self(2)),
            "3" => Some(Self(3)),
            "4" => Some(Self(4)),
            "5" => Some(Self(5)),
            _ => None,
        }
    }

    /// From a number, when it is 1 to 5.
    pub fn from_u8(n: u8) -> Option<Self> {
        (1..=5).contains(&n).then_some(Self(n))
    }

    /// The numeric id.
    pub fn get(self) -> u8 {
        self.0
    }

    /// Zero-based index, for per-widget tables.
    pub fn index(self) -> usize {
        usize::from(self.0 - 1)
    }

    /// The card title.
    pub fn title(self) -> &'static str {
        [
            "Profile",
            "Notifications",
            "Analytics",
            "Billing",
            "Recent activity",
        ][self.index()]
    }

    /// The id as a static string (used in metrics labels and URLs without allocating).
    pub fn as_str(self) -> &'static str {
        ["1", "2", "3", "4", "5"][self.index()]
    }
}

impl fmt::Display for WidgetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::WidgetId;

    #[test]
    fn parses_only_the_five_ids() {
        for ok in ["1", "2", "3", "4", "5"] {
            assert_eq!(WidgetId::parse(ok).map(|w| w.to_string()), Some(ok.to_string()));
        }
        for bad in [
            "0",
            "6",
            "-1",
            "01",
            "+1",
            "1.0",
            "abc",
            "",
            " 1",
            "99999999999999999999",
        ] {
            assert!(WidgetId::parse(bad).is_none(), "{bad:?} must be rejected");
        }
    }
}
