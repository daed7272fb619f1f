//! Which store a test runs against (in-process memory, one `redis-server`,
//! or a Redis Cluster) and the macros that run one test body once per store.

use crate::redis::{RedisCluster, RedisServer};

/// Which store the application under test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The application's own memory: no Redis.
    Memory,
    /// One `redis-server` on a free loopback port.
    Redis,
    /// A three-master Redis Cluster on loopback ports.
    Cluster,
}

impl StoreKind {
    /// Starts the Redis this kind needs (none for [`StoreKind::Memory`]).
    pub fn start(self) -> (Option<RedisServer>, Option<RedisCluster>) {
        let redis = (self == StoreKind::Redis).then(RedisServer::start);
        (redis, (self == StoreKind::Cluster).then(RedisCluster::start))
    }
}

/// One test module per async fn taking a [`StoreKind`], with one
/// `#[tokio::test]` per listed store, e.g.
/// `store_tests!(name: memory => Memory, redis => Redis)`.
#[macro_export]
macro_rules! store_tests {
    ($name:ident: $($test:ident => $kind:ident),+) => {
        mod $name {
            $(
                #[tokio::test]
                async fn $test() { super::$name($crate::stores::StoreKind::$kind).await }
            )+
        }
    };
}

/// A `memory`, a `redis` and a `cluster` test for each fn.
#[macro_export]
macro_rules! all_stores {
    ($($name:ident),* $(,)?) => {$(
        $crate::store_tests!($name: memory => Memory, redis => Redis, cluster => Cluster);
    )*};
}

/// A `redis` and a `cluster` test for each fn.
#[macro_export]
macro_rules! cluster_stores {
    ($($name:ident),* $(,)?) => {$( $crate::store_tests!($name: redis => Redis, cluster => Cluster); )*};
}

/// A `memory` and a `redis` test for each fn.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {$( $crate::store_tests!($name: memory => Memory, redis => Redis); )*};
}
