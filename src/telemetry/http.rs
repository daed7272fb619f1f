//! The HTTP middleware: each request's route (for its log span) and
//! duration (`percache_http_request_duration_seconds{method,route,status}`),
//! with labels that stay bounded whatever clients send.

use std::rc::Rc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::HttpMessage as _;

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use metrics::Histogram;

/// The route label of a request (its pattern, `/widgets/{id}`), put in its
/// extensions by [`track`] for the request's log span.
#[derive(Clone)]
pub struct Route(pub Rc<str>);

/// Paths remembered per worker before the table starts over: far more than
/// the distinct paths a dashboard sends (the routes, with a few widget ids).
const PATHS_PER_WORKER: usize = 1024;

/// One worker's routes: each path's pattern found once (matching a path
/// against every route is a regex search), and each series' histogram
/// registered once, so a request records with neither a lookup by labels
/// nor an allocation.
#[derive(Default)]
pub struct RouteTable {
    by_path: RefCell<HashMap<Box<str>, Rc<RouteSeries>>>,
    by_pattern: RefCell<HashMap<Rc<str>, Rc<RouteSeries>>>,
}

/// One route pattern's duration histograms, by method and status.
struct RouteSeries {
    pattern: Rc<str>,
    histograms: RefCell<HashMap<(&'static str, u16), Histogram>>,
}

impl RouteTable {
    fn series(&self, req: &ServiceRequest) -> Rc<RouteSeries> {
        if let Some(series) = self.by_path.borrow().get(req.path()) {
            return Rc::clone(series);
        }
        let matched = req.match_pattern();
        let pattern: &str = matched.as_deref().unwrap_or("unmatched");
        let series = Rc::clone(
            self.by_pattern
                .borrow_mut()
                .entry(Rc::from(pattern))
                .or_insert_with_key(|pattern| {
                    Rc::new(RouteSeries {
                        pattern: Rc::clone(pattern),
                        histograms: RefCell::default(),
                    })
                }),
        );
        // Unknown paths are not remembered: a scan of random paths would
        // only push out the real ones.
        if matched.is_some() {
            let mut by_path = self.by_path.borrow_mut();
            if by_path.len() >= PATHS_PER_WORKER {
                by_path.clear();
            }
            by_path.insert(req.path().into(), Rc::clone(&series));
        }
        series
    }
}

/// A method's label: one of HTTP's own, or `other`. No label value comes
/// from the client as sent (SPEC §9): made-up methods would each be a new
/// series, for ever.
pub fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", |known| known.as_str())
}

impl RouteSeries {
    fn record(&self, method: &Method, status: StatusCode, seconds: f64) {
        let method = method_label(method);
        let mut histograms = self.histograms.borrow_mut();
        if let Some(h) = histograms.get(&(method, status.as_u16())) {
            h.record(seconds);
            return;
        }
        let h = ::metrics::histogram!(
            "percache_http_request_duration_seconds",
            "method" => method,
            "route" => self.pattern.to_string(),
            "status" => status.as_str().to_owned(),
        );
        h.record(seconds);
        histograms.insert((method, status.as_u16()), h);
    }
}

/// Records `percache_http_request_duration_seconds{method,route,status}`.
/// The route is the pattern (`/widgets/{id}`), so labels stay bounded.
/// `routes` is the worker's own table (the worker's thread records to its
/// application's recorder, where the histograms are registered).
pub async fn track(
    routes: Rc<RouteTable>,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().clone();
    let series = routes.series(&req);
    req.extensions_mut().insert(Route(Rc::clone(&series.pattern)));
    let res = next.call(req).await?;
    series.record(&method, res.status(), start.elapsed().as_secs_f64());
    Ok(res)
}
