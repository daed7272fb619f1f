//! Chaos under load: the real binary keeps answering while Redis dies and
//! comes back, and while the upstream fails and hangs, with entries going
//! stale and being refreshed all along.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mock_upstream::{Fault, MockConfig, MockUpstream};
use percache::cache::key::UserTag;
use percache::cache::store::redis::RedisStore;
use percache::cache::Store;

use crate::helpers::{all_instances, binary_server, login_cookie, until, RedisServer, HEAVY};

/// Warm users the load cycles through.
const USERS: usize = 20;
/// Concurrent load workers.
const WORKERS: usize = 16;

/// The routes of the load: (label for the summary, path).
fn routes() -> Vec<(&'static str, String)> {
    let mut routes = Vec::new();
    for id in 1..=5 {
        routes.push(("GET /widgets/{id}", format!("/widgets/{id}")));
        routes.push(("GET /api/widgets/{id}", format!("/api/widgets/{id}")));
    }
    routes.push(("GET /dashboard", "/dashboard".to_owned()));
    routes
}

/// A short class of a `Cache-Status` value, for the summary.
fn class_of(cache_status: Option<&str>) -> &'static str {
    let Some(s) = cache_status else { return "-" };
    if s.contains("store-unavailable") {
        "store-unavailable"
    } else if s.contains("stale-if-error") {
        "stale-if-error"
    } else if s.contains("revalidating") {
        "stale (revalidating)"
    } else if s.contains("outdated") {
        "outdated"
    } else if s.contains("fwd-status=") {
        "error"
    } else if s.contains("collapsed") {
        "miss (collapsed)"
    } else if s.contains("fwd=miss") {
        "miss"
    } else if s.contains("; hit;") {
        "hit"
    } else {
        "other"
    }
}

/// Whether every widget of every user is in Redis.
async fn all_in_redis(store: &RedisStore, users: &[String]) -> bool {
    for user in users {
        let tag = UserTag::of(user);
        for widget in all_instances() {
            if !matches!(store.get(&tag.key(&widget)).await, Ok(Some(_))) {
                return false;
            }
        }
    }
    true
}

/// Waits (10 s at most, polling every `every`) until every widget of every
/// user is in Redis; fails the test with `why` otherwise.
async fn in_redis_within(store: &RedisStore, users: &[String], every: Duration, why: &str) {
    let done = || async move { all_in_redis(store, users).await.then_some(()) };
    let done = until(Duration::from_secs(10), every, done).await;
    assert!(done.is_some(), "{why}");
}

/// What the load has seen so far, by class.
type Seen = Mutex<BTreeMap<&'static str, usize>>;

fn count_of(seen: &BTreeMap<&'static str, usize>, class: &str) -> usize {
    seen.get(class).copied().unwrap_or(0)
}

/// Waits (at most 15 s) until what the load has seen satisfies `done`: a
/// phase of the chaos lasts until the load has met it.
async fn met(live: &Seen, what: &str, done: impl Fn(&BTreeMap<&'static str, usize>) -> bool) {
    let check = || async { done(&live.lock().unwrap()).then_some(()) };
    let met = until(Duration::from_secs(15), Duration::from_millis(10), check).await;
    assert!(
        met.is_some(),
        "the load never met {what}: {:?}",
        live.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_and_upstream_faults_under_load_never_give_a_5xx() {
    let _heavy = HEAVY.lock().await;
    let t0 = Instant::now();
    let mut timeline: Vec<(Duration, String)> = Vec::new();
    let mut note = |what: &str| timeline.push((t0.elapsed(), what.to_owned()));

    // Arrange: mock (5 ms per widget), Redis, the binary with short
    // freshness so refreshes, misses and stale-if-error happen during the run.
    let mock = MockUpstream::start("127.0.0.1:0", MockConfig::with_delays_ms([5, 5, 5, 5, 5]))
        .await
        .unwrap();
    let mut redis = Some(RedisServer::start());
    let redis_port = redis.as_ref().unwrap().port;
    let redis_url = redis.as_ref().unwrap().url();
    let mut server = binary_server(
        "chaos",
        &[
            "--upstream-url",
            &mock.url(),
            "--redis-url",
            &redis_url,
            "--workers",
            "2",
            "--upstream-timeout",
            "2s",
            "--failure-backoff",
            "300ms",
            "--fresh",
            "1s",
            "--ttl",
            "2s",
            // Requests past ttl wait for the upstream (and so see its
            // failures as stale-if-error) rather than being served the
            // outdated entry after 300 ms; no eager refresh keeping entries
            // fresh through the fault window. The soft timeout and eager
            // refresh have tests of their own (tests/api/current.rs).
            "--soft-timeout",
            "5s",
            "--eager-refresh",
            "0",
        ],
    )
    .await;
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();

    // Warm USERS users: every widget cached (prewarm, then checked in Redis).
    let users: Vec<String> = (0..USERS).map(|i| format!("chaos-user-{i}")).collect();
    let mut cookies = Vec::new();
    for user in &users {
        cookies.push(login_cookie(&client, &base, user).await.unwrap());
    }
    let store = RedisStore::new(&redis_url, Duration::from_secs(2)).unwrap();
    in_redis_within(
        &store,
        &users,
        Duration::from_millis(50),
        "the warm-up never filled Redis",
    )
    .await;
    note("warm: all widgets of all users in Redis; load starts");

    // The load: WORKERS loops over users and routes, recording every status
    // (0: transport error).
    let stop = Arc::new(AtomicBool::new(false));
    let cookies = Arc::new(cookies);
    // What the load has seen so far, by class: each phase of the chaos lasts
    // until the load has met it, rather than for a guessed time.
    let live: Arc<Seen> = Arc::default();
    let load: Vec<_> = (0..WORKERS)
        .map(|k| {
            let (client, base, stop, cookies) = (client.clone(), base.clone(), stop.clone(), cookies.clone());
            let live = Arc::clone(&live);
            tokio::spawn(async move {
                let routes = routes();
                let mut seen: Vec<(&'static str, u16, &'static str)> = Vec::new();
                let mut i = k;
                while !stop.load(Ordering::Relaxed) {
                    let cookie = &cookies[i % USERS];
                    // 20 users and 11 routes: coprime, so every pair comes up.
                    let (route, path) = &routes[i % routes.len()];
                    let (status, class) = match client
                        .get(format!("{base}{path}"))
                        .header("cookie", cookie)
                        .send()
                        .await
                    {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let class =
                                class_of(resp.headers().get("cache-status").and_then(|v| v.to_str().ok()));
                            if status >= 500 {
                                let body = resp.text().await.unwrap_or_default();
                                eprintln!("chaos: {path} user {}: {status} {body}", i % USERS);
                            } else {
                                let _ = resp.bytes().await;
                            }
                            (status, class)
                        }
                        Err(e) => {
                            eprintln!("chaos: {path}: {e}");
                            (0, "-")
                        }
                    };
                    let mut met = live.lock().unwrap();
                    *met.entry(class).or_default() += 1;
                    if path.ends_with("/3") && class == "stale-if-error" {
                        *met.entry("widget 3 stale-if-error").or_default() += 1;
                    }
                    drop(met);
                    seen.push((route, status, class));
                    i += 1;
                }
                seen
            })
        })
        .collect();
    let count = |class: &str| count_of(&live.lock().unwrap(), class);
    let total = || live.lock().unwrap().values().sum::<usize>();
    met(&live, "its first 200 answers", |seen| {
        seen.values().sum::<usize>() >= 200
    })
    .await;

    // Act, in sequence. Redis down and the upstream failing never overlap:
    // with neither a store nor an upstream there is nothing to serve, and the
    // JSON API then honestly answers 502 (the HTML fragment shows an error card).
    note("redis-server killed");
    drop(redis.take());
    let before = count("store-unavailable");
    met(&live, "the outage", |seen| {
        count_of(seen, "store-unavailable") >= before + 50
    })
    .await;

    redis = Some(RedisServer::start_on(redis_port));
    note("redis-server restarted (empty) on the same port");
    // Before failing the upstream, every entry must be back in Redis (else a
    // key missing from the emptied Redis would have nothing to fall back on).
    let why = "the cache never wrote every entry to the restarted Redis";
    in_redis_within(&store, &users, Duration::from_millis(100), why).await;
    note("every entry is in Redis again");

    mock.set_fault(2, Fault::Error(503));
    mock.set_fault(4, Fault::Error(503));
    note("upstream widgets 2 and 4 answer 503");
    let before = count("stale-if-error");
    met(&live, "the failing upstream", |seen| {
        count_of(seen, "stale-if-error") >= before + 50
    })
    .await;

    mock.set_fault(2, Fault::Ok);
    mock.set_fault(4, Fault::Ok);
    mock.set_fault(3, Fault::Hang);
    note("widgets 2 and 4 ok; upstream widget 3 hangs");
    // The hang lasts until widget 3's calls have run into the upstream
    // timeout (2 s) and its old data was served for it.
    let before = count("widget 3 stale-if-error");
    met(&live, "the hang", |seen| {
        count_of(seen, "widget 3 stale-if-error") >= before + 20
    })
    .await;

    mock.set_fault(3, Fault::Ok);
    note("upstream all ok");
    let before = total();
    met(&live, "the recovery", |seen| {
        seen.values().sum::<usize>() >= before + 200
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    let mut by_route: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    let mut by_class: BTreeMap<&str, usize> = BTreeMap::new();
    for worker in load {
        for (route, status, class) in worker.await.unwrap() {
            *by_route.entry((route, status)).or_default() += 1;
            *by_class.entry(class).or_default() += 1;
        }
    }
    note("load stopped");

    // Report.
    let requests: usize = by_route.values().sum();
    eprintln!(
        "chaos: {USERS} users, {WORKERS} workers, {requests} requests, {} upstream calls",
        mock.total_calls()
    );
    for (at, what) in &timeline {
        eprintln!("chaos: t={:>5.2} s  {what}", at.as_secs_f64());
    }
    eprintln!("chaos: by route and status: {by_route:?}");
    eprintln!("chaos: widget responses by Cache-Status: {by_class:?}");

    // Assert: every answer a 200 (the faults are absorbed: stale-if-error,
    // error cards are 200 too), nor a transport error; not only "no 5xx",
    // which an all-401 run would also pass.
    let failed: Vec<_> = by_route.iter().filter(|((_, s), _)| *s != 200).collect();
    assert!(failed.is_empty(), "only 200s: {failed:?}");
    assert!(requests > 500, "the load ran ({requests} requests)");
    // The chaos did happen: the outage and the failures were seen and absorbed.
    for class in ["store-unavailable", "stale-if-error", "stale (revalidating)"] {
        assert!(
            by_class.contains_key(class),
            "some responses were {class}: {by_class:?}"
        );
    }

    // The process is alive, serves, and never panicked.
    assert!(server.is_alive(), "the server is still running");
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let stderr = server.stderr();
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");

    // Entries are (still) written to Redis after the chaos: emptied once
    // more, it is filled again by forced refreshes (what was there from
    // before the faults no longer counts).
    drop(redis.take());
    redis = Some(RedisServer::start_on(redis_port));
    let refill = || async {
        for cookie in cookies.iter() {
            for id in 1..=5 {
                let resp = client
                    .post(format!("{base}/widgets/{id}/refresh"))
                    .header("cookie", cookie)
                    .send()
                    .await;
                assert_eq!(
                    resp.map(|r| r.status().as_u16()).unwrap_or(0),
                    200,
                    "a forced refresh"
                );
            }
        }
        all_in_redis(&store, &users).await.then_some(())
    };
    let refilled = until(Duration::from_secs(20), Duration::from_millis(100), refill).await;
    assert!(refilled.is_some(), "entries are written to Redis after the chaos");
    drop(redis);
    eprintln!("chaos: whole test {:.1} s", t0.elapsed().as_secs_f64());
}
