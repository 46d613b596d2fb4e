//! The processing side of jobs: documents, their results and the charge
//! for them, and the job's own status as its documents finish.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::db::jobs::DocumentRow;
use crate::status;

/// A document to insert when a job is split.
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub id: Uuid,
    pub idx: i32,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub storage_key: Option<String>,
    /// `Some((code, message))` inserts the document already failed.
    pub failure: Option<(String, String)>,
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<DocumentRow>> {
    sqlx::query_as(
        "SELECT id, job_id, idx, file_name, content_type, storage_key, status, pages,
                error_code, error_message, created_at, finished_at
         FROM documents WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Inserts documents; those already there (a retried split) are kept.
pub async fn insert_all(
    tx: &mut PgConnection,
    job_id: Uuid,
    docs: &[NewDocument],
) -> sqlx::Result<()> {
    for d in docs {
        let (code, message) = d.failure.clone().unzip();
        let failed = code.is_some();
        sqlx::query(
            "INSERT INTO documents (id, job_id, idx, file_name, content_type, storage_key, status,
                                    error_code, error_message, finished_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $10 THEN now() END)
             ON CONFLICT (job_id, idx) DO NOTHING",
        )
        .bind(d.id)
        .bind(job_id)
        .bind(d.idx)
        .bind(&d.file_name)
        .bind(&d.content_type)
        .bind(&d.storage_key)
        .bind(if failed {
            status::PROCESS_IMAGE_FAILED
        } else {
            status::NEW
        })
        .bind(code)
        .bind(message)
        .bind(failed)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

pub async fn set_job_status(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    status: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE jobs SET status = $2, updated_at = now()
         WHERE id = $1 AND status NOT IN ('SUCCESS', 'FAILED') AND status <> $2",
    )
    .bind(job_id)
    .bind(status)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks a ZIP job `UNZIPPING FILE` unless it was split already (by an
/// attempt that committed after this one read the job, whose status must
/// not be set back); false then.
pub async fn start_unzipping(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<bool> {
    let started = sqlx::query(
        "UPDATE jobs SET status = $2, updated_at = now()
         WHERE id = $1 AND status IN ($3, $2)",
    )
    .bind(job_id)
    .bind(status::UNZIPPING_FILE)
    .bind(status::NEW)
    .execute(db)
    .await?;
    Ok(started.rows_affected() == 1)
}

/// Fails the whole job (an unreadable ZIP): `stage_status` first, then
/// FAILED. A final `stage_status` is skipped: the job would be FAILED
/// without its error and finished time, which the janitor needs.
pub async fn fail_job(
    tx: &mut PgConnection,
    job_id: Uuid,
    stage_status: &str,
    code: &str,
    message: &str,
) -> sqlx::Result<Option<Finished>> {
    if !status::is_final(stage_status) {
        set_job_status(&mut *tx, job_id, stage_status).await?;
    }
    let seconds: Option<f64> = sqlx::query_scalar(
        "UPDATE jobs SET status = 'FAILED', error_code = $2, error_message = $3,
                finished_at = now(), updated_at = now()
         WHERE id = $1 AND status NOT IN ('SUCCESS', 'FAILED')
         RETURNING extract(epoch FROM finished_at - created_at)::float8",
    )
    .bind(job_id)
    .bind(code)
    .bind(message)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(seconds.map(|seconds| Finished {
        status: status::FAILED,
        seconds,
    }))
}

/// A job that reached its final status in a transaction: count it in the
/// metrics once that transaction has committed.
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use = "record it after the commit"]
pub struct Finished {
    pub status: &'static str,
    /// From submission to the final status.
    pub seconds: f64,
}

impl Finished {
    pub fn record(finished: Option<Finished>) {
        if let Some(f) = finished {
            crate::metrics::job_finished(f.status, f.seconds);
        }
    }
}

pub async fn start(db: impl PgExecutor<'_>, doc_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE documents SET status = 'PROCESSING IMAGE', updated_at = now()
         WHERE id = $1 AND finished_at IS NULL",
    )
    .bind(doc_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks the document failed (a no-op if it already finished).
pub async fn fail(
    db: impl PgExecutor<'_>,
    doc_id: Uuid,
    pages: Option<i32>,
    code: &str,
    message: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE documents SET status = 'PROCESS IMAGE FAILED', pages = coalesce($2, pages),
                error_code = $3, error_message = $4, finished_at = now(), updated_at = now()
         WHERE id = $1 AND finished_at IS NULL",
    )
    .bind(doc_id)
    .bind(pages)
    .bind(code)
    .bind(message)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What charging for a document did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    Charged {
        balance_after: i64,
    },
    /// The ledger already has this document: nothing charged again.
    AlreadyCharged,
    /// The balance cannot cover it: nothing charged.
    Insufficient {
        balance: i64,
    },
}

/// Charges `pages` credits for the document, at most once (the ledger's
/// unique document_id), never below zero (the balance row is locked and
/// the update is conditional).
pub async fn charge(
    tx: &mut PgConnection,
    account_id: Uuid,
    job_id: Uuid,
    doc_id: Uuid,
    pages: i64,
) -> sqlx::Result<Charge> {
    // NO KEY UPDATE (what the UPDATE below takes anyway) serialises the
    // account's charges without blocking the foreign-key checks of rows
    // that reference the account: FOR UPDATE held every job insert of the
    // account (and, batched with it, of others) until this commit.
    let balance: i64 =
        sqlx::query_scalar("SELECT credits FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
            .bind(account_id)
            .fetch_one(&mut *tx)
            .await?;
    let charged: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM credit_ledger WHERE document_id = $1)")
            .bind(doc_id)
            .fetch_one(&mut *tx)
            .await?;
    if charged {
        return Ok(Charge::AlreadyCharged);
    }
    let after: Option<i64> = sqlx::query_scalar(
        "UPDATE accounts SET credits = credits - $2 WHERE id = $1 AND credits >= $2 RETURNING credits",
    )
    .bind(account_id)
    .bind(pages)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(after) = after else {
        return Ok(Charge::Insufficient { balance });
    };
    sqlx::query(
        "INSERT INTO credit_ledger (account_id, delta, balance_after, reason, job_id, document_id)
         VALUES ($1, $2, $3, 'document', $4, $5)",
    )
    .bind(account_id)
    .bind(-pages)
    .bind(after)
    .bind(job_id)
    .bind(doc_id)
    .execute(&mut *tx)
    .await?;
    Ok(Charge::Charged {
        balance_after: after,
    })
}

/// Stores the result and marks the document succeeded.
pub async fn succeed(
    tx: &mut PgConnection,
    doc: &DocumentRow,
    pages: i32,
    result: &serde_json::Value,
    meta: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO results (document_id, job_id, result, meta) VALUES ($1, $2, $3, $4)
         ON CONFLICT (document_id) DO UPDATE SET result = EXCLUDED.result, meta = EXCLUDED.meta",
    )
    .bind(doc.id)
    .bind(doc.job_id)
    .bind(Json(result))
    .bind(Json(meta))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE documents SET status = 'PROCESS IMAGE SUCCESS', pages = $2, error_code = NULL,
                error_message = NULL, finished_at = now(), updated_at = now()
         WHERE id = $1",
    )
    .bind(doc.id)
    .bind(pages)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// After a document finished: when every document of the job has, the job
/// ends SUCCESS (all succeeded) or FAILED. A single-file job passes through
/// its document's PROCESS IMAGE status first. Returns whether the job ended.
pub async fn finish_job_if_done(
    tx: &mut PgConnection,
    job_id: Uuid,
) -> sqlx::Result<Option<Finished>> {
    // Lock the job so two last documents finishing together agree: as an
    // UPDATE locks it, which the foreign-key checks of the webhook rows
    // each sibling inserted first (FOR KEY SHARE) do not wait for. FOR
    // UPDATE waited for them, and two siblings failing at once deadlocked.
    let job: Option<(String, String)> =
        sqlx::query_as("SELECT status, content_type FROM jobs WHERE id = $1 FOR NO KEY UPDATE")
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((job_status, content_type)) = job else {
        return Ok(None);
    };
    if status::is_final(&job_status) {
        return Ok(None);
    }
    let (open, failed, total): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE finished_at IS NULL),
                count(*) FILTER (WHERE status = 'PROCESS IMAGE FAILED'),
                count(*)
         FROM documents WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_one(&mut *tx)
    .await?;
    if open > 0 || total == 0 {
        return Ok(None);
    }
    if content_type != "zip" {
        let stage = if failed > 0 {
            status::PROCESS_IMAGE_FAILED
        } else {
            status::PROCESS_IMAGE_SUCCESS
        };
        set_job_status(&mut *tx, job_id, stage).await?;
    }
    let (final_status, code, message) = if failed == 0 {
        (status::SUCCESS, None, None)
    } else if content_type == "zip" {
        (
            status::FAILED,
            Some("documents_failed".to_owned()),
            Some(format!(
                "{failed} of {total} documents failed; see each document's error"
            )),
        )
    } else {
        let (code, message): (Option<String>, Option<String>) = sqlx::query_as(
            "SELECT error_code, error_message FROM documents WHERE job_id = $1 LIMIT 1",
        )
        .bind(job_id)
        .fetch_one(&mut *tx)
        .await?;
        (status::FAILED, code, message)
    };
    let seconds: f64 = sqlx::query_scalar(
        "UPDATE jobs SET status = $2, error_code = $3, error_message = $4, finished_at = now(),
                updated_at = now()
         WHERE id = $1
         RETURNING extract(epoch FROM finished_at - created_at)::float8",
    )
    .bind(job_id)
    .bind(final_status)
    .bind(code)
    .bind(message)
    .fetch_one(&mut *tx)
    .await?;
    Ok(Some(Finished {
        status: final_status,
        seconds,
    }))
}

/// The job's stored files (see [`JobFiles`]) once the job is final, no
/// webhook delivery is pending and they are not yet deleted; none
/// otherwise. The caller deletes them, then calls [`mark_files_deleted`]:
/// a caller that dies or whose storage fails in between leaves the job to
/// the next one (the janitor's next pass).
pub async fn files_to_delete(db: &mut PgConnection, job_id: Uuid) -> sqlx::Result<JobFiles> {
    let original: Option<String> = sqlx::query_scalar(
        "SELECT storage_key FROM jobs
         WHERE id = $1 AND file_deleted_at IS NULL AND status IN ('SUCCESS', 'FAILED')
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.job_id = $1 AND d.state = 'pending')",
    )
    .bind(job_id)
    .fetch_optional(&mut *db)
    .await?;
    match original {
        Some(original) => file_keys(db, job_id, original).await,
        None => Ok(JobFiles::default()),
    }
}

/// A job's stored files as the database knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFiles {
    /// The original and each document's, each once.
    pub keys: Vec<String>,
    /// For a ZIP, the prefix of the files its entries were stored under
    /// ([`unpacked_key`]). A split stores them before the commit that names
    /// them in document rows, so one that never committed (its worker was
    /// killed, the storage or the database failed) leaves files only a
    /// listing finds.
    pub unpacked: Option<String>,
}

/// Where the split `split` stores the `idx`th entry of a ZIP stored as
/// `original`: beside it, not in a folder of its own (see the API's storage
/// key). Each split names its own files: a worker whose lease ran out may
/// still be splitting while the task's next holder commits, and what the
/// stale one deletes again must not be the files the other's documents name.
pub fn unpacked_key(original: &str, split: &str, idx: usize) -> String {
    format!("{}{split}-{idx}", unpacked_prefix(original))
}

/// The prefix of every [`unpacked_key`] of a ZIP stored as `original`.
pub fn unpacked_prefix(original: &str) -> String {
    // A ZIP kept in the database has its entries in the object store, under
    // the key it would have had there.
    match original.strip_prefix(crate::storage::INLINE_PREFIX) {
        Some(rest) => format!("{}{rest}-doc-", crate::storage::DOCUMENTS_PREFIX),
        None => format!("{original}-doc-"),
    }
}

/// Every stored file of a job the database names: its documents' and the
/// `original`, each once; and where its ZIP's entries are stored.
pub async fn file_keys(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    original: String,
) -> sqlx::Result<JobFiles> {
    let (zip, mut keys): (bool, Vec<String>) = sqlx::query_as(
        "SELECT coalesce((SELECT content_type = 'zip' FROM jobs WHERE id = $1), false),
                array(SELECT storage_key FROM documents
                      WHERE job_id = $1 AND storage_key IS NOT NULL)",
    )
    .bind(job_id)
    .fetch_one(db)
    .await?;
    let unpacked = zip.then(|| unpacked_prefix(&original));
    keys.push(original);
    keys.sort();
    keys.dedup();
    Ok(JobFiles { keys, unpacked })
}

/// Records that the job's stored files are gone (after deleting them).
pub async fn mark_files_deleted(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE jobs SET file_deleted_at = now() WHERE id = $1 AND file_deleted_at IS NULL",
    )
    .bind(job_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Where a walk over finished jobs stands: the last one's `finished_at`
/// and id, in that order. [`JobCursor::START`] is before every job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCursor(pub DateTime<Utc>, pub Uuid);

impl JobCursor {
    /// Before any job (every job finished after 1970).
    pub const START: JobCursor = JobCursor(DateTime::UNIX_EPOCH, Uuid::nil());
}

/// Finished jobs after `after` whose files wait for deletion (see
/// [`files_to_delete`]), oldest first, with their cursors: the janitor's
/// sweep after workers that stopped midway. The walk goes on past jobs
/// whose files could not be deleted, which stay first in the order.
pub async fn jobs_with_files_to_delete(
    db: impl PgExecutor<'_>,
    after: JobCursor,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, JobCursor)>> {
    let rows: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, finished_at FROM jobs j
         WHERE finished_at IS NOT NULL AND file_deleted_at IS NULL
           AND finished_at >= $1 AND (finished_at > $1 OR id > $2)
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.job_id = j.id AND d.state = 'pending')
         ORDER BY finished_at, id LIMIT $3",
    )
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, at)| (id, JobCursor(at, id)))
        .collect())
}

/// Jobs after `after` that finished before `cutoff` and still have their
/// results, oldest first, with their stored file's key, whether their files
/// are deleted, and their cursors: the janitor's expiry.
pub async fn jobs_to_expire(
    db: impl PgExecutor<'_>,
    cutoff: DateTime<Utc>,
    after: JobCursor,
    limit: i64,
) -> sqlx::Result<Vec<((Uuid, String, bool), JobCursor)>> {
    let rows: Vec<(Uuid, String, bool, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, storage_key, file_deleted_at IS NOT NULL, finished_at FROM jobs
         WHERE finished_at < $1 AND results_expired_at IS NULL
           AND finished_at >= $2 AND (finished_at > $2 OR id > $3)
         ORDER BY finished_at, id LIMIT $4",
    )
    .bind(cutoff)
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, key, deleted, at)| ((id, key, deleted), JobCursor(at, id)))
        .collect())
}

/// A document and its result, for the results API.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DocumentResult {
    pub idx: i32,
    pub file_name: Option<String>,
    pub status: String,
    pub pages: Option<i32>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub result: Option<Json<serde_json::Value>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The documents of a job after index `after` (-1: from the first), at
/// most `limit`, with their results, in index order: the results API reads
/// a job a page at a time, whatever its size.
pub async fn results_page(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    after: i32,
    limit: i64,
) -> sqlx::Result<Vec<DocumentResult>> {
    sqlx::query_as(
        "SELECT d.idx, d.file_name, d.status, d.pages, d.error_code, d.error_message, r.result,
                d.finished_at
         FROM documents d LEFT JOIN results r ON r.document_id = d.id
         WHERE d.job_id = $1 AND d.idx > $2 ORDER BY d.idx LIMIT $3",
    )
    .bind(job_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The keys the results of a job hold, each with the index of the first
/// document whose result has it.
pub async fn result_keys(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
) -> sqlx::Result<Vec<(String, i32)>> {
    sqlx::query_as(
        "SELECT k.key, min(d.idx)
         FROM results r JOIN documents d ON d.id = r.document_id,
              jsonb_object_keys(CASE WHEN jsonb_typeof(r.result) = 'object'
                                     THEN r.result ELSE '{}' END) AS k(key)
         WHERE r.job_id = $1
         GROUP BY k.key",
    )
    .bind(job_id)
    .fetch_all(db)
    .await
}
