//! The HTTP routes of the mock and the actix server around them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::content::{fmt_rfc3339, widget_content, Rng};
use crate::fault::FaultRequest;
use crate::{stats_key, valid_widget, Fault, Kept, Shared, DEFAULT_DAYS, MAX_DAYS, MIN_DAYS};

/// How long a hanging widget call sleeps before giving up.
const HANG: Duration = Duration::from_secs(3600);

type Data = web::Data<Shared>;

/// Builds the (not yet running) server on `listener`.
pub(crate) fn build(listener: std::net::TcpListener, shared: Arc<Shared>) -> std::io::Result<Server> {
    let data: Data = web::Data::from(shared);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/api/widgets/{id}", web::get().to(widget))
            .route("/stats", web::get().to(stats))
            .route("/stats/reset", web::post().to(reset_stats))
            .route("/faults", web::post().to(set_fault))
            .route("/bump", web::post().to(bump_route))
            .route("/healthz", web::get().to(healthz))
            .default_service(web::to(not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok(server)
}

fn error(status: StatusCode, msg: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": msg }))
}

async fn not_found() -> HttpResponse {
    error(StatusCode::NOT_FOUND, "not found")
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The widget that takes `days=`.
const ANALYTICS: u8 = 3;

/// The `days` query value of the analytics widget: absent means [`DEFAULT_DAYS`]; otherwise an
/// integer in `MIN_DAYS..=MAX_DAYS`, or the error message for a 400.
fn parse_days(raw: Option<&str>) -> Result<u32, &'static str> {
    match raw {
        None => Ok(DEFAULT_DAYS),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|d| (MIN_DAYS..=MAX_DAYS).contains(d))
            .ok_or("days must be an integer from 1 to 90"),
    }
}

/// `GET /api/widgets/{id}?userId=U` (widget 3 also `&days=N`).
async fn widget(req: HttpRequest, path: web::Path<String>, data: Data) -> HttpResponse {
    let Some(id) = path.parse::<u8>().ok().filter(|w| valid_widget(*w)) else {
        return error(StatusCode::NOT_FOUND, "unknown widget");
    };
    let mut query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let Some(user) = query.remove("userId").filter(|u| !u.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "missing userId");
    };
    // Only the analytics widget reads `days`; elsewhere it is ignored like any unknown parameter.
    let days = if id == ANALYTICS {
        match parse_days(query.get("days").map(String::as_str)) {
            Ok(days) => days,
            Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
        }
    } else {
        DEFAULT_DAYS
    };

    let idx = usize::from(id - 1);
    let _call = InFlight::begin(&data);
    let (version, fault, delay, jitter_pct, etags) = {
        let mut st = data.lock();
        st.total += 1;
        *st.by_key.entry(stats_key(&user, id)).or_insert(0) += 1;
        if st.order.len() == crate::ORDER_KEPT {
            st.order.pop_front();
        }
        st.order.push_back(stats_key(&user, id));
        // With --etags a body changes only at a bump; without, every call
        // is a new version.
        let etags = st.bodies.is_some();
        let version = st.versions.entry((user.clone(), id)).or_insert(0);
        if !etags || *version == 0 {
            *version += 1;
        }
        let version = *version;
        (
            version,
            st.faults[idx].clone(),
            st.delays[idx],
            st.jitter_pct,
            etags,
        )
    };

    match fault {
        Fault::Error(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(status, &format!("injected fault: HTTP {}", status.as_u16()));
        }
        Fault::Hang => {
            tokio::time::sleep(HANG).await;
            return error(StatusCode::GATEWAY_TIMEOUT, "injected hang");
        }
        Fault::Limited(secs) => {
            let mut resp = error(StatusCode::TOO_MANY_REQUESTS, "injected rate limit");
            if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut()
                    .insert(actix_web::http::header::RETRY_AFTER, value);
            }
            return resp;
        }
        Fault::Ok => {}
    }

    tokio::time::sleep(jittered(delay, jitter_pct)).await;

    let make = |user: String| {
        let mut body = widget_content(&user, id, days);
        body.insert("userId".into(), Value::String(user));
        body.insert("widget".into(), json!(id));
        body.insert("version".into(), json!(version));
        body.insert("generatedAt".into(), Value::String(now_rfc3339()));
        Value::Object(body)
    };
    if !etags {
        return HttpResponse::Ok().json(make(user));
    }
    // --etags: the kept body, or a 304 for a client that holds it.
    let kept = {
        let mut st = data.lock();
        let Some(bodies) = st.bodies.as_mut() else {
            return HttpResponse::Ok().json(make(user));
        };
        bodies
            .entry((user.clone(), id, days))
            .or_insert_with(|| Kept {
                body: web::Bytes::from(serde_json::to_vec(&make(user.clone())).unwrap_or_default()),
                etag: format!("\"w{id}-d{days}-v{version}\""),
                last_modified: actix_web::http::header::HttpDate::from(SystemTime::now()).to_string(),
            })
            .clone()
    };
    let holds = req
        .headers()
        .get(actix_web::http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches_etag(v, &kept.etag));
    let mut resp = if holds {
        data.lock().not_modified += 1;
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    resp.insert_header((actix_web::http::header::ETAG, kept.etag.clone()))
        .insert_header((actix_web::http::header::LAST_MODIFIED, kept.last_modified.clone()));
    if holds {
        return resp.finish();
    }
    resp.content_type("application/json").body(kept.body)
}

/// Whether an `If-None-Match` value names `etag` (weak comparison, `*` included).
fn matches_etag(header: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    header
        .split(',')
        .any(|t| t.trim() == "*" || bare(t) == bare(etag))
}

/// Changes the body of (`user`, `widget`) under `--etags`: a new version, a
/// new `ETag`. `None` without `--etags`.
pub(crate) fn bump(shared: &Shared, user: &str, widget: u8) -> Option<u64> {
    let mut st = shared.lock();
    let bodies = st.bodies.as_mut()?;
    bodies.retain(|(u, w, _), _| !(u == user && *w == widget));
    let version = st.versions.entry((user.to_owned(), widget)).or_insert(1);
    *version += 1;
    Some(*version)
}

/// Body of `POST /bump`.
#[derive(Debug, serde::Deserialize)]
struct BumpRequest {
    #[serde(rename = "userId")]
    user_id: String,
    widget: u8,
}

/// `POST /bump` with `{"userId":"u","widget":1}` (404 without `--etags`).
async fn bump_route(body: web::Bytes, data: Data) -> HttpResponse {
    if data.lock().bodies.is_none() {
        return error(StatusCode::NOT_FOUND, "not found: start the mock with --etags");
    }
    let req: BumpRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad bump request: {e}")),
    };
    if !valid_widget(req.widget) || req.user_id.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "userId and a widget from 1 to 5 are required",
        );
    }
    match bump(&data, &req.user_id, req.widget) {
        Some(version) => HttpResponse::Ok().json(json!({ "version": version })),
        None => error(StatusCode::NOT_FOUND, "not found: start the mock with --etags"),
    }
}

/// One widget call in the mock's `in_flight` count, from its arrival until
/// its answer is built or its caller drops it (the handler's future is then
/// dropped too, and with it this guard).
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn begin(shared: &'a Shared) -> Self {
        let mut st = shared.lock();
        st.in_flight += 1;
        st.peak_in_flight = st.peak_in_flight.max(st.in_flight);
        drop(st);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        st.answered += 1;
    }
}

/// Current time, RFC 3339 UTC with millisecond precision.
fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc();
    let now = now.replace_millisecond(now.millisecond()).unwrap_or(now);
    fmt_rfc3339(now)
}

/// `delay` spread by up to ± `pct` percent, pseudo-randomly.
fn jittered(delay: Duration, pct: u32) -> Duration {
    if pct == 0 || delay.is_zero() {
        return delay;
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = Rng::new(nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(32));
    let pct = u64::from(pct.min(100));
    // Factor in per-mille: 1000 ± pct*10.
    let spread = pct * 10;
    let factor = 1000 - spread + rng.below(2 * spread + 1);
    let ms = delay.as_millis().min(u128::from(u64::MAX)) as u64;
    Duration::from_millis(ms.saturating_mul(factor) / 1000)
}

/// `GET /stats`.
async fn stats(data: Data) -> HttpResponse {
    let st = data.lock();
    HttpResponse::Ok().json(json!({ "total": st.total, "byKey": st.by_key, "notModified": st.not_modified }))
}

/// `POST /stats/reset`.
async fn reset_stats(data: Data) -> HttpResponse {
    let mut st = data.lock();
    st.total = 0;
    st.answered = 0;
    st.peak_in_flight = st.in_flight;
    st.order.clear();
    st.not_modified = 0;
    st.by_key.clear();
    HttpResponse::NoContent().finish()
}

/// `POST /faults` with `{"widget":4,"mode":"error","status":503}`.
async fn set_fault(body: web::Bytes, data: Data) -> HttpResponse {
    let req: FaultRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad fault request: {e}")),
    };
    match req.into_fault() {
        Ok((widget, fault)) => {
            let shown = json!({ "widget": widget, "fault": fault });
            data.lock().faults[usize::from(widget - 1)] = fault;
            HttpResponse::Ok().json(shown)
        }
        Err(msg) => error(StatusCode::BAD_REQUEST, &msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_parse() {
        assert_eq!(parse_days(None), Ok(14));
        assert_eq!(parse_days(Some("1")), Ok(1));
        assert_eq!(parse_days(Some("30")), Ok(30));
        assert_eq!(parse_days(Some("90")), Ok(90));
        for bad in [
            "0",
            "91",
            "-1",
            "abc",
            "",
            "14.0",
            " 14",
            "1e2",
            "99999999999999999999",
        ] {
            assert!(parse_days(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn jitter_stays_in_range() {
        let d = Duration::from_millis(1000);
        assert_eq!(jittered(d, 0), d);
        for _ in 0..200 {
            let j = jittered(d, 20);
            assert!(j >= Duration::from_millis(800) && j <= Duration::from_millis(1200));
        }
    }
}
