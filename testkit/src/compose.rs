//! A `compose.yaml` read as YAML (serde_norway), with the forms compose
//! allows for lists and environments taken into account.

pub use serde_norway::{Mapping, Value};

/// The `services:` mapping of a compose file's text; fails the test if there is none.
pub fn services(yaml: &str) -> Mapping {
    let doc: Value = serde_norway::from_str(yaml).expect("compose.yaml is not YAML");
    let services = doc
        .get("services")
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default();
    assert!(!services.is_empty(), "compose.yaml has no `services:` mapping");
    services
}

/// A scalar as text (empty for null); fails the test on a list or mapping.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("compose.yaml: expected a scalar, got {other:?}"),
    }
}

/// A sequence, or a string split at whitespace (as compose does for `command:`);
/// the keys of a mapping (`depends_on:` takes both).
pub fn list(v: &Value, key: &str) -> Vec<String> {
    match v.get(key) {
        Some(Value::Sequence(items)) => items.iter().map(text).collect(),
        Some(Value::Mapping(m)) => m.keys().map(text).collect(),
        Some(other) => text(other).split_whitespace().map(str::to_string).collect(),
        None => Vec::new(),
    }
}

/// `environment:` as a mapping or as a list of `KEY=value`.
pub fn environment(svc: &Value) -> Vec<(String, String)> {
    if let Some(Value::Mapping(m)) = svc.get("environment") {
        return m.iter().map(|(k, v)| (text(k), text(v))).collect();
    }
    let split = |kv: &String| {
        kv.split_once('=')
            .map_or((kv.clone(), String::new()), |(k, v)| (k.into(), v.into()))
    };
    list(svc, "environment").iter().map(split).collect()
}

/// One variable of `environment:`.
pub fn env_value(svc: &Value, key: &str) -> Option<String> {
    environment(svc)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The value of `flag` in a service's `command:` (`--flag value` or
/// `--flag=value`), else of the `env` variable in its `environment:`.
pub fn flag_or_env(svc: &Value, flag: &str, env: &str) -> Option<String> {
    let command = list(svc, "command");
    let spaced = command
        .iter()
        .position(|w| w == flag)
        .and_then(|i| command.get(i + 1).cloned());
    let joined = || {
        command
            .iter()
            .find_map(|w| Some(w.strip_prefix(&format!("{flag}="))?.to_string()))
    };
    spaced.or_else(joined).or_else(|| env_value(svc, env))
}
