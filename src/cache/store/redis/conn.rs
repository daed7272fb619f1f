//! Connections to Redis: pools of multiplexed connections (one server, or a
//! cluster), TLS trust, and the one way a command runs: within a bound,
//! dropping a connection that failed.

use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, RecycleResult};
use deadpool_redis::redis::{self, FromRedisValue};
use deadpool_redis::{PoolConfig, Timeouts};

use crate::cache::store::StoreError;

/// Opens multiplexed connections to one Redis server, from a client that
/// carries the TLS trust (`rediss://`, `--redis-ca`).
///
/// Recycling is free: no `PING` on checkout. A broken connection fails (or
/// times out on) its next command, and [`run_on`] then drops it instead of
/// returning it to the pool. That saves a Redis round trip per command (the
/// load test saw three commands per cache read: `UNWATCH`, `PING`, `GET`).
pub struct SingleManager(pub(super) redis::Client);

impl managed::Manager for SingleManager {
    type Type = redis::aio::MultiplexedConnection;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<Self::Type, Self::Error> {
        self.0.get_multiplexed_async_connection().await
    }

    async fn recycle(&self, _: &mut Self::Type, _: &Metrics) -> RecycleResult<Self::Error> {
        Ok(())
    }
}

/// The same for a Redis Cluster: each connection reaches every node.
pub struct ClusterManager(pub(super) redis::cluster::ClusterClient);

impl managed::Manager for ClusterManager {
    type Type = redis::cluster_async::ClusterConnection;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<Self::Type, Self::Error> {
        self.0.get_async_connection().await
    }

    async fn recycle(&self, _: &mut Self::Type, _: &Metrics) -> RecycleResult<Self::Error> {
        Ok(())
    }
}

/// A RESP3 cluster client whose pushes (pub/sub messages) go to the
/// returned receiver: the sharded change feed's connection.
pub fn cluster_push_client(
    urls: Vec<String>,
    ca: Option<&[u8]>,
) -> Result<
    (
        redis::cluster::ClusterClient,
        tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    ),
    redis::RedisError,
> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut builder = redis::cluster::ClusterClientBuilder::new(urls)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(tx);
    if let Some(pem) = ca {
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        });
    }
    Ok((builder.build()?, rx))
}

/// A client for `url`; with `ca` (a PEM bundle, the system's roots
/// included), a `rediss://` URL trusts it.
pub fn client(url: &str, ca: Option<&[u8]>) -> Result<redis::Client, redis::RedisError> {
    match ca {
        Some(pem) if url.starts_with("rediss://") => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            },
        ),
        _ => redis::Client::open(url),
    }
}

pub(super) type SinglePool = managed::Pool<SingleManager>;
pub(super) type ClusterPool = managed::Pool<ClusterManager>;

#[derive(Clone)]
pub(super) enum Backend {
    Single(SinglePool),
    Cluster(ClusterPool),
}

/// One request: a command, or a Lua script sent by its SHA1 (`EVALSHA`;
/// redis-rs loads it on a `NOSCRIPT`, e.g. after a Redis restart), so the
/// script's text is not sent with every call.
pub(super) enum Op<'a> {
    Cmd(&'a redis::Cmd),
    Script(&'a redis::ScriptInvocation<'a>),
}

/// Runs `op` on a connection from `pool`, all within `bound`. A connection
/// whose command failed or timed out is dropped, not returned: it may be
/// broken (a restarted Redis leaves multiplexed connections that never answer).
pub(super) async fn run_on<M, T>(
    pool: &managed::Pool<M>,
    op: Op<'_>,
    bound: Duration,
) -> Result<T, StoreError>
where
    M: managed::Manager<Error = redis::RedisError>,
    M::Type: redis::aio::ConnectionLike + Send,
    T: FromRedisValue,
{
    let deadline = tokio::time::Instant::now() + bound;
    let mut conn = tokio::time::timeout_at(deadline, pool.get())
        .await
        .map_err(|_| StoreError::Timeout)?
        .map_err(|e| StoreError::Connection(e.to_string()))?;
    let answer = match op {
        Op::Cmd(cmd) => tokio::time::timeout_at(deadline, cmd.query_async(&mut *conn)).await,
        Op::Script(script) => tokio::time::timeout_at(deadline, script.invoke_async(&mut *conn)).await,
    };
    match answer {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            discard(pool, conn);
            Err(StoreError::Command(e.to_string()))
        }
        Err(_) => {
            discard(pool, conn);
            Err(StoreError::Timeout)
        }
    }
}

/// Connections per pool (single server).
pub(super) const POOL_SIZE: usize = 64;
/// Connections per pool for a cluster: each one holds a connection to every
/// node and is multiplexed, so fewer are needed.
pub(super) const CLUSTER_POOL_SIZE: usize = 16;

pub(super) fn pool_config(size: usize, op_timeout: Duration) -> PoolConfig {
    let mut cfg = PoolConfig::new(size);
    cfg.timeouts = Timeouts {
        wait: Some(op_timeout),
        create: Some(op_timeout),
        recycle: Some(op_timeout),
    };
    cfg
}

/// Drops a connection that failed, and every idle one with it: when one
/// connection breaks (Redis restarted), its siblings are almost surely broken
/// too, and the pool should not hand them out one failed request at a time.
fn discard<M: managed::Manager>(pool: &managed::Pool<M>, conn: Object<M>) {
    drop(Object::take(conn));
    pool.retain(|_, _| false);
}
