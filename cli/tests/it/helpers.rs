//! The real system in-process (a fresh database, the API on port 0, a real
//! worker running its loop) and the real `paperhook` binary run against it.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use paperhook_core::config::Config;
use paperhook_worker::Worker;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct System {
    pub url: String,
    pub pool: PgPool,
    pub client: reqwest::Client,
    stop: CancellationToken,
    pub dir: tempfile::TempDir,
}

impl Drop for System {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl System {
    pub async fn start() -> System {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> System {
        use paperhook_core::testing::{self, TestStorage};
        let dir = tempfile::tempdir().unwrap();
        let db = testing::fresh_database().await;
        let storage_dir = dir.path().join("storage");
        let mut config = testing::extract(
            testing::figment(&db, TestStorage::Fs(&storage_dir))
                .merge(("db_acquire_timeout_secs", 10))
                .merge(("worker_poll_ms", 200))
                .merge(("webhook_allow_cidrs", "127.0.0.1/32"))
                .merge(("webhook_retry_schedule", "0s,0s,0s"))
                .merge(("webhook_timeout_secs", 5)),
        );
        tweak(&mut config);
        let state = paperhook_api::serve::state(config.clone())
            .await
            .expect("app state");
        let pool = state.pool.clone();
        let storage = state.storage.clone();
        let running = paperhook_api::serve::start(state, "127.0.0.1:0")
            .await
            .unwrap();
        let worker = Worker::new(pool.clone(), storage, config.clone()).unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move { worker.run(token).await });
        System {
            url: format!("http://{}", running.addr),
            pool,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            stop,
            dir,
        }
    }

    /// A new account with `credits`; returns its id and API key.
    pub async fn account(&self, credits: i64) -> (Uuid, String) {
        let (account, key) = paperhook_core::db::accounts::create(&self.pool, "Test Co", credits)
            .await
            .unwrap();
        (account.id, key.key)
    }

    /// The example template (webhook at `url`, or none); returns its id.
    pub async fn template(&self, key: &str, url: Option<&str>) -> String {
        let mut t = example_template();
        match url {
            Some(url) => {
                t["webhook"] = json!({"url": url, "headers": {"Authorization": "Bearer t"}})
            }
            None => {
                t.as_object_mut().unwrap().remove("webhook");
            }
        }
        let res = self
            .client
            .post(format!("{}/v1/templates", self.url))
            .header("x-auth", key)
            .json(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn jobs_of(&self, account: Uuid) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE account_id = $1")
            .bind(account)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The `paperhook` binary with this system's URL and `key`, and a
    /// config file of its own (so the user's is never read).
    pub fn cli(&self, key: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_paperhook"));
        cmd.env("PAPERHOOK_URL", &self.url)
            .env("PAPERHOOK_API_KEY", key)
            .env(
                "PAPERHOOK_CLI_CONFIG",
                self.dir.path().join("no-config.toml"),
            )
            .env_remove("NO_COLOR")
            .env_remove("PAPERHOOK_WEBHOOK_SECRET")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    }
}

pub fn example_template() -> Value {
    serde_json::from_str(include_str!("../../../examples/template.json")).unwrap()
}

pub fn example_pdf() -> &'static [u8] {
    include_bytes!("../../../examples/invoice.pdf")
}

pub fn example_png() -> &'static [u8] {
    include_bytes!("../../../examples/invoice.png")
}

/// Runs a command to the end (at most `secs`), with its output.
pub async fn run(cmd: &mut tokio::process::Command, secs: u64) -> Output {
    tokio::time::timeout(Duration::from_secs(secs), cmd.output())
        .await
        .expect("the command finished in time")
        .expect("the command ran")
}

/// Runs `cmd`, which must end with exit code 3 (some documents failed) and
/// say `says` on stderr.
pub async fn documents_failed_saying(
    cmd: &mut tokio::process::Command,
    secs: u64,
    says: &str,
) -> Output {
    let out = run(cmd, secs).await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(text(&out.stderr).contains(says), "{}", show(&out));
    out
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Output for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// A one-page digital invoice like examples/invoice.pdf (see
/// examples/make-examples.py), with its own number and total; no number
/// line at all when `number` is None.
pub fn invoice_pdf(number: Option<&str>, total: &str, vendor: &str) -> Vec<u8> {
    let mut lines: Vec<(u32, u32, u32, String)> = vec![
        (56, 780, 22, vendor.to_owned()),
        (56, 756, 10, "12 Harbour Road, Bristol BS1 4DJ".into()),
        (380, 780, 18, "INVOICE".into()),
    ];
    if let Some(n) = number {
        lines.push((380, 750, 11, format!("Invoice No: {n}")));
    }
    lines.extend([
        (380, 734, 11, "Invoice Date: 14/11/2026".to_owned()),
        (380, 718, 11, "Due Date: 14/12/2026".into()),
        (56, 690, 11, "Bill To: Globex Corporation".into()),
        (56, 640, 11, "Description".into()),
        (330, 640, 11, "Qty".into()),
        (400, 640, 11, "Unit Price".into()),
        (490, 640, 11, "Amount".into()),
        (56, 620, 11, "Paper A4 box".into()),
        (330, 620, 11, "3".into()),
        (400, 620, 11, "24.50".into()),
        (490, 620, 11, "73.50".into()),
        (380, 550, 11, "Subtotal: 73.50".into()),
        (380, 514, 13, format!("Total Due: {total} GBP")),
    ]);
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('(', "\\(")
            .replace(')', "\\)")
    };
    let content: String = lines
        .iter()
        .map(|(x, y, size, t)| format!("BT /F1 {size} Tf {x} {y} Td ({}) Tj ET\n", esc(t)))
        .collect();
    let objs: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>".to_vec(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_vec(),
        {
            let mut o = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
            o.extend_from_slice(content.as_bytes());
            o.extend_from_slice(b"\nendstream");
            o
        },
    ];
    paperhook_core::testing::pdf_from_objects(&objs)
}

/// A ZIP of the given entries.
pub fn make_zip(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

pub fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// An RFC 4180 CSV as rows of cells (quoted fields with commas, quotes and
/// line breaks included).
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    rows
}

/// The CSV as one map per row, keyed by the header.
pub fn csv_records(text: &str) -> Vec<std::collections::HashMap<String, String>> {
    let rows = parse_csv(text);
    let header = rows[0].clone();
    rows[1..]
        .iter()
        .map(|r| {
            assert_eq!(r.len(), header.len(), "row {r:?} against header {header:?}");
            header.iter().cloned().zip(r.iter().cloned()).collect()
        })
        .collect()
}
