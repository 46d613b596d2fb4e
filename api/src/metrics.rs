//! `/metrics` and the per-request HTTP metrics.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use paperhook_core::metrics;
use salvo::http::Method;
use salvo::prelude::*;

/// Queue gauges are refreshed from the database at most this often per process.
const QUEUE_REFRESH: Duration = Duration::from_secs(5);
static LAST_REFRESH: Mutex<Option<Instant>> = Mutex::new(None);

/// Counts and times every request by route template, method and status class.
#[handler]
pub async fn track(req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
    let started = Instant::now();
    ctrl.call_next(req, depot, res).await;
    let route = match req.matched_path() {
        "" => "unmatched".to_owned(),
        p if p.starts_with('/') => p.to_owned(),
        p => format!("/{p}"),
    };
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "other",
    };
    let class = match res.status_code.map(|s| s.as_u16()).unwrap_or(200) {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::HTTP_REQUESTS
        .with_label_values(&[route.as_str(), method, class])
        .inc();
    metrics::HTTP_DURATION
        .with_label_values(&[route.as_str(), method])
        .observe(started.elapsed().as_secs_f64());
}

/// Prometheus metrics of this process (and the queue, read from the database).
#[handler]
pub async fn scrape(depot: &mut Depot, res: &mut Response) {
    let due = {
        let mut last = LAST_REFRESH.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= QUEUE_REFRESH);
        if due {
            *last = Some(Instant::now());
        }
        due
    };
    if due && let Err(e) = metrics::refresh_queue(&crate::state(depot).pool).await {
        tracing::warn!(error = %e, "refreshing queue metrics");
    }
    res.headers_mut().insert(
        "content-type",
        salvo::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res.render(metrics::render());
}
