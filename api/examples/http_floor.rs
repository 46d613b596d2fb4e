//! The lightest HTTP API this stack allows, for the load test's floor:
//! `POST /process-job` reads the JSON body, inserts one row into
//! `load_jobs` (the table and values pgbench inserts, one durable commit)
//! and answers `202` with the new id. No key check, no base64, no file, no
//! queue task: what any submission API built on salvo and sqlx pays at the
//! least for one durable insert per request, with the load generator on the
//! same machine.
//!
//! ```sh
//! DATABASE_URL=… cargo run --release -p paperhook-api --example http_floor -- 127.0.0.1:PORT [CONNECTIONS] [--no-db]
//! ```
//!
//! `--no-db` answers without the insert: HTTP and JSON alone. `--batch`
//! inserts the rows of concurrent requests together
//! (`paperhook_core::db::batch`, 64 rows, 2 statements at once, as the API's
//! job inserter): one commit for several requests, what batching can add.

use paperhook_core::db::batch::{Batcher, Pending};
use salvo::conn::TcpListener;
use salvo::prelude::*;
use serde::Deserialize;
use uuid::Uuid;

#[derive(Deserialize)]
struct Submission<'a> {
    #[serde(borrow)]
    template_id: &'a str,
    #[serde(borrow)]
    actual_image: &'a str,
}

enum Insert {
    None,
    One(sqlx::PgPool),
    Batched(Batcher<Uuid, ()>),
}

struct Floor {
    insert: Insert,
}

/// pgbench's row, as the load test's pgbench inserts it.
const INSERT_ONE: &str =
    "INSERT INTO load_jobs (id, account_id, template_id, content_type, file_name,
         size_bytes, storage_key, static_values)
     VALUES ($1, gen_random_uuid(), gen_random_uuid(), 'pdf', 'invoice.pdf', 985,
         'documents/x/y/original', '{\"batch\": 7}')";

/// The same rows, one per id.
const INSERT_MANY: &str =
    "INSERT INTO load_jobs (id, account_id, template_id, content_type, file_name,
         size_bytes, storage_key, static_values)
     SELECT id, gen_random_uuid(), gen_random_uuid(), 'pdf', 'invoice.pdf', 985,
         'documents/x/y/original', '{\"batch\": 7}' FROM unnest($1::uuid[]) AS n(id)";

fn batcher(pool: sqlx::PgPool) -> Batcher<Uuid, ()> {
    Batcher::spawn(64, 2, move |batch: Vec<Pending<Uuid, ()>>| {
        let pool = pool.clone();
        async move {
            let ids: Vec<Uuid> = batch.iter().map(|p| p.item).collect();
            let outcome = sqlx::query(INSERT_MANY).bind(&ids).execute(&pool).await;
            for p in batch {
                let _ = p.done.send(match &outcome {
                    Ok(_) => Ok(()),
                    Err(_) => Err(sqlx::Error::PoolTimedOut),
                });
            }
        }
    })
}

#[async_trait]
impl Handler for Floor {
    async fn handle(
        &self,
        req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        let accepted = req.payload_with_max_size(16 << 20).await.is_ok_and(|body| {
            serde_json::from_slice::<Submission<'_>>(body)
                .is_ok_and(|s| !s.template_id.is_empty() && !s.actual_image.is_empty())
        });
        if !accepted {
            res.status_code(StatusCode::BAD_REQUEST);
            return;
        }
        let id = Uuid::now_v7();
        let inserted = match &self.insert {
            Insert::None => Ok(()),
            Insert::One(pool) => sqlx::query(INSERT_ONE)
                .bind(id)
                .execute(pool)
                .await
                .map(drop),
            Insert::Batched(batcher) => batcher.call(id).await,
        };
        if inserted.is_err() {
            res.status_code(StatusCode::SERVICE_UNAVAILABLE);
            return;
        }
        res.status_code(StatusCode::ACCEPTED);
        res.render(Json(serde_json::json!({ "job_id": id })));
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8099".into());
    let connections: u32 = args.get(1).and_then(|c| c.parse().ok()).unwrap_or(20);
    let flag = |name: &str| args.iter().any(|a| a == name);
    let insert = if flag("--no-db") {
        Insert::None
    } else {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(connections)
            .connect(&std::env::var("DATABASE_URL")?)
            .await?;
        if flag("--batch") {
            Insert::Batched(batcher(pool))
        } else {
            Insert::One(pool)
        }
    };
    let router = Router::new().push(Router::with_path("process-job").post(Floor { insert }));
    let acceptor = TcpListener::new(addr).bind().await;
    Server::new(acceptor).serve(router).await;
    Ok(())
}
