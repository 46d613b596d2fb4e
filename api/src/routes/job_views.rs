//! Job listing and the detail view the dashboard shows: documents, results,
//! credits charged and every webhook delivery attempt.

use paperhook_core::db::jobs;
use salvo::oapi::extract::{PathParam, QueryParam};
use salvo::prelude::*;
use serde::Serialize;
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
}

#[derive(Serialize, ToSchema)]
pub struct JobList {
    jobs: Vec<JobSummary>,
}

/// The account's jobs, newest first; filter by `status`, or find one by `job_id`.
#[endpoint(tags("jobs"))]
pub async fn list_jobs(
    depot: &mut Depot,
    status: QueryParam<String, false>,
    job_id: QueryParam<String, false>,
    page: super::Page,
) -> ApiResult<Json<JobList>> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot);
    let status = status.into_inner().filter(|s| !s.is_empty());
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
    let rows = match job_id.into_inner().filter(|s| !s.trim().is_empty()) {
        Some(raw) => {
            let id = super::parse_job_id(&raw)?;
            jobs::get(&state.pool, account_id, id)
                .await?
                .into_iter()
                .collect()
        }
        None => {
            jobs::list(
                &state.pool,
                account_id,
                status.as_deref(),
                page.limit(),
                page.offset(),
            )
            .await?
        }
    };
    Ok(Json(JobList {
        jobs: rows
            .into_iter()
            .map(|j| JobSummary {
                job_id: j.id,
                template_id: j.template_id,
                status: j.status,
                document_type: j.content_type,
                file_name: j.file_name,
                created_at: j.created_at,
                finished_at: j.finished_at,
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

#[derive(Serialize, ToSchema)]
pub struct DeliveryOut {
    /// The `webhook-id` header, the same on every attempt.
    webhook_id: String,
    state: String,
    attempts: Vec<AttemptOut>,
    delivered_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct DocumentDetail {
    index: i32,
    file_name: Option<String>,
    status: String,
    pages: Option<i32>,
    error: Option<Value>,
    result: Option<Value>,
    /// Per field: page, box, confidence and source.
    fields: Option<Value>,
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
    documents: Vec<DocumentDetail>,
}

fn error_json(code: &Option<String>, message: &Option<String>) -> Option<Value> {
    code.as_ref()
        .map(|c| serde_json::json!({"code": c, "message": message.clone().unwrap_or_default()}))
}

/// One job with its documents, results, charges and delivery attempts.
#[endpoint(tags("jobs"))]
pub async fn get_job(depot: &mut Depot, job_id: PathParam<Uuid>) -> ApiResult<Json<JobDetail>> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot);
    let job = jobs::get(&state.pool, account_id, job_id.into_inner())
        .await?
        .ok_or_else(super::job_not_found)?;
    let docs = jobs::documents(&state.pool, job.id).await?;
    let mut documents = Vec::with_capacity(docs.len());
    let mut total = 0;
    for d in docs {
        let result: Option<(Value, Value)> =
            sqlx::query_as("SELECT result, meta FROM results WHERE document_id = $1")
                .bind(d.id)
                .fetch_optional(&state.pool)
                .await?;
        let charged: i64 = sqlx::query_scalar(
            "SELECT coalesce(-sum(delta), 0)::bigint FROM credit_ledger WHERE document_id = $1",
        )
        .bind(d.id)
        .fetch_one(&state.pool)
        .await?;
        total += charged;
        let delivery: Option<(Uuid, String, String, Option<chrono::DateTime<chrono::Utc>>)> =
            sqlx::query_as(
                "SELECT id, message_id, state, delivered_at FROM webhook_deliveries WHERE document_id = $1",
            )
            .bind(d.id)
            .fetch_optional(&state.pool)
            .await?;
        let delivery = match delivery {
            None => None,
            Some((id, webhook_id, state_, delivered_at)) => Some(DeliveryOut {
                webhook_id,
                state: state_,
                delivered_at,
                attempts: sqlx::query_as(
                    "SELECT attempted_at, status_code, latency_ms, response_excerpt, error_class, error_message
                     FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id",
                )
                .bind(id)
                .fetch_all(&state.pool)
                .await?,
            }),
        };
        let (result, fields) = match result {
            Some((r, m)) => (Some(r), Some(m)),
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
            delivery,
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
        documents,
    }))
}
