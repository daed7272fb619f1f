//! Sign-ins per client address (`--login-rate`, `--trusted-proxies`).
//!
//! Every sign-in starts a prewarm, i.e. one upstream call per widget, so a
//! flood of sign-ins from one address would make the server hammer the
//! upstream. [`LoginLimiter`] allows a burst of [`BURST`] sign-ins per
//! address, then `N` per period (GCRA through the `governor` crate, one state
//! per address, kept in memory per instance). An address over its rate gets
//! 429 with `Retry-After`.
//!
//! The address is the TCP peer's, or, when the peer is one of
//! `--trusted-proxies` (`--trust-forwarded`: loopback), the rightmost
//! `X-Forwarded-For` entry that is not a trusted proxy ([`TrustedProxies`]:
//! a client can write any entries to the left of it, so they never count).
//! IPv6 addresses count per /64, the block one host usually holds, and
//! IPv4-mapped IPv6 addresses as their IPv4 address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};

/// Sign-ins one address may make at once before the rate applies.
pub const BURST: NonZeroU32 = NonZeroU32::MIN.saturating_add(9);

/// How often addresses that no longer hold back anything are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The shortest interval between two sign-ins a rate may ask for.
const FASTEST: Duration = Duration::from_micros(1);

/// The value of `--login-rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRate {
    /// `0`: no limit.
    Off,
    /// `count` sign-ins per `period` (after a burst of [`BURST`]).
    PerPeriod {
        /// Sign-ins allowed per period.
        count: NonZeroU32,
        /// The period: a second, a minute or an hour.
        period: Duration,
    },
}

impl LoginRate {
    /// The governor quota: one sign-in per `period / count`, a burst of [`BURST`].
    fn quota(self) -> Option<Quota> {
        match self {
            LoginRate::Off => None,
            LoginRate::PerPeriod { count, period } => {
                let interval = (period / count.get()).max(FASTEST);
                Quota::with_period(interval).map(|q| q.allow_burst(BURST))
            }
        }
    }
}

impl std::fmt::Display for LoginRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginRate::Off => f.write_str("0"),
            LoginRate::PerPeriod { count, period } => {
                let unit = match period.as_secs() {
                    1 => "sec",
                    60 => "min",
                    _ => "hour",
                };
                write!(f, "{count}/{unit}")
            }
        }
    }
}

/// Parses `--login-rate`: `N/sec`, `N/min` or `N/hour` (also `s`, `second`,
/// `m`, `minute`, `h`), or `0` to turn the limit off.
pub fn parse_login_rate(raw: &str) -> Result<LoginRate, String> {
    let usage =
        || format!("`{raw}`: expected N/sec, N/min or N/hour (e.g. 20/min), or 0 to turn the limit off");
    let text = raw.trim();
    if text == "0" {
        return Ok(LoginRate::Off);
    }
    let (count, unit) = text.split_once('/').ok_or_else(usage)?;
    let count: u32 = count.trim().parse().map_err(|_| usage())?;
    let period = match unit.trim().to_ascii_lowercase().as_str() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(usage()),
    };
    let Some(count) = NonZeroU32::new(count) else {
        return Ok(LoginRate::Off);
    };
    if period / count.get() < FASTEST {
        return Err(format!(
            "`{raw}`: more than one sign-in per microsecond; use 0 to turn the limit off"
        ));
    }
    Ok(LoginRate::PerPeriod { count, period })
}

/// The proxies in front whose `X-Forwarded-For` is believed
/// (`--trusted-proxies`, nginx `set_real_ip_from`): the client address is
/// the rightmost entry that is not one of them, as nginx `realip` (with
/// `real_ip_recursive on`) finds it. Entries to its left are whatever the
/// client wrote, and never count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Loopback (IPv4 and IPv6): what `--trust-forwarded` means.
    pub fn loopback() -> Self {
        Self(vec![
            "127.0.0.0/8".parse().expect("a CIDR"),
            "::1/128".parse().expect("a CIDR"),
        ])
    }

    /// Whether none is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Both lists together.
    pub fn with(mut self, other: &TrustedProxies) -> Self {
        self.0.extend(other.0.iter().copied());
        self
    }

    /// The client of a request from `peer` carrying `forwarded` (the
    /// `X-Forwarded-For` values, in order): `peer` unless it is trusted;
    /// then, right to left, the first entry that is not trusted. An entry
    /// that is not an address ends the walk at the hop that added it.
    pub fn client<'a>(&self, peer: IpAddr, forwarded: impl DoubleEndedIterator<Item = &'a str>) -> IpAddr {
        let mut client = peer;
        if !self.contains(peer) {
            return client;
        }
        for entry in forwarded.rev() {
            match parse_address(entry.trim()) {
                Some(ip) => {
                    client = ip;
                    if !self.contains(ip) {
                        return ip;
                    }
                }
                None => return client,
            }
        }
        client
    }
}

/// Parses `--trusted-proxies`: comma-separated CIDRs (or bare addresses).
pub fn parse_trusted_proxies(raw: &str) -> Result<TrustedProxies, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("`{item}`: expected a CIDR such as 10.0.0.0/8 or an address"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(TrustedProxies)
}

/// Wrong admin tokens per client address (SPEC §4 `--admin-token`): 10 a
/// minute, a burst of 5, whatever `--login-rate` says. Only wrong tokens
/// count; once an address is over, every token it shows is refused (429)
/// until its budget is back, so guessing cannot go faster by mixing in the
/// right one.
pub struct WrongTokens {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses over their budget, until when (checked before any token).
    blocked: moka::sync::Cache<IpAddr, Instant>,
}

impl Default for WrongTokens {
    fn default() -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(10).expect("10 > 0"))
            .allow_burst(NonZeroU32::new(5).expect("5 > 0"));
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            blocked: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }
}

impl WrongTokens {
    /// How long `ip` must wait before showing a token again, if it must.
    pub fn wait(&self, ip: IpAddr) -> Option<Duration> {
        let until = self.blocked.get(&bucket(ip))?;
        until.checked_duration_since(Instant::now())
    }

    /// Counts a wrong token from `ip`: `Err` with the wait once it is over
    /// its budget.
    pub fn wrong(&self, ip: IpAddr) -> Result<(), Duration> {
        let key = bucket(ip);
        match self.limiter.check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                self.blocked.insert(key, Instant::now() + wait);
                Err(wait)
            }
        }
    }
}

/// The sign-in rate limiter of one instance, shared by its workers.
pub struct LoginLimiter {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    proxies: TrustedProxies,
    last_prune: Mutex<Instant>,
}

impl LoginLimiter {
    /// A limiter for `rate`; behind `proxies`, the client address is
    /// read from `X-Forwarded-For` as they wrote it.
    pub fn new(rate: LoginRate, proxies: TrustedProxies) -> Self {
        Self {
            limiter: rate.quota().map(DefaultKeyedRateLimiter::keyed),
            proxies,
            last_prune: Mutex::new(Instant::now()),
        }
    }

    /// Counts one sign-in attempt of the request's client. `Err` holds how
    /// long the client must wait before its next attempt is allowed.
    pub fn check(&self, req: &HttpRequest) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        self.prune_now_and_then(limiter);
        let key = bucket(
            self.client_address(req)
                .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        );
        limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }

    /// The client's address: with `--trust-forwarded` the first valid entry
    /// of `X-Forwarded-For`, else (or when that is missing or garbage) the peer.
    pub fn client_address(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        if self.proxies.is_empty() {
            return Some(peer);
        }
        // Every X-Forwarded-For header, in order, as one list.
        let headers: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .collect();
        let entries = headers.iter().flat_map(|h| h.split(','));
        let entries: Vec<&str> = entries.collect();
        Some(self.proxies.client(peer, entries.into_iter()))
    }

    /// Forgets addresses whose limit has fully recovered, at most once per
    /// [`PRUNE_EVERY`], so the map stays as small as the recent clients.
    fn prune_now_and_then(&self, limiter: &DefaultKeyedRateLimiter<IpAddr>) {
        let Ok(mut last) = self.last_prune.try_lock() else {
            return;
        };
        if last.elapsed() >= PRUNE_EVERY {
            *last = Instant::now();
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`, `192.0.2.1:4711` or `[2001:db8::1]:4711`.
fn parse_address(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| text.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// The key an address is counted under: IPv4 as is, IPv6 by its /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn forged_left_hand_entries_never_count() {
        let proxies = TrustedProxies::loopback();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        for forged in ["1.1.1.1", "2.2.2.2, 3.3.3.3", "junk, 4.4.4.4"] {
            let list = format!("{forged}, 203.0.113.5");
            assert_eq!(
                proxies.client(loopback, list.split(',')),
                "203.0.113.5".parse::<IpAddr>().unwrap(),
                "{list}"
            );
        }
        assert!(parse_trusted_proxies("10.0.0.0/33").is_err());
        assert!(parse_trusted_proxies("::1, 10.1.2.3").is_ok());
    }

    #[test]
    fn the_burst_is_ten_as_the_spec_says() {
        assert_eq!(BURST.get(), 10);
    }

    use super::*;
    use actix_web::test::TestRequest;

    fn rate(count: u32, secs: u64) -> LoginRate {
        LoginRate::PerPeriod {
            count: NonZeroU32::new(count).unwrap(),
            period: Duration::from_secs(secs),
        }
    }

    #[test]
    fn parses_rates_per_second_minute_and_hour() {
        assert_eq!(parse_login_rate("20/min"), Ok(rate(20, 60)));
        assert_eq!(parse_login_rate(" 5 / sec "), Ok(rate(5, 1)));
        assert_eq!(parse_login_rate("100/hour"), Ok(rate(100, 3600)));
        assert_eq!(parse_login_rate("3/h"), Ok(rate(3, 3600)));
        assert_eq!(parse_login_rate("0"), Ok(LoginRate::Off));
        assert_eq!(parse_login_rate("0/min"), Ok(LoginRate::Off));
        assert_eq!(rate(20, 60).to_string(), "20/min");
    }

    #[test]
    fn the_defaults_are_20_per_minute_and_no_forwarded_addresses() {
        use clap::Parser as _;
        let defaults = crate::config::Settings::parse_from(["percache"]);
        assert_eq!(defaults.login_rate, rate(20, 60));
        assert!(!defaults.trust_forwarded);
        let set = crate::config::Settings::parse_from(["percache", "--login-rate", "0", "--trust-forwarded"]);
        assert_eq!(set.login_rate, LoginRate::Off);
        assert!(set.trust_forwarded);
    }

    #[test]
    fn bad_rates_say_what_is_expected() {
        for bad in [
            "", "20", "20/day", "-1/min", "x/min", "20/", "/min", "1.5/sec", "20/min/x",
        ] {
            let err = parse_login_rate(bad).unwrap_err();
            assert!(err.contains("expected N/sec, N/min or N/hour"), "{bad:?}: {err}");
        }
        assert!(parse_login_rate("4000000/sec").unwrap_err().contains("0 to turn"));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(bucket(a), bucket(b));
        assert_ne!(bucket(a), bucket(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(bucket(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn forwarded_addresses_are_read_only_when_trusted() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let req = TestRequest::default()
            .peer_addr(peer)
            .insert_header(("x-forwarded-for", "[2001:db8::7]:443, 10.0.0.1"))
            .to_http_request();
        let trusted = LoginLimiter::new(LoginRate::Off, TrustedProxies::loopback());
        let untrusted = LoginLimiter::new(LoginRate::Off, TrustedProxies::default());
        assert_eq!(
            trusted.client_address(&req),
            "10.0.0.1".parse().ok(),
            "the rightmost entry that is not a trusted proxy"
        );
        let inner = LoginLimiter::new(
            LoginRate::Off,
            parse_trusted_proxies("127.0.0.0/8, 10.0.0.0/8").unwrap(),
        );
        assert_eq!(
            inner.client_address(&req),
            "2001:db8::7".parse().ok(),
            "past two trusted hops"
        );
        assert_eq!(untrusted.client_address(&req), Some(peer.ip()));
        let from_outside = TestRequest::default()
            .peer_addr("198.51.100.9:1".parse().unwrap())
            .insert_header(("x-forwarded-for", "10.0.0.1"))
            .to_http_request();
        assert_eq!(
            trusted.client_address(&from_outside),
            "198.51.100.9".parse().ok(),
            "a peer that is not a trusted proxy is the client, whatever it forwards"
        );
        let garbage = TestRequest::default()
            .peer_addr(peer)
            .insert_header(("x-forwarded-for", "<script>, 999.1.1.1"))
            .to_http_request();
        assert_eq!(
            trusted.client_address(&garbage),
            Some(peer.ip()),
            "garbage: the peer"
        );
    }

    #[test]
    fn a_burst_then_refusals_with_a_wait() {
        let limiter = LoginLimiter::new(rate(1, 3600), TrustedProxies::default());
        let req = TestRequest::default()
            .peer_addr("192.0.2.1:1".parse().unwrap())
            .to_http_request();
        for i in 0..BURST.get() {
            assert_eq!(limiter.check(&req), Ok(()), "sign-in {i} of the burst");
        }
        let wait = limiter.check(&req).unwrap_err();
        assert!(wait > Duration::from_secs(3500), "{wait:?}");
        let other = TestRequest::default()
            .peer_addr("192.0.2.2:1".parse().unwrap())
            .to_http_request();
        assert_eq!(limiter.check(&other), Ok(()), "another address has its own burst");
    }
}
