//! End-to-end tests of the API against real PostgreSQL, storage and HTTP.

mod dashboard;
mod dashboard_security;
mod helpers;
mod isolation;
mod job_data;
mod jobs;
mod keys;
mod rate_limits;
mod ssrf;
mod templates;

use helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    let (s, b) = send(app.client.get(format!("{}/healthz", app.url))).await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, b) = send(app.client.get(format!("{}/readyz", app.url))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["database"], "ok");
    assert_eq!(b["storage"], "ok");
}

#[tokio::test]
async fn unknown_routes_answer_json() {
    let app = TestApp::spawn().await;
    let got = send(app.client.get(format!("{}/nope", app.url))).await;
    assert_error(&got, 404, "not_found");
    let got = send(app.client.delete(format!("{}/healthz", app.url))).await;
    assert_error(&got, 405, "method_not_allowed");
}

#[tokio::test]
async fn api_keys_are_required_valid_and_revocable() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let got = send(app.client.get(format!("{}/v1/account", app.url))).await;
    assert_error(&got, 401, "unauthorized");
    let got = send(app.req(Method::GET, "/v1/account", "ph_abcdefg_notarealkey")).await;
    assert_error(&got, 401, "unauthorized");
    let tampered = tamper(&key);
    let got = send(app.req(Method::GET, "/v1/account", &tampered)).await;
    assert_error(&got, 401, "unauthorized");

    let (s, b) = send(app.req(Method::GET, "/v1/account", &key)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["credits"], 10);
    assert_eq!(b["name"], "Test Co");

    // Only a hash is stored.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(
        !stored[0]
            .windows(8)
            .any(|w| key.as_bytes().windows(8).any(|k| k == w))
    );

    let prefix = &key[..10];
    let out = paperhook_api::admin::run(
        paperhook_api::admin::AdminCommand::RevokeKey {
            key_prefix: prefix.into(),
        },
        &app.pool,
        None,
        &app.config,
    )
    .await
    .unwrap();
    assert_eq!(out["revoked"], true);
    let got = send(app.req(Method::GET, "/v1/account", &key)).await;
    assert_error(&got, 401, "unauthorized");
}

#[tokio::test]
async fn admin_commands_manage_accounts_and_credits() {
    use paperhook_api::admin::{AdminCommand, run};
    let app = TestApp::spawn().await;
    let out = run(
        AdminCommand::CreateAccount {
            name: "Acme".into(),
            credits: 25,
        },
        &app.pool,
        None,
        &app.config,
    )
    .await
    .unwrap();
    let account: uuid::Uuid = out["account_id"].as_str().unwrap().parse().unwrap();
    let key = out["api_key"].as_str().unwrap().to_owned();
    let out = run(
        AdminCommand::AddCredits {
            account,
            credits: 5,
        },
        &app.pool,
        None,
        &app.config,
    )
    .await
    .unwrap();
    assert_eq!(out["credits"], 30);
    let out = run(
        AdminCommand::CreateKey { account },
        &app.pool,
        None,
        &app.config,
    )
    .await
    .unwrap();
    let key2 = out["api_key"].as_str().unwrap().to_owned();
    assert_ne!(key, key2);
    for k in [&key, &key2] {
        let (s, b) = send(app.req(Method::GET, "/v1/account", k)).await;
        assert_eq!((s, b["credits"].as_i64()), (StatusCode::OK, Some(30)));
    }
    assert!(
        run(
            AdminCommand::AddCredits {
                account: uuid::Uuid::new_v4(),
                credits: 5
            },
            &app.pool,
            None,
            &app.config,
        )
        .await
        .is_err()
    );
    assert!(
        run(
            AdminCommand::CreateAccount {
                name: " ".into(),
                credits: 1
            },
            &app.pool,
            None,
            &app.config,
        )
        .await
        .is_err()
    );

    // The ledger lists grants newest first, paged.
    let (s, b) = send(app.req(Method::GET, "/v1/account/ledger?limit=1", &key)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let entries = b["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["delta"], 5);
    assert_eq!(entries[0]["balance_after"], 30);
    let before = b["next_before"].as_i64().unwrap();
    let (_, b) = send(app.req(
        Method::GET,
        &format!("/v1/account/ledger?limit=1&before={before}"),
        &key,
    ))
    .await;
    assert_eq!(b["entries"][0]["delta"], 25);
    assert_eq!(b["entries"][0]["reason"], "grant");

    // Operators find accounts and their keys again by name.
    let other = run(
        AdminCommand::CreateAccount {
            name: "Other 100%_Co".into(),
            credits: 0,
        },
        &app.pool,
        None,
        &app.config,
    )
    .await
    .unwrap();
    run(
        AdminCommand::RevokeKey {
            key_prefix: key2[..10].into(),
        },
        &app.pool,
        None,
        &app.config,
    )
    .await
    .unwrap();
    let list = |name: Option<&str>, limit| {
        run(
            AdminCommand::ListAccounts {
                name: name.map(Into::into),
                limit,
            },
            &app.pool,
            None,
            &app.config,
        )
    };
    let all = list(None, 100).await.unwrap();
    let names: Vec<_> = all["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Other 100%_Co", "Acme"], "newest first");
    let acme = list(Some(" aCmE "), 100).await.unwrap();
    let acme = acme["accounts"].as_array().unwrap();
    assert_eq!(acme.len(), 1);
    assert_eq!(acme[0]["account_id"], account.to_string());
    assert_eq!(acme[0]["credits"], 30);
    let keys = acme[0]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["key_prefix"], &key2[..10], "newest key first");
    assert!(keys[0]["revoked_at"].is_string());
    assert_eq!(keys[1]["key_prefix"], &key[..10]);
    assert!(keys[1]["revoked_at"].is_null());
    assert!(
        keys[1]["last_used_at"].is_string(),
        "the key was used above"
    );
    assert!(!acme[0].to_string().contains(&key[10..]), "no secret part");
    let percent = list(Some("%_"), 100).await.unwrap();
    assert_eq!(percent["accounts"][0]["account_id"], other["account_id"]);
    assert_eq!(percent["accounts"].as_array().unwrap().len(), 1);
    let newest = list(None, 1).await.unwrap();
    assert_eq!(newest["accounts"].as_array().unwrap().len(), 1);
    assert!(list(None, 0).await.is_err());
}

/// `admin reencrypt` after adding a key rewrites every secret of a
/// template, the previous signing secret of a rotation too, and seals
/// those written before secrets were sealed to their template.
#[tokio::test]
async fn reencrypt_moves_every_template_secret_to_the_new_key() {
    use paperhook_api::admin::{AdminCommand, run};
    use paperhook_core::crypto::{Keyring, WEBHOOK_HEADERS, WEBHOOK_SECRET, context};
    let app = TestApp::spawn().await;
    let (_, key) = app.account(1).await;
    let template = app.template(&key).await;
    let (s, _) = send(app.req(
        Method::POST,
        &format!("/v1/templates/{template}/webhook-secret/rotate"),
        &key,
    ))
    .await;
    assert_eq!(s, StatusCode::OK);
    use secrecy::ExposeSecret;
    let old_spec = app.config.encryption_keys.expose_secret().to_owned();
    let old = Keyring::parse(&old_spec).unwrap();
    // Headers as an earlier version wrote them: not sealed to the template.
    sqlx::query("UPDATE templates SET webhook_headers_enc = $2 WHERE id = $1")
        .bind(template)
        .bind(old.encrypt_without_context(br#"{"X-Tenant": "t-1"}"#))
        .execute(&app.pool)
        .await
        .unwrap();
    let stored = || async {
        sqlx::query_as::<_, (Vec<u8>, Vec<u8>, Vec<u8>)>(
            "SELECT webhook_secret_enc, webhook_previous_secret_enc, webhook_headers_enc
             FROM templates WHERE id = $1",
        )
        .bind(template)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    let (current, previous, headers) = stored().await;
    let (secret_ctx, headers_ctx) = (
        context(template, WEBHOOK_SECRET),
        context(template, WEBHOOK_HEADERS),
    );
    let both = Keyring::parse(&format!("{},{old_spec}", Keyring::generate_spec(1))).unwrap();
    assert!(both.needs_reencrypt(&previous, &secret_ctx));
    assert!(old.needs_reencrypt(&headers, &headers_ctx), "not sealed");
    let out = run(AdminCommand::Reencrypt, &app.pool, Some(&both), &app.config)
        .await
        .unwrap();
    assert_eq!(out["reencrypted"], 1);
    let (current2, previous2, headers2) = stored().await;
    for (before, after, ctx) in [
        (current, current2, &secret_ctx),
        (previous, previous2, &secret_ctx),
        (headers, headers2, &headers_ctx),
    ] {
        assert!(
            !both.needs_reencrypt(&after, ctx),
            "still under the old key"
        );
        assert_eq!(
            both.open(&after, ctx).unwrap(),
            old.open(&before, ctx).unwrap()
        );
    }
    // Sealed now: another template's context does not open them.
    let elsewhere = context(uuid::Uuid::new_v4(), WEBHOOK_HEADERS);
    assert!(both.open(&stored().await.2, &elsewhere).is_err());
    // With sealing off, reencrypt unseals (for going back to a version
    // before sealing), and with it on again, seals.
    use paperhook_core::crypto::Sealing;
    let off = both.clone().with_sealing(Sealing::Off);
    let out = run(AdminCommand::Reencrypt, &app.pool, Some(&off), &app.config)
        .await
        .unwrap();
    assert_eq!(out["reencrypted"], 1);
    assert_eq!(
        both.open(&stored().await.2, &elsewhere).unwrap(),
        br#"{"X-Tenant": "t-1"}"#
    );
    let out = run(AdminCommand::Reencrypt, &app.pool, Some(&both), &app.config)
        .await
        .unwrap();
    assert_eq!(out["reencrypted"], 1);
    let strict = both.clone().with_sealing(Sealing::Strict);
    assert!(strict.open(&stored().await.2, &elsewhere).is_err());
    assert!(strict.open(&stored().await.2, &headers_ctx).is_ok());
    // Without the key the secrets were written with: the template and how
    // far the run got, not a bare decryption error.
    let other = Keyring::parse(&Keyring::generate_spec(2)).unwrap();
    let err = run(
        AdminCommand::Reencrypt,
        &app.pool,
        Some(&other),
        &app.config,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!("template {template}")) && err.contains("0 template(s)"),
        "{err}"
    );
}

/// A secret rotated while `admin reencrypt` runs is not overwritten with
/// the one reencrypt read before: each row is read under its lock.
#[tokio::test]
async fn reencrypt_keeps_a_secret_rotated_meanwhile() {
    use paperhook_api::admin::{AdminCommand, run};
    use paperhook_core::crypto::{Keyring, WEBHOOK_SECRET, context};
    use secrecy::ExposeSecret;
    let app = TestApp::spawn().await;
    let (_, key) = app.account(1).await;
    let template = app.template(&key).await;
    let old_spec = app.config.encryption_keys.expose_secret().to_owned();
    let old = Keyring::parse(&old_spec).unwrap();
    let both_spec = format!("{},{old_spec}", Keyring::generate_spec(1));
    let both = Keyring::parse(&both_spec).unwrap();
    // A rotation by the API (still on the old key) holds the row...
    let mut rotation = app.pool.begin().await.unwrap();
    sqlx::query(
        "UPDATE templates SET webhook_secret_enc = $2, webhook_previous_secret_enc = NULL
         WHERE id = $1",
    )
    .bind(template)
    .bind(old.seal(b"whsec_rotated", &context(template, WEBHOOK_SECRET)))
    .execute(&mut *rotation)
    .await
    .unwrap();
    // ...while reencrypt runs into it.
    let pool = app.pool.clone();
    let keyring = Keyring::parse(&both_spec).unwrap();
    let config = app.config.clone();
    let reencrypt = tokio::spawn(async move {
        run(AdminCommand::Reencrypt, &pool, Some(&keyring), &config)
            .await
            .unwrap()
    });
    paperhook_core::testing::waiting_for_a_lock(&app.pool, "%", "reencrypt").await;
    rotation.commit().await.unwrap();
    let out = reencrypt.await.unwrap();
    assert_eq!(out["reencrypted"], 1);
    let (secret, previous): (Vec<u8>, Option<Vec<u8>>) = sqlx::query_as(
        "SELECT webhook_secret_enc, webhook_previous_secret_enc FROM templates WHERE id = $1",
    )
    .bind(template)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let ctx = context(template, WEBHOOK_SECRET);
    assert!(
        !both.needs_reencrypt(&secret, &ctx),
        "still under the old key"
    );
    assert_eq!(
        both.open(&secret, &ctx).unwrap(),
        b"whsec_rotated",
        "the rotated secret was overwritten"
    );
    assert_eq!(
        previous, None,
        "the old secret came back as the previous one"
    );
}

#[tokio::test]
async fn database_down_answers_503() {
    // A database URL nothing listens on: the pool is lazy, so the API starts.
    let app = TestApp::spawn().await;
    let (_, key) = app.account(1).await;
    let mut config = app.config.clone();
    config.database_url = "postgres://postgres@127.0.0.1:1/none".to_owned().into();
    config.db_acquire_timeout_secs = 1;
    config.migrate_on_start = false;
    let dir = tempfile::tempdir().unwrap();
    let state = paperhook_api::serve::state(config.clone()).await.unwrap();
    let down = TestApp::start(state, config, dir).await;
    let started = std::time::Instant::now();
    let got = send(down.req(Method::GET, "/v1/account", &key)).await;
    assert_error(&got, 503, "database_unavailable");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let (s, b) = send(down.client.get(format!("{}/readyz", down.url))).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(b["database"], "unavailable");
}

#[tokio::test]
async fn openapi_covers_every_endpoint() {
    let app = TestApp::spawn().await;
    let (s, doc) = send(app.client.get(format!("{}/openapi.json", app.url))).await;
    assert_eq!(s, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/process-job", "post"),
        ("/job-status", "get"),
        ("/v1/templates", "post"),
        ("/v1/templates", "get"),
        ("/v1/templates/{id}", "get"),
        ("/v1/templates/{id}", "put"),
        ("/v1/templates/{id}", "delete"),
        ("/v1/templates/{id}/webhook-secret", "get"),
        ("/v1/templates/{id}/webhook-secret/rotate", "post"),
        ("/v1/account", "get"),
        ("/v1/account/ledger", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        let op = &paths.get(path).unwrap_or_else(|| panic!("{path} missing"))[method];
        assert!(op.is_object(), "{method} {path} missing");
    }
    let responses = &paths["/process-job"]["post"]["responses"];
    for code in [
        "202", "400", "401", "402", "404", "413", "415", "422", "429", "503",
    ] {
        assert!(responses[code].is_object(), "/process-job lacks {code}");
    }
    // The idempotency header both ways.
    let key = paths["/process-job"]["post"]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap_or_else(|| panic!("no Idempotency-Key: {}", paths["/process-job"]));
    assert_eq!(key["in"], "header");
    assert_eq!(key["schema"]["maxLength"], 255, "{key}");
    assert!(
        responses["202"]["headers"]["Idempotent-Replayed"].is_object(),
        "{}",
        responses["202"]
    );
    // Both ways to submit, and both ways results come back.
    let body = &paths["/process-job"]["post"]["requestBody"]["content"];
    assert!(body["application/json"].is_object(), "{body}");
    let form = &body["multipart/form-data"]["schema"];
    assert_eq!(
        form["properties"]["actual_image"]["format"], "binary",
        "{body}"
    );
    assert_eq!(form["required"], json!(["template_id", "actual_image"]));
    let ok = &paths["/v1/job-results"]["post"]["responses"]["200"]["content"];
    assert!(
        ok["application/json"].is_object() && ok["text/csv"].is_object(),
        "{ok}"
    );
    // Every parameter says what it is, not salvo's generic "Get parameter
    // `x` from request url query."
    let mut undescribed = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let what = p["description"].as_str().unwrap_or_default();
                if what.is_empty() || what.starts_with("Get parameter") {
                    undescribed.push(format!("{method} {path} {}", p["name"]));
                }
            }
        }
    }
    assert_eq!(
        undescribed,
        Vec::<String>::new(),
        "parameters without a description of their own"
    );
    // Path ids are described where the document is built; a query
    // parameter of the same name keeps its own description.
    let filter = paths["/v1/jobs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "job_id")
        .unwrap();
    assert!(
        filter["description"]
            .as_str()
            .unwrap()
            .starts_with("Only the job"),
        "{filter}"
    );
    let (s, _) = (
        app.client
            .get(format!("{}/docs", app.url))
            .send()
            .await
            .unwrap()
            .status(),
        (),
    );
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn metrics_expose_requests_and_queue_depth() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let template = app.template(&key).await;
    let body = serde_json::json!({"template_id": template.to_string(), "actual_image": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, example_pdf())});
    for _ in 0..2 {
        let (s, _) = send(app.req(Method::POST, "/process-job", &key).json(&body)).await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    let _ = send(app.req(Method::GET, &format!("/v1/templates/{template}"), &key)).await;
    let scrape = || async {
        app.client
            .get(format!("{}/metrics", app.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let metric = |text: &str, prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} missing from:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let text = scrape().await;
    let value = |prefix: &str| metric(&text, prefix);
    // Counters are process-wide (tests share the process): at least ours.
    assert!(
        value(
            r#"paperhook_http_requests_total{method="POST",route="/process-job",status_class="2xx"}"#
        ) >= 2.0
    );
    assert!(
        value(
            r#"paperhook_http_requests_total{method="GET",route="/v1/templates/{id}",status_class="2xx"}"#
        ) >= 1.0
    );
    assert!(value(r#"paperhook_jobs_submitted_total{document_type="pdf"}"#) >= 2.0);
    assert!(text.contains("paperhook_build_info{binary=\"paperhook-api\""));
    assert!(!text.contains(&template.to_string()), "no ids in labels");
    // The queue gauges read the database: this test's own has exactly two
    // NEW jobs. But the gauges are process-wide statics, refreshed at most
    // every 5 s per process by whichever app is scraped then: polled until
    // a refresh has read this app's database.
    let depth = r#"paperhook_queue_depth{status="NEW"}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = metric(&text, depth);
    while seen != 2.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the NEW queue depth is {seen}, not this database's 2"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        seen = metric(&scrape().await, depth);
    }

    // With metrics_addr set, /metrics is there only, away from the port
    // clients reach (the counts are of every account).
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.metrics_addr = "127.0.0.1:0".into()).await;
    let public = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let private = app
        .client
        .get(format!("{}/metrics", app.metrics_url.as_deref().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(private.status(), StatusCode::OK);
    let text = private.text().await.unwrap();
    assert!(
        text.contains("paperhook_build_info{binary=\"paperhook-api\""),
        "{text}"
    );
    assert!(text.contains("paperhook_http_requests_total"), "{text}");
}

/// On SIGTERM the API lets requests in flight finish for
/// `api_shutdown_grace_secs`, then closes them and ends.
#[tokio::test]
async fn the_api_stops_once_its_shutdown_grace_is_over() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let mut config = app.config.clone();
    config.api_shutdown_grace_secs = 1;
    let state = paperhook_api::serve::state(config.clone()).await.unwrap();
    let running = paperhook_api::serve::start(state, "127.0.0.1:0")
        .await
        .unwrap();
    // A request in flight whose body never ends (it could wait for
    // submission_read_timeout_secs, 300 s).
    let mut stalled = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let head = format!(
        "POST /v1/job-results HTTP/1.1\r\nHost: paperhook\r\nx-auth: {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    // Its key checked: the handler is reading its body.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
        "SELECT last_used_at FROM api_keys",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
    .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    paperhook_api::serve::stop_gracefully(&running.handle, &config);
    tokio::time::timeout(std::time::Duration::from_secs(20), running.task)
        .await
        .expect("the server did not stop within 20 s")
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(900),
        "the request in flight got {took:?}, not its grace"
    );
}
