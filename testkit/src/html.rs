//! Attribute values read out of server-rendered markup, for tests that
//! check a page without a browser.

/// Every value of `name="..."` in `markup`, in order.
pub fn attr_values(markup: &str, name: &str) -> Vec<String> {
    let opening = format!("{name}=\"");
    let values = markup.split(opening.as_str()).skip(1);
    values
        .map(|rest| rest.split('"').next().unwrap_or_default().to_owned())
        .collect()
}

/// The first value of `name="..."`, parsed; fails the test if there is none
/// or it does not parse.
pub fn attr<T: std::str::FromStr>(markup: &str, name: &str) -> T {
    let values = attr_values(markup, name);
    let first = values
        .first()
        .unwrap_or_else(|| panic!("no {name}=\"...\" in {markup}"));
    first
        .parse()
        .unwrap_or_else(|_| panic!("{name}=\"{first}\" does not parse"))
}
