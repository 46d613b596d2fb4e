//! Accounts, their API keys and the credit ledger.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgExecutor, PgPool};
use uuid::Uuid;

use super::batch::{Batcher, Pending, fail_all};
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

/// Accounts newest first, optionally only those whose name contains `name`
/// (any case; `%` and `_` match themselves).
pub async fn list(pool: &PgPool, name: Option<&str>, limit: i64) -> sqlx::Result<Vec<Account>> {
    sqlx::query_as(
        "SELECT id, name, credits, created_at FROM accounts
         WHERE $1::text IS NULL OR strpos(lower(name), lower($1)) > 0
         ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(name)
    .bind(limit)
    .fetch_all(pool)
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

/// What [`create_key`] did.
pub enum CreatedKey {
    Created(NewApiKey),
    /// No such account.
    NoAccount,
    /// The account holds `max` keys that are not revoked already.
    TooMany {
        max: u32,
    },
}

/// A new key for an existing account, unless it already holds `max_active`
/// keys that are not revoked (`max_api_keys_per_account`).
pub async fn create_key(
    pool: &PgPool,
    account_id: Uuid,
    max_active: u32,
) -> sqlx::Result<CreatedKey> {
    let mut tx = pool.begin().await?;
    // The account's row is locked until the insert commits, so that
    // concurrent creations (from any API process, or the admin CLI) count
    // one after another. NO KEY UPDATE: inserts referencing the account
    // (jobs, keys) take KEY SHARE, and go on meanwhile.
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Ok(CreatedKey::NoAccount);
    }
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL",
    )
    .bind(account_id)
    .fetch_one(&mut *tx)
    .await?;
    if active >= i64::from(max_active) {
        return Ok(CreatedKey::TooMany { max: max_active });
    }
    let key = insert_key(&mut *tx, account_id).await?;
    tx.commit().await?;
    Ok(CreatedKey::Created(key))
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

/// The key rows that a batch of checks acts for, one per request (the same
/// key may come several times).
pub(crate) enum Keys {
    /// Presented in `x-auth`: each key's public prefix and the SHA-256 of
    /// all of it.
    Presented {
        prefixes: Vec<String>,
        hashes: Vec<Vec<u8>>,
    },
    /// The keys that dashboard sessions were opened with.
    Ids(Vec<Uuid>),
}

impl Keys {
    fn len(&self) -> usize {
        match self {
            Keys::Presented { prefixes, .. } => prefixes.len(),
            Keys::Ids(ids) => ids.len(),
        }
    }

    /// The requests counted per key (`req`), with its parameters numbered
    /// from `$first`, and the condition joining `req` to a key row `k`.
    fn requests(&self, first: usize) -> (String, &'static str) {
        match self {
            Keys::Presented { .. } => (
                format!(
                    "SELECT prefix, hash, count(*) AS n
                     FROM unnest(${first}::text[], ${}::bytea[]) AS r(prefix, hash)
                     GROUP BY prefix, hash",
                    first + 1
                ),
                "k.prefix = req.prefix AND k.key_hash = req.hash",
            ),
            Keys::Ids(_) => (
                format!(
                    "SELECT id, count(*) AS n FROM unnest(${first}::uuid[]) AS r(id) GROUP BY id"
                ),
                "k.id = req.id",
            ),
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
    prefix: String,
    key_hash: Vec<u8>,
    /// How many of this key's requests in the batch are within its budget.
    allowed: i64,
    /// For the others: seconds until the budget has room for one more.
    wait_secs: f64,
    stale: bool,
}

/// The key rows are locked (in id order, so that concurrent batches cannot
/// deadlock) for this one statement, which finds them, takes each key's
/// requests from its budget (as many as fit, GCRA) and returns their
/// accounts: one round trip. Its commit does not wait for a WAL flush
/// (`synchronous_commit` off for this transaction only): the budget needs
/// no durability, and a busy key's requests would otherwise queue behind
/// each other's flushes.
fn limited_sql(keys: &Keys) -> String {
    let (requests, join) = keys.requests(3);
    format!(
        "WITH req AS ({requests}), key AS (
             SELECT k.id, k.account_id, k.prefix, k.key_hash, req.n,
                    greatest(k.rate_tat, now()) AS tat,
                    set_config('synchronous_commit', 'off', true) AS async_commit
             FROM req JOIN api_keys k ON {join}
             WHERE k.revoked_at IS NULL
             ORDER BY k.id
             FOR NO KEY UPDATE OF k
         ), verdict AS (
             -- The i-th request (from 0) fits if tat + i * interval <= now + tolerance.
             SELECT key.*, least(key.n, greatest(0::float8,
                        floor((extract(epoch FROM now() - key.tat)::float8 + $2) / $1) + 1))::int8
                        AS allowed
             FROM key
         ), touched AS (
             UPDATE api_keys k SET
                 rate_tat = CASE WHEN v.allowed > 0
                     THEN v.tat + make_interval(secs => $1 * v.allowed) ELSE k.rate_tat END,
                 last_used_at = CASE WHEN v.allowed > 0 THEN now() ELSE k.last_used_at END
             FROM verdict v WHERE k.id = v.id
         )
         SELECT a.id, a.name, a.credits, a.created_at, v.id AS key_id, v.prefix, v.key_hash,
                v.allowed, extract(epoch FROM v.tat - now())::float8 + $1 * v.allowed - $2
                    AS wait_secs,
                false AS stale
         FROM verdict v JOIN accounts a ON a.id = v.account_id"
    )
}

/// The same lookup without a budget: a read only.
fn unlimited_sql(keys: &Keys) -> String {
    let (requests, join) = keys.requests(1);
    format!(
        "WITH req AS ({requests})
         SELECT a.id, a.name, a.credits, a.created_at, k.id AS key_id, k.prefix, k.key_hash,
                req.n AS allowed, 0::float8 AS wait_secs,
                coalesce(k.last_used_at < now() - interval '1 minute', true) AS stale
         FROM req JOIN api_keys k ON {join} JOIN accounts a ON a.id = k.account_id
         WHERE k.revoked_at IS NULL"
    )
}

/// Looks keys up and takes one request each from their budgets, in one
/// statement; for each request in order, its account and the key's SHA-256
/// for the caller to verify. When the same key comes more often than its
/// budget allows, its first requests are the ones let through.
pub(crate) async fn check_keys(
    pool: &PgPool,
    keys: &Keys,
    limit: RateLimit,
) -> sqlx::Result<Vec<Checked>> {
    let limited = limit.per_sec > 0;
    let sql = if limited {
        limited_sql(keys)
    } else {
        unlimited_sql(keys)
    };
    let mut query = sqlx::query_as::<_, CheckedRow>(sqlx::AssertSqlSafe(sql));
    if limited {
        query = query
            .bind(limit.interval_secs())
            .bind(limit.tolerance_secs());
    }
    query = match keys {
        Keys::Presented { prefixes, hashes } => query.bind(prefixes).bind(hashes),
        Keys::Ids(ids) => query.bind(ids),
    };
    let rows = query.fetch_all(pool).await?;
    // Without a budget to write, last_used_at is written at most once a
    // minute per key, not on every request.
    let stale: Vec<Uuid> = rows.iter().filter(|r| r.stale).map(|r| r.key_id).collect();
    if !stale.is_empty() {
        sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1)")
            .bind(&stale)
            .execute(pool)
            .await?;
    }
    let mut seen = vec![0i64; rows.len()];
    Ok((0..keys.len())
        .map(|i| {
            let Some(at) = rows.iter().position(|r| match keys {
                Keys::Presented { prefixes, hashes } => {
                    r.prefix == prefixes[i] && r.key_hash == hashes[i]
                }
                Keys::Ids(ids) => r.key_id == ids[i],
            }) else {
                return KeyCheck::Invalid;
            };
            let row = &rows[at];
            seen[at] += 1;
            if seen[at] > row.allowed {
                return KeyCheck::RateLimited {
                    retry_after_secs: (row.wait_secs.ceil() as u64).max(1),
                };
            }
            KeyCheck::Valid((
                Account {
                    id: row.id,
                    name: row.name.clone(),
                    credits: row.credits,
                    created_at: row.created_at,
                },
                row.key_hash.clone(),
            ))
        })
        .collect())
}

/// The account of a valid presented key, from its check: the stored hash
/// is compared again in constant time.
fn admit_presented(key: &str, check: Checked) -> KeyCheck<Account> {
    match check {
        KeyCheck::Valid((account, stored)) if crypto::verify_api_key(key, &stored) => {
            KeyCheck::Valid(account)
        }
        KeyCheck::Valid(_) | KeyCheck::Invalid => KeyCheck::Invalid,
        KeyCheck::RateLimited { retry_after_secs } => KeyCheck::RateLimited { retry_after_secs },
    }
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
    let keys = Keys::Presented {
        prefixes: vec![prefix.to_owned()],
        hashes: vec![crypto::hash_api_key(key)],
    };
    let check = check_keys(pool, &keys, limit).await?.pop();
    Ok(admit_presented(key, check.unwrap_or(KeyCheck::Invalid)))
}

/// [`authenticate`] for the API keys that concurrent requests present,
/// several to a statement (see [`super::batch`]): a busy API process checks
/// keys in a few round trips per batch of requests instead of one per
/// request. Each request keeps its own answer.
#[derive(Clone, Debug)]
pub struct KeyChecker {
    batcher: Batcher<Presented, Checked>,
}

/// A presented key's prefix and SHA-256.
type Presented = (String, Vec<u8>);
/// A key's check, with its stored SHA-256 for the caller to verify.
type Checked = KeyCheck<(Account, Vec<u8>)>;

impl KeyChecker {
    /// Starts the batching task on the current Tokio runtime: statements of
    /// at most `max_keys` requests, at most `statements` of them at once.
    pub fn spawn(pool: PgPool, limit: RateLimit, max_keys: usize, statements: usize) -> Self {
        let batcher = Batcher::spawn(max_keys, statements, move |batch| {
            let pool = pool.clone();
            async move { check_batch(&pool, limit, batch).await }
        });
        KeyChecker { batcher }
    }

    /// [`authenticate`], with the keys of concurrent callers.
    pub async fn check(&self, key: &str) -> sqlx::Result<KeyCheck<Account>> {
        let Some(prefix) = crypto::api_key_prefix(key) else {
            return Ok(KeyCheck::Invalid);
        };
        let hash = crypto::hash_api_key(key);
        let check = self.batcher.call((prefix.to_owned(), hash)).await?;
        Ok(admit_presented(key, check))
    }
}

async fn check_batch(pool: &PgPool, limit: RateLimit, batch: Vec<Pending<Presented, Checked>>) {
    let (prefixes, hashes) = batch.iter().map(|p| p.item.clone()).unzip();
    match check_keys(pool, &Keys::Presented { prefixes, hashes }, limit).await {
        Ok(checks) => {
            for (p, check) in batch.into_iter().zip(checks) {
                let _ = p.done.send(Ok(check));
            }
        }
        Err(err) => fail_all(batch, &err),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn created(key: CreatedKey) -> NewApiKey {
        match key {
            CreatedKey::Created(key) => key,
            CreatedKey::NoAccount => panic!("no account"),
            CreatedKey::TooMany { max } => panic!("over {max} keys"),
        }
    }

    /// 1 request a second, bursts of 3.
    const STRICT: RateLimit = RateLimit {
        per_sec: 1,
        burst: 3,
    };

    /// Checks of many keys at once share statements, and each request still
    /// gets its own answer: over its key's budget 429, a wrong secret, a
    /// revoked or malformed key 401, the rest its account.
    #[tokio::test]
    async fn concurrent_key_checks_share_statements_and_keep_their_own_answers() {
        let pool = crate::testing::migrated_database().await;
        let (a, first) = create(&pool, "A", 0).await.unwrap();
        let (b, other) = create(&pool, "B", 0).await.unwrap();
        let revoked = created(create_key(&pool, a.id, 100).await.unwrap());
        revoke_key(&pool, &revoked.prefix, Some(a.id))
            .await
            .unwrap();
        let mut keys = vec![first.key.clone()];
        for _ in 0..39 {
            keys.push(created(create_key(&pool, a.id, 100).await.unwrap()).key);
        }
        // One statement at a time, at most 16 keys to it. The test's runtime
        // has one thread: every check is queued before the first one runs.
        let checker = KeyChecker::spawn(pool.clone(), STRICT, 16, 1);

        // 40 keys once each: batches of 16, 16 and 8, every key let through.
        let started = std::time::Instant::now();
        let checks = futures::future::join_all(keys.iter().map(|k| checker.check(k))).await;
        for check in checks {
            assert!(matches!(check.unwrap(), KeyCheck::Valid(ref acc) if acc.id == a.id));
        }
        // Rows updated by one statement share its transaction id.
        let xmins: Vec<String> = futures::future::join_all(keys.iter().map(|k| {
            sqlx::query_scalar("SELECT xmin::text FROM api_keys WHERE prefix = $1")
                .bind(crypto::api_key_prefix(k).unwrap())
                .fetch_one(&pool)
        }))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
        let statements = |range: std::ops::Range<usize>| {
            xmins[range]
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        assert_eq!(
            (statements(0..16), statements(16..32), statements(32..40)),
            (1, 1, 1),
            "16, 16 and 8 keys to a statement"
        );
        assert_eq!(statements(0..40), 3);

        // The first key again, 10 times (its budget of 3 has 2 left, plus
        // what a second of refill adds), mixed with other accounts' keys
        // and bad ones, all in one statement.
        let tampered = {
            let mut k = first.key.clone();
            let last = k.pop().unwrap();
            k.push(if last == 'A' { 'B' } else { 'A' });
            k
        };
        let mut batch: Vec<&str> = vec![&first.key; 10];
        batch.extend([
            other.key.as_str(),
            &tampered,
            &revoked.key,
            "not-a-key",
            &keys[1],
        ]);
        let checks = futures::future::join_all(batch.iter().map(|k| checker.check(k))).await;
        let refill = started.elapsed().as_secs() as usize;
        let mut checks = checks.into_iter().map(Result::unwrap);
        let same_key: Vec<_> = checks.by_ref().take(10).collect();
        let passed = same_key
            .iter()
            .take_while(|c| matches!(c, KeyCheck::Valid(_)))
            .count();
        assert!(
            (2..=2 + refill + 1).contains(&passed),
            "{passed} of 10 passed a budget with 2 left after {refill} s"
        );
        for refused in &same_key[passed..] {
            assert!(
                matches!(
                    refused,
                    KeyCheck::RateLimited {
                        retry_after_secs: 1..=2
                    }
                ),
                "{refused:?}"
            );
        }
        assert!(matches!(checks.next(), Some(KeyCheck::Valid(acc)) if acc.id == b.id));
        for what in ["tampered", "revoked", "malformed"] {
            assert!(
                matches!(checks.next(), Some(KeyCheck::Invalid)),
                "{what} key"
            );
        }
        assert!(matches!(checks.next(), Some(KeyCheck::Valid(acc)) if acc.id == a.id));
    }
}
