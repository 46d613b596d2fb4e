//! End-to-end and queue benchmarks; results go to BENCHMARKS.md.
//!
//! `DATABASE_URL=postgres://…/postgres cargo run --release -p paperhook-worker --example pipeline_bench`
//!
//! Creates a scratch database, stores documents on the local filesystem,
//! inserts jobs exactly as the API does (job row + task + NOTIFY in one
//! transaction) and measures until a webhook receiver on 127.0.0.1 gets the
//! document's POST. In-process `Worker`s stand in for worker processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use figment::providers::Format;
use paperhook_core::config::Config;
use paperhook_core::crypto::Keyring;
use paperhook_core::queue;
use paperhook_core::storage::Storage;
use paperhook_worker::Worker;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

type Seen = Arc<Mutex<HashMap<Uuid, Instant>>>;

/// A receiver that records when each job's webhook arrived.
async fn receiver(seen: Seen) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16384];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() < pos + 4 + len {
                        continue;
                    }
                    let body: serde_json::Value =
                        serde_json::from_slice(&buf[pos + 4..pos + 4 + len]).unwrap_or_default();
                    if let Some(job) = body["job_id"].as_str().and_then(|s| s.parse().ok()) {
                        seen.lock().unwrap().insert(job, Instant::now());
                    }
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    url
}

struct Bench {
    pool: PgPool,
    storage: Storage,
    config: Config,
    account: Uuid,
    template: Uuid,
    seen: Seen,
}

impl Bench {
    async fn submit(&self, data: &[u8], content_type: &str) -> anyhow::Result<(Uuid, Instant)> {
        let id = Uuid::now_v7();
        let key = format!("documents/{}/{id}/original", self.account);
        self.storage.put_bytes(&key, data.to_vec().into()).await?;
        let start = Instant::now();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO jobs (id, account_id, template_id, content_type, file_name, size_bytes, storage_key)
             VALUES ($1, $2, $3, $4, 'doc', $5, $6)",
        )
        .bind(id)
        .bind(self.account)
        .bind(self.template)
        .bind(content_type)
        .bind(data.len() as i64)
        .bind(&key)
        .execute(&mut *tx)
        .await?;
        queue::enqueue(&mut tx, queue::kind::JOB, id, None, 25).await?;
        tx.commit().await?;
        Ok((id, start))
    }

    async fn wait(&self, ids: &[Uuid]) {
        let deadline = Instant::now() + Duration::from_secs(600);
        while ids
            .iter()
            .any(|id| !self.seen.lock().unwrap().contains_key(id))
        {
            assert!(Instant::now() < deadline, "webhooks did not arrive");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn workers(
        &self,
        n: usize,
    ) -> (
        CancellationToken,
        Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    ) {
        let stop = CancellationToken::new();
        let handles = (0..n)
            .map(|_| {
                let w = Worker::new(self.pool.clone(), self.storage.clone(), self.config.clone())
                    .unwrap();
                let s = stop.clone();
                tokio::spawn(async move { w.run(s).await })
            })
            .collect();
        (stop, handles)
    }

    /// Sequential submit → webhook latency, one document at a time.
    async fn latency(
        &self,
        data: &[u8],
        content_type: &str,
        n: usize,
    ) -> anyhow::Result<Vec<Duration>> {
        let mut out = Vec::new();
        for _ in 0..n {
            let (id, start) = self.submit(data, content_type).await?;
            self.wait(&[id]).await;
            out.push(self.seen.lock().unwrap()[&id] - start);
        }
        Ok(out)
    }

    /// Documents per second: `n` documents are queued first, then
    /// `workers` workers start and the clock runs until the last webhook.
    async fn throughput(&self, data: &[u8], n: usize, workers: usize) -> anyhow::Result<f64> {
        let mut ids = Vec::new();
        for _ in 0..n {
            ids.push(self.submit(data, "pdf").await?.0);
        }
        let start = Instant::now();
        let (stop, handles) = self.workers(workers);
        self.wait(&ids).await;
        let rate = n as f64 / start.elapsed().as_secs_f64();
        stop.cancel();
        for h in handles {
            h.await??;
        }
        Ok(rate)
    }
}

fn pct(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// Queue overhead: `n` no-op tasks claimed in batches of 10 and completed
/// one by one through `core::queue`, against a bare SKIP LOCKED loop.
async fn queue_overhead(pool: &PgPool, n: i64) -> anyhow::Result<(f64, f64)> {
    sqlx::query("INSERT INTO tasks (kind, ref_id) SELECT 'noop', gen_random_uuid() FROM generate_series(1, $1)")
        .bind(n)
        .execute(pool)
        .await?;
    let start = Instant::now();
    loop {
        let tasks =
            queue::claim(pool, "bench", &["noop"], 10, Duration::from_secs(30), None).await?;
        if tasks.is_empty() {
            break;
        }
        for t in &tasks {
            queue::complete(pool, t).await?;
        }
    }
    let ours = start.elapsed().as_secs_f64() * 1000.0 / n as f64;
    sqlx::query("CREATE TABLE bare (id bigserial PRIMARY KEY, done bool NOT NULL DEFAULT false)")
        .execute(pool)
        .await?;
    sqlx::query("INSERT INTO bare (done) SELECT false FROM generate_series(1, $1)")
        .bind(n)
        .execute(pool)
        .await?;
    let start = Instant::now();
    loop {
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE bare SET done = true WHERE id IN (
                 SELECT id FROM bare WHERE NOT done LIMIT 10 FOR UPDATE SKIP LOCKED) RETURNING id",
        )
        .fetch_all(pool)
        .await?;
        if ids.is_empty() {
            break;
        }
        for id in ids {
            sqlx::query("DELETE FROM bare WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?;
        }
    }
    let bare = start.elapsed().as_secs_f64() * 1000.0 / n as f64;
    Ok((ours, bare))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let admin = std::env::var("DATABASE_URL")
        .context("set DATABASE_URL to a superuser URL ending in /postgres")?;
    let name = format!("paperhook_bench_{}", Uuid::new_v4().simple());
    let admin_pool = PgPool::connect(&admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin_pool)
        .await?;
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let dir = tempfile::tempdir()?;
    let seen: Seen = Arc::default();
    let hook = receiver(seen.clone()).await;
    let config: Config = figment::Figment::from(figment::providers::Toml::string(
        paperhook_core::config::DEFAULTS,
    ))
    .merge(("database_url", url.as_str()))
    .merge(("storage_url", format!("file://{}", dir.path().display())))
    .merge(("encryption_keys", Keyring::generate_spec(0)))
    .merge(("webhook_allow_cidrs", "127.0.0.1/32"))
    .merge(("db_max_connections", 20))
    .extract()?;
    let pool = paperhook_core::db::pool(&config)?;
    paperhook_core::db::migrate(&pool).await?;
    let storage = Storage::open(&config, &pool).await?;
    let keyring = config.keyring()?;
    let (account, _) = paperhook_core::db::accounts::create(&pool, "bench", 1_000_000).await?;
    let spec: serde_json::Value =
        serde_json::from_str(include_str!("../../examples/template.json"))?;
    let spec = serde_json::json!({"fields": spec["fields"], "keywords": spec["keywords"], "languages": spec["languages"]});
    let template_id = Uuid::new_v4();
    let template = paperhook_core::db::templates::insert_with_id(
        &pool,
        template_id,
        account.id,
        &paperhook_core::db::templates::TemplateWrite {
            name: "bench".into(),
            spec,
            webhook_url: Some(hook),
            webhook_headers_enc: None,
        },
        &keyring.seal(
            paperhook_core::crypto::generate_webhook_secret().as_bytes(),
            &paperhook_core::crypto::context(template_id, paperhook_core::crypto::WEBHOOK_SECRET),
        ),
    )
    .await?;
    let bench = Bench {
        pool: pool.clone(),
        storage,
        config,
        account: account.id,
        template: template.id,
        seen,
    };
    let pdf = include_bytes!("../../examples/invoice.pdf");
    let png = include_bytes!("../../examples/invoice.png");

    let (ours, bare) = queue_overhead(&pool, 5000).await?;
    println!(
        "queue overhead per job: core::queue {ours:.3} ms, bare SKIP LOCKED loop {bare:.3} ms"
    );

    let (stop, handles) = bench.workers(1);
    bench.latency(pdf, "pdf", 3).await?; // warm-up
    let rest = bench.latency(pdf, "pdf", 50).await?;
    println!(
        "digital PDF at rest: p50 {:.1} ms, p99 {:.1} ms",
        pct(rest.clone(), 0.5),
        pct(rest, 0.99)
    );
    let scan = bench.latency(png, "png", 10).await?;
    println!(
        "1-page scan at rest: p50 {:.1} ms, p99 {:.1} ms",
        pct(scan.clone(), 0.5),
        pct(scan, 0.99)
    );
    // Under load: latency of single documents while a backlog of 200 drains.
    let mut backlog = Vec::new();
    for _ in 0..200 {
        backlog.push(bench.submit(pdf, "pdf").await?.0);
    }
    let loaded = bench.latency(pdf, "pdf", 20).await?;
    bench.wait(&backlog).await;
    println!(
        "digital PDF under load (200 queued ahead): p50 {:.1} ms, p99 {:.1} ms",
        pct(loaded.clone(), 0.5),
        pct(loaded, 0.99)
    );
    stop.cancel();
    for h in handles {
        h.await??;
    }
    let one = bench.throughput(pdf, 200, 1).await?;
    println!("digital PDF throughput, 1 worker: {one:.1} documents/s");
    let two = bench.throughput(pdf, 200, 2).await?;
    println!("digital PDF throughput, 2 workers: {two:.1} documents/s");
    pool.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&admin_pool)
    .await?;
    Ok(())
}
