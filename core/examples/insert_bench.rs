//! How many submitted jobs the database takes per second: C concurrent
//! clients inserting jobs (and their queue tasks) for D seconds, first each
//! with its own statement and commit (`jobs::insert_and_enqueue`, the path
//! of a submission with an Idempotency-Key), then through the batching
//! `jobs::Inserter` that `POST /process-job` uses, in the same run on the
//! same fresh database. No HTTP, no file store: the database's side alone.
//!
//! Then the same for the API key check that every request runs first:
//! `accounts::authenticate` (one statement per check) against the batching
//! `accounts::KeyChecker`, without a rate limit (a read) and with one (the
//! key's budget is written on every check; set high enough that none is
//! refused), all clients presenting the same key.
//!
//! `PAPERHOOK_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!  cargo run --release -p paperhook-core --example insert_bench [CLIENTS] [SECONDS]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use paperhook_core::db::{self, accounts, jobs, templates};
use uuid::Uuid;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().map_or(Ok(16), |a| a.parse())?;
    let secs: u64 = args.next().map_or(Ok(10), |a| a.parse())?;
    let url = paperhook_core::testing::fresh_database().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(clients as u32 + 2)
        .connect(&url)
        .await?;
    db::migrate(&pool).await?;
    let (account, key) = accounts::create(&pool, "Bench", 0).await?;
    let write = templates::TemplateWrite {
        name: "bench".into(),
        spec: serde_json::json!({"fields": []}),
        webhook_url: None,
        webhook_headers_enc: None,
    };
    let template = templates::insert(&pool, account.id, &write, b"secret")
        .await?
        .id;
    let new_job = move || {
        let id = Uuid::now_v7();
        jobs::NewJob {
            id,
            account_id: account.id,
            template_id: template,
            content_type: "application/pdf".into(),
            file_name: Some("invoice.pdf".into()),
            size_bytes: 18_000,
            storage_key: format!("documents/{}/{id}", account.id),
            static_values: serde_json::json!({"batch": 7}),
            idempotency_key: None,
            inline_data: None,
        }
    };
    println!("{clients} clients, {secs} s each, durable commits");
    let single = {
        let pool = pool.clone();
        run(clients, secs, move || {
            let pool = pool.clone();
            let job = new_job();
            async move {
                jobs::insert_and_enqueue(&pool, &job, Duration::from_secs(86_400), 25)
                    .await
                    .map(|_| ())
            }
        })
        .await
    };
    println!("one statement and commit per job: {single:.0} jobs/s");
    for statements in [1, 2, 4] {
        let inserter = jobs::Inserter::spawn(pool.clone(), 64, statements, 25);
        let batched = run(clients, secs, move || {
            let inserter = inserter.clone();
            let job = new_job();
            async move { inserter.insert(job).await.map(|_| ()) }
        })
        .await;
        println!(
            "batched (Inserter, {statements} statement(s) at once): {batched:.0} jobs/s, {:.2}x",
            batched / single
        );
    }
    for (what, limit) in [
        (
            "no rate limit",
            accounts::RateLimit {
                per_sec: 0,
                burst: 0,
            },
        ),
        (
            "rate limit",
            accounts::RateLimit {
                per_sec: 1_000_000,
                burst: 1_000_000,
            },
        ),
    ] {
        let single = {
            let (pool, key) = (pool.clone(), key.key.clone());
            run(clients, secs, move || {
                let (pool, key) = (pool.clone(), key.clone());
                async move { valid(accounts::authenticate(&pool, &key, limit).await) }
            })
            .await
        };
        let checker = accounts::KeyChecker::spawn(pool.clone(), limit, 64, 2);
        let batched = {
            let key = key.key.clone();
            run(clients, secs, move || {
                let (checker, key) = (checker.clone(), key.clone());
                async move { valid(checker.check(&key).await) }
            })
            .await
        };
        println!(
            "key checks, {what}: one statement per check {single:.0}/s, batched (KeyChecker, 2 statements at once) {batched:.0}/s, {:.2}x",
            batched / single
        );
    }
    Ok(())
}

/// A check that let the key through, or an error.
fn valid(check: sqlx::Result<accounts::KeyCheck<accounts::Account>>) -> sqlx::Result<()> {
    match check? {
        accounts::KeyCheck::Valid(_) => Ok(()),
        other => Err(sqlx::Error::Protocol(format!("key refused: {other:?}"))),
    }
}

/// Operations per second that `clients` loops of `insert` manage in `secs`.
async fn run<F, Fut>(clients: usize, secs: u64, insert: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = sqlx::Result<()>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let loops: Vec<_> = (0..clients)
        .map(|_| {
            let (insert, done) = (insert.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    insert().await.expect("insert");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for l in loops {
        l.await.expect("client");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}
