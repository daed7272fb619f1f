//! The upstream path of a widget: `/v2/users/{user}/billing?days={days}`.
//!
//! `{user}` is the percent-encoded user id, `{name}` a declared parameter.
//! Declared parameters that the path does not name are appended to the query
//! string, so every parameter reaches the upstream.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::params::Canonical;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Text(String),
    User,
    Param(String),
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathTemplate {
    segments: Vec<Segment>,
}

impl PathTemplate {
    /// Parses a template; `declared` are the widget's parameter names.
    /// Errors: no leading `/`, an unclosed `{`, a `{name}` not declared.
    pub fn parse(raw: &str, declared: &[&str]) -> Result<Self, String> {
        if !raw.starts_with('/') {
            return Err(format!("path `{raw}` must start with `/`"));
        }
        let mut segments = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                segments.push(Segment::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| format!("path `{raw}`: `{{` is not closed"))?;
            let name = &rest[open + 1..close];
            segments.push(match name {
                "user" => Segment::User,
                n if declared.contains(&n) => Segment::Param(n.to_owned()),
                n => {
                    return Err(format!(
                        "path `{raw}` uses `{{{n}}}`, which is not a declared parameter \
                         (declare it in `params`, or use `{{user}}`)"
                    ))
                }
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Self { segments })
    }

    /// The path and query for one user and one set of parameters.
    pub fn render(&self, user: &str, params: &Canonical) -> String {
        let mut out = String::with_capacity(64);
        for segment in &self.segments {
            match segment {
                Segment::Text(t) => out.push_str(t),
                Segment::User => out.extend(utf8_percent_encode(user, NON_ALPHANUMERIC)),
                Segment::Param(name) => out.extend(utf8_percent_encode(
                    params.get(name).unwrap_or(""),
                    NON_ALPHANUMERIC,
                )),
            }
        }
        for (name, value) in params.pairs() {
            let named = self
                .segments
                .iter()
                .any(|s| matches!(s, Segment::Param(n) if n == name));
            if !named {
                out.push(if out.contains('?') { '&' } else { '?' });
                out.extend(utf8_percent_encode(name, NON_ALPHANUMERIC));
                out.push('=');
                out.extend(utf8_percent_encode(value, NON_ALPHANUMERIC));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::widget::params::Param;

    fn days(default: &str) -> Vec<Param> {
        vec![Param {
            name: "days".into(),
            label: "days".into(),
            values: vec!["7".into(), "14".into()],
            default: default.into(),
        }]
    }

    #[test]
    fn renders_user_and_parameters_encoded() {
        let t = PathTemplate::parse("/u/{user}/stats?days={days}", &["days"]).unwrap();
        let p = Canonical::defaults(&days("14"));
        assert_eq!(t.render("a/b c", &p), "/u/a%2Fb%20c/stats?days=14");
    }

    #[test]
    fn unnamed_parameters_go_to_the_query() {
        let t = PathTemplate::parse("/u/{user}", &["days"]).unwrap();
        assert_eq!(t.render("al", &Canonical::defaults(&days("7"))), "/u/al?days=7");
        let t = PathTemplate::parse("/u?id={user}", &["days"]).unwrap();
        assert_eq!(
            t.render("al", &Canonical::defaults(&days("7"))),
            "/u?id=al&days=7"
        );
    }

    #[test]
    fn refuses_bad_templates() {
        assert!(PathTemplate::parse("u/{user}", &[]).is_err());
        assert!(PathTemplate::parse("/u/{user", &[]).is_err());
        let e = PathTemplate::parse("/u/{user}/{region}", &["days"]).unwrap_err();
        assert!(e.contains("`{region}`"), "{e}");
    }
}
