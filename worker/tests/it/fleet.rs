//! Many workers, crashes and races: nothing lost, nothing done twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use paperhook_core::queue;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::*;

/// Inserts `n` single-PDF jobs directly (as the API would) with their own files.
async fn insert_jobs(app: &TestApp, account: Uuid, template: Uuid, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = Uuid::now_v7();
        let key = format!("documents/{account}/{id}/original");
        app.storage
            .put_bytes(&key, example_pdf().to_vec().into())
            .await
            .unwrap();
        let mut tx = app.pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO jobs (id, account_id, template_id, content_type, file_name, size_bytes, storage_key)
             VALUES ($1, $2, $3, 'pdf', 'invoice.pdf', $4, $5)",
        )
        .bind(id)
        .bind(account)
        .bind(template)
        .bind(example_pdf().len() as i64)
        .bind(&key)
        .execute(&mut *tx)
        .await
        .unwrap();
        queue::enqueue(&mut tx, queue::kind::JOB, id, None, 25)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        ids.push(id);
    }
    ids
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_on_500_jobs_process_each_once() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.worker_concurrency = 4;
        c.db_max_connections = 12;
    })
    .await;
    let (account, key) = app.account(1000).await;
    let (template, _) = app.template(&key, None).await;
    let n = 500;
    insert_jobs(&app, account, template, n).await;
    let stop = CancellationToken::new();
    let a = app.worker.clone();
    let b = app.another_worker(|_| {});
    // A claim's locked_by is its worker's id, '/', and a token of the claim.
    let claims = [format!("{}/", a.id), format!("{}/", b.id)];
    let took_part = [AtomicBool::new(false), AtomicBool::new(false)];
    let (sa, sb) = (stop.clone(), stop.clone());
    let ha = tokio::spawn(async move { a.run(sa).await });
    let hb = tokio::spawn(async move { b.run(sb).await });
    eventually(600, "500 jobs to finish", || async {
        // Completing a task clears its locked_by, and no other table says
        // which worker did what: who works is seen only while it works.
        // Document tasks, because a worker that claims one runs it (it is
        // handed on by the worker that split its job, never given back).
        let running: Vec<String> = sqlx::query_scalar(
            "SELECT locked_by FROM tasks
             WHERE kind = 'document' AND state = 'running' AND locked_by IS NOT NULL",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        for (claim, seen) in claims.iter().zip(&took_part) {
            if running.iter().any(|l| l.starts_with(claim.as_str())) {
                seen.store(true, Ordering::Relaxed);
            }
        }
        (count(
            &app,
            "SELECT count(*) FROM jobs WHERE status IN ('SUCCESS', 'FAILED')",
        )
        .await
            == n as i64)
            .then_some(())
    })
    .await;
    stop.cancel();
    ha.await.unwrap().unwrap();
    hb.await.unwrap().unwrap();
    assert_eq!(
        count(&app, "SELECT count(*) FROM jobs WHERE status = 'SUCCESS'").await,
        n as i64
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM documents").await,
        n as i64
    );
    assert_eq!(count(&app, "SELECT count(*) FROM results").await, n as i64);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM credit_ledger WHERE reason = 'document'"
        )
        .await,
        n as i64
    );
    assert_eq!(app.credits(account).await, 1000 - n as i64);
    // Both workers took part: otherwise the race was no race.
    assert!(
        took_part.iter().all(|seen| seen.load(Ordering::Relaxed)),
        "a worker was never seen reading a document: {:?}",
        claims.iter().zip(&took_part).collect::<Vec<_>>()
    );
    // One task per job and per document. A claim counts an attempt, so a
    // task the other worker also claimed shows two (results and
    // credit_ledger are unique per document: their counts cannot show a
    // document done twice).
    assert_eq!(
        count(&app, "SELECT count(*) FROM tasks WHERE kind = 'job'").await,
        n as i64
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM tasks WHERE kind = 'document'").await,
        n as i64
    );
    // A task claimed again was so for a reason it recorded (a timeout on a
    // loaded machine, say), never taken silently from the other worker.
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM tasks
             WHERE kind IN ('job', 'document') AND attempts > 1 AND last_error IS NULL"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM tasks WHERE state <> 'completed'"
        )
        .await,
        0
    );
}

/// The account's row locked as a charge locks it: a worker reading a
/// document of the account stops at its charge (the document's last step)
/// until the transaction ends. On a connection of its own: the app's
/// sessions end a transaction idle for db_idle_in_transaction_timeout_secs.
async fn hold_charges(app: &TestApp, account: Uuid) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let other = sqlx::PgPool::connect(secrecy::ExposeSecret::expose_secret(
        &app.config.database_url,
    ))
    .await
    .unwrap();
    let mut blocker = other.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
        .bind(account)
        .execute(&mut *blocker)
        .await
        .unwrap();
    blocker
}

#[tokio::test]
async fn a_worker_killed_mid_document_loses_nothing_and_charges_once() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.worker_lease_secs = 3).await;
    let hook = Receiver::start().await;
    let (account, key) = app.account(10).await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    let job = app.submit(&key, template, "scan.png", example_png()).await;
    // The worker is in the middle of the document when killed, however
    // fast it reads it.
    let blocker = hold_charges(&app, account).await;

    let mut child = app.worker_process(&[("PAPERHOOK_WORKER_LEASE_SECS", "3")]);
    let pool = app.pool.clone();
    eventually(120, "the worker to start the document", || {
        let pool = pool.clone();
        async move {
            let s: Option<String> =
                sqlx::query_scalar("SELECT status FROM documents WHERE job_id = $1")
                    .bind(job)
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
            // PROCESSING IMAGE from the commit that creates it on; not
            // any status past NEW, which a finished document has too.
            (s.as_deref() == Some("PROCESSING IMAGE")).then_some(())
        }
    })
    .await;
    waiting_for_a_lock(&app.pool, "the worker charging the document").await;
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    // Its session, waiting for the lock, rolls back once it is let go and
    // finds its client gone.
    blocker.rollback().await.unwrap();
    // Killed in the middle: a document the worker finished before the kill
    // would leave nothing here to test.
    let (status, finished): (String, bool) =
        sqlx::query_as("SELECT status, finished_at IS NOT NULL FROM documents WHERE job_id = $1")
            .bind(job)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), finished),
        ("PROCESSING IMAGE", false),
        "the worker finished the document before it was killed"
    );
    assert_eq!(app.charges(account).await, 0);

    // Another worker takes the document over once the lease expires.
    eventually(60, "the job to finish after the takeover", || async {
        app.worker.run_once().await.unwrap();
        let st = app.job_status(&key, job).await;
        (st["status"] == "SUCCESS" || st["status"] == "FAILED").then_some(())
    })
    .await;
    app.drain().await;
    let st = app.job_status(&key, job).await;
    assert_eq!(st["status"], "SUCCESS", "{st}");
    assert_eq!(app.charges(account).await, 1);
    assert_eq!(app.credits(account).await, 9);
    assert_eq!(count(&app, "SELECT count(*) FROM results").await, 1);
    assert_eq!(hook.received().len(), 1);
    // The document's task was claimed twice: by the killed worker, then by
    // the one that took it over.
    let (state, attempts): (String, i32) =
        sqlx::query_as("SELECT state, attempts FROM tasks WHERE kind = 'document'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), attempts), ("completed", 2));
}

/// The README's promise: on SIGTERM a worker process stops claiming,
/// finishes the document it holds (within worker_shutdown_grace_secs) and
/// exits 0; the document is charged once, and the job queued behind it
/// waits for the next worker.
#[tokio::test]
async fn sigterm_stops_gracefully() {
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (account, key) = app.account(10).await;
    let (template, _) = app.template(&key, None).await;
    let job = app
        .submit(&key, template, "invoice.pdf", example_pdf())
        .await;
    // With one slot, a worker that had missed the SIGTERM would claim this
    // one as soon as the first is done.
    let behind = app.submit(&key, template, "later.pdf", example_pdf()).await;
    // The worker holds the document when the signal comes, however fast
    // it reads it.
    let blocker = hold_charges(&app, account).await;

    let grace: u64 = 30;
    let grace_secs = grace.to_string();
    let (mut child, mut log) = app.worker_process_logged(&[
        ("PAPERHOOK_WORKER_CONCURRENCY", "1"),
        ("PAPERHOOK_WORKER_SHUTDOWN_GRACE_SECS", grace_secs.as_str()),
    ]);
    eventually(60, "the document being read", || async {
        let st = app.job_status(&key, job).await;
        (st["documents"][0]["status"] == "PROCESSING IMAGE").then_some(())
    })
    .await;
    waiting_for_a_lock(&app.pool, "the worker charging the document").await;
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    // The worker has taken the signal in (it stops claiming) before the
    // document can finish: otherwise it might claim the job behind first.
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = log.recv().await {
            if line.contains("shutdown requested") {
                return;
            }
        }
        panic!("the worker's log ended before it said it stops");
    })
    .await
    .expect("the worker said it stops within 30 s");
    blocker.rollback().await.unwrap();

    let status = tokio::time::timeout(Duration::from_secs(grace), child.wait())
        .await
        .expect("the stopped worker exited within its grace period")
        .unwrap();
    assert!(status.success(), "{status}");
    // Finished, not given back at the end of the grace period.
    let st = app.job_status(&key, job).await;
    assert_eq!(st["status"], "SUCCESS", "{st}");
    assert_eq!(app.charges(account).await, 1);
    assert_eq!(app.credits(account).await, 9);
    let (state, attempts): (String, i32) =
        sqlx::query_as("SELECT state, attempts FROM tasks WHERE kind = 'document'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), attempts), ("completed", 1));
    // Stopped claiming: the next job was left to the next worker.
    let (state, attempts): (String, i32) =
        sqlx::query_as("SELECT state, attempts FROM tasks WHERE kind = 'job' AND ref_id = $1")
            .bind(behind)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (state.as_str(), attempts),
        ("available", 0),
        "the worker claimed a job after SIGTERM"
    );
    assert_eq!(app.job_status(&key, behind).await["status"], "NEW");
}

#[tokio::test]
async fn a_worker_asked_to_restart_drains_and_fails() {
    // What the worker does after giving up a stuck extraction: stop as on
    // SIGTERM, then return an error (the binary exits non-zero and its
    // supervisor starts a fresh process).
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.worker_shutdown_grace_secs = 10).await;
    let w = app.worker.clone();
    let handle = tokio::spawn(async move { w.run(CancellationToken::new()).await });
    app.worker.request_restart("a test");
    let err = tokio::time::timeout(Duration::from_secs(15), handle)
        .await
        .expect("the worker stopped within the grace period")
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("fresh process"), "{err}");
}

#[tokio::test]
async fn a_worker_stuck_in_a_decoder_fails_the_document_and_exits() {
    // Rendering cannot be interrupted: a page of 30,000 full-page fills
    // (8 million pixels each at 300 DPI) takes about a minute here. With a 1 s
    // document limit and a 1 s page limit, the worker process gives it up
    // at 2 s, fails the document, and exits non-zero without waiting for
    // the thread (its supervisor would start a fresh one).
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (account, key) = app.account(10).await;
    let (template, _) = app.template(&key, None).await;
    let job = app
        .submit(&key, template, "drawing.pdf", &pdf_painting_page(30_000))
        .await;
    let mut child = app.worker_process(&[
        ("PAPERHOOK_DOCUMENT_TIME_LIMIT_SECS", "1"),
        ("PAPERHOOK_PAGE_TIME_LIMIT_SECS", "1"),
        // Let the page through the check that would refuse it before
        // rendering (page_too_complex).
        ("PAPERHOOK_MAX_PAGE_OVERDRAW", "1000000"),
        ("PAPERHOOK_WORKER_SHUTDOWN_GRACE_SECS", "5"),
    ]);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the worker exited instead of waiting for the render")
        .unwrap();
    assert!(!status.success(), "{status}");
    let st = app.job_status(&key, job).await;
    assert_document_failed(&st, "document_timeout", "did not stop within 2 s");
    assert_eq!(app.charges(account).await, 0);
}

/// A worker process stopped (SIGTERM) while an extraction runs gives the
/// task back at the end of its grace period and exits then: it used to
/// return from `main` and wait for the render's thread to end (about a
/// minute here, up to the document limit in general) while another worker
/// did the document again.
#[tokio::test]
async fn a_stopped_worker_exits_at_the_end_of_its_grace_period() {
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (_, key) = app.account(10).await;
    let (template, _) = app.template(&key, None).await;
    // A page that takes about a minute to render (see above).
    let job = app
        .submit(&key, template, "drawing.pdf", &pdf_painting_page(30_000))
        .await;
    let mut child = app.worker_process(&[
        ("PAPERHOOK_MAX_PAGE_OVERDRAW", "1000000"),
        ("PAPERHOOK_WORKER_SHUTDOWN_GRACE_SECS", "1"),
    ]);
    eventually(30, "the document being read", || async {
        let st = app.job_status(&key, job).await;
        (st["documents"][0]["status"] == "PROCESSING IMAGE").then_some(())
    })
    .await;
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the stopped worker waited for the render to end")
        .unwrap();
    assert!(status.success(), "{status}");
    // Given back, not failed: the next worker reads it.
    let state: String = sqlx::query_scalar("SELECT state FROM tasks WHERE kind = 'document'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "available");
}

#[tokio::test]
async fn only_one_janitor_works_at_a_time() {
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let janitor = app.janitor();
    let mut other = app.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(paperhook_janitor::LOCK_KEY)
        .execute(&mut *other)
        .await
        .unwrap();
    let report = janitor.run_once(chrono::Utc::now()).await.unwrap();
    assert!(
        !report.leader,
        "a second janitor must not work while the lock is held"
    );
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(paperhook_janitor::LOCK_KEY)
        .execute(&mut *other)
        .await
        .unwrap();
    drop(other);

    // Dashboard sessions go once expired (12 hours by default).
    let (_, key) = app.account(1).await;
    for _ in 0..2 {
        let res = app
            .client
            .post(format!("{}/v1/session/sign-in", app.url))
            .json(&serde_json::json!({"api_key": key}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let report = janitor.run_once(chrono::Utc::now()).await.unwrap();
    assert_eq!(report.sessions_purged, 0);
    let report = janitor
        .run_once(chrono::Utc::now() + chrono::Duration::hours(13))
        .await
        .unwrap();
    assert_eq!(report.sessions_purged, 2);

    // Old attempts and finished tasks go, in batches, when their time comes.
    finished_tasks(&app.pool, 1200).await;
    let report = janitor.run_once(chrono::Utc::now()).await.unwrap();
    assert!(report.leader);
    assert_eq!(report.tasks_pruned, 0);
    let report = janitor
        .run_once(chrono::Utc::now() + chrono::Duration::days(2))
        .await
        .unwrap();
    assert_eq!(report.tasks_pruned, 1200);
}

/// A janitor pass that is dropped midway (it ran past its timeout) must
/// release the leader's lock: its session lock used to go back to the pool
/// with the connection, and no janitor could lead until that connection
/// reached its maximum lifetime.
#[tokio::test]
async fn a_janitor_pass_dropped_midway_releases_the_lock() {
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let janitor = app.janitor();
    // The pass stops at its first statement on webhook_attempts.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE webhook_attempts IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let pass = tokio::spawn(async move { janitor.run_once(chrono::Utc::now()).await });
    waiting_for_a_lock(&app.pool, "the janitor's pass waiting on the table").await;
    // The timeout drops it.
    pass.abort();
    assert!(pass.await.unwrap_err().is_cancelled());
    blocker.rollback().await.unwrap();

    // Another janitor process (its own connections) leads soon after.
    let other = paperhook_janitor::Janitor {
        pool: sqlx::PgPool::connect(secrecy::ExposeSecret::expose_secret(
            &app.config.database_url,
        ))
        .await
        .unwrap(),
        storage: app.storage.clone(),
        config: app.config.clone(),
    };
    eventually(10, "another janitor taking the lock", || async {
        other
            .run_once(chrono::Utc::now())
            .await
            .unwrap()
            .leader
            .then_some(())
    })
    .await;
}

/// A step of a janitor pass that fails (here: the stored documents cannot
/// be listed) does not keep the steps after it from running; the pass
/// reports the failure.
#[tokio::test]
async fn a_failing_janitor_step_does_not_stop_the_others() {
    use paperhook_core::storage::{FsStorage, Storage};
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let root = tempfile::tempdir().unwrap();
    let storage = Storage::local(
        FsStorage::new(root.path().to_path_buf(), false)
            .await
            .unwrap(),
    );
    std::fs::write(root.path().join("documents"), b"not a folder").unwrap();
    let janitor = paperhook_janitor::Janitor {
        pool: app.pool.clone(),
        storage,
        config: app.config.clone(),
    };
    finished_tasks(&app.pool, 3).await;
    let err = janitor
        .run_once(chrono::Utc::now() + chrono::Duration::days(2))
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("listing stored documents"),
        "{err:#}"
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the steps after the failing one ran");
}

/// A purge cut off before its commit (the janitor's pass timed out on a
/// slow store) keeps the deletion of the files it did: the job is marked at
/// once, so the next pass neither lists nor deletes its files again. A
/// batch too big for one pass used to start over each time, never reaching
/// the commit.
#[tokio::test]
async fn a_purge_cut_off_before_its_commit_keeps_its_deleted_files_marked() {
    use paperhook_core::retention::{self, Why};
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (_, key) = app.account(5).await;
    let (template, _) = app.template(&key, None).await;
    // Larger than inline_document_max_bytes: a stored file. No worker runs.
    let job = app.submit(&key, template, "scan.png", example_png()).await;
    let storage_key: String = sqlx::query_scalar("SELECT storage_key FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(app.storage.exists(&storage_key).await.unwrap());

    // The purge stops at its commit's first statement...
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE results IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let (pool, storage) = (app.pool.clone(), app.storage.clone());
    let target = (job, storage_key.clone(), false);
    let purge =
        tokio::spawn(
            async move { retention::purge(&pool, &storage, &[target], Why::Expired).await },
        );
    waiting_for_a_lock(&app.pool, "the purge waiting to commit").await;
    // ...where the pass's timeout drops it.
    purge.abort();
    assert!(purge.await.unwrap_err().is_cancelled());
    blocker.rollback().await.unwrap();

    assert!(!app.storage.exists(&storage_key).await.unwrap());
    let (files_gone, results_gone): (bool, bool) = sqlx::query_as(
        "SELECT file_deleted_at IS NOT NULL, results_expired_at IS NOT NULL FROM jobs WHERE id = $1",
    )
    .bind(job)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(files_gone, "the deleted file was not recorded");
    assert!(!results_gone, "the rest waits for the next pass");
}

/// A batch's results go in commits of about a thousand documents: what is
/// done stays done when the rest waits (here on a locked job) or the step's
/// time limit cuts it off. One transaction for a whole batch of big ZIP
/// jobs might never commit within the limit, and started again every pass.
#[tokio::test]
async fn expiry_commits_a_big_batch_a_thousand_documents_at_a_time() {
    use paperhook_core::retention::{self, Why};
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (_, key) = app.account(10).await;
    let (template, _) = app.template(&key, None).await;
    let mut jobs = Vec::new();
    for name in ["a.pdf", "b.pdf", "c.pdf"] {
        jobs.push(app.submit(&key, template, name, example_pdf()).await);
    }
    app.drain().await;
    // 600 documents with results each, as a ZIP batch has: one commit each.
    for job in &jobs {
        sqlx::query(
            "WITH d AS (
                 INSERT INTO documents (id, job_id, idx, status, pages)
                 SELECT gen_random_uuid(), $1, g, 'PROCESS IMAGE SUCCESS', 1
                 FROM generate_series(1, 599) g RETURNING id)
             INSERT INTO results (document_id, job_id, result) SELECT id, $1, '{}' FROM d",
        )
        .bind(job)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let results = |job: Uuid| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM results WHERE job_id = $1")
                .bind(job)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(results(jobs[2]).await, 600);

    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(jobs[2])
        .execute(&mut *blocker)
        .await
        .unwrap();
    let targets: Vec<_> = jobs.iter().map(|j| (*j, String::new(), true)).collect();
    let (pool, storage) = (app.pool.clone(), app.storage.clone());
    let purge =
        tokio::spawn(
            async move { retention::purge(&pool, &storage, &targets, Why::Expired).await },
        );
    waiting_for_a_lock(&app.pool, "the purge of the third job").await;
    assert_eq!((results(jobs[0]).await, results(jobs[1]).await), (0, 0));
    assert_eq!(results(jobs[2]).await, 600);
    blocker.rollback().await.unwrap();
    let (done, _) = purge.await.unwrap().unwrap();
    assert_eq!(done, jobs);
    assert_eq!(results(jobs[2]).await, 0);
}

/// A step that runs past `janitor_step_timeout_secs` (here the sessions
/// step, waiting on a locked table) is cut off and reported, and the step
/// after it (tasks) still runs: one pass-wide limit let a slow step (a
/// large store's orphan listing) starve the others on every pass.
#[tokio::test]
async fn a_janitor_step_past_its_time_limit_does_not_stop_the_others() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.janitor_step_timeout_secs = 1).await;
    let janitor = app.janitor();
    finished_tasks(&app.pool, 3).await;
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let later = chrono::Utc::now() + chrono::Duration::days(2);
    let error = tokio::time::timeout(Duration::from_secs(30), janitor.run_once(later))
        .await
        .expect("the pass waited on the locked table past its steps' limits")
        .expect_err("a step cut off fails the pass");
    let error = format!("{error:#}");
    assert!(
        error.starts_with(
            "1 of the janitor's steps failed (Report { leader: true, jobs_expired: 0, files_deleted: 0, leftover_files_deleted: 0, attempts_deleted: 0, tasks_pruned: 3,"
        ) && error.ends_with("first: the Sessions step ran past janitor_step_timeout_secs (1 s)"),
        "{error}"
    );
    blocker.rollback().await.unwrap();
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(tasks, 0, "the Tasks step, after it, did not run: {error}");
    // Next pass, nothing in the way: it completes.
    let report = janitor.run_once(later).await.unwrap();
    assert!(report.leader);
}

/// Jobs whose stored files cannot be deleted (here a folder stands where
/// the file should be) hold up no other job: the janitor walks on past
/// them, the jobs after them still expire, and the pass fails, saying so,
/// which alerts. Taken first in every batch, a batch of them used to stop
/// the expiry of every later job, while the pass counted as complete.
#[tokio::test]
async fn files_that_cannot_be_deleted_hold_up_no_other_job() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.janitor_batch = 2).await;
    let (account, key) = app.account(10).await;
    let (template, _) = app.template(&key, None).await;
    let mut jobs = Vec::new();
    for i in 0..6 {
        let name = format!("{i}.pdf");
        jobs.push(app.submit(&key, template, &name, example_pdf()).await);
    }
    app.drain().await;
    let root = std::path::PathBuf::from(app.config.storage_url.strip_prefix("file://").unwrap());
    let (stuck, rest) = jobs.split_at(3);
    for job in stuck {
        let storage_key = format!("documents/{account}/{job}");
        std::fs::create_dir_all(root.join(&storage_key).join("in-the-way")).unwrap();
        sqlx::query(
            "UPDATE jobs SET storage_key = $2, file_deleted_at = NULL,
                             finished_at = now() - interval '3 days' WHERE id = $1",
        )
        .bind(job)
        .bind(&storage_key)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    sqlx::query("UPDATE jobs SET finished_at = now() - interval '2 days' WHERE id = ANY($1)")
        .bind(rest)
        .execute(&app.pool)
        .await
        .unwrap();

    let error = app
        .janitor()
        .run_once(chrono::Utc::now())
        .await
        .expect_err("files left undeleted fail the pass");
    let error = format!("{error:#}");
    assert!(
        error.starts_with("2 of the janitor's steps failed")
            && error.ends_with(
                "first: the stored files of 3 delivered jobs could not be deleted (the warnings \
                 name the jobs and the storage's errors); they are tried again at the next pass"
            ),
        "{error}"
    );
    let expired: Vec<(Uuid, bool)> =
        sqlx::query_as("SELECT id, results_expired_at IS NOT NULL FROM jobs ORDER BY finished_at")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let gone = |ids: &[Uuid]| {
        expired
            .iter()
            .filter(|(id, done)| ids.contains(id) && *done)
            .count()
    };
    assert_eq!((gone(stuck), gone(rest)), (0, 3), "{expired:?}");
    for job in stuck {
        assert!(root.join(format!("documents/{account}/{job}")).is_dir());
    }
}

/// Inserts `n` queue tasks that finished now, for the janitor to prune.
async fn finished_tasks(pool: &sqlx::PgPool, n: i32) {
    sqlx::query(
        "INSERT INTO tasks (kind, ref_id, state, finished_at)
         SELECT 'job', gen_random_uuid(), 'completed', now() FROM generate_series(1, $1)",
    )
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}
