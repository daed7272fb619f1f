//! Soak: a few thousand distinct users against the real binary (Redis store,
//! fast mock upstream), then checks that nothing was left behind: no fetch in
//! flight, open fds and threads back to the baseline, bounded peak memory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use mock_upstream::{MockConfig, MockUpstream};

use crate::helpers::{binary_server, login_cookie, metric_sample, until, ProcStats, RedisServer, HEAVY};

/// Distinct users signed in during the soak, at most...
const USERS: usize = 3000;
/// ...within this time (no new user starts after it), so the test stays
/// bounded on a busy machine; at least `MIN_USERS` must make it.
const LOAD_BUDGET: Duration = Duration::from_secs(20);
const MIN_USERS: usize = 1000;
/// Users in flight at once.
const CONCURRENCY: usize = 64;
/// Ceiling of the server's peak RSS (VmHWM). Measured in a debug build on
/// 2 cores: about 27 MB after the warm-up and about 40 MB at the peak of
/// 3000 users (the Redis pool, 2 workers, the near-cache); 200 MB leaves
/// room for allocator noise while still catching anything that grows per
/// user or per request.
const PEAK_RSS_BOUND_KB: u64 = 200 * 1024;
/// Open fds allowed above the baseline once the load is over.
const FD_MARGIN: usize = 20;

/// One user's visit: sign in (prewarm fires 5 fetches), the dashboard, then
/// every widget fragment. Returns (route, status) for each request; a
/// transport error is status 0.
async fn visit(client: &reqwest::Client, base: &str, user: &str) -> Vec<(&'static str, u16)> {
    let mut out = Vec::with_capacity(7);
    let cookie = match login_cookie(client, base, user).await {
        Ok(c) => {
            out.push(("POST /login", 303));
            c
        }
        Err(e) => {
            eprintln!("soak: {user}: {e}");
            out.push(("POST /login", 0));
            return out;
        }
    };
    let paths: [(&'static str, String); 6] = [
        ("GET /dashboard", "/dashboard".to_owned()),
        ("GET /widgets/{id}", "/widgets/1".to_owned()),
        ("GET /widgets/{id}", "/widgets/2".to_owned()),
        ("GET /widgets/{id}", "/widgets/3".to_owned()),
        ("GET /widgets/{id}", "/widgets/4".to_owned()),
        ("GET /widgets/{id}", "/widgets/5".to_owned()),
    ];
    for (route, path) in paths {
        let status = match client
            .get(format!("{base}{path}"))
            .header("cookie", &cookie)
            .send()
            .await
        {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // Read the body so the connection goes back to the pool.
                let _ = resp.bytes().await;
                status
            }
            Err(e) => {
                eprintln!("soak: {user} {path}: {e}");
                0
            }
        };
        out.push((route, status));
    }
    out
}

/// `percache_fetches_in_flight` from `/metrics`, over a connection that is
/// closed at once (so it does not count as an open fd).
async fn in_flight(base: &str) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric_sample(&text, "percache_fetches_in_flight", &[])
}

/// The server's TCP sockets by (peer, state), from `ss`.
fn sockets_of(pid: u32, mock: &str, redis_port: u16, base: &str) -> BTreeMap<(String, String), usize> {
    // `ss` (iproute2) is a diagnostic only: without it the map is empty.
    let out = std::process::Command::new("ss").args(["-tanp"]).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mock_port = mock.rsplit(':').next().unwrap().to_owned();
    let own_port = base.rsplit(':').next().unwrap().to_owned();
    let mut by = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains(&format!("pid={pid},"))) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (state, local, peer) = (cols[0], cols[3], cols[4]);
        let peer_port = peer.rsplit(':').next().unwrap();
        let local_port = local.rsplit(':').next().unwrap();
        let what = if peer_port == mock_port {
            "to upstream".to_owned()
        } else if peer_port == redis_port.to_string() {
            "to redis".to_owned()
        } else if local_port == own_port {
            "from clients / listen".to_owned()
        } else {
            format!("other {peer}")
        };
        *by.entry((what, state.to_owned())).or_default() += 1;
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_users_leave_no_fetch_fd_or_thread_behind() {
    let _heavy = HEAVY.lock().await;
    let test_start = Instant::now();

    // Arrange: mock upstream (2 ms per widget), Redis, the real binary.
    let mock = MockUpstream::start("127.0.0.1:0", MockConfig::with_delays_ms([2, 2, 2, 2, 2]))
        .await
        .unwrap();
    let redis = RedisServer::start();
    let mut server = binary_server(
        "soak",
        &[
            "--upstream-url",
            &mock.url(),
            "--redis-url",
            &redis.url(),
            "--workers",
            "2",
        ],
    )
    .await;
    let pid = server.pid();
    let base = server.base.clone();

    // Warm-up: one user all the way through, so lazily created things
    // (upstream connections, the Redis pool) exist before the baseline.
    {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let warm = visit(&client, &base, "soak-warm-up").await;
        assert!(warm.iter().all(|(_, s)| (200..400).contains(s)), "{warm:?}");
    }
    // Settle (5 s at most) before the baseline; not a check of its own.
    let base_ref = &base;
    let settled = move || async move { (in_flight(base_ref).await <= 0.0).then_some(()) };
    until(Duration::from_secs(5), Duration::from_millis(50), settled).await;
    let before = ProcStats::of(pid);

    // Act: USERS distinct users, CONCURRENCY at a time, through one
    // cookie-less client (the session cookie rides in a `Cookie` header).
    let load_start = Instant::now();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let load_deadline = load_start + LOAD_BUDGET;
    let visits: Vec<Vec<(&'static str, u16)>> = stream::iter(0..USERS)
        .take_while(|_| std::future::ready(Instant::now() < load_deadline))
        .map(|i| {
            let (client, base) = (client.clone(), base.clone());
            async move { visit(&client, &base, &format!("soak-user-{i}")).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let load_time = load_start.elapsed();
    let users = visits.len();
    let during = ProcStats::of(pid);
    drop(client);

    // Settle: no fetch in flight, fds and threads back to the baseline.
    let settle_start = Instant::now();
    let last = std::sync::Mutex::new((0.0, ProcStats::of(pid)));
    let (last, base_ref) = (&last, &base);
    let _ = until(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || async move {
            let fetches = in_flight(base_ref).await;
            let after = ProcStats::of(pid);
            let settled =
                fetches == 0.0 && after.fds <= before.fds + FD_MARGIN && after.threads == before.threads;
            *last.lock().unwrap() = (fetches, after);
            settled.then_some(())
        },
    )
    .await;
    let (fetches, after) = *last.lock().unwrap();
    let settle_time = settle_start.elapsed();

    // Report.
    let sockets = sockets_of(pid, &mock.url(), redis.port, &base);
    let mut by_route: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    for (route, status) in visits.iter().flatten() {
        *by_route.entry((route, *status)).or_default() += 1;
    }
    let requests: usize = by_route.values().sum();
    eprintln!(
        "soak: {users} users, {requests} requests at concurrency {CONCURRENCY} in {:.1} s \
         ({:.0} req/s); {} upstream calls",
        load_time.as_secs_f64(),
        requests as f64 / load_time.as_secs_f64(),
        mock.total_calls()
    );
    eprintln!("soak: by route and status: {by_route:?}");
    eprintln!("soak: the server's TCP sockets after settling (peer, state): {sockets:?}");
    eprintln!(
        "soak: RSS before {} kB, right after the load {} kB, after settling {} kB, peak (VmHWM) {} kB \
         (bound {PEAK_RSS_BOUND_KB} kB)",
        before.rss_kb, during.rss_kb, after.rss_kb, after.hwm_kb
    );
    eprintln!(
        "soak: fds before {}, right after the load {}, after settling {} (settled in {:.1} s); \
         threads before {}, after {}; fetches in flight after {fetches}",
        before.fds,
        during.fds,
        after.fds,
        settle_time.as_secs_f64(),
        before.threads,
        after.threads
    );

    eprintln!(
        "soak: whole test so far {:.1} s",
        test_start.elapsed().as_secs_f64()
    );

    // Assert
    // Every answer is what a signed-in user expects (200, or the sign-in's
    // 303): not only "no 5xx", which an all-401 run would also pass.
    let failed: Vec<_> = by_route
        .iter()
        .filter(|((_, s), _)| !matches!(*s, 200 | 303))
        .collect();
    assert!(
        failed.is_empty(),
        "only 200s and 303s, no transport error: {failed:?}"
    );
    assert!(users >= MIN_USERS, "only {users} users in the time budget");
    assert_eq!(requests, users * 7, "every request was made");
    assert_eq!(fetches, 0.0, "no upstream fetch left in flight");
    assert_eq!(after.threads, before.threads, "no thread left behind");
    assert!(
        after.hwm_kb < PEAK_RSS_BOUND_KB,
        "peak RSS {} kB under {PEAK_RSS_BOUND_KB} kB",
        after.hwm_kb
    );
    assert!(server.is_alive());
    let stderr = server.stderr();
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    // Upstream connections the pool no longer needs must be closed, not
    // left in CLOSE-WAIT once the upstream has closed its side (the mock,
    // like most servers, drops idle keep-alive connections after 5 s).
    assert!(
        after.fds <= before.fds + FD_MARGIN,
        "open fds back near the baseline once the load is over: {} before, {} after; \
         the server's sockets: {sockets:?}",
        before.fds,
        after.fds
    );
}
