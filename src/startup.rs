//! Building and running the application: store, upstream, cache, routes.
//!
//! [`Application::build`] binds its listener before returning, so with
//! `--bind 127.0.0.1:0` a test learns the port and can talk to it at once.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use mock_upstream::{MockConfig, MockUpstream};
use tracing_actix_web::TracingLogger;

use crate::cache::{CacheParts, CachePolicy, WidgetCache};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::defence::cross_site::refuse_cross_site;
use crate::defence::login_rate::LoginLimiter;
use crate::defence::replay::{self, ReplayGuard};
use crate::routes::{self, AppState};
use crate::session;
use crate::telemetry::Metrics;
use crate::upstream::{HttpFetcher, UpstreamSettings};
use crate::widget::Registry;

/// How long in-flight requests get to finish after SIGTERM.
pub const SHUTDOWN_TIMEOUT_SECS: u64 = 30;
/// How long background refreshes get to land after SIGTERM.
pub const REFRESH_DRAIN: Duration = Duration::from_secs(10);

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Largest form body accepted (the sign-in form is one short field).
const FORM_LIMIT: usize = 4 * 1024;

/// Content-Security-Policy: same-origin scripts and styles only, no inline code.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// A bound, not yet running, server.
pub struct Application {
    address: SocketAddr,
    server: Server,
    cache: Arc<WidgetCache>,
    upstream_url: String,
    /// The in-process mock, when no upstream URL was given; kept alive with the server.
    mock: Option<MockUpstream>,
    /// What the server's workers share, for [`app`]; its recorder is kept
    /// up while the server runs.
    shared: Shared,
}

impl Application {
    /// Builds the server with the real clock.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Builds the server with the given clock (tests pass a mock clock).
    /// Reads top to bottom: widgets and policy, upstream, store, cache, HTTP.
    pub async fn build_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        crate::tls::install_provider();
        let registry = Arc::new(match &settings.widgets {
            Some(path) => crate::widget::file::load(path)?,
            None => Registry::builtin(),
        });
        let policy = CachePolicy::from_settings(&registry, &settings.lifetimes)?;
        let (upstream_url, mock) = upstream_or_mock(&settings, &registry).await?;
        let fetcher = fetcher_of(&settings, &registry, &upstream_url)?;
        let stack = crate::cache::store_from_settings(&settings.store, Arc::clone(&clock)).await?;
        // The webhook's "seen once" record: in the shared Redis when there is one.
        // Ended sessions: in the shared Redis too, announced on the feed.
        let session_ends = session::ended::SessionEnds::kept(
            settings.session_max_age,
            Arc::clone(&clock),
            stack.redis.clone(),
            stack.sqlite.clone(),
            Arc::clone(&stack.changes),
        );
        session_ends.reload().await;
        session_ends.spawn_reloads();
        let replay_guard = match stack.redis {
            Some(redis) => ReplayGuard::redis(redis, routes::invalidate::REPLAY_WINDOW),
            None => ReplayGuard::in_memory(replay::MEMORY_CAPACITY, routes::invalidate::REPLAY_WINDOW),
        };
        // This application's own recorder: each worker records to it.
        let metrics = Metrics::new();
        let cache = Arc::new(WidgetCache::new(
            CacheParts {
                store: stack.store,
                lease: stack.lease,
                changes: stack.changes,
                fetcher,
                registry: Arc::clone(&registry),
                policy,
                clock,
                metrics: Some(metrics.clone()),
            },
            &settings.cache,
            settings.upstream_timeout,
        ));
        // Invalidations for all users made before this instance started.
        cache.reload_generations().await;
        cache.spawn_generation_reloads();

        let session_key = session::session_key(settings.session_key.as_deref())?;
        if let Some(token) = settings.admin_token.as_deref().filter(|t| !t.is_empty()) {
            anyhow::ensure!(
                token.chars().count() >= crate::admin::auth::MIN_TOKEN_CHARS,
                "--admin-token (ADMIN_TOKEN) is {} characters long; it must be at least {} (e.g. `openssl rand -hex 32`)",
                token.chars().count(),
                crate::admin::auth::MIN_TOKEN_CHARS
            );
        }
        let listener =
            TcpListener::bind(&settings.bind).with_context(|| format!("binding {}", settings.bind))?;
        let address = listener.local_addr()?;
        let shared = Shared {
            state: web::Data::new(AppState {
                cache: Arc::clone(&cache),
                prewarm: settings.prewarm_enabled(),
                invalidation_secret: settings.invalidation_secret.clone().filter(|s| !s.is_empty()),
                metrics: metrics.clone(),
            }),
            // The operator page; with --admin-token its sampler starts here.
            admin: web::Data::from(crate::admin::Admin::start(
                settings.admin_token.as_deref(),
                session_key.master(),
                settings.secure_cookies,
                Arc::clone(&cache),
                metrics.clone(),
            )),
            replay_guard: web::Data::new(replay_guard),
            login_limiter: web::Data::new(LoginLimiter::new(settings.login_rate, settings.proxies())),
            session_key: session_key.clone(),
            secure_cookies: settings.secure_cookies,
            session_ends: web::Data::from(session_ends),
            identity: match settings.user_header.as_deref().filter(|h| !h.is_empty()) {
                Some(name) => Some(web::Data::new(
                    crate::defence::identity::IdentityHeader::new(
                        name,
                        settings.proxies(),
                        settings.lifetimes.fresh,
                    )
                    .map_err(anyhow::Error::msg)?,
                )),
                None => None,
            },
            wrong_tokens: web::Data::new(crate::defence::login_rate::WrongTokens::default()),
            logout: web::Data::new(routes::auth::Logout {
                url: settings.logout_url.clone(),
            }),
            metrics,
        };
        let server = http_server(listener, settings.workers, shared.clone())?;
        Ok(Self {
            address,
            server,
            cache,
            upstream_url,
            mock,
            shared,
        })
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The cache, for tests and tools.
    pub fn cache(&self) -> Arc<WidgetCache> {
        Arc::clone(&self.cache)
    }

    /// The upstream in use.
    pub fn upstream_url(&self) -> &str {
        &self.upstream_url
    }

    /// What the server's workers share: give it to [`app`] to call the
    /// application in-process.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Runs until SIGTERM or SIGINT, then stops gracefully (see [`Application::run_until`]).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Runs until `shutdown` resolves, then stops gracefully: no new
    /// connections are accepted, background refreshes get up to
    /// [`REFRESH_DRAIN`] to land, then in-flight requests finish (up to
    /// [`SHUTDOWN_TIMEOUT_SECS`]). Tests pass a future of their own, to stop
    /// a server in-process as SIGTERM would.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let handle = self.server.handle();
        let cache = Arc::clone(&self.cache);
        let on_shutdown = tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: draining background refreshes and in-flight requests");
            handle.pause().await;
            if !cache.wait_idle(REFRESH_DRAIN).await {
                tracing::warn!(
                    left = cache.fetches_in_flight(),
                    "background refreshes still running; stopping anyway"
                );
            }
            handle.stop(true).await;
        });
        let upkeep = tokio::spawn(self.shared.metrics.clone().keep_up());
        let result = self.server.await;
        on_shutdown.abort();
        upkeep.abort();
        if let Some(mock) = self.mock {
            mock.stop().await;
        }
        result
    }
}

/// The upstream's base URL: `--upstream-url` (or `MOCK_API`), else the
/// widgets file's, else an in-process mock started here (a demo with no
/// set-up), which the application keeps alive.
async fn upstream_or_mock(
    settings: &Settings,
    registry: &Registry,
) -> anyhow::Result<(String, Option<MockUpstream>)> {
    if let Some(url) = settings.upstream_url().or(registry.upstream().base_url.clone()) {
        return Ok((url, None));
    }
    let mock = MockUpstream::start("127.0.0.1:0", MockConfig::default())
        .await
        .context("starting the in-process mock upstream")?;
    tracing::info!(url = %mock.url(), "no --upstream-url: started the mock upstream in-process");
    Ok((mock.url(), Some(mock)))
}

/// The widgets API at `url`, over TLS trusting `--upstream-ca` too, with
/// the widgets file's headers on every call.
fn fetcher_of(settings: &Settings, registry: &Registry, url: &str) -> anyhow::Result<Arc<HttpFetcher>> {
    let tls = crate::tls::client_config(settings.upstream_ca.as_deref()).context("--upstream-ca")?;
    let headers = &registry.upstream().headers;
    let upstream = UpstreamSettings::new(url, headers, settings.upstream_timeout, tls)
        .context("upstream headers")?
        .with_redirects(registry.upstream().redirects);
    Ok(Arc::new(HttpFetcher::new(Arc::new(upstream))))
}

/// What every worker's `App` shares.
#[derive(Clone)]
pub struct Shared {
    state: web::Data<AppState>,
    admin: web::Data<crate::admin::Admin>,
    replay_guard: web::Data<ReplayGuard>,
    login_limiter: web::Data<LoginLimiter>,
    session_key: actix_web::cookie::Key,
    secure_cookies: bool,
    session_ends: web::Data<session::ended::SessionEnds>,
    identity: Option<web::Data<crate::defence::identity::IdentityHeader>>,
    wrong_tokens: web::Data<crate::defence::login_rate::WrongTokens>,
    logout: web::Data<routes::auth::Logout>,
    metrics: Metrics,
}

/// The HTTP server on `listener`: every worker serves [`app`]. `workers` 0:
/// one per core. Signals are not its business: [`Application::run_until`]
/// stops it, after the background fetches land.
fn http_server(listener: TcpListener, workers: usize, shared: Shared) -> std::io::Result<Server> {
    let mut server = HttpServer::new(move || app(&shared))
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS);
    if workers > 0 {
        server = server.workers(workers);
    }
    Ok(server.run())
}

/// One worker's application: the middleware stack (outermost last) and the
/// routes, over the state every worker shares. Built once on each worker
/// thread, before it serves; the whole-request benchmarks call it
/// in-process with `actix_web::test` (every layer but the socket), on an
/// actix runtime, and the requests they make count in the server's metrics.
pub fn app(
    shared: &Shared,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    shared.metrics.record_on_this_thread();
    let routes = Rc::new(crate::telemetry::RouteTable::default());
    let mut app = App::new();
    if let Some(identity) = &shared.identity {
        app = app.app_data(identity.clone()).app_data(session::ProxyIdentity);
    }
    app
        // Innermost: the proxy's user (if that is the mode), the client's
        // turn for the upstream, then cross-site refusal.
        .wrap(actix_web::middleware::from_fn(crate::defence::identity::identify))
        .wrap(actix_web::middleware::from_fn(
            crate::defence::fair_share::in_turn,
        ))
        .wrap(actix_web::middleware::from_fn(refuse_cross_site))
        .wrap(
            DefaultHeaders::new()
                .add(("Content-Security-Policy", CSP))
                .add(("X-Content-Type-Options", "nosniff"))
                .add(("X-Frame-Options", "DENY"))
                .add(("Referrer-Policy", "same-origin")),
        )
        .wrap(session::middleware(
            shared.session_key.clone(),
            shared.secure_cookies,
            shared.session_ends.max_age(),
            shared.session_ends.clone().into_inner(),
        ))
        .wrap(TracingLogger::<crate::telemetry::RequestSpan>::new())
        .wrap(actix_web::middleware::from_fn(move |req, next| {
            crate::telemetry::track(Rc::clone(&routes), req, next)
        }))
        // This worker's own copy (see `AppState`).
        .app_data(web::Data::new(AppState::clone(&shared.state)))
        .app_data(shared.admin.clone())
        .app_data(shared.replay_guard.clone())
        .app_data(shared.login_limiter.clone())
        .app_data(shared.session_ends.clone())
        .app_data(shared.logout.clone())
        .app_data(shared.wrong_tokens.clone())
        .app_data(web::FormConfig::default().limit(FORM_LIMIT))
        .app_data(web::PathConfig::default())
        .configure(routes::configure)
}
