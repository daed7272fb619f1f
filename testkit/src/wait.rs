//! Waits on a condition, each with a deadline: a test never sleeps for a
//! guessed time nor waits forever.

use std::future::Future;
use std::time::{Duration, Instant};

/// Waits until `done()` holds, checking every 5 ms; past `within` the test
/// fails with `why()` (computed then, so it tells the state at the deadline).
pub async fn eventually<M: std::fmt::Display>(
    within: Duration,
    mut done: impl FnMut() -> bool,
    why: impl Fn() -> M,
) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{} (after {within:?})", why());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the async `attempt` every `every` until it gives `Some`, for at
/// most `within`: `None` past the deadline, for the caller to fail with
/// what it knows (the last answer, a log).
pub async fn until<T, Fut>(within: Duration, every: Duration, mut attempt: impl FnMut() -> Fut) -> Option<T>
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = attempt().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// As [`until`], blocking the thread: for harnesses that start outside a
/// runtime (a `redis-server` for a synchronous test).
pub fn until_blocking<T>(
    within: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = attempt() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Runs the async `attempt` every `every` until it gives `Ok`; past
/// `within` the test fails with the last `Err` (what the attempt saw then).
pub async fn until_ok<T, E, Fut>(within: Duration, every: Duration, mut attempt: impl FnMut() -> Fut) -> T
where
    E: std::fmt::Display,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + within;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(why) if Instant::now() >= deadline => panic!("{why} (after {within:?})"),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}
