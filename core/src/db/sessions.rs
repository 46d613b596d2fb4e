//! Dashboard sessions, created from an API key.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgExecutor, PgPool};
use uuid::Uuid;

use super::accounts::{Account, KeyCheck, Keys, RateLimit, check_keys};
use crate::crypto;

#[derive(Debug, Clone, FromRow)]
pub struct Session {
    pub id: Uuid,
    pub account_id: Uuid,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// A new session for the holder of `key`; `None` if the key is not valid.
/// Returns the session and its clear token (for the cookie).
pub async fn create(
    pool: &PgPool,
    key: &str,
    ttl: std::time::Duration,
) -> sqlx::Result<Option<(Session, String)>> {
    let Some(prefix) = crypto::api_key_prefix(key) else {
        return Ok(None);
    };
    let row: Option<(Uuid, Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT id, account_id, key_hash FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL",
    )
    .bind(prefix)
    .fetch_optional(pool)
    .await?;
    let Some((key_id, account_id, hash)) = row else {
        return Ok(None);
    };
    if !crypto::verify_api_key(key, &hash) {
        return Ok(None);
    }
    let token = crypto::random_token(43);
    let session: Session = sqlx::query_as(
        "INSERT INTO sessions (id, token_hash, account_id, api_key_id, csrf_token, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
         RETURNING id, account_id, csrf_token, expires_at",
    )
    .bind(Uuid::new_v4())
    .bind(crypto::hash_api_key(&token))
    .bind(account_id)
    .bind(key_id)
    .bind(crypto::random_token(32))
    .bind(ttl.as_secs_f64())
    .fetch_one(pool)
    .await?;
    Ok(Some((session, token)))
}

/// The live session and account of a cookie token; a revoked key ends it.
/// The request counts against the rate limit of the session's key.
pub async fn authenticate(
    pool: &PgPool,
    token: &str,
    limit: RateLimit,
) -> sqlx::Result<KeyCheck<(Session, Account)>> {
    let row: Option<(Uuid, Uuid, String, DateTime<Utc>, Uuid)> = sqlx::query_as(
        "SELECT s.id, s.account_id, s.csrf_token, s.expires_at, s.api_key_id FROM sessions s
         JOIN api_keys k ON k.id = s.api_key_id
         WHERE s.token_hash = $1 AND s.expires_at > now() AND k.revoked_at IS NULL",
    )
    .bind(crypto::hash_api_key(token))
    .fetch_optional(pool)
    .await?;
    let Some((id, account_id, csrf_token, expires_at, key_id)) = row else {
        return Ok(KeyCheck::Invalid);
    };
    let check = check_keys(pool, &Keys::Ids(vec![key_id]), limit)
        .await?
        .pop();
    Ok(match check.unwrap_or(KeyCheck::Invalid) {
        KeyCheck::Valid((account, _)) => KeyCheck::Valid((
            Session {
                id,
                account_id,
                csrf_token,
                expires_at,
            },
            account,
        )),
        KeyCheck::RateLimited { retry_after_secs } => KeyCheck::RateLimited { retry_after_secs },
        KeyCheck::Invalid => KeyCheck::Invalid,
    })
}

pub async fn delete(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE id = $1")
        .bind(id)
        .execute(db)
        .await
        .map(|_| ())
}

/// Ends the session whose cookie token is `token`, if there is one.
pub async fn end(db: impl PgExecutor<'_>, token: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(crypto::hash_api_key(token))
        .execute(db)
        .await
        .map(|_| ())
}

/// Deletes up to `limit` sessions that expired before `before`; returns
/// how many.
pub async fn purge_expired(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    sqlx::query(
        "DELETE FROM sessions WHERE id IN (
             SELECT id FROM sessions WHERE expires_at < $1 LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(db)
    .await
    .map(|r| r.rows_affected())
}
