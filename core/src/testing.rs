//! Shared helpers for the workspace's integration tests: a fresh PostgreSQL
//! database per test, and a test configuration on the filesystem or on the
//! SeaweedFS that `scripts/test.sh` starts, and small PDFs built in code.
//! The binaries do not use it.

use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Toml};
use uuid::Uuid;

use crate::config::{Config, DEFAULTS};
use crate::crypto::Keyring;

/// Where a test stores documents.
pub enum TestStorage<'a> {
    Fs(&'a Path),
    /// A fresh prefix in the test bucket of the SeaweedFS `scripts/test.sh` starts.
    S3,
}

/// A superuser URL of the test PostgreSQL (`PAPERHOOK_TEST_DATABASE_URL`).
pub fn admin_database_url() -> String {
    std::env::var("PAPERHOOK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates an empty database named after a UUID and returns its URL.
pub async fn fresh_database() -> String {
    let admin = admin_database_url();
    let name = format!("paperhook_test_{}", Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .expect("connecting to the test PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .expect("creating a test database");
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{name}")
}

/// A pool on a [`fresh_database`] with the migrations run.
pub async fn migrated_database() -> sqlx::PgPool {
    let pool = sqlx::PgPool::connect(&fresh_database().await)
        .await
        .expect("connecting to the test database");
    crate::db::migrate(&pool)
        .await
        .expect("migrating the test database");
    pool
}

/// Waits (at most 30 s) until a session of `pool`'s database whose
/// statement is like `statement` (SQL `LIKE`; `%` for any) waits for a
/// lock: `what` has got as far as a lock another transaction holds.
pub async fn waiting_for_a_lock(pool: &sqlx::PgPool, statement: &str, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND query LIKE $1",
        )
        .bind(statement)
        .fetch_one(pool)
        .await
        .expect("reading pg_stat_activity");
        if waiting > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never waited for a lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| {
        panic!("{key} is not set: run the tests with scripts/test.sh, which starts SeaweedFS")
    })
}

/// The defaults with a test's database, a fresh encryption key, port 0 and
/// its storage; merge more settings, then [`extract`].
pub fn figment(database_url: &str, storage: TestStorage<'_>) -> Figment {
    let figment = Figment::from(Toml::string(DEFAULTS))
        .merge(("database_url", database_url))
        .merge(("api_addr", "127.0.0.1:0"))
        .merge(("encryption_keys", Keyring::generate_spec(0)));
    match storage {
        TestStorage::Fs(dir) => figment.merge(("storage_url", format!("file://{}", dir.display()))),
        TestStorage::S3 => figment
            .merge((
                "storage_url",
                format!(
                    "s3://{}/test-{}",
                    env("PAPERHOOK_TEST_S3_BUCKET"),
                    Uuid::new_v4().simple()
                ),
            ))
            .merge(("s3_endpoint", env("PAPERHOOK_TEST_S3_ENDPOINT")))
            .merge(("s3_access_key_id", env("PAPERHOOK_TEST_S3_ACCESS_KEY")))
            .merge(("s3_secret_access_key", env("PAPERHOOK_TEST_S3_SECRET_KEY"))),
    }
}

/// The validated configuration; panics with the reason otherwise.
pub fn extract(figment: Figment) -> Config {
    let config: Config = figment.extract().expect("test config");
    config.validate().expect("valid test config");
    config
}

/// A valid PDF of `pages` blank pages.
pub fn blank_pdf(pages: usize) -> Vec<u8> {
    pdf_of(pages, "")
}

/// A valid PDF of `pages` pages that all draw `content` (none if empty).
pub fn pdf_of(pages: usize, content: &str) -> Vec<u8> {
    let kids: Vec<String> = (0..pages).map(|i| format!("{} 0 R", i + 3)).collect();
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {pages} >>",
            kids.join(" ")
        ),
    ];
    let contents = if content.is_empty() {
        String::new()
    } else {
        format!(" /Contents {} 0 R", pages + 3)
    };
    for _ in 0..pages {
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]{contents} >>"
        ));
    }
    if !content.is_empty() {
        objects.push(format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        ));
    }
    pdf_from_objects(&objects)
}

/// A PDF file of these objects, numbered from 1 (the first is the
/// catalog), with its cross-reference table and trailer.
pub fn pdf_from_objects(objects: &[impl AsRef<[u8]>]) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body.as_ref());
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// A one-page PDF that fills the whole page `times` times (greys in turn):
/// slow and memory-hungry to render, refused as `page_too_complex` over
/// `max_page_overdraw`.
pub fn pdf_painting_page(times: usize) -> Vec<u8> {
    let fills: Vec<String> = (0..times)
        .map(|i| format!("{:.2} g 0 0 612 792 re f", (i % 100) as f64 / 100.0))
        .collect();
    pdf_of(1, &fills.join("\n"))
}

/// A JSON object's entries in the order they were written (serde_json's
/// `Value` sorts them): each value raw, to be read the same way in turn.
/// Panics if `json` is not an object.
pub fn object_in_order(json: &str) -> Vec<(String, Box<serde_json::value::RawValue>)> {
    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    struct Entries(Vec<(String, Box<serde_json::value::RawValue>)>);
    impl<'de> Deserialize<'de> for Entries {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Entries;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                    let mut entries = Vec::new();
                    while let Some(entry) = map.next_entry()? {
                        entries.push(entry);
                    }
                    Ok(Entries(entries))
                }
            }
            d.deserialize_map(V)
        }
    }
    let entries: Entries = serde_json::from_str(json).expect("a JSON object");
    entries.0
}

/// The keys of the object at `path` in `json`, in the order they were
/// written; a step that is a number indexes an array.
pub fn keys_in_order(json: &str, path: &[&str]) -> Vec<String> {
    use serde_json::value::RawValue;
    let mut current = json.to_owned();
    for step in path {
        let next = match step.parse::<usize>() {
            Ok(i) => serde_json::from_str::<Vec<Box<RawValue>>>(&current)
                .expect("an array")
                .into_iter()
                .nth(i),
            Err(_) => object_in_order(&current)
                .into_iter()
                .find_map(|(k, v)| (k == *step).then_some(v)),
        };
        current = next
            .unwrap_or_else(|| panic!("no {step:?} in {current}"))
            .get()
            .to_owned();
    }
    object_in_order(&current)
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}
