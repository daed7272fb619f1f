//! `redis-server` harnesses: one server, or a three-master Redis Cluster,
//! on free loopback ports, optionally TLS-only; stopped on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::net::free_port;
use crate::process::Process;
use crate::wait::until_blocking;

/// A `redis-server` child process on a loopback port, killed on drop.
pub struct RedisServer {
    _process: Process,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_on_any_port(|_| Vec::new(), &[])
    }

    /// Tries free ports until a server comes up: another test may take a
    /// port between `free_port()` and redis-server binding it. `extra`
    /// gives more arguments for a port; `cli` is what `redis-cli` needs to
    /// reach it (TLS).
    pub fn start_on_any_port(extra: impl Fn(u16) -> Vec<String>, cli: &[String]) -> Self {
        (0..5)
            .find_map(|_| {
                let port = free_port();
                Self::try_start(port, &extra(port), cli).ok()
            })
            .expect("redis-server did not start on any of 5 free ports")
    }

    /// On this exact port (a restart after a kill).
    pub fn start_on(port: u16) -> Self {
        Self::try_start(port, &[], &[])
            .unwrap_or_else(|e| panic!("redis-server did not start on port {port}: {e}"))
    }

    fn try_start(port: u16, extra: &[String], cli: &[String]) -> Result<Self, String> {
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut process = Process::spawn("redis-server", &mut command)
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        // Ready means *this* process answers on the port. A bare TCP connect
        // is not enough: the kernel accepts on the client port before the
        // server has bound its cluster bus port (port + 10000), and if that
        // bind fails the server exits a moment later; and a port taken by
        // another test's server would answer for it. An exit means the port
        // is not ours, and the caller tries another.
        let ours = format!("process_id:{}", process.pid());
        process.ready_blocking(Duration::from_secs(10), || answers_as(port, cli, &ours))?;
        Ok(Self {
            _process: process,
            port,
        })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// Whether the server on `port` says, in `INFO server`, the `process_id:`
/// line `ours`.
fn answers_as(port: u16, cli: &[String], ours: &str) -> bool {
    Command::new("redis-cli")
        .args(cli)
        .args(["-p", &port.to_string(), "info", "server"])
        .stderr(Stdio::null())
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim_end() == ours)
        })
        .unwrap_or(false)
}

/// The TLS files of a TLS-only Redis: server certificate, key, and the CA
/// that clients trust.
#[derive(Debug, Clone)]
pub struct RedisTls {
    pub cert: String,
    pub key: String,
    pub ca: String,
}

impl RedisTls {
    /// `redis-server` arguments: TLS only on `port`, no client certificates.
    pub fn server_args(&self, port: u16) -> Vec<String> {
        let port = port.to_string();
        [
            "--port",
            "0",
            "--tls-port",
            &port,
            "--tls-cert-file",
            &self.cert,
            "--tls-key-file",
            &self.key,
            "--tls-ca-cert-file",
            &self.ca,
            "--tls-auth-clients",
            "no",
            "--tls-cluster",
            "yes",
            "--tls-replication",
            "yes",
        ]
        .map(String::from)
        .to_vec()
    }

    /// `redis-cli` arguments to talk TLS.
    pub fn cli_args(&self) -> Vec<String> {
        vec!["--tls".into(), "--cacert".into(), self.ca.clone()]
    }
}

/// A three-master Redis Cluster on free loopback ports, stopped (and its
/// folder removed) on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    dir: PathBuf,
    /// `redis` or `rediss` (TLS).
    scheme: &'static str,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A cluster whose nodes speak only TLS, with these files.
    pub fn start_with(tls: Option<&RedisTls>) -> Self {
        let dir =
            std::env::temp_dir().join(format!("testkit-cluster-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let node = |port: u16| {
            let conf = format!("nodes-{port}.conf");
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--dir",
                dir.to_str().unwrap(),
            ];
            let mut args = args.map(String::from).to_vec();
            args.extend(tls.map(|t| t.server_args(port)).unwrap_or_default());
            args
        };
        let cli_tls = tls.map(RedisTls::cli_args).unwrap_or_default();
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_on_any_port(node, &cli_tls))
            .collect();
        let mut create = Command::new("redis-cli");
        create.args(&cli_tls).arg("--cluster").arg("create");
        create.args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (scripts/test.sh installs redis-tools)");
        assert!(
            out.status.success(),
            "cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ok = |node: &RedisServer| {
            let info = Command::new("redis-cli")
                .args(&cli_tls)
                .args(["-p", &node.port.to_string(), "cluster", "info"])
                .output()
                .expect("running redis-cli cluster info");
            String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok")
        };
        let all_ok = until_blocking(Duration::from_secs(20), Duration::from_millis(50), || {
            nodes.iter().all(ok).then_some(())
        });
        assert!(all_ok.is_some(), "cluster never became ok within 20 s");
        Self {
            nodes,
            dir,
            scheme: if tls.is_some() { "rediss" } else { "redis" },
        }
    }

    /// The node URLs, comma-separated, as `--redis-cluster` takes them.
    pub fn nodes(&self) -> String {
        let urls: Vec<String> = self.urls();
        urls.join(",")
    }

    /// One URL per node, with the cluster's scheme.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("{}://127.0.0.1:{}", self.scheme, n.port))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
