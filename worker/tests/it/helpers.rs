//! The harness: a fresh database, the API on port 0, a worker stepped with
//! `run_once`, and a webhook receiver on 127.0.0.1 port 0.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paperhook_core::config::Config;
use paperhook_core::storage::Storage;
use paperhook_worker::{Outcome, Worker};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

pub use paperhook_core::testing::{blank_pdf, fresh_database, pdf_painting_page};

pub enum StorageKind {
    Fs,
    S3,
}

pub fn config(database_url: &str, storage: StorageKind, dir: &std::path::Path) -> Config {
    use paperhook_core::testing::{self, TestStorage};
    let storage = match storage {
        StorageKind::Fs => TestStorage::Fs(dir),
        StorageKind::S3 => TestStorage::S3,
    };
    testing::extract(
        testing::figment(database_url, storage)
            .merge(("db_acquire_timeout_secs", 5))
            .merge(("webhook_allow_cidrs", "127.0.0.1/32"))
            .merge(("webhook_retry_schedule", "0s,0s,0s"))
            .merge(("webhook_timeout_secs", 5)),
    )
}

pub struct TestApp {
    pub url: String,
    pub pool: PgPool,
    pub storage: Storage,
    pub config: Config,
    pub client: Client,
    pub worker: Worker,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(StorageKind::S3, |_| {}).await
    }

    pub async fn spawn_with(storage: StorageKind, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let db = fresh_database().await;
        let mut config = config(&db, storage, dir.path());
        tweak(&mut config);
        let state = paperhook_api::serve::state(config.clone())
            .await
            .expect("app state");
        let pool = state.pool.clone();
        let storage = state.storage.clone();
        let running = paperhook_api::serve::start(state, "127.0.0.1:0")
            .await
            .unwrap();
        let worker = Worker::new(pool.clone(), storage.clone(), config.clone()).unwrap();
        TestApp {
            url: format!("http://{}", running.addr),
            pool,
            storage,
            config,
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            worker,
            _dir: dir,
        }
    }

    /// Another worker process's equivalent: same database and storage, its own id.
    pub fn another_worker(&self, tweak: impl FnOnce(&mut Config)) -> Worker {
        let mut config = self.config.clone();
        tweak(&mut config);
        Worker::new(self.pool.clone(), self.storage.clone(), config).unwrap()
    }

    /// Another worker, and the task of `kind` it claimed (a 60 s lease).
    pub async fn claimed_by_another_worker(
        &self,
        kind: &str,
    ) -> (Worker, paperhook_core::queue::Task) {
        let worker = self.another_worker(|_| {});
        let task = paperhook_core::queue::claim(
            &self.pool,
            &worker.id,
            &[kind],
            1,
            Duration::from_secs(60),
            None,
        )
        .await
        .unwrap()
        .pop()
        .unwrap_or_else(|| panic!("no {kind} task to claim"));
        (worker, task)
    }

    pub fn req(&self, method: Method, path: &str, key: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .header("x-auth", key)
    }

    pub async fn account(&self, credits: i64) -> (Uuid, String) {
        let (account, key) = paperhook_core::db::accounts::create(&self.pool, "Test Co", credits)
            .await
            .unwrap();
        (account.id, key.key)
    }

    /// The example template with its webhook at `url` (None: no webhook);
    /// returns its id and signing secret.
    pub async fn template(&self, key: &str, url: Option<&str>) -> (Uuid, String) {
        let mut t: Value =
            serde_json::from_str(include_str!("../../../examples/template.json")).unwrap();
        match url {
            Some(url) => {
                t["webhook"] =
                    json!({"url": url, "headers": {"Authorization": "Bearer test-token"}})
            }
            None => {
                t.as_object_mut().unwrap().remove("webhook");
            }
        }
        let (status, body) = send(self.req(Method::POST, "/v1/templates", key).json(&t)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
        let (status, body) = send(self.req(
            Method::GET,
            &format!("/v1/templates/{id}/webhook-secret"),
            key,
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (id, body["secret"].as_str().unwrap().to_owned())
    }

    /// Submits a file; returns the job id.
    pub async fn submit(&self, key: &str, template: Uuid, name: &str, data: &[u8]) -> Uuid {
        let form = reqwest::multipart::Form::new()
            .text("template_id", template.to_string())
            .text(
                "static_values",
                r#"{"company_name": "Acme Corp", "batch": 7}"#,
            )
            .part(
                "actual_image",
                reqwest::multipart::Part::bytes(data.to_vec()).file_name(name.to_owned()),
            );
        let (status, body) =
            send(self.req(Method::POST, "/process-job", key).multipart(form)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["job_id"].as_str().unwrap().parse().unwrap()
    }

    /// Steps the worker until the queue has nothing due (deadline 120 s).
    pub async fn drain(&self) {
        drain(&self.worker).await
    }

    /// A janitor for this app's database, storage and configuration.
    pub fn janitor(&self) -> paperhook_janitor::Janitor {
        paperhook_janitor::Janitor {
            pool: self.pool.clone(),
            storage: self.storage.clone(),
            config: self.config.clone(),
        }
    }

    /// The orphan documents the janitor deletes on a pass now, then on one
    /// after the orphan grace period (two hours on).
    pub async fn orphan_sweeps(&self) -> (u64, u64) {
        let janitor = self.janitor();
        let now = janitor.run_once(chrono::Utc::now()).await.unwrap();
        let later = chrono::Utc::now() + chrono::Duration::hours(2);
        let later = janitor.run_once(later).await.unwrap();
        (now.orphan_files_deleted, later.orphan_files_deleted)
    }

    pub async fn job_status(&self, key: &str, job: Uuid) -> Value {
        let (status, body) =
            send(self.req(Method::GET, &format!("/job-status?job_id={job}"), key)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn credits(&self, account: Uuid) -> i64 {
        sqlx::query_scalar("SELECT credits FROM accounts WHERE id = $1")
            .bind(account)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn charges(&self, account: Uuid) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM credit_ledger WHERE account_id = $1 AND reason = 'document'",
        )
        .bind(account)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }
}

pub async fn drain(worker: &Worker) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match worker.run_once().await.expect("run_once") {
            Outcome::Worked(_) => {}
            Outcome::Idle => return,
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue did not drain within 120 s"
        );
    }
}

/// Polls `check` every 50 ms until it returns Some, or panics after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 30 s) until a session of the test's database waits for
/// a lock: `what` has got as far as a lock another transaction holds.
pub async fn waiting_for_a_lock(pool: &sqlx::PgPool, what: &str) {
    paperhook_core::testing::waiting_for_a_lock(pool, "%", what).await;
}

pub async fn send(req: RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.expect("request sent");
    let status = res.status();
    let text = res.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

pub fn example_pdf() -> &'static [u8] {
    include_bytes!("../../../examples/invoice.pdf")
}

pub fn example_png() -> &'static [u8] {
    include_bytes!("../../../examples/invoice.png")
}

/// A ZIP of the given entries (names ending in `/` are folders).
pub fn make_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        let opts = zip::write::SimpleFileOptions::default();
        if name.ends_with('/') {
            w.add_directory(*name, opts).unwrap();
        } else {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A real HTTP receiver on 127.0.0.1 port 0. It answers the queued statuses
/// in order (a 429 with `Retry-After: 120`), then 200.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
    pub answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://127.0.0.1:{}/hook",
            listener.local_addr().unwrap().port()
        );
        let got = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(VecDeque::new()));
        let (g, a) = (got.clone(), answers.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (g, a) = (g.clone(), a.clone());
                tokio::spawn(async move {
                    let Some((head, body)) = read_request(&mut sock).await else {
                        return;
                    };
                    let headers = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    g.lock().unwrap().push(Received { headers, body });
                    let status = a.lock().unwrap().pop_front().unwrap_or(200);
                    // 429 answers ask for two minutes' rest.
                    let extra = if status == 429 {
                        "retry-after: 120\r\n"
                    } else {
                        ""
                    };
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\n{extra}content-length: 2\r\nconnection: close\r\n\r\nok"
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Receiver { url, got, answers }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// Reads one HTTP/1.1 request: its head (request line and headers) and the
/// body its content-length announces; `None` if the peer hung up first.
pub async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, length) = loop {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            break (pos + 4, len);
        }
    };
    while buf.len() < head_end + length {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    Some((head, buf[head_end..].to_vec()))
}

/// Verifies a delivery with the third-party PyPI package `standardwebhooks`
/// (installed by scripts/test.sh); panics with its error otherwise.
pub fn verify_with_python(secret: &str, got: &Received) {
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
req = json.load(sys.stdin)
Webhook(req["secret"]).verify(req["body"], req["headers"])
print("verified")
"#;
    let input = json!({
        "secret": secret,
        "body": String::from_utf8(got.body.clone()).unwrap(),
        "headers": {
            "webhook-id": got.headers["webhook-id"],
            "webhook-timestamp": got.headers["webhook-timestamp"],
            "webhook-signature": got.headers["webhook-signature"],
        },
    });
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("verified"),
        "standardwebhooks rejected the signature: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts that `job`'s status says its document failed with `code` and
/// a message containing `says`.
pub fn assert_document_failed(st: &Value, code: &str, says: &str) {
    assert_eq!(st["status"], "FAILED", "{st}");
    let error = &st["documents"][0]["error"];
    assert_eq!(error["code"], code, "{st}");
    assert!(
        error["message"].as_str().unwrap_or("").contains(says),
        "{st}"
    );
}

impl TestApp {
    /// A `paperhook-worker` process on this app's database and storage,
    /// with more settings as environment variables.
    pub fn worker_process(&self, env: &[(&str, &str)]) -> tokio::process::Child {
        self.worker_command(env)
            .spawn()
            .expect("starting paperhook-worker")
    }

    /// [`TestApp::worker_process`], with its log lines also sent to the
    /// receiver returned (and still printed): a test can wait for what the
    /// worker says it did.
    pub fn worker_process_logged(
        &self,
        env: &[(&str, &str)],
    ) -> (
        tokio::process::Child,
        tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        use tokio::io::AsyncBufReadExt;
        let mut child = self
            .worker_command(env)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starting paperhook-worker");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{line}");
                let _ = tx.send(line);
            }
        });
        (child, rx)
    }

    fn worker_command(&self, env: &[(&str, &str)]) -> tokio::process::Command {
        use secrecy::ExposeSecret;
        let c = &self.config;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_paperhook-worker"));
        cmd.env("DATABASE_URL", c.database_url.expose_secret())
            .env("PAPERHOOK_MIGRATE_ON_START", "false")
            .env("PAPERHOOK_STORAGE_URL", &c.storage_url)
            .env(
                "PAPERHOOK_ENCRYPTION_KEYS",
                c.encryption_keys.expose_secret(),
            )
            .env("PAPERHOOK_WEBHOOK_ALLOW_CIDRS", "127.0.0.1/32")
            .env("PAPERHOOK_LOG_LEVEL", "info")
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }
}
