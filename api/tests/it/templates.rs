//! Templates API: CRUD, validation through the extract crate, encrypted and
//! masked webhook headers, signing secrets, tenant isolation.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn create_read_update_delete() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let body = example_template();
    let (s, created) = send(app.req(Method::POST, "/v1/templates", &key).json(&body)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], body["name"]);
    assert_eq!(
        created["fields"].as_array().unwrap().len(),
        body["fields"].as_array().unwrap().len()
    );
    // Header values are masked; the secret only hinted.
    assert_eq!(created["webhook"]["headers"]["Authorization"], "****-123");
    assert!(
        created["signing_secret_hint"]
            .as_str()
            .unwrap()
            .starts_with("****")
    );
    assert!(!created.to_string().contains("very-secret-token"));

    // Stored encrypted: the clear value is nowhere in the row.
    let raw: (Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT webhook_headers_enc, webhook_secret_enc FROM templates")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!raw.0.windows(11).any(|w| w == b"very-secret"));
    let (s, secret) = send(app.req(
        Method::GET,
        &format!("/v1/templates/{id}/webhook-secret"),
        &key,
    ))
    .await;
    assert_eq!(s, StatusCode::OK);
    let secret = secret["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    assert!(
        !raw.1
            .windows(10)
            .any(|w| secret.as_bytes().windows(10).any(|s| s == w))
    );

    let (s, got) = send(app.req(Method::GET, &format!("/v1/templates/{id}"), &key)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["id"], created["id"]);
    let (_, list) = send(app.req(Method::GET, "/v1/templates", &key)).await;
    assert_eq!(list["templates"].as_array().unwrap().len(), 1);

    // Update: sending back the masked header keeps the stored value; a new
    // header is added; the name changes.
    let mut update = body.clone();
    update["name"] = json!("Renamed");
    update["webhook"]["headers"] =
        json!({"Authorization": "****-123", "X-Tenant": "blue-tenant-0001"});
    let (s, updated) = send(
        app.req(Method::PUT, &format!("/v1/templates/{id}"), &key)
            .json(&update),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Renamed");
    // 16 characters: too short to show any of it.
    assert_eq!(updated["webhook"]["headers"]["X-Tenant"], "****");
    let (template_id, headers_enc): (uuid::Uuid, Vec<u8>) =
        sqlx::query_as("SELECT id, webhook_headers_enc FROM templates")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let keyring = app.config.keyring().unwrap();
    use paperhook_core::crypto::{WEBHOOK_HEADERS, context};
    let clear: serde_json::Value = serde_json::from_slice(
        &keyring
            .open(&headers_enc, &context(template_id, WEBHOOK_HEADERS))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(clear["Authorization"], "Bearer very-secret-token-123");

    // Rotating the secret changes it.
    let (s, rotated) = send(app.req(
        Method::POST,
        &format!("/v1/templates/{id}/webhook-secret/rotate"),
        &key,
    ))
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(rotated["secret"].as_str().unwrap(), secret);
    let (_, now) = send(app.req(
        Method::GET,
        &format!("/v1/templates/{id}/webhook-secret"),
        &key,
    ))
    .await;
    assert_eq!(now["secret"], rotated["secret"]);

    let res = app
        .req(Method::DELETE, &format!("/v1/templates/{id}"), &key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let got = send(app.req(Method::GET, &format!("/v1/templates/{id}"), &key)).await;
    assert_error(&got, 404, "template_not_found");
    let got = send(app.req(Method::DELETE, &format!("/v1/templates/{id}"), &key)).await;
    assert_error(&got, 404, "template_not_found");
}

/// A masked header value stands for the stored secret only while the
/// webhook URL stays the same: moving it elsewhere with the mask, even to
/// another path of the same (perhaps shared) host, would send the secret
/// to whoever edits the template.
#[tokio::test]
async fn masked_headers_do_not_follow_the_webhook_to_another_url() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let body = example_template();
    let (s, created) = send(app.req(Method::POST, "/v1/templates", &key).json(&body)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let path = format!("/v1/templates/{}", created["id"].as_str().unwrap());
    let stored = || async {
        let (id, enc): (uuid::Uuid, Vec<u8>) =
            sqlx::query_as("SELECT id, webhook_headers_enc FROM templates")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        let ctx = paperhook_core::crypto::context(id, paperhook_core::crypto::WEBHOOK_HEADERS);
        let clear = app.config.keyring().unwrap().open(&enc, &ctx).unwrap();
        serde_json::from_slice::<serde_json::Value>(&clear).unwrap()["Authorization"].clone()
    };

    for url in [
        "https://attacker.example.net/paperhook",
        "http://hooks.example.com/paperhook",
        "https://hooks.example.com:8443/paperhook",
        "https://hooks.example.com/v2/hook",
        "https://hooks.example.com/paperhook?to=elsewhere",
    ] {
        let mut moved = body.clone();
        moved["webhook"] = json!({"url": url, "headers": {"Authorization": "****-123"}});
        let got = send(app.req(Method::PUT, &path, &key).json(&moved)).await;
        assert_error(&got, 422, "invalid_webhook");
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(message.contains("Authorization"), "{message}");
        assert_eq!(stored().await, "Bearer very-secret-token-123");
    }

    // The same URL, written with its default port: the mask keeps the
    // stored value.
    let mut same = body.clone();
    same["webhook"] = json!({"url": "https://hooks.example.com:443/paperhook",
                             "headers": {"Authorization": "****-123"}});
    let (s, got) = send(app.req(Method::PUT, &path, &key).json(&same)).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(stored().await, "Bearer very-secret-token-123");

    // A new origin with the value sent again is fine.
    let mut fresh = body.clone();
    fresh["webhook"] = json!({"url": "https://other.example.org/hook",
                              "headers": {"Authorization": "Bearer rotated-token-456"}});
    let (s, got) = send(app.req(Method::PUT, &path, &key).json(&fresh)).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(stored().await, "Bearer rotated-token-456");
}

#[tokio::test]
async fn bad_templates_get_422_with_the_reason() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let post =
        |body: serde_json::Value| send(app.req(Method::POST, "/v1/templates", &key).json(&body));

    let got = post(json!({"name": "x", "fields": [{"name": "a", "type": "text", "locator": {"kind": "regex", "pattern": "(unclosed"}}]})).await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(unclosed"),
        "{}",
        got.1
    );

    let got = post(json!({"name": "x", "fields": [{"name": "a", "type": "colour", "locator": {"kind": "regex", "pattern": "(a)"}}]})).await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);

    let got = post(json!({"name": "x", "fields": [{"name": "a", "type": "text", "locator": {"kind": "region", "box": [0.5, 0.5, 1.5, 0.2]}}]})).await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);

    let dup = json!({"name": "a", "type": "text", "locator": {"kind": "regex", "pattern": "(a)"}});
    let got = post(json!({"name": "x", "fields": [dup.clone(), dup]})).await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);

    let got = post(json!({"name": "", "fields": []})).await;
    assert_error(&got, 422, "invalid_template");

    let mut t = example_template();
    t["webhook"]["url"] = json!("ftp://example.com/x");
    assert_error(&post(t).await, 422, "invalid_webhook");
    let mut t = example_template();
    t["webhook"]["headers"] = json!({"webhook-signature": "forged"});
    assert_error(&post(t).await, 422, "invalid_webhook");
    // Credentials go in a header (stored encrypted), not in the URL (stored
    // and shown as it is); the answer does not repeat them.
    for url in [
        "https://user:s3cret-pw@example.com/hook",
        "https://token-only@example.com/hook",
    ] {
        let mut t = example_template();
        t["webhook"]["url"] = json!(url);
        let got = post(t).await;
        assert_error(&got, 422, "invalid_webhook");
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(message.contains("header"), "{message}");
        assert!(
            !message.contains("s3cret") && !message.contains("token-only"),
            "{message}"
        );
    }

    let got = send(
        app.req(Method::POST, "/v1/templates", &key)
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_error(&got, 400, "malformed_json");

    let got = send(app.req(Method::GET, "/v1/templates/nope", &key)).await;
    assert_error(&got, 422, "invalid_template_id");

    // A NUL character could not be stored: 422, for the name, a field or a
    // keyword alike; an escaped backslash before `u0000` is no NUL.
    let mut t = example_template();
    t["name"] = json!("in\u{0}voices");
    assert_error(&post(t).await, 422, "invalid_field");
    let mut t = example_template();
    t["keywords"] = json!(["Invoice\u{0}"]);
    assert_error(&post(t).await, 422, "invalid_field");
    let mut t = example_template();
    t["name"] = json!("back\\u0000slash");
    let (s, created) = post(t).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "back\\u0000slash");

    // A field missing from the body, or of the wrong type: 422 like
    // `/process-job`, not a 400 for broken JSON.
    let mut t = example_template();
    t.as_object_mut().unwrap().remove("fields");
    assert_error(&post(t).await, 422, "missing_field");
    let mut t = example_template();
    t["name"] = json!(5);
    assert_error(&post(t).await, 422, "invalid_field");

    // Over max_json_bytes (1 MiB): the body's limit, not a document's.
    let mut t = example_template();
    t["name"] = json!("x".repeat(1 << 20));
    let got = post(t).await;
    assert_error(&got, 413, "body_too_large");
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_json_bytes"), "{message}");
}

#[tokio::test]
async fn webhook_header_limits_come_from_config() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.webhook_max_headers = 1;
        c.webhook_max_header_bytes = 40;
    })
    .await;
    let (_, key) = app.account(10).await;
    let with_headers = |headers: serde_json::Value| {
        let mut t = example_template();
        t["webhook"] = json!({"url": "https://example.com/hook", "headers": headers});
        send(app.req(Method::POST, "/v1/templates", &key).json(&t))
    };
    let got = with_headers(json!({"X-A": "1", "X-B": "2"})).await;
    assert_error(&got, 422, "invalid_webhook");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("webhook_max_headers"),
        "{}",
        got.1
    );
    let got = with_headers(json!({"X-A": "x".repeat(40)})).await;
    assert_error(&got, 422, "invalid_webhook");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("webhook_max_header_bytes"),
        "{}",
        got.1
    );
    let got = with_headers(json!({"X-A": "fits"})).await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
}

#[tokio::test]
async fn the_field_limit_comes_from_config() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.template_max_fields = 5).await;
    let (_, key) = app.account(10).await;
    let with_fields = |n: usize| {
        let mut t = example_template();
        let fields = t["fields"].as_array_mut().unwrap();
        fields.truncate(n);
        while fields.len() < n {
            let i = fields.len();
            fields.push(json!({"name": format!("extra_{i}"), "type": "text",
                "locator": {"kind": "label", "label": "A"}}));
        }
        t
    };
    let got = send(
        app.req(Method::POST, "/v1/templates", &key)
            .json(&with_fields(6)),
    )
    .await;
    assert_error(&got, 422, "invalid_template");
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("6 fields; the limit is 5 (template_max_fields)"),
        "{message}"
    );
    let got = send(
        app.req(Method::POST, "/v1/templates", &key)
            .json(&with_fields(5)),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    let id = got.1["id"].as_str().unwrap().to_owned();
    let got = send(
        app.req(Method::PUT, &format!("/v1/templates/{id}"), &key)
            .json(&with_fields(6)),
    )
    .await;
    assert_error(&got, 422, "invalid_template");

    // A preview's template is held to the same limit.
    let spec = json!({"fields": with_fields(6)["fields"]});
    let form = reqwest::multipart::Form::new()
        .text("template", spec.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(example_png().to_vec()).file_name("a.png"),
        );
    let got = send(
        app.req(Method::POST, "/v1/preview/extract", &key)
            .multipart(form),
    )
    .await;
    assert_error(&got, 422, "invalid_template");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("template_max_fields"),
        "{}",
        got.1
    );
}

#[tokio::test]
async fn another_accounts_template_is_404() {
    let app = TestApp::spawn().await;
    let (_, alice) = app.account(10).await;
    let (_, bob) = app.account(10).await;
    let id = app.template(&alice).await;
    for (method, path) in [
        (Method::GET, format!("/v1/templates/{id}")),
        (Method::PUT, format!("/v1/templates/{id}")),
        (Method::DELETE, format!("/v1/templates/{id}")),
        (Method::GET, format!("/v1/templates/{id}/webhook-secret")),
        (
            Method::POST,
            format!("/v1/templates/{id}/webhook-secret/rotate"),
        ),
    ] {
        let got = send(
            app.req(method.clone(), &path, &bob)
                .json(&example_template()),
        )
        .await;
        assert_error(&got, 404, "template_not_found");
    }
    let (_, list) = send(app.req(Method::GET, "/v1/templates", &bob)).await;
    assert_eq!(list["templates"].as_array().unwrap().len(), 0);
    // Alice still has it, unchanged.
    let (s, _) = send(app.req(Method::GET, &format!("/v1/templates/{id}"), &alice)).await;
    assert_eq!(s, StatusCode::OK);
}

/// A one-shot HTTP receiver on 127.0.0.1: returns its URL and the raw request it gets.
async fn receiver() -> (String, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = Vec::new();
        // Read until the body announced by content-length has arrived.
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len || n == 0 {
                    break;
                }
            }
        }
        sock.write_all(
            b"HTTP/1.1 202 Accepted\r\ncontent-length: 7\r\nconnection: close\r\n\r\ngot it!",
        )
        .await
        .unwrap();
        let _ = tx.send(String::from_utf8_lossy(&got).to_string());
    });
    (url, rx)
}

#[tokio::test]
async fn test_event_reaches_the_receiver_signed() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.webhook_allow_cidrs = "127.0.0.0/8".into()
    })
    .await;
    let (_, key) = app.account(10).await;
    let (url, got) = receiver().await;
    let mut t = example_template();
    t["webhook"]["url"] = json!(url);
    let (_, created) = send(app.req(Method::POST, "/v1/templates", &key).json(&t)).await;
    let id = created["id"].as_str().unwrap();
    let (s, out) = send(app.req(
        Method::POST,
        &format!("/v1/templates/{id}/webhook-test"),
        &key,
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    assert_eq!(out["status_code"], 202);
    assert_eq!(out["response_excerpt"], "got it!");
    let request = got.await.unwrap().to_ascii_lowercase();
    assert!(
        request.contains("authorization: bearer very-secret-token-123"),
        "{request}"
    );
    assert!(request.contains(&format!(
        "webhook-id: {}",
        out["webhook_id"].as_str().unwrap().to_ascii_lowercase()
    )));
    assert!(request.contains("webhook-signature: v1,"));
    // Shaped as a success payload: a receiver parsing those parses it.
    let body: serde_json::Value =
        serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["type"], "test");
    assert_eq!(
        body["job_id"], "00000000-0000-0000-0000-000000000000",
        "{body}"
    );
    assert_eq!(body["template_id"], id);
    assert!(body["static_values"].is_object(), "{body}");
    let fields: Vec<&str> = t["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let result = body["result"].as_object().unwrap();
    assert_eq!(result.len(), fields.len(), "{body}");
    for f in fields {
        assert!(result[&f.to_ascii_lowercase()].is_null(), "{f}: {body}");
    }
    assert_eq!(body["document"]["index"], 0);

    // Without the allow-list, loopback targets are refused by the SSRF guard:
    // an IP address when the template is saved, a name resolving to one
    // when the event is sent.
    let strict = TestApp::spawn().await;
    let (_, key) = strict.account(10).await;
    let got = send(strict.req(Method::POST, "/v1/templates", &key).json(&t)).await;
    assert_error(&got, 422, "invalid_webhook");
    t["webhook"]["url"] = json!(url.replace("127.0.0.1", "localhost"));
    let (_, created) = send(strict.req(Method::POST, "/v1/templates", &key).json(&t)).await;
    let id = created["id"].as_str().unwrap();
    let (s, out) = send(strict.req(
        Method::POST,
        &format!("/v1/templates/{id}/webhook-test"),
        &key,
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    assert_eq!(out["error_class"], "refused");
    assert!(out["status_code"].is_null());
}

/// Test events out at once from one API process are bounded
/// (`webhook_test_max_concurrent`): each holds a connection for up to
/// `webhook_timeout_secs`, and one more answers 503 with Retry-After until
/// a place is free again.
#[tokio::test]
async fn test_events_out_at_once_are_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.webhook_allow_cidrs = "127.0.0.0/8".into();
        c.webhook_test_max_concurrent = 1;
    })
    .await;
    let (_, key) = app.account(10).await;
    // A receiver that holds its first request until told, and answers the
    // others at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel::<()>();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut hold = Some((arrived_tx, released));
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let held = hold.take();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = sock.read(&mut buf).await;
                if let Some((arrived, released)) = held {
                    let _ = arrived.send(());
                    let _ = released.await;
                }
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    let mut t = example_template();
    t["webhook"]["url"] = json!(url);
    let (_, created) = send(app.req(Method::POST, "/v1/templates", &key).json(&t)).await;
    let path = format!(
        "/v1/templates/{}/webhook-test",
        created["id"].as_str().unwrap()
    );

    let first = tokio::spawn(send(app.req(Method::POST, &path, &key)));
    tokio::time::timeout(std::time::Duration::from_secs(30), arrived)
        .await
        .expect("the first test event reached the receiver")
        .unwrap();
    let busy = app.req(Method::POST, &path, &key).send().await.unwrap();
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(busy.headers().contains_key("retry-after"));
    let body: serde_json::Value = busy.json().await.unwrap();
    assert_eq!(body["error"]["code"], "webhook_tests_busy", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("webhook_test_max_concurrent"),
        "{body}"
    );

    release.send(()).unwrap();
    let (s, out) = first.await.unwrap();
    assert_eq!(s, StatusCode::OK, "{out}");
    assert_eq!(out["status_code"], 200, "{out}");
    // The place is free again.
    let (s, out) = send(app.req(Method::POST, &path, &key)).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    assert_eq!(out["status_code"], 200, "{out}");
}

/// `admin gen-key` is the first step of the compose file's start, before
/// any database runs: it needs none (it used to connect and migrate first,
/// failing after the connect timeout).
#[tokio::test]
async fn an_encryption_key_is_made_without_a_database() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_paperhook-api"))
        .args(["admin", "gen-key", "--id", "3"])
        .env(
            "PAPERHOOK_DATABASE_URL",
            "postgres://paperhook@127.0.0.1:1/none",
        )
        .env("PAPERHOOK_DB_ACQUIRE_TIMEOUT_SECS", "60")
        .env_remove("DATABASE_URL")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), out)
        .await
        .expect("gen-key waited for a database")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = made["encryption_key"].as_str().unwrap();
    assert!(key.starts_with("3:") && key.len() > 40, "{key}");
}
