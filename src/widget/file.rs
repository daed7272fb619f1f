//! Reading the widgets file (SPEC §10): TOML through serde, unknown keys
//! refused, `${VAR}` expanded in header values, and every error reported
//! with the file, the line and the reason, so a bad file stops start-up
//! with a message an operator can act on.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::params::Param;
use super::path::PathTemplate;
use super::view::{pieces, Piece, View};
use super::{Registry, UpstreamConfig, Widget, WidgetId};

/// The built-in file: the mock's five widgets.
pub const BUILTIN: &str = include_str!("builtin.toml");
/// How the built-in file is named in messages.
pub const BUILTIN_NAME: &str = "<built-in widgets>";

/// A widgets file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("widgets file {file}, line {line}: {reason}")]
pub struct FileError {
    /// The file, as given.
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    upstream: UpstreamDoc,
    #[serde(default, rename = "widget")]
    widgets: Vec<Spanned<WidgetDoc>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UpstreamDoc {
    base_url: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    redirects: super::Redirects,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WidgetDoc {
    id: Spanned<String>,
    title: String,
    path: Spanned<String>,
    fresh: Option<HumanDuration>,
    ttl: Option<HumanDuration>,
    grace: Option<HumanDuration>,
    #[serde(default)]
    params: BTreeMap<Spanned<String>, ParamDoc>,
    view: Option<Spanned<View>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamDoc {
    values: Vec<ParamValue>,
    default: Spanned<ParamValue>,
    label: Option<String>,
}

/// A parameter value: written as a string or an integer (`"7"` or `7`).
#[derive(Deserialize, Clone, PartialEq)]
#[serde(untagged)]
enum ParamValue {
    Text(String),
    Int(i64),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Text(s) => f.write_str(s),
            ParamValue::Int(n) => write!(f, "{n}"),
        }
    }
}

/// `"5m"`, `"90s"`, `"1h"`: a bad one is an error at its line.
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        humantime::parse_duration(&raw)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("bad duration `{raw}`: {e} (e.g. 90s, 5m, 1h)")))
    }
}

/// Reads and checks the file at `path`; environment variables from the process.
pub fn load(path: &Path) -> Result<Registry, FileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        file: name.clone(),
        line: 0,
        reason: format!("cannot be read: {e}"),
    })?;
    parse(&name, &text, &|var| std::env::var(var).ok())
}

/// Parses a widgets file's text. `env` looks up `${VAR}`s.
pub fn parse(name: &str, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Registry, FileError> {
    let at = |span: Range<usize>, reason: String| FileError {
        file: name.to_owned(),
        line: line_of(text, span.start),
        reason,
    };
    let doc: Doc = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        FileError {
            file: name.to_owned(),
            line,
            reason: e.message().trim().to_owned(),
        }
    })?;

    let mut headers = Vec::with_capacity(doc.upstream.headers.len());
    for (header, value) in &doc.upstream.headers {
        let expanded = expand(value.get_ref(), env).map_err(|r| at(value.span(), r))?;
        if actix_web::http::header::HeaderName::try_from(header.as_str()).is_err() {
            return Err(at(value.span(), format!("`{header}` is not a valid header name")));
        }
        if actix_web::http::header::HeaderValue::try_from(expanded.as_str()).is_err() {
            return Err(at(
                value.span(),
                format!("the value of header `{header}` is not a valid header value"),
            ));
        }
        headers.push((header.clone(), expanded));
    }
    let base_url = match &doc.upstream.base_url {
        Some(url) if !(url.get_ref().starts_with("http://") || url.get_ref().starts_with("https://")) => {
            return Err(at(
                url.span(),
                format!("base_url `{}` must start with http:// or https://", url.get_ref()),
            ))
        }
        Some(url) => Some(url.get_ref().trim_end_matches('/').to_owned()),
        None => None,
    };

    if doc.widgets.is_empty() {
        return Err(at(
            0..0,
            "no [[widget]]: the file must define at least one widget".into(),
        ));
    }
    let mut widgets: Vec<Arc<Widget>> = Vec::with_capacity(doc.widgets.len());
    for (index, spanned) in doc.widgets.iter().enumerate() {
        let w = spanned.get_ref();
        let id = WidgetId::parse(w.id.get_ref()).ok_or_else(|| {
            at(
                w.id.span(),
                format!(
                    "widget id `{}` must match [a-z0-9][a-z0-9-]{{0,31}} (it is a URL and key segment)",
                    w.id.get_ref()
                ),
            )
        })?;
        if widgets.iter().any(|other| other.id == id) {
            return Err(at(w.id.span(), format!("duplicate widget id `{id}`")));
        }
        let mut params = Vec::with_capacity(w.params.len());
        for (pname, decl) in &w.params {
            params.push(param(pname, decl).map_err(|(span, r)| at(span, r))?);
        }
        let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        let path = PathTemplate::parse(w.path.get_ref(), &names).map_err(|r| at(w.path.span(), r))?;
        if let Some(view) = &w.view {
            for template in view.get_ref().templates() {
                for piece in pieces(template) {
                    if let Piece::Param(p) = piece {
                        if !names.contains(&p) {
                            return Err(at(
                                view.span(),
                                format!("`{{{p}}}` in `{template}` is not a declared parameter"),
                            ));
                        }
                    }
                }
            }
        }
        let (fresh, ttl) = (w.fresh.as_ref().map(|d| d.0), w.ttl.as_ref().map(|d| d.0));
        if let (Some(f), Some(t)) = (fresh, ttl) {
            if f > t {
                return Err(at(
                    spanned.span(),
                    format!("widget `{id}`: fresh ({f:?}) must not be longer than ttl ({t:?})"),
                ));
            }
        }
        widgets.push(Arc::new(Widget::new(
            index,
            id,
            w.title.clone(),
            path,
            params,
            w.view.as_ref().map(|v| v.get_ref().clone()),
            [fresh, ttl, w.grace.as_ref().map(|d| d.0)],
        )));
    }
    let redirects = doc.upstream.redirects;
    Ok(Registry::new(
        widgets,
        UpstreamConfig {
            base_url,
            headers,
            redirects,
        },
    ))
}

/// Checks one parameter declaration.
fn param(name: &Spanned<String>, decl: &ParamDoc) -> Result<Param, (Range<usize>, String)> {
    let n = name.get_ref();
    let valid = !n.is_empty()
        && n != "user"
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err((
            name.span(),
            format!("parameter name `{n}` must be letters, digits, `_` or `-`, and not `user`"),
        ));
    }
    if decl.values.is_empty() {
        return Err((name.span(), format!("parameter `{n}` needs at least one value")));
    }
    let values: Vec<String> = decl.values.iter().map(ToString::to_string).collect();
    let default = decl.default.get_ref().to_string();
    if !values.contains(&default) {
        return Err((
            decl.default.span(),
            format!(
                "the default `{default}` of parameter `{n}` is not one of its values ({})",
                values.join(", ")
            ),
        ));
    }
    Ok(Param {
        name: n.clone(),
        label: decl.label.clone().unwrap_or_else(|| n.clone()),
        values,
        default,
    })
}

/// Replaces every `${VAR}` with the variable's value; an unset variable is an error.
pub fn expand(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`${{` without a closing `}}` in `{raw}`"))?;
        let var = &after[..end];
        let valid = !var.is_empty()
            && !var.starts_with(|c: char| c.is_ascii_digit())
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("`${{{var}}}` is not a variable name"));
        }
        let value = env(var).ok_or_else(|| format!("environment variable `{var}` is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn err(text: &str) -> FileError {
        match parse("w.toml", text, &no_env) {
            Err(e) => e,
            Ok(_) => panic!("expected an error for:\n{text}"),
        }
    }

    const ONE: &str = "[[widget]]\nid = \"a\"\ntitle = \"A\"\npath = \"/a/{user}\"\n";

    #[test]
    fn the_builtin_file_defines_the_five_widgets() {
        let reg = parse(BUILTIN_NAME, BUILTIN, &no_env).unwrap();
        let ids: Vec<_> = reg.all().iter().map(|w| w.id.to_string()).collect();
        assert_eq!(ids, ["1", "2", "3", "4", "5"]);
        assert_eq!(reg.upstream().base_url, None);
        let analytics = reg.get("3").unwrap();
        assert_eq!(analytics.params[0].values, ["7", "14", "30"]);
    }

    #[test]
    fn the_example_file_is_a_copy_of_the_builtin_one() {
        assert_eq!(include_str!("../../widgets.example.toml"), BUILTIN);
    }

    #[test]
    fn a_minimal_file_parses() {
        let reg = parse("w.toml", ONE, &no_env).unwrap();
        assert_eq!(reg.all().len(), 1);
        assert!(reg.get("a").unwrap().view.is_none());
    }

    #[test]
    fn duplicate_ids_are_refused_at_their_line() {
        let e = err(&format!("{ONE}\n{ONE}"));
        assert_eq!(e.line, 7);
        assert!(e.reason.contains("duplicate widget id `a`"), "{e}");
        assert!(e.to_string().starts_with("widgets file w.toml, line 7: "), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_at_their_line() {
        let e = err(&format!("{ONE}colour = \"red\"\n"));
        assert_eq!(e.line, 5);
        assert!(e.reason.contains("unknown field `colour`"), "{e}");
        let e = err("[upstrem]\nbase_url = \"http://x\"\n[[widget]]\nid=\"a\"\ntitle=\"A\"\npath=\"/\"\n");
        assert_eq!(e.line, 1);
        assert!(e.reason.contains("unknown field `upstrem`"), "{e}");
    }

    #[test]
    fn bad_durations_are_refused_at_their_line() {
        let e = err(&format!("{ONE}fresh = \"5 minutes\"\nttl = \"soon\"\n"));
        assert_eq!(e.line, 6, "{e}");
        assert!(e.reason.contains("bad duration `soon`"), "{e}");
    }

    #[test]
    fn unset_variables_are_refused_at_their_line() {
        let text = format!("[upstream]\nbase_url = \"https://api.example\"\nheaders = {{ Authorization = \"Bearer ${{PERCACHE_TEST_UNSET}}\" }}\n\n{ONE}");
        let e = err(&text);
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("`PERCACHE_TEST_UNSET` is not set"), "{e}");
        let env = |v: &str| (v == "PERCACHE_TEST_UNSET").then(|| "s3cr3t".to_owned());
        let reg = parse("w.toml", &text, &env).unwrap();
        assert_eq!(
            reg.upstream().headers,
            [("Authorization".to_owned(), "Bearer s3cr3t".to_owned())]
        );
    }

    #[test]
    fn undeclared_path_parameters_are_refused_at_their_line() {
        let e = err("[[widget]]\nid = \"a\"\ntitle = \"A\"\npath = \"/a/{user}/{region}\"\n");
        assert_eq!(e.line, 4);
        assert!(e.reason.contains("`{region}`"), "{e}");
    }

    #[test]
    fn other_mistakes_are_explained() {
        let bad_id = err("[[widget]]\nid = \"Bad Id\"\ntitle = \"A\"\npath = \"/\"\n");
        assert_eq!(bad_id.line, 2);
        let bad_default = err(&format!(
            "{ONE}params = {{ d = {{ values = [1, 2], default = 3 }} }}\n"
        ));
        assert!(bad_default.reason.contains("default `3`"), "{bad_default}");
        let bad_pointer = err(&format!("{ONE}view = {{ kind = \"stat\", value = \"total\" }}\n"));
        assert!(bad_pointer.reason.contains("JSON Pointer"), "{bad_pointer}");
        let bad_kind = err(&format!("{ONE}view = {{ kind = \"pie\" }}\n"));
        assert!(bad_kind.reason.contains("pie"), "{bad_kind}");
        let nothing = err("[upstream]\n");
        assert!(nothing.reason.contains("at least one widget"), "{nothing}");
        let syntax = err("[[widget]\n");
        assert_eq!(syntax.line, 1);
    }

    #[test]
    fn expands_variables() {
        let env = |v: &str| (v == "A").then(|| "1".to_owned());
        assert_eq!(expand("x ${A} y ${A}", &env).unwrap(), "x 1 y 1");
        assert_eq!(expand("no vars", &env).unwrap(), "no vars");
        assert!(expand("${B}", &env).is_err());
        assert!(expand("${A", &env).is_err());
        assert!(expand("${1A}", &env).is_err());
    }
}
