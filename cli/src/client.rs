//! The HTTP client of the public API: the `x-auth` key, retries on 429,
//! 5xx and connection errors (honouring Retry-After), and API errors turned
//! into messages with hints.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::Credentials;
use crate::{CliError, Result};

/// When a request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads and idempotent writes: on 429, 5xx and any transport error.
    Safe,
    /// Writes that must not happen twice: only when the server said it did
    /// nothing (429) or the connection was never made.
    Unsafe,
}

/// One retry about to happen, for progress displays.
#[derive(Debug, Clone)]
pub struct RetryEvent {
    pub what: String,
    pub reason: String,
    pub delay: Duration,
}

pub type RetryHook = Arc<dyn Fn(&RetryEvent) + Send + Sync>;

/// An error answer of the API: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "{} ({s} {})", self.message, self.code),
            None => write!(f, "{}", self.message),
        }
    }
}

/// Retries of a long-running command (`submit`, `status --wait`): with
/// [`backoff`], some 90 s, which outlast a restart of the API.
pub const LONG_RETRIES: u32 = 8;

#[derive(Clone)]
pub struct Api {
    pub base: String,
    key: String,
    http: reqwest::Client,
    pub retries: u32,
    on_retry: Option<RetryHook>,
}

impl Api {
    pub fn new(creds: &Credentials) -> Result<Api> {
        Api::with(&creds.url, &creds.key)
    }

    pub fn with(base: &str, key: &str) -> Result<Api> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("paperhook-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                // reqwest drops the standard credential headers on a
                // redirect to another host, but not `x-auth`: only
                // redirects that keep the host (and port, or move from
                // http to https) are followed, and the key goes nowhere else.
                let within = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| same_server(first, attempt.url()));
                if within && attempt.previous().len() <= 5 {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .build()
            .map_err(|e| CliError::new(format!("building the HTTP client: {e}")))?;
        Ok(Api {
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            http,
            retries: 3,
            on_retry: None,
        })
    }

    pub fn on_retry(mut self, hook: RetryHook) -> Api {
        self.on_retry = Some(hook);
        self
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("x-auth", &self.key)
    }

    /// Sends the request `build` makes, again after 429, 5xx or a transport
    /// error while retries are left; returns the last answer (whatever its
    /// status) or the transport error.
    pub async fn send_with<F, Fut>(
        &self,
        what: &str,
        policy: Retry,
        mut build: F,
    ) -> std::result::Result<Response, ApiFailure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<RequestBuilder, ApiFailure>>,
    {
        let mut attempt = 0u32;
        loop {
            let result = build().await?.send().await;
            let (reason, after) = match result {
                Ok(res) => {
                    let status = res.status();
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS
                        || (policy == Retry::Safe && status.is_server_error());
                    if !retryable || attempt >= self.retries {
                        return Ok(res);
                    }
                    (
                        format!(
                            "{} {}",
                            status.as_u16(),
                            status.canonical_reason().unwrap_or("")
                        ),
                        retry_after(&res),
                    )
                }
                Err(e) => {
                    let retryable = policy == Retry::Safe || e.is_connect();
                    if !retryable || attempt >= self.retries {
                        return Err(transport_failure(&self.base, &e));
                    }
                    (describe_transport(&e), None)
                }
            };
            attempt += 1;
            let delay = after.unwrap_or_else(|| backoff(attempt));
            if let Some(hook) = &self.on_retry {
                hook(&RetryEvent {
                    what: what.to_owned(),
                    reason,
                    delay,
                });
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// [`send_with`] for a request that needs no async set-up.
    pub async fn send(
        &self,
        what: &str,
        policy: Retry,
        build: impl Fn() -> RequestBuilder,
    ) -> std::result::Result<Response, ApiFailure> {
        self.send_with(what, policy, || {
            let req = build();
            async move { Ok(req) }
        })
        .await
    }

    /// Sends, then decodes a 2xx JSON answer or turns the error into an ApiFailure.
    pub async fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        policy: Retry,
        build: impl Fn() -> RequestBuilder,
    ) -> std::result::Result<T, ApiFailure> {
        let res = self.send(what, policy, build).await?;
        decode(res).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(path, Retry::Safe, || self.request(Method::GET, path))
            .await
            .map_err(|f| self.explain(f))
    }

    /// An ApiFailure as a message with a hint for people.
    pub fn explain(&self, f: ApiFailure) -> CliError {
        explain(&self.base, f)
    }
}

/// Whether `to` is the server of `from`: the same host and port, or the
/// same host moving from http to https.
fn same_server(from: &reqwest::Url, to: &reqwest::Url) -> bool {
    let same_origin =
        from.scheme() == to.scheme() && from.port_or_known_default() == to.port_or_known_default();
    let upgrade = from.scheme() == "http" && to.scheme() == "https";
    from.host_str() == to.host_str() && (same_origin || upgrade)
}

/// Decodes a 2xx JSON answer, or the API's error.
pub async fn decode<T: DeserializeOwned>(res: Response) -> std::result::Result<T, ApiFailure> {
    if !res.status().is_success() {
        return Err(failure(res).await);
    }
    let status = res.status().as_u16();
    let bytes = res.bytes().await.map_err(|e| ApiFailure {
        status: Some(status),
        code: "transport".into(),
        message: format!("reading the answer failed: {e}"),
    })?;
    let bytes = if bytes.is_empty() {
        &b"null"[..]
    } else {
        &bytes[..]
    };
    serde_json::from_slice(bytes).map_err(|e| ApiFailure {
        status: Some(status),
        code: "unexpected_answer".into(),
        message: format!("the API's answer is not the expected JSON: {e}"),
    })
}

/// The error of a non-2xx answer.
pub async fn failure(res: Response) -> ApiFailure {
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_str(&text).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let code = err
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("http_error")
        .to_owned();
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let snippet: String = text.chars().take(200).collect();
            format!(
                "the server answered {} {}{}",
                status.as_u16(),
                status.canonical_reason().unwrap_or(""),
                if snippet.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", snippet.trim())
                }
            )
        });
    ApiFailure {
        status: Some(status.as_u16()),
        code,
        message,
    }
}

fn describe_transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            msg = format!("{msg}: {s}");
            source = s.source();
        }
        msg
    }
}

fn transport_failure(base: &str, e: &reqwest::Error) -> ApiFailure {
    ApiFailure {
        status: None,
        code: if e.is_connect() {
            "connect".into()
        } else if e.is_timeout() {
            "timeout".into()
        } else {
            "transport".into()
        },
        message: format!("request to {base} failed: {}", describe_transport(e)),
    }
}

/// Retry-After in seconds or as an HTTP date; capped at ten minutes.
pub fn retry_after(res: &Response) -> Option<Duration> {
    let value = res.headers().get("retry-after")?.to_str().ok()?.trim();
    parse_retry_after(value, std::time::SystemTime::now())
}

pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let d = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or_default()
    };
    Some(d.min(Duration::from_secs(600)))
}

/// 0.5 s, 1 s, 2 s … capped at 30 s, with ±25% jitter.
pub fn backoff(attempt: u32) -> Duration {
    let base = 0.5 * 2f64.powi(attempt.saturating_sub(1).min(6) as i32);
    let base = base.min(30.0);
    let jitter = rand::rng().random_range(0.75..1.25);
    Duration::from_secs_f64(base * jitter)
}

/// A failure as a message for people, with a hint that fits its cause.
pub fn explain(base: &str, f: ApiFailure) -> CliError {
    let hint = match (f.status, f.code.as_str()) {
        (None, "connect") => Some(format!(
            "is the Paperhook API running at {base}? Check the URL of `paperhook login` or PAPERHOOK_URL"
        )),
        (None, "io") => None,
        (None, _) => Some("check your network connection and try again".to_owned()),
        (Some(300..=399), _) => Some(format!(
            "{base} answered a redirect that was not followed (the API key goes to the same server only, \
             at most 5 redirects, and an upload is not sent twice): log in with the API's own URL"
        )),
        (Some(401), _) => Some(
            "the API key is wrong or revoked: run `paperhook login --url URL --key KEY` with a valid key, or set PAPERHOOK_API_KEY".to_owned(),
        ),
        (Some(402), _) => Some("add credits to the account, then try again".to_owned()),
        (Some(_), "template_not_found") => {
            Some("list your templates with `paperhook templates list`".to_owned())
        }
        (Some(_), "job_not_found" | "invalid_job_id") => {
            Some("use a job id printed by `paperhook submit` (jobs of other accounts are not visible)".to_owned())
        }
        (Some(_), "results_not_ready") => {
            Some("wait for the job with `paperhook status JOB_ID --wait`".to_owned())
        }
        (Some(_), "results_expired") => {
            Some("results are kept 24 hours after a job finishes: submit the document again".to_owned())
        }
        (Some(404), _) => Some(format!(
            "is {base} the Paperhook API? Check the URL of `paperhook login` or PAPERHOOK_URL"
        )),
        (Some(s), _) if s >= 500 => Some("the server failed; try again later".to_owned()),
        _ => None,
    };
    let mut err = CliError::new(f.to_string());
    if let Some(h) = hint {
        err = err.hint(h);
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("5", now), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_retry_after("99999", now),
            Some(Duration::from_secs(600))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    /// A server that answers each request with the next of `answers`
    /// (status, extra headers), then 200 `{"ok": true}`; counts requests.
    async fn scripted(
        answers: Vec<(u16, &'static str)>,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = sock.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (status, extra) = answers.next().unwrap_or((200, ""));
                let body = if status == 200 {
                    r#"{"ok":true}"#.to_owned()
                } else {
                    format!(r#"{{"error":{{"code":"busy","message":"status {status}"}}}}"#)
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\n{extra}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                sock.write_all(reply.as_bytes()).await.unwrap();
                let _ = sock.shutdown().await;
            }
        });
        (url, count)
    }

    #[tokio::test]
    async fn retries_429_and_5xx_honouring_retry_after() {
        let (url, count) = scripted(vec![
            (429, "retry-after: 1\r\n"),
            (503, "retry-after: 0\r\n"),
        ])
        .await;
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = events.clone();
        let api = Api::with(&url, "ph_test")
            .unwrap()
            .on_retry(Arc::new(move |e: &RetryEvent| {
                seen.lock().unwrap().push((e.reason.clone(), e.delay));
            }));
        let started = std::time::Instant::now();
        let v: Value = api
            .json("probe", Retry::Safe, || api.request(Method::GET, "/x"))
            .await
            .unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "waited for Retry-After"
        );
        let events = events.lock().unwrap().clone();
        assert_eq!(events.len(), 2);
        assert!(events[0].0.starts_with("429"), "{events:?}");
        assert_eq!(events[0].1, Duration::from_secs(1));
        assert!(events[1].0.starts_with("503"), "{events:?}");
        assert_eq!(events[1].1, Duration::ZERO);
    }

    #[tokio::test]
    async fn unsafe_writes_are_not_retried_on_5xx_and_retries_run_out() {
        let (url, count) = scripted(vec![(500, ""), (429, "retry-after: 0\r\n")]).await;
        let api = Api::with(&url, "ph_test").unwrap();
        let err = api
            .json::<Value>("create", Retry::Unsafe, || api.request(Method::POST, "/x"))
            .await
            .unwrap_err();
        assert_eq!(err.status, Some(500));
        assert_eq!(err.message, "status 500");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A 429 is retried even for unsafe writes: the server did nothing.
        let v: Value = api
            .json("create", Retry::Unsafe, || api.request(Method::POST, "/x"))
            .await
            .unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 3);

        let (url, count) = scripted(vec![(502, "retry-after: 0\r\n"); 10]).await;
        let mut api = Api::with(&url, "ph_test").unwrap();
        api.retries = 2;
        let err = api
            .json::<Value>("probe", Retry::Safe, || api.request(Method::GET, "/x"))
            .await
            .unwrap_err();
        assert_eq!(err.status, Some(502));
        assert_eq!(
            count.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "one try and two retries"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(625));
        assert!(backoff(3) >= Duration::from_millis(1500));
        assert!(backoff(50) <= Duration::from_secs_f64(37.5));
    }
}
