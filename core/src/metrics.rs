//! Every Prometheus metric of Paperhook, declared once with its description.
//! Names follow `paperhook_<name>_<unit>[_total]`; labels take values from
//! small fixed sets (route templates, status classes, outcomes), never ids.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    REGISTRY
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

pub static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "paperhook_build_info",
                "Build information; the value is always 1",
            ),
            &["version", "binary"],
        )
        .unwrap(),
    )
});

pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "paperhook_http_requests_total",
                "HTTP requests answered, by route template, method and status class",
            ),
            &["route", "method", "status_class"],
        )
        .unwrap(),
    )
});

pub static HTTP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "paperhook_http_request_duration_seconds",
                "Time to answer an HTTP request",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route", "method"],
        )
        .unwrap(),
    )
});

pub static JOBS_SUBMITTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "paperhook_jobs_submitted_total",
                "Jobs accepted by POST /process-job, by document type",
            ),
            &["document_type"],
        )
        .unwrap(),
    )
});

pub static STORAGE_WRITTEN_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "paperhook_storage_written_bytes_total",
            "Bytes written to document storage",
        )
        .unwrap(),
    )
});

pub static QUEUE_DEPTH: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "paperhook_queue_depth",
                "Jobs not yet finished, by public status",
            ),
            &["status"],
        )
        .unwrap(),
    )
});

pub static QUEUE_OLDEST_AGE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "paperhook_queue_oldest_age_seconds",
                "Age of the oldest unfinished job, by public status",
            ),
            &["status"],
        )
        .unwrap(),
    )
});

/// Marks this binary in `paperhook_build_info`.
pub fn init(binary: &str) {
    BUILD_INFO
        .with_label_values(&[env!("CARGO_PKG_VERSION"), binary])
        .set(1);
}

/// Refreshes the queue gauges from the database: one cheap grouped query
/// over unfinished jobs (partial index `jobs_unfinished`). Every process
/// reports the same values, so any one can be scraped.
pub async fn refresh_queue(pool: &sqlx::PgPool) -> sqlx::Result<()> {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT status, count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
         FROM jobs WHERE finished_at IS NULL GROUP BY status",
    )
    .fetch_all(pool)
    .await?;
    for status in crate::status::ALL {
        if crate::status::is_final(status) {
            continue;
        }
        let (count, age) = rows
            .iter()
            .find(|(s, _, _)| s == status)
            .map(|(_, c, a)| (*c, *a as i64))
            .unwrap_or((0, 0));
        QUEUE_DEPTH.with_label_values(&[status]).set(count);
        QUEUE_OLDEST_AGE.with_label_values(&[status]).set(age);
    }
    Ok(())
}

/// The Prometheus text exposition of every registered metric.
pub fn render() -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&REGISTRY.gather(), &mut out)
        .expect("encoding metrics into memory cannot fail");
    String::from_utf8(out).unwrap_or_default()
}
