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

/// A per-key request budget (GCRA): `per_sec` requests a second on average,
/// up to `burst` at once. `per_sec == 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_sec: u32,
    pub burst: u32,
}

impl RateLimit {
    /// Seconds between two requests at the sustained rate.
    fn interval_secs(self) -> f64 {
        1.0 / f64::from(self.per_sec)
    }

    /// How far ahead of now a key's theoretical arrival time may run.
    fn tolerance_secs(self) -> f64 {
        f64::from(self.burst.saturating_sub(1)) * self.interval_secs()
    }
}

/// What a presented credential (API key or dashboard session) is worth.
#[derive(Debug, Clone)]
pub enum KeyCheck<T> {
    Valid(T),
    /// A valid key over its rate limit: retry after this many whole seconds.
    RateLimited {
        retry_after_secs: u64,
    },
    /// Unknown, malformed, expired or revoked.
    Invalid,
}

/// Which key row a request acts for.
pub(crate) enum KeyRef<'a> {
    /// Presented in `x-auth`: its public prefix and the SHA-256 of all of it.
    Presented { prefix: &'a str, hash: &'a [u8] },
    /// The key a dashboard session was opened with.
    Id(Uuid),
}

impl KeyRef<'_> {
    /// The WHERE condition on `k`, its parameters numbered from `$first`.
    fn condition(&self, first: usize) -> String {
        match self {
            KeyRef::Presented { .. } => {
                format!("k.prefix = ${first} AND k.key_hash = ${}", first + 1)
            }
            KeyRef::Id(_) => format!("k.id = ${first}"),
        }
    }
}

#[derive(FromRow)]
struct CheckedRow {
    id: Uuid,
    name: String,
    credits: i64,
    created_at: DateTime<Utc>,
    key_id: Uuid,
    key_hash: Vec<u8>,
    allowed: bool,
    wait_secs: f64,
    stale: bool,
}

/// The key's row is locked for this one statement, which finds it, takes a
/// request from its budget and returns its account: one round trip. Its commit
/// does not wait for a WAL flush (`synchronous_commit` off for this
/// transaction only): the budget needs no durability, and a busy key's
/// requests would otherwise queue behind each other's flushes.
fn limited_sql(condition: &str) -> String {
    format!(
        "WITH key AS (
             SELECT k.id, k.account_id, k.key_hash, greatest(k.rate_tat, now()) AS tat,
                    set_config('synchronous_commit', 'off', true) AS async_commit
             FROM api_keys k
             WHERE {condition} AND k.revoked_at IS NULL
             FOR UPDATE OF k
         ), verdict AS (
             SELECT key.*, key.tat <= now() + make_interval(secs => $2) AS allowed FROM key
         ), touched AS (
             UPDATE api_keys k SET
                 rate_tat = CASE WHEN v.allowed
                     THEN v.tat + make_interval(secs => $1) ELSE k.rate_tat END,
                 last_used_at = CASE WHEN v.allowed THEN now() ELSE k.last_used_at END
             FROM verdict v WHERE k.id = v.id
         )
         SELECT a.id, a.name, a.credits, a.created_at, v.id AS key_id, v.key_hash, v.allowed,
                extract(epoch FROM v.tat - now())::float8 - $2 AS wait_secs, false AS stale
         FROM verdict v JOIN accounts a ON a.id = v.account_id"
    )
}

/// The same lookup without a budget: a read only.
fn unlimited_sql(condition: &str) -> String {
    format!(
        "SELECT a.id, a.name, a.credits, a.created_at, k.id AS key_id, k.key_hash,
                true AS allowed, 0::float8 AS wait_secs,
                coalesce(k.last_used_at < now() - interval '1 minute', true) AS stale
         FROM api_keys k JOIN accounts a ON a.id = k.account_id
         WHERE {condition} AND k.revoked_at IS NULL"
    )
}

/// Looks a key up and takes one request from its budget; returns the
/// account and the key's SHA-256 for the caller to verify.
pub(crate) async fn check_key(
    pool: &PgPool,
    key: KeyRef<'_>,
    limit: RateLimit,
) -> sqlx::Result<KeyCheck<(Account, Vec<u8>)>> {
    let limited = limit.per_sec > 0;
    let sql = if limited {
        limited_sql(&key.condition(3))
    } else {
        unlimited_sql(&key.condition(1))
    };
    let mut query = sqlx::query_as::<_, CheckedRow>(sqlx::AssertSqlSafe(sql));
    if limited {
        query = query
            .bind(limit.interval_secs())
            .bind(limit.tolerance_secs());
    }
    query = match key {
        KeyRef::Presented { prefix, hash } => query.bind(prefix).bind(hash),
        KeyRef::Id(id) => query.bind(id),
    };
    let Some(row) = query.fetch_optional(pool).await? else {
        return Ok(KeyCheck::Invalid);
    };
    if !row.allowed {
        return Ok(KeyCheck::RateLimited {
            retry_after_secs: (row.wait_secs.ceil() as u64).max(1),
        });
    }
    // Without a budget to write, last_used_at is written at most once a
    // minute per key, not on every request.
    if row.stale {
        sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = $1")
            .bind(row.key_id)
            .execute(pool)
            .await?;
    }
    Ok(KeyCheck::Valid((
        Account {
            id: row.id,
            name: row.name,
            credits: row.credits,
            created_at: row.created_at,
        },
        row.key_hash,
    )))
}

/// The account a presented key belongs to, if the key is valid, not revoked
/// and within its rate limit (which this request uses up a part of).
///
/// The row is found by public prefix and SHA-256; the database's comparison
/// of digests reveals nothing usable about the key (a matching key would be
/// a SHA-256 preimage), and the hash is compared again in constant time here.
pub async fn authenticate(
    pool: &PgPool,
    key: &str,
    limit: RateLimit,
) -> sqlx::Result<KeyCheck<Account>> {
    let Some(prefix) = crypto::api_key_prefix(key) else {
        return Ok(KeyCheck::Invalid);
    };
    let hash = crypto::hash_api_key(key);
    Ok(
        match check_key(
            pool,
            KeyRef::Presented {
                prefix,
                hash: &hash,
            },
            limit,
        )
        .await?
        {
            KeyCheck::Valid((account, stored)) if crypto::verify_api_key(key, &stored) => {
                KeyCheck::Valid(account)
            }
            KeyCheck::Valid(_) | KeyCheck::Invalid => KeyCheck::Invalid,
            KeyCheck::RateLimited { retry_after_secs } => {
                KeyCheck::RateLimited { retry_after_secs }
            }
        },
    )
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
