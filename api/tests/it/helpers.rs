//! Test harness: each test gets a fresh database, its own storage and an API
//! bound to port 0, talking to the real PostgreSQL (and SeaweedFS for S3).

use std::time::Duration;

use paperhook_api::AppState;
use paperhook_core::config::Config;
use paperhook_core::storage::Storage;
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

pub use paperhook_core::testing::{fresh_database, pdf_painting_page};

pub enum StorageKind {
    Fs,
    S3,
}

pub struct TestApp {
    pub url: String,
    /// Where `/metrics` is served when `metrics_addr` is set.
    pub metrics_url: Option<String>,
    pub pool: PgPool,
    pub storage: Storage,
    pub config: Config,
    pub client: Client,
    _dir: tempfile::TempDir,
}

pub async fn base_config(
    database_url: &str,
    storage: StorageKind,
    dir: &std::path::Path,
) -> Config {
    use paperhook_core::testing::{self, TestStorage};
    let storage = match storage {
        StorageKind::Fs => TestStorage::Fs(dir),
        StorageKind::S3 => TestStorage::S3,
    };
    testing::extract(testing::figment(database_url, storage).merge(("db_acquire_timeout_secs", 2)))
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(StorageKind::Fs, |_| {}).await
    }

    pub async fn spawn_with(storage: StorageKind, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let db = fresh_database().await;
        let mut config = base_config(&db, storage, dir.path()).await;
        tweak(&mut config);
        let state = paperhook_api::serve::state(config.clone())
            .await
            .expect("app state");
        Self::start(state, config, dir).await
    }

    pub async fn start(state: AppState, config: Config, dir: tempfile::TempDir) -> TestApp {
        let pool = state.pool.clone();
        let storage = state.storage.clone();
        let running = paperhook_api::serve::start(state, "127.0.0.1:0")
            .await
            .unwrap();
        TestApp {
            url: format!("http://{}", running.addr),
            metrics_url: running.metrics_addr.map(|a| format!("http://{a}")),
            pool,
            storage,
            config,
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            _dir: dir,
        }
    }

    /// Every file under the test's folder (the local file store's root).
    pub fn stored_files(&self) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        let mut dirs = vec![self._dir.path().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files
    }

    pub fn req(&self, method: Method, path: &str, key: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .header("x-auth", key)
    }

    /// A new account with `credits` and its API key.
    pub async fn account(&self, credits: i64) -> (Uuid, String) {
        let (account, key) = paperhook_core::db::accounts::create(&self.pool, "Test Co", credits)
            .await
            .unwrap();
        (account.id, key.key)
    }

    pub async fn template(&self, key: &str) -> Uuid {
        let (status, body) = send(
            self.req(Method::POST, "/v1/templates", key)
                .json(&example_template()),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().parse().unwrap()
    }
}

/// A dashboard session opened with `key`, as a browser would hold it.
pub struct Session {
    /// The whole `set-cookie` answer header, attributes included.
    pub set_cookie: String,
    /// `paperhook_session=TOKEN`, for a `cookie` request header.
    pub cookie: String,
    pub csrf: String,
}

pub async fn sign_in(app: &TestApp, key: &str) -> Session {
    sign_in_from(app, key, None).await
}

/// Signs in from a browser that holds the session `cookie`, if any.
pub async fn sign_in_from(app: &TestApp, key: &str, cookie: Option<&str>) -> Session {
    let mut req = app
        .client
        .post(format!("{}/v1/session/sign-in", app.url))
        .json(&json!({"api_key": key}));
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    Session {
        cookie: set_cookie.split(';').next().unwrap().to_owned(),
        set_cookie,
        csrf: body["csrf_token"].as_str().unwrap().to_owned(),
    }
}

impl Session {
    pub fn req(&self, app: &TestApp, method: Method, path: &str) -> RequestBuilder {
        app.client
            .request(method, format!("{}{path}", app.url))
            .header("cookie", &self.cookie)
    }
}

pub async fn send(req: RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.expect("request sent");
    let status = res.status();
    let text = res.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"))
    };
    (status, body)
}

/// The key with its last character changed (to one it is not: always
/// appending `x` gave back the key itself once in about 60 runs).
pub fn tamper(key: &str) -> String {
    let last = if key.ends_with('x') { 'y' } else { 'x' };
    format!("{}{last}", &key[..key.len() - 1])
}

/// Asserts our error shape, status and code.
pub fn assert_error(got: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "body: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "body: {}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "message missing: {}",
        got.1
    );
}

pub fn example_template() -> Value {
    let mut t: Value =
        serde_json::from_str(include_str!("../../../examples/template.json")).unwrap();
    t["webhook"] = json!({"url": "https://hooks.example.com/paperhook", "headers": {"Authorization": "Bearer very-secret-token-123"}});
    t
}

pub fn example_png() -> &'static [u8] {
    include_bytes!("../../../examples/invoice.png")
}

pub fn example_pdf() -> &'static [u8] {
    include_bytes!("../../../examples/invoice.pdf")
}
