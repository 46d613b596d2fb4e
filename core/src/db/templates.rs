//! Templates: the extraction spec and the webhook, per account.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct TemplateRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    pub spec: Json<serde_json::Value>,
    pub webhook_url: Option<String>,
    pub webhook_headers_enc: Option<Vec<u8>>,
    pub webhook_secret_enc: Vec<u8>,
    /// The secret a rotation replaced, which still signs until
    /// `webhook_previous_secret_expires_at`. Both are read as `None` once
    /// the database's clock has passed that time (see `columns!`).
    pub webhook_previous_secret_enc: Option<Vec<u8>>,
    pub webhook_previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TemplateRow {
    /// The previous secret if it still signed when the row was read. The
    /// database decided (its `now()`, the clock that stamped the expiry),
    /// not the reader's clock, which may run ahead or behind.
    pub fn previous_secret_enc(&self) -> Option<&[u8]> {
        self.webhook_previous_secret_expires_at
            .and(self.webhook_previous_secret_enc.as_deref())
    }
}

/// What a create or full update writes.
#[derive(Debug, Clone)]
pub struct TemplateWrite {
    pub name: String,
    pub spec: serde_json::Value,
    pub webhook_url: Option<String>,
    pub webhook_headers_enc: Option<Vec<u8>>,
}

// The previous secret and its expiry only while it still signs, judged by
// the database's clock, which stamped the expiry (`set_secret`).
macro_rules! columns {
    () => {
        "id, account_id, name, spec, webhook_url, webhook_headers_enc, webhook_secret_enc,
         CASE WHEN webhook_previous_secret_expires_at > now() THEN webhook_previous_secret_enc END
             AS webhook_previous_secret_enc,
         CASE WHEN webhook_previous_secret_expires_at > now() THEN webhook_previous_secret_expires_at END
             AS webhook_previous_secret_expires_at,
         created_at, updated_at"
    };
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    account_id: Uuid,
    write: &TemplateWrite,
    secret_enc: &[u8],
) -> sqlx::Result<TemplateRow> {
    insert_with_id(db, Uuid::new_v4(), account_id, write, secret_enc).await
}

/// [`insert`] with the id chosen first (its secrets are sealed to it).
pub async fn insert_with_id(
    db: impl PgExecutor<'_>,
    id: Uuid,
    account_id: Uuid,
    write: &TemplateWrite,
    secret_enc: &[u8],
) -> sqlx::Result<TemplateRow> {
    sqlx::query_as(concat!("INSERT INTO templates (id, account_id, name, spec, webhook_url, webhook_headers_enc, webhook_secret_enc)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ", columns!(), ""))
    .bind(id)
    .bind(account_id)
    .bind(&write.name)
    .bind(Json(&write.spec))
    .bind(&write.webhook_url)
    .bind(&write.webhook_headers_enc)
    .bind(secret_enc)
    .fetch_one(db)
    .await
}

/// A live template of this account; another account's id gives `None`.
pub async fn get(
    db: impl PgExecutor<'_>,
    account_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<TemplateRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM templates WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL"
    ))
    .bind(id)
    .bind(account_id)
    .fetch_optional(db)
    .await
}

/// Any template by id, deleted or not: for workers finishing jobs already accepted.
pub async fn get_any(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<TemplateRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM templates WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The names of a template's fields, in its order (any account's; none
/// for a template that is gone): the order results are written in.
pub async fn field_names(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Vec<String>> {
    let spec: Option<Json<serde_json::Value>> =
        sqlx::query_scalar("SELECT spec FROM templates WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?;
    Ok(spec.map_or_else(Vec::new, |spec| crate::order::field_names(&spec.0)))
}

pub async fn list(
    db: impl PgExecutor<'_>,
    account_id: Uuid,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<TemplateRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM templates WHERE account_id = $1 AND deleted_at IS NULL
         ORDER BY created_at DESC, id LIMIT $2 OFFSET $3"
    ))
    .bind(account_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await
}

pub async fn update(
    db: impl PgExecutor<'_>,
    account_id: Uuid,
    id: Uuid,
    write: &TemplateWrite,
) -> sqlx::Result<Option<TemplateRow>> {
    sqlx::query_as(concat!(
        "UPDATE templates SET name = $3, spec = $4, webhook_url = $5, webhook_headers_enc = $6,
                updated_at = now()
         WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL RETURNING ",
        columns!(),
        ""
    ))
    .bind(id)
    .bind(account_id)
    .bind(&write.name)
    .bind(Json(&write.spec))
    .bind(&write.webhook_url)
    .bind(&write.webhook_headers_enc)
    .fetch_optional(db)
    .await
}

/// Replaces the signing secret; the replaced one keeps signing for
/// `previous_valid` (zero: it stops at once).
pub async fn set_secret(
    db: impl PgExecutor<'_>,
    account_id: Uuid,
    id: Uuid,
    secret_enc: &[u8],
    previous_valid: std::time::Duration,
) -> sqlx::Result<Option<TemplateRow>> {
    sqlx::query_as(concat!(
        "UPDATE templates SET webhook_secret_enc = $3, updated_at = now(),
                webhook_previous_secret_enc = CASE WHEN $4 > 0 THEN webhook_secret_enc END,
                webhook_previous_secret_expires_at = CASE WHEN $4 > 0 THEN now() + make_interval(secs => $4) END
         WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL RETURNING ",
        columns!(),
        ""
    ))
    .bind(id)
    .bind(account_id)
    .bind(secret_enc)
    .bind(previous_valid.as_secs_f64())
    .fetch_optional(db)
    .await
}

/// Soft delete; returns whether a live template was deleted.
pub async fn delete(db: impl PgExecutor<'_>, account_id: Uuid, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE templates SET deleted_at = now()
         WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(account_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
