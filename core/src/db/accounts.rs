//! Accounts, their API keys and the credit ledger.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgExecutor, PgPool};
use uuid::Uuid;

use crate::crypto::{self, NewApiKey};

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Account {
    pub id: Uuid,
    pub name: String,
    pub credits: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct LedgerEntry {
    pub id: i64,
    pub delta: i64,
    pub balance_after: i64,
    pub reason: String,
    pub job_id: Option<Uuid>,
    pub document_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// Creates an account with an opening grant and a first API key.
pub async fn create(pool: &PgPool, name: &str, credits: i64) -> sqlx::Result<(Account, NewApiKey)> {
    let mut tx = pool.begin().await?;
    let account: Account = sqlx::query_as(
        "INSERT INTO accounts (id, name, credits) VALUES ($1, $2, 0)
         RETURNING id, name, credits, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    let key = insert_key(&mut *tx, account.id).await?;
    let account = if credits > 0 {
        add_credits(&mut tx, account.id, credits)
            .await?
            .unwrap_or(account)
    } else {
        account
    };
    tx.commit().await?;
    Ok((account, key))
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Account>> {
    sqlx::query_as("SELECT id, name, credits, created_at FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

async fn insert_key(db: impl PgExecutor<'_>, account_id: Uuid) -> sqlx::Result<NewApiKey> {
    let key = crypto::generate_api_key();
    sqlx::query("INSERT INTO api_keys (id, account_id, prefix, key_hash) VALUES ($1, $2, $3, $4)")
        .bind(Uuid::now_v7())
        .bind(account_id)
        .bind(&key.prefix)
        .bind(&key.hash)
        .execute(db)
        .await?;
    Ok(key)
}

/// A new key for an existing account; `None` if there is no such account.
pub async fn create_key(pool: &PgPool, account_id: Uuid) -> sqlx::Result<Option<NewApiKey>> {
    if get(pool, account_id).await?.is_none() {
        return Ok(None);
    }
    insert_key(pool, account_id).await.map(Some)
}

pub async fn list_keys(db: impl PgExecutor<'_>, account_id: Uuid) -> sqlx::Result<Vec<ApiKeyInfo>> {
    sqlx::query_as(
        "SELECT id, prefix, created_at, last_used_at, revoked_at FROM api_keys
         WHERE account_id = $1 ORDER BY created_at DESC",
    )
    .bind(account_id)
    .fetch_all(db)
    .await
}

/// Revokes the key with `prefix`, optionally only within one account.
/// Returns the account it belonged to, or `None` if nothing matched.
pub async fn revoke_key(
    db: impl PgExecutor<'_>,
    prefix: &str,
    account_id: Option<Uuid>,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
         WHERE prefix = $1 AND ($2::uuid IS NULL OR account_id = $2)
         RETURNING account_id",
    )
    .bind(prefix)
    .bind(account_id)
    .fetch_optional(db)
    .await
}

/// The account a presented key belongs to, if the key is valid and not revoked.
/// The hash is compared in constant time after the lookup by public prefix.
pub async fn authenticate(pool: &PgPool, key: &str) -> sqlx::Result<Option<Account>> {
    let Some(prefix) = crypto::api_key_prefix(key) else {
        return Ok(None);
    };
    let row: Option<(Uuid, Vec<u8>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT account_id, key_hash, last_used_at FROM api_keys
         WHERE prefix = $1 AND revoked_at IS NULL",
    )
    .bind(prefix)
    .fetch_optional(pool)
    .await?;
    let Some((account_id, hash, last_used)) = row else {
        return Ok(None);
    };
    if !crypto::verify_api_key(key, &hash) {
        return Ok(None);
    }
    // Write last_used_at at most once a minute per key, not on every request.
    if last_used.is_none_or(|t| Utc::now() - t > chrono::Duration::minutes(1)) {
        sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE prefix = $1")
            .bind(prefix)
            .execute(pool)
            .await?;
    }
    get(pool, account_id).await
}

/// Adds credits with a ledger entry; `None` if the account does not exist.
pub async fn add_credits(
    tx: &mut sqlx::PgConnection,
    account_id: Uuid,
    credits: i64,
) -> sqlx::Result<Option<Account>> {
    let account: Option<Account> = sqlx::query_as(
        "UPDATE accounts SET credits = credits + $2 WHERE id = $1
         RETURNING id, name, credits, created_at",
    )
    .bind(account_id)
    .bind(credits)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(account) = &account {
        sqlx::query(
            "INSERT INTO credit_ledger (account_id, delta, balance_after, reason)
             VALUES ($1, $2, $3, 'grant')",
        )
        .bind(account_id)
        .bind(credits)
        .bind(account.credits)
        .execute(&mut *tx)
        .await?;
    }
    Ok(account)
}

/// Ledger entries, newest first, before the entry id `before` (for paging).
pub async fn ledger(
    db: impl PgExecutor<'_>,
    account_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<LedgerEntry>> {
    sqlx::query_as(
        "SELECT id, delta, balance_after, reason, job_id, document_id, created_at
         FROM credit_ledger WHERE account_id = $1 AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(account_id)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}
