//! The per-user widget cache: entries and their policy, keys, the read
//! policy ([`service`]), single flight ([`flight`]), invalidation, open
//! pages ([`live`]) and the stores ([`store`]). It fetches through
//! `upstream::Fetch`, so its core runs in unit tests with a fake.

#[cfg(test)]
mod core_tests;
pub mod counters;
pub mod directives;
pub mod entry;
mod fetched;
pub mod fleet;
pub mod flight;
#[cfg(test)]
mod flight_tests;
pub mod invalidation;
mod judge;
pub mod key;
pub mod live;
pub mod outcome;
mod pages;
pub mod policy;
#[cfg(test)]
mod race_tests;
pub mod service;
pub mod settings;
pub mod slots;
pub mod status;
pub mod store;
pub mod turns;

pub use directives::Directives;
pub use entry::{Entry, Freshness};
pub use invalidation::{GENERATION_RELOAD, MAX_INSTANCES_INVALIDATED};
pub use key::CacheKey;
pub use live::{OpenPage, PagePoll, RefreshedAhead, Shown};
pub use policy::CachePolicy;
pub use service::{CacheParts, Lookup, Outcome, WidgetCache};
pub use settings::CacheSettings;
pub use store::stack::from_settings as store_from_settings;
pub use store::{Store, StoreError};
