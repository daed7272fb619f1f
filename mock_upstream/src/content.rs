//! Deterministic, per-user widget content.
//!
//! Everything here depends only on the user id and the widget id (and, for the analytics widget,
//! the number of days asked for), so the same user always sees the same data (apart from `version` and `generatedAt`, added by the handler) and different
//! users see visibly different data. Dates are anchored to a fixed day, not to "now".

use serde_json::{json, Map, Value};
use time::macros::{date, datetime, format_description};
use time::{format_description::well_known::Rfc3339, Date, Duration, OffsetDateTime};

use crate::{MAX_DAYS, MIN_DAYS};

/// The day content dates are anchored to (last day of the analytics series).
const ANCHOR_DAY: Date = date!(2025 - 06 - 30);
/// The instant content timestamps are anchored to (newest notification or activity).
const ANCHOR_AT: OffsetDateTime = datetime!(2025-06-30 17:45:00 UTC);

const PLANS: [&str; 3] = ["Free", "Pro", "Team"];
const CITIES: [&str; 8] = [
    "Lisbon",
    "Berlin",
    "Toronto",
    "Singapore",
    "Austin",
    "Nairobi",
    "Melbourne",
    "Reykjavik",
];
const PROJECTS: [&str; 8] = [
    "acme/api",
    "acme/web",
    "acme/mobile",
    "infra/terraform",
    "data/pipeline",
    "docs/handbook",
    "acme/billing",
    "tools/cli",
];
const PEOPLE: [&str; 8] = ["Ana", "Bilal", "Chen", "Dara", "Emeka", "Freya", "Goran", "Hana"];
const ACTIONS: [&str; 7] = [
    "commented",
    "pushed",
    "merged",
    "opened",
    "reviewed",
    "deployed",
    "closed",
];

/// 64-bit FNV-1a hash.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A tiny deterministic generator (SplitMix64).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        // `below` is < len, so the index is in range; `get` keeps this panic-free anyway.
        let i = self.below(items.len() as u64) as usize;
        items.get(i).copied().unwrap_or_default()
    }
}

fn user_seed(user: &str) -> u64 {
    fnv1a(user.as_bytes())
}

fn widget_rng(user: &str, widget: u8) -> Rng {
    Rng::new(user_seed(user) ^ u64::from(widget).wrapping_mul(0x2545_f491_4f6c_dd1d))
}

/// The user's plan; shared by the profile and billing widgets so they agree.
fn plan_of(user: &str) -> &'static str {
    let i = (user_seed(user) % PLANS.len() as u64) as usize;
    PLANS.get(i).copied().unwrap_or("Free")
}

/// `YYYY-MM-DD`.
pub(crate) fn fmt_day(d: Date) -> String {
    d.format(format_description!("[year]-[month]-[day]"))
        .unwrap_or_default()
}

/// RFC 3339, UTC.
pub(crate) fn fmt_rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A lowercase, dot-separated slug of the user id, for e-mail addresses.
fn slug(user: &str) -> String {
    let mut out = String::new();
    for c in user.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('.') {
            out.push('.');
        }
    }
    while out.ends_with('.') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("user");
    }
    out
}

/// The content fields of widget `widget` (1..=5) for `user`, as a JSON object.
///
/// `days` is the length of the analytics series (widget 3; clamped to `1..=MAX_DAYS`, the
/// handler validates it before this); other widgets ignore it. Unknown widgets give an empty
/// object (the handler rejects them before this).
pub(crate) fn widget_content(user: &str, widget: u8, days: u32) -> Map<String, Value> {
    let value = match widget {
        1 => profile(user),
        2 => notifications(user),
        3 => analytics(user, days),
        4 => billing(user),
        5 => activity(user),
        _ => json!({}),
    };
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn profile(user: &str) -> Value {
    let mut rng = widget_rng(user, 1);
    let member_since = date!(2016 - 01 - 01) + Duration::days(rng.below(3000) as i64);
    json!({
        "name": user,
        "email": format!("{}@example.com", slug(user)),
        "plan": plan_of(user),
        "memberSince": fmt_day(member_since),
        "location": rng.pick(&CITIES),
    })
}

fn notifications(user: &str) -> Value {
    let mut rng = widget_rng(user, 2);
    let count = rng.range(3, 5);
    let mut at = ANCHOR_AT;
    let mut items = Vec::new();
    for i in 0..count {
        at -= Duration::minutes(rng.range(5, 600) as i64);
        let title = match rng.below(5) {
            0 => format!(
                "{} commented on {}#{}",
                rng.pick(&PEOPLE),
                rng.pick(&PROJECTS),
                rng.range(10, 999)
            ),
            1 => format!(
                "Build #{} failed on {}",
                rng.range(100, 9999),
                rng.pick(&PROJECTS)
            ),
            2 => "Your weekly report is ready".to_string(),
            3 => format!("{} invited you to {}", rng.pick(&PEOPLE), rng.pick(&PROJECTS)),
            _ => format!("Invoice INV-{:04} was paid", rng.range(1000, 9999)),
        };
        items.push(json!({
            "id": format!("n-{:08x}-{}", (user_seed(user) >> 32) as u32, i + 1),
            "title": title,
            "at": fmt_rfc3339(at),
        }));
    }
    json!({ "unread": rng.below(count + 1), "items": items })
}

/// `days` daily points ending on [`ANCHOR_DAY`]; with `days` = 14 (the default) this is exactly
/// the historical 14-point series.
fn analytics(user: &str, days: u32) -> Value {
    let days = u64::from(days.clamp(MIN_DAYS, MAX_DAYS));
    let mut rng = widget_rng(user, 3);
    let base = rng.range(200, 2400);
    let trend = rng.range(0, 40) as i64 - 15;
    let mut total: u64 = 0;
    let mut series = Vec::new();
    for i in 0..days {
        let day = ANCHOR_DAY - Duration::days((days - 1 - i) as i64);
        let weekend = matches!(day.weekday(), time::Weekday::Saturday | time::Weekday::Sunday);
        let mut v = base as i64 + trend * i as i64 + rng.below(base / 4 + 1) as i64;
        if weekend {
            v = v * 3 / 5;
        }
        let v = v.max(0) as u64;
        total += v;
        series.push(json!({ "day": fmt_day(day), "value": v }));
    }
    json!({ "metric": "Page views", "total": total, "series": series })
}

fn billing(user: &str) -> Value {
    let mut rng = widget_rng(user, 4);
    let plan = plan_of(user);
    let monthly: u64 = match plan {
        "Pro" => 1900,
        "Team" => 4900 * rng.range(3, 12),
        _ => 0,
    };
    let due = date!(2025 - 07 - 01) + Duration::days(rng.below(28) as i64);
    let tag = (user_seed(user) & 0xffff) as u16;
    let mut invoices = Vec::new();
    if monthly > 0 {
        for back in 1..=3u8 {
            let month = 7 - back; // June, May, April 2025
            invoices.push(json!({
                "id": format!("INV-2025{month:02}-{tag:04X}"),
                "amountCents": monthly,
                "status": "paid",
            }));
        }
    }
    json!({
        "plan": plan,
        "amountDueCents": monthly,
        "currency": "USD",
        "dueDate": fmt_day(due),
        "invoices": invoices,
    })
}

fn activity(user: &str) -> Value {
    let mut rng = widget_rng(user, 5);
    let count = rng.range(4, 6);
    let mut at = ANCHOR_AT;
    let mut items = Vec::new();
    for _ in 0..count {
        at -= Duration::minutes(rng.range(3, 300) as i64);
        let action = rng.pick(&ACTIONS);
        let project = rng.pick(&PROJECTS);
        let target = match action {
            "pushed" => format!("{project}@main"),
            "deployed" => format!("{project} to production"),
            _ => format!("{project}#{}", rng.range(10, 999)),
        };
        items.push(json!({ "action": action, "target": target, "at": fmt_rfc3339(at) }));
    }
    json!({ "items": items })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_DAYS;

    #[test]
    fn deterministic_per_user() {
        for w in 1..=5 {
            let d = DEFAULT_DAYS;
            assert_eq!(widget_content("alice", w, d), widget_content("alice", w, d));
            assert_ne!(widget_content("alice", w, d), widget_content("bob", w, d));
        }
    }

    #[test]
    fn shapes() {
        let p = widget_content("Alice Smith", 1, DEFAULT_DAYS);
        assert_eq!(p["name"], "Alice Smith");
        assert_eq!(p["email"], "alice.smith@example.com");
        let n = widget_content("alice", 2, DEFAULT_DAYS);
        let items = n["items"].as_array().map(Vec::len).unwrap_or(0);
        assert!((3..=5).contains(&items));
        let a = widget_content("alice", 3, DEFAULT_DAYS);
        let series = a["series"].as_array().cloned().unwrap_or_default();
        assert_eq!(series.len(), 14);
        let sum: u64 = series.iter().filter_map(|p| p["value"].as_u64()).sum();
        assert_eq!(a["total"].as_u64(), Some(sum));
        assert_eq!(series[13]["day"], "2025-06-30");
        let b = widget_content("alice", 4, DEFAULT_DAYS);
        assert_eq!(b["currency"], "USD");
        let act = widget_content("alice", 5, DEFAULT_DAYS);
        let items = act["items"].as_array().map(Vec::len).unwrap_or(0);
        assert!((4..=6).contains(&items));
        assert_eq!(slug("--"), "user");
    }

    /// The `(day, value)` points of an analytics series, checking `total` is their sum.
    fn points(a: &Map<String, Value>) -> Vec<(String, u64)> {
        let series = a["series"].as_array().cloned().unwrap_or_default();
        let pts: Vec<(String, u64)> = series
            .iter()
            .map(|p| {
                let day = p["day"].as_str().unwrap_or_default().to_string();
                (day, p["value"].as_u64().unwrap_or(u64::MAX))
            })
            .collect();
        let sum: u64 = pts.iter().map(|p| p.1).sum();
        assert_eq!(a["total"].as_u64(), Some(sum));
        pts
    }

    #[test]
    fn analytics_days() {
        for days in [1, 2, 7, 14, 30, 89, 90] {
            let a = widget_content("alice", 3, days);
            assert_eq!(a, widget_content("alice", 3, days), "deterministic, days={days}");
            let pts = points(&a);
            assert_eq!(pts.len(), days as usize);
            // Consecutive days ending on the anchor day.
            for (k, (day, _)) in pts.iter().enumerate() {
                let want = ANCHOR_DAY - Duration::days((days as usize - 1 - k) as i64);
                assert_eq!(day, &fmt_day(want), "days={days}, point {k}");
            }
            assert_eq!(a["metric"], "Page views");
        }
        let a30 = points(&widget_content("alice", 3, 30));
        assert_eq!(a30[0].0, "2025-06-01");
        assert_eq!(a30[29].0, "2025-06-30");
        // Out-of-range values are clamped rather than panicking.
        assert_eq!(points(&widget_content("alice", 3, 0)).len(), 1);
        assert_eq!(points(&widget_content("alice", 3, 1000)).len(), 90);
        // Other widgets ignore `days`.
        for w in [1, 2, 4, 5] {
            assert_eq!(widget_content("alice", w, 30), widget_content("alice", w, 14));
        }
    }

    /// The default series is byte for byte what the mock always served (a pinned copy of the
    /// original 14-day algorithm).
    #[test]
    fn analytics_default_unchanged() {
        fn original(user: &str) -> Value {
            let mut rng = widget_rng(user, 3);
            let base = rng.range(200, 2400);
            let trend = rng.range(0, 40) as i64 - 15;
            let mut total: u64 = 0;
            let mut series = Vec::new();
            for i in 0..14u64 {
                let day = ANCHOR_DAY - Duration::days(13 - i as i64);
                let weekend = matches!(day.weekday(), time::Weekday::Saturday | time::Weekday::Sunday);
                let mut v = base as i64 + trend * i as i64 + rng.below(base / 4 + 1) as i64;
                if weekend {
                    v = v * 3 / 5;
                }
                let v = v.max(0) as u64;
                total += v;
                series.push(json!({ "day": fmt_day(day), "value": v }));
            }
            json!({ "metric": "Page views", "total": total, "series": series })
        }
        for user in ["alice", "bob", "carol@example.org", "Alice Smith", ""] {
            let now = Value::Object(widget_content(user, 3, DEFAULT_DAYS));
            let want = original(user);
            assert_eq!(now, want, "{user}");
            assert_eq!(
                serde_json::to_string(&now).ok(),
                serde_json::to_string(&want).ok()
            );
        }
    }
}
