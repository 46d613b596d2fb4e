//! paperhook-janitor: enforces retention. Deletes the stored files of
//! delivered jobs that their worker did not delete (it stopped, or the
//! storage failed), stored files and results
//! of jobs finished longer ago than `result_retention_secs`, webhook attempt
//! records past `webhook_attempts_retention_secs`, and finished queue tasks
//! past `tasks_retention_secs`, expired dashboard sessions, and stored
//! documents that belong to no job and half-written copies in the local
//! store's `.tmp/` (older than `orphan_file_grace_secs`). Works in `LIMIT` batches until a short
//! batch; only the process holding the advisory lock works, so any number
//! may run. The clock is a parameter, so tests move time instead of sleeping.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use paperhook_core::config::Config;
use paperhook_core::db::documents::{self, JobCursor};
use paperhook_core::retention::{Delivered, Why};
use paperhook_core::storage::{DOCUMENTS_PREFIX, Storage};
use paperhook_core::{queue, retention};
use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use sqlx::postgres::Postgres;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The advisory lock key of the janitor's leader ("paperhk" in ASCII).
pub const LOCK_KEY: i64 = 0x0070_6170_6572_686b;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// False when another janitor holds the lock (this one did nothing).
    pub leader: bool,
    pub jobs_expired: u64,
    pub files_deleted: u64,
    /// Files of delivered jobs left behind by a worker (counted in `files_deleted` too).
    pub leftover_files_deleted: u64,
    pub attempts_deleted: u64,
    pub tasks_pruned: u64,
    /// Stored documents of no job (counted in `files_deleted` too).
    pub orphan_files_deleted: u64,
    /// Dashboard sessions past their expiry.
    pub sessions_purged: u64,
}

/// The steps of a pass.
#[derive(Debug, Clone, Copy)]
enum Step {
    Leftovers,
    Expiry,
    Attempts,
    Orphans,
    Sessions,
    Tasks,
}

/// The steps of a pass, in order.
const STEPS: [Step; 6] = [
    Step::Leftovers,
    Step::Expiry,
    Step::Attempts,
    Step::Orphans,
    Step::Sessions,
    Step::Tasks,
];

pub struct Janitor {
    pub pool: PgPool,
    pub storage: Storage,
    pub config: Config,
}

/// The job a stored document's key names, if it is one of ours.
fn job_of_key(key: &str) -> Option<Uuid> {
    let name = key.strip_prefix(DOCUMENTS_PREFIX)?.split('/').nth(1)?;
    Uuid::parse_str(name.get(..36)?).ok()
}

/// The step's error when `failed` jobs' files could not be deleted (each
/// logged with its job's id): their results stay until they can be.
fn undeletable(failed: usize, which: &str) -> anyhow::Result<()> {
    if failed > 0 {
        anyhow::bail!(
            "the stored files of {failed} {which} could not be deleted (the warnings name the \
             jobs and the storage's errors); they are tried again at the next pass"
        );
    }
    Ok(())
}

fn ago(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Janitor {
    /// One pass at time `now`, if this process wins the advisory lock.
    pub async fn run_once(&self, now: DateTime<Utc>) -> anyhow::Result<Report> {
        let mut lock: PoolConnection<Postgres> = self
            .pool
            .acquire()
            .await
            .context("acquiring a connection")?;
        // The lock belongs to this connection's session, and sessions are
        // not reset in the pool: a pass dropped midway (its timeout in
        // `run`) would put the connection back still holding the lock, and
        // no janitor could lead until the connection's maximum lifetime.
        // Closed instead, however the pass ends, the lock goes with it.
        lock.close_on_drop();
        let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *lock)
            .await
            .context("taking the janitor lock")?;
        if !leader {
            // Not a pass: the gauge shows the last one that did the work,
            // so a leader whose passes fail alerts however many janitors
            // stand by.
            return Ok(Report::default());
        }
        let (report, failed) = self.sweep(now).await;
        // Released now, for the next pass (the close runs in the background).
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *lock)
            .await;
        drop(lock);
        use paperhook_core::metrics::{JANITOR_LAST_PASS, JANITOR_PURGED};
        for (kind, n) in [
            ("results", report.jobs_expired),
            ("files", report.files_deleted),
            ("attempts", report.attempts_deleted),
            ("tasks", report.tasks_pruned),
            ("orphan_files", report.orphan_files_deleted),
            ("sessions", report.sessions_purged),
        ] {
            JANITOR_PURGED.with_label_values(&[kind]).inc_by(n);
        }
        if let Some((first, rest)) = failed.split_first() {
            for e in rest {
                tracing::error!(error = format!("{e:#}"), "a janitor step failed");
            }
            // The pass is not complete: the last-pass time stays, so a step
            // that keeps failing shows (and alerts) as a janitor that stopped.
            return Err(anyhow::anyhow!(
                "{} of the janitor's steps failed ({report:?} done); first: {first:#}",
                failed.len()
            ));
        }
        JANITOR_LAST_PASS.set(Utc::now().timestamp());
        if report
            != (Report {
                leader: true,
                ..Report::default()
            })
        {
            tracing::info!(?report, "janitor pass");
        }
        Ok(report)
    }

    /// Runs every step of a pass, each on its own: one that fails (a
    /// storage listing, say) or runs past `janitor_step_timeout_secs` (a
    /// large backlog, a locked table) does not keep the others from
    /// running. Returns what was done and the steps' errors.
    async fn sweep(&self, now: DateTime<Utc>) -> (Report, Vec<anyhow::Error>) {
        let mut report = Report {
            leader: true,
            ..Report::default()
        };
        let mut failed = Vec::new();
        let budget = self.config.janitor_step_timeout();
        for step in STEPS {
            match tokio::time::timeout(budget, self.step(step, now, &mut report)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed.push(e),
                // What it did so far stays done (each batch commits on its
                // own); the next pass goes on from there.
                Err(_) => failed.push(anyhow::anyhow!(
                    "the {step:?} step ran past janitor_step_timeout_secs ({} s)",
                    budget.as_secs()
                )),
            }
        }
        (report, failed)
    }

    async fn step(
        &self,
        step: Step,
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let batch = self.config.janitor_batch;
        match step {
            // Both walk the jobs in order, past those whose files could not
            // be deleted: these stay first in the order, and a batch of them
            // taken again each time would stop every job after them (an
            // object the storage refuses to delete, a file the process may
            // not remove). They fail the step, which alerts.
            Step::Leftovers => {
                let (mut after, mut failed) = (JobCursor::START, 0);
                loop {
                    let jobs = documents::jobs_with_files_to_delete(&self.pool, after, batch)
                        .await
                        .context("finding delivered jobs with files")?;
                    let Some((_, last)) = jobs.last() else {
                        break;
                    };
                    after = *last;
                    for (id, _) in &jobs {
                        match retention::delete_delivered_files(&self.pool, &self.storage, *id)
                            .await?
                        {
                            Delivered::Deleted(n) => {
                                report.leftover_files_deleted += n;
                                report.files_deleted += n;
                            }
                            Delivered::NotDue => {}
                            Delivered::Failed => failed += 1,
                        }
                    }
                    if (jobs.len() as i64) < batch {
                        break;
                    }
                }
                undeletable(failed, "delivered jobs")?;
            }
            Step::Expiry => {
                let cutoff = ago(now, self.config.result_retention());
                let (mut after, mut failed) = (JobCursor::START, 0);
                loop {
                    let jobs = documents::jobs_to_expire(&self.pool, cutoff, after, batch)
                        .await
                        .context("finding expired jobs")?;
                    let Some((_, last)) = jobs.last() else {
                        break;
                    };
                    after = *last;
                    let (targets, _): (Vec<retention::Target>, Vec<_>) = jobs.into_iter().unzip();
                    let (done, files) =
                        retention::purge(&self.pool, &self.storage, &targets, Why::Expired).await?;
                    report.jobs_expired += done.len() as u64;
                    report.files_deleted += files;
                    failed += targets.len() - done.len();
                    if (targets.len() as i64) < batch {
                        break;
                    }
                }
                undeletable(failed, "expired jobs")?;
            }
            Step::Attempts => loop {
                let n = sqlx::query(
                    "DELETE FROM webhook_attempts WHERE id IN (
                         SELECT id FROM webhook_attempts WHERE attempted_at < $1 LIMIT $2)",
                )
                .bind(ago(now, self.config.webhook_attempts_retention()))
                .bind(batch)
                .execute(&self.pool)
                .await
                .context("deleting old webhook attempts")?
                .rows_affected();
                report.attempts_deleted += n;
                if (n as i64) < batch {
                    break;
                }
            },
            Step::Orphans => {
                let grace = ago(now, self.config.orphan_file_grace());
                // The two stores on their own as well.
                let files = self.delete_orphan_files(grace).await;
                let inline = self.delete_orphan_inline(grace, batch).await;
                // Half-written copies a killed process left in the local
                // store's temporary folder.
                let temporary = self
                    .storage
                    .delete_stale_temporary_files(grace)
                    .await
                    .context("deleting stale temporary files");
                for n in [&files, &inline, &temporary].into_iter().flatten() {
                    report.orphan_files_deleted += n;
                    report.files_deleted += n;
                }
                files?;
                inline?;
                temporary?;
            }
            Step::Sessions => loop {
                let n = paperhook_core::db::sessions::purge_expired(&self.pool, now, batch)
                    .await
                    .context("deleting expired sessions")?;
                report.sessions_purged += n;
                if (n as i64) < batch {
                    break;
                }
            },
            Step::Tasks => loop {
                let n = queue::prune(&self.pool, ago(now, self.config.tasks_retention()), batch)
                    .await
                    .context("pruning finished tasks")?;
                report.tasks_pruned += n;
                if (n as i64) < batch {
                    break;
                }
            },
        }
        Ok(())
    }

    /// Deletes stored documents written before `before` whose job does not
    /// exist (an API process that died between storing a document and
    /// committing its job, or a deleted account's), or whose job's files
    /// were all deleted already (a ZIP entry stored by a worker whose lease
    /// had run out and which stopped before deleting it). Keys name their job
    /// (`documents/<account>/<job>[-doc-[<split>-]<n>]`, and the older
    /// `<job>/original`, `<job>/doc-<n>`); anything else is left alone.
    /// The listing goes a page at a time (a store holding a day of
    /// undeliverable jobs can be large). Returns the files deleted.
    async fn delete_orphan_files(&self, before: DateTime<Utc>) -> anyhow::Result<u64> {
        let (mut deleted, mut failed) = (0, 0);
        let mut pages = self.storage.pages(DOCUMENTS_PREFIX);
        while let Some(listed) = pages.next().await {
            let listed = listed.context("listing stored documents")?;
            let old: Vec<(String, Uuid)> = listed
                .into_iter()
                .filter(|l| l.modified < before)
                .filter_map(|l| job_of_key(&l.key).map(|job| (l.key, job)))
                .collect();
            let ids: Vec<Uuid> = old.iter().map(|(_, job)| *job).collect();
            // A page with no candidate (every file young) asks nothing.
            let existing: std::collections::HashSet<Uuid> = if ids.is_empty() {
                Default::default()
            } else {
                sqlx::query_scalar(
                    "SELECT id FROM jobs WHERE id = ANY($1) AND file_deleted_at IS NULL",
                )
                .bind(&ids)
                .fetch_all(&self.pool)
                .await
                .context("finding the jobs of stored documents")?
                .into_iter()
                .collect()
            };
            for (key, _) in old.iter().filter(|(_, job)| !existing.contains(job)) {
                match self.storage.delete(key).await {
                    Ok(()) => {
                        tracing::warn!(
                            key,
                            "deleted a stored document that belongs to no job, or to one whose files are deleted"
                        );
                        deleted += 1;
                    }
                    Err(e) => {
                        tracing::warn!(key, error = %e, "deleting an orphan document failed");
                        failed += 1;
                    }
                }
            }
        }
        if failed > 0 {
            anyhow::bail!(
                "{failed} stored documents of no job could not be deleted (the warnings name \
                 them and the storage's errors); {deleted} were"
            );
        }
        Ok(deleted)
    }

    /// The same for documents kept in the database: written with their job,
    /// they outlive it only when the job goes (a deleted account's), or when
    /// a deletion was skipped after its job's files were recorded deleted.
    /// Returns the documents deleted.
    async fn delete_orphan_inline(&self, before: DateTime<Utc>, batch: i64) -> anyhow::Result<u64> {
        let mut deleted = 0;
        loop {
            let (n, bytes): (i64, i64) = sqlx::query_as(
                "WITH gone AS (
                     DELETE FROM inline_documents WHERE key IN (
                         SELECT key FROM inline_documents i
                         WHERE i.created_at < $1
                           AND NOT EXISTS (SELECT 1 FROM jobs j
                                           WHERE j.id = i.job_id AND j.file_deleted_at IS NULL)
                         LIMIT $2)
                     RETURNING length(data) AS size)
                 SELECT count(*), coalesce(sum(size), 0)::bigint FROM gone",
            )
            .bind(before)
            .bind(batch)
            .fetch_one(&self.pool)
            .await
            .context("deleting inline documents of no job")?;
            // Deleted here, not through the storage: counted as it counts.
            paperhook_core::metrics::STORAGE_DELETED_BYTES.inc_by(bytes as u64);
            let n = n as u64;
            if n > 0 {
                tracing::warn!(
                    documents = n,
                    "deleted inline documents that belong to no job, or to one whose files are deleted"
                );
            }
            deleted += n;
            if (n as i64) < batch {
                return Ok(deleted);
            }
        }
    }

    /// Runs passes until `shutdown`, every `janitor_interval_secs`
    /// (staggered so many janitors do not start together).
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        use rand::Rng;
        // Until a first pass completes there is no last-pass time: the
        // alert counts from the start, so a janitor restarted into failing
        // passes is not silent.
        paperhook_core::metrics::JANITOR_STARTED.set(Utc::now().timestamp());
        let interval = self.config.janitor_interval();
        let stagger = interval.mul_f64(rand::rng().random::<f64>() * 0.1);
        tokio::select! {
            _ = tokio::time::sleep(stagger) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        // Each step has its own time limit; this one catches the rest (a
        // database that stops answering while the lock is taken).
        let limit = self.config.janitor_step_timeout() * (STEPS.len() as u32 + 1);
        while !shutdown.is_cancelled() {
            let pass = tokio::time::timeout(limit, async {
                // The database's clock, which stamped `finished_at` and the
                // rest: a janitor whose own clock ran ahead would expire
                // results before their 24 hours (the API and the workers
                // judge by the database's clock too).
                let now = paperhook_core::db::now(&self.pool)
                    .await
                    .context("reading the database's clock")?;
                self.run_once(now).await
            })
            .await;
            match pass {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = ?e, "janitor pass failed"),
                Err(_) => tracing::error!("janitor pass timed out"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_job() {
        let job = "01a22ca4-2540-73f6-b572-a12242086b94";
        let want = Some(Uuid::parse_str(job).unwrap());
        for key in [
            format!("documents/acc/{job}"),
            format!("documents/acc/{job}-doc-3"),
            format!("documents/acc/{job}-doc-0a1b2c3d-3"),
            format!("documents/acc/{job}/original"),
            format!("documents/acc/{job}/doc-0"),
        ] {
            assert_eq!(job_of_key(&key), want, "{key}");
        }
        for key in [
            "documents/acc/probe".to_owned(),
            "documents/x".to_owned(),
            format!("other/acc/{job}"),
            format!("documents/{job}"),
            "documents/acc/".to_owned(),
        ] {
            assert_eq!(job_of_key(&key), None, "{key}");
        }
    }
}
