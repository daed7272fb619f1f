//! Command-line flags and their environment twins (SPEC §4).

use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::Parser;

use std::path::PathBuf;

pub use crate::cache::settings::{
    parse_fraction, parse_widget_durations, CacheSettings, LifetimeSettings, WidgetDurations,
};
pub use crate::cache::store::stack::StoreSettings;
pub use crate::cache::store::{parse_capacity, Capacity};
pub use crate::telemetry::LogFormat;

/// Every setting of the server. `percache --help` lists them all.
#[derive(Debug, Clone, Parser)]
#[command(name = "percache", version, about = "A per-user caching dashboard server")]
pub struct Settings {
    /// Listen address (port 0: any free port, printed at start-up).
    #[arg(long, env = "PERCACHE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,

    /// Base URL of the widgets API. Unset: a mock upstream is started in-process.
    /// `MOCK_API` is read too when `UPSTREAM_URL` is unset.
    #[arg(long, env = "UPSTREAM_URL", hide_env_values = true)]
    pub upstream_url: Option<String>,

    /// A widgets file (TOML, SPEC §10): the upstream, its headers, and each
    /// widget. Unset: the built-in five widgets of the mock.
    #[arg(long, env = "PERCACHE_WIDGETS")]
    pub widgets: Option<PathBuf>,

    /// Extra PEM CA bundle trusted for an `https://` upstream, besides the
    /// system's roots.
    #[arg(long, env = "UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,

    /// How long entries are fresh, then stale, then kept for errors.
    #[command(flatten)]
    pub lifetimes: LifetimeSettings,

    /// How the cache serves, fetches and waits.
    #[command(flatten)]
    pub cache: CacheSettings,

    /// Where entries live: Redis, Redis Cluster, SQLite or memory.
    #[command(flatten)]
    pub store: StoreSettings,

    /// Hard limit on one upstream call.
    #[arg(long, env = "UPSTREAM_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,

    /// Fetch all widgets on sign-in (`--prewarm false` or `--no-prewarm` turns it off).
    #[arg(long, env = "PREWARM", default_value = "true", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub prewarm: bool,

    /// Do not fetch the widgets on sign-in.
    #[arg(long = "no-prewarm", overrides_with = "prewarm")]
    pub no_prewarm: bool,

    /// 64+ byte key (hex or base64) for the session cookie. Unset: random per process.
    #[arg(long, env = "SESSION_KEY", hide_env_values = true)]
    pub session_key: Option<String>,

    /// A session ends this long after sign-in, checked by the server on
    /// every request, whatever the cookie says.
    #[arg(long, env = "SESSION_MAX_AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub session_max_age: Duration,

    /// Behind an identity-aware proxy: the user is this header's value,
    /// taken only from --trusted-proxies (start-up fails without them); the
    /// sign-in form is off.
    #[arg(long, env = "USER_HEADER")]
    pub user_header: Option<String>,

    /// Where sign-out sends the browser (an identity proxy's own sign-out).
    #[arg(long, env = "LOGOUT_URL", default_value = "/login")]
    pub logout_url: String,

    /// Mark cookies Secure (behind TLS).
    #[arg(long, env = "SECURE_COOKIES", default_value = "false", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub secure_cookies: bool,

    /// HMAC key of the invalidation webhook. Unset: the webhook is off.
    #[arg(long, env = "INVALIDATION_SECRET", hide_env_values = true)]
    pub invalidation_secret: Option<String>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,

    /// Number of HTTP worker threads (0: one per core).
    #[arg(long, env = "PERCACHE_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Bearer token of the operator page (`/admin`) and its JSON. Unset: `/admin` is off (404).
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Sign-ins per client address: `N/sec`, `N/min` or `N/hour`, after a
    /// burst of 10; beyond it, 429 with `Retry-After`. `0` turns it off.
    #[arg(long, env = "LOGIN_RATE", default_value = "20/min",
          value_parser = crate::defence::login_rate::parse_login_rate)]
    pub login_rate: crate::defence::login_rate::LoginRate,

    /// Comma-separated CIDRs of the proxies in front: the client address is
    /// then the rightmost `X-Forwarded-For` entry that is not one of them.
    #[arg(long, env = "TRUSTED_PROXIES", value_parser = crate::defence::login_rate::parse_trusted_proxies)]
    pub trusted_proxies: Option<crate::defence::login_rate::TrustedProxies>,

    /// Kept for compatibility: the same as `--trusted-proxies 127.0.0.0/8,::1/128`.
    #[arg(long, env = "TRUST_FORWARDED", default_value = "false", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub trust_forwarded: bool,
}

impl Settings {
    /// The proxies whose `X-Forwarded-For` is believed.
    pub fn proxies(&self) -> crate::defence::login_rate::TrustedProxies {
        let given = self.trusted_proxies.clone().unwrap_or_default();
        if self.trust_forwarded {
            crate::defence::login_rate::TrustedProxies::loopback().with(&given)
        } else {
            given
        }
    }

    /// Defaults for everything, as if no flag and no environment variable were given.
    /// Tests start from this and change what they need.
    pub fn defaults() -> Self {
        Self::parse_from(["percache"])
    }

    /// The upstream URL from `--upstream-url`/`UPSTREAM_URL`, else `MOCK_API`.
    pub fn upstream_url(&self) -> Option<String> {
        self.upstream_url
            .clone()
            .or_else(|| std::env::var("MOCK_API").ok())
            .filter(|u| !u.trim().is_empty())
            .map(|u| u.trim_end_matches('/').to_string())
    }

    /// Whether sign-in prewarms the cache.
    pub fn prewarm_enabled(&self) -> bool {
        self.prewarm && !self.no_prewarm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let s = Settings::defaults();
        assert_eq!(s.bind, "127.0.0.1:8080");
        assert_eq!(s.lifetimes.fresh, Duration::from_secs(60));
        assert_eq!(s.lifetimes.ttl, Duration::from_secs(600));
        assert_eq!(s.lifetimes.grace, Duration::from_secs(86_400));
        assert_eq!(s.upstream_timeout, Duration::from_secs(20));
        assert!(s.prewarm_enabled());
        assert_eq!(s.store.memory_capacity, Capacity::Entries(100_000));
        assert_eq!(s.cache.soft_timeout, Duration::from_millis(300));
        assert!((s.cache.eager_refresh - 0.8).abs() < f64::EPSILON);
        assert!(s.store.data_dir.is_none());
    }

    #[test]
    fn prewarm_can_be_turned_off_both_ways() {
        assert!(!Settings::parse_from(["percache", "--no-prewarm"]).prewarm_enabled());
        assert!(!Settings::parse_from(["percache", "--prewarm", "false"]).prewarm_enabled());
        assert!(Settings::parse_from(["percache", "--prewarm"]).prewarm_enabled());
    }

    #[test]
    fn parses_widget_overrides() {
        let d = parse_widget_durations("3=30m, 1=2m, billing=5s").unwrap();
        let id = |s: &str| crate::widget::WidgetId::parse(s).unwrap();
        assert_eq!(d.get(&id("3")), Some(Duration::from_secs(1800)));
        assert_eq!(d.get(&id("1")), Some(Duration::from_secs(120)));
        assert_eq!(d.get(&id("billing")), Some(Duration::from_secs(5)));
        assert_eq!(d.get(&id("2")), None);
        assert!(parse_widget_durations("Bad=1m").is_err());
        assert!(parse_widget_durations("3").is_err());
        assert!(parse_widget_durations("3=soon").is_err());
    }

    #[test]
    fn capacity_is_entries_or_bytes() {
        assert_eq!(parse_capacity("5000"), Ok(Capacity::Entries(5000)));
        assert_eq!(parse_capacity("256MiB"), Ok(Capacity::Bytes(256 << 20)));
        assert_eq!(parse_capacity("2GB"), Ok(Capacity::Bytes(2_000_000_000)));
        assert_eq!(parse_capacity("64 KiB"), Ok(Capacity::Bytes(64 << 10)));
        assert!(parse_capacity("lots").is_err());
        assert!(parse_capacity("5 parsecs").is_err());
        assert!(parse_capacity("99999999999GiB").is_err());
    }

    #[test]
    fn eager_refresh_is_a_fraction() {
        assert_eq!(parse_fraction("0"), Ok(0.0));
        assert_eq!(parse_fraction("1"), Ok(1.0));
        assert!(parse_fraction("1.5").is_err());
        assert!(parse_fraction("-0.1").is_err());
        assert!(parse_fraction("soon").is_err());
    }

    #[test]
    fn durations_take_human_units() {
        let s = Settings::parse_from(["percache", "--fresh", "500ms", "--ttl", "24h"]);
        assert_eq!(s.lifetimes.fresh, Duration::from_millis(500));
        assert_eq!(s.lifetimes.ttl, Duration::from_secs(86_400));
    }
}
