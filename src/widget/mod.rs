//! The widgets a server knows: the registry read from the widgets file
//! (SPEC §10), or the built-in one that defines the mock's five widgets.
//!
//! Every layer works from the registry: routes resolve an id and the query's
//! parameters to an [`Instance`], the cache keys it, the upstream client
//! builds its URL from it, and the views render it by its `view`.

pub mod file;
pub mod params;
pub mod path;
pub mod view;

use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use self::params::{Canonical, Param, ParamError};
use self::path::PathTemplate;
use self::view::View;

/// A widget id: `[a-z0-9][a-z0-9-]{0,31}`, the URL and cache-key segment.
///
/// Parsing is strict, so one widget has exactly one URL and one key; whether
/// the id exists is the registry's to say.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WidgetId(Arc<str>);

impl WidgetId {
    /// Checks the syntax of an id.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut chars = raw.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        (first_ok && rest_ok && raw.len() <= 32).then(|| Self(Arc::from(raw)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a metric label value (shared, no copy per call).
    pub fn label(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }
}

/// In JSON a numeric id is a number (`"id":3`, as the built-in widgets
/// always had), any other a string (`"id":"billing"`).
impl serde::Serialize for WidgetId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.parse::<u64>() {
            Ok(n) if n.to_string() == *self.0 => s.serialize_u64(n),
            _ => s.serialize_str(&self.0),
        }
    }
}

impl fmt::Display for WidgetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One widget of the file.
#[derive(Debug)]
pub struct Widget {
    /// Position in the file: page order, and the index of per-widget tables.
    pub index: usize,
    /// The id.
    pub id: WidgetId,
    /// The card's title.
    pub title: String,
    /// Where its data is, relative to the upstream's base URL.
    pub path: PathTemplate,
    /// Declared parameters, sorted by name.
    pub params: Vec<Param>,
    /// How it is shown; `None`: its top-level fields, generically.
    pub view: Option<View>,
    /// Overrides of `--fresh`, `--ttl`, `--grace`.
    pub fresh: Option<Duration>,
    /// See `fresh`.
    pub ttl: Option<Duration>,
    /// See `fresh`.
    pub grace: Option<Duration>,
    /// A hash of what decides the data and its rendering (path, parameters,
    /// view): an entry stored under another fingerprint is a miss.
    pub fingerprint: u64,
    /// Shared by every default instance (no copy per request).
    defaults: Arc<Canonical>,
    default_hash: Option<Arc<str>>,
}

impl Widget {
    /// A widget; `lifetimes` are fresh, ttl and grace overrides.
    pub fn new(
        index: usize,
        id: WidgetId,
        title: String,
        path: PathTemplate,
        mut params: Vec<Param>,
        view: Option<View>,
        lifetimes: [Option<Duration>; 3],
    ) -> Self {
        params.sort_by(|a, b| a.name.cmp(&b.name));
        let fingerprint = {
            let described = format!("{path:?}|{params:?}|{view:?}");
            let digest = Sha256::digest(described.as_bytes());
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&digest[..8]);
            u64::from_be_bytes(bytes)
        };
        let defaults = Arc::new(Canonical::defaults(&params));
        let default_hash = defaults.hash().map(Arc::from);
        let [fresh, ttl, grace] = lifetimes;
        Self {
            index,
            id,
            title,
            path,
            params,
            view,
            fresh,
            ttl,
            grace,
            fingerprint,
            defaults,
            default_hash,
        }
    }

    /// The instance with every parameter at its default (the dashboard's).
    pub fn default_instance(self: &Arc<Self>) -> Instance {
        Instance::new(
            Arc::clone(self),
            Arc::clone(&self.defaults),
            self.default_hash.clone(),
        )
    }

    /// The instance for a request's query parameters; refused when one is
    /// undeclared, repeated or outside its values.
    pub fn instance(self: &Arc<Self>, given: &[(String, String)]) -> Result<Instance, ParamError> {
        if given.is_empty() {
            return Ok(self.default_instance());
        }
        let params = Canonical::resolve(&self.params, given)?;
        let hash = params.hash().map(Arc::from);
        Ok(Instance::new(Arc::clone(self), Arc::new(params), hash))
    }

    /// Every instance (every combination of parameter values), at most `cap`.
    pub fn instances(self: &Arc<Self>, cap: usize) -> Vec<Instance> {
        Canonical::all(&self.params, cap)
            .into_iter()
            .map(|params| {
                let hash = params.hash().map(Arc::from);
                Instance::new(Arc::clone(self), Arc::new(params), hash)
            })
            .collect()
    }
}

/// A widget with canonical parameters: what one cache entry holds.
///
/// One shared allocation, so that a copy (each request's lookup has one)
/// is a single reference count, not one per part: the count of a widget's
/// default instance is touched by every worker, and each touch of a count
/// that another core just wrote costs a transfer of its cache line.
#[derive(Debug, Clone)]
pub struct Instance(Arc<InstanceParts>);

/// What an [`Instance`] is made of (its fields, through `Deref`).
#[derive(Debug)]
pub struct InstanceParts {
    /// The widget.
    pub widget: Arc<Widget>,
    /// Its canonical parameters.
    pub params: Arc<Canonical>,
    /// The parameters' hash in the cache key; `None` without parameters.
    pub hash: Option<Arc<str>>,
}

impl std::ops::Deref for Instance {
    type Target = InstanceParts;

    fn deref(&self) -> &InstanceParts {
        &self.0
    }
}

impl Instance {
    /// The instance of `widget` with `params`.
    pub fn new(widget: Arc<Widget>, params: Arc<Canonical>, hash: Option<Arc<str>>) -> Self {
        Self(Arc::new(InstanceParts { widget, params, hash }))
    }

    /// The same instance in an allocation of its own (with a count of its own).
    fn copy(&self) -> Self {
        Self::new(
            Arc::clone(&self.widget),
            Arc::clone(&self.params),
            self.hash.clone(),
        )
    }

    /// The widget's id.
    pub fn id(&self) -> &WidgetId {
        &self.widget.id
    }

    /// Whether the parameters are all at their defaults.
    pub fn is_default(&self) -> bool {
        self.params == self.widget.defaults
    }

    /// The card's URL (`/widgets/3?days=30`); `suffix` goes after the id (`/refresh`).
    pub fn url(&self, suffix: &str) -> String {
        let mut url = format!("/widgets/{}{suffix}", self.widget.id);
        if !self.is_default() {
            url.push('?');
            url.push_str(&self.params.query());
        }
        url
    }
}

/// Where the widgets' data comes from: the `[upstream]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// The base URL; `--upstream-url` overrides it.
    pub base_url: Option<String>,
    /// Headers sent with every call, `${VAR}`s expanded.
    pub headers: Vec<(String, String)>,
    /// Whether upstream redirects are followed (`[upstream] redirects`).
    pub redirects: Redirects,
}

/// What a 3xx from the upstream (other than 304) means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Redirects {
    /// An upstream error: never followed.
    #[default]
    None,
    /// Followed (a few hops) only to the same origin; the file's headers
    /// are never sent to another one.
    SameOrigin,
}

/// The widgets of one server, in page order.
#[derive(Debug)]
pub struct Registry {
    /// This registry among all (the key of each thread's default instances).
    id: u64,
    widgets: Vec<Arc<Widget>>,
    /// Each widget's default instance, made once (the dashboard's, and most
    /// requests'), in the same order; each thread copies them once
    /// ([`Registry::defaults`]).
    defaults: Vec<Instance>,
    upstream: UpstreamConfig,
}

/// Registries made so far: each gets its own id.
static NEXT_REGISTRY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
/// Registries whose default instances a thread keeps (tests make many).
const REGISTRIES_PER_THREAD: usize = 8;

thread_local! {
    /// This thread's copies of the default instances, by registry id.
    static DEFAULTS_HERE: std::cell::RefCell<Vec<(u64, Rc<[Instance]>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Registry {
    /// A registry of these widgets (ids unique, indexes in order).
    pub fn new(widgets: Vec<Arc<Widget>>, upstream: UpstreamConfig) -> Self {
        let defaults = widgets.iter().map(Widget::default_instance).collect();
        Self {
            id: NEXT_REGISTRY.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            widgets,
            defaults,
            upstream,
        }
    }

    /// The built-in five widgets of the mock.
    pub fn builtin() -> Self {
        // The built-in file is tested to parse; this cannot fail at run time.
        file::parse(file::BUILTIN_NAME, file::BUILTIN, &|_| None)
            .unwrap_or_else(|e| unreachable!("the built-in widgets file is broken: {e}"))
    }

    /// The widget with this id, if the file defines it.
    pub fn get(&self, id: &str) -> Option<&Arc<Widget>> {
        self.widgets.iter().find(|w| w.id.as_str() == id)
    }

    /// The default instance of the widget with this id.
    pub fn default_instance(&self, id: &str) -> Option<Instance> {
        let at = self.widgets.iter().position(|w| w.id.as_str() == id)?;
        self.defaults().get(at).cloned()
    }

    /// Every widget's default instance, in page order: this thread's copies
    /// (made on its first call), so that the reference counts a request
    /// touches are its own worker's, not shared with every other core.
    pub fn defaults(&self) -> Rc<[Instance]> {
        DEFAULTS_HERE.with_borrow_mut(|here| {
            if let Some((_, copies)) = here.iter().find(|(id, _)| *id == self.id) {
                return Rc::clone(copies);
            }
            let copies: Rc<[Instance]> = self.defaults.iter().map(Instance::copy).collect();
            if here.len() >= REGISTRIES_PER_THREAD {
                here.remove(0);
            }
            here.push((self.id, Rc::clone(&copies)));
            copies
        })
    }

    /// The instance of `widget` (one of this registry's) for a request's
    /// query parameters: this thread's default instance when there are none.
    pub fn instance(&self, widget: &Arc<Widget>, given: &[(String, String)]) -> Result<Instance, ParamError> {
        if given.is_empty() {
            if let Some(default) = self.defaults().iter().find(|d| Arc::ptr_eq(&d.widget, widget)) {
                return Ok(default.clone());
            }
        }
        widget.instance(given)
    }

    /// Every widget, in page order.
    pub fn all(&self) -> &[Arc<Widget>] {
        &self.widgets
    }

    /// The `[upstream]` table.
    pub fn upstream(&self) -> &UpstreamConfig {
        &self.upstream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_spec_syntax() {
        for ok in ["1", "5", "billing", "a-b", "0x", &"a".repeat(32)] {
            assert!(WidgetId::parse(ok).is_some(), "{ok:?} must be accepted");
        }
        for bad in ["", "-a", "A", "a_b", "a b", "é", " 1", "a/b", &"a".repeat(33)] {
            assert!(WidgetId::parse(bad).is_none(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn instances_share_a_key_only_for_the_same_canonical_parameters() {
        let reg = Registry::builtin();
        let w = reg.get("3").unwrap();
        let pairs = |v: &str| vec![("days".to_owned(), v.to_owned())];
        let d = w.default_instance();
        assert!(d.is_default());
        assert_eq!(w.instance(&pairs("14")).unwrap().hash, d.hash);
        assert_ne!(w.instance(&pairs("30")).unwrap().hash, d.hash);
        assert_eq!(
            w.instance(&pairs("30")).unwrap().url("/refresh"),
            "/widgets/3/refresh?days=30"
        );
        assert_eq!(d.url(""), "/widgets/3");
        assert!(w.instance(&pairs("31")).is_err());
        assert_eq!(w.instances(64).len(), 3);
        assert!(reg.get("1").unwrap().default_instance().hash.is_none());
    }

    #[test]
    fn fingerprints_follow_the_definition() {
        let a = file::parse("a", "[[widget]]\nid=\"a\"\ntitle=\"A\"\npath=\"/a\"\n", &|_| None).unwrap();
        let b = file::parse("b", "[[widget]]\nid=\"a\"\ntitle=\"B\"\npath=\"/a\"\n", &|_| None).unwrap();
        let c = file::parse("c", "[[widget]]\nid=\"a\"\ntitle=\"A\"\npath=\"/b\"\n", &|_| None).unwrap();
        let fp = |r: &Registry| r.all()[0].fingerprint;
        assert_eq!(fp(&a), fp(&b), "the title does not change the data");
        assert_ne!(fp(&a), fp(&c));
    }
}
