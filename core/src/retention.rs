//! Deleting a finished job's data: its stored files, its results and the
//! webhook payloads that hold them. The janitor does it
//! `result_retention_secs` after a job finished; the API on request
//! (`DELETE /v1/jobs/{id}`), which also empties the job's static values and
//! forgets its file names (a file or ZIP entry name can itself be personal
//! data: `invoice-jane-doe.pdf`). Both forget the excerpts of what the job's
//! webhook receivers answered (a receiver may echo what it was sent).

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
    for chunk in chunks(pool, &done).await? {
        forget(pool, &chunk, why).await?;
    }
    Ok((done, files))
}

/// About how many documents' results one transaction of [`purge`] deletes.
const DOCUMENTS_PER_COMMIT: i64 = 1000;

/// `jobs` in order, cut into runs of about [`DOCUMENTS_PER_COMMIT`]
/// documents (a job with more is a run of its own), each committed on its
/// own: one transaction for a janitor batch of ZIP jobs (500 of 1,000
/// documents: half a million results and webhook payloads) may not commit
/// within a step's time limit, and would then be cut off, and started
/// again, at every pass.
async fn chunks(pool: &PgPool, jobs: &[Uuid]) -> sqlx::Result<Vec<Vec<Uuid>>> {
    let counts: std::collections::HashMap<Uuid, i64> = sqlx::query_as(
        "SELECT job_id, count(*) FROM documents WHERE job_id = ANY($1) GROUP BY job_id",
    )
    .bind(jobs)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    Ok(cut(jobs
        .iter()
        .map(|id| (*id, counts.get(id).copied().unwrap_or(0)))))
}

/// The jobs, with their document counts, in runs of at most
/// [`DOCUMENTS_PER_COMMIT`] documents, or of one job.
fn cut(jobs: impl Iterator<Item = (Uuid, i64)>) -> Vec<Vec<Uuid>> {
    let mut chunks: Vec<Vec<Uuid>> = Vec::new();
    let mut size = DOCUMENTS_PER_COMMIT;
    for (id, documents) in jobs {
        // A job with none (a failed upload) still has its row to update.
        let n = documents.max(1);
        if size + n > DOCUMENTS_PER_COMMIT {
            chunks.push(Vec::new());
            size = 0;
        }
        size += n;
        chunks.last_mut().expect("pushed above").push(id);
    }
    chunks
}

/// Deletes the results and webhook payloads of `done` (their files are
/// gone) and marks them, in one transaction.
async fn forget(pool: &PgPool, done: &[Uuid], why: Why) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM results WHERE job_id = ANY($1)")
        .bind(done)
        .execute(&mut *tx)
        .await
        .context("deleting results")?;
    let message = match why {
        Why::Expired => {
            "the results expired (result_retention_secs) before the webhook was delivered"
        }
        Why::Deleted => "the job's data was deleted on request before the webhook was delivered",
    };
    deliveries::expire(&mut tx, done, message)
        .await
        .context("emptying webhook payloads")?;
    if why == Why::Deleted {
        // Before the jobs' own file names are emptied below: messages may
        // quote them.
        forget_file_names(&mut tx, done).await?;
    }
    sqlx::query(
        "UPDATE jobs SET results_expired_at = coalesce(results_expired_at, now()),
                file_deleted_at = coalesce(file_deleted_at, now()),
                data_deleted_at = CASE WHEN $2 THEN coalesce(data_deleted_at, now()) ELSE data_deleted_at END,
                static_values = CASE WHEN $2 THEN '{}'::jsonb ELSE static_values END,
                file_name = CASE WHEN $2 THEN NULL ELSE file_name END
         WHERE id = ANY($1)",
    )
    .bind(done)
    .bind(why == Why::Deleted)
    .execute(&mut *tx)
    .await?;
    // What the receivers answered can quote what they were sent (an echo,
    // a validation error naming the rejected input): it goes with the
    // results, on expiry as on request, though the attempts themselves are
    // kept for `webhook_attempts_retention_secs`.
    sqlx::query(
        "UPDATE webhook_attempts a SET response_excerpt = NULL
         FROM webhook_deliveries d
         WHERE a.delivery_id = d.id AND d.job_id = ANY($1) AND a.response_excerpt IS NOT NULL",
    )
    .bind(done)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// What [`delete_delivered_files`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Nothing to delete yet (not final, a webhook pending) or any more.
    NotDue,
    /// The files are gone and recorded so: this many.
    Deleted(u64),
    /// A file could not be listed or deleted (logged): tried again later.
    Failed,
}

/// Deletes the stored files of job `id` once it is final and delivered
/// ([`documents::files_to_delete`]), then marks them deleted.
pub async fn delete_delivered_files(
    pool: &PgPool,
    storage: &Storage,
    id: Uuid,
) -> sqlx::Result<Delivered> {
    let named = documents::files_to_delete(&mut *pool.acquire().await?, id).await?;
    if named.keys.is_empty() {
        return Ok(Delivered::NotDue);
    }
    let keys = match stored_files(storage, named).await {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(job_id = %id, error = %e, "listing a delivered job's files failed; the next pass tries again");
            return Ok(Delivered::Failed);
        }
    };
    for key in &keys {
        if let Err(e) = storage.delete(key).await {
            tracing::warn!(job_id = %id, error = %e, "deleting a delivered job's file failed; the next pass tries again");
            return Ok(Delivered::Failed);
        }
    }
    documents::mark_files_deleted(pool, id).await?;
    Ok(Delivered::Deleted(keys.len() as u64))
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

/// Forgets the file names of `jobs` and their documents, also where an
/// error message quotes one: its own (`"jane-doe.pdf" is encrypted …`), the
/// upload's, or a ZIP entry's that failed the whole batch (the worker puts
/// an entry's name first, quoted, and it may be no document's name).
async fn forget_file_names(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    jobs: &[Uuid],
) -> sqlx::Result<()> {
    // (id, names it may quote, message), documents and jobs alike.
    type Quoting = (Uuid, Vec<String>, String);
    let documents: Vec<Quoting> = sqlx::query_as(
        "SELECT d.id, array_remove(ARRAY[d.file_name, j.file_name], NULL), d.error_message
         FROM documents d JOIN jobs j ON j.id = d.job_id
         WHERE d.job_id = ANY($1) AND d.error_message IS NOT NULL",
    )
    .bind(jobs)
    .fetch_all(&mut **tx)
    .await?;
    let own: Vec<Quoting> = sqlx::query_as(
        "SELECT j.id,
                array_remove(array_append(
                    ARRAY(SELECT d.file_name FROM documents d
                          WHERE d.job_id = j.id AND d.file_name IS NOT NULL),
                    j.file_name), NULL),
                j.error_message
         FROM jobs j WHERE j.id = ANY($1) AND j.error_message IS NOT NULL",
    )
    .bind(jobs)
    .fetch_all(&mut **tx)
    .await?;
    for (table, rows) in [("documents", documents), ("jobs", own)] {
        // Only the messages that quote a name are written again.
        let (ids, messages): (Vec<Uuid>, Vec<String>) = rows
            .into_iter()
            .filter_map(|(id, names, message)| {
                let without = without_names(&message, &names);
                (without != message).then_some((id, without))
            })
            .unzip();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} t SET error_message = m.message
             FROM unnest($1::uuid[], $2::text[]) AS m(id, message) WHERE t.id = m.id"
        )))
        .bind(&ids)
        .bind(&messages)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query("UPDATE documents SET file_name = NULL WHERE job_id = ANY($1)")
        .bind(jobs)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

const GONE: &str = "a file (name deleted)";

/// `message` with each of `names` (quoted as the worker quotes it, or bare)
/// left out, and a quoted name it starts with.
fn without_names(message: &str, names: &[String]) -> String {
    let mut message = without_leading_quote(message);
    // Longest first: `a.pdf` must not eat into `data.pdf`'s replacement.
    let mut names: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !n.is_empty())
        .collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        message = message
            .replace(&format!("{name:?}"), GONE)
            .replace(name, GONE);
    }
    message
}

/// A message that starts with a quoted string (Rust's `{:?}`, as the worker
/// quotes a ZIP entry's name) with that string left out.
fn without_leading_quote(message: &str) -> String {
    let Some(rest) = message.strip_prefix('"') else {
        return message.to_owned();
    };
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return format!("{GONE}{}", &rest[i + 1..]),
            _ => {}
        }
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::{cut, without_names};

    fn without_name(message: &str, name: &str) -> String {
        without_names(message, &[name.to_owned()])
    }

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

    #[test]
    fn a_quoted_entry_name_first_goes_without_being_named() {
        // A ZIP entry that failed the whole batch is no document's name.
        let entry = r#"jane "doe\2026.pdf"#;
        let message = format!("{entry:?} could not be unpacked: invalid checksum");
        assert_eq!(
            without_names(&message, &["batch.zip".to_owned()]),
            "a file (name deleted) could not be unpacked: invalid checksum"
        );
        // The upload's name too, and a longer name before a shorter one
        // inside it.
        assert_eq!(
            without_names(
                "batch.zip holds data.pdf",
                &[
                    "a.pdf".to_owned(),
                    "data.pdf".to_owned(),
                    "batch.zip".to_owned()
                ]
            ),
            "a file (name deleted) holds a file (name deleted)"
        );
        // An unterminated quote is left as it is.
        assert_eq!(without_names("\"half", &[]), "\"half");
    }

    #[test]
    fn each_commit_covers_about_a_thousand_documents() {
        let ids: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
        let counts = [600, 600, 10, 0, 1500, 1];
        let chunks = cut(ids.iter().copied().zip(counts));
        assert_eq!(
            chunks,
            vec![
                vec![ids[0]],
                vec![ids[1], ids[2], ids[3]],
                vec![ids[4]],
                vec![ids[5]],
            ]
        );
        // A thousand small jobs make one commit, the next starts another.
        let small: Vec<Uuid> = (0..1001).map(|_| Uuid::new_v4()).collect();
        let chunks = cut(small.iter().map(|id| (*id, 1)));
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [1000, 1]);
        assert!(cut(std::iter::empty()).is_empty());
    }
}
