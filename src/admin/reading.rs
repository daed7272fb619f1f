//! The process's counters as the operator page needs them, read from the
//! text of the Prometheus recorder (the same text `/metrics` serves).
//!
//! Only the series the page shows are kept: cache requests by widget and
//! outcome, upstream calls by widget and status, upstream latency buckets by
//! widget, store errors and skipped background fetches. Every
//! count is cumulative since the process started; the page shows
//! differences between two readings.

use std::collections::BTreeMap;

/// Cumulative bucket counts of one histogram, `(upper bound, count)` sorted
/// by bound, the last one `+Inf` (the total).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets(pub Vec<(f64, u64)>);

impl Buckets {
    /// Adds `count` to the bucket bounded by `le` (created if new).
    pub fn add(&mut self, le: f64, count: u64) {
        match self.0.iter_mut().find(|(bound, _)| *bound == le) {
            Some((_, c)) => *c += count,
            None => {
                let at = self.0.partition_point(|(bound, _)| *bound < le);
                self.0.insert(at, (le, count));
            }
        }
    }

    /// Adds every bucket of `other` (histograms of several widgets).
    pub fn merge(&mut self, other: &Buckets) {
        for &(le, count) in &other.0 {
            self.add(le, count);
        }
    }

    /// What was recorded after `earlier` (a reading of the same histogram).
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        let before = |le: f64| {
            earlier
                .0
                .iter()
                .find(|(bound, _)| *bound == le)
                .map_or(0, |(_, c)| *c)
        };
        Buckets(
            self.0
                .iter()
                .map(|&(le, count)| (le, count.saturating_sub(before(le))))
                .collect(),
        )
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.0.last().map_or(0, |(_, c)| *c)
    }

    /// The `q` quantile (0 to 1), interpolated within its bucket as
    /// Prometheus' `histogram_quantile` does; `None` without observations.
    /// Past the last finite bound: that bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let (mut lower, mut below) = (0.0, 0u64);
        for &(le, count) in &self.0 {
            if count as f64 >= rank && count > 0 {
                if le.is_infinite() {
                    return Some(lower);
                }
                let inside = count.saturating_sub(below);
                if inside == 0 {
                    return Some(le);
                }
                return Some(lower + (le - lower) * (rank - below as f64) / inside as f64);
            }
            if le.is_finite() {
                lower = le;
            }
            below = count;
        }
        Some(lower)
    }
}

/// The counters of one reading. Keys are label values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// `percache_cache_requests_total` by (widget, outcome).
    pub requests: BTreeMap<(String, String), u64>,
    /// `percache_upstream_requests_total` by (widget, status).
    pub upstream: BTreeMap<(String, String), u64>,
    /// `percache_upstream_duration_seconds` buckets by widget.
    pub latency: BTreeMap<String, Buckets>,
    /// `percache_store_errors_total`.
    pub store_errors: u64,
    /// `percache_refresh_total{outcome="skipped"}`.
    pub refresh_skipped: u64,
}

impl Reading {
    /// The application's counters now.
    pub fn now(metrics: &crate::telemetry::Metrics) -> Self {
        Self::parse(&metrics.render())
    }

    /// Reads a page of the Prometheus text format. Lines it does not
    /// understand are skipped: this is the server's own output.
    pub fn parse(text: &str) -> Self {
        let mut reading = Self::default();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, labels, value)) = sample_line(line) else {
                continue;
            };
            let label = |key: &str| {
                labels
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            match name {
                "percache_cache_requests_total" => {
                    *reading
                        .requests
                        .entry((label("widget"), label("outcome")))
                        .or_default() += count(value);
                }
                "percache_upstream_requests_total" => {
                    *reading
                        .upstream
                        .entry((label("widget"), label("status")))
                        .or_default() += count(value);
                }
                "percache_upstream_duration_seconds_bucket" => {
                    let Ok(le) = label("le").parse::<f64>() else {
                        continue;
                    };
                    reading
                        .latency
                        .entry(label("widget"))
                        .or_default()
                        .add(le, count(value));
                }
                "percache_store_errors_total" => reading.store_errors += count(value),
                "percache_refresh_total" if label("outcome") == "skipped" => {
                    reading.refresh_skipped += count(value);
                }
                _ => {}
            }
        }
        reading
    }
}

/// A counter's value as a count (negative or NaN: 0).
fn count(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        value.round() as u64
    } else {
        0
    }
}

/// Label pairs of one sample, in order.
type Labels = Vec<(String, String)>;

/// `name{k="v",...} value` or `name value` → (name, labels, value).
fn sample_line(line: &str) -> Option<(&str, Labels, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let (labels, rest) = if line[name_end..].starts_with('{') {
        let (labels, used) = label_set(&line[name_end + 1..])?;
        (labels, &line[name_end + 1 + used..])
    } else {
        (Vec::new(), &line[name_end..])
    };
    // The value, then possibly a timestamp.
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some((name, labels, value))
}

/// Parses `k="v",k2="v2"}` (after the `{`); returns the pairs and the
/// number of bytes used, the closing brace included.
fn label_set(s: &str) -> Option<(Labels, usize)> {
    let mut labels = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        // A label name, or the end.
        let start = match chars.peek()? {
            (i, '}') => return Some((labels, i + 1)),
            (_, ',') | (_, ' ') => {
                chars.next();
                continue;
            }
            (i, _) => *i,
        };
        let eq = loop {
            match chars.next()? {
                (i, '=') => break i,
                _ => continue,
            }
        };
        let key = s[start..eq].trim().to_owned();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()?.1 {
                '"' => break,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        }
        labels.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP percache_cache_requests_total Widget requests.
# TYPE percache_cache_requests_total counter
percache_cache_requests_total{widget="1",outcome="hit"} 7
percache_cache_requests_total{widget="1",outcome="miss"} 3
percache_cache_requests_total{outcome="stale",widget="2"} 2

# TYPE percache_upstream_requests_total counter
percache_upstream_requests_total{widget="1",status="200"} 3
percache_upstream_requests_total{widget="1",status="503"} 1
# TYPE percache_store_errors_total counter
percache_store_errors_total 4
percache_refresh_total{outcome="ok"} 9
percache_refresh_total{outcome="skipped"} 2
percache_upstream_duration_seconds_bucket{widget="1",le="0.1"} 1
percache_upstream_duration_seconds_bucket{widget="1",le="1"} 3
percache_upstream_duration_seconds_bucket{widget="1",le="+Inf"} 4
percache_upstream_duration_seconds_sum{widget="1"} 2.5
percache_upstream_duration_seconds_count{widget="1"} 4
percache_http_request_duration_seconds_count{route="/a \"b\"",status="200"} 1
"#;

    #[test]
    fn reads_the_series_the_page_shows() {
        let r = Reading::parse(TEXT);
        let key = |w: &str, o: &str| (w.to_owned(), o.to_owned());
        assert_eq!(r.requests.get(&key("1", "hit")), Some(&7));
        assert_eq!(r.requests.get(&key("1", "miss")), Some(&3));
        assert_eq!(r.requests.get(&key("2", "stale")), Some(&2));
        assert_eq!(r.upstream.get(&key("1", "503")), Some(&1));
        assert_eq!(r.store_errors, 4);
        assert_eq!(r.refresh_skipped, 2);
        assert_eq!(
            r.latency.get("1"),
            Some(&Buckets(vec![(0.1, 1), (1.0, 3), (f64::INFINITY, 4)]))
        );
    }

    #[test]
    fn labels_with_escapes_and_garbage_do_not_break_the_reading() {
        let parsed = sample_line(r#"m{a="x\"y\\z",b="q"} 2"#).unwrap();
        assert_eq!(
            parsed.1,
            vec![("a".into(), "x\"y\\z".into()), ("b".into(), "q".into())]
        );
        assert_eq!(parsed.2, 2.0);
        assert!(sample_line(r#"m{a="unterminated 2"#).is_none());
        assert_eq!(Reading::parse("garbage\n{}\n m{ 1\n"), Reading::default());
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        // 10 observations: 4 up to 0.1 s, 6 more up to 1 s.
        let b = Buckets(vec![(0.1, 4), (1.0, 10), (f64::INFINITY, 10)]);
        assert_eq!(b.quantile(0.2), Some(0.05));
        assert!((b.quantile(0.5).unwrap() - 0.25).abs() < 1e-9);
        assert_eq!(b.quantile(1.0), Some(1.0));
        // Beyond the last finite bound: that bound.
        let slow = Buckets(vec![(0.1, 0), (1.0, 0), (f64::INFINITY, 3)]);
        assert_eq!(slow.quantile(0.5), Some(1.0));
        assert_eq!(Buckets::default().quantile(0.5), None);
    }

    #[test]
    fn differences_and_merges_of_buckets() {
        let before = Buckets(vec![(0.1, 1), (f64::INFINITY, 2)]);
        let after = Buckets(vec![(0.1, 3), (f64::INFINITY, 5)]);
        assert_eq!(after.since(&before), Buckets(vec![(0.1, 2), (f64::INFINITY, 3)]));
        let mut sum = before.clone();
        sum.merge(&after);
        assert_eq!(sum, Buckets(vec![(0.1, 4), (f64::INFINITY, 7)]));
        assert_eq!(sum.count(), 7);
    }
}
