//! How a widget's JSON is shown: the `view` table of the widgets file
//! (SPEC §10), as data. Rendering it is the job of `views::kinds`.
//!
//! Values are addressed with JSON Pointers (RFC 6901), checked when the file
//! is read. Captions and labels are small templates: `{/pointer}` is a value
//! of the upstream's JSON, `{name}` a parameter of the widget instance.

use serde::Deserialize;

/// A JSON Pointer into the upstream's JSON: `""` (the whole document) or
/// `/a/0/b`. Checked when the widgets file is read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Pointer(String);

impl TryFrom<String> for Pointer {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        if raw.is_empty() || raw.starts_with('/') {
            Ok(Self(raw))
        } else {
            Err(format!(
                "`{raw}` is not a JSON Pointer: it must be empty or start with `/` (e.g. `/{raw}`)"
            ))
        }
    }
}

impl Pointer {
    /// The value it points at, if any.
    pub fn get<'a>(&self, data: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        data.pointer(&self.0)
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How a value is turned into text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Strings as they are, numbers and booleans as written, arrays as a count.
    #[default]
    Text,
    /// An amount with its currency: `12.34 USD`. With `scale = 2`, an integer
    /// is in minor units (cents).
    Money,
    /// The number of elements of an array or object.
    Count,
}

/// One value and how to show it: shared by field rows, headlines and stats.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shown {
    /// Where the value is.
    pub value: Pointer,
    /// How it is written.
    #[serde(default)]
    pub format: Format,
    /// Money only: a pointer (`/currency`) or a literal code (`EUR`).
    pub currency: Option<String>,
    /// Money only: digits of minor units in an integer amount (2: cents).
    #[serde(default)]
    pub scale: u32,
    /// Text right after the value (`" unread"`).
    pub suffix: Option<String>,
    /// A quieter caption after the value; a template.
    pub caption: Option<String>,
}

/// A labelled row of a `fields` view.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// The row's label.
    pub label: String,
    /// Where the value is.
    pub value: Pointer,
    /// How it is written.
    #[serde(default)]
    pub format: Format,
    /// Money only, as in [`Shown`].
    pub currency: Option<String>,
    /// Money only, as in [`Shown`].
    #[serde(default)]
    pub scale: u32,
}

/// The view of a widget, by kind. Every kind may open with a big `headline`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum View {
    /// Label/value rows.
    Fields(FieldsView),
    /// One big value with a caption.
    Stat(Shown),
    /// Items of an array, one or two values each.
    List(ListView),
    /// A numeric series as an inline SVG line.
    Chart(ChartView),
}

/// `kind = "fields"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldsView {
    /// A big value above the rows.
    pub headline: Option<Shown>,
    /// The rows, in order.
    pub fields: Vec<Field>,
}

/// `kind = "list"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListView {
    /// A big value above the list.
    pub headline: Option<Shown>,
    /// The array.
    pub items: Pointer,
    /// Each item's main text (strong when there is a secondary one).
    pub primary: Pointer,
    /// Each item's second text.
    pub secondary: Option<Pointer>,
    /// At most this many items are shown.
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    10
}

/// `kind = "chart"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartView {
    /// A big value above the chart.
    pub headline: Option<Shown>,
    /// The array of points.
    pub series: Pointer,
    /// Within each point, where its number is; unset: the points are numbers.
    pub point: Option<Pointer>,
    /// The chart's accessible name; a template.
    pub label: Option<String>,
}

impl View {
    /// The headline, whatever the kind (a stat is all headline).
    pub fn headline(&self) -> Option<&Shown> {
        match self {
            View::Fields(v) => v.headline.as_ref(),
            View::List(v) => v.headline.as_ref(),
            View::Chart(v) => v.headline.as_ref(),
            View::Stat(s) => Some(s),
        }
    }

    /// The templates of the view (captions, labels), to check their `{name}`s.
    pub fn templates(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .headline()
            .and_then(|h| h.caption.as_deref())
            .into_iter()
            .collect();
        if let View::Chart(c) = self {
            out.extend(c.label.as_deref());
        }
        out
    }
}

/// A piece of a caption or label template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Text as written.
    Text(&'a str),
    /// `{/pointer}`: a value of the data.
    Data(&'a str),
    /// `{name}`: a parameter.
    Param(&'a str),
}

/// Splits a template into its pieces. An unclosed `{` is text.
pub fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            break;
        };
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        let inner = &rest[open + 1..close];
        out.push(if inner.starts_with('/') {
            Piece::Data(inner)
        } else {
            Piece::Param(inner)
        });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_must_be_rfc6901() {
        assert!(Pointer::try_from("/a/0".to_owned()).is_ok());
        assert!(Pointer::try_from(String::new()).is_ok());
        assert!(Pointer::try_from("name".to_owned()).is_err());
    }

    #[test]
    fn templates_split_into_text_data_and_params() {
        assert_eq!(
            pieces("{/metric}, {days} days"),
            vec![
                Piece::Data("/metric"),
                Piece::Text(", "),
                Piece::Param("days"),
                Piece::Text(" days")
            ]
        );
        assert_eq!(pieces("plain"), vec![Piece::Text("plain")]);
        assert_eq!(pieces("a {b"), vec![Piece::Text("a {b")]);
    }
}
