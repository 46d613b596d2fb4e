//! The SSRF guard at delivery time: whatever a template's webhook URL says
//! (an IP in any spelling, a name resolving to a private address, a redirect),
//! the worker never reaches an address it may not, and records why.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::helpers::*;

/// A template whose webhook URL is set in the database, as if saved before
/// the allow-list changed (the API refuses private IP addresses itself).
async fn template_at(app: &TestApp, key: &str, url: &str) -> Uuid {
    let (template, _) = app
        .template(key, Some("https://hooks.example.com/paperhook"))
        .await;
    sqlx::query("UPDATE templates SET webhook_url = $2 WHERE id = $1")
        .bind(template)
        .bind(url)
        .execute(&app.pool)
        .await
        .unwrap();
    template
}

async fn attempts(app: &TestApp) -> Vec<(Option<i32>, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT status_code, error_class, error_message FROM webhook_attempts ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// The names /etc/hosts maps to a loopback or private address.
fn private_names_from_hosts() -> Vec<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let mut names = Vec::new();
    for line in hosts.lines() {
        let mut words = line.split('#').next().unwrap_or("").split_whitespace();
        let Some(Ok(ip)) = words.next().map(str::parse::<std::net::IpAddr>) else {
            continue;
        };
        if paperhook_core::webhook::forbidden_reason(ip).is_some() {
            names.extend(words.map(str::to_owned));
        }
    }
    names
}

#[tokio::test]
async fn private_targets_are_refused_in_every_form_unless_allowed() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.webhook_allow_cidrs = String::new()).await;
    let hook = Receiver::start().await;
    let port = hook
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let (_, key) = app.account(100).await;
    // Forms that would reach the receiver if the guard let them through.
    let mut urls: Vec<String> = [
        "127.0.0.1",
        "2130706433",
        "0177.0.0.1",
        "0x7f.1",
        "127.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "localhost",
        "LOCALHOST",
    ]
    .iter()
    .map(|host| format!("http://{host}:{port}/hook"))
    .collect();
    urls.extend(
        private_names_from_hosts()
            .iter()
            .map(|name| format!("http://{name}:{port}/hook")),
    );
    urls.extend(
        [
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:9/",
            "http://[fc00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://10.0.0.1/",
            "http://0/",
        ]
        .map(str::to_owned),
    );
    for url in &urls {
        let template = template_at(&app, &key, url).await;
        app.submit(&key, template, "invoice.pdf", example_pdf())
            .await;
    }
    app.drain().await;
    assert!(hook.received().is_empty(), "a refused target was contacted");
    let rows = attempts(&app).await;
    assert_eq!(rows.len(), urls.len(), "one final attempt per target");
    for (status, class, message) in rows {
        assert_eq!(status, None);
        assert_eq!(class.as_deref(), Some("refused"), "{message:?}");
        assert!(message.unwrap().contains("webhook_allow_cidrs"));
    }
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM webhook_deliveries")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(states.iter().all(|s| s == "failed"), "{states:?}");

    // With the allow-list, the same receiver is reached, also through a
    // name and an odd IPv4 spelling.
    let allowed = app.another_worker(|c| c.webhook_allow_cidrs = "127.0.0.0/8".into());
    for host in ["127.0.0.1", "localhost", "0x7f.1"] {
        let template = template_at(&app, &key, &format!("http://{host}:{port}/hook")).await;
        app.submit(&key, template, "invoice.pdf", example_pdf())
            .await;
    }
    drain(&allowed).await;
    assert_eq!(hook.received().len(), 3);
    let p: Value = hook.received()[0].json();
    assert_eq!(p["status"], "SUCCESS");
}

/// An HTTP server on 127.0.0.1 that answers every request with a redirect to
/// `location`; returns its URL and how many requests it got.
async fn redirector(location: String) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        // 302, 301, 303, 307 and 308 in turn: none may be followed.
        let statuses = [302, 301, 303, 307, 308];
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let status = statuses[n % statuses.len()];
            let location = location.clone();
            tokio::spawn(async move {
                if read_request(&mut sock).await.is_none() {
                    return;
                }
                let reply = format!(
                    "HTTP/1.1 {status} Moved\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (url, hits)
}

#[tokio::test]
async fn redirects_are_never_followed() {
    // The test config allows 127.0.0.1/32, so even an allowed target behind a
    // redirect must not be reached: the guard checks only the URL it was given.
    let app = TestApp::spawn().await;
    let target = Receiver::start().await;
    let (_, key) = app.account(10).await;
    for location in [
        target.url.clone(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
    ] {
        let (url, hits) = redirector(location.clone()).await;
        let template = template_at(&app, &key, &url).await;
        let job = app
            .submit(&key, template, "invoice.pdf", example_pdf())
            .await;
        app.drain().await;
        // 1 attempt + the 3 retries of the test schedule, all answered 3xx.
        assert_eq!(hits.load(Ordering::SeqCst), 4, "{location}");
        // Each 3xx is a failed attempt; the spent schedule fails the delivery.
        let rows: Vec<(String, Option<i32>, Option<String>)> = sqlx::query_as(
            "SELECT d.state, a.status_code, a.error_class FROM webhook_attempts a
             JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.job_id = $1 ORDER BY a.id",
        )
        .bind(job)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        let statuses: Vec<Option<i32>> = rows.iter().map(|r| r.1).collect();
        assert_eq!(statuses, [Some(302), Some(301), Some(303), Some(307)]);
        assert!(rows.iter().all(|r| r.2.as_deref() == Some("http")));
        assert!(rows.iter().all(|r| r.0 == "failed"), "{rows:?}");
    }
    assert!(
        target.received().is_empty(),
        "the redirect's target was contacted"
    );
}

/// Resolving the webhook's host counts in `webhook_timeout_secs` like the
/// rest of the attempt: a lookup that does not answer (a slow DNS server,
/// or no thread free to ask it, as here) used to hold the delivery, and
/// the worker's slot, for as long as it took.
#[test]
fn a_host_that_does_not_resolve_in_time_times_out() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let app = TestApp::spawn_with(StorageKind::Fs, |c| c.webhook_timeout_secs = 1).await;
        let hook = Receiver::start().await;
        let (_, key) = app.account(5).await;
        let url = hook.url.replace("127.0.0.1", "localhost");
        let template = template_at(&app, &key, &url).await;
        let row = paperhook_core::db::templates::get_any(&app.pool, template)
            .await
            .unwrap()
            .unwrap();
        let keyring = app.config.keyring().unwrap();
        // The one thread that runs lookups is busy.
        let (free, busy) = std::sync::mpsc::channel::<()>();
        let held = tokio::task::spawn_blocking(move || {
            let _ = busy.recv();
        });
        let started = std::time::Instant::now();
        let sent = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            paperhook_worker::deliver::send_test(&app.config, &keyring, &row),
        )
        .await;
        drop(free);
        held.await.unwrap();
        let (_, attempt) = sent
            .expect("the attempt outlived webhook_timeout_secs")
            .unwrap();
        assert_eq!(attempt.error_class, Some("timeout"), "{attempt:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(hook.received().is_empty());
    });
}
