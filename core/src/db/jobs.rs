//! Jobs and their documents.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub template_id: Uuid,
    pub status: String,
    pub content_type: String,
    pub file_name: Option<String>,
    pub size_bytes: i64,
    pub storage_key: String,
    pub static_values: Json<serde_json::Value>,
    pub idempotency_key: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub file_deleted_at: Option<DateTime<Utc>>,
    pub results_expired_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, FromRow)]
pub struct DocumentRow {
    pub id: Uuid,
    pub job_id: Uuid,
    pub idx: i32,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub storage_key: Option<String>,
    pub status: String,
    pub pages: Option<i32>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub account_id: Uuid,
    pub template_id: Uuid,
    pub content_type: String,
    pub file_name: Option<String>,
    pub size_bytes: i64,
    pub storage_key: String,
    pub static_values: serde_json::Value,
    pub idempotency_key: Option<String>,
}

macro_rules! columns {
    () => {
        "id, account_id, template_id, status, content_type, file_name, size_bytes, storage_key, static_values, idempotency_key, error_code, error_message, created_at, updated_at, finished_at, file_deleted_at, results_expired_at"
    };
}

/// The job an idempotency key already created within `ttl`, if any.
pub async fn find_idempotent(
    db: impl PgExecutor<'_>,
    account_id: Uuid,
    key: &str,
    ttl: std::time::Duration,
) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM jobs WHERE account_id = $1 AND idempotency_key = $2
         AND created_at > now() - make_interval(secs => $3)"
    ))
    .bind(account_id)
    .bind(key)
    .bind(ttl.as_secs_f64())
    .fetch_optional(db)
    .await
}

/// Inserts a submitted job and its queue task in one statement and one
/// durable commit, if its template is one of the account's (the submission
/// path is one round trip to the database); the caller wakes the workers
/// after it with a [`crate::queue::Waker`], not in this transaction (see the
/// queue module). `None` when the account has no such template or a job
/// with the same idempotency key exists; an expired key is released first
/// (a separate statement: releasing it stands on its own).
pub async fn insert_and_enqueue(
    pool: &sqlx::PgPool,
    job: &NewJob,
    idempotency_ttl: std::time::Duration,
) -> sqlx::Result<Option<JobRow>> {
    if let Some(key) = &job.idempotency_key {
        sqlx::query(
            "UPDATE jobs SET idempotency_key = NULL WHERE account_id = $1 AND idempotency_key = $2
             AND created_at <= now() - make_interval(secs => $3)",
        )
        .bind(job.account_id)
        .bind(key)
        .bind(idempotency_ttl.as_secs_f64())
        .execute(pool)
        .await?;
    }
    // The task insert is queue::enqueue's, for a row that is new.
    sqlx::query_as(concat!(
        "WITH job AS (
             INSERT INTO jobs (id, account_id, template_id, content_type, file_name, size_bytes,
                               storage_key, static_values, idempotency_key)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM templates
             WHERE id = $3 AND account_id = $2 AND deleted_at IS NULL
             ON CONFLICT (account_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING ",
        columns!(),
        "
         ), task AS (
             -- Runs though nothing reads it: PostgreSQL always executes
             -- data-modifying WITH clauses.
             INSERT INTO tasks (kind, ref_id) SELECT $10, id FROM job
         )
         SELECT job.* FROM job"
    ))
    .bind(job.id)
    .bind(job.account_id)
    .bind(job.template_id)
    .bind(&job.content_type)
    .bind(&job.file_name)
    .bind(job.size_bytes)
    .bind(&job.storage_key)
    .bind(Json(&job.static_values))
    .bind(&job.idempotency_key)
    .bind(crate::queue::kind::JOB)
    .fetch_optional(pool)
    .await
}

/// A job of this account; another account's id gives `None`.
pub async fn get(
    db: impl PgExecutor<'_>,
    account_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM jobs WHERE id = $1 AND account_id = $2"
    ))
    .bind(id)
    .bind(account_id)
    .fetch_optional(db)
    .await
}

pub async fn list(
    db: impl PgExecutor<'_>,
    account_id: Uuid,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<JobRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM jobs WHERE account_id = $1 AND ($2::text IS NULL OR status = $2)
         ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(account_id)
    .bind(status)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await
}

pub async fn documents(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<Vec<DocumentRow>> {
    sqlx::query_as(
        "SELECT id, job_id, idx, file_name, content_type, storage_key, status, pages,
                error_code, error_message, created_at, finished_at
         FROM documents WHERE job_id = $1 ORDER BY idx",
    )
    .bind(job_id)
    .fetch_all(db)
    .await
}
