//! Webhook delivery: one signed POST per document, retried on a schedule.
//! Steps: load the delivery; check the target (http(s), an address the
//! SSRF guard allows, pinned for the connection, no redirects); sign and
//! send; record the attempt; then done, gone, or retry later.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use paperhook_core::db::deliveries::{self, Attempt};
use paperhook_core::db::{jobs, templates};
use paperhook_core::queue::{self, Task};
use paperhook_core::{order, webhook};
use rand::Rng;

use crate::{Retry, Worker};

/// How much of a response body is kept.
const EXCERPT_BYTES: usize = 2048;

/// What one attempt ended with.
struct Sent {
    attempt: Attempt,
    /// Retrying cannot help (410 Gone, or a refused target).
    final_state: Option<&'static str>,
    retry_after: Option<Duration>,
}

#[tracing::instrument(skip_all, fields(delivery_id = %task.ref_id))]
pub async fn deliver(w: &Worker, task: &Task) -> Result<(), Retry> {
    let Some(delivery) = deliveries::get(&w.pool, task.ref_id).await? else {
        queue::complete(&w.pool, task).await?;
        return Ok(());
    };
    if delivery.state != "pending" {
        queue::complete(&w.pool, task).await?;
        return Ok(());
    }
    let job = jobs::get_any(&w.pool, delivery.job_id)
        .await?
        .ok_or_else(|| Retry::from("the delivery's job is missing"))?;
    // The results went (expired or deleted) while this delivery waited
    // (a worker sending it may have set it pending again, with its payload
    // emptied), or they are past retention, expired for the API (the
    // results route's rule) before the janitor's pass marks them: the
    // webhook, which carries them, fails rather than goes out.
    let retention = chrono::Duration::from_std(w.config.result_retention()).unwrap_or_default();
    let past_retention = match job.finished_at {
        // By the database's clock (`finished_at` is its time too): a worker
        // whose own clock ran ahead would fail webhooks for good, and empty
        // their payloads, while the results are still to be had.
        Some(finished) => finished + retention <= paperhook_core::db::now(&w.pool).await?,
        None => false,
    };
    if job.results_expired_at.is_some() || past_retention {
        let why = if job.data_deleted_at.is_some() {
            "the job's data was deleted on request before the webhook was delivered"
        } else {
            "the results expired (result_retention_secs) before the webhook was delivered"
        };
        let mut tx = w.pool.begin().await?;
        deliveries::expire(&mut tx, &[job.id], why).await?;
        tx.commit().await?;
        queue::complete(&w.pool, task).await?;
        return Ok(());
    }
    let template = templates::get_any(&w.pool, job.template_id)
        .await?
        .ok_or_else(|| Retry::from("the delivery's template is missing"))?;
    // Keys in the product page's order, `result` in the template's.
    let body = serde_json::to_vec(&order::Payload {
        payload: &with_result(&delivery.payload.0),
        fields: &order::field_names(&template.spec.0),
    })?;
    let sent = match &template.webhook_url {
        None => Sent {
            attempt: Attempt {
                error_class: Some("refused"),
                error_message: Some("the template no longer has a webhook URL".into()),
                ..Attempt::default()
            },
            final_state: Some("failed"),
            retry_after: None,
        },
        Some(url) => match secrets(&w.keyring, &template) {
            // A key missing from this worker's encryption_keys: tried again
            // on the schedule, so the webhook is sent once the keys are
            // fixed (a rotation rolled out to the API before the workers,
            // say), saying what to fix meanwhile.
            Err(e) if e.is::<paperhook_core::crypto::CryptoError>() => failed(
                "decrypt",
                format!(
                    "the template's webhook headers or secret cannot be decrypted ({e}); \
                     check this worker's encryption_keys (tried again while the retry \
                     schedule lasts)"
                ),
                Instant::now(),
            ),
            // Decrypted, but not what was stored: no retry changes that.
            Err(e) => refused(format!(
                "the template's webhook headers or secret are unreadable ({e}); save them again"
            )),
            Ok((headers, secrets)) => {
                let target = Target {
                    timeout: w.config.webhook_timeout(),
                    allow: &w.allow,
                };
                send(&target, url, &headers, &secrets, &delivery.message_id, body).await
            }
        },
    };
    let attempts = delivery.attempts as usize + 1;
    // The task's last claim (its retries and the restarts of the workers
    // that held it used them all): the queue would fail the task and leave
    // the delivery pending for ever, so the delivery fails here instead.
    let delay = webhook::next_delay(
        &w.schedule,
        attempts,
        sent.retry_after,
        rand::rng().random(),
    )
    .filter(|_| task.attempts < task.max_attempts);
    let state = match (sent.final_state, delay) {
        (Some(state), _) => state,
        (None, _)
            if sent
                .attempt
                .status_code
                .is_some_and(|s| (200..300).contains(&s)) =>
        {
            "delivered"
        }
        (None, Some(_)) => "pending",
        (None, None) => "failed",
    };
    tracing::info!(
        attempt = attempts,
        status = sent.attempt.status_code,
        error_class = sent.attempt.error_class,
        state,
        "webhook attempt"
    );
    paperhook_core::metrics::WEBHOOK_ATTEMPTS
        .with_label_values(&[
            state,
            paperhook_core::metrics::status_class(sent.attempt.status_code),
        ])
        .inc();
    paperhook_core::metrics::observe_stage(
        "deliver",
        state == "delivered",
        f64::from(sent.attempt.latency_ms) / 1000.0,
    );
    let mut tx = w.pool.begin().await?;
    let Some(stored) = deliveries::record(&mut tx, &delivery, &sent.attempt, state).await? else {
        // Queued again on request while this attempt was out: the request
        // could not queue a task while this one ran, so this worker queues
        // it, and the delivery goes out again on its fresh schedule.
        if queue::complete(&mut *tx, task).await? {
            let max_attempts = w.config.task_max_attempts();
            queue::enqueue(
                &mut tx,
                queue::kind::DELIVERY,
                delivery.id,
                None,
                max_attempts,
            )
            .await?;
            tx.commit().await?;
            tracing::info!("the webhook was queued again while it was sent; sending it again");
        }
        return Ok(());
    };
    // As stored: a delivery failed meanwhile (its results expired or were
    // deleted) stays failed, and is not tried again.
    let state = stored.as_str();
    let settled = if state == "pending" {
        let after = delay.unwrap_or_default();
        let error =
            sent.attempt.error_message.clone().unwrap_or_else(|| {
                format!("HTTP {}", sent.attempt.status_code.unwrap_or_default())
            });
        queue::retry(&mut *tx, task, after, &error).await?
    } else {
        queue::complete(&mut *tx, task).await?
    };
    if !settled {
        return Ok(());
    }
    tx.commit().await?;
    // From the document's completion; a delivery sent again on request
    // would count the days between (and skew the percentiles).
    if state == "delivered" && delivery.delivered_at.is_none() && delivery.redeliveries == 0 {
        let waited = (Utc::now() - delivery.created_at)
            .to_std()
            .unwrap_or_default();
        paperhook_core::metrics::WEBHOOK_DELIVERY_LATENCY.observe(waited.as_secs_f64());
    }
    if state != "pending" {
        w.cleanup_files(job.id).await;
    }
    Ok(())
}

/// The payload as sent: a failure payload stored without `result` (queued
/// before failures carried `"result": null`, and sent again on request)
/// gets it, since receivers index `result` in every payload.
fn with_result(payload: &serde_json::Value) -> std::borrow::Cow<'_, serde_json::Value> {
    match payload.as_object() {
        Some(fields)
            if fields.get("status").is_some_and(|s| s == "FAILED")
                && !fields.contains_key("result") =>
        {
            let mut fields = fields.clone();
            fields.insert("result".into(), serde_json::Value::Null);
            std::borrow::Cow::Owned(fields.into())
        }
        _ => std::borrow::Cow::Borrowed(payload),
    }
}

/// The template's custom headers and signing secrets: the current one, and
/// the previous one while it still signs after a rotation.
fn secrets(
    keyring: &paperhook_core::crypto::Keyring,
    template: &templates::TemplateRow,
) -> anyhow::Result<(BTreeMap<String, String>, Vec<String>)> {
    use paperhook_core::crypto::{WEBHOOK_HEADERS, WEBHOOK_SECRET, context};
    let headers = match &template.webhook_headers_enc {
        Some(enc) => {
            serde_json::from_slice(&keyring.open(enc, &context(template.id, WEBHOOK_HEADERS))?)?
        }
        None => BTreeMap::new(),
    };
    let secret = context(template.id, WEBHOOK_SECRET);
    let mut secrets = vec![String::from_utf8(
        keyring.open(&template.webhook_secret_enc, &secret)?,
    )?];
    if let Some(previous) = template.previous_secret_enc() {
        secrets.push(String::from_utf8(keyring.open(previous, &secret)?)?);
    }
    Ok((headers, secrets))
}

fn refused(message: String) -> Sent {
    Sent {
        attempt: Attempt {
            error_class: Some("refused"),
            error_message: Some(message),
            ..Attempt::default()
        },
        final_state: Some("failed"),
        retry_after: None,
    }
}

fn failed(class: &'static str, message: String, started: Instant) -> Sent {
    Sent {
        attempt: Attempt {
            latency_ms: started.elapsed().as_millis() as i32,
            error_class: Some(class),
            error_message: Some(message),
            ..Attempt::default()
        },
        final_state: None,
        retry_after: None,
    }
}

/// The addresses to connect to, in the resolver's order: those the host
/// resolves to that the SSRF guard allows (all of them, so a receiver
/// whose first address is down is reached at the next), or why there are
/// none.
pub async fn check_target(
    url: &url::Url,
    allow: &[webhook::Cidr],
) -> Result<Vec<SocketAddr>, (&'static str, String)> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err((
            "refused",
            format!("webhook URLs must be http or https, not {}", url.scheme()),
        ));
    }
    let port = url.port_or_known_default().unwrap_or(443);
    // The url crate has already turned every IPv4 spelling (2130706433,
    // 0177.0.0.1, 0x7f.1) into dotted decimal and parsed IPv6 literals.
    let (host, addrs): (String, Vec<SocketAddr>) = match url.host() {
        None => return Err(("refused", "the webhook URL has no host".to_owned())),
        Some(url::Host::Ipv4(ip)) => (ip.to_string(), vec![SocketAddr::new(ip.into(), port)]),
        Some(url::Host::Ipv6(ip)) => (ip.to_string(), vec![SocketAddr::new(ip.into(), port)]),
        Some(url::Host::Domain(name)) => (
            name.to_owned(),
            tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| ("dns", format!("{name} could not be resolved: {e}")))?
                .collect(),
        ),
    };
    allowed(&host, &addrs, allow)
}

/// The addresses of `addrs` the SSRF guard allows, or why there are none.
fn allowed(
    host: &str,
    addrs: &[SocketAddr],
    allow: &[webhook::Cidr],
) -> Result<Vec<SocketAddr>, (&'static str, String)> {
    let (ok, refused): (Vec<_>, Vec<_>) = addrs
        .iter()
        .map(|addr| (addr, webhook::refused(addr.ip(), allow)))
        .partition(|(_, reason)| reason.is_none());
    if !ok.is_empty() {
        return Ok(ok.into_iter().map(|(addr, _)| *addr).collect());
    }
    if refused.is_empty() {
        return Err(("dns", format!("{host} resolves to no address")));
    }
    // The account sees this message: the kinds of address, not the
    // addresses an internal name has (the operator's log has them).
    let mut kinds: Vec<&str> = refused.iter().filter_map(|(_, r)| *r).collect();
    kinds.sort_unstable();
    kinds.dedup();
    tracing::info!(host, addresses = ?refused.iter().map(|(a, _)| a.ip()).collect::<Vec<_>>(),
        "webhook target refused by the SSRF guard");
    Err((
        "refused",
        format!(
            "{host} resolves only to addresses webhooks may not reach ({}); an operator can allow them with webhook_allow_cidrs (PAPERHOOK_WEBHOOK_ALLOW_CIDRS)",
            kinds.join(", ")
        ),
    ))
}

/// How `send` may reach a receiver.
pub struct Target<'a> {
    pub timeout: Duration,
    pub allow: &'a [webhook::Cidr],
}

/// The test event: shaped as a success payload, so that a receiver's
/// parsing is tried too (a string `job_id`, the nil UUID; a `result` with
/// each of the template's fields, null as a field not found is; a
/// `document`), marked `"type": "test"` and `"status": "TEST"`.
fn test_payload(template: &templates::TemplateRow) -> serde_json::Value {
    let result: serde_json::Map<String, serde_json::Value> = order::field_names(&template.spec.0)
        .into_iter()
        .map(|name| (name, serde_json::Value::Null))
        .collect();
    serde_json::json!({
        "type": "test",
        "job_id": uuid::Uuid::nil(),
        "template_id": template.id,
        "static_values": {},
        "result": result,
        "document": {"index": 0, "file_name": "paperhook-test-event.pdf", "pages": 1},
        "status": "TEST",
    })
}

/// Sends one signed test event outside the queue, recording nothing: the
/// dashboard's "Send test event". Same signing, SSRF guard and timeout as
/// real deliveries.
pub async fn send_test(
    config: &paperhook_core::config::Config,
    keyring: &paperhook_core::crypto::Keyring,
    template: &templates::TemplateRow,
) -> anyhow::Result<(String, Attempt)> {
    let url = template
        .webhook_url
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("the template has no webhook URL"))?;
    let (headers, secrets) = secrets(keyring, template)?;
    let msg_id = format!("msg_test_{}", uuid::Uuid::new_v4().simple());
    let body = serde_json::to_vec(&order::Payload {
        payload: &test_payload(template),
        fields: &order::field_names(&template.spec.0),
    })?;
    let allow = config.webhook_allow_list()?;
    let target = Target {
        timeout: config.webhook_timeout(),
        allow: &allow,
    };
    let sent = send(&target, url, &headers, &secrets, &msg_id, body).await;
    Ok((msg_id, sent.attempt))
}

async fn send(
    target: &Target<'_>,
    url: &str,
    headers: &BTreeMap<String, String>,
    secrets: &[String],
    msg_id: &str,
    body: Vec<u8>,
) -> Sent {
    let started = Instant::now();
    let parsed = match url::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return refused(format!("the webhook URL is invalid: {e}")),
    };
    // The whole attempt (resolve, connect, send, read the answer) is
    // bounded by the timeout: a lookup that does not answer would hold the
    // worker's slot for as long as the resolver takes.
    let checked = tokio::time::timeout(target.timeout, check_target(&parsed, target.allow)).await;
    let addrs = match checked {
        Ok(Ok(addrs)) => addrs,
        Ok(Err(("refused", message))) => return refused(message),
        Ok(Err((class, message))) => return failed(class, message, started),
        Err(_) => {
            return failed(
                "timeout",
                format!(
                    "{} was not resolved within the webhook timeout ({} s, webhook_timeout_secs)",
                    parsed.host_str().unwrap_or_default(),
                    target.timeout.as_secs_f64()
                ),
                started,
            );
        }
    };
    let until = started + target.timeout;
    post(
        parsed, &addrs, until, headers, secrets, msg_id, body, started,
    )
    .await
}

/// Posts `body` to `parsed` at the checked `addrs` only, before `until`.
#[allow(clippy::too_many_arguments)]
async fn post(
    parsed: url::Url,
    addrs: &[SocketAddr],
    until: Instant,
    headers: &BTreeMap<String, String>,
    secrets: &[String],
    msg_id: &str,
    body: Vec<u8>,
    started: Instant,
) -> Sent {
    let remaining = until
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    // Pin the checked addresses: the client must not resolve the name again,
    // nor hand the request to a proxy from the environment (HTTP_PROXY,
    // ALL_PROXY), which would resolve and connect on its own. A connect
    // timeout is shared out among the addresses: without one, an address
    // that drops packets without a word took all the time and the next was
    // never tried.
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(remaining)
        .connect_timeout(remaining)
        .user_agent(concat!("paperhook-webhooks/", env!("CARGO_PKG_VERSION")));
    if let Some(host) = parsed.host_str() {
        builder = builder.resolve_to_addrs(host, addrs);
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => return failed("connect", format!("HTTP client: {e}"), started),
    };
    let timestamp = Utc::now().timestamp();
    let signature = match webhook::sign_all(secrets, msg_id, timestamp, &body) {
        Ok(s) => s,
        Err(e) => return refused(e.to_string()),
    };
    let mut req = client
        .post(parsed)
        .header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let req = req
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body);
    let mut res = match req.send().await {
        Ok(res) => res,
        Err(e) => {
            // Without the URL: it can carry secrets (a query token), and
            // the message is stored and shown.
            let e = e.without_url();
            return failed(classify(&e), error_chain(&e), started);
        }
    };
    let status = res.status();
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, chrono::Utc::now()));
    let mut excerpt = Vec::new();
    while excerpt.len() < EXCERPT_BYTES {
        match res.chunk().await {
            Ok(Some(chunk)) => {
                excerpt.extend_from_slice(&chunk[..chunk.len().min(EXCERPT_BYTES - excerpt.len())])
            }
            _ => break,
        }
    }
    let code = status.as_u16();
    Sent {
        attempt: Attempt {
            status_code: Some(i32::from(code)),
            latency_ms: started.elapsed().as_millis() as i32,
            // PostgreSQL text cannot hold a NUL: recording the attempt
            // would fail, and a delivered webhook would be sent again.
            response_excerpt: Some(String::from_utf8_lossy(&excerpt).replace('\0', "")),
            error_class: (!status.is_success()).then_some("http"),
            error_message: (!status.is_success())
                .then(|| format!("the receiver answered HTTP {code}")),
        },
        final_state: (code == 410).then_some("gone"),
        retry_after,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn classify(e: &reqwest::Error) -> &'static str {
    let chain = error_chain(e).to_lowercase();
    if e.is_timeout() {
        "timeout"
    } else if chain.contains("certificate") || chain.contains("tls") || chain.contains("handshake")
    {
        "tls"
    } else if e.is_connect() {
        "connect"
    } else {
        "http"
    }
}

/// A `Retry-After` answer as a delay from `now`: seconds, or an HTTP date
/// (`Wed, 21 Oct 2026 07:28:00 GMT`, as 503 answers often send). A date
/// already past asks for no delay; anything else is ignored.
fn retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.to_utc() - now).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure payload stored before failures carried `"result": null`
    /// is sent with it; other payloads go as stored.
    #[test]
    fn a_stored_failure_payload_is_sent_with_a_null_result() {
        let old = serde_json::json!({"job_id": "j", "status": "FAILED", "error": {"code": "x"}});
        let sent = with_result(&old);
        assert_eq!(sent.get("result"), Some(&serde_json::Value::Null), "{sent}");
        assert_eq!(sent["error"]["code"], "x");
        for kept in [
            serde_json::json!({"status": "SUCCESS", "result": {"a": 1}}),
            serde_json::json!({"status": "FAILED", "result": null}),
            serde_json::json!({"status": "TEST", "result": {"a": null}}),
        ] {
            assert!(matches!(with_result(&kept), std::borrow::Cow::Borrowed(_)));
        }
    }

    #[test]
    fn every_allowed_address_is_kept_in_order() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let allow = webhook::parse_cidrs("10.1.0.0/16").unwrap();
        let addrs = [
            addr("127.0.0.1:80"),
            addr("93.184.216.34:80"),
            addr("10.1.2.3:80"),
            addr("[2606:4700::1]:80"),
        ];
        assert_eq!(
            allowed("example.com", &addrs, &allow).unwrap(),
            vec![addrs[1], addrs[2], addrs[3]],
            "a receiver whose first address is down must be reached at the next"
        );
        let (class, message) = allowed("internal", &addrs[..1], &allow).unwrap_err();
        assert_eq!(class, "refused");
        assert!(
            message.starts_with(
                "internal resolves only to addresses webhooks may not reach (loopback)"
            ),
            "{message}"
        );
        assert!(
            !message.contains("127.0.0.1"),
            "the address behind a name: {message}"
        );
        assert_eq!(allowed("nothing", &[], &allow).unwrap_err().0, "dns");
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-10-21T07:26:00Z")
            .unwrap()
            .to_utc();
        let secs = |v| retry_after(v, now).map(|d| d.as_secs());
        assert_eq!(secs("120"), Some(120));
        assert_eq!(secs(" 7 "), Some(7));
        assert_eq!(secs("Wed, 21 Oct 2026 07:28:00 GMT"), Some(120));
        assert_eq!(secs("Wed, 21 Oct 2026 07:20:00 GMT"), Some(0), "past");
        for ignored in ["", "soon", "-5", "1.5", "2026-10-21T07:28:00Z"] {
            assert_eq!(secs(ignored), None, "{ignored:?}");
        }
    }

    /// An address that drops the connection attempt without a word gets its
    /// share of the timeout, and the next address is reached (it used to
    /// take the whole timeout: every attempt failed while one of a
    /// receiver's addresses was down that way).
    #[tokio::test]
    async fn a_silent_address_leaves_time_for_the_next() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // The silent address: a listener on 127.0.0.2 that never accepts,
        // its queue full, so a connection attempt gets no answer at all.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let silent = socket.listen(0).unwrap();
        let port = silent.local_addr().unwrap().port();
        let mut queued = Vec::new();
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_millis(300),
                tokio::net::TcpStream::connect(("127.0.0.2", port)),
            )
            .await;
            match attempt {
                Ok(Ok(stream)) => queued.push(stream),
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => break,
            }
            assert!(queued.len() < 64, "the queue never filled");
        }
        // The receiver, on the same port of 127.0.0.1.
        let receiver = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = receiver.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 4096];
            while !request.ends_with(b"{}") {
                let n = sock.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&buf[..n]);
            }
            let answer =
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            sock.write_all(answer).await.unwrap();
        });
        let url = url::Url::parse(&format!("http://hooks.test:{port}/in")).unwrap();
        let addrs: Vec<SocketAddr> = ["127.0.0.2", "127.0.0.1"]
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), port))
            .to_vec();
        let started = Instant::now();
        let sent = post(
            url,
            &addrs,
            started + Duration::from_secs(6),
            &BTreeMap::new(),
            &[paperhook_core::crypto::generate_webhook_secret()],
            "msg_1",
            b"{}".to_vec(),
            started,
        )
        .await;
        assert_eq!(
            sent.attempt.status_code,
            Some(204),
            "{:?}",
            sent.attempt.error_message
        );
        drop(queued);
    }
}
