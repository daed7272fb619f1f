//! An HTTP server binary under test as a child process on a free loopback
//! port, ready once its health route answers 200.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::net::free_port;
use crate::process::Process;

/// How long a server may take to answer its health route.
const START: Duration = Duration::from_secs(20);

/// A server process (killed on drop) and its base URL; it derefs to its
/// [`Process`] for the pid, the logs and `terminate`.
pub struct HttpServer {
    process: Process,
    pub base: String,
}

impl HttpServer {
    /// Runs `command(port)` for a free port, its stdout and stderr logged to
    /// files in `logs` named after `name`, and waits until `GET health`
    /// answers 200; fails the test (with the stderr) if it exits or is late.
    pub async fn start(name: &str, logs: &Path, health: &str, command: impl FnOnce(u16) -> Command) -> Self {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let stem = format!("{name}-{}-{port}", std::process::id());
        let mut process = Process::spawn_logged(name, &mut command(port), logs, &stem)
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let (client, health) = (reqwest::Client::new(), format!("{base}{health}"));
        let ready = process.ready(START, || {
            let probe = client.get(&health).send();
            async move { probe.await.is_ok_and(|r| r.status() == 200) }
        });
        ready
            .await
            .unwrap_or_else(|e| panic!("{name} did not start: {e}"));
        Self { process, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl std::ops::Deref for HttpServer {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for HttpServer {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}
