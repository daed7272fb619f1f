//! Integration tests: the whole server over HTTP, a real mock upstream, a
//! real redis-server.

mod helpers;

mod admin;
mod auth;
mod cache;
mod chaos;
mod conditional;
mod cost;
mod current;
mod dashboard;
mod defence;
mod ending;
mod escaping;
mod fleet;
mod fuzz;
mod hostile;
mod identity;
mod isolation;
mod limits;
mod live;
mod ops;
mod ordering;
mod prometheus;
mod properties;
mod redis;
mod resilience;
mod scale;
mod session;
mod soak;
mod tls;
mod webhook;
mod widgets;
