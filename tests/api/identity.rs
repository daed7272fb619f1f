//! Identity from a proxy (`--user-header`, SPEC §4): the user is the
//! header's value, taken only from `--trusted-proxies`; the header wins
//! over any cookie; the sign-in form is off; the first request prewarms.

use std::time::Duration;

use percache::defence::login_rate::parse_trusted_proxies;

use crate::helpers::{eventually, login_cookie, spawn_app, start_and_fail, StoreKind, TestApp};

const HEADER: &str = "X-Forwarded-User";

/// A client bound to `local` (127.0.0.1 is the trusted proxy; 127.0.0.2 is not).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local.parse::<std::net::IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn proxied_app() -> TestApp {
    spawn_app(StoreKind::Memory)
        .settings(|s| {
            s.user_header = Some(HEADER.into());
            s.trusted_proxies = Some(parse_trusted_proxies("127.0.0.1/32").unwrap());
        })
        .await
}

#[tokio::test]
async fn the_user_is_the_trusted_proxys_header_and_nothing_else() {
    let app = proxied_app().await;
    let proxy = client_from("127.0.0.1");
    let api = app.url("/api/widgets/1");

    let alice = proxy
        .get(&api)
        .header(HEADER, "alice@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(alice.status(), 200);
    let json: serde_json::Value = alice.json().await.unwrap();
    assert_eq!(json["data"]["userId"], "alice@example.com");

    let none = proxy.get(&api).send().await.unwrap();
    assert_eq!(none.status(), 401, "no header from the proxy: not signed in");
    let page = proxy.get(app.url("/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), 401);
    assert!(page.text().await.unwrap().contains("not signed in"));

    let bad = proxy.get(&api).header(HEADER, "..").send().await.unwrap();
    assert_eq!(bad.status(), 401, "validated like a username");

    let outsider = client_from("127.0.0.2");
    let forged = outsider
        .get(&api)
        .header(HEADER, "alice@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401, "the header from anywhere else is ignored");

    assert_eq!(
        proxy.get(app.url("/login")).send().await.unwrap().status(),
        404,
        "the form is off"
    );
    let post = proxy
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 404);
}

#[tokio::test]
async fn the_header_wins_over_a_cookie_of_another_user() {
    // A cookie for bob, minted by an app with the same session key.
    let form_app = spawn_app(StoreKind::Memory).without_prewarm().await;
    let bobs = login_cookie(&client_from("127.0.0.1"), &form_app.address, "bob")
        .await
        .unwrap();
    let app = proxied_app().await;
    let proxy = client_from("127.0.0.1");

    let resp = proxy
        .get(app.url("/api/widgets/1"))
        .header(HEADER, "alice")
        .header("cookie", &bobs)
        .send()
        .await
        .unwrap();
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["data"]["userId"], "alice");
    let cookie_only = proxy
        .get(app.url("/api/widgets/1"))
        .header("cookie", &bobs)
        .send()
        .await
        .unwrap();
    assert_eq!(cookie_only.status(), 401, "a cookie alone signs nobody in");
}

#[tokio::test]
async fn the_first_request_in_a_window_prewarms_once() {
    let app = proxied_app().await;
    let proxy = client_from("127.0.0.1");
    for _ in 0..3 {
        let page = proxy
            .get(app.url("/dashboard"))
            .header(HEADER, "carol")
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
    }
    eventually(
        Duration::from_secs(10),
        || (1..=5).all(|w| app.mock.calls_for("carol", w) >= 1),
        || {
            format!(
                "carol's widgets were not prewarmed: {:?}",
                app.mock.calls_by_key()
            )
        },
    )
    .await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        crate::helpers::metric_sample(&metrics, "percache_prewarm_total", &[]),
        5.0,
        "one prewarm of five widgets, not three"
    );
    let out = proxy
        .post(app.url("/logout"))
        .header(HEADER, "carol")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
}

#[test]
fn start_up_fails_without_trusted_proxies() {
    let (code, stderr) = start_and_fail(&["--user-header", HEADER], &[]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("--trusted-proxies"), "{stderr}");
}

/// Behind a real nginx doing `auth_basic` and passing the user on
/// (`proxy_set_header X-Forwarded-User $remote_user`, SPEC §4, issue 27):
/// through it alice gets alice's dashboard and JSON, bob bob's, and nobody
/// gets in without a password; straight from 127.0.0.2 the header is
/// refused.
#[tokio::test]
async fn behind_nginx_auth_basic_each_user_is_who_nginx_says() {
    let app = proxied_app().await;
    let nginx = Nginx::start(&app.address).await;
    let client = reqwest::Client::new();
    let get = |user: Option<(&str, &str)>, path: &str| {
        let mut req = client.get(nginx.url(path));
        if let Some((name, password)) = user {
            req = req.basic_auth(name, Some(password));
        }
        req.send()
    };

    let alice = get(Some(("alice", "alice-pw")), "/api/widgets/1").await.unwrap();
    assert_eq!(alice.status(), 200);
    let json: serde_json::Value = alice.json().await.unwrap();
    assert_eq!(json["data"]["userId"], "alice");
    let page = get(Some(("alice", "alice-pw")), "/dashboard").await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("alice"), "alice's dashboard");
    let bob = get(Some(("bob", "bob-pw")), "/api/widgets/1").await.unwrap();
    let json: serde_json::Value = bob.json().await.unwrap();
    assert_eq!(json["data"]["userId"], "bob", "bob's own data");

    let nobody = get(None, "/api/widgets/1").await.unwrap();
    assert_eq!(nobody.status(), 401, "nginx asks for a password");
    let wrong = get(Some(("alice", "guess")), "/api/widgets/1").await.unwrap();
    assert_eq!(wrong.status(), 401);

    let forged = client_from("127.0.0.2")
        .get(app.url("/api/widgets/1"))
        .header(HEADER, "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        401,
        "the header straight from 127.0.0.2 is refused"
    );
}

/// A real nginx (Debian's) on a free port in front of `upstream`, with
/// `auth_basic` for alice and bob, passing `$remote_user` on.
struct Nginx {
    server: crate::helpers::HttpServer,
    _dir: std::path::PathBuf,
}

impl Nginx {
    async fn start(upstream: &str) -> Self {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "nginx-auth-{}-{}",
            std::process::id(),
            crate::helpers::free_port()
        ));
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        // nginx's {PLAIN} scheme: a test's passwords, not a secret.
        std::fs::write(dir.join("htpasswd"), "alice:{PLAIN}alice-pw\nbob:{PLAIN}bob-pw\n").unwrap();
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let conf_dir = dir.clone();
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is installed (scripts/test.sh installs it)");
        let server = crate::helpers::HttpServer::start("nginx", &dir, "/nginx-health", move |port| {
            let d = conf_dir.display();
            let conf = format!(
                "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log off;\n\
                   client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
                   fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
                   server {{\n    listen 127.0.0.1:{port};\n\
                     location = /nginx-health {{ return 200 'ok'; }}\n\
                     location / {{\n      auth_basic \"percache\";\n      auth_basic_user_file {d}/htpasswd;\n\
                       proxy_set_header X-Forwarded-User $remote_user;\n      proxy_set_header Host $host;\n\
                       proxy_pass http://{upstream};\n    }}\n  }}\n}}\n"
            );
            std::fs::write(conf_dir.join("nginx.conf"), conf).unwrap();
            let mut command = std::process::Command::new(bin);
            command.arg("-p").arg(&conf_dir).arg("-c").arg(conf_dir.join("nginx.conf"));
            command
        })
        .await;
        Self { server, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }
}
