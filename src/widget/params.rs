//! Widget parameters: their declarations, and the canonical form of a
//! request's parameters (sorted, validated, defaults filled in) that the
//! cache key is built from.
//!
//! Parameters are enumerations: a widget declares each one with its allowed
//! values and a default. So a request can never create an entry the file did
//! not foresee, and the instances of a widget can be listed (for invalidation).

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// One declared parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Param {
    /// The query parameter's name, and the `{name}` of the path.
    pub name: String,
    /// The label of its control on the card.
    pub label: String,
    /// The allowed values, in the file's order (the control's order).
    pub values: Vec<String>,
    /// The value when the request gives none.
    pub default: String,
}

/// Why a request's parameters were refused (a 400, with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// A name the widget does not declare.
    #[error("unknown parameter `{name}`: this widget takes {known}")]
    Unknown {
        /// The name given.
        name: String,
        /// What the widget takes, for the message.
        known: String,
    },
    /// A value outside the declared set.
    #[error("parameter `{name}` must be one of {allowed}, not `{value}`")]
    Invalid {
        /// The parameter.
        name: String,
        /// The value given.
        value: String,
        /// The allowed values, for the message.
        allowed: String,
    },
    /// The same name twice.
    #[error("parameter `{0}` is given more than once")]
    Repeated(String),
    /// The query string could not be decoded.
    #[error("the query string could not be read: {0}")]
    Malformed(String),
}

/// The canonical parameters of one widget instance: every declared
/// parameter, once, sorted by name, with its default filled in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Canonical(Vec<(String, String)>);

impl Canonical {
    /// Validates `given` against `declared` (sorted by name).
    pub fn resolve(declared: &[Param], given: &[(String, String)]) -> Result<Self, ParamError> {
        for (i, (name, _)) in given.iter().enumerate() {
            if given[..i].iter().any(|(n, _)| n == name) {
                return Err(ParamError::Repeated(name.clone()));
            }
            if !declared.iter().any(|p| &p.name == name) {
                let known = if declared.is_empty() {
                    "no parameters".to_owned()
                } else {
                    declared
                        .iter()
                        .map(|p| format!("`{}`", p.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(ParamError::Unknown {
                    name: name.clone(),
                    known,
                });
            }
        }
        let mut out = Vec::with_capacity(declared.len());
        for param in declared {
            let value = match given.iter().find(|(n, _)| n == &param.name) {
                None => param.default.clone(),
                Some((_, v)) if param.values.contains(v) => v.clone(),
                Some((_, v)) => {
                    return Err(ParamError::Invalid {
                        name: param.name.clone(),
                        value: v.clone(),
                        allowed: param.values.join(", "),
                    })
                }
            };
            out.push((param.name.clone(), value));
        }
        Ok(Self(out))
    }

    /// The defaults of every declared parameter.
    pub fn defaults(declared: &[Param]) -> Self {
        Self(
            declared
                .iter()
                .map(|p| (p.name.clone(), p.default.clone()))
                .collect(),
        )
    }

    /// Every combination of allowed values, defaults first; at most `cap`.
    pub fn all(declared: &[Param], cap: usize) -> Vec<Self> {
        let mut out = vec![Self::defaults(declared)];
        let mut combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for param in declared {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    param.values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((param.name.clone(), v.clone()));
                        c
                    })
                })
                .take(cap)
                .collect();
        }
        let defaults = out[0].clone();
        out.extend(combos.into_iter().map(Self).filter(|c| *c != defaults));
        out.truncate(cap);
        out
    }

    /// The value of one parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The pairs, sorted by name.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// A short hash of the canonical form, for the cache key; `None` when
    /// the widget has no parameters (its key stays `…:w:<id>`).
    pub fn hash(&self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let mut hasher = Sha256::new();
        for (name, value) in &self.0 {
            // Length-prefixed: no pair of values can spell another pair.
            hasher.update((name.len() as u64).to_be_bytes());
            hasher.update(name.as_bytes());
            hasher.update((value.len() as u64).to_be_bytes());
            hasher.update(value.as_bytes());
        }
        let digest = hasher.finalize();
        let mut s = String::with_capacity(16);
        for byte in &digest[..8] {
            let _ = write!(s, "{byte:02x}");
        }
        Some(s)
    }

    /// The query string of these parameters (`days=30&x=y`), percent-encoded.
    pub fn query(&self) -> String {
        serde_urlencoded::to_string(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days() -> Vec<Param> {
        vec![
            Param {
                name: "days".into(),
                label: "Days".into(),
                values: vec!["7".into(), "14".into(), "30".into()],
                default: "14".into(),
            },
            Param {
                name: "zone".into(),
                label: "zone".into(),
                values: vec!["eu".into(), "us".into()],
                default: "eu".into(),
            },
        ]
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn defaults_are_filled_in_and_order_does_not_matter() {
        let a = Canonical::resolve(&days(), &pairs(&[("zone", "us"), ("days", "30")])).unwrap();
        let b = Canonical::resolve(&days(), &pairs(&[("days", "30"), ("zone", "us")])).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.hash(), b.hash());
        let d = Canonical::resolve(&days(), &[]).unwrap();
        assert_eq!(d, Canonical::defaults(&days()));
        assert_eq!(d.get("days"), Some("14"));
        assert_ne!(d.hash(), a.hash());
    }

    #[test]
    fn bad_parameters_are_refused_with_a_message() {
        let e = Canonical::resolve(&days(), &pairs(&[("days", "31")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "parameter `days` must be one of 7, 14, 30, not `31`"
        );
        let e = Canonical::resolve(&days(), &pairs(&[("weeks", "1")])).unwrap_err();
        assert!(e.to_string().contains("unknown parameter `weeks`"), "{e}");
        let e = Canonical::resolve(&days(), &pairs(&[("days", "7"), ("days", "7")])).unwrap_err();
        assert_eq!(e, ParamError::Repeated("days".into()));
        let e = Canonical::resolve(&[], &pairs(&[("days", "7")])).unwrap_err();
        assert!(e.to_string().contains("no parameters"), "{e}");
    }

    #[test]
    fn no_parameters_no_hash() {
        assert_eq!(Canonical::resolve(&[], &[]).unwrap().hash(), None);
    }

    #[test]
    fn all_combinations_start_with_the_defaults() {
        let all = Canonical::all(&days(), 64);
        assert_eq!(all.len(), 6);
        assert_eq!(all[0], Canonical::defaults(&days()));
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), 6);
        assert_eq!(Canonical::all(&days(), 2).len(), 2);
        assert_eq!(Canonical::all(&[], 64), vec![Canonical::default()]);
    }
}
