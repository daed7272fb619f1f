//! Defences against abuse of the public routes (SPEC §4, §5): cross-site
//! requests to the browser's routes ([`cross_site`]), sign-in floods per
//! client address ([`login_rate`]), replayed webhook calls ([`replay`]), and
//! one client address holding the upstream's slots ([`fair_share`]).
//!
//! Each refusal is counted in `percache_refused_total{reason}`
//! (`cross_site`, `login_rate`, `webhook_replay`).

pub mod cross_site;
pub mod fair_share;
pub mod identity;
pub mod login_rate;
pub mod replay;
