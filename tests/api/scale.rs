//! Scale measurements of issue 11, against the real binary (debug build) and
//! an in-process mock upstream:
//!
//! - the server's CPU per change (a forced refresh of another user's widget)
//!   with 2,000 open pages (idle users' `/updates` long-polls), against the
//!   figure with no open pages: at most 1.5× (goal 1.2×);
//! - the RSS per cached entry of the mock's widgets, with 4,000 users
//!   (20,000 entries): at most 1.5 KiB (goal 1 KiB);
//! - a byte capacity (`--memory-capacity 4MiB`) honoured within 10%.
//!
//! CPU is the server process's utime + stime (`/proc/<pid>/stat`), RSS its
//! VmRSS; the store's own counts are the gauges `percache_cache_entries` and
//! `percache_cache_bytes`. They are measurements, not checks of the suite:
//! `#[ignore]`d, they print their figures. Run them by hand with
//! `cargo test --test api -- --ignored scale --nocapture --test-threads=1`.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{self, StreamExt};
use mock_upstream::{MockConfig, MockUpstream};
use tokio::task::JoinHandle;

use crate::helpers::{binary_server, login_cookie, metric_sample, until, ProcStats, HEAVY};

/// Users whose widget 1 changes.
const CHANGERS: usize = 20;
/// Changes (forced refreshes) in one measured round...
const CHANGES: usize = 400;
/// ...made this many at a time...
const CHANGE_CONCURRENCY: usize = 8;
/// ...in this many rounds per phase (the median round is the phase's figure).
const ROUNDS: usize = 3;
/// Idle users, each with one open page.
const OPEN_PAGES: usize = 2000;
/// Sign-ins in flight at once.
const LOGIN_CONCURRENCY: usize = 16;
/// The most CPU per change with the pages open, as a multiple of the figure
/// without them (issue 11; the goal is 1.2).
const MAX_CPU_RATIO: f64 = 1.5;

/// Users signed in to fill the store (5 widgets each).
const FILL_USERS: usize = 4000;
/// Users signed in before the baseline of the RSS measurement.
const WARM_UP_USERS: usize = 50;
/// The most RSS per cached entry, in bytes: 1.5 KiB (goal 1 KiB).
const MAX_RSS_PER_ENTRY: f64 = 1.5 * 1024.0;
/// The byte capacity of the capacity measurement: 4 MiB.
const BYTE_CAPACITY: u64 = 4 << 20;

/// The CPU time (user + system) of one process, from `/proc/<pid>/stat`.
struct CpuTime {
    pid: u32,
    ticks_per_sec: f64,
}

impl CpuTime {
    fn of(pid: u32) -> Self {
        let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
        let ticks_per_sec = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        Self { pid, ticks_per_sec }
    }

    /// CPU milliseconds used so far.
    fn ms(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        // After "pid (comm) ": field 3 (state) onwards; utime is field 14 and
        // stime field 15. The comm may hold spaces, so split after its ')'.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 * 1000.0 / self.ticks_per_sec
    }
}

/// `GET /metrics`, over a connection closed at once (it leaves no fd open).
async fn metrics(base: &str) -> String {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the plain gauge `name` in `/metrics`.
async fn gauge(base: &str, name: &str) -> f64 {
    metric_sample(&metrics(base).await, name, &[])
}

/// A client without cookies or redirects, with room for many connections.
fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(usize::MAX)
        .timeout(timeout)
        .build()
        .unwrap()
}

/// Signs in `prefix-0`..`prefix-{n-1}`, a few at a time; their cookies.
async fn sign_in(client: &reqwest::Client, base: &str, prefix: &str, n: usize) -> Vec<String> {
    stream::iter(0..n)
        .map(|i| {
            let (client, base) = (client.clone(), base.to_owned());
            let user = format!("{prefix}-{i}");
            async move { login_cookie(&client, &base, &user).await.unwrap() }
        })
        .buffer_unordered(LOGIN_CONCURRENCY)
        .collect()
        .await
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after `bound`.
async fn wait_until<F, Fut>(bound: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let done = until(bound, Duration::from_millis(50), || {
        let cond = cond();
        async move { cond.await.then_some(()) }
    });
    assert!(
        done.await.is_some(),
        "timed out after {bound:?} waiting for {what}"
    );
}

/// `count` forced refreshes of widget 1, spread over the changers. Returns
/// the wall time they took.
async fn make_changes(client: &reqwest::Client, base: &str, changers: &[String], count: usize) -> Duration {
    let start = Instant::now();
    let statuses: Vec<u16> = stream::iter(0..count)
        .map(|i| {
            let (client, cookie) = (client.clone(), changers[i % changers.len()].clone());
            let url = format!("{base}/widgets/1/refresh");
            async move {
                let resp = client.post(url).header("cookie", cookie).send().await.unwrap();
                let status = resp.status().as_u16();
                let _ = resp.bytes().await;
                status
            }
        })
        .buffer_unordered(CHANGE_CONCURRENCY)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "a refresh failed: {statuses:?}"
    );
    start.elapsed()
}

/// One measured round of changes.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// Server CPU per change, in milliseconds.
    cpu_ms_per_change: f64,
    /// Changes per second of wall time.
    changes_per_sec: f64,
}

/// One round: the server's CPU over [`CHANGES`] changes.
async fn measure_round(cpu: &CpuTime, client: &reqwest::Client, base: &str, changers: &[String]) -> Round {
    let before = cpu.ms();
    let wall = make_changes(client, base, changers, CHANGES).await;
    let used = cpu.ms() - before;
    Round {
        cpu_ms_per_change: used / CHANGES as f64,
        changes_per_sec: CHANGES as f64 / wall.as_secs_f64(),
    }
}

fn median(rounds: &[Round]) -> f64 {
    let mut v: Vec<f64> = rounds.iter().map(|r| r.cpu_ms_per_change).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn print_rounds(phase: &str, rounds: &[Round]) {
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "  {phase} round {}: {:.3} ms CPU per change, {:.0} changes/s",
            i + 1,
            r.cpu_ms_per_change,
            r.changes_per_sec
        );
    }
    println!("  {phase} median: {:.3} ms CPU per change", median(rounds));
}

/// Idle users' open pages: one `/updates` long-poll each, re-issued when it
/// answers (after the server's 25 s), as the page does. Aborted on drop.
struct OpenPages {
    tasks: Vec<JoinHandle<()>>,
    /// Polls answered so far (each is re-issued at once).
    answered: Arc<AtomicU64>,
    /// Polls that failed (transport error or not 200).
    failed: Arc<AtomicU64>,
}

impl OpenPages {
    fn open(client: &reqwest::Client, base: &str, cookies: Vec<String>) -> Self {
        // Far in the future: nothing the page holds counts as changed.
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() + 3_600_000;
        let url = format!("{base}/updates?since={since}");
        let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let tasks = cookies
            .into_iter()
            .map(|cookie| {
                let (client, url) = (client.clone(), url.clone());
                let (answered, failed) = (answered.clone(), failed.clone());
                tokio::spawn(async move {
                    loop {
                        match client.get(&url).header("cookie", &cookie).send().await {
                            Ok(resp) if resp.status() == 200 => {
                                let _ = resp.bytes().await;
                                answered.fetch_add(1, Ordering::SeqCst);
                            }
                            _ => {
                                failed.fetch_add(1, Ordering::SeqCst);
                                // A sleep is the point: a failed poll is re-issued
                                // after a pause, as htmx does, not in a hot loop.
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            tasks,
            answered,
            failed,
        }
    }

    /// Polls answered or failed so far: any in a measured window means the
    /// window also paid for re-issued polls.
    fn events(&self) -> u64 {
        self.answered.load(Ordering::SeqCst) + self.failed.load(Ordering::SeqCst)
    }

    /// Waits until no poll has answered for `gap` (between two waves).
    async fn wait_quiet(&self, gap: Duration) {
        let seen = std::sync::Mutex::new((self.events(), Instant::now()));
        let seen = &seen;
        let quiet = until(
            Duration::from_secs(60),
            Duration::from_millis(100),
            || async move {
                let mut seen = seen.lock().unwrap();
                let now = self.events();
                if now != seen.0 {
                    *seen = (now, Instant::now());
                }
                (seen.1.elapsed() >= gap).then_some(())
            },
        )
        .await;
        assert!(quiet.is_some(), "the polls never went quiet for {gap:?}");
    }
}

impl Drop for OpenPages {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A round measured while the pages are open and none of their polls is
/// answered or re-issued (redone, between waves, if one was).
async fn measure_round_quiet(
    pages: &OpenPages,
    cpu: &CpuTime,
    client: &reqwest::Client,
    base: &str,
    changers: &[String],
) -> Round {
    for _attempt in 0..4 {
        let before = pages.events();
        let round = measure_round(cpu, client, base, changers).await;
        if pages.events() == before {
            return round;
        }
        println!("  (a wave of re-issued polls fell in the round: measured again)");
        pages.wait_quiet(Duration::from_secs(2)).await;
    }
    panic!("no round fell between two waves of re-issued polls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (about 30 s), run by hand"]
async fn cpu_per_change_with_2000_open_pages() {
    let _heavy = HEAVY.lock().await;

    // Arrange: a fast mock, the binary without prewarm, 20 changers whose
    // widget 1 is cached.
    let mock = MockUpstream::start("127.0.0.1:0", MockConfig::with_delays_ms([1; 5]))
        .await
        .unwrap();
    let server = binary_server(
        "scale-cpu",
        &["--upstream-url", &mock.url(), "--no-prewarm", "--workers", "2"],
    )
    .await;
    let (pid, base) = (server.pid(), server.base.clone());
    let cpu = CpuTime::of(pid);
    let client = client(Duration::from_secs(60));
    let changers = sign_in(&client, &base, "scale-changer", CHANGERS).await;
    for cookie in &changers {
        let resp = client
            .get(format!("{base}/widgets/1"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.bytes().await;
    }
    // One unmeasured round, so lazily built things exist before phase A.
    make_changes(&client, &base, &changers, CHANGES / 4).await;

    // Act, phase A: changes with no open page.
    let no_pages: Vec<Round> = {
        let mut rounds = Vec::new();
        for _ in 0..ROUNDS {
            rounds.push(measure_round(&cpu, &client, &base, &changers).await);
        }
        rounds
    };
    let stats_no_pages = ProcStats::of(pid);

    // Act, phase B: 2,000 idle users open their pages...
    let idle = sign_in(&client, &base, "scale-idle", OPEN_PAGES).await;
    let opening = Instant::now();
    let pages = OpenPages::open(&client, &base, idle);
    wait_until(Duration::from_secs(60), "2,000 open pages", || async {
        gauge(&base, "percache_open_pages").await >= OPEN_PAGES as f64
    })
    .await;
    let opened_in = opening.elapsed();
    let stats_open = ProcStats::of(pid);
    // ...the server idles with them open...
    let idle_window = Duration::from_secs(5);
    let (idle_events, idle_cpu_before) = (pages.events(), cpu.ms());
    // A sleep is the point: the CPU an idle server spends over a fixed window.
    tokio::time::sleep(idle_window).await;
    let idle_cpu = cpu.ms() - idle_cpu_before;
    let idle_polls_answered = pages.events() - idle_events;
    // ...and the changers change their widgets again.
    let with_pages: Vec<Round> = {
        let mut rounds = Vec::new();
        for _ in 0..ROUNDS {
            rounds.push(measure_round_quiet(&pages, &cpu, &client, &base, &changers).await);
        }
        rounds
    };
    let open_after = gauge(&base, "percache_open_pages").await;
    let failed_polls = pages.failed.load(Ordering::SeqCst);
    let answered_polls = pages.answered.load(Ordering::SeqCst);
    let since_opened = opening.elapsed();

    // Control: the pages closed, phase A's changes once more.
    drop(pages);
    wait_until(Duration::from_secs(30), "the pages to close", || async {
        gauge(&base, "percache_open_pages").await == 0.0
    })
    .await;
    let closed_again: Vec<Round> = {
        let mut rounds = Vec::new();
        for _ in 0..ROUNDS {
            rounds.push(measure_round(&cpu, &client, &base, &changers).await);
        }
        rounds
    };

    let (a, b, c) = (median(&no_pages), median(&with_pages), median(&closed_again));
    let ratio = b / a;
    println!("CPU per change, {CHANGES} changes per round over {CHANGERS} changers, {CHANGE_CONCURRENCY} at a time:");
    print_rounds("A (no open page)", &no_pages);
    print_rounds("B (2,000 open pages)", &with_pages);
    print_rounds("A' (pages closed again)", &closed_again);
    println!(
        "  ratio B/A: {ratio:.2} (at most {MAX_CPU_RATIO}, goal 1.2); B/A': {:.2}",
        b / c
    );
    println!(
        "open pages: {OPEN_PAGES} open in {:.1} s; gauge after the rounds {open_after}; \
         {answered_polls} polls answered and re-issued, {failed_polls} failed, in {:.1} s",
        opened_in.as_secs_f64(),
        since_opened.as_secs_f64()
    );
    println!(
        "idle with 2,000 open pages: {idle_cpu:.0} ms CPU over {:.0} s ({:.2}% of a core), \
         {idle_polls_answered} polls answered in that window",
        idle_window.as_secs_f64(),
        idle_cpu / idle_window.as_secs_f64() / 10.0
    );
    println!(
        "server: no open page RSS {} kB, {} fds, {} threads; 2,000 open pages RSS {} kB, {} fds, {} threads \
         ({:.1} kB per open page)",
        stats_no_pages.rss_kb,
        stats_no_pages.fds,
        stats_no_pages.threads,
        stats_open.rss_kb,
        stats_open.fds,
        stats_open.threads,
        (stats_open.rss_kb as f64 - stats_no_pages.rss_kb as f64) / OPEN_PAGES as f64
    );

    // Assert: the pages stayed open, and an idle page costs (almost) nothing
    // when another user's data changes.
    assert!(
        open_after >= OPEN_PAGES as f64,
        "pages closed: gauge {open_after}"
    );
    assert_eq!(failed_polls, 0, "some polls failed");
    assert!(
        ratio <= MAX_CPU_RATIO,
        "CPU per change with 2,000 open pages is {ratio:.2}× the figure without ({b:.3} vs {a:.3} ms)"
    );
}

/// Signs in `n` users, a few at a time, and waits until each has its 5
/// widgets cached and no fetch is in flight. Sign-in prewarms the 5 widgets;
/// each user then reads them, which joins the prewarm's fetches (or makes
/// the one a prewarm skipped at the upstream-call cap), so the load goes at
/// the pace of the fetches and every entry is made once.
async fn fill(base: &str, mock: &MockUpstream, prefix: &str, n: usize) {
    let client = client(Duration::from_secs(30));
    let calls_before = mock.total_calls();
    let start = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let (client, base) = (client.clone(), base.to_owned());
            let user = format!("{prefix}-{i}");
            async move {
                let cookie = login_cookie(&client, &base, &user).await.unwrap();
                for id in 1..=5 {
                    let resp = client
                        .get(format!("{base}/widgets/{id}"))
                        .header("cookie", &cookie)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200, "{user}: GET /widgets/{id}");
                    let _ = resp.bytes().await;
                }
            }
        })
        .buffer_unordered(LOGIN_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let expected = calls_before + 5 * n as u64;
    wait_until(Duration::from_secs(30), "the fetches to land", || async {
        mock.total_calls() >= expected && gauge(base, "percache_fetches_in_flight").await == 0.0
    })
    .await;
    let text = metrics(base).await;
    println!(
        "  {n} users signed in and read their widgets in {:.1} s: {} upstream calls, \
         {} prewarm fetches, {} background fetches skipped at the upstream-call cap",
        start.elapsed().as_secs_f64(),
        mock.total_calls() - calls_before,
        metric_sample(&text, "percache_prewarm_total", &[]),
        metric_sample(
            &text,
            "percache_upstream_capped_total",
            &[("kind", "background_skipped")]
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (about 20 s), run by hand"]
async fn rss_per_cached_entry_with_4000_users() {
    let _heavy = HEAVY.lock().await;

    // Arrange: the binary with prewarm and room for every entry, warmed up
    // by a few users.
    let mock = MockUpstream::start("127.0.0.1:0", MockConfig::with_delays_ms([1; 5]))
        .await
        .unwrap();
    let server = binary_server(
        "scale-rss",
        &[
            "--upstream-url",
            &mock.url(),
            "--memory-capacity",
            "1000000",
            "--workers",
            "2",
        ],
    )
    .await;
    let (pid, base) = (server.pid(), server.base.clone());
    let started = ProcStats::of(pid);
    fill(&base, &mock, "scale-warm", WARM_UP_USERS).await;
    let before = ProcStats::of(pid);
    let entries_before = gauge(&base, "percache_cache_entries").await;

    // Act: 4,000 users, each prewarming its 5 widgets.
    fill(&base, &mock, "scale-user", FILL_USERS).await;
    let after = ProcStats::of(pid);
    let text = metrics(&base).await;
    let entries = metric_sample(&text, "percache_cache_entries", &[]);
    let bytes = metric_sample(&text, "percache_cache_bytes", &[]);

    let added = entries - entries_before;
    let rss_per_entry = (after.rss_kb as f64 - before.rss_kb as f64) * 1024.0 / added;
    println!(
        "RSS: {} kB after start, {} kB after {WARM_UP_USERS} warm-up users ({entries_before} entries), \
         {} kB after {FILL_USERS} more users (peak {} kB)",
        started.rss_kb, before.rss_kb, after.rss_kb, after.hwm_kb
    );
    println!(
        "entries: {entries} ({added} added, {} upstream calls); store bytes {bytes} \
         ({:.0} B per entry as the store counts them)",
        mock.total_calls(),
        bytes / entries
    );
    println!(
        "RSS per cached entry: {rss_per_entry:.0} B ({:.2} KiB; at most 1.5 KiB, goal 1 KiB)",
        rss_per_entry / 1024.0
    );

    // Assert: every entry is held, and each costs at most 1.5 KiB of RSS.
    assert_eq!(added, (5 * FILL_USERS) as f64, "entries were added, none evicted");
    assert!(
        rss_per_entry <= MAX_RSS_PER_ENTRY,
        "{rss_per_entry:.0} B of RSS per cached entry (at most {MAX_RSS_PER_ENTRY} B)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (about 20 s), run by hand"]
async fn byte_capacity_is_honoured_within_10_percent() {
    let _heavy = HEAVY.lock().await;

    // Arrange: the binary with a 4 MiB store.
    let mock = MockUpstream::start("127.0.0.1:0", MockConfig::with_delays_ms([1; 5]))
        .await
        .unwrap();
    let server = binary_server(
        "scale-bytes",
        &[
            "--upstream-url",
            &mock.url(),
            "--memory-capacity",
            "4MiB",
            "--workers",
            "2",
        ],
    )
    .await;
    let base = server.base.clone();

    // Act: 4,000 users offer 20,000 entries, more than 4 MiB.
    fill(&base, &mock, "scale-user", FILL_USERS).await;
    let text = metrics(&base).await;
    let entries = metric_sample(&text, "percache_cache_entries", &[]);
    let bytes = metric_sample(&text, "percache_cache_bytes", &[]);
    let offered = bytes / entries * (5 * FILL_USERS) as f64;
    let share = bytes / BYTE_CAPACITY as f64;
    println!(
        "byte capacity {BYTE_CAPACITY} B: holds {bytes} B ({:.1}% of it) in {entries} entries \
         ({:.0} B each); about {offered:.0} B offered",
        share * 100.0,
        bytes / entries
    );

    // Assert: the store was over-filled, and holds within 10% of its capacity.
    assert!(
        offered > BYTE_CAPACITY as f64 * 1.1,
        "the users did not fill the store"
    );
    assert!(
        (0.9..=1.1).contains(&share),
        "holds {bytes} B, {:.1}% of {BYTE_CAPACITY} B",
        share * 100.0
    );
}
