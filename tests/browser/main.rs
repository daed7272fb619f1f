//! Browser tests: the real page in headless Chromium (Debian's `chromium`,
//! driven through `chromium-driver` with fantoccini), against the same
//! in-process application and mock upstream as the HTTP tests.
//!
//! Each test starts its own chromedriver and browser profile; a global lock
//! runs them one at a time. A failing test leaves
//! `target/browser-screenshots/<test>-failure.png`; the tests also always
//! save `dashboard-loading.png`, `dashboard-ready.png` and
//! `dashboard-widget-error.png` there.

#[path = "../api/helpers.rs"]
#[allow(dead_code, unused_imports)]
mod helpers;

mod driver;
mod page;

mod admin;
mod current;
mod dashboard;
mod defence;
mod errors;
mod live;
