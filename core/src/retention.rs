//! Deleting a finished job's data: its stored files, its results and the
//! webhook payloads that hold them. The janitor does it
//! `result_retention_secs` after a job finished; the API on request
//! (`DELETE /v1/jobs/{id}`), which also empties the job's static values and
//! forgets its file names (a file or ZIP entry name can itself be personal
//! data: `invoice-jane-doe.pdf`).

use anyhow::Context;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{deliveries, documents};
use crate::storage::Storage;

/// Why a job's data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// `result_retention_secs` after it finished.
    Expired,
    /// Its account asked.
    Deleted,
}

/// A job whose data is to go: its id, the original's storage key, and
/// whether its files are known to be deleted already.
pub type Target = (Uuid, String, bool);

/// Deletes the stored files of `jobs` (the original and each document's),
/// then the results and webhook payloads of those whose files are all gone,
/// and marks them. A job with a file that failed to delete is left as it
/// was, to be tried again. Returns the jobs done and the files deleted.
pub async fn purge(
    pool: &PgPool,
    storage: &Storage,
    jobs: &[Target],
    why: Why,
) -> anyhow::Result<(Vec<Uuid>, u64)> {
    let mut files = 0;
    let mut done = Vec::new();
    for (id, key, deleted) in jobs {
        let mut ok = true;
        if !deleted {
            for k in documents::file_keys(pool, *id, key.clone()).await? {
                match storage.delete(&k).await {
                    Ok(()) => files += 1,
                    Err(e) => {
                        tracing::warn!(job_id = %id, error = %e, "deleting a job's file failed");
                        ok = false;
                    }
                }
            }
        }
        if ok {
            done.push(*id);
        }
    }
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM results WHERE job_id = ANY($1)")
        .bind(&done)
        .execute(&mut *tx)
        .await
        .context("deleting results")?;
    let message = match why {
        Why::Expired => {
            "the results expired (result_retention_secs) before the webhook was delivered"
        }
        Why::Deleted => "the job's data was deleted on request before the webhook was delivered",
    };
    deliveries::expire(&mut tx, &done, message)
        .await
        .context("emptying webhook payloads")?;
    sqlx::query(
        "UPDATE jobs SET results_expired_at = coalesce(results_expired_at, now()),
                file_deleted_at = coalesce(file_deleted_at, now()),
                data_deleted_at = CASE WHEN $2 THEN coalesce(data_deleted_at, now()) ELSE data_deleted_at END,
                static_values = CASE WHEN $2 THEN '{}'::jsonb ELSE static_values END,
                file_name = CASE WHEN $2 THEN NULL ELSE file_name END
         WHERE id = ANY($1)",
    )
    .bind(&done)
    .bind(why == Why::Deleted)
    .execute(&mut *tx)
    .await?;
    if why == Why::Deleted {
        sqlx::query("UPDATE documents SET file_name = NULL WHERE job_id = ANY($1)")
            .bind(&done)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok((done, files))
}
