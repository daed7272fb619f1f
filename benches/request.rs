//! Whole-request benchmarks (issue 12): a warm hit through every layer of
//! the server but the socket and the HTTP/1 codec, the middleware stack
//! (metrics, tracing with the server's own subscriber, sessions, security
//! headers, the cross-site check), routing, the cache and the response, next
//! to `/healthz` through the same layers. What `benches/load.sh` measures
//! with the kernel and a client sharing the machine, without either: a
//! regression of the hit path shows here, in nanoseconds, as the ratio to
//! `/healthz`. Run with
//! `cargo bench --bench request -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header;
use actix_web::test::{self, TestRequest};
use clap::Parser as _;
use criterion::{criterion_group, criterion_main, Criterion};
use mock_upstream::{MockConfig, MockUpstream};

use percache::config::{LogFormat, Settings};
use percache::startup::{self, Application};

/// The request paths, each after a warm-up that made it a hit.
const PATHS: [(&str, &str); 4] = [
    ("healthz", "/healthz"),
    ("fragment_hit", "/widgets/1"),
    ("json_hit", "/api/widgets/1"),
    ("dashboard_hit", "/dashboard"),
];

/// Whether a response is a 200 served from the cache: a widget's
/// `Cache-Status` says hit, the dashboard holds every card ready.
async fn is_warm(res: ServiceResponse<impl MessageBody>) -> bool {
    let hit = res
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.contains("; hit"));
    let ok = res.status() == 200;
    let body = test::read_body(res).await;
    let ready = body.windows(18).filter(|w| w == br#"data-state="ready""#).count();
    ok && hit.unwrap_or(ready == 5)
}

fn bench_requests(c: &mut Criterion) {
    let system = actix_web::rt::System::new();
    // The server's own subscriber, at its default level: a hit logs nothing,
    // but every request opens its span, as in production.
    percache::telemetry::init(LogFormat::Pretty);
    let (mock, app) = system.block_on(async {
        let mock = MockUpstream::start("127.0.0.1:0", MockConfig::with_delays_ms([20; 5]))
            .await
            .expect("the mock starts");
        let settings = Settings::try_parse_from([
            "percache",
            "--bind",
            "127.0.0.1:0",
            "--upstream-url",
            &mock.url(),
            "--fresh",
            "1h",
            "--ttl",
            "2h",
            "--login-rate",
            "0",
        ])
        .expect("valid flags");
        let app = Application::build(settings)
            .await
            .expect("the application builds");
        (mock, app)
    });
    let service = system.block_on(test::init_service(startup::app(app.shared())));

    // Arrange: one user signed in, every widget warm. The cookie is sealed
    // with a random nonce, and its base64 has a `/` (sent as `%2F`) about
    // two times in three: signed in until it has one, so that every run
    // measures the same, common, case.
    let sign_in = || async {
        let res = test::call_service(
            &service,
            TestRequest::post()
                .uri("/login")
                .set_form([("username", "loadtest")])
                .to_request(),
        )
        .await;
        // The pair as the server sent it, escapes and all, as a browser
        // sends it back (`cookies()` would decode it).
        res.headers()
            .get_all(header::SET_COOKIE)
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find(|pair| pair.starts_with("percache_session="))
            .expect("sign-in sets the session cookie")
            .to_owned()
    };
    let cookie = system.block_on(async {
        for _ in 0..50 {
            let cookie = sign_in().await;
            if cookie.contains('%') {
                return cookie;
            }
        }
        panic!("50 session cookies without an escape")
    });
    let request = |path: &str| {
        let req = TestRequest::get().uri(path);
        match path {
            "/healthz" => req,
            _ => req.insert_header((header::COOKIE, cookie.as_str())),
        }
        .to_request()
    };
    system.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        for (_, path) in &PATHS[1..] {
            while !is_warm(test::call_service(&service, request(path)).await).await {
                assert!(Instant::now() < deadline, "{path} never became a hit");
                actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    let mut g = c.benchmark_group("request");
    for (name, path) in PATHS {
        // Each response checked once more, outside the measurement: a
        // miss would measure the wrong path.
        let res = system.block_on(test::call_service(&service, request(path)));
        assert_eq!(res.status(), 200, "{path}");
        assert!(
            path == "/healthz" || system.block_on(is_warm(res)),
            "{path} is not warm"
        );
        g.bench_function(name, |b| {
            b.iter(|| system.block_on(service.call(black_box(request(path)))).map(drop))
        });
    }
    g.finish();
    system.block_on(mock.stop());
}

criterion_group!(benches, bench_requests);
criterion_main!(benches);
