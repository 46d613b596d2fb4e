//! Deleting a finished job's data: its stored files, its results and the
//! webhook payloads that hold them. The janitor does it
//! `result_retention_secs` after a job finished; the API on request
//! (`DELETE /v1/jobs/{id}`), which also empties the job's static values,
//! forgets its file names (a file or ZIP entry name can itself be personal
//! data: `invoice-jane-doe.pdf`) and the excerpts of what its webhook
//! receivers answered (a receiver may echo what it was sent).

use anyhow::Context;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{deliveries, documents};
use crate::storage::{Storage, StorageError};

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

/// Deletes the stored files of `jobs` (see [`stored_files`]),
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
            let named = documents::file_keys(pool, *id, key.clone()).await?;
            match stored_files(storage, named).await {
                Err(e) => {
                    tracing::warn!(job_id = %id, error = %e, "listing a job's files failed");
                    ok = false;
                }
                Ok(keys) => {
                    for k in keys {
                        match storage.delete(&k).await {
                            Ok(()) => files += 1,
                            Err(e) => {
                                tracing::warn!(job_id = %id, error = %e, "deleting a job's file failed");
                                ok = false;
                            }
                        }
                    }
                }
            }
            if ok {
                // Recorded at once: a pass cut off before the commit below
                // (its timeout, on a slow store) must not leave the next
                // one to list and delete every file of the batch again,
                // or a big batch would never get as far as its commit.
                sqlx::query(
                    "UPDATE jobs SET file_deleted_at = coalesce(file_deleted_at, now()) WHERE id = $1",
                )
                .bind(id)
                .execute(pool)
                .await?;
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
        forget_file_names(&mut tx, &done).await?;
        // What the receivers answered can quote what they were sent.
        sqlx::query(
            "UPDATE webhook_attempts a SET response_excerpt = NULL
             FROM webhook_deliveries d
             WHERE a.delivery_id = d.id AND d.job_id = ANY($1) AND a.response_excerpt IS NOT NULL",
        )
        .bind(&done)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok((done, files))
}

/// Deletes the stored files of job `id` once it is final and delivered
/// ([`documents::files_to_delete`]), then marks them deleted. Returns how
/// many went, or None when there was nothing to delete yet or a file could
/// not be listed or deleted (logged; the next pass tries again).
pub async fn delete_delivered_files(
    pool: &PgPool,
    storage: &Storage,
    id: Uuid,
) -> sqlx::Result<Option<u64>> {
    let named = documents::files_to_delete(&mut *pool.acquire().await?, id).await?;
    if named.keys.is_empty() {
        return Ok(None);
    }
    let keys = match stored_files(storage, named).await {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(job_id = %id, error = %e, "listing a delivered job's files failed; the next pass tries again");
            return Ok(None);
        }
    };
    for key in &keys {
        if let Err(e) = storage.delete(key).await {
            tracing::warn!(job_id = %id, error = %e, "deleting a delivered job's file failed; the next pass tries again");
            return Ok(None);
        }
    }
    documents::mark_files_deleted(pool, id).await?;
    Ok(Some(keys.len() as u64))
}

/// Every stored file of a job: those the database names, and for a ZIP
/// whatever is stored under its entries' prefix (see
/// [`documents::JobFiles::unpacked`]), each once.
pub async fn stored_files(
    storage: &Storage,
    named: documents::JobFiles,
) -> Result<Vec<String>, StorageError> {
    let mut keys = named.keys;
    if let Some(prefix) = &named.unpacked {
        keys.extend(storage.keys_starting_with(prefix).await?);
        keys.sort();
        keys.dedup();
    }
    Ok(keys)
}

/// Forgets the file names of `jobs`' documents, also where a document's
/// error message quotes its name (`"jane-doe.pdf" is encrypted …`).
async fn forget_file_names(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    jobs: &[Uuid],
) -> sqlx::Result<()> {
    let quoting: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT id, file_name, error_message FROM documents
         WHERE job_id = ANY($1) AND file_name <> '' AND error_message IS NOT NULL",
    )
    .bind(jobs)
    .fetch_all(&mut **tx)
    .await?;
    // Only the messages that quote their name are written again.
    let (ids, messages): (Vec<Uuid>, Vec<String>) = quoting
        .into_iter()
        .filter_map(|(id, name, message)| {
            let without = without_name(&message, &name);
            (without != message).then_some((id, without))
        })
        .unzip();
    sqlx::query(
        "UPDATE documents d SET error_message = m.message
         FROM unnest($1::uuid[], $2::text[]) AS m(id, message) WHERE d.id = m.id",
    )
    .bind(&ids)
    .bind(&messages)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE documents SET file_name = NULL WHERE job_id = ANY($1)")
        .bind(jobs)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// `message` with `name` (quoted as the worker quotes it, or bare) left out.
fn without_name(message: &str, name: &str) -> String {
    const GONE: &str = "a file (name deleted)";
    message
        .replace(&format!("{name:?}"), GONE)
        .replace(name, GONE)
}

#[cfg(test)]
mod tests {
    use super::without_name;

    #[test]
    fn error_messages_lose_the_file_name() {
        // Quoted as the worker quotes it, escapes and all.
        let name = r#"jane "doe\2026.pdf"#;
        let message = format!("{name:?} is encrypted with a password");
        assert_ne!(message, format!("\"{name}\" is encrypted with a password"));
        assert_eq!(
            without_name(&message, name),
            "a file (name deleted) is encrypted with a password"
        );
        assert_eq!(
            without_name("entry x.pdf: corrupt", "x.pdf"),
            "entry a file (name deleted): corrupt"
        );
        assert_eq!(without_name("page 3 is blank", "x.pdf"), "page 3 is blank");
    }
}
