//! Integration tests: the whole server over HTTP, a real mock upstream, a
//! real redis-server.

mod helpers;

mod auth;
mod cache;
mod dashboard;
mod fleet;
mod isolation;
mod ops;
mod redis;
mod resilience;
mod webhook;
