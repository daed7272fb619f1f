//! A server run in-process as a task until the test stops it, gracefully:
//! the test hands the server a stop signal (a future) and later fires it,
//! as SIGTERM would for the binary.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The future a server stops on.
pub type StopSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A running in-process server and the trigger of its graceful stop.
pub struct InProcess {
    trigger: Arc<Notify>,
    running: Mutex<Option<JoinHandle<std::io::Result<()>>>>,
}

impl InProcess {
    /// Spawns `run(stop)`, the server's "run until `stop` resolves".
    pub fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let trigger = Arc::new(Notify::new());
        let fired = Arc::clone(&trigger);
        let stop: StopSignal = Box::pin(async move { fired.notified().await });
        Self {
            trigger,
            running: Mutex::new(Some(tokio::spawn(run(stop)))),
        }
    }

    /// Fires the stop and waits, at most `within`, until the server has
    /// ended; fails the test if it is late or ends with an error.
    pub async fn stop(&self, within: Duration) {
        self.trigger.notify_one();
        let running = self.running.lock().unwrap().take();
        let running = running.expect("a server is stopped only once");
        let ended = tokio::time::timeout(within, running).await;
        let result = ended.unwrap_or_else(|_| panic!("the server did not stop within {within:?}"));
        result
            .expect("the server task ends")
            .expect("the server ends cleanly");
    }
}
