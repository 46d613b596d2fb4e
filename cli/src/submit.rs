//! `paperhook submit`: finds the documents, submits them with bounded
//! concurrency and an Idempotency-Key each (so a re-run does not create
//! duplicates), shows progress, follows the jobs to the end and writes every
//! document's result.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use paperhook_csv::{cell, push_row, unique_column};
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::args::{OutputFormat, SubmitArgs};
use crate::client::{Api, ApiFailure, Retry, RetryEvent, decode};
use crate::commands::is_final;
use crate::output::{Out, plural};
use crate::{CliError, EXIT_FAILED_DOCUMENTS, EXIT_INTERRUPTED, Result, config};

/// One local file to send.
#[derive(Debug, Clone)]
struct Source {
    path: PathBuf,
    display: String,
    hash: String,
    size: u64,
    is_zip: bool,
}

#[derive(Debug)]
enum Body {
    /// A file sent as it is (its own job).
    File(usize),
    /// Files packed into one ZIP batch: entry name → source. Packed into a
    /// temporary file just before its upload, which is deleted after it.
    Bundle { entries: Vec<(String, usize)> },
}

/// One job to create.
#[derive(Debug)]
struct Unit {
    label: String,
    /// Every source the job stands for (duplicates of one content included).
    sources: Vec<usize>,
    body: Body,
    key: String,
    job_id: Option<String>,
    replayed: bool,
    resubmitted: bool,
    error: Option<ApiFailure>,
    status: String,
    results: Option<Value>,
    credits: i64,
    pages: u64,
    docs_ok: u64,
    docs_failed: u64,
    poll_every: Duration,
}

impl Unit {
    fn settled(&self) -> bool {
        self.error.is_some() || self.results.is_some()
    }
}

/// The parsed `--static` values.
pub fn parse_statics(items: &[String]) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for item in items {
        let (key, value) = item.split_once('=').ok_or_else(|| {
            CliError::new(format!("--static {item:?} is not key=value"))
                .hint("write --static company=Acme (a string) or --static batch:=7 (JSON)")
        })?;
        let (key, value) = match key.strip_suffix(':') {
            Some(k) => (
                k,
                serde_json::from_str(value).map_err(|e| {
                    CliError::new(format!("--static {item:?}: the value is not JSON: {e}"))
                        .hint("key:=VALUE takes JSON (7, true, \"text\", {\"a\":1}); key=VALUE takes a plain string")
                })?,
            ),
            None => (key, Value::String(value.to_owned())),
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(CliError::new(format!("--static {item:?} has an empty key")));
        }
        map.insert(key.to_owned(), value);
    }
    Ok(map)
}

/// The Idempotency-Key of a job: the same template, content and static
/// values always give the same key, so a re-run finds the jobs it made.
pub fn idempotency_key(template: &str, content: &str, statics: &Map<String, Value>) -> String {
    let mut h = Sha256::new();
    h.update(b"paperhook-cli/1\0");
    h.update(template.as_bytes());
    h.update(b"\0");
    h.update(content.as_bytes());
    h.update(b"\0");
    // serde_json's map is sorted: the same values always serialise the same.
    h.update(Value::Object(statics.clone()).to_string().as_bytes());
    format!("phcli1_{}", hex::encode(h.finalize()))
}

/// The type the API will detect, from the first bytes (as the server does).
fn sniff(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("jpeg")
    } else if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
        Some("tiff")
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Some("zip")
    } else if head.windows(5).any(|w| w == b"%PDF-") {
        Some("pdf")
    } else {
        None
    }
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Expands folders (recursively, sorted, skipping dot-files and files that
/// are not documents; a link to a folder is followed, once); files named on
/// the command line are always sent. A file in a folder that cannot be read
/// is named in a warning, not taken for one of another type.
fn collect(paths: &[PathBuf], out: &Out) -> Result<Vec<(PathBuf, bool)>> {
    let mut walk = Walk::default();
    for p in paths {
        let meta = std::fs::metadata(p)
            .map_err(|e| CliError::new(format!("{}: {e}", p.display())).hint("check the path"))?;
        if meta.is_dir() {
            walk.folder(p)?;
        } else {
            walk.files.push((p.clone(), true));
        }
    }
    if walk.skipped > 0 {
        out.warn(format!(
            "skipped {} in the folders that {} not PDF, PNG, JPEG, TIFF or ZIP",
            plural(walk.skipped as u64, "file", "files"),
            if walk.skipped == 1 { "is" } else { "are" }
        ));
    }
    for (path, err) in &walk.unreadable {
        out.warn(format!("skipped {}: cannot read it: {err}", path.display()));
    }
    Ok(walk.files)
}

#[derive(Default)]
struct Walk {
    files: Vec<(PathBuf, bool)>,
    skipped: usize,
    unreadable: Vec<(PathBuf, std::io::Error)>,
    /// The folders walked, by their real paths: a link back to a folder
    /// above (or twice to the same one) is walked once.
    seen: std::collections::HashSet<PathBuf>,
}

impl Walk {
    fn folder(&mut self, dir: &Path) -> Result<()> {
        let real = std::fs::canonicalize(dir)
            .map_err(|e| CliError::new(format!("reading {}: {e}", dir.display())))?;
        if !self.seen.insert(real) {
            return Ok(());
        }
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| CliError::new(format!("reading {}: {e}", dir.display())))?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = e.path();
            // Follows links: a link to a folder is a folder.
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                Err(err) => {
                    self.unreadable.push((path, err));
                    continue;
                }
            };
            if meta.is_dir() {
                self.folder(&path)?;
            } else if meta.is_file() {
                let mut head = [0u8; 1024];
                match std::fs::File::open(&path).and_then(|mut f| f.read(&mut head)) {
                    Ok(n) if sniff(&head[..n]).is_some() => self.files.push((path, false)),
                    Ok(_) => self.skipped += 1,
                    Err(err) => self.unreadable.push((path, err)),
                }
            }
        }
        Ok(())
    }
}

fn hash_file(path: &Path) -> std::io::Result<(String, u64, bool)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    let mut head = Vec::new();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < 1024 {
            head.extend_from_slice(&buf[..n.min(1024 - head.len())]);
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size, sniff(&head) == Some("zip")))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "document".into())
}

/// Groups the sources into jobs: one per distinct content, or ZIP batches.
fn plan(
    sources: &[Source],
    template: &str,
    statics: &Map<String, Value>,
    zip: bool,
    zip_max_files: usize,
    zip_max_bytes: u64,
) -> Vec<Unit> {
    let unit = |label: String, sources: Vec<usize>, body: Body, key: String| Unit {
        label,
        sources,
        body,
        key,
        job_id: None,
        replayed: false,
        resubmitted: false,
        error: None,
        status: String::new(),
        results: None,
        credits: 0,
        pages: 0,
        docs_ok: 0,
        docs_failed: 0,
        poll_every: Duration::from_millis(500),
    };
    let mut units: Vec<Unit> = Vec::new();
    let mut by_hash: HashMap<&str, usize> = HashMap::new();
    let mut loose = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        if let Some(&u) = by_hash.get(s.hash.as_str()) {
            units[u].sources.push(i);
            continue;
        }
        if zip && !s.is_zip {
            loose.push(i);
            continue;
        }
        by_hash.insert(&s.hash, units.len());
        units.push(unit(
            s.display.clone(),
            vec![i],
            Body::File(i),
            idempotency_key(template, &s.hash, statics),
        ));
    }
    // --zip: batches of distinct files, in order, under the size limit
    // (--zip-max-bytes; a larger file alone).
    let mut batch: Vec<usize> = Vec::new();
    let mut batch_bytes = 0u64;
    let mut batches = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut dup_of: Vec<(usize, usize)> = Vec::new();
    for i in loose {
        if let Some(&first) = seen.get(sources[i].hash.as_str()) {
            dup_of.push((i, first));
            continue;
        }
        seen.insert(&sources[i].hash, i);
        if !batch.is_empty()
            && (batch.len() >= zip_max_files || batch_bytes + sources[i].size > zip_max_bytes)
        {
            batches.push(std::mem::take(&mut batch));
            batch_bytes = 0;
        }
        batch_bytes += sources[i].size;
        batch.push(i);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    let n_batches = batches.len();
    for (b, members) in batches.into_iter().enumerate() {
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut entries = Vec::new();
        let mut digest = String::from("zip-batch\n");
        for (k, &i) in members.iter().enumerate() {
            let mut name = file_name(&sources[i].path);
            if name.starts_with('.') {
                name = format!("_{name}");
            }
            if names.contains_key(&name) {
                // Numbered, with the first number whose name no file of
                // the batch has (a file may be called `0002-scan.pdf`).
                name = (k..)
                    .map(|n| format!("{n:04}-{name}"))
                    .find(|candidate| !names.contains_key(candidate))
                    .expect("an unused name");
            }
            names.insert(name.clone(), i);
            digest.push_str(&format!("{name}\0{}\n", sources[i].hash));
            entries.push((name, i));
        }
        let label = if n_batches == 1 {
            format!(
                "ZIP batch ({})",
                plural(members.len() as u64, "file", "files")
            )
        } else {
            format!(
                "ZIP batch {}/{n_batches} ({})",
                b + 1,
                plural(members.len() as u64, "file", "files")
            )
        };
        let key = idempotency_key(template, &hex::encode(Sha256::digest(&digest)), statics);
        units.push(unit(label, members.clone(), Body::Bundle { entries }, key));
    }
    for (dup, first) in dup_of {
        if let Some(u) = units.iter_mut().find(|u| match &u.body {
            Body::Bundle { entries, .. } => entries.iter().any(|(_, s)| *s == first),
            Body::File(_) => false,
        }) {
            u.sources.push(dup);
        }
    }
    units
}

/// A temporary file for a ZIP batch: deleted when its path is dropped.
fn bundle_file() -> std::io::Result<(std::fs::File, tempfile::TempPath)> {
    let file = tempfile::Builder::new()
        .prefix("paperhook-batch-")
        .suffix(".zip")
        .tempfile()?;
    Ok(file.into_parts())
}

fn write_bundle(
    f: std::fs::File,
    entries: &[(String, usize)],
    sources: &[Source],
) -> std::io::Result<()> {
    let mut w = zip::ZipWriter::new(std::io::BufWriter::new(f));
    for (name, i) in entries {
        // Documents are already compressed: store them.
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(sources[*i].size >= u32::MAX as u64);
        w.start_file(name.as_str(), opts)?;
        let mut src = std::fs::File::open(&sources[*i].path)?;
        std::io::copy(&mut src, &mut w)?;
    }
    let mut inner = w.finish().map_err(std::io::Error::other)?;
    inner.flush()
}

type Task = Pin<Box<dyn Future<Output = Event> + Send>>;

enum Event {
    Uploaded(usize, std::result::Result<Accepted, ApiFailure>),
    Polled(usize, std::result::Result<Value, ApiFailure>),
    Finished(usize, std::result::Result<(Value, Value), ApiFailure>),
}

struct Accepted {
    job_id: String,
    replayed: bool,
    resubmitted: bool,
}

/// What an upload needs, owned so that it can run on its own.
#[derive(Clone)]
struct UploadSpec {
    path: PathBuf,
    file_name: String,
    key: String,
    template: String,
    statics: String,
    label: String,
}

async fn upload_once(
    api: &Api,
    spec: &UploadSpec,
    key: &str,
) -> std::result::Result<(String, bool), ApiFailure> {
    let res = api
        .send_with(&format!("upload {}", spec.label), Retry::Safe, || {
            let spec = spec.clone();
            let key = key.to_owned();
            let api = api.clone();
            async move {
                let file = tokio::fs::File::open(&spec.path)
                    .await
                    .map_err(|e| ApiFailure {
                        status: None,
                        code: "io".into(),
                        message: format!("reading {}: {e}", spec.path.display()),
                    })?;
                let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
                let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
                let part = Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
                    .file_name(spec.file_name.clone())
                    .mime_str("application/octet-stream")
                    .expect("a valid MIME type");
                let form = Form::new()
                    .text("template_id", spec.template.clone())
                    .text("static_values", spec.statics.clone())
                    .part("actual_image", part);
                Ok(api
                    .request(Method::POST, "/process-job")
                    .header("idempotency-key", key)
                    .multipart(form))
            }
        })
        .await?;
    let replayed = res
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let body: Value = decode(res).await?;
    let job_id = body["job_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ApiFailure {
            status: None,
            code: "unexpected_answer".into(),
            message: "the API accepted the document but sent no job_id".into(),
        })?;
    Ok((job_id, replayed))
}

async fn upload(
    api: Api,
    spec: UploadSpec,
    retry_failed: bool,
) -> std::result::Result<Accepted, ApiFailure> {
    let mut key = spec.key.clone();
    let mut resubmitted = false;
    // A replayed job that FAILED is submitted again under a key derived from
    // it (deterministic too: a further re-run replays the new job).
    for _ in 0..5 {
        let (job_id, replayed) = upload_once(&api, &spec, &key).await?;
        if !(replayed && retry_failed) {
            return Ok(Accepted {
                job_id,
                replayed,
                resubmitted,
            });
        }
        let status: Value = api
            .json("job status", Retry::Safe, || {
                api.request(Method::GET, &format!("/job-status?job_id={job_id}"))
            })
            .await?;
        if status["status"] != "FAILED" {
            return Ok(Accepted {
                job_id,
                replayed,
                resubmitted,
            });
        }
        key = format!(
            "phcli1r_{}",
            hex::encode(Sha256::digest(format!("{key}\0{job_id}")))
        );
        resubmitted = true;
    }
    Err(ApiFailure {
        status: None,
        code: "too_many_retries".into(),
        message: "failed five times in a row".into(),
    })
}

async fn poll(api: Api, job_id: String) -> std::result::Result<Value, ApiFailure> {
    api.json("job status", Retry::Safe, || {
        api.request(Method::GET, &format!("/job-status?job_id={job_id}"))
    })
    .await
}

async fn finish(api: Api, job_id: String) -> std::result::Result<(Value, Value), ApiFailure> {
    let body = json!({"job_id": job_id, "result_format": "json"});
    let results: Value = api
        .json("job results", Retry::Safe, || {
            api.request(Method::POST, "/v1/job-results").json(&body)
        })
        .await?;
    let detail: Value = api
        .json("job detail", Retry::Safe, || {
            api.request(Method::GET, &format!("/v1/jobs/{job_id}"))
        })
        .await?;
    Ok((results, detail))
}

#[derive(Debug, Default, Clone)]
struct Counts {
    units: u64,
    uploaded: u64,
    replayed: u64,
    processing: u64,
    settled: u64,
    docs_ok: u64,
    docs_failed: u64,
    pages: u64,
    credits: i64,
}

/// The progress bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    out: Out,
    wait: bool,
}

impl Progress {
    fn new(out: &Out, total: u64, wait: bool) -> Progress {
        let bar = out.stderr_is_terminal.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let template = if out.err.enabled {
                "{spinner:.cyan} [{bar:28.cyan/blue}] {pos}/{len} {msg} {elapsed:.dim}"
            } else {
                "{spinner} [{bar:28}] {pos}/{len} {msg} {elapsed}"
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            out: out.clone(),
            wait,
        }
    }

    fn update(&self, c: &Counts) {
        let Some(bar) = &self.bar else { return };
        let s = &self.out.err;
        let mut msg = format!("uploaded {}/{}", c.uploaded, c.units);
        if self.wait {
            msg.push_str(&format!(
                " · processing {} · {} · {}",
                c.processing,
                s.green(&format!("done {}", c.docs_ok)),
                if c.docs_failed > 0 {
                    s.red(&format!("failed {}", c.docs_failed))
                } else {
                    format!("failed {}", c.docs_failed)
                },
            ));
            msg.push_str(&format!(
                " · {} · {}",
                plural(c.pages, "page", "pages"),
                plural(c.credits.max(0) as u64, "credit", "credits")
            ));
        }
        bar.set_position(c.settled);
        bar.set_message(msg);
    }

    /// A line about one file: printed in plain mode; on a terminal only when `important`.
    fn event(&self, line: String, important: bool) {
        match &self.bar {
            Some(bar) if important => bar.println(line),
            Some(_) => {}
            None => self.out.note(line),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A document row of the results file.
fn rows(units: &[Unit], sources: &[Source]) -> Vec<Value> {
    let mut by_source: Vec<Option<usize>> = vec![None; sources.len()];
    for (u, unit) in units.iter().enumerate() {
        for &s in &unit.sources {
            by_source[s] = Some(u);
        }
    }
    let mut rows = Vec::new();
    for (s, source) in sources.iter().enumerate() {
        let Some(u) = by_source[s] else { continue };
        let unit = &units[u];
        let job_id = unit.job_id.clone().map_or(Value::Null, Value::String);
        let statics = unit
            .results
            .as_ref()
            .map(|r| r["static_values"].clone())
            .unwrap_or(Value::Null);
        let base = |index: Value,
                    file_name: Value,
                    status: &str,
                    pages: Value,
                    result: Value,
                    error: Value| {
            json!({
                "source": source.display,
                "job_id": job_id,
                "index": index,
                "file_name": file_name,
                "status": status,
                "pages": pages,
                "result": result,
                "error": error,
                "static_values": statics,
                "replayed": unit.replayed,
            })
        };
        if let Some(err) = &unit.error {
            rows.push(base(
                Value::Null,
                Value::String(file_name(&source.path)),
                if unit.job_id.is_some() {
                    "UNKNOWN"
                } else {
                    "NOT SUBMITTED"
                },
                Value::Null,
                Value::Null,
                json!({"code": err.code, "message": err.message}),
            ));
            continue;
        }
        let Some(results) = &unit.results else {
            rows.push(base(
                Value::Null,
                Value::String(file_name(&source.path)),
                if unit.status.is_empty() {
                    "NOT SUBMITTED"
                } else {
                    &unit.status
                },
                Value::Null,
                Value::Null,
                Value::Null,
            ));
            continue;
        };
        let docs = results["documents"].as_array().cloned().unwrap_or_default();
        let wanted: Vec<&Value> = match &unit.body {
            // A bundle: the document of the entry with this file's content.
            Body::Bundle { entries, .. } => {
                let name = entries
                    .iter()
                    .find(|(_, i)| sources[*i].hash == source.hash)
                    .map(|(n, _)| n.as_str());
                docs.iter()
                    .filter(|d| d["file_name"].as_str() == name)
                    .collect()
            }
            Body::File(_) => docs.iter().collect(),
        };
        if wanted.is_empty() {
            // The job failed before it had documents of its entries: a
            // broken ZIP has none, a batch refused as a whole (too many
            // entries, too large) one named after the upload.
            let status = results["status"].as_str().unwrap_or("FAILED");
            let entries: Vec<&str> = match &unit.body {
                Body::Bundle { entries, .. } => entries.iter().map(|(n, _)| n.as_str()).collect(),
                Body::File(_) => Vec::new(),
            };
            let error = docs
                .iter()
                .find(|d| {
                    !d["error"].is_null()
                        && !d["file_name"]
                            .as_str()
                            .is_some_and(|n| entries.contains(&n))
                })
                .map(|d| d["error"].clone())
                .or_else(|| results.get("job_error").cloned())
                .unwrap_or(Value::Null);
            rows.push(base(
                Value::Null,
                Value::String(file_name(&source.path)),
                status,
                Value::Null,
                Value::Null,
                error,
            ));
            continue;
        }
        for d in wanted {
            rows.push(base(
                d["index"].clone(),
                d["file_name"].clone(),
                d["status"].as_str().unwrap_or(""),
                d["pages"].clone(),
                d["result"].clone(),
                d["error"].clone(),
            ));
        }
    }
    rows
}

/// RFC 4180 CSV like the API's (its cells, from `paperhook_csv`: text a
/// spreadsheet would run as a formula is defused): document columns, then
/// the static values, then the template's fields (tables as one JSON cell);
/// a name already in the header gets the prefix `static_values.` or
/// `result.`, as in the API's.
pub fn to_csv(rows: &[Value], statics: &Map<String, Value>, fields: &[String]) -> String {
    let mut header: Vec<String> = std::iter::once("source")
        .chain(paperhook_csv::DOCUMENT_COLUMNS)
        .map(str::to_owned)
        .collect();
    for key in statics.keys() {
        header.push(unique_column(&header, "static_values.", key));
    }
    let mut fields = fields.to_vec();
    // Result keys the template does not list (should not happen) still get a column.
    for r in rows {
        if let Some(obj) = r["result"].as_object() {
            for k in obj.keys() {
                if !fields.contains(k) {
                    fields.push(k.clone());
                }
            }
        }
    }
    for field in &fields {
        header.push(unique_column(&header, "result.", field));
    }
    let mut out = String::new();
    push_row(&mut out, &header);
    for r in rows {
        let mut row = vec![
            cell(r.get("source")),
            cell(r.get("job_id")),
            cell(r.get("index")),
            cell(r.get("file_name")),
            cell(r.get("status")),
            cell(r.get("pages")),
            cell(r["error"].get("code")),
            cell(r["error"].get("message")),
        ];
        row.extend(
            statics
                .keys()
                .map(|k| cell(r["static_values"].get(k).or_else(|| statics.get(k)))),
        );
        row.extend(fields.iter().map(|f| cell(r["result"].get(f))));
        push_row(&mut out, &row);
    }
    out
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| CliError::new(format!("writing {}: {e}", path.display())))?;
    tmp.write_all(data)
        .and_then(|()| tmp.flush())
        .map_err(|e| CliError::new(format!("writing {}: {e}", path.display())))?;
    tmp.persist(path)
        .map_err(|e| CliError::new(format!("writing {}: {}", path.display(), e.error)))?;
    Ok(())
}

fn is_fatal(f: &ApiFailure) -> bool {
    matches!(f.status, Some(401..=403))
        || f.code == "template_not_found"
        || (f.status.is_none() && f.code == "connect")
}

pub async fn run(args: SubmitArgs, out: &Out) -> Result<u8> {
    let started = Instant::now();
    let creds = config::credentials()?;
    let template = uuid::Uuid::parse_str(args.template.trim())
        .map_err(|_| {
            CliError::new(format!("{:?} is not a template id (a UUID)", args.template))
                .hint("list your templates with `paperhook templates list`")
        })?
        .to_string();
    let statics = parse_statics(&args.statics)?;
    let format = match (args.format, &args.output) {
        (Some(f), _) => Some(f),
        (None, Some(p)) => Some(
            match p
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("csv") => OutputFormat::Csv,
                Some("jsonl" | "ndjson" | "json") => OutputFormat::Jsonl,
                _ => {
                    return Err(CliError::new(format!(
                        "cannot tell the format of {} from its extension",
                        p.display()
                    ))
                    .hint("name it .csv or .jsonl, or pass --format csv|jsonl"));
                }
            },
        ),
        (None, None) => None,
    };

    let progress_slot: Arc<std::sync::Mutex<Option<Arc<Progress>>>> = Arc::default();
    let hook_slot = progress_slot.clone();
    let hook_out = out.clone();
    let mut api = Api::new(&creds)?.on_retry(Arc::new(move |e: &RetryEvent| {
        let line = format!(
            "retry     {}: {}; again in {:.1} s",
            e.what,
            e.reason,
            e.delay.as_secs_f64()
        );
        match hook_slot.lock().ok().and_then(|g| g.clone()) {
            Some(p) => p.event(line, false),
            None => hook_out.note(line),
        }
    }));
    api.retries = args.retries;

    // The template first: a wrong id or key fails here, before any upload.
    let tpl: Value = api.get(&format!("/v1/templates/{template}")).await?;
    let fields: Vec<String> = tpl["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["name"].as_str().map(str::to_owned))
        .collect();

    let files = collect(&args.paths, out)?;
    if files.is_empty() {
        return Err(CliError::new("no documents to submit")
            .hint("name PDF, PNG, JPEG, TIFF or ZIP files, or folders that hold some"));
    }
    let hashed: Vec<_> = futures::stream::iter(files.into_iter().map(|(path, _)| async move {
        let p = path.clone();
        let r = tokio::task::spawn_blocking(move || hash_file(&p))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        (path, r)
    }))
    .buffered(4)
    .collect()
    .await;
    let mut sources = Vec::with_capacity(hashed.len());
    for (path, r) in hashed {
        let (hash, size, is_zip) =
            r.map_err(|e| CliError::new(format!("reading {}: {e}", path.display())))?;
        sources.push(Source {
            display: display(&path),
            path,
            hash,
            size,
            is_zip,
        });
    }
    let mut units = plan(
        &sources,
        &template,
        &statics,
        args.zip,
        args.zip_max_files,
        args.zip_max_bytes,
    );
    let duplicates = sources.len() as u64
        - units
            .iter()
            .map(|u| match &u.body {
                Body::File(_) => 1,
                Body::Bundle { entries, .. } => entries.len() as u64,
            })
            .sum::<u64>();
    if !out.json || out.stderr_is_terminal {
        out.note(format!(
            "Submitting {} as {} to template {} ({}).{}",
            plural(sources.len() as u64, "file", "files"),
            plural(units.len() as u64, "job", "jobs"),
            tpl["name"].as_str().unwrap_or("?"),
            template,
            if duplicates > 0 {
                format!(
                    " {} identical to others sent once.",
                    plural(duplicates, "file is", "files are")
                )
            } else {
                String::new()
            }
        ));
    }

    let statics_text = Value::Object(statics.clone()).to_string();
    let progress = Arc::new(Progress::new(out, units.len() as u64, args.wait));
    *progress_slot.lock().expect("not poisoned") = Some(progress.clone());
    let mut counts = Counts {
        units: units.len() as u64,
        ..Counts::default()
    };
    progress.update(&counts);

    let concurrency = args.concurrency as usize;
    let mut uploads: FuturesUnordered<Task> = FuturesUnordered::new();
    // The sources, for packing batches in the upload tasks.
    let packing = Arc::new(sources.clone());
    let mut polls: FuturesUnordered<Task> = FuturesUnordered::new();
    // When each waiting job is next polled, soonest first (jobs poll at
    // different intervals, so the order they were queued in is not it).
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut next = 0usize;
    let mut fatal: Option<ApiFailure> = None;
    let deadline = (args.timeout > 0).then(|| Instant::now() + Duration::from_secs(args.timeout));
    let mut interrupted = false;
    let mut timed_out = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let s = out.err;

    loop {
        while fatal.is_none() && uploads.len() < concurrency && next < units.len() {
            let u = &units[next];
            let (path, name, bundle) = match &u.body {
                Body::File(i) => (sources[*i].path.clone(), file_name(&sources[*i].path), None),
                Body::Bundle { entries } => (
                    PathBuf::new(),
                    format!("paperhook-batch-{next}.zip"),
                    Some((entries.clone(), packing.clone())),
                ),
            };
            let mut spec = UploadSpec {
                path,
                file_name: name,
                key: u.key.clone(),
                template: template.clone(),
                statics: statics_text.clone(),
                label: u.label.clone(),
            };
            let api = api.clone();
            let i = next;
            let retry_failed = args.retry_failed;
            uploads.push(Box::pin(async move {
                // A batch is packed just before its upload and its file
                // deleted after it: at most `concurrency` exist at once.
                // This task holds the path, so an interrupted run (the
                // task dropped while the packing thread writes) deletes it.
                let packed = match bundle {
                    Some((entries, sources)) => {
                        let written = match bundle_file() {
                            Ok((file, path)) => tokio::task::spawn_blocking(move || {
                                write_bundle(file, &entries, &sources)
                            })
                            .await
                            .map_err(std::io::Error::other)
                            .and_then(|written| written)
                            .map(|()| path),
                            Err(e) => Err(e),
                        };
                        match written {
                            Ok(packed) => Some(packed),
                            Err(e) => {
                                let failure = ApiFailure {
                                    status: None,
                                    code: "zip_batch".into(),
                                    message: format!("making the ZIP batch: {e}"),
                                };
                                return Event::Uploaded(i, Err(failure));
                            }
                        }
                    }
                    None => None,
                };
                if let Some(packed) = &packed {
                    spec.path = packed.to_path_buf();
                }
                let uploaded = upload(api, spec, retry_failed).await;
                drop(packed);
                Event::Uploaded(i, uploaded)
            }));
            next += 1;
        }
        let now = Instant::now();
        while polls.len() < concurrency && due.peek().is_some_and(|Reverse((t, _))| *t <= now) {
            let Reverse((_, i)) = due.pop().expect("not empty");
            let api = api.clone();
            let job = units[i].job_id.clone().expect("a polled unit has a job");
            polls.push(Box::pin(
                async move { Event::Polled(i, poll(api, job).await) },
            ));
        }
        let uploads_done = uploads.is_empty() && (next >= units.len() || fatal.is_some());
        if uploads_done && (!args.wait || (polls.is_empty() && due.is_empty())) {
            break;
        }
        let wake = due
            .peek()
            .map(|Reverse((t, _))| *t)
            .filter(|_| polls.len() < concurrency)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let stop_at = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 86400));
        let event = tokio::select! {
            Some(e) = uploads.next(), if !uploads.is_empty() => e,
            Some(e) = polls.next(), if !polls.is_empty() => e,
            _ = tokio::time::sleep_until(wake.into()) => continue,
            _ = tokio::time::sleep_until(stop_at.into()), if uploads_done => {
                timed_out = true;
                break;
            }
            _ = &mut ctrl_c => {
                interrupted = true;
                break;
            }
        };
        match event {
            Event::Uploaded(i, result) => {
                let u = &mut units[i];
                match result {
                    Ok(acc) => {
                        counts.uploaded += 1;
                        if acc.replayed {
                            counts.replayed += 1;
                        }
                        u.replayed = acc.replayed;
                        u.resubmitted = acc.resubmitted;
                        u.status = "NEW".into();
                        let what = if acc.resubmitted {
                            "resubmit"
                        } else if acc.replayed {
                            "replayed"
                        } else {
                            "uploaded"
                        };
                        progress.event(
                            format!(
                                "{what:<9} {}  job {}{}",
                                u.label,
                                acc.job_id,
                                if acc.replayed {
                                    " (created by an earlier run)"
                                } else {
                                    ""
                                }
                            ),
                            false,
                        );
                        u.job_id = Some(acc.job_id);
                        if args.wait {
                            counts.processing += 1;
                            due.push(Reverse((Instant::now() + u.poll_every, i)));
                        } else {
                            counts.settled += 1;
                        }
                    }
                    Err(f) => {
                        counts.settled += 1;
                        counts.docs_failed += u.sources.len() as u64;
                        progress.event(format!("{} {}  {}", s.red("failed   "), u.label, f), true);
                        if is_fatal(&f) && fatal.is_none() {
                            fatal = Some(f.clone());
                        }
                        u.error = Some(f);
                    }
                }
            }
            Event::Polled(i, result) => {
                let u = &mut units[i];
                match result {
                    Ok(v) => {
                        let status = v["status"].as_str().unwrap_or("").to_owned();
                        if is_final(&status) {
                            u.status = status;
                            let api = api.clone();
                            let job = u.job_id.clone().expect("has a job");
                            polls.push(Box::pin(async move {
                                Event::Finished(i, finish(api, job).await)
                            }));
                        } else {
                            if status != u.status {
                                u.status = status;
                                u.poll_every = Duration::from_millis(500);
                            } else {
                                u.poll_every = (u.poll_every * 3 / 2).min(Duration::from_secs(5));
                            }
                            due.push(Reverse((Instant::now() + u.poll_every, i)));
                        }
                    }
                    Err(f) => {
                        counts.processing = counts.processing.saturating_sub(1);
                        counts.settled += 1;
                        counts.docs_failed += u.sources.len() as u64;
                        progress.event(
                            format!(
                                "{} {}  following the job failed: {f}",
                                s.red("failed   "),
                                u.label
                            ),
                            true,
                        );
                        u.error = Some(f);
                    }
                }
            }
            Event::Finished(i, result) => {
                let u = &mut units[i];
                counts.processing = counts.processing.saturating_sub(1);
                counts.settled += 1;
                match result {
                    Ok((mut results, detail)) => {
                        let docs = results["documents"].as_array().cloned().unwrap_or_default();
                        u.docs_ok = docs
                            .iter()
                            .filter(|d| {
                                d["error"].is_null() && d["status"] == "PROCESS IMAGE SUCCESS"
                            })
                            .count() as u64;
                        // Every file sent counts: a batch that failed as a
                        // whole (a broken or refused ZIP) has no document,
                        // or one named after the upload, for all its files.
                        let sent = match &u.body {
                            Body::Bundle { entries, .. } => entries.len(),
                            Body::File(_) => 1,
                        };
                        u.docs_failed = (docs.len().max(sent) as u64).saturating_sub(u.docs_ok);
                        u.pages = docs.iter().filter_map(|d| d["pages"].as_u64()).sum();
                        u.credits = detail["credits_charged"].as_i64().unwrap_or(0);
                        if docs.is_empty() {
                            // A job that failed as a whole (e.g. invalid_zip) has no documents.
                            if let Some(obj) = results.as_object_mut() {
                                obj.insert("job_error".into(), detail["error"].clone());
                            }
                        }
                        counts.docs_ok += u.docs_ok;
                        counts.docs_failed += u.docs_failed;
                        counts.pages += u.pages;
                        counts.credits += u.credits;
                        let failed_reasons: Vec<String> = if docs.is_empty() {
                            vec![format!(
                                "{}: {}",
                                detail["error"]["code"].as_str().unwrap_or("failed"),
                                detail["error"]["message"].as_str().unwrap_or("")
                            )]
                        } else {
                            docs.iter()
                                .filter(|d| !d["error"].is_null())
                                .map(|d| {
                                    format!(
                                        "{}{}: {}",
                                        d["file_name"]
                                            .as_str()
                                            .map(|n| format!("{n}: "))
                                            .unwrap_or_default(),
                                        d["error"]["code"].as_str().unwrap_or(""),
                                        d["error"]["message"].as_str().unwrap_or("")
                                    )
                                })
                                .collect()
                        };
                        if failed_reasons.is_empty() {
                            progress.event(
                                format!(
                                    "{} {}  {}  {}",
                                    s.green("done     "),
                                    u.label,
                                    u.status,
                                    plural(u.pages, "page", "pages")
                                ),
                                false,
                            );
                        } else {
                            for r in failed_reasons {
                                progress.event(
                                    format!("{} {}  {r}", s.red("failed   "), u.label),
                                    true,
                                );
                            }
                        }
                        u.results = Some(results);
                    }
                    Err(f) => {
                        counts.docs_failed += u.sources.len() as u64;
                        progress.event(
                            format!(
                                "{} {}  fetching the results failed: {f}",
                                s.red("failed   "),
                                u.label
                            ),
                            true,
                        );
                        u.error = Some(f);
                    }
                }
            }
        }
        progress.update(&counts);
    }
    progress.finish();

    // Whatever was never sent because of a fatal error.
    if let Some(f) = &fatal {
        for u in units.iter_mut().skip(next) {
            u.error = Some(ApiFailure {
                status: None,
                code: "not_submitted".into(),
                message: format!("not submitted after an earlier error: {}", f.message),
            });
        }
    }

    let rows = rows(&units, &sources);
    let mut wrote = None;
    if let (Some(path), Some(format)) = (&args.output, format)
        && !interrupted
    {
        let data = match format {
            OutputFormat::Csv => to_csv(&rows, &statics, &fields),
            OutputFormat::Jsonl => rows.iter().map(|r| format!("{r}\n")).collect(),
        };
        write_atomically(path, data.as_bytes())?;
        wrote = Some(path.clone());
    }

    // Failures by reason, for the summary.
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &rows {
        if let Some(code) = r["error"]["code"].as_str() {
            let who = match r["file_name"].as_str() {
                Some(n) if r["source"].as_str().is_some_and(|s| !s.ends_with(n)) => {
                    format!("{} ({n})", r["source"].as_str().unwrap_or(""))
                }
                _ => r["source"].as_str().unwrap_or("").to_owned(),
            };
            reasons.entry(code.to_owned()).or_default().push(format!(
                "{who}: {}",
                r["error"]["message"].as_str().unwrap_or("")
            ));
        } else if args.wait && r["status"] != "PROCESS IMAGE SUCCESS" && !interrupted && !timed_out
        {
            reasons
                .entry(r["status"].as_str().unwrap_or("failed").to_lowercase())
                .or_default()
                .push(r["source"].as_str().unwrap_or("").to_owned());
        }
    }
    let unfinished: Vec<&Unit> = units
        .iter()
        .filter(|u| u.job_id.is_some() && !u.settled())
        .collect();
    let submit_failed = units.iter().filter(|u| u.job_id.is_none()).count() as u64;
    let any_failed = !reasons.is_empty() || submit_failed > 0;

    if out.json {
        let jobs: Vec<Value> = units
            .iter()
            .map(|u| {
                json!({
                    "label": u.label,
                    "sources": u.sources.iter().map(|&i| sources[i].display.clone()).collect::<Vec<_>>(),
                    "job_id": u.job_id,
                    "idempotency_key": u.key,
                    "replayed": u.replayed,
                    "resubmitted": u.resubmitted,
                    "status": if u.status.is_empty() { Value::Null } else { Value::String(u.status.clone()) },
                    "error": u.error.as_ref().map(|f| json!({"code": f.code, "message": f.message, "http_status": f.status})),
                    "pages": u.pages,
                    "credits": u.credits,
                })
            })
            .collect();
        let mut report = json!({
            "summary": {
                "files": sources.len(),
                "jobs": units.len(),
                "created": counts.uploaded - counts.replayed,
                "replayed": counts.replayed,
                "not_submitted": submit_failed,
                "documents_succeeded": counts.docs_ok,
                "documents_failed": counts.docs_failed,
                "unfinished": unfinished.len(),
                "pages": counts.pages,
                "credits": counts.credits,
                "interrupted": interrupted,
                "timed_out": timed_out,
                "output": wrote,
                "seconds": started.elapsed().as_secs_f64(),
            },
            "failures": reasons.iter().map(|(code, who)| json!({"code": code, "count": who.len(), "documents": who})).collect::<Vec<_>>(),
            "jobs": jobs,
        });
        if args.wait {
            report["documents"] = Value::Array(rows.clone());
        }
        out.json_value(&report);
    } else {
        for u in &units {
            if let Some(job) = &u.job_id {
                let status = if u.status.is_empty() {
                    "NEW"
                } else {
                    u.status.as_str()
                };
                out.line(format!("{job}\t{status}\t{}", u.label));
            }
        }
    }
    // The summary for people, on stderr (with --json too).
    {
        let mut summary = format!(
            "{} → {} ({} created, {} replayed",
            plural(sources.len() as u64, "file", "files"),
            plural(counts.uploaded, "job", "jobs"),
            counts.uploaded - counts.replayed,
            counts.replayed
        );
        if submit_failed > 0 {
            summary.push_str(&format!(
                ", {}",
                s.red(&format!("{submit_failed} not submitted"))
            ));
        }
        summary.push(')');
        if args.wait {
            summary.push_str(&format!(
                " · documents: {} done, {} · {} · {}",
                counts.docs_ok,
                if counts.docs_failed > 0 {
                    s.red(&format!("{} failed", counts.docs_failed))
                } else {
                    "0 failed".to_owned()
                },
                plural(counts.pages, "page", "pages"),
                plural(counts.credits.max(0) as u64, "credit", "credits")
            ));
        }
        summary.push_str(&format!(" · {:.1} s", started.elapsed().as_secs_f64()));
        out.note(s.bold(&summary));
        if !reasons.is_empty() {
            out.note(s.bold("Failures by reason:"));
            for (code, who) in &reasons {
                out.note(format!("  {} ×{}", s.red(code), who.len()));
                for w in who.iter().take(5) {
                    out.note(format!("    {w}"));
                }
                if who.len() > 5 {
                    out.note(format!("    … and {} more", who.len() - 5));
                }
            }
        }
        if let Some(p) = &wrote {
            out.note(format!(
                "Results written to {} ({}).",
                p.display(),
                plural(rows.len() as u64, "row", "rows")
            ));
        }
        if !args.wait && counts.uploaded > 0 && !out.json {
            out.note(s.dim("Follow a job with `paperhook status JOB_ID --wait`; fetch its results with `paperhook results JOB_ID`."));
        }
    }

    if interrupted {
        return Err(CliError::new(format!(
            "interrupted: {} of {} created",
            plural(counts.uploaded, "job", "jobs"),
            units.len()
        ))
        .hint("run the same command again to resume (within the server's idempotency window, 24 hours by default): jobs already created are found by their Idempotency-Key, not submitted twice")
        .exit(EXIT_INTERRUPTED));
    }
    if let Some(f) = fatal {
        return Err(crate::client::explain(&api.base, f).exit(EXIT_FAILED_DOCUMENTS));
    }
    if timed_out {
        return Err(CliError::new(format!(
            "gave up waiting after {} s: {} still running",
            args.timeout,
            plural(unfinished.len() as u64, "job is", "jobs are")
        ))
        .hint("run the same command again to keep following them (nothing is submitted twice)")
        .exit(EXIT_FAILED_DOCUMENTS));
    }
    if any_failed {
        return Err(CliError::new(format!(
            "{} failed",
            plural(counts.docs_failed.max(submit_failed), "document", "documents")
        ))
        .hint(if args.retry_failed {
            "see the reasons above; fix the documents or the template and submit them again"
        } else if args.zip {
            // --retry-failed would send whole batches again, the files
            // that succeeded included: single files have keys of their own.
            "see the reasons above; after fixing the cause, submit the failed files again without --zip"
        } else {
            "see the reasons above; after fixing the cause, re-run with --retry-failed to submit the failed files again"
        })
        .exit(EXIT_FAILED_DOCUMENTS));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statics() {
        let m = parse_statics(&[
            "company=Acme Corp".into(),
            "batch:=7".into(),
            "tags:=[\"a\"]".into(),
            "eq=a=b".into(),
        ])
        .unwrap();
        assert_eq!(m["company"], "Acme Corp");
        assert_eq!(m["batch"], 7);
        assert_eq!(m["tags"], json!(["a"]));
        assert_eq!(m["eq"], "a=b");
        assert!(parse_statics(&["nokey".into()]).is_err());
        assert!(parse_statics(&["=x".into()]).is_err());
        assert!(parse_statics(&["n:=nope".into()]).is_err());
    }

    #[test]
    fn keys_are_deterministic_and_distinct() {
        let a = parse_statics(&["a=1".into(), "b=2".into()]).unwrap();
        let b = parse_statics(&["b=2".into(), "a=1".into()]).unwrap();
        let k = idempotency_key("t", "h", &a);
        assert_eq!(k, idempotency_key("t", "h", &b));
        assert_ne!(k, idempotency_key("t2", "h", &a));
        assert_ne!(k, idempotency_key("t", "h2", &a));
        assert_ne!(k, idempotency_key("t", "h", &Map::new()));
        assert!(k.len() <= 255 && k.is_ascii());
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"%PDF-1.4"), Some("pdf"));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some("png"));
        assert_eq!(sniff(b"PK\x03\x04"), Some("zip"));
        assert_eq!(sniff(b"hello"), None);
    }

    #[test]
    fn csv_columns() {
        let rows = vec![json!({
            "source": "a,b.pdf", "job_id": "j", "index": 0, "file_name": "a,b.pdf",
            "status": "PROCESS IMAGE SUCCESS", "pages": 1,
            "result": {"total": 1.5, "items": [{"q": 1}], "pages": "3 of 3",
                       "note": "=HYPERLINK(\"http://x\")"},
            "error": null,
            "static_values": {"company": "Acme", "status": "urgent"}
        })];
        let statics = parse_statics(&["company=Acme".into(), "status=urgent".into()]).unwrap();
        let fields = ["total", "missing", "pages", "note"].map(str::to_owned);
        let csv = to_csv(&rows, &statics, &fields);
        let mut lines = csv.split("\r\n");
        // Names already taken get a prefix, as in the API's CSV.
        assert_eq!(
            lines.next().unwrap(),
            "source,job_id,index,file_name,status,pages,error_code,error_message,\
             company,static_values.status,total,missing,result.pages,note,items"
        );
        // A formula in extracted text is defused; a negative number is not.
        assert_eq!(
            lines.next().unwrap(),
            "\"a,b.pdf\",j,0,\"a,b.pdf\",PROCESS IMAGE SUCCESS,1,,,Acme,urgent,1.5,,3 of 3,\
             \"'=HYPERLINK(\"\"http://x\"\")\",\"[{\"\"q\"\":1}]\""
        );
    }

    const MIB_40: u64 = 40 * 1024 * 1024;

    fn source(name: &str, hash: &str, zip: bool) -> Source {
        Source {
            path: PathBuf::from(name),
            display: name.into(),
            hash: hash.into(),
            size: 10,
            is_zip: zip,
        }
    }

    #[test]
    fn plans() {
        let sources = vec![
            source("a/x.pdf", "h1", false),
            source("b/x.pdf", "h2", false),
            source("c.pdf", "h1", false),
            source("d.zip", "h3", true),
        ];
        let m = Map::new();
        let units = plan(&sources, "t", &m, false, 500, MIB_40);
        assert_eq!(units.len(), 3);
        assert_eq!(units[0].sources, vec![0, 2]);
        let zipped = plan(&sources, "t", &m, true, 1, MIB_40);
        // d.zip as it is, then batches of one distinct file each.
        assert_eq!(zipped.len(), 3);
        match &zipped[1].body {
            Body::Bundle { entries, .. } => assert_eq!(entries, &vec![("x.pdf".to_owned(), 0)]),
            _ => panic!("a bundle"),
        }
        assert_eq!(zipped[1].sources, vec![0, 2]);
        let one = plan(&sources, "t", &m, true, 500, MIB_40);
        match &one[1].body {
            Body::Bundle { entries, .. } => assert_eq!(
                entries,
                &vec![("x.pdf".to_owned(), 0), ("0001-x.pdf".to_owned(), 1)]
            ),
            _ => panic!("a bundle"),
        }
        // The same inputs always give the same keys.
        let again = plan(&sources, "t", &m, true, 500, MIB_40);
        assert_eq!(one[1].key, again[1].key);
        // A numbered name a file of the batch already has is skipped.
        let taken = vec![
            source("a/0002-scan.pdf", "h1", false),
            source("b/scan.pdf", "h2", false),
            source("c/scan.pdf", "h3", false),
        ];
        match &plan(&taken, "t", &m, true, 500, MIB_40)[0].body {
            Body::Bundle { entries, .. } => assert_eq!(
                entries.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                ["0002-scan.pdf", "scan.pdf", "0003-scan.pdf"]
            ),
            _ => panic!("a bundle"),
        }
    }

    #[test]
    fn zip_batches_stay_under_the_byte_limit() {
        // Files of 10 bytes: 25 bytes hold two of them.
        let sources: Vec<Source> = (0..5)
            .map(|n| source(&format!("{n}.pdf"), &format!("h{n}"), false))
            .collect();
        let m = Map::new();
        let sizes = |units: &[Unit]| units.iter().map(|u| u.sources.len()).collect::<Vec<_>>();
        assert_eq!(sizes(&plan(&sources, "t", &m, true, 500, 25)), [2, 2, 1]);
        assert_eq!(sizes(&plan(&sources, "t", &m, true, 500, 20)), [2, 2, 1]);
        assert_eq!(
            sizes(&plan(&sources, "t", &m, true, 500, 19)),
            [1, 1, 1, 1, 1]
        );
        // A file over the limit goes alone; the default takes all five.
        assert_eq!(
            sizes(&plan(&sources, "t", &m, true, 500, 1)),
            [1, 1, 1, 1, 1]
        );
        assert_eq!(sizes(&plan(&sources, "t", &m, true, 500, MIB_40)), [5]);
        // With the file limit too, the stricter one cuts.
        assert_eq!(
            sizes(&plan(&sources, "t", &m, true, 1, 25)),
            [1, 1, 1, 1, 1]
        );
    }
}
