//! One child process type for every harness (redis-server, chromedriver,
//! prometheus, the binary under test): spawned, probed until ready within a
//! deadline, and killed (with its files removed) on drop, so a failing test
//! leaves nothing running.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::wait::{until, until_blocking};

/// How often a readiness probe or an exit is checked.
const POLL: Duration = Duration::from_millis(20);

/// A child process, killed and reaped on drop.
pub struct Process {
    name: String,
    child: Child,
    stdout_path: Option<PathBuf>,
    stderr_path: Option<PathBuf>,
    /// Files and folders that belong to the process (logs, data), removed on drop.
    owned: Vec<PathBuf>,
}

impl Process {
    /// Spawns `command` as is; `name` is what failure messages call it.
    pub fn spawn(name: &str, command: &mut Command) -> std::io::Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            child: command.spawn()?,
            stdout_path: None,
            stderr_path: None,
            owned: Vec::new(),
        })
    }

    /// Spawns `command` with stdout and stderr written to
    /// `<dir>/<file_stem>.stdout` and `.stderr` (removed on drop), so a test
    /// can read the logs and a failure can show them.
    pub fn spawn_logged(
        name: &str,
        command: &mut Command,
        dir: &Path,
        file_stem: &str,
    ) -> std::io::Result<Self> {
        let (out, err) = (
            dir.join(format!("{file_stem}.stdout")),
            dir.join(format!("{file_stem}.stderr")),
        );
        command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?);
        let mut process = Self::spawn(name, command)?;
        process.owned.extend([out.clone(), err.clone()]);
        process.stdout_path = Some(out);
        process.stderr_path = Some(err);
        Ok(process)
    }

    /// Removes `path` (a file or a folder) when the process is dropped.
    pub fn owns(mut self, path: impl Into<PathBuf>) -> Self {
        self.owned.push(path.into());
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child itself, for its piped streams.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the process wrote to stdout so far (if logged).
    pub fn stdout(&self) -> String {
        read(self.stdout_path.as_deref())
    }

    /// What the process wrote to stderr so far (if logged).
    pub fn stderr(&self) -> String {
        read(self.stderr_path.as_deref())
    }

    /// Runs the async `probe` until it holds; an error says why not if the
    /// process exits first or `within` passes.
    pub async fn ready<Fut>(&mut self, within: Duration, mut probe: impl FnMut() -> Fut) -> Result<(), String>
    where
        Fut: Future<Output = bool>,
    {
        let mut exited = None;
        let ready = until(within, POLL, || {
            exited = self.child.try_wait().ok().flatten();
            let probe = probe();
            let gone = exited.is_some();
            async move { (gone || probe.await).then_some(()) }
        })
        .await;
        self.readiness(ready.is_some(), exited, within)
    }

    /// As [`Process::ready`] with a blocking probe, for a harness that starts
    /// outside a runtime.
    pub fn ready_blocking(
        &mut self,
        within: Duration,
        mut probe: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let mut exited = None;
        let ready = until_blocking(within, POLL, || {
            exited = self.child.try_wait().ok().flatten();
            (exited.is_some() || probe()).then_some(())
        });
        self.readiness(ready.is_some(), exited, within)
    }

    fn readiness(&self, done: bool, exited: Option<ExitStatus>, within: Duration) -> Result<(), String> {
        match (done, exited) {
            (_, Some(status)) => Err(format!("{} exited ({status}): {}", self.name, self.stderr())),
            (true, None) => Ok(()),
            (false, None) => Err(format!(
                "{} was not ready after {within:?}: {}",
                self.name,
                self.stderr()
            )),
        }
    }

    /// Waits (blocking, at most `within`) for the process to exit by itself.
    pub fn wait_blocking(&mut self, within: Duration) -> Option<ExitStatus> {
        until_blocking(within, POLL, || self.child.try_wait().ok().flatten())
    }

    /// Runs `command` (stderr piped) to its end within `within` and returns
    /// its status and stderr; fails the test if it is still running then.
    pub fn run_to_exit(name: &str, command: &mut Command, within: Duration) -> (ExitStatus, String) {
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut process = Self::spawn(name, command).unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let status = process.wait_blocking(within);
        let status = status.unwrap_or_else(|| panic!("{name} kept running past {within:?}"));
        let mut stderr = String::new();
        if let Some(pipe) = process.child.stderr.as_mut() {
            std::io::Read::read_to_string(pipe, &mut stderr)
                .unwrap_or_else(|e| panic!("{name}'s stderr: {e}"));
        }
        (status, stderr)
    }

    /// Sends SIGTERM and waits (at most `bound`) for the process to exit;
    /// fails the test if it does not.
    pub async fn terminate(&mut self, bound: Duration) -> ExitStatus {
        let kill = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(kill.success(), "kill -TERM {} ({}) failed", self.pid(), self.name);
        let status = until(bound, POLL, || {
            let exited = self.child.try_wait().ok().flatten();
            async move { exited }
        })
        .await;
        status.unwrap_or_else(|| panic!("{} did not exit within {bound:?} of SIGTERM", self.name))
    }
}

/// `program args...` with `env` set (`Some`) or removed (`None`).
pub fn command(program: &str, args: &[&str], env: &[(&str, Option<&str>)]) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    for (key, value) in env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command
}

fn read(path: Option<&Path>) -> String {
    path.and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for path in &self.owned {
            let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir_all(path));
        }
    }
}

/// Kills (SIGKILL, by pid) every process that has `arg` as one argument of
/// its command line: the grandchildren a harness cannot reach through its
/// child (the browsers chromedriver starts, found by their profile folder).
pub fn kill_all_with_arg(arg: &str) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).split('\0').any(|a| a == arg) {
            let mut kill = Command::new("kill");
            kill.args(["-KILL", pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = kill.status();
        }
    }
}
