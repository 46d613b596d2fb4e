//! Standard Webhooks verification, a local receiver that verifies and
//! pretty-prints deliveries, and the check of a saved request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::args::{ListenArgs, ResendArgs, VerifyArgs, WebhooksCommand};
use crate::client::{Api, Retry};
use crate::output::{Out, plural};
use crate::{CliError, EXIT_FAILED_DOCUMENTS, Result, config};

/// The largest body the receiver reads.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Connections the receiver serves at once; more wait until one ends.
const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a client may take to send a request's body.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a request does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the secret is not a whsec_ base64 string")]
    BadSecret,
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp {0:?} is not a Unix timestamp")]
    BadTimestamp(String),
    #[error("webhook-timestamp is {0} s in the past (tolerance {1} s): an old or replayed request")]
    TooOld(i64, u64),
    #[error("webhook-timestamp is {0} s in the future (tolerance {1} s): check the clocks")]
    TooNew(i64, u64),
    #[error(
        "no v1 signature in webhook-signature matches: wrong secret, or the body or headers were changed"
    )]
    NoMatch,
}

/// Decodes a `whsec_` secret into its HMAC key.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, VerifyError> {
    let secret = secret.trim();
    let key = B64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| VerifyError::BadSecret)?;
    if key.is_empty() {
        return Err(VerifyError::BadSecret);
    }
    Ok(key)
}

/// `v1,<base64 HMAC-SHA256 of id.timestamp.body>` (what the API signs with).
pub fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Verifies a delivery: the timestamp within `tolerance` seconds of `now`
/// (unless `tolerance` is None) and one of the space-separated `v1,`
/// signatures equal, compared in constant time, to the expected one.
pub fn verify(
    secret: &str,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
    now: i64,
    tolerance: Option<u64>,
) -> Result<(), VerifyError> {
    let key = secret_key(secret)?;
    let id = header("webhook-id").ok_or(VerifyError::MissingHeader("webhook-id"))?;
    let ts_text =
        header("webhook-timestamp").ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
    let signatures =
        header("webhook-signature").ok_or(VerifyError::MissingHeader("webhook-signature"))?;
    let ts_text = ts_text.trim().to_owned();
    let ts: i64 = ts_text
        .parse()
        .map_err(|_| VerifyError::BadTimestamp(ts_text.clone()))?;
    if let Some(tol) = tolerance {
        // A timestamp so far off that its age does not fit is no timestamp
        // (`now - ts` would overflow).
        let age = now
            .checked_sub(ts)
            .ok_or_else(|| VerifyError::BadTimestamp(ts_text.clone()))?;
        let limit = i64::try_from(tol).unwrap_or(i64::MAX);
        if age > limit {
            return Err(VerifyError::TooOld(age, tol));
        }
        if age < -limit {
            return Err(VerifyError::TooNew(age.saturating_neg(), tol));
        }
    }
    let expected = sign(&key, id.trim(), &ts_text, body);
    let mut ok = subtle::Choice::from(0u8);
    for candidate in signatures.split_whitespace() {
        let Some(b64) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(given) = B64.decode(b64) else {
            continue;
        };
        // Lengths are public (32 bytes); the bytes are compared in constant time.
        if given.len() == expected.len() {
            ok |= given.ct_eq(&expected);
        }
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

pub async fn run(cmd: WebhooksCommand, out: &Out) -> Result<u8> {
    match cmd {
        WebhooksCommand::Listen(args) => listen(args, out).await,
        WebhooksCommand::Verify(args) => verify_saved(args, out),
        WebhooksCommand::Resend(args) => resend(args, out).await,
    }
}

/// The API queues at most this many a call.
const RESEND_PER_CALL: u64 = 1000;

async fn resend(args: ResendArgs, out: &Out) -> Result<u8> {
    let api = Api::new(&config::credentials()?)?;
    let state = if args.gone { "gone" } else { "failed" };
    let mut body = json!({"delivery": state, "limit": RESEND_PER_CALL});
    if let Some(t) = &args.template {
        body["template_id"] = json!(crate::commands::uuid(t, "template")?);
    }
    let (mut queued, mut jobs) = (0, Vec::new());
    // Full answers mean there may be more; 100 calls at most, so webhooks
    // failing again at once cannot keep it going.
    for _ in 0..100 {
        let got: Value = api
            .json("resend", Retry::Unsafe, || {
                api.request(reqwest::Method::POST, "/v1/jobs/redeliver")
                    .json(&body)
            })
            .await
            .map_err(|f| api.explain(f))?;
        let n = got["queued"].as_u64().unwrap_or(0);
        queued += n;
        jobs.extend(got["job_ids"].as_array().cloned().unwrap_or_default());
        if n < RESEND_PER_CALL {
            break;
        }
    }
    if out.json {
        out.json_value(&json!({"delivery": state, "queued": queued, "job_ids": jobs}));
    } else if queued == 0 {
        let which = if args.gone {
            "refused (410 Gone)"
        } else {
            "failed"
        };
        out.note(format!("No {which} webhooks to send again."));
    } else {
        out.note(format!(
            "Queued {} of {} to be sent again.",
            plural(queued, "webhook", "webhooks"),
            plural(jobs.len() as u64, "job", "jobs"),
        ));
        for job in &jobs {
            out.line(job.as_str().unwrap_or_default());
        }
    }
    Ok(0)
}

/// Reads a headers file: a JSON object, or `Name: value` lines (a request
/// or status line and anything after the first blank line are skipped).
pub fn parse_headers(text: &str) -> Result<BTreeMap<String, String>> {
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if trimmed.starts_with('{') {
        let v: Value = serde_json::from_str(trimmed)
            .map_err(|e| CliError::new(format!("the headers file is not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| CliError::new("the headers JSON is not an object"))?;
        return Ok(obj
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Array(a) => a
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" "),
                    other => other.to_string(),
                };
                (k.to_ascii_lowercase(), value)
            })
            .collect());
    }
    let mut headers = BTreeMap::new();
    for line in trimmed.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.contains(' ') {
            // "POST /hook HTTP/1.1" has no colon before a space-free name.
            continue;
        }
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    Ok(headers)
}

fn verify_saved(args: VerifyArgs, out: &Out) -> Result<u8> {
    let headers_text = std::fs::read_to_string(&args.headers)
        .map_err(|e| CliError::new(format!("reading {}: {e}", args.headers.display())))?;
    let headers = parse_headers(&headers_text)?;
    let body = std::fs::read(&args.body)
        .map_err(|e| CliError::new(format!("reading {}: {e}", args.body.display())))?;
    let tolerance = (!args.ignore_timestamp).then_some(args.tolerance);
    let now = chrono::Utc::now().timestamp();
    let result = verify(
        &args.secret,
        |n| headers.get(n).cloned(),
        &body,
        now,
        tolerance,
    );
    if out.json {
        out.json_value(&json!({
            "verified": result.is_ok(),
            "error": result.as_ref().err().map(ToString::to_string),
            "webhook_id": headers.get("webhook-id"),
            "webhook_timestamp": headers.get("webhook-timestamp"),
        }));
    }
    match result {
        Ok(()) => {
            if !out.json {
                out.line(format!(
                    "{} signature of {} verified",
                    out.out.green("✓"),
                    headers.get("webhook-id").map_or("?", String::as_str)
                ));
            }
            Ok(0)
        }
        Err(VerifyError::BadSecret) => Err(CliError::new(VerifyError::BadSecret.to_string())
            .hint("copy the secret from `paperhook templates secret TEMPLATE_ID`")),
        Err(e) => {
            let hint = match &e {
                VerifyError::TooOld(..) => {
                    "a saved request is old by nature: add --ignore-timestamp to check only the signature"
                }
                VerifyError::NoMatch => {
                    "the body must be byte for byte what was received (no reformatting, no trailing newline added); the secret must be the template's current one"
                }
                _ => "the headers file needs webhook-id, webhook-timestamp and webhook-signature",
            };
            if out.json {
                Ok(EXIT_FAILED_DOCUMENTS)
            } else {
                Err(CliError::new(format!("not verified: {e}"))
                    .hint(hint)
                    .exit(EXIT_FAILED_DOCUMENTS))
            }
        }
    }
}

struct Listener {
    secret: Option<String>,
    tolerance: u64,
    status: StatusCode,
    save: Option<PathBuf>,
    /// The highest number of a request saved in `save` before this run:
    /// this run's go on from it, so a second run adds to the first's.
    saved_before: u64,
    out: Out,
    seen: AtomicU64,
    /// Connections being served (the last answers are flushed before stopping).
    active: AtomicU64,
    count: Option<u64>,
    done: Notify,
    /// Serialises printing so deliveries do not interleave.
    print: tokio::sync::Mutex<()>,
}

/// The highest `NNNN` of the `NNNN.headers` / `NNNN.body` files in `dir`.
fn highest_saved(dir: &std::path::Path) -> std::io::Result<u64> {
    let mut highest = 0;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = std::path::Path::new(&name);
        if matches!(
            name.extension().and_then(|e| e.to_str()),
            Some("headers" | "body")
        ) && let Some(n) = name
            .file_stem()
            .and_then(|s| s.to_str()?.parse::<u64>().ok())
        {
            highest = highest.max(n);
        }
    }
    Ok(highest)
}

async fn listen(args: ListenArgs, out: &Out) -> Result<u8> {
    let secret = match (&args.secret, &args.template) {
        (Some(s), _) => Some(s.trim().to_owned()),
        (None, Some(template)) => {
            let api = Api::new(&config::credentials()?)?;
            let id = uuid::Uuid::parse_str(template.trim()).map_err(|_| {
                CliError::new(format!("{template:?} is not a template id (a UUID)"))
            })?;
            let v: Value = api
                .get(&format!("/v1/templates/{id}/webhook-secret"))
                .await?;
            v["secret"].as_str().map(str::to_owned)
        }
        (None, None) => None,
    };
    if let Some(s) = &secret {
        secret_key(s).map_err(|_| {
            CliError::new("--secret is not a whsec_ base64 string")
                .hint("copy it from `paperhook templates secret TEMPLATE_ID`")
        })?;
    }
    let saved_before = match &args.save {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::new(format!("creating {}: {e}", dir.display())))?;
            highest_saved(dir)
                .map_err(|e| CliError::new(format!("reading {}: {e}", dir.display())))?
        }
        None => 0,
    };
    let addr = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| {
        CliError::new(format!("cannot listen on {addr}: {e}"))
            .hint("pick another --port (0 picks a free one)")
    })?;
    let local: SocketAddr = listener.local_addr()?;
    let status = StatusCode::from_u16(args.status)
        .map_err(|_| CliError::new(format!("{} is not an HTTP status", args.status)))?;
    let state = Arc::new(Listener {
        secret: secret.clone(),
        tolerance: args.tolerance,
        status,
        save: args.save.clone(),
        saved_before,
        out: out.clone(),
        seen: AtomicU64::new(0),
        active: AtomicU64::new(0),
        count: args.count,
        done: Notify::new(),
        print: tokio::sync::Mutex::new(()),
    });
    let s = &out.err;
    out.note(format!(
        "Listening on {} {}",
        s.bold(&format!("http://{local}/")),
        s.dim(&match &secret {
            Some(_) => format!(
                "(verifying signatures, timestamps within {} s; answering {})",
                args.tolerance, args.status
            ),
            None => format!(
                "(no --secret: signatures are NOT verified; answering {})",
                args.status
            ),
        })
    ));
    out.note(s.dim("Press Ctrl-C to stop."));
    let accept = {
        let state = state.clone();
        let warn_out = state.out.clone();
        accept_capped(
            listener,
            MAX_CONNECTIONS,
            move |e| warn_out.warn(format!("accepting a connection failed: {e}")),
            move |stream, peer| {
                let state = state.clone();
                state.active.fetch_add(1, Ordering::SeqCst);
                async move {
                    let conn_state = state.clone();
                    let svc = service_fn(move |req| {
                        let state = conn_state.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&state, req, peer).await) }
                    });
                    let _ = connection_builder(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    state.active.fetch_sub(1, Ordering::SeqCst);
                }
            },
        )
    };
    tokio::select! {
        _ = accept => {}
        _ = tokio::signal::ctrl_c() => {
            out.note(format!("Stopped after {} requests.", state.seen.load(Ordering::SeqCst)));
        }
        _ = state.done.notified() => {
            // The last answers close their connections: wait for them to be sent.
            let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while state.active.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < until {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    Ok(0)
}

/// Accepts connections and serves each with `serve` in a task of its own,
/// at most `max` at once: the others wait in the system's queue of the
/// listening socket until one ends (a client opening connections without
/// end cannot take every file descriptor and task).
async fn accept_capped<S, F>(
    listener: tokio::net::TcpListener,
    max: usize,
    warn: impl Fn(std::io::Error),
    serve: S,
) where
    S: Fn(tokio::net::TcpStream, SocketAddr) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    loop {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn(e);
                // Out of file descriptors, say: not in a busy loop.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let served = serve(stream, peer);
        tokio::spawn(async move {
            served.await;
            drop(slot);
        });
    }
}

/// HTTP/1 as the receiver serves it: a client must send a request's
/// headers within `header_read_timeout` (a connection opened and left
/// silent, or trickling its headers, is closed and frees its slot).
fn connection_builder(header_read_timeout: std::time::Duration) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    res
}

async fn handle(
    state: &Listener,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let received_at = chrono::Utc::now();
    let method = req.method().to_string();
    let path = req.uri().to_string();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|old| {
                old.push(' ');
                old.push_str(&v);
            })
            .or_insert(v);
    }
    let body = match tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": format!("the body could not be read: {e}")}),
            );
        }
        Err(_) => {
            return reply(
                StatusCode::REQUEST_TIMEOUT,
                json!({"error": format!("the body did not arrive within {} s", BODY_READ_TIMEOUT.as_secs())}),
            );
        }
    };
    let n = state.seen.fetch_add(1, Ordering::SeqCst) + 1;
    // The number it is shown and saved under: a run saving into a folder
    // goes on from the requests saved there before.
    let number = state.saved_before + n;
    let verdict = state.secret.as_ref().map(|secret| {
        verify(
            secret,
            |name| headers.get(name).cloned(),
            &body,
            received_at.timestamp(),
            Some(state.tolerance),
        )
    });
    let status = match &verdict {
        Some(Err(_)) => StatusCode::UNAUTHORIZED,
        _ => state.status,
    };
    if let Some(dir) = &state.save {
        let base = dir.join(format!("{number:04}"));
        let mut head = format!("{method} {path} HTTP/1.1\n");
        for (k, v) in &headers {
            head.push_str(&format!("{k}: {v}\n"));
        }
        // Never over an earlier capture (another listener saving here:
        // this request is then only printed, with a warning).
        let write_new = |path: PathBuf, data: &[u8]| {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .and_then(|mut f| f.write_all(data))
        };
        if let Err(e) = write_new(base.with_extension("headers"), head.as_bytes())
            .and_then(|()| write_new(base.with_extension("body"), &body))
        {
            state
                .out
                .warn(format!("saving request {number} failed: {e}"));
        }
    }
    {
        let _guard = state.print.lock().await;
        print_delivery(
            state,
            number,
            &method,
            &path,
            peer,
            &headers,
            &body,
            &verdict,
            status,
            received_at,
        );
    }
    let answer = match &verdict {
        Some(Err(e)) => json!({"verified": false, "error": e.to_string()}),
        Some(Ok(())) => json!({"verified": true}),
        None => json!({"verified": null}),
    };
    let mut res = reply(status, answer);
    if state.count.is_some_and(|c| n >= c) {
        res.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        state.done.notify_one();
    }
    res
}

#[allow(clippy::too_many_arguments)]
fn print_delivery(
    state: &Listener,
    n: u64,
    method: &str,
    path: &str,
    peer: SocketAddr,
    headers: &BTreeMap<String, String>,
    body: &[u8],
    verdict: &Option<Result<(), VerifyError>>,
    status: StatusCode,
    received_at: chrono::DateTime<chrono::Utc>,
) {
    let out = &state.out;
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if out.json {
        out.line(
            json!({
                "n": n,
                "received_at": received_at.to_rfc3339(),
                "method": method,
                "path": path,
                "peer": peer.to_string(),
                "webhook_id": headers.get("webhook-id"),
                "webhook_timestamp": headers.get("webhook-timestamp"),
                "verified": verdict.as_ref().map(Result::is_ok),
                "error": verdict.as_ref().and_then(|v| v.as_ref().err()).map(ToString::to_string),
                "answered": status.as_u16(),
                "headers": headers,
                "body": parsed.clone().unwrap_or_else(|| Value::String(String::from_utf8_lossy(body).into_owned())),
            })
            .to_string(),
        );
        return;
    }
    let s = &out.out;
    let check = match verdict {
        Some(Ok(())) => s.green("✓ verified"),
        Some(Err(e)) => s.red(&format!("✗ rejected: {e}")),
        None => s.yellow("? not verified (no --secret)"),
    };
    out.line(format!(
        "{} {} {} {}  {}  → {}",
        s.dim(&received_at.format("%H:%M:%S").to_string()),
        s.bold(&format!("#{n}")),
        method,
        path,
        check,
        status.as_u16()
    ));
    if let Some(id) = headers.get("webhook-id") {
        out.line(format!("  {} {id}", s.dim("webhook-id")));
    }
    match &parsed {
        Some(v) if v.get("job_id").is_some() => {
            let doc = &v["document"];
            let st = v["status"].as_str().unwrap_or("");
            out.line(format!(
                "  job {}  document {} {}  {}{}",
                v["job_id"].as_str().unwrap_or(""),
                doc["index"],
                doc["file_name"].as_str().unwrap_or("-"),
                s.status(st),
                doc["pages"]
                    .as_u64()
                    .map(|p| format!("  {}", crate::output::plural(p, "page", "pages")))
                    .unwrap_or_default()
            ));
            if let Some(code) = v["error"]["code"].as_str() {
                out.line(format!(
                    "  {} {code}: {}",
                    s.red("error"),
                    v["error"]["message"].as_str().unwrap_or("")
                ));
            }
            if let Some(sv) = v
                .get("static_values")
                .filter(|x| x.as_object().is_some_and(|o| !o.is_empty()))
            {
                out.line(format!("  static_values {sv}"));
            }
            if let Some(result) = v.get("result") {
                let pretty = serde_json::to_string_pretty(result).unwrap_or_default();
                for line in pretty.lines() {
                    out.line(format!("  {line}"));
                }
            }
        }
        Some(v) => {
            let pretty = serde_json::to_string_pretty(v).unwrap_or_default();
            for line in pretty.lines() {
                out.line(format!("  {line}"));
            }
        }
        None => {
            let text = String::from_utf8_lossy(body);
            let shown: String = text.chars().take(2000).collect();
            out.line(format!("  {shown}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    // The Standard Webhooks specification's known answer (also core's test).
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(sig: &str, ts: i64) -> impl Fn(&str) -> Option<String> {
        let sig = sig.to_owned();
        move |name| match name {
            "webhook-id" => Some(ID.to_owned()),
            "webhook-timestamp" => Some(ts.to_string()),
            "webhook-signature" => Some(sig.clone()),
            _ => None,
        }
    }

    #[test]
    fn known_answer_verifies() {
        let key = secret_key(SECRET).unwrap();
        assert_eq!(
            format!("v1,{}", B64.encode(sign(&key, ID, &TS.to_string(), BODY))),
            SIG
        );
        assert_eq!(
            verify(SECRET, headers(SIG, TS), BODY, TS + 10, Some(300)),
            Ok(())
        );
        // Several signatures (during a secret rotation): any one matching is enough.
        let several = format!("v1,AAAA v1a,xyz {SIG}");
        assert_eq!(
            verify(SECRET, headers(&several, TS), BODY, TS, Some(300)),
            Ok(())
        );
    }

    #[test]
    fn tampering_and_stale_timestamps_are_rejected() {
        assert_eq!(
            verify(
                SECRET,
                headers(SIG, TS),
                br#"{"test": 2432232315}"#,
                TS,
                Some(300)
            ),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(
                "whsec_AAAAAAAAAAAAAAAAAAAAAAAA",
                headers(SIG, TS),
                BODY,
                TS,
                Some(300)
            ),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(SECRET, headers(SIG, TS), BODY, TS + 301, Some(300)),
            Err(VerifyError::TooOld(301, 300))
        );
        assert_eq!(
            verify(SECRET, headers(SIG, TS), BODY, TS - 301, Some(300)),
            Err(VerifyError::TooNew(301, 300))
        );
        // The signature covers the timestamp: moving it breaks the signature.
        assert_eq!(
            verify(SECRET, headers(SIG, TS + 1), BODY, TS, None),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(SECRET, headers(SIG, TS), BODY, TS + 10_000, None),
            Ok(())
        );
        assert_eq!(
            verify(SECRET, |_| None, BODY, TS, None),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
        assert_eq!(
            verify("whsec_!!!", headers(SIG, TS), BODY, TS, None),
            Err(VerifyError::BadSecret)
        );
    }

    #[test]
    fn timestamps_at_the_ends_of_the_range_are_rejected_without_overflowing() {
        // `now - i64::MIN` overflows: a bad timestamp, not a panic.
        assert_eq!(
            verify(SECRET, headers(SIG, i64::MIN), BODY, TS, Some(300)),
            Err(VerifyError::BadTimestamp(i64::MIN.to_string()))
        );
        assert_eq!(
            verify(SECRET, headers(SIG, i64::MAX), BODY, TS, Some(300)),
            Err(VerifyError::TooNew(i64::MAX - TS, 300))
        );
        // Past the clock's start, `now - i64::MAX` overflows the other way.
        assert_eq!(
            verify(SECRET, headers(SIG, i64::MAX), BODY, -2, Some(300)),
            Err(VerifyError::BadTimestamp(i64::MAX.to_string()))
        );
        // A tolerance past i64::MAX is no limit (it was read as -1).
        assert_eq!(
            verify(SECRET, headers(SIG, TS), BODY, TS + 10_000, Some(u64::MAX)),
            Ok(())
        );
    }

    /// With one slot, a second connection is served only once the first ends.
    #[tokio::test]
    async fn the_receiver_serves_a_capped_number_of_connections_at_once() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (started, mut starts) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(accept_capped(
            listener,
            1,
            |e| panic!("{e}"),
            move |mut stream, _| {
                let started = started.clone();
                async move {
                    started.send(()).unwrap();
                    // Served until the client closes.
                    let _ = stream.read_to_end(&mut Vec::new()).await;
                }
            },
        ));
        let first = tokio::net::TcpStream::connect(addr).await.unwrap();
        starts.recv().await.unwrap();
        let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(300), starts.recv()).await;
        assert!(waiting.is_err(), "served beyond the cap");
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(10), starts.recv())
            .await
            .expect("served once the first connection ended")
            .unwrap();
    }

    /// A client that never finishes its headers is disconnected.
    #[tokio::test]
    async fn a_connection_slow_to_send_its_headers_is_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(reply(StatusCode::OK, json!({})))
            });
            let _ = connection_builder(std::time::Duration::from_millis(200))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_to_end(&mut answer),
        )
        .await
        .expect("the server closed the connection")
        .ok();
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }

    #[test]
    fn headers_files() {
        let h = parse_headers(
            "POST /hook HTTP/1.1\r\nWebhook-Id: msg_1\r\nwebhook-timestamp: 5\r\nContent-Type: application/json\r\n\r\n{\"a\":1}",
        )
        .unwrap();
        assert_eq!(h["webhook-id"], "msg_1");
        assert_eq!(h["webhook-timestamp"], "5");
        assert_eq!(h.len(), 3);
        let h = parse_headers(r#"{"Webhook-Id": "msg_2", "webhook-timestamp": 7}"#).unwrap();
        assert_eq!(h["webhook-id"], "msg_2");
        assert_eq!(h["webhook-timestamp"], "7");
    }
}
