//! percache: a per-user caching dashboard server.
//!
//! The crate is a library so that integration tests can spawn the whole
//! application on a random port; `main.rs` only parses the configuration and
//! calls [`startup::Application::build`].

pub mod admin;
pub mod cache;
pub mod clock;
pub mod config;
pub mod defence;
pub mod probe;
pub mod routes;
pub mod session;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod user;
pub mod views;
pub mod widget;
