//! Job listing and the detail view the dashboard shows: documents, results,
//! credits charged and every webhook delivery attempt.

use std::collections::HashMap;

use paperhook_core::db::{deliveries, jobs, templates};
use paperhook_core::order::InTemplateOrder;
use paperhook_core::retention::{self, Why};
use salvo::oapi::extract::PathParam;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::auth;
use crate::error::{ApiError, ApiResult};

#[derive(Serialize, ToSchema)]
pub struct JobSummary {
    job_id: Uuid,
    template_id: Uuid,
    status: String,
    document_type: String,
    file_name: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The job's webhook deliveries so far: `pending` while any is waiting
    /// for its next attempt, else `failed` (retries spent), else `gone`
    /// (the receiver answered 410), else `delivered`; null before the first.
    delivery: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct JobList {
    jobs: Vec<JobSummary>,
    /// Pass as `cursor` for the next (older) page; null when this page is
    /// the last. Unlike an offset it does not move when new jobs arrive.
    next_cursor: Option<String>,
}

/// Filters of the job listing.
#[derive(Debug, Deserialize, ToParameters)]
#[salvo(parameters(default_parameter_in = Query))]
pub struct JobsQuery {
    /// Only jobs with this status (`NEW`, `SUCCESS`, `FAILED`, ...).
    status: Option<String>,
    /// Only the job with this id (the other filters are ignored).
    job_id: Option<String>,
    /// Only jobs of this template.
    template_id: Option<String>,
    /// Only jobs whose deliveries are in this state: `pending`, `failed`, `gone` or `delivered`.
    delivery: Option<String>,
    /// The `next_cursor` of the previous page: the jobs after it (instead
    /// of `offset`).
    cursor: Option<String>,
}

/// A page's `next_cursor`: where its last job stands in the listing's order
/// (`created_at` in microseconds, and the id). Opaque to clients.
fn cursor_of(at: chrono::DateTime<chrono::Utc>, id: Uuid) -> String {
    format!("{}.{id}", at.timestamp_micros())
}

fn parse_cursor(raw: &str) -> ApiResult<(chrono::DateTime<chrono::Utc>, Uuid)> {
    raw.trim()
        .split_once('.')
        .and_then(|(micros, id)| {
            let at = chrono::DateTime::from_timestamp_micros(micros.parse().ok()?)?;
            // Jobs are made after 1970 and before 10000: a time outside
            // PostgreSQL's range would fail the query instead.
            let year = chrono::Datelike::year(&at);
            (1970..=9999).contains(&year).then_some(())?;
            Some((at, Uuid::parse_str(id).ok()?))
        })
        .ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_cursor",
                format!(
                    "cursor {raw:?} is not one this API gave out: pass a page's next_cursor as it is"
                ),
            )
        })
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// The account's jobs, newest first; filter by `status`, `template_id` and
/// webhook `delivery` state, or find one by `job_id`. Page with `cursor`
/// (each page's `next_cursor`), or with `offset`.
#[endpoint(tags("jobs"))]
pub async fn list_jobs(
    depot: &mut Depot,
    query: JobsQuery,
    page: super::Page,
) -> ApiResult<Json<JobList>> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot);
    let status = non_empty(query.status);
    if let Some(s) = &status
        && !paperhook_core::status::ALL.contains(&s.as_str())
    {
        return Err(ApiError::unprocessable(
            "invalid_status",
            format!(
                "status {s:?} is not one of {:?}",
                paperhook_core::status::ALL
            ),
        ));
    }
    let delivery = non_empty(query.delivery);
    if let Some(d) = &delivery
        && !jobs::DELIVERY_STATES.contains(&d.as_str())
    {
        return Err(ApiError::unprocessable(
            "invalid_delivery",
            format!("delivery {d:?} is not one of {:?}", jobs::DELIVERY_STATES),
        ));
    }
    let template_id = non_empty(query.template_id)
        .map(|raw| super::parse_uuid("template_id", "invalid_template_id", &raw))
        .transpose()?;
    let (limit, offset) = page.bounds()?;
    let after = non_empty(query.cursor)
        .map(|raw| parse_cursor(&raw))
        .transpose()?;
    if after.is_some() && offset > 0 {
        return Err(ApiError::unprocessable(
            "invalid_cursor",
            "page with cursor or with offset, not both",
        ));
    }
    let filter = match non_empty(query.job_id) {
        Some(raw) => jobs::JobFilter {
            job_id: Some(super::parse_job_id(&raw)?),
            ..Default::default()
        },
        None => jobs::JobFilter {
            job_id: None,
            status: status.as_deref(),
            template_id,
            delivery: delivery.as_deref(),
            after,
        },
    };
    // One more than the page: whether another page follows.
    let mut rows = jobs::list(&state.pool, account_id, filter, limit + 1, offset).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = rows
        .last()
        .filter(|_| more)
        .map(|last| cursor_of(last.job.created_at, last.job.id));
    Ok(Json(JobList {
        next_cursor,
        jobs: rows
            .into_iter()
            .map(|row| JobSummary {
                job_id: row.job.id,
                template_id: row.job.template_id,
                status: row.job.status,
                document_type: row.job.content_type,
                file_name: row.job.file_name,
                created_at: row.job.created_at,
                finished_at: row.job.finished_at,
                delivery: row.delivery,
            })
            .collect(),
    }))
}

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct AttemptOut {
    attempted_at: chrono::DateTime<chrono::Utc>,
    status_code: Option<i32>,
    latency_ms: i32,
    response_excerpt: Option<String>,
    error_class: Option<String>,
    error_message: Option<String>,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    delivery_id: Uuid,
    #[sqlx(flatten)]
    attempt: AttemptOut,
}

/// Attempts of a delivery shown with a job: its latest ones.
pub const ATTEMPTS_SHOWN: i64 = 20;

#[derive(Serialize, ToSchema)]
pub struct DeliveryOut {
    /// The `webhook-id` header, the same on every attempt.
    webhook_id: String,
    state: String,
    /// The latest 20 attempts, oldest first (a delivery sent again many
    /// times has more: see `attempts_total`).
    attempts: Vec<AttemptOut>,
    /// How many attempts the delivery has made in all (those older than
    /// `webhook_attempts_retention_secs` are deleted and not counted); more
    /// than the length of `attempts` when only the latest are listed.
    attempts_total: i64,
    delivered_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct DocumentDetail {
    index: i32,
    file_name: Option<String>,
    status: String,
    pages: Option<i32>,
    error: Option<Value>,
    /// Keys in the order of the template's fields (then any other).
    #[salvo(schema(value_type = Option<Object>))]
    result: Option<InTemplateOrder>,
    /// Per field, in the same order: page, box, confidence and source.
    #[salvo(schema(value_type = Option<Object>))]
    fields: Option<InTemplateOrder>,
    credits_charged: i64,
    delivery: Option<DeliveryOut>,
}

#[derive(Serialize, ToSchema)]
pub struct JobDetail {
    job_id: Uuid,
    template_id: Uuid,
    status: String,
    document_type: String,
    file_name: Option<String>,
    static_values: Value,
    error: Option<Value>,
    created_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    credits_charged: i64,
    /// When the job's data was deleted on request (`DELETE /v1/jobs/{job_id}`).
    data_deleted_at: Option<chrono::DateTime<chrono::Utc>>,
    documents: Vec<DocumentDetail>,
}

fn error_json(code: &Option<String>, message: &Option<String>) -> Option<Value> {
    code.as_ref()
        .map(|c| serde_json::json!({"code": c, "message": message.clone().unwrap_or_default()}))
}

/// One job with its documents, results, charges and delivery attempts.
#[endpoint(tags("jobs"))]
pub async fn get_job(depot: &mut Depot, job_id: PathParam<String>) -> ApiResult<Json<JobDetail>> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot);
    // Every read as of one moment: an expiry or a deletion committing
    // between them would show results, charges and attempts that disagree.
    let mut snapshot = paperhook_core::db::snapshot(&state.pool).await?;
    let job = super::own_job(&mut *snapshot, account_id, &job_id.into_inner()).await?;
    // One statement per kind for the whole job (a ZIP may hold 1,000
    // documents), then joined here by document.
    let docs = jobs::documents(&mut *snapshot, job.id).await?;
    // Results past their retention are not shown, even before the janitor
    // has removed them (as `POST /v1/job-results` answers 410); nor what
    // the receivers answered, which can echo them.
    let now = paperhook_core::db::now(&mut *snapshot).await?;
    let gone = super::results::results_gone(state, &job, now);
    let mut results: HashMap<Uuid, (Value, Value)> = if gone {
        HashMap::new()
    } else {
        sqlx::query_as::<_, (Uuid, Value, Value)>(
            "SELECT document_id, result, meta FROM results WHERE job_id = $1",
        )
        .bind(job.id)
        .fetch_all(&mut *snapshot)
        .await?
        .into_iter()
        .map(|(doc, result, meta)| (doc, (result, meta)))
        .collect()
    };
    let field_order: std::sync::Arc<[String]> =
        templates::field_names(&mut *snapshot, job.template_id)
            .await?
            .into();
    let doc_ids: Vec<Uuid> = docs.iter().map(|d| d.id).collect();
    let charges: HashMap<Uuid, i64> =
        sqlx::query_as("SELECT document_id, -delta FROM credit_ledger WHERE document_id = ANY($1)")
            .bind(&doc_ids)
            .fetch_all(&mut *snapshot)
            .await?
            .into_iter()
            .collect();
    type DeliveryRow = (
        Uuid,
        Uuid,
        String,
        String,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    let deliveries: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT id, document_id, message_id, state, delivered_at FROM webhook_deliveries WHERE job_id = $1",
    )
    .bind(job.id)
    .fetch_all(&mut *snapshot)
    .await?;
    let ids: Vec<Uuid> = deliveries.iter().map(|d| d.0).collect();
    // Only the latest attempts of each delivery (redeliveries can make
    // millions): each delivery's newest by its index, read backwards and
    // stopped at the limit, then put oldest first.
    let mut attempts: HashMap<Uuid, Vec<AttemptOut>> = HashMap::new();
    for row in sqlx::query_as::<_, AttemptRow>(
        "SELECT d.id AS delivery_id, a.attempted_at, a.status_code, a.latency_ms,
                a.response_excerpt, a.error_class, a.error_message
         FROM unnest($1::uuid[]) AS d(id)
         CROSS JOIN LATERAL (
             SELECT id, attempted_at, status_code, latency_ms, response_excerpt, error_class, error_message
             FROM webhook_attempts WHERE delivery_id = d.id ORDER BY id DESC LIMIT $2
         ) a
         ORDER BY d.id, a.id",
    )
    .bind(&ids)
    .bind(ATTEMPTS_SHOWN)
    .fetch_all(&mut *snapshot)
    .await?
    {
        let mut attempt = row.attempt;
        if gone {
            attempt.response_excerpt = None;
        }
        attempts.entry(row.delivery_id).or_default().push(attempt);
    }
    // How many there are in all: counted from the index alone.
    let totals: HashMap<Uuid, i64> = sqlx::query_as(
        "SELECT delivery_id, count(*) FROM webhook_attempts
         WHERE delivery_id = ANY($1) GROUP BY delivery_id",
    )
    .bind(&ids)
    .fetch_all(&mut *snapshot)
    .await?
    .into_iter()
    .collect();
    snapshot.commit().await?;
    let mut deliveries: HashMap<Uuid, DeliveryOut> = deliveries
        .into_iter()
        .map(|(id, doc, webhook_id, state, delivered_at)| {
            let attempts = attempts.remove(&id).unwrap_or_default();
            let out = DeliveryOut {
                webhook_id,
                state,
                attempts_total: totals.get(&id).copied().unwrap_or(0),
                attempts,
                delivered_at,
            };
            (doc, out)
        })
        .collect();
    let mut documents = Vec::with_capacity(docs.len());
    let mut total = 0;
    for d in docs {
        let charged = charges.get(&d.id).copied().unwrap_or(0);
        total += charged;
        let in_order = |value| InTemplateOrder {
            value,
            fields: field_order.clone(),
        };
        let (result, fields) = match results.remove(&d.id) {
            Some((r, m)) => (Some(in_order(r)), Some(in_order(m))),
            None => (None, None),
        };
        documents.push(DocumentDetail {
            index: d.idx,
            file_name: d.file_name,
            status: d.status,
            pages: d.pages,
            error: error_json(&d.error_code, &d.error_message),
            result,
            fields,
            credits_charged: charged,
            delivery: deliveries.remove(&d.id),
        });
    }
    Ok(Json(JobDetail {
        job_id: job.id,
        template_id: job.template_id,
        status: job.status,
        document_type: job.content_type,
        file_name: job.file_name,
        static_values: job.static_values.0,
        error: error_json(&job.error_code, &job.error_message),
        created_at: job.created_at,
        finished_at: job.finished_at,
        credits_charged: total,
        data_deleted_at: job.data_deleted_at,
        documents,
    }))
}

/// Deletes a finished job's data now rather than 24 hours after it
/// finished: its stored files, results, webhook payloads (webhooks not yet
/// delivered are not sent), static values and file names (job and ZIP
/// entries, which can themselves be personal data). If a webhook of the job
/// is being sent at that moment, the answer waits for that attempt to end
/// (at most `webhook_timeout_secs`): nothing of the job is sent after the
/// 204. The job stays listed with its status, documents' statuses and
/// charges; its results answer `410 results_deleted`. Deleting again changes
/// nothing.
#[endpoint(
    tags("jobs"),
    responses(
        (status_code = 204, description = "Deleted"),
        (status_code = 409, description = "The job is still being processed (job_not_finished)"),
        (status_code = 503, description = "The storage could not delete the file; nothing was changed (storage_unavailable)"),
    )
)]
pub async fn delete_job(
    depot: &mut Depot,
    job_id: PathParam<String>,
    res: &mut Response,
) -> ApiResult<()> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot);
    let job = super::own_job(&state.pool, account_id, &job_id.into_inner()).await?;
    if !paperhook_core::status::is_final(&job.status) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_not_finished",
            "the job is still being processed; delete its data once it is SUCCESS or FAILED",
        ));
    }
    if job.data_deleted_at.is_none() {
        let target = (job.id, job.storage_key, job.file_deleted_at.is_some());
        let (done, _) = retention::purge(&state.pool, &state.storage, &[target], Why::Deleted)
            .await
            .map_err(|e| match e.downcast::<sqlx::Error>() {
                // The database down is a 503 like everywhere else.
                Ok(db) => ApiError::from(db),
                Err(e) => ApiError::internal("deleting a job's data", &format!("{e:#}")),
            })?;
        if done.is_empty() {
            return Err(ApiError::unavailable(
                "storage_unavailable",
                "the stored file could not be deleted; nothing was changed, try again",
            ));
        }
    }
    // A worker may be sending one of the job's webhooks with the payload it
    // read before the deletion: wait for that attempt to end (its timeout
    // bounds it; a dead worker's lease lapses), so that nothing of the job
    // leaves Paperhook after the 204.
    let deadline = tokio::time::Instant::now()
        + state.config.webhook_timeout()
        + std::time::Duration::from_secs(5);
    while deliveries::being_sent(&state.pool, job.id).await?
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    res.status_code(StatusCode::NO_CONTENT);
    Ok(())
}
