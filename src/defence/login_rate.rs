//! Sign-ins per client address (`--login-rate`, `--trust-forwarded`).
//!
//! Every sign-in starts a prewarm, i.e. one upstream call per widget, so a
//! flood of sign-ins from one address would make the server hammer the
//! upstream. [`LoginLimiter`] allows a burst of [`BURST`] sign-ins per
//! address, then `N` per period (GCRA through the `governor` crate, one state
//! per address, kept in memory per instance). An address over its rate gets
//! 429 with `Retry-After`.
//!
//! The address is the TCP peer's, or with `--trust-forwarded` the first entry
//! of `X-Forwarded-For` (only safe behind a proxy that sets that header
//! itself). IPv6 addresses count per /64, the block one host usually holds,
//! and IPv4-mapped IPv6 addresses as their IPv4 address.

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

/// The sign-in rate limiter of one instance, shared by its workers.
pub struct LoginLimiter {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    trust_forwarded: bool,
    last_prune: Mutex<Instant>,
}

impl LoginLimiter {
    /// A limiter for `rate`; with `trust_forwarded`, the client address is
    /// read from `X-Forwarded-For`.
    pub fn new(rate: LoginRate, trust_forwarded: bool) -> Self {
        Self {
            limiter: rate.quota().map(DefaultKeyedRateLimiter::keyed),
            trust_forwarded,
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
        if self.trust_forwarded {
            if let Some(ip) = first_forwarded_for(req) {
                return Some(ip);
            }
        }
        req.peer_addr().map(|peer| peer.ip())
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

/// The first entry of the first `X-Forwarded-For` header, if it is an address.
fn first_forwarded_for(req: &HttpRequest) -> Option<IpAddr> {
    let value = req.headers().get("x-forwarded-for")?.to_str().ok()?;
    parse_address(value.split(',').next()?.trim())
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
        let trusted = LoginLimiter::new(LoginRate::Off, true);
        let untrusted = LoginLimiter::new(LoginRate::Off, false);
        assert_eq!(trusted.client_address(&req), "2001:db8::7".parse().ok());
        assert_eq!(untrusted.client_address(&req), Some(peer.ip()));
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
        let limiter = LoginLimiter::new(rate(1, 3600), false);
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
