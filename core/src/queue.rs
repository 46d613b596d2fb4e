//! The work queue: a small PostgreSQL queue on the `tasks` table, after
//! River's and Oban's design.
//!
//! - **Enqueue** is an INSERT in the caller's transaction, with `pg_notify`
//!   so idle workers wake at once (they also poll every 1-2 s). A worker
//!   that will run the new task itself next inserts it already claimed.
//!   The submission path, where commits per second matter, wakes workers
//!   through a [`Waker`] after its commit instead: a transaction that
//!   NOTIFYs holds a database-wide lock through its commit, so notifying
//!   transactions commit one at a time (pgbench, 16 clients, here: 16,000
//!   single-row inserts/s, 3,800 with a `pg_notify` in each).
//! - **Claim** is one statement: `FOR UPDATE SKIP LOCKED` picks due rows and
//!   the same statement marks them `running` under a lease (`locked_by`,
//!   `locked_until`). `locked_by` is the worker's name and a token of this
//!   claim: the same task claimed again (its lease expired and it was
//!   rescued), even by the same process, is another claim.
//! - **Heartbeat** extends the lease of the claims a worker still holds.
//! - **Complete / retry / fail** only act while the caller's claim still
//!   holds the lease, so a claim whose lease was taken over cannot finish
//!   twice.
//! - **Rescue** returns tasks with expired leases (dead workers) to the queue,
//!   or fails them after `max_attempts`.
//! - **Prune** deletes finished tasks in batches.
//!
//! Times are the database's (`now()`): the processes of a fleet compare
//! leases and due times on one clock, whatever their own clocks say. Tests
//! pass a `now` of their own to travel in time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgExecutor};
use uuid::Uuid;

/// The LISTEN/NOTIFY channel that wakes workers.
pub const CHANNEL: &str = "paperhook_tasks";

/// What a task refers to.
pub mod kind {
    /// A submitted job: unzip a ZIP, or process a single file.
    pub const JOB: &str = "job";
    /// One document of a job.
    pub const DOCUMENT: &str = "document";
    /// One webhook delivery.
    pub const DELIVERY: &str = "delivery";
}

#[derive(Debug, Clone, FromRow)]
pub struct Task {
    pub id: i64,
    pub kind: String,
    pub ref_id: Uuid,
    pub attempts: i32,
    pub max_attempts: i32,
    pub locked_by: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
}

impl Task {
    /// Claimed after its last allowed attempt (its workers died every time):
    /// record the failure instead of running it again.
    pub fn exhausted(&self) -> bool {
        self.attempts > self.max_attempts
    }
}

fn interval(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Enqueues a task in the caller's transaction, to be claimed at most
/// `max_attempts` times (`task_max_attempts`). A task for the same
/// `(kind, ref_id)` that is still waiting or running is not duplicated.
pub async fn enqueue(
    tx: &mut PgConnection,
    kind: &str,
    ref_id: Uuid,
    run_at: Option<DateTime<Utc>>,
    max_attempts: i32,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO tasks (kind, ref_id, run_at, max_attempts)
         VALUES ($1, $2, coalesce($3, now()), $4)
         ON CONFLICT (kind, ref_id) WHERE state IN ('available', 'running') DO NOTHING",
    )
    .bind(kind)
    .bind(ref_id)
    .bind(run_at)
    .bind(max_attempts)
    .execute(&mut *tx)
    .await?;
    notify(&mut *tx, kind).await
}

/// Queues a task of `kind` for each of `ref_ids` (those already queued or
/// running are left as they are) in one statement, with one NOTIFY; each
/// claimed at most `max_attempts` times.
pub async fn enqueue_many(
    tx: &mut PgConnection,
    kind: &str,
    ref_ids: &[Uuid],
    max_attempts: i32,
) -> sqlx::Result<()> {
    insert_many(
        tx,
        kind,
        ref_ids,
        max_attempts,
        "INSERT INTO tasks (kind, ref_id, run_at, max_attempts)
         SELECT $1, unnest($2::uuid[]), now(), $3
         ON CONFLICT (kind, ref_id) WHERE state IN ('available', 'running') DO NOTHING",
    )
    .await
}

/// Queues a task of `kind` for each of `ref_ids` to run now with its
/// attempts counted afresh (a redelivery): one waiting for a retry due
/// later is moved to now and its attempts reset, one running is left to its
/// worker with its attempts reset too (a worker giving it up sees that,
/// and gives it back instead). Either way it may be claimed
/// `max_attempts` times from now. One statement, one NOTIFY.
pub async fn requeue_now_many(
    tx: &mut PgConnection,
    kind: &str,
    ref_ids: &[Uuid],
    max_attempts: i32,
) -> sqlx::Result<()> {
    insert_many(
        tx,
        kind,
        ref_ids,
        max_attempts,
        "INSERT INTO tasks (kind, ref_id, run_at, max_attempts)
         SELECT DISTINCT $1, r, now(), $3 FROM unnest($2::uuid[]) r
         ON CONFLICT (kind, ref_id) WHERE state IN ('available', 'running')
         DO UPDATE SET attempts = 0, max_attempts = EXCLUDED.max_attempts,
             run_at = CASE WHEN tasks.state = 'available' THEN now() ELSE tasks.run_at END",
    )
    .await
}

/// Runs `insert` (binding `kind` as $1, `ref_ids` as $2 and `max_attempts`
/// as $3) and one NOTIFY; nothing for no ids.
async fn insert_many(
    tx: &mut PgConnection,
    kind: &str,
    ref_ids: &[Uuid],
    max_attempts: i32,
    insert: &'static str,
) -> sqlx::Result<()> {
    if ref_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(insert)
        .bind(kind)
        .bind(ref_ids)
        .bind(max_attempts)
        .execute(&mut *tx)
        .await?;
    notify(&mut *tx, kind).await
}

/// Wakes idle workers with one NOTIFY sent outside the caller's
/// transaction, after its commit. Wakes asked for while a NOTIFY is being
/// sent are coalesced into one more, so a burst of submissions costs a few
/// NOTIFYs rather than one serialized commit each. A lost wake-up (this
/// process dies after the commit, or the database is unreachable) only
/// delays the task to the workers' next poll.
#[derive(Clone, Debug)]
pub struct Waker {
    pending: tokio::sync::mpsc::Sender<()>,
}

impl Waker {
    /// Starts the task that sends NOTIFYs with payload `kind` on the
    /// current Tokio runtime; it ends when the last clone is dropped.
    pub fn spawn(pool: sqlx::PgPool, kind: &'static str) -> Waker {
        let (pending, mut woken) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while woken.recv().await.is_some() {
                if let Err(e) = notify(&pool, kind).await {
                    tracing::warn!(error = %e, "waking the workers failed; they will poll");
                }
            }
        });
        Waker { pending }
    }

    /// Asks for a NOTIFY; returns at once.
    pub fn wake(&self) {
        // Full means a NOTIFY is already due: this wake is part of it.
        let _ = self.pending.try_send(());
    }
}

/// Sends one NOTIFY on [`CHANNEL`] with payload `kind`.
pub async fn notify(db: impl PgExecutor<'_>, kind: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(kind)
        .execute(db)
        .await?;
    Ok(())
}

/// Enqueues a task already claimed by `worker`, in the caller's
/// transaction: the worker runs it right after the commit instead of a
/// NOTIFY, a wake-up and a claim (a single file's document after its job,
/// a document's webhook after the document). If the worker dies first,
/// the lease expires and the rescuer hands the task to another. None when
/// the task already exists. The lease counts from this statement, not from
/// the transaction's start (`now()`): the transaction may have waited long
/// before (on an account's lock to charge it), and a lease already spent
/// at the commit would let a rescuer run the task beside this worker.
pub async fn enqueue_claimed(
    tx: &mut PgConnection,
    kind: &str,
    ref_id: Uuid,
    worker: &str,
    lease: Duration,
    max_attempts: i32,
) -> sqlx::Result<Option<Task>> {
    sqlx::query_as(
        "INSERT INTO tasks (kind, ref_id, run_at, state, attempts, max_attempts, locked_by,
                            locked_until)
         VALUES ($1, $2, now(), 'running', 1, $5, $3 || '/' || gen_random_uuid(),
                 clock_timestamp() + make_interval(secs => $4))
         ON CONFLICT (kind, ref_id) WHERE state IN ('available', 'running') DO NOTHING
         RETURNING id, kind, ref_id, attempts, max_attempts, locked_by, locked_until",
    )
    .bind(kind)
    .bind(ref_id)
    .bind(worker)
    .bind(interval(lease))
    .bind(max_attempts)
    .fetch_optional(&mut *tx)
    .await
}

/// Claims up to `limit` due tasks of the given kinds for `worker`; `now`
/// is the database's unless given.
pub async fn claim(
    db: impl PgExecutor<'_>,
    worker: &str,
    kinds: &[&str],
    limit: i64,
    lease: Duration,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<Task>> {
    sqlx::query_as(
        "WITH next AS (
             SELECT id FROM tasks
             WHERE state = 'available' AND run_at <= coalesce($1, now()) AND kind = ANY($2)
             ORDER BY run_at, id
             LIMIT $3
             FOR UPDATE SKIP LOCKED
         )
         UPDATE tasks t
         SET state = 'running', attempts = t.attempts + 1,
             locked_by = $4 || '/' || gen_random_uuid(),
             locked_until = coalesce($1, now()) + make_interval(secs => $5)
         FROM next WHERE t.id = next.id
         RETURNING t.id, t.kind, t.ref_id, t.attempts, t.max_attempts, t.locked_by, t.locked_until",
    )
    .bind(now)
    .bind(kinds)
    .bind(limit)
    .bind(worker)
    .bind(interval(lease))
    .fetch_all(db)
    .await
}

/// Claims, in one statement, up to `work` due tasks of the kinds `kinds`
/// (which take a CPU: jobs and documents) and up to `sends` due webhook
/// deliveries, each in due order: a worker runs them in pools of their own,
/// so receivers that keep it waiting hold its sending slots and never its
/// extraction slots.
pub async fn claim_pools(
    db: impl PgExecutor<'_>,
    worker: &str,
    kinds: &[&str],
    work: i64,
    sends: i64,
    lease: Duration,
) -> sqlx::Result<Vec<Task>> {
    // Each reads its own partial index, `tasks_available_work` and
    // `tasks_available_sends`, whose predicates these repeat.
    sqlx::query_as(
        "WITH work AS (
             SELECT id FROM tasks
             WHERE state = 'available' AND kind <> 'delivery' AND kind = ANY($5)
               AND run_at <= now()
             ORDER BY run_at, id
             LIMIT $1
             FOR UPDATE SKIP LOCKED
         ), sends AS (
             SELECT id FROM tasks
             WHERE state = 'available' AND kind = 'delivery' AND run_at <= now()
             ORDER BY run_at, id
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         ), next AS (SELECT id FROM work UNION ALL SELECT id FROM sends)
         UPDATE tasks t
         SET state = 'running', attempts = t.attempts + 1,
             locked_by = $3 || '/' || gen_random_uuid(),
             locked_until = now() + make_interval(secs => $4)
         FROM next WHERE t.id = next.id
         RETURNING t.id, t.kind, t.ref_id, t.attempts, t.max_attempts, t.locked_by, t.locked_until",
    )
    .bind(work)
    .bind(sends)
    .bind(worker)
    .bind(interval(lease))
    .bind(kinds)
    .fetch_all(db)
    .await
}

/// Extends the leases of the claims `tasks` still hold; returns the ids of
/// those that do.
pub async fn heartbeat(
    db: impl PgExecutor<'_>,
    tasks: &[&Task],
    lease: Duration,
    now: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<i64>> {
    let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
    let claims: Vec<&str> = tasks
        .iter()
        .filter_map(|t| t.locked_by.as_deref())
        .collect();
    // A claim's token is unique: matching it names its task.
    sqlx::query_scalar(
        "UPDATE tasks SET locked_until = coalesce($3, now()) + make_interval(secs => $4)
         WHERE id = ANY($1) AND locked_by = ANY($2) AND state = 'running'
         RETURNING id",
    )
    .bind(&ids)
    .bind(&claims)
    .bind(now)
    .bind(interval(lease))
    .fetch_all(db)
    .await
}

/// Marks the task done, in the caller's transaction (so the work's effects and
/// the completion commit together). False if the claim lost its lease.
pub async fn complete(db: impl PgExecutor<'_>, task: &Task) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE tasks SET state = 'completed', finished_at = now(), locked_by = NULL, locked_until = NULL
         WHERE id = $1 AND locked_by = $2 AND state = 'running'",
    )
    .bind(task.id)
    .bind(&task.locked_by)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Puts the task back to run `after` from now, or fails it when its
/// attempts are spent.
pub async fn retry(
    db: impl PgExecutor<'_>,
    task: &Task,
    after: Duration,
    error: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE tasks SET
             state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'available' END,
             finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
             run_at = now() + make_interval(secs => $3), last_error = $4,
             locked_by = NULL, locked_until = NULL
         WHERE id = $1 AND locked_by = $2 AND state = 'running'",
    )
    .bind(task.id)
    .bind(&task.locked_by)
    .bind(interval(after))
    .bind(error)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Fails the task for good, in the caller's transaction (with the failure
/// recorded on what the task was for). False if the lease was lost, or the
/// task already completed.
pub async fn fail(db: impl PgExecutor<'_>, task: &Task, error: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE tasks SET state = 'failed', finished_at = now(), last_error = $3,
             locked_by = NULL, locked_until = NULL
         WHERE id = $1 AND locked_by = $2 AND state = 'running'",
    )
    .bind(task.id)
    .bind(&task.locked_by)
    .bind(error)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives the task back without counting the attempt (graceful shutdown).
pub async fn release(db: impl PgExecutor<'_>, task: &Task) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE tasks SET state = 'available', attempts = greatest(attempts - 1, 0),
             locked_by = NULL, locked_until = NULL, run_at = now()
         WHERE id = $1 AND locked_by = $2 AND state = 'running'",
    )
    .bind(task.id)
    .bind(&task.locked_by)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Returns tasks whose lease expired before `now` to the queue; returns how
/// many. Tasks whose attempts are spent go back too: the queue does not know
/// what a task is for, so the worker that claims one past `max_attempts`
/// records the failure on its job or document (see [`Task::exhausted`]).
/// `now` is the database's unless given.
pub async fn rescue(db: impl PgExecutor<'_>, now: Option<DateTime<Utc>>) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE tasks SET
             state = 'available',
             last_error = 'lease expired (worker stopped or lost)',
             locked_by = NULL, locked_until = NULL, run_at = coalesce($1, now())
         WHERE id IN (
             SELECT id FROM tasks WHERE state = 'running' AND locked_until < coalesce($1, now())
             ORDER BY locked_until LIMIT 1000 FOR UPDATE SKIP LOCKED
         )",
    )
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `limit` tasks that finished before `before`; returns how many.
pub async fn prune(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM tasks WHERE id IN (
             SELECT id FROM tasks WHERE state IN ('completed', 'failed') AND finished_at < $1
             LIMIT $2 FOR UPDATE SKIP LOCKED
         )",
    )
    .bind(before)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task claimed again after its lease expired, by the same process,
    /// is another claim: the first one can no longer settle it or keep it
    /// alive (two slots of one worker would otherwise both run it).
    #[tokio::test]
    async fn a_claim_whose_lease_expired_cannot_settle_the_next_one() {
        let pool = crate::testing::migrated_database().await;
        let mut tx = pool.begin().await.unwrap();
        enqueue(&mut tx, kind::JOB, Uuid::now_v7(), None, 25)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let lease = Duration::from_secs(30);
        let claim_one = |now| {
            let pool = pool.clone();
            async move {
                claim(&pool, "w1", &[kind::JOB], 1, lease, now)
                    .await
                    .unwrap()
                    .pop()
                    .expect("a task to claim")
            }
        };
        let first = claim_one(None).await;
        // The lease runs on the database's clock: nothing has expired yet.
        assert_eq!(rescue(&pool, None).await.unwrap(), 0);
        let later = Utc::now() + chrono::Duration::seconds(60);
        assert_eq!(rescue(&pool, Some(later)).await.unwrap(), 1);
        let second = claim_one(Some(later)).await;
        assert_eq!(second.id, first.id);
        assert_ne!(second.locked_by, first.locked_by);
        assert!(second.locked_by.as_deref().unwrap().starts_with("w1/"));

        assert!(
            heartbeat(&pool, &[&first], lease, None)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(!retry(&pool, &first, Duration::ZERO, "stale").await.unwrap());
        assert!(!fail(&pool, &first, "stale").await.unwrap());
        assert!(!release(&pool, &first).await.unwrap());
        assert!(!complete(&pool, &first).await.unwrap());
        assert_eq!(
            heartbeat(&pool, &[&second], lease, None).await.unwrap(),
            vec![second.id]
        );
        assert!(complete(&pool, &second).await.unwrap());
    }

    /// A task handed on inside a transaction that began more than a lease
    /// ago (it waited on a lock) still gets a whole lease.
    #[tokio::test]
    async fn a_task_handed_on_late_in_a_transaction_gets_a_whole_lease() {
        let pool = crate::testing::migrated_database().await;
        let mut tx = pool.begin().await.unwrap();
        let lease = Duration::from_secs(1);
        // The transaction's now() falls more than a lease behind the clock.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let behind: bool =
                sqlx::query_scalar("SELECT clock_timestamp() - now() > interval '1.2 s'")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
            if behind {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the clock did not move"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let task = enqueue_claimed(&mut tx, kind::DELIVERY, Uuid::now_v7(), "w1", lease, 25)
            .await
            .unwrap()
            .expect("a new task");
        let live: bool = sqlx::query_scalar("SELECT $1 > clock_timestamp()")
            .bind(task.locked_until)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert!(live, "the lease had run out before the commit");
        tx.commit().await.unwrap();
    }
}
