//! Test support shared by percache's test binaries (`tests/api`,
//! `tests/browser`, `tests/container`): child processes with a readiness
//! probe that are killed on drop, waits that always have a deadline, free
//! ports, a Prometheus text parser, sign-in over reqwest, `/proc` figures,
//! and the container and workspace files (Dockerfile, .dockerignore,
//! compose.yaml, cargo metadata) read as data.
//!
//! It knows nothing of percache itself, so that the harnesses are written
//! once and the application's own types stay in the tests.

pub mod compose;
pub mod dockerfile;
pub mod html;
pub mod http;
pub mod in_process;
pub mod metrics;
pub mod net;
pub mod paths;
pub mod proc_stats;
pub mod process;
pub mod redis;
pub mod server;
pub mod stores;
pub mod wait;
pub mod workspace;

pub use http::{login_cookie, new_client, Site};
pub use in_process::InProcess;
pub use metrics::{exported_names, metric_sample};
pub use net::free_port;
pub use proc_stats::ProcStats;
pub use process::Process;
pub use redis::{RedisCluster, RedisServer, RedisTls};
pub use server::HttpServer;
pub use stores::StoreKind;
pub use wait::{eventually, until, until_blocking, until_ok};

/// A two-worker multi-threaded runtime, for synchronous test runners
/// (proptest) that drive async code; two workers match the small machine.
pub fn runtime() -> tokio::runtime::Runtime {
    let builder = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    builder.expect("a two-worker tokio runtime")
}
