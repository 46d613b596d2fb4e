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
                // Uploads: up to `submission_read_timeout_secs` (300 s).
                30.0, 120.0, 300.0,
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

pub static STORAGE_DELETED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "paperhook_storage_deleted_bytes_total",
            "Bytes deleted from document storage (after delivery, or by the janitor)",
        )
        .unwrap(),
    )
});

pub static JOBS_FINISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "paperhook_jobs_finished_total",
                "Jobs that reached SUCCESS or FAILED, by outcome",
            ),
            &["outcome"],
        )
        .unwrap(),
    )
});

pub static JOB_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "paperhook_job_duration_seconds",
                "Time from submission (202) to the job's final status, by outcome",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
                3600.0,
            ]),
            &["outcome"],
        )
        .unwrap(),
    )
});

pub static WEBHOOK_DELIVERY_LATENCY: LazyLock<prometheus::Histogram> = LazyLock::new(|| {
    register(
        prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "paperhook_webhook_delivery_latency_seconds",
                "Time from a document's completion to its webhook's 2xx, retries included",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
                3600.0, 7200.0, 21600.0, 43200.0, 86400.0,
            ]),
        )
        .unwrap(),
    )
});

pub static WEBHOOK_RETRIES_PENDING: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    register(
        prometheus::IntGauge::new(
            "paperhook_webhook_retries_pending",
            "Webhook deliveries that failed at least once and wait for another attempt",
        )
        .unwrap(),
    )
});

pub static WEBHOOK_OLDEST_PENDING_AGE: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    register(
        prometheus::IntGauge::new(
            "paperhook_webhook_oldest_pending_age_seconds",
            "Age of the oldest webhook delivery not yet delivered, failed or gone",
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

pub static DOCUMENTS_PROCESSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "paperhook_documents_processed_total",
                "Documents finished by workers, by outcome",
            ),
            &["outcome"],
        )
        .unwrap(),
    )
});

pub static PAGES_PROCESSED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "paperhook_pages_processed_total",
            "Pages of successfully processed documents",
        )
        .unwrap(),
    )
});

pub static CREDITS_CHARGED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "paperhook_credits_charged_total",
            "Credits charged for processed documents",
        )
        .unwrap(),
    )
});

pub static STAGE_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "paperhook_stage_duration_seconds",
                "Time spent in a processing stage",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                // A long document's stages: `document_time_limit_secs`
                // is 1,800 s.
                300.0, 1800.0,
            ]),
            &["stage", "outcome"],
        )
        .unwrap(),
    )
});

pub static WEBHOOK_ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "paperhook_webhook_attempts_total",
                "Webhook delivery attempts, by resulting delivery state and HTTP status class",
            ),
            &["outcome", "status_class"],
        )
        .unwrap(),
    )
});

pub static TASKS_IN_PROGRESS: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    register(
        prometheus::IntGauge::new(
            "paperhook_worker_tasks_in_progress",
            "Jobs and documents this worker process is working on now (webhooks being sent are not counted)",
        )
        .unwrap(),
    )
});

pub static EXTRACTIONS_ABANDONED: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    register(
        prometheus::IntGauge::new(
            "paperhook_abandoned_extractions",
            "Extractions (worker) and previews (API) that ran past their time limit, were given up and still run on a thread of this process",
        )
        .unwrap(),
    )
});

pub static WORKER_CONCURRENCY: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    register(
        prometheus::IntGauge::new(
            "paperhook_worker_concurrency",
            "Jobs and documents this worker process may work on at once (worker_concurrency; webhooks are sent in slots of their own)",
        )
        .unwrap(),
    )
});

pub static JANITOR_PURGED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "paperhook_janitor_purged_total",
                "Rows and files the janitor removed, by kind",
            ),
            &["kind"],
        )
        .unwrap(),
    )
});

pub static JANITOR_LAST_PASS: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    register(
        prometheus::IntGauge::new(
            "paperhook_janitor_last_pass_timestamp_seconds",
            "Unix time of this janitor's last complete pass as the leader",
        )
        .unwrap(),
    )
});

pub static JANITOR_STARTED: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    register(
        prometheus::IntGauge::new(
            "paperhook_janitor_started_timestamp_seconds",
            "Unix time this janitor process started: the alert on passes counts from it until a first pass completes",
        )
        .unwrap(),
    )
});

/// Counts a job that reached its final status (`SUCCESS` or `FAILED`)
/// `seconds` after it was submitted.
pub fn job_finished(status: &str, seconds: f64) {
    let outcome = if status == crate::status::SUCCESS {
        "success"
    } else {
        "failed"
    };
    JOBS_FINISHED.with_label_values(&[outcome]).inc();
    JOB_DURATION
        .with_label_values(&[outcome])
        .observe(seconds.max(0.0));
}

/// Times one processing stage (`store`, `unzip`, `render`, `ocr`,
/// `extract`, `deliver`).
pub fn observe_stage(stage: &str, ok: bool, seconds: f64) {
    STAGE_DURATION
        .with_label_values(&[stage, if ok { "ok" } else { "failed" }])
        .observe(seconds);
}

/// `2xx`..`5xx` for an HTTP status, `none` when there was no answer.
pub fn status_class(status: Option<i32>) -> &'static str {
    match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "none",
    }
}

/// Serves `GET /metrics` on `addr` for binaries without an HTTP API (worker,
/// janitor). With a pool, the queue gauges are refreshed on each scrape.
pub async fn serve(
    addr: &str,
    pool: Option<sqlx::PgPool>,
) -> std::io::Result<std::net::SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let n = match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    sock.read(&mut buf),
                )
                .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let head = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if head.starts_with("GET /metrics ") {
                    if let Some(pool) = &pool
                        && let Err(e) = refresh_queue(pool).await
                    {
                        tracing::warn!(error = %e, "refreshing queue metrics");
                    }
                    ("200 OK", render())
                } else {
                    ("404 Not Found", "not found: use GET /metrics\n".to_owned())
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(local)
}

/// Marks this binary in `paperhook_build_info`.
pub fn init(binary: &str) {
    BUILD_INFO
        .with_label_values(&[env!("CARGO_PKG_VERSION"), binary])
        .set(1);
}

/// Refreshes the queue and webhook gauges from the database: two cheap
/// queries over unfinished jobs and pending deliveries (partial indexes
/// `jobs_unfinished`, `webhook_deliveries_pending`). Every process reports
/// the same values, so any one can be scraped.
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
    let (retries, oldest): (i64, f64) = sqlx::query_as(
        // A delivery sent again on request keeps its first created_at:
        // counted as waiting, but not aged from then (a bulk resend of
        // day-old failures is no day-old backlog).
        "SELECT count(*) FILTER (WHERE attempts > 0),
                coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE redeliveries = 0)), 0)::float8
         FROM webhook_deliveries WHERE state = 'pending'",
    )
    .fetch_one(pool)
    .await?;
    WEBHOOK_RETRIES_PENDING.set(retries);
    WEBHOOK_OLDEST_PENDING_AGE.set(oldest as i64);
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
