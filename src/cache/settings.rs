//! The cache's own settings: a group of `percache`'s flags (flattened into
//! `config::Settings`), handed whole to the cache and nowhere else. Each
//! default is written once, in its flag; [`CacheSettings::default`] is what
//! the flags give when none is set, so tests start from the server's values.

use std::time::Duration;

use clap::{Args, FromArgMatches};

use crate::widget::WidgetId;

/// How the cache serves, fetches and waits (SPEC §4).
#[derive(Debug, Clone, Args)]
pub struct CacheSettings {
    /// The fleet fetch lock's lease: renewed while its fetch runs; if the
    /// instance holding it dies, another takes the fetch over this long after.
    #[arg(long, env = "FETCH_LEASE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub fetch_lease: Duration,

    /// After a failed fetch, the key is not fetched again for this long
    /// (a forced refresh may still try).
    #[arg(long, env = "FAILURE_BACKOFF", default_value = "5s", value_parser = humantime::parse_duration)]
    pub failure_backoff: Duration,

    /// Past ttl (within grace), the longest a widget request waits for the
    /// upstream before the old entry is served as outdated.
    #[arg(long, env = "SOFT_TIMEOUT", default_value = "300ms", value_parser = humantime::parse_duration)]
    pub soft_timeout: Duration,

    /// A read after this fraction of an entry's fresh window starts one
    /// background refresh (0 turns eager refresh off).
    #[arg(long, env = "EAGER_REFRESH", default_value_t = 0.8, value_parser = parse_fraction)]
    pub eager_refresh: f64,

    /// Live connections (`/updates` long-polls) held per user on one
    /// instance; the newest beyond is answered at once and told to wait.
    #[arg(long, env = "MAX_OPEN_PAGES_PER_USER", default_value_t = 8)]
    pub max_open_pages_per_user: usize,

    /// Fetches in flight beyond which background refreshes are skipped
    /// (stale data keeps being served; requests that must wait still fetch).
    #[arg(long, env = "MAX_BACKGROUND_FETCHES", default_value_t = 512)]
    pub max_background_fetches: usize,

    /// Prewarm fetches waiting for an upstream slot, at most (deduplicated,
    /// fair across addresses and users, behind every request); only beyond
    /// it is a prewarm skipped, and counted.
    #[arg(long, env = "PREWARM_QUEUE", default_value_t = 100_000)]
    pub prewarm_queue: usize,

    /// Upstream calls in flight per instance, at most. At the cap, a request
    /// that needs data waits for a slot (within its deadline), in turns
    /// across client addresses and users; prewarm waits in its queue; other
    /// background refreshes are skipped. Protects the upstream from the
    /// server's own users.
    #[arg(long, env = "MAX_UPSTREAM_CALLS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_upstream_calls: u32,
}

/// How long an entry is served, and how (SPEC §7): each widget's own
/// lifetimes come from these, the widgets file and the per-widget flags
/// (`CachePolicy::from_settings`).
#[derive(Debug, Clone, Args)]
pub struct LifetimeSettings {
    /// Younger entries are served with no upstream call.
    #[arg(long, env = "CACHE_FRESH", default_value = "60s", value_parser = humantime::parse_duration)]
    pub fresh: Duration,

    /// Older than fresh but younger than ttl: served at once and refreshed in the background.
    #[arg(long, env = "CACHE_TTL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub ttl: Duration,

    /// Past ttl an entry is a miss, but is still served if the upstream fails.
    #[arg(long, env = "CACHE_GRACE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub grace: Duration,

    /// Per-widget ttl overrides, e.g. `3=30m,1=2m`.
    #[arg(long, env = "WIDGET_TTLS", value_parser = parse_widget_durations)]
    pub widget_ttl: Option<WidgetDurations>,

    /// Per-widget fresh overrides, e.g. `3=5m`.
    #[arg(long, env = "WIDGET_FRESH", value_parser = parse_widget_durations)]
    pub widget_fresh: Option<WidgetDurations>,
}

impl Default for LifetimeSettings {
    /// The flags' defaults (and the environment's twins, if set).
    fn default() -> Self {
        flag_defaults()
    }
}

/// A group of flags as parsed from no flag at all: the flags' defaults,
/// and the environment's twins if set (an invalid one ends the process
/// with clap's message, as at start-up).
pub(crate) fn flag_defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("percache"));
    command
        .try_get_matches_from(["percache"])
        .and_then(|matches| T::from_arg_matches(&matches))
        .unwrap_or_else(|e| e.exit())
}

/// Per-widget duration overrides by widget id. Whether the ids exist is
/// checked against the widgets file at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WidgetDurations(pub Vec<(WidgetId, Duration)>);

impl WidgetDurations {
    /// The override of one widget, if any (the last one given wins).
    pub fn get(&self, id: &WidgetId) -> Option<Duration> {
        override_of(&self.0, id)
    }
}

/// The duration `overrides` give `id`, if any (the last one given wins).
pub(crate) fn override_of(overrides: &[(WidgetId, Duration)], id: &WidgetId) -> Option<Duration> {
    overrides.iter().rev().find(|(w, _)| w == id).map(|(_, d)| *d)
}

/// Parses `3=30m,1=2m` (`billing=5m` for a widget of the file).
pub fn parse_widget_durations(raw: &str) -> Result<WidgetDurations, String> {
    let mut out = WidgetDurations::default();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, dur) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}`: expected <widget>=<duration>, e.g. 3=30m"))?;
        let widget = WidgetId::parse(id.trim())
            .ok_or_else(|| format!("`{id}`: not a widget id ([a-z0-9][a-z0-9-]{{0,31}})"))?;
        let dur = humantime::parse_duration(dur.trim()).map_err(|e| format!("`{dur}`: {e}"))?;
        out.0.push((widget, dur));
    }
    Ok(out)
}

impl Default for CacheSettings {
    /// The flags' defaults (and the environment's twins, if set).
    fn default() -> Self {
        flag_defaults()
    }
}

impl CacheSettings {
    /// The shortest lease the cache takes: renewing a shorter one would
    /// cost more store round trips than the call it guards.
    pub(crate) fn lease(&self) -> Duration {
        self.fetch_lease.max(Duration::from_millis(30))
    }
}

/// How long a request waits for a fetch: the upstream's own timeout
/// (`--upstream-timeout`) plus a margin.
pub(crate) fn wait_deadline(upstream_timeout: Duration) -> Duration {
    upstream_timeout + Duration::from_secs(1)
}

/// A fraction in [0, 1].
pub fn parse_fraction(raw: &str) -> Result<f64, String> {
    let f: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("`{raw}`: expected a number from 0 to 1, e.g. 0.8"))?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("`{raw}`: expected a number from 0 to 1, e.g. 0.8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_flags() {
        let s = CacheSettings::default();
        assert_eq!(s.fetch_lease, Duration::from_secs(5));
        assert_eq!(s.failure_backoff, Duration::from_secs(5));
        assert_eq!(s.soft_timeout, Duration::from_millis(300));
        assert!((s.eager_refresh - 0.8).abs() < f64::EPSILON);
        assert_eq!(s.max_open_pages_per_user, 8);
        assert_eq!(s.max_background_fetches, 512);
        assert_eq!(s.prewarm_queue, 100_000);
        assert_eq!(s.max_upstream_calls, 256);
    }

    #[test]
    fn a_tiny_lease_is_raised() {
        let s = CacheSettings {
            fetch_lease: Duration::from_millis(1),
            ..CacheSettings::default()
        };
        assert_eq!(s.lease(), Duration::from_millis(30));
    }
}
