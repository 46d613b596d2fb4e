//! Jobs and their documents.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

use super::batch::{Batcher, Pending, fail_all};
use crate::status;

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
    /// Its data was deleted on request (`DELETE /v1/jobs/{id}`).
    pub data_deleted_at: Option<DateTime<Utc>>,
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
    /// The document itself, kept in the database by the insert (its
    /// `storage_key` is then [`crate::storage::inline_key`]); `None` when
    /// it was put in the object store before.
    pub inline_data: Option<bytes::Bytes>,
}

macro_rules! columns {
    () => {
        "id, account_id, template_id, status, content_type, file_name, size_bytes, storage_key, static_values, idempotency_key, error_code, error_message, created_at, updated_at, finished_at, file_deleted_at, results_expired_at, data_deleted_at"
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
/// (a separate statement: releasing it stands on its own). The task may be
/// claimed `max_attempts` times (`task_max_attempts`).
pub async fn insert_and_enqueue(
    pool: &sqlx::PgPool,
    job: &NewJob,
    idempotency_ttl: std::time::Duration,
    max_attempts: i32,
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
    Ok(insert_many(pool, &[job], max_attempts).await?.pop())
}

/// Inserts the jobs that concurrent requests submit, several to a
/// statement: the rows that arrive while earlier statements are running go
/// together into the next one (one round trip and one durable commit for
/// all of them), so a busy API process commits a few times per batch of
/// submissions instead of once per submission. A lone request waits for
/// nothing: its statement starts at once.
///
/// Each row keeps its own outcome: the job, `None` when the account has no
/// such template, or an error. A statement that the database refuses
/// (a constraint, a value it cannot store) is retried row by row so that
/// one request's bad row fails only that request; a lost connection fails
/// every row of the statement (as one request's insert would).
///
/// Only jobs without an idempotency key come here (those take
/// [`insert_and_enqueue`], which releases expired keys first).
#[derive(Clone, Debug)]
pub struct Inserter {
    batcher: Batcher<NewJob, Option<JobRow>>,
}

impl Inserter {
    /// Starts the task that batches rows on the current Tokio runtime:
    /// statements of at most `max_rows` rows, at most `statements` of them
    /// running at once, their tasks claimed at most `max_attempts` times
    /// each. It ends when the last clone is dropped.
    pub fn spawn(
        pool: sqlx::PgPool,
        max_rows: usize,
        statements: usize,
        max_attempts: i32,
    ) -> Inserter {
        let batcher = Batcher::spawn(max_rows, statements, move |batch| {
            let pool = pool.clone();
            async move { insert_batch(&pool, batch, max_attempts).await }
        });
        Inserter { batcher }
    }

    /// Inserts `job` and its queue task with those of concurrent callers;
    /// see [`insert_and_enqueue`] for the outcome.
    pub async fn insert(&self, job: NewJob) -> sqlx::Result<Option<JobRow>> {
        debug_assert!(job.idempotency_key.is_none());
        self.batcher.call(job).await
    }
}

async fn insert_batch(
    pool: &sqlx::PgPool,
    batch: Vec<Pending<NewJob, Option<JobRow>>>,
    max_attempts: i32,
) {
    let jobs: Vec<&NewJob> = batch.iter().map(|p| &p.item).collect();
    match insert_many(pool, &jobs, max_attempts).await {
        Ok(rows) => {
            let mut rows: std::collections::HashMap<Uuid, JobRow> =
                rows.into_iter().map(|row| (row.id, row)).collect();
            for p in batch {
                let row = rows.remove(&p.item.id);
                let _ = p.done.send(Ok(row));
            }
        }
        // The statement failed as a whole and changed nothing: retry each
        // row alone so that only the offending request fails.
        Err(err @ sqlx::Error::Database(_)) if !super::is_unavailable(&err) => {
            let retries = batch.into_iter().map(|p| async move {
                let row = insert_many(pool, &[&p.item], max_attempts)
                    .await
                    .map(|mut rows| rows.pop());
                let _ = p.done.send(row);
            });
            futures::future::join_all(retries).await;
        }
        Err(err) => fail_all(batch, &err),
    }
}

/// One statement inserting `jobs` whose templates are their accounts' (the
/// others are left out, as is a job whose idempotency key another job of
/// its account holds) with their queue tasks (claimed at most
/// `max_attempts` times); the rows inserted.
async fn insert_many(
    pool: &sqlx::PgPool,
    jobs: &[&NewJob],
    max_attempts: i32,
) -> sqlx::Result<Vec<JobRow>> {
    let inline: Vec<&NewJob> = jobs
        .iter()
        .copied()
        .filter(|j| j.inline_data.is_some())
        .collect();
    // The task insert is queue::enqueue's, for rows that are new.
    sqlx::query_as(concat!(
        "WITH new AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
                                  $6::int8[], $7::text[], $8::jsonb[], $9::text[])
                 AS n(id, account_id, template_id, content_type, file_name, size_bytes,
                      storage_key, static_values, idempotency_key)
         ), job AS (
             INSERT INTO jobs (id, account_id, template_id, content_type, file_name, size_bytes,
                               storage_key, static_values, idempotency_key)
             SELECT n.id, n.account_id, n.template_id, n.content_type, n.file_name, n.size_bytes,
                    n.storage_key, n.static_values, n.idempotency_key
             FROM new n JOIN templates t
               ON t.id = n.template_id AND t.account_id = n.account_id AND t.deleted_at IS NULL
             ON CONFLICT (account_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING ",
        columns!(),
        "
         ), task AS (
             -- Runs though nothing reads it: PostgreSQL always executes
             -- data-modifying WITH clauses.
             INSERT INTO tasks (kind, ref_id, max_attempts) SELECT $10, id, $14 FROM job
         ), inline AS (
             -- The documents kept in the database, for the jobs inserted.
             INSERT INTO inline_documents (key, job_id, data)
             SELECT d.key, d.job_id, d.data
             FROM unnest($11::uuid[], $12::text[], $13::bytea[]) AS d(job_id, key, data)
             JOIN job ON job.id = d.job_id
         )
         SELECT job.* FROM job"
    ))
    .bind(column(jobs, |j| j.id))
    .bind(column(jobs, |j| j.account_id))
    .bind(column(jobs, |j| j.template_id))
    .bind(column(jobs, |j| j.content_type.as_str()))
    .bind(column(jobs, |j| j.file_name.as_deref()))
    .bind(column(jobs, |j| j.size_bytes))
    .bind(column(jobs, |j| j.storage_key.as_str()))
    .bind(column(jobs, |j| Json(&j.static_values)))
    .bind(column(jobs, |j| j.idempotency_key.as_deref()))
    .bind(crate::queue::kind::JOB)
    .bind(inline.iter().map(|j| j.id).collect::<Vec<_>>())
    .bind(
        inline
            .iter()
            .map(|j| j.storage_key.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        inline
            .iter()
            .filter_map(|j| j.inline_data.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(max_attempts)
    .fetch_all(pool)
    .await
}

/// One column of `jobs`, as an array parameter for `unnest`.
fn column<'a, T>(jobs: &[&'a NewJob], value: impl Fn(&'a NewJob) -> T) -> Vec<T> {
    jobs.iter().map(|j| value(j)).collect()
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

/// The delivery states a job listing can be filtered by, in the order the
/// summary of a job's deliveries prefers them.
pub const DELIVERY_STATES: [&str; 4] = ["pending", "failed", "gone", "delivered"];

/// Which of an account's jobs to list.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobFilter<'a> {
    pub job_id: Option<Uuid>,
    pub status: Option<&'a str>,
    pub template_id: Option<Uuid>,
    /// One of [`DELIVERY_STATES`]: jobs whose delivery summary is this.
    pub delivery: Option<&'a str>,
    /// Only jobs after this one in the listing's order (older): its
    /// `created_at` and id, the last job of the previous page.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// A job in a listing, with a summary of its webhook deliveries so far:
/// `pending` while any is, else `failed`, else `gone`, else `delivered`;
/// `None` before the first document has a delivery.
#[derive(Debug, Clone, FromRow)]
pub struct ListedJob {
    #[sqlx(flatten)]
    pub job: JobRow,
    pub delivery: Option<String>,
}

/// A job of any account (for the workers, which act for every account).
pub async fn get_any(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as(concat!("SELECT ", columns!(), " FROM jobs WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// An account's jobs, newest first. A filter on a state other than
/// `delivered` starts from the account's deliveries in that state (an index
/// scan), not from every job.
pub async fn list(
    db: impl PgExecutor<'_>,
    account_id: Uuid,
    filter: JobFilter<'_>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<ListedJob>> {
    list_query(list_sql(&filter), account_id, filter, limit, offset)
        .try_map(|row| ListedJob::from_row(&row))
        .fetch_all(db)
        .await
}

/// Few deliveries are not delivered: a filter on another state starts from
/// those. Most are, so `delivered` is cheaper checked job by job, newest
/// first.
fn from_deliveries<'a>(filter: &JobFilter<'a>) -> Option<&'a str> {
    filter.delivery.filter(|d| *d != "delivered")
}

/// `sql` ([`list_sql`], maybe with a prefix) with the listing's ten values.
fn list_query<'a>(
    sql: String,
    account_id: Uuid,
    filter: JobFilter<'a>,
    limit: i64,
    offset: i64,
) -> sqlx::query::Query<'a, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(account_id)
        .bind(filter.status)
        .bind(filter.template_id)
        .bind(filter.delivery)
        .bind(limit)
        .bind(offset)
        .bind(filter.job_id)
        .bind(from_deliveries(&filter))
        .bind(filter.after.map(|(at, _)| at))
        .bind(filter.after.map(|(_, id)| id))
}

/// The statement of [`list`]: an account's jobs, newest first, with a
/// summary of their deliveries. A filter is written into it only when it
/// filters, so that each plan is made for the filters it has, cached plans
/// included: under an `OR` (`$8 IS NULL OR id IN (...)`) PostgreSQL cannot
/// make the deliveries' subquery a join (it turns sublinks into joins
/// before it folds the constants), nor use an index of the filtered column
/// in a generic plan, and reads every job of the account, newest first,
/// testing each. `FAILED` is written as a literal, the predicate of the
/// partial index `jobs_failed_by_account` (a parameter never matches it in
/// a generic plan). The statement takes the same ten values whatever it
/// uses of them.
fn list_sql(filter: &JobFilter<'_>) -> String {
    let when = |filters: bool, sql: &'static str| if filters { sql } else { "" };
    let by_job = when(filter.job_id.is_some(), "AND id = $7");
    let after = when(filter.after.is_some(), "AND (created_at, id) < ($9, $10)");
    let by_status = match filter.status {
        None => "",
        Some(status::FAILED) => "AND status = 'FAILED'",
        Some(_) => "AND status = $2",
    };
    let by_template = when(filter.template_id.is_some(), "AND template_id = $3");
    let by_delivery = when(
        from_deliveries(filter).is_some(),
        "AND id IN (SELECT job_id FROM webhook_deliveries WHERE account_id = $1 AND state = $8)",
    );
    format!(
        "SELECT j.*, d.delivery FROM (SELECT {} FROM jobs
             WHERE account_id = $1 {by_job} {by_status} {by_template} {after} {by_delivery}
         ) j
         LEFT JOIN LATERAL (
             SELECT CASE WHEN bool_or(w.state = 'pending') THEN 'pending'
                         WHEN bool_or(w.state = 'failed') THEN 'failed'
                         WHEN bool_or(w.state = 'gone') THEN 'gone'
                         WHEN bool_or(w.state = 'delivered') THEN 'delivered' END AS delivery
             FROM webhook_deliveries w WHERE w.job_id = j.id
         ) d ON true
         WHERE $4::text IS NULL OR d.delivery = $4
         ORDER BY j.created_at DESC, j.id DESC LIMIT $5 OFFSET $6",
        columns!()
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{accounts, templates};

    async fn template(pool: &sqlx::PgPool, account_id: Uuid) -> Uuid {
        let write = templates::TemplateWrite {
            name: "t".into(),
            spec: serde_json::json!({"fields": []}),
            webhook_url: None,
            webhook_headers_enc: None,
        };
        templates::insert(pool, account_id, &write, b"secret")
            .await
            .unwrap()
            .id
    }

    fn job(account_id: Uuid, template_id: Uuid, file_name: &str) -> NewJob {
        let id = Uuid::now_v7();
        NewJob {
            id,
            account_id,
            template_id,
            content_type: "application/pdf".into(),
            file_name: Some(file_name.into()),
            size_bytes: 10,
            storage_key: crate::storage::document_key(account_id, id),
            static_values: serde_json::json!({"n": file_name}),
            idempotency_key: None,
            inline_data: None,
        }
    }

    /// `job` with its document kept in the database.
    fn inline(mut job: NewJob) -> NewJob {
        job.storage_key = crate::storage::inline_key(job.account_id, job.id);
        job.inline_data = Some(bytes::Bytes::from(format!("document of {}", job.id)));
        job
    }

    /// Concurrent submissions share statements, and each still gets its own
    /// outcome: its job (with a queue task), `None` for a template that is
    /// not its account's, an error for a row the database refuses.
    #[tokio::test]
    async fn concurrent_inserts_share_statements_and_keep_their_own_outcomes() {
        let pool = crate::testing::migrated_database().await;
        let (a, _) = accounts::create(&pool, "A", 0).await.unwrap();
        let (b, _) = accounts::create(&pool, "B", 0).await.unwrap();
        let (ta, tb) = (template(&pool, a.id).await, template(&pool, b.id).await);
        // One statement at a time: everything queued meanwhile joins the next.
        let inserter = Inserter::spawn(pool.clone(), 16, 1, 25);
        let mut jobs = Vec::new();
        for i in 0..40 {
            let job = match i % 10 {
                // Another account's template, and one that does not exist.
                3 => job(a.id, tb, "foreign"),
                7 => job(b.id, Uuid::now_v7(), "missing"),
                // PostgreSQL cannot store NUL in text: this row's statement fails.
                9 if i == 19 => job(a.id, ta, "bad\0name"),
                _ => job(
                    if i % 2 == 0 { a.id } else { b.id },
                    if i % 2 == 0 { ta } else { tb },
                    "ok",
                ),
            };
            // Some keep their document inline: a foreign template's too.
            jobs.push(if i % 4 == 0 || i % 10 == 3 {
                inline(job)
            } else {
                job
            });
        }
        let outcomes =
            futures::future::join_all(jobs.iter().map(|j| inserter.insert(j.clone()))).await;
        for (j, outcome) in jobs.iter().zip(&outcomes) {
            match j.file_name.as_deref() {
                Some("ok") => {
                    let row = outcome.as_ref().unwrap().as_ref().expect("inserted");
                    assert_eq!(
                        (row.id, row.account_id, &row.storage_key),
                        (j.id, j.account_id, &j.storage_key)
                    );
                    assert_eq!(row.static_values.0, j.static_values);
                }
                Some("foreign" | "missing") => assert!(matches!(outcome, Ok(None)), "{outcome:?}"),
                _ => assert!(
                    matches!(outcome, Err(sqlx::Error::Database(_))),
                    "{outcome:?}"
                ),
            }
        }
        let ok: Vec<Uuid> = jobs
            .iter()
            .filter(|j| j.file_name.as_deref() == Some("ok"))
            .map(|j| j.id)
            .collect();
        let stored: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
        let mut want = ok.clone();
        want.sort();
        assert_eq!(stored, want, "exactly the good rows");
        let tasks: Vec<Uuid> =
            sqlx::query_scalar("SELECT ref_id FROM tasks WHERE kind = $1 ORDER BY ref_id")
                .bind(crate::queue::kind::JOB)
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(tasks, want, "one queue task per job");
        // The inline documents of the jobs inserted, and only theirs.
        let kept: Vec<(Uuid, String, Vec<u8>)> =
            sqlx::query_as("SELECT job_id, key, data FROM inline_documents ORDER BY job_id")
                .fetch_all(&pool)
                .await
                .unwrap();
        let mut want_kept: Vec<(Uuid, String, Vec<u8>)> = jobs
            .iter()
            .filter(|j| j.file_name.as_deref() == Some("ok"))
            .filter_map(|j| {
                let data = j.inline_data.as_ref()?.to_vec();
                Some((j.id, j.storage_key.clone(), data))
            })
            .collect();
        want_kept.sort();
        assert_eq!(want_kept.len(), 10);
        assert_eq!(kept, want_kept);
        // The test's runtime has one thread: all 40 are queued before the
        // inserter runs, which takes them 16, 16 and 8 to a statement. Rows
        // of one statement share its transaction id; the second statement
        // failed on the NUL and its rows went one by one.
        let xmin = |range: std::ops::Range<usize>| {
            let ids: Vec<Uuid> = jobs[range]
                .iter()
                .filter(|j| j.file_name.as_deref() == Some("ok"))
                .map(|j| j.id)
                .collect();
            let pool = pool.clone();
            async move {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(DISTINCT xmin::text) FROM jobs WHERE id = ANY($1)",
                )
                .bind(&ids)
                .fetch_one(&pool)
                .await
                .unwrap();
                (n, ids.len() as i64)
            }
        };
        assert_eq!(xmin(0..16).await.0, 1, "the first 16 share one statement");
        assert_eq!(xmin(32..40).await.0, 1, "the last 8 share one statement");
        let (separate, rows) = xmin(16..32).await;
        assert_eq!(
            separate, rows,
            "the failed statement's rows were retried one by one"
        );
    }

    /// The listing's plan for `filter`, made with its values (a custom plan).
    async fn plan(pool: &sqlx::PgPool, account_id: Uuid, filter: JobFilter<'_>) -> String {
        use sqlx::Row;
        let sql = format!("EXPLAIN {}", list_sql(&filter));
        list_query(sql, account_id, filter, 50, 0)
            .map(|row: sqlx::postgres::PgRow| row.get::<String, _>(0))
            .fetch_all(pool)
            .await
            .unwrap()
            .join("\n")
    }

    /// The listing's generic plan for `filter`: the one PostgreSQL may cache
    /// for a prepared statement run often, made without its values.
    async fn generic_plan(pool: &sqlx::PgPool, account_id: Uuid, filter: JobFilter<'_>) -> String {
        use sqlx::Row;
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("SET plan_cache_mode = force_generic_plan")
            .execute(&mut *conn)
            .await
            .unwrap();
        let prepare = format!(
            "PREPARE listing (uuid, text, uuid, text, int8, int8, uuid, text, timestamptz, uuid) AS {}",
            list_sql(&filter)
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(prepare))
            .execute(&mut *conn)
            .await
            .unwrap();
        let quoted = |v: Option<String>| v.map_or("NULL".into(), |v| format!("'{v}'"));
        let execute = format!(
            "EXPLAIN EXECUTE listing ('{account_id}', {}, {}, {}, 50, 0, {}, {}, NULL, NULL)",
            quoted(filter.status.map(str::to_owned)),
            quoted(filter.template_id.map(|t| t.to_string())),
            quoted(filter.delivery.map(str::to_owned)),
            quoted(filter.job_id.map(|j| j.to_string())),
            quoted(from_deliveries(&filter).map(str::to_owned)),
        );
        let plan: Vec<String> = sqlx::raw_sql(sqlx::AssertSqlSafe(execute))
            .fetch_all(&mut *conn)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        // Not back to the pool with the statement and the setting.
        conn.close().await.unwrap();
        plan.join("\n")
    }

    /// A delivery filter starts from the account's deliveries in that
    /// state: the subquery is a join, not a test of every job of the
    /// account (a `SubPlan` in the plan), as it was under `$8 IS NULL OR`.
    #[tokio::test]
    async fn a_delivery_filter_is_a_join_not_a_test_of_every_job() {
        let pool = crate::testing::migrated_database().await;
        let failed = JobFilter {
            delivery: Some("failed"),
            ..JobFilter::default()
        };
        let filtered = plan(&pool, Uuid::now_v7(), failed).await;
        assert!(!filtered.contains("SubPlan"), "{filtered}");
        // `delivered` is tested job by job: the statement has no $8, and
        // still takes the same ten values.
        let delivered = JobFilter {
            delivery: Some("delivered"),
            ..JobFilter::default()
        };
        plan(&pool, Uuid::now_v7(), delivered).await;
    }

    /// Failed jobs and a template's jobs are read from their own indexes,
    /// in cached (generic) plans too, not found by reading the account's
    /// jobs one by one, newest first, until a page of them.
    #[tokio::test]
    async fn failed_and_template_filters_read_their_own_indexes() {
        let pool = crate::testing::migrated_database().await;
        let (account, _) = accounts::create(&pool, "A", 0).await.unwrap();
        let busy = template(&pool, account.id).await;
        let rare = template(&pool, account.id).await;
        // 20,000 jobs, one a second: 20 failed, 20 of the rare template.
        sqlx::query(
            "INSERT INTO jobs (id, account_id, template_id, status, content_type, size_bytes,
                               storage_key, created_at)
             SELECT gen_random_uuid(), $1, CASE WHEN i % 1000 = 7 THEN $3 ELSE $2 END,
                    CASE WHEN i % 1000 = 3 THEN 'FAILED' ELSE 'SUCCESS' END,
                    'application/pdf', 10, 'k' || i, now() - i * interval '1 second'
             FROM generate_series(1, 20000) i",
        )
        .bind(account.id)
        .bind(busy)
        .bind(rare)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("ANALYZE jobs").execute(&pool).await.unwrap();

        let failed = JobFilter {
            status: Some(status::FAILED),
            ..JobFilter::default()
        };
        let by_template = JobFilter {
            template_id: Some(rare),
            ..JobFilter::default()
        };
        for (filter, index) in [
            (failed, "jobs_failed_by_account"),
            (by_template, "jobs_by_template"),
        ] {
            for plan in [
                plan(&pool, account.id, filter).await,
                generic_plan(&pool, account.id, filter).await,
            ] {
                assert!(plan.contains(index), "{filter:?}: {plan}");
            }
        }
        // And what they list: the 20 of each, newest first, with the
        // cursor and the other filters still applied.
        let failed_jobs = list(&pool, account.id, failed, 50, 0).await.unwrap();
        assert_eq!(failed_jobs.len(), 20);
        assert!(failed_jobs.iter().all(|j| j.job.status == status::FAILED));
        assert!(
            failed_jobs
                .windows(2)
                .all(|w| w[0].job.created_at > w[1].job.created_at)
        );
        let rare_jobs = list(&pool, account.id, by_template, 50, 0).await.unwrap();
        assert_eq!(rare_jobs.len(), 20);
        assert!(rare_jobs.iter().all(|j| j.job.template_id == rare));
        let tenth = &failed_jobs[9].job;
        let after = JobFilter {
            after: Some((tenth.created_at, tenth.id)),
            ..failed
        };
        let rest = list(&pool, account.id, after, 50, 0).await.unwrap();
        assert_eq!(
            rest.iter().map(|j| j.job.id).collect::<Vec<_>>(),
            failed_jobs[10..]
                .iter()
                .map(|j| j.job.id)
                .collect::<Vec<_>>()
        );
        let both = JobFilter {
            template_id: Some(busy),
            ..failed
        };
        assert_eq!(
            list(&pool, account.id, both, 50, 0).await.unwrap().len(),
            20
        );
        let none = JobFilter {
            template_id: Some(rare),
            ..failed
        };
        assert!(
            list(&pool, account.id, none, 50, 0)
                .await
                .unwrap()
                .is_empty()
        );
        let one = JobFilter {
            job_id: Some(tenth.id),
            ..JobFilter::default()
        };
        let found = list(&pool, account.id, one, 50, 0).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].job.id, tenth.id);
        let other = list(&pool, Uuid::now_v7(), one, 50, 0).await.unwrap();
        assert!(other.is_empty(), "another account's job");
    }
}
