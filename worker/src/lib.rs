//! paperhook-worker: claims tasks from the PostgreSQL queue (`core::queue`)
//! and runs them: splits jobs (single files and ZIP batches) into documents,
//! extracts each document (through `paperhook-extract`, on blocking
//! threads), charges credits, and delivers webhooks. Owns the claim loop,
//! leases and graceful shutdown; leaves the queue's SQL to `core` and
//! document understanding to `extract`.
//!
//! Tests drive it step by step with [`Worker::run_once`]; the binary runs
//! [`Worker::run`] until SIGTERM.

pub mod deliver;
pub mod pipeline;
pub mod unzip;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use paperhook_core::config::Config;
use paperhook_core::crypto::Keyring;
use paperhook_core::queue::{self, Task};
use paperhook_core::storage::Storage;
use paperhook_core::webhook::Cidr;
use rand::Rng;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Why a task did not finish: it goes back to the queue (with backoff)
/// unless its attempts are spent. Failures that belong to the customer's
/// document are not errors: handlers record them and complete the task.
#[derive(Debug)]
pub struct Retry {
    pub error: String,
    /// When to try again; `None` is exponential backoff on the attempt number.
    pub after: Option<Duration>,
}

impl<E: std::fmt::Display> From<E> for Retry {
    fn from(err: E) -> Retry {
        Retry {
            error: err.to_string(),
            after: None,
        }
    }
}

/// The kinds of task a worker reads documents for (its work slots); it
/// sends webhook deliveries in slots of their own. A kind it does not know
/// (one a newer version added, during a rolling upgrade) is left to workers
/// that do.
pub const WORK_KINDS: [&str; 2] = [queue::kind::JOB, queue::kind::DOCUMENT];

/// A task a handler created already claimed by this worker, to run next
/// in the same slot (see [`queue::enqueue_claimed`]).
pub type Next = Option<Task>;

/// The slots of [`Worker::run`]: `work` for jobs and documents
/// (`worker_concurrency`), `sends` for webhook deliveries
/// (`worker_delivery_concurrency`); `freed` wakes the claim loop when a
/// task moves from one to the other.
#[derive(Clone)]
struct Pools {
    work: Arc<Semaphore>,
    sends: Arc<Semaphore>,
    freed: Arc<tokio::sync::Notify>,
}

impl Pools {
    fn of(&self, task: &Task) -> Arc<Semaphore> {
        if is_delivery(task) {
            self.sends.clone()
        } else {
            self.work.clone()
        }
    }
}

/// Counted in `paperhook_worker_tasks_in_progress` while it lives.
struct Busy;

impl Busy {
    fn new() -> Busy {
        paperhook_core::metrics::TASKS_IN_PROGRESS.inc();
        Busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        paperhook_core::metrics::TASKS_IN_PROGRESS.dec();
    }
}

fn is_delivery(task: &Task) -> bool {
    task.kind == queue::kind::DELIVERY
}

/// What one [`Worker::run_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Worked(usize),
    Idle,
}

#[derive(Clone)]
pub struct Worker(Arc<Inner>);

pub struct Inner {
    pub pool: PgPool,
    pub storage: Storage,
    pub config: Config,
    pub keyring: Keyring,
    /// This process's name in `tasks.locked_by`: unique per process.
    pub id: String,
    pub schedule: Vec<Duration>,
    pub allow: Vec<Cidr>,
    /// Cancelled when this process should be replaced by a fresh one
    /// ([`Worker::request_restart`]).
    restart: CancellationToken,
}

impl std::ops::Deref for Worker {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Worker {
    pub fn new(pool: PgPool, storage: Storage, config: Config) -> anyhow::Result<Worker> {
        config.validate()?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        let id = format!(
            "{host}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        Ok(Worker(Arc::new(Inner {
            keyring: config.keyring()?,
            schedule: config.webhook_schedule()?,
            allow: config.webhook_allow_list()?,
            pool,
            storage,
            config,
            id,
            restart: CancellationToken::new(),
        })))
    }

    /// Claims as many tasks as the concurrency allows and runs them to the
    /// end, concurrently; also rescues expired leases first.
    pub async fn run_once(&self) -> anyhow::Result<Outcome> {
        queue::rescue(&self.pool, None)
            .await
            .context("rescuing expired leases")?;
        let tasks = self
            .claim(
                i64::from(self.config.worker_concurrency),
                i64::from(self.config.worker_delivery_concurrency),
            )
            .await?;
        if tasks.is_empty() {
            return Ok(Outcome::Idle);
        }
        let n = tasks.len();
        let never = CancellationToken::new();
        let mut set = JoinSet::new();
        for task in tasks {
            set.spawn(self.clone().run_task(task, never.clone(), None));
        }
        while set.join_next().await.is_some() {}
        Ok(Outcome::Worked(n))
    }

    async fn claim(&self, work: i64, sends: i64) -> anyhow::Result<Vec<Task>> {
        queue::claim_pools(
            &self.pool,
            &self.id,
            &WORK_KINDS,
            work,
            sends,
            self.config.worker_lease(),
        )
        .await
        .context("claiming tasks")
    }

    /// Asks [`Worker::run`] to stop as on SIGTERM and then fail, so that
    /// its supervisor starts a fresh process: for a state no task can
    /// repair, such as a thread stuck in a decoder (it holds a CPU and one of
    /// the page-rendering threads every extraction shares).
    pub fn request_restart(&self, why: &str) {
        if !self.restart.is_cancelled() {
            tracing::error!(
                reason = why,
                "this worker process will stop claiming, finish its tasks and exit for a restart"
            );
        }
        self.restart.cancel();
    }

    /// Runs until `shutdown` is cancelled: claims while there is capacity,
    /// wakes on NOTIFY or a jittered poll. On shutdown it stops claiming,
    /// lets tasks in hand finish within the grace period, then gives the
    /// rest back to the queue. After [`Worker::request_restart`] it does the
    /// same and returns an error.
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let shutdown = {
            let stop = CancellationToken::new();
            let (either, restart) = (stop.clone(), self.restart.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = restart.cancelled() => {}
                }
                either.cancel();
            });
            stop
        };
        let pools = Pools {
            work: Arc::new(Semaphore::new(self.config.worker_concurrency as usize)),
            sends: Arc::new(Semaphore::new(
                self.config.worker_delivery_concurrency as usize,
            )),
            freed: Arc::new(tokio::sync::Notify::new()),
        };
        let hard_stop = CancellationToken::new();
        let mut set = JoinSet::new();
        let mut listener = None;
        let mut last_rescue = std::time::Instant::now() - Duration::from_secs(3600);
        let mut errors = 0u32;
        tracing::info!(worker = %self.id, concurrency = self.config.worker_concurrency, "worker started");
        paperhook_core::metrics::WORKER_CONCURRENCY.set(i64::from(self.config.worker_concurrency));
        paperhook_core::metrics::EXTRACTIONS_ABANDONED.add(0);
        while !shutdown.is_cancelled() {
            while set.try_join_next().is_some() {}
            if listener.is_none() {
                listener = self
                    .listen()
                    .await
                    .map_err(|e| tracing::warn!(error = %e, "LISTEN failed; polling"))
                    .ok();
            }
            if last_rescue.elapsed() >= self.config.worker_lease() / 2 {
                last_rescue = std::time::Instant::now();
                match queue::rescue(&self.pool, None).await {
                    Ok(n) if n > 0 => {
                        tracing::warn!(tasks = n, "rescued tasks with expired leases")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "rescuing expired leases failed"),
                }
            }
            let (work, sends) = (
                pools.work.available_permits(),
                pools.sends.available_permits(),
            );
            let free = work + sends;
            let mut claimed = 0;
            if free > 0 {
                match self.claim(work as i64, sends as i64).await {
                    Ok(tasks) => {
                        errors = 0;
                        claimed = tasks.len();
                        for task in tasks {
                            let Ok(permit) = pools.of(&task).try_acquire_owned() else {
                                // A document's webhook took the sending slot
                                // since the permits were counted.
                                self.give_back(&task).await;
                                claimed -= 1;
                                continue;
                            };
                            let worker = self.clone();
                            let stop = hard_stop.clone();
                            let pools = pools.clone();
                            set.spawn(async move {
                                worker.run_task(task, stop, Some((permit, pools))).await;
                            });
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        tracing::error!(error = ?e, "claim failed");
                        let backoff = Duration::from_millis(250 * 2u64.pow(errors.min(6)));
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.cancelled() => {}
                        }
                        continue;
                    }
                }
            }
            if claimed > 0 && claimed == free {
                // Full: wait for a slot.
                tokio::select! {
                    _ = set.join_next() => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
            if claimed > 0 {
                continue;
            }
            let poll = self.config.worker_poll();
            let jitter = poll.mul_f64(rand::rng().random::<f64>());
            tokio::select! {
                note = async {
                    match listener.as_mut() {
                        Some(l) => l.recv().await.map(|_| ()),
                        None => std::future::pending().await,
                    }
                } => {
                    if note.is_err() {
                        listener = None;
                    }
                }
                _ = tokio::time::sleep(poll + jitter) => {}
                Some(_) = set.join_next(), if !set.is_empty() => {}
                _ = pools.freed.notified() => {}
                _ = shutdown.cancelled() => {}
            }
        }
        let grace = self.config.worker_shutdown_grace();
        tracing::info!(
            in_hand = set.len(),
            grace_secs = grace.as_secs(),
            "stopping: finishing tasks in hand"
        );
        let drained =
            tokio::time::timeout(grace, async { while set.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                left = set.len(),
                "grace period over: releasing tasks in hand"
            );
            hard_stop.cancel();
            while set.join_next().await.is_some() {}
        }
        tracing::info!("worker stopped");
        if self.restart.is_cancelled() {
            anyhow::bail!(
                "exiting so that a fresh process replaces this one (it was asked to restart; see the error above)"
            );
        }
        Ok(())
    }

    async fn listen(&self) -> sqlx::Result<PgListener> {
        let mut l = PgListener::connect_with(&self.pool).await?;
        l.listen(queue::CHANNEL).await?;
        Ok(l)
    }

    /// Runs one task on its own tokio task (a panic stays there), renews
    /// its lease while it runs, and settles the outcome in the queue; then
    /// the tasks it hands on to this worker, holding `slot` (its pool's
    /// permit, when it runs in [`Worker::run`]'s pools).
    async fn run_task(
        self,
        task: Task,
        hard_stop: CancellationToken,
        mut slot: Option<(OwnedSemaphorePermit, Pools)>,
    ) {
        let mut next = Some(task);
        let mut sending = next.as_ref().is_some_and(is_delivery);
        // Utilisation is of the work slots: webhooks being sent do not count.
        let mut busy = (!sending).then(Busy::new);
        while let Some(task) = next.take() {
            next = self.run_one(task, &hard_stop).await;
            // A document hands its webhook on: it is sent in a sending slot,
            // giving the work slot back, or by any worker when none is free.
            let Some(handed) = next.as_ref().filter(|t| !sending && is_delivery(t)) else {
                continue;
            };
            let Some((permit, pools)) = slot.as_mut() else {
                continue;
            };
            match pools.sends.clone().try_acquire_owned() {
                Ok(send) => {
                    *permit = send;
                    sending = true;
                    drop(busy.take());
                    pools.freed.notify_one();
                }
                Err(_) => {
                    self.give_back(handed).await;
                    next = None;
                }
            }
        }
    }

    /// Runs one task to the end; returns the task it handed to this worker.
    async fn run_one(&self, task: Task, hard_stop: &CancellationToken) -> Next {
        if task.exhausted() {
            let error = format!(
                "gave up after {} attempts: the worker processing it stopped before finishing each time",
                task.max_attempts
            );
            tracing::error!(task = task.id, kind = %task.kind, "{error}");
            self.give_up(&task, &error).await;
            return None;
        }
        let worker = self.clone();
        let t = task.clone();
        let mut handle = tokio::spawn(async move { worker.handle(&t).await });
        let lease = self.config.worker_lease();
        let mut tick = tokio::time::interval(lease / 3);
        tick.tick().await;
        // Renewing the lease of a task that never ends would keep it from
        // every other worker for good.
        let limit = self.config.worker_task_time_limit();
        let past_limit = tokio::time::sleep(limit);
        tokio::pin!(past_limit);
        let joined = loop {
            tokio::select! {
                res = &mut handle => break res,
                _ = &mut past_limit => {
                    handle.abort();
                    break Ok(Err(Retry::from(format!(
                        "the task was still running after worker_task_time_limit_secs ({} s) and was stopped",
                        limit.as_secs()
                    ))));
                }
                _ = tick.tick() => {
                    // Bounded: while it waits, nothing else here is watched
                    // (its connection may be the one the network lost).
                    let held = [&task];
                    let beat = queue::heartbeat(&self.pool, &held, lease, None);
                    match tokio::time::timeout(lease / 3, beat).await {
                        Ok(Ok(held)) if held.is_empty() => tracing::warn!(task = task.id, "lease lost; its completion will be refused"),
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!(task = task.id, error = %e, "heartbeat failed"),
                        Err(_) => tracing::warn!(task = task.id, "heartbeat got no answer in time"),
                    }
                }
                _ = hard_stop.cancelled() => {
                    handle.abort();
                    if let Err(e) = queue::release(&self.pool, &task).await {
                        tracing::error!(task = task.id, error = %e, "releasing task failed; its lease will expire");
                    }
                    return None;
                }
            }
        };
        let retry = match joined {
            Ok(Ok(next)) => return next,
            Ok(Err(retry)) => retry,
            Err(e) => Retry {
                error: if e.is_panic() {
                    format!("the task panicked: {}", panic_message(e.into_panic()))
                } else {
                    "the task was cancelled".to_owned()
                },
                after: None,
            },
        };
        if task.attempts >= task.max_attempts {
            tracing::warn!(task = task.id, kind = %task.kind, attempt = task.attempts, error = %retry.error, "task failed on its last attempt");
            self.give_up(&task, &retry.error).await;
            return None;
        }
        tracing::warn!(task = task.id, kind = %task.kind, attempt = task.attempts, error = %retry.error, "task failed; will retry");
        let after = retry
            .after
            .unwrap_or_else(|| backoff(task.attempts, self.config.task_retry_max_delay()));
        if let Err(e) = queue::retry(&self.pool, &task, after, &retry.error).await {
            tracing::error!(task = task.id, error = %e, "putting the task back failed; its lease will expire");
        }
        None
    }

    /// Hands a task this worker claimed but will not run back to the queue
    /// at once, waking the workers (one with a free slot takes it).
    async fn give_back(&self, task: &Task) {
        let given = async {
            if queue::release(&self.pool, task).await? {
                queue::notify(&self.pool, &task.kind).await?;
            }
            Ok::<(), sqlx::Error>(())
        };
        if let Err(e) = given.await {
            tracing::warn!(task = task.id, error = %e, "giving a task back to the queue failed; its lease will expire");
        }
    }

    /// Records that the task failed for good ([`pipeline::give_up`]). When
    /// that fails (the database is unreachable), the task is left as it
    /// is, leased to this worker: once the lease expires the rescuer hands
    /// it back, and the claim past its attempts gives it up again. Failing
    /// the task here instead would leave its job unfinished for ever.
    async fn give_up(&self, task: &Task, error: &str) {
        match pipeline::give_up(self, task, error).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(
                    task = task.id,
                    "not given up: its work committed, another worker holds it, or a redelivery asked for it again"
                )
            }
            Err(e) => tracing::error!(
                task = task.id,
                error = ?e,
                "recording the failure failed; the task will be rescued when its lease expires and given up again"
            ),
        }
    }

    async fn handle(&self, task: &Task) -> Result<Next, Retry> {
        match task.kind.as_str() {
            queue::kind::JOB => pipeline::split_job(self, task).await,
            queue::kind::DOCUMENT => pipeline::process_document(self, task).await,
            queue::kind::DELIVERY => deliver::deliver(self, task).await.map(|()| None),
            other => {
                tracing::error!(kind = other, "unknown task kind; dropping it");
                queue::complete(&self.pool, task).await?;
                Ok(None)
            }
        }
    }

    /// A delivery this worker creates is sent by this worker, right after
    /// the commit that creates it.
    pub fn sends(&self) -> paperhook_core::db::deliveries::Sender<'_> {
        paperhook_core::db::deliveries::Sender::Claimed {
            worker: &self.id,
            lease: self.config.worker_lease(),
            max_attempts: self.config.task_max_attempts(),
        }
    }

    /// A new delivery for any worker to send, through the queue.
    pub fn queues(&self) -> paperhook_core::db::deliveries::Sender<'static> {
        paperhook_core::db::deliveries::Sender::Queue {
            max_attempts: self.config.task_max_attempts(),
        }
    }

    /// Deletes the job's stored files once it is final and delivered, then
    /// records it. A failure (or a kill) before the record leaves the files
    /// to the janitor's next pass. It runs after the commit that finished
    /// a task's work, so a failure is logged, not a reason to run the task
    /// again (on its last attempt that would give up a job whose work is
    /// done).
    pub async fn cleanup_files(&self, job_id: uuid::Uuid) {
        let deleted =
            paperhook_core::retention::delete_delivered_files(&self.pool, &self.storage, job_id);
        if let Err(e) = deleted.await {
            tracing::warn!(job_id = %job_id, error = ?e, "deleting a finished job's files failed; the janitor will retry");
        }
    }
}

/// The wait before a task that failed on its claim number `attempts` is
/// tried again: 2, 4, 8, ... s, at most `max` (`task_retry_max_delay_secs`).
fn backoff(attempts: i32, max: Duration) -> Duration {
    let exponent = attempts.clamp(0, 63) as u32;
    Duration::from_secs(2u64.saturating_pow(exponent)).min(max)
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wait doubles up to the configured cap, whatever the cap (the
    /// doubling used to stop at 1,024 s and the cap was fixed at 600 s).
    #[test]
    fn the_retry_wait_doubles_up_to_the_configured_cap() {
        let secs = |attempts, max| backoff(attempts, Duration::from_secs(max)).as_secs();
        assert_eq!(
            (1..=5).map(|a| secs(a, 600)).collect::<Vec<_>>(),
            [2, 4, 8, 16, 32]
        );
        assert_eq!(secs(10, 600), 600);
        assert_eq!(secs(4, 10), 10);
        assert_eq!(secs(12, 3600), 3600);
        assert_eq!(secs(24, 86_400), 86_400);
        assert_eq!(secs(i32::MAX, 86_400), 86_400);
        assert_eq!(secs(-1, 600), 1);
    }
}
