//! The Prometheus text exposition format, read once for every test that
//! looks at a `/metrics` page.

use std::collections::BTreeSet;

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// The samples of a page, comments and unparsable lines left out.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines().filter_map(sample_line).collect()
}

fn sample_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(after) => {
            let close = after.rfind('}')?;
            (labels(&after[..close]), &after[close + 1..])
        }
        None => (Vec::new(), &line[name_end..]),
    };
    // `value [timestamp]`: the value is the first word.
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name, labels, value })
}

/// `a="x",b="y"` (values may hold escaped quotes and commas).
fn labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim_start_matches(',');
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| if c == 'n' { '\n' } else { c })),
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key.trim().to_owned(), value));
        rest = after[end..].trim_start_matches(',');
    }
    out
}

/// The value of the samples of `name` whose labels include every `labels`
/// pair, summed (0 if there is none).
pub fn metric_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
        .sum()
}

/// Every series name a page exports: the sample names, and for each
/// `# TYPE` the names its kind implies (`_bucket`, `_sum`, `_count` of a
/// histogram), so a family with no sample yet still counts.
pub fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = samples(text).into_iter().map(|s| s.name).collect();
    for rest in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut parts = rest.split_whitespace();
        if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
            let suffixes: &[&str] = match kind {
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["_sum", "_count"],
                _ => &[],
            };
            names.insert(name.to_owned());
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str =
        "# TYPE req counter\nreq{widget=\"1\",outcome=\"hit\"} 3\nreq{widget=\"2\",outcome=\"hit\"} 4.5\n\
                        req{widget=\"1\",outcome=\"miss\"} 1\n# TYPE lat histogram\nentries 7 1700000000\n";

    #[test]
    fn samples_are_summed_over_the_matching_labels() {
        assert_eq!(metric_sample(PAGE, "req", &[("outcome", "hit")]), 7.5);
        assert_eq!(metric_sample(PAGE, "req", &[("widget", "1")]), 4.0);
        assert_eq!(metric_sample(PAGE, "entries", &[]), 7.0);
        assert_eq!(metric_sample(PAGE, "re", &[]), 0.0, "a prefix is not a name");
    }

    #[test]
    fn label_values_may_hold_quotes_and_commas() {
        let s = samples(r#"m{a="x\"y,z",b="2"} 1"#);
        assert_eq!(
            s[0].labels,
            vec![("a".into(), "x\"y,z".into()), ("b".into(), "2".into())]
        );
    }

    #[test]
    fn a_histogram_type_exports_its_three_series() {
        let names = exported_names(PAGE);
        for n in ["req", "entries", "lat", "lat_bucket", "lat_sum", "lat_count"] {
            assert!(names.contains(n), "{n} in {names:?}");
        }
    }
}
