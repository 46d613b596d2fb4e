//! Webhook retries, 410, the signature known answer and how long attempts
//! are kept (the SSRF guard is in `ssrf`).

use paperhook_core::webhook;
use reqwest::{Method, StatusCode};
use uuid::Uuid;

use crate::helpers::*;

#[test]
fn known_answer_vector_from_stack_notes() {
    let got = webhook::sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        br#"{"test": 2432232314}"#,
    )
    .unwrap();
    assert_eq!(got, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

async fn attempts(app: &TestApp) -> Vec<(Option<i32>, Option<String>)> {
    sqlx::query_as("SELECT status_code, error_class FROM webhook_attempts ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn failing_twice_then_delivered_with_the_same_id() {
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    hook.answers.lock().unwrap().extend([500, 503]);
    let (_, key) = app.account(5).await;
    let (template, secret) = app.template(&key, Some(&hook.url)).await;
    let job = app
        .submit(&key, template, "invoice.pdf", example_pdf())
        .await;
    app.drain().await;
    let got = hook.received();
    assert_eq!(got.len(), 3);
    let id = &got[0].headers["webhook-id"];
    assert!(got.iter().all(|r| &r.headers["webhook-id"] == id));
    for r in &got {
        verify_with_python(&secret, r);
    }
    assert_eq!(
        attempts(&app).await,
        [
            (Some(500), Some("http".into())),
            (Some(503), Some("http".into())),
            (Some(200), None)
        ]
    );
    let state: String =
        sqlx::query_scalar("SELECT state FROM webhook_deliveries WHERE job_id = $1")
            .bind(job)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(state, "delivered");
}

#[tokio::test]
async fn gone_stops_and_a_spent_schedule_fails() {
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    hook.answers.lock().unwrap().extend([410]);
    let (_, key) = app.account(5).await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    app.submit(&key, template, "invoice.pdf", example_pdf())
        .await;
    app.drain().await;
    assert_eq!(hook.received().len(), 1);
    let state: String = sqlx::query_scalar("SELECT state FROM webhook_deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "gone");

    // 1 attempt + 3 retries, all 500: failed after 4.
    hook.answers
        .lock()
        .unwrap()
        .extend([500, 500, 500, 500, 500]);
    app.submit(&key, template, "invoice.pdf", example_pdf())
        .await;
    app.drain().await;
    assert_eq!(hook.received().len(), 5);
    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM webhook_deliveries ORDER BY created_at")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(states, ["gone", "failed"]);
}

/// A delivery whose task's claims run out before its schedule does (workers
/// that died holding it used some) fails rather than waiting for ever.
#[tokio::test]
async fn a_delivery_fails_when_its_task_has_no_attempts_left() {
    // Six claims: just enough for the schedule's six sends.
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.webhook_retry_schedule = "0s,0s,0s,0s,0s".into();
        c.task_max_attempts = 6;
    })
    .await;
    let hook = Receiver::start().await;
    hook.answers.lock().unwrap().extend([500; 6]);
    let (_, key) = app.account(5).await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    app.submit(&key, template, "invoice.pdf", example_pdf())
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while hook.received().is_empty() {
        app.worker.run_once().await.unwrap();
        assert!(std::time::Instant::now() < deadline, "no webhook was sent");
    }
    // As if restarts of the workers holding it had used three of its claims:
    // two are left, for two more sends.
    sqlx::query("UPDATE tasks SET attempts = attempts + 3 WHERE kind = 'delivery'")
        .execute(&app.pool)
        .await
        .unwrap();
    app.drain().await;
    assert_eq!(hook.received().len(), 3);
    let (delivery, task): (String, String) = sqlx::query_as(
        "SELECT d.state, t.state FROM webhook_deliveries d JOIN tasks t ON t.ref_id = d.id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((delivery.as_str(), task.as_str()), ("failed", "completed"));
}

/// Tasks are queued with `task_max_attempts` claims: a job whose workers
/// die holding it is given up, failed with `processing_failed` and its
/// failure webhook sent, on the claim after its N-th (the queue's column
/// default, 25, used to apply whatever the configuration).
#[tokio::test]
async fn a_task_is_given_up_after_task_max_attempts_claims() {
    use paperhook_core::queue;
    const N: i32 = 3;
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.task_max_attempts = N as u32;
        c.webhook_retry_schedule = "0s".into();
    })
    .await;
    let hook = Receiver::start().await;
    let (_, key) = app.account(5).await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    let job = app
        .submit(&key, template, "invoice.pdf", example_pdf())
        .await;
    let max: i32 = sqlx::query_scalar("SELECT max_attempts FROM tasks WHERE kind = 'job'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(max, N);
    // N claims, each by a worker that dies holding it: its lease expires
    // and the rescuer puts it back.
    for claim in 1..=N {
        let (_, task) = app.claimed_by_another_worker(queue::kind::JOB).await;
        assert_eq!(task.attempts, claim);
        sqlx::query("UPDATE tasks SET locked_until = now() - interval '1 second' WHERE id = $1")
            .bind(task.id)
            .execute(&app.pool)
            .await
            .unwrap();
        assert_eq!(queue::rescue(&app.pool, None).await.unwrap(), 1);
    }
    app.drain().await;
    let st = app.job_status(&key, job).await;
    assert_eq!(st["status"], "FAILED", "{st}");
    assert_eq!(st["error"]["code"], "processing_failed", "{st}");
    let message = st["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("after {N} attempts")),
        "{message}"
    );
    let (state, attempts): (String, i32) =
        sqlx::query_as("SELECT state, attempts FROM tasks WHERE kind = 'job'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), attempts), ("failed", N + 1));
    let got = hook.received();
    assert_eq!(got.len(), 1, "one failure webhook");
    assert_eq!(got[0].json()["error"]["code"], "processing_failed");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.webhook_retry_schedule = "0s,10m".into()
    })
    .await;
    let hook = Receiver::start().await;
    hook.answers.lock().unwrap().extend([429]);
    let (_, key) = app.account(5).await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    app.submit(&key, template, "invoice.pdf", example_pdf())
        .await;
    let before = chrono::Utc::now();
    app.drain().await;
    assert_eq!(hook.received().len(), 1);
    let (state, run_at): (String, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT t.state, t.run_at FROM tasks t JOIN webhook_deliveries d ON d.id = t.ref_id
         WHERE t.kind = 'delivery'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(state, "available");
    let wait = (run_at - before).num_seconds();
    assert!(
        (110..=200).contains(&wait),
        "next attempt in {wait} s, not about 120 s"
    );
    let delivery_state: String = sqlx::query_scalar("SELECT state FROM webhook_deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(delivery_state, "pending");
}

/// A secret encrypted with a key this worker lacks (a rotation rolled out
/// to the API processes first) fails the attempt saying so, and is tried
/// again on the schedule: a worker given the key sends it.
#[tokio::test]
async fn an_undecryptable_secret_is_sent_once_the_key_is_there() {
    let app =
        TestApp::spawn_with(StorageKind::Fs, |c| c.webhook_retry_schedule = "10m".into()).await;
    let hook = Receiver::start().await;
    let (_, key) = app.account(5).await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    // The secret encrypted with a key the worker does not have.
    let newer = paperhook_core::crypto::Keyring::generate_spec(7);
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let sealed = paperhook_core::crypto::Keyring::parse(&newer)
        .unwrap()
        .seal(
            secret.as_bytes(),
            &paperhook_core::crypto::context(template, paperhook_core::crypto::WEBHOOK_SECRET),
        );
    sqlx::query("UPDATE templates SET webhook_secret_enc = $2 WHERE id = $1")
        .bind(template)
        .bind(sealed)
        .execute(&app.pool)
        .await
        .unwrap();
    let job = app
        .submit(&key, template, "invoice.pdf", example_pdf())
        .await;
    app.drain().await;
    assert!(hook.received().is_empty());
    let (state, class, message): (String, String, String) = sqlx::query_as(
        "SELECT d.state, a.error_class, a.error_message
         FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((state.as_str(), class.as_str()), ("pending", "decrypt"));
    assert!(message.contains("encryption_keys"), "{message}");
    // Ten minutes later, a worker with both keys.
    sqlx::query("UPDATE tasks SET run_at = now() WHERE kind = 'delivery' AND state = 'available'")
        .execute(&app.pool)
        .await
        .unwrap();
    let both = app.another_worker(|c| {
        use secrecy::ExposeSecret;
        let keys = format!("{},{newer}", c.encryption_keys.expose_secret());
        c.encryption_keys = keys.into();
    });
    drain(&both).await;
    let got = hook.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["job_id"], job.to_string());
    verify_with_python(secret, &got[0]);
}

/// `GET /v1/jobs` says how each job's deliveries stand and finds the jobs
/// whose webhooks failed, were refused or are waiting, per template.
#[tokio::test]
async fn jobs_are_listed_by_delivery_state_and_template() {
    let state = |s: &str| Some(s.to_owned());
    // Spent schedules: retries come at once.
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    let (_, key) = app.account(20).await;
    let (a, _) = app.template(&key, Some(&hook.url)).await;
    let (quiet, _) = app.template(&key, None).await;
    let pdf = example_pdf();
    let gone = drained(&app, &key, &hook, &[410], a, "a.pdf", pdf).await;
    let failed = drained(&app, &key, &hook, &[500, 500, 500, 500], a, "a.pdf", pdf).await;
    let delivered = drained(&app, &key, &hook, &[], a, "a.pdf", pdf).await;
    let no_webhook = drained(&app, &key, &hook, &[], quiet, "a.pdf", pdf).await;
    assert_eq!(
        listed(&app, &key, "").await,
        [
            (no_webhook, None),
            (delivered, state("delivered")),
            (failed, state("failed")),
            (gone, state("gone")),
        ]
    );
    for (query, want) in [
        ("delivery=failed", vec![failed]),
        ("delivery=gone", vec![gone]),
        ("delivery=delivered", vec![delivered]),
        ("delivery=pending", vec![]),
        ("delivery=failed&status=SUCCESS", vec![failed]),
        ("delivery=failed&status=FAILED", vec![]),
    ] {
        assert_eq!(ids_of(&listed(&app, &key, query).await), want, "{query}");
    }

    // A receiver asking for two minutes' rest leaves its deliveries pending.
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.webhook_retry_schedule = "0s,10m".into()
    })
    .await;
    let (_, key) = app.account(20).await;
    let (a, _) = app.template(&key, Some(&hook.url)).await;
    let (b, _) = app.template(&key, Some(&hook.url)).await;
    let waiting = drained(&app, &key, &hook, &[429], b, "a.pdf", pdf).await;
    let delivered = drained(&app, &key, &hook, &[], a, "a.pdf", pdf).await;
    // One document delivered and one waiting: the job is pending.
    let zip = make_zip(&[("1.pdf", pdf), ("2.pdf", pdf)]);
    let half = drained(&app, &key, &hook, &[429], a, "two.zip", &zip).await;
    assert_eq!(
        listed(&app, &key, "").await,
        [
            (half, state("pending")),
            (delivered, state("delivered")),
            (waiting, state("pending")),
        ]
    );
    for (query, want) in [
        ("delivery=pending".to_owned(), vec![half, waiting]),
        (
            "delivery=pending&limit=1&offset=1".to_owned(),
            vec![waiting],
        ),
        (format!("template_id={b}"), vec![waiting]),
        (format!("template_id={a}&delivery=pending"), vec![half]),
        (format!("template_id={b}&delivery=delivered"), vec![]),
        (
            format!("job_id={delivered}&delivery=pending"),
            vec![delivered],
        ),
    ] {
        assert_eq!(ids_of(&listed(&app, &key, &query).await), want, "{query}");
    }

    // Another account sees none of it, by filter or by template id.
    let (_, other) = app.account(1).await;
    for query in ["delivery=pending".to_owned(), format!("template_id={a}")] {
        assert!(listed(&app, &other, &query).await.is_empty(), "{query}");
    }
    for (query, code) in [
        ("delivery=lost", "invalid_delivery"),
        ("template_id=abc", "invalid_template_id"),
        ("status=DONE", "invalid_status"),
    ] {
        let (status, body) = send(app.req(Method::GET, &format!("/v1/jobs?{query}"), &key)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
}

/// Submits a file, the receiver answering `answers` first, and drains the queue.
async fn drained(
    app: &TestApp,
    key: &str,
    hook: &Receiver,
    answers: &[u16],
    template: Uuid,
    name: &str,
    data: &[u8],
) -> Uuid {
    hook.answers.lock().unwrap().extend(answers);
    let job = app.submit(key, template, name, data).await;
    app.drain().await;
    job
}

async fn listed(app: &TestApp, key: &str, query: &str) -> Vec<(Uuid, Option<String>)> {
    let (status, body) = send(app.req(Method::GET, &format!("/v1/jobs?{query}"), key)).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            let id: Uuid = j["job_id"].as_str().unwrap().parse().unwrap();
            (id, j["delivery"].as_str().map(str::to_owned))
        })
        .collect()
}

fn ids_of(list: &[(Uuid, Option<String>)]) -> Vec<Uuid> {
    list.iter().map(|(id, _)| *id).collect()
}

/// Once a receiver is fixed, its failed (or refused) webhooks are sent again
/// in one call, per template, with their webhook-ids and no new charge.
#[tokio::test]
async fn failed_webhooks_are_sent_again_in_bulk() {
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    let (account, key) = app.account(20).await;
    let (a, _) = app.template(&key, Some(&hook.url)).await;
    let (b, _) = app.template(&key, Some(&hook.url)).await;
    let pdf = example_pdf();
    let spent = [500, 500, 500, 500];
    let gone = drained(&app, &key, &hook, &[410], a, "a.pdf", pdf).await;
    let failed_a = drained(&app, &key, &hook, &spent, a, "a.pdf", pdf).await;
    let failed_b = drained(&app, &key, &hook, &spent, b, "b.pdf", pdf).await;
    let delivered = drained(&app, &key, &hook, &[], a, "a.pdf", pdf).await;
    let charged = app.charges(account).await;
    let sent_before = hook.received().len();
    let redeliver = |body: serde_json::Value, key: &str| {
        app.req(Method::POST, "/v1/jobs/redeliver", key).json(&body)
    };
    let ids = |body: &serde_json::Value| -> Vec<Uuid> {
        body["job_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j.as_str().unwrap().parse().unwrap())
            .collect()
    };

    let (status, body) = send(redeliver(
        serde_json::json!({"delivery": "failed", "template_id": b}),
        &key,
    ))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        (body["queued"].as_u64(), ids(&body)),
        (Some(1), vec![failed_b])
    );
    app.drain().await;
    let got = hook.received();
    assert_eq!(got.len(), sent_before + 1);
    let resent = got.last().unwrap();
    assert_eq!(resent.json()["job_id"], failed_b.to_string());
    let first_id = got
        .iter()
        .find(|r| r.json()["job_id"] == failed_b.to_string())
        .unwrap()
        .headers["webhook-id"]
        .clone();
    assert_eq!(
        resent.headers["webhook-id"], first_id,
        "the same webhook-id"
    );

    let (_, body) = send(redeliver(serde_json::json!({"delivery": "failed"}), &key)).await;
    assert_eq!(ids(&body), [failed_a]);
    let (_, body) = send(redeliver(
        serde_json::json!({"delivery": "gone", "limit": 1}),
        &key,
    ))
    .await;
    assert_eq!(ids(&body), [gone]);
    app.drain().await;
    assert_eq!(hook.received().len(), sent_before + 3);
    let (_, body) = send(redeliver(serde_json::json!({"delivery": "failed"}), &key)).await;
    assert_eq!(body["queued"], 0, "nothing left to send: {body}");
    assert!(listed(&app, &key, "delivery=failed").await.is_empty());
    assert_eq!(
        ids_of(&listed(&app, &key, "delivery=delivered").await),
        [delivered, failed_b, failed_a, gone]
    );
    assert_eq!(
        app.charges(account).await,
        charged,
        "redelivery never charges"
    );

    // Another account: its own (none), never these; its ids are not ours.
    let (_, other) = app.account(1).await;
    hook.answers.lock().unwrap().extend(spent);
    let failed_again = drained(&app, &key, &hook, &[], a, "a.pdf", pdf).await;
    let (status, body) = send(redeliver(serde_json::json!({"delivery": "failed"}), &other)).await;
    assert_eq!(
        (status, &body["queued"]),
        (StatusCode::ACCEPTED, &serde_json::json!(0)),
        "{body}"
    );
    let (status, body) = send(redeliver(
        serde_json::json!({"delivery": "failed", "template_id": a}),
        &other,
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "template_not_found");
    assert_eq!(
        ids_of(&listed(&app, &key, "delivery=failed").await),
        [failed_again]
    );
    // Past retention (24 h after it finished) its results are gone, whether
    // or not the janitor has run: nothing to send again.
    sqlx::query("UPDATE jobs SET finished_at = now() - interval '25 hours' WHERE id = $1")
        .bind(failed_again)
        .execute(&app.pool)
        .await
        .unwrap();
    let (_, body) = send(redeliver(serde_json::json!({"delivery": "failed"}), &key)).await;
    assert_eq!(body["queued"], 0, "{body}");
    // A job still running (a ZIP whose other documents are not done) has
    // no retention running yet: its failed webhooks can be sent again.
    sqlx::query("UPDATE jobs SET finished_at = NULL WHERE id = $1")
        .bind(failed_again)
        .execute(&app.pool)
        .await
        .unwrap();
    let (_, body) = send(redeliver(serde_json::json!({"delivery": "failed"}), &key)).await;
    assert_eq!(ids(&body), [failed_again]);

    for (body, code) in [
        (
            serde_json::json!({"delivery": "pending"}),
            "invalid_delivery",
        ),
        (
            serde_json::json!({"delivery": "failed", "limit": 0}),
            "invalid_limit",
        ),
        (
            serde_json::json!({"delivery": "failed", "limit": 1001}),
            "invalid_limit",
        ),
    ] {
        let (status, got) = send(redeliver(body.clone(), &key)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {got}");
        assert_eq!(got["error"]["code"], code, "{got}");
    }
    let (status, got) = send(redeliver(serde_json::json!({"template_id": a}), &key)).await;
    assert!(status.is_client_error(), "{got}");
}

/// After a rotation webhooks carry a signature made with each secret for the
/// grace period, so a receiver still on the old one keeps verifying; a
/// rotation without grace (a leaked secret) stops the old one at once.
#[tokio::test]
async fn a_rotated_secret_keeps_signing_until_its_grace_ends() {
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    let (_, key) = app.account(10).await;
    let (template, first) = app.template(&key, Some(&hook.url)).await;
    let rotate = |query: &str| {
        app.req(
            Method::POST,
            &format!("/v1/templates/{template}/webhook-secret/rotate{query}"),
            &key,
        )
    };
    let (status, body) = send(rotate("")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = body["secret"].as_str().unwrap().to_owned();
    let until: chrono::DateTime<chrono::Utc> = body["previous_secret_expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let grace = until - chrono::Utc::now();
    assert!(
        (23..=24).contains(&grace.num_hours()),
        "a day by default, not {grace}"
    );
    let (_, shown) = send(app.req(Method::GET, &format!("/v1/templates/{template}"), &key)).await;
    assert_eq!(
        shown["previous_secret_expires_at"],
        body["previous_secret_expires_at"]
    );

    drained(&app, &key, &hook, &[], template, "a.pdf", example_pdf()).await;
    let got = hook.received().pop().unwrap();
    assert_eq!(got.headers["webhook-signature"].matches("v1,").count(), 2);
    verify_with_python(&second, &got);
    verify_with_python(&first, &got);
    // The test event is signed the same way.
    let (status, event) = send(app.req(
        Method::POST,
        &format!("/v1/templates/{template}/webhook-test"),
        &key,
    ))
    .await;
    assert_eq!(
        (status, &event["status_code"]),
        (StatusCode::OK, &serde_json::json!(200)),
        "{event}"
    );
    let got = hook.received().pop().unwrap();
    verify_with_python(&first, &got);
    // Shaped as a payload: `type` first, `result` with the template's fields in order.
    let body = std::str::from_utf8(&got.body).unwrap();
    let top = paperhook_core::testing::keys_in_order(body, &[]);
    assert_eq!(top[..3], ["type", "job_id", "template_id"], "{body}");
    assert_eq!(
        paperhook_core::testing::keys_in_order(body, &["result"]),
        [
            "invoice_number",
            "invoice_date",
            "total",
            "vendor",
            "line_items"
        ]
    );

    // Rotated again without grace: only the new secret signs.
    let (status, body) = send(rotate("?previous_valid_secs=0")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["previous_secret_expires_at"].is_null(), "{body}");
    let third = body["secret"].as_str().unwrap().to_owned();
    drained(&app, &key, &hook, &[], template, "a.pdf", example_pdf()).await;
    let got = hook.received().pop().unwrap();
    let signature = &got.headers["webhook-signature"];
    assert_eq!(signature.matches("v1,").count(), 1, "{signature}");
    verify_with_python(&third, &got);
    let ts: i64 = got.headers["webhook-timestamp"].parse().unwrap();
    for old in [&first, &second] {
        let theirs = webhook::sign(old, &got.headers["webhook-id"], ts, &got.body).unwrap();
        assert!(!signature.contains(&theirs), "an old secret still signs");
    }
    let (_, shown) = send(app.req(Method::GET, &format!("/v1/templates/{template}"), &key)).await;
    assert!(shown["previous_secret_expires_at"].is_null(), "{shown}");

    let (status, body) = send(rotate("?previous_valid_secs=604801")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_previous_valid_secs");
    let (_, now) = send(app.req(
        Method::GET,
        &format!("/v1/templates/{template}/webhook-secret"),
        &key,
    ))
    .await;
    assert_eq!(now["secret"], third, "a refused rotation changes nothing");
}

/// Whether the previous secret still signs is judged by the database's
/// clock, which stamped its expiry (`now() + grace`), not by the clock of
/// the worker or API process reading it: the row read carries it only
/// while it is valid by `now()`.
#[tokio::test]
async fn the_previous_secret_expires_by_the_databases_clock() {
    use paperhook_core::db::templates;
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let hook = Receiver::start().await;
    let (_, key) = app.account(10).await;
    let (template, first) = app.template(&key, Some(&hook.url)).await;
    let (status, body) = send(app.req(
        Method::POST,
        &format!("/v1/templates/{template}/webhook-secret/rotate"),
        &key,
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = body["secret"].as_str().unwrap().to_owned();
    // Its expiry moved to `secs` from the database's now.
    let expires = |secs: f64| {
        let pool = app.pool.clone();
        async move {
            sqlx::query(
                "UPDATE templates
                 SET webhook_previous_secret_expires_at = now() + make_interval(secs => $2)
                 WHERE id = $1",
            )
            .bind(template)
            .bind(secs)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    let read = || async {
        templates::get_any(&app.pool, template)
            .await
            .unwrap()
            .unwrap()
    };
    let shown = || async {
        send(app.req(Method::GET, &format!("/v1/templates/{template}"), &key))
            .await
            .1
    };

    // Expired a second ago by the database's clock: not read, not shown,
    // not used.
    expires(-1.0).await;
    let row = read().await;
    assert!(row.webhook_previous_secret_enc.is_none(), "{row:?}");
    assert!(row.previous_secret_enc().is_none());
    assert!(shown().await["previous_secret_expires_at"].is_null());
    drained(&app, &key, &hook, &[], template, "a.pdf", example_pdf()).await;
    let got = hook.received().pop().unwrap();
    let signature = &got.headers["webhook-signature"];
    assert_eq!(signature.matches("v1,").count(), 1, "{signature}");
    verify_with_python(&second, &got);
    let ts: i64 = got.headers["webhook-timestamp"].parse().unwrap();
    let old = webhook::sign(&first, &got.headers["webhook-id"], ts, &got.body).unwrap();
    assert!(!signature.contains(&old), "the expired secret still signs");

    // Valid for another minute: both sign.
    expires(60.0).await;
    assert!(read().await.previous_secret_enc().is_some());
    assert!(shown().await["previous_secret_expires_at"].is_string());
    drained(&app, &key, &hook, &[], template, "a.pdf", example_pdf()).await;
    let got = hook.received().pop().unwrap();
    assert_eq!(got.headers["webhook-signature"].matches("v1,").count(), 2);
    verify_with_python(&second, &got);
    verify_with_python(&first, &got);
}

/// `GET /v1/jobs/{id}` of a ZIP: each document with its result, charge,
/// delivery and attempts in order.
#[tokio::test]
async fn job_detail_shows_each_documents_result_charge_and_attempts() {
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    let (_, key) = app.account(10).await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    let pdf = example_pdf();
    let zip = make_zip(&[
        ("1.pdf", pdf),
        ("bad.pdf", b"%PDF-1.4\nnot really a PDF"),
        ("2.pdf", pdf),
    ]);
    let job = drained(&app, &key, &hook, &[500], template, "batch.zip", &zip).await;
    let (status, detail) = send(app.req(Method::GET, &format!("/v1/jobs/{job}"), &key)).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    let docs = detail["documents"].as_array().unwrap();
    let names: Vec<_> = docs
        .iter()
        .map(|d| d["file_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["1.pdf", "bad.pdf", "2.pdf"]);
    for (i, d) in docs.iter().enumerate() {
        assert_eq!(d["index"], i, "{d}");
        assert_eq!(d["delivery"]["state"], "delivered", "{d}");
        assert!(
            d["delivery"]["webhook_id"]
                .as_str()
                .unwrap()
                .starts_with("msg_")
        );
        if d["file_name"] == "bad.pdf" {
            assert_eq!(d["error"]["code"], "corrupt_document", "{d}");
            assert!(d["result"].is_null() && d["fields"].is_null(), "{d}");
            assert_eq!(d["credits_charged"], 0);
        } else {
            assert_eq!(d["result"]["invoice_number"], "INV-2026-0042", "{d}");
            assert!(d["fields"]["invoice_number"].is_object(), "{d}");
            assert_eq!(d["credits_charged"], 1);
        }
    }
    assert_eq!(detail["credits_charged"], 2);
    let attempts: Vec<Vec<i64>> = docs
        .iter()
        .map(|d| {
            d["delivery"]["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["status_code"].as_i64().unwrap())
                .collect()
        })
        .collect();
    let mut flat: Vec<_> = attempts.iter().map(Vec::as_slice).collect();
    flat.sort();
    assert_eq!(flat, [&[200][..], &[200], &[500, 200]], "{attempts:?}");
}

/// A receiver on 127.0.0.1 that answers every request with `reply` (a
/// whole HTTP response), holding the first one until `release` is notified
/// when `hold_first`; returns its URL and how many requests it got.
async fn receiver_answering(
    reply: &'static [u8],
    hold_first: bool,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<tokio::sync::Notify>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/hook",
        listener.local_addr().unwrap().port()
    );
    let got = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let (g, r) = (got.clone(), release.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (g, r) = (g.clone(), r.clone());
            tokio::spawn(async move {
                if read_request(&mut sock).await.is_some() {
                    if g.fetch_add(1, SeqCst) == 0 && hold_first {
                        r.notified().await;
                    }
                    let _ = sock.write_all(reply).await;
                    let _ = sock.shutdown().await;
                }
            });
        }
    });
    (url, got, release)
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";

async fn delivery_state(app: &TestApp) -> String {
    sqlx::query_scalar("SELECT state FROM webhook_deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// A redelivery asked for while the webhook is being sent is not lost: the
/// sending worker used to record its attempt over the reset (delivered, or
/// failed on the last attempt of the schedule), and the redelivery's queued
/// task was never made, as the running one stood in its place.
#[tokio::test]
async fn a_redelivery_asked_for_during_a_send_sends_again() {
    use std::sync::atomic::Ordering::SeqCst;
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (url, got, release) = receiver_answering(OK, true).await;
    let (_, key) = app.account(5).await;
    let (template, _) = app.template(&key, Some(&url)).await;
    let job = app
        .submit(&key, template, "invoice.pdf", example_pdf())
        .await;
    let worker = app.another_worker(|_| {});
    let working = tokio::spawn(async move { drain(&worker).await });
    let g = got.clone();
    eventually(60, "the webhook reaching the receiver", || {
        let g = g.clone();
        async move { (g.load(SeqCst) == 1).then_some(()) }
    })
    .await;
    let (status, body) =
        send(app.req(Method::POST, &format!("/v1/jobs/{job}/redeliver"), &key)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["queued"], 1);
    release.notify_one();
    working.await.unwrap();
    app.drain().await;
    assert_eq!(got.load(SeqCst), 2, "the redelivery was not sent");
    assert_eq!(delivery_state(&app).await, "delivered");
}

/// A job whose webhook's first attempt got a 503 and waits for its retry:
/// the receiver, the account's key and the job.
async fn a_webhook_that_failed_once(app: &TestApp) -> (Receiver, String, Uuid) {
    let hook = Receiver::start().await;
    hook.answers.lock().unwrap().extend([503]);
    let (_, key) = app.account(5).await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    let job = app
        .submit(&key, template, "invoice.pdf", example_pdf())
        .await;
    // Job, document and a first attempt that fails, in one worker slot.
    app.worker.run_once().await.unwrap();
    assert_eq!(hook.received().len(), 1);
    assert_eq!(delivery_state(app).await, "pending");
    (hook, key, job)
}

/// A redelivery of a webhook that waits for its next retry sends it now, on
/// a fresh schedule: its waiting task used to keep its retry time (an hour
/// away here) and the attempts it had used.
#[tokio::test]
async fn a_redelivery_of_a_webhook_waiting_for_a_retry_sends_it_now() {
    let app =
        TestApp::spawn_with(StorageKind::Fs, |c| c.webhook_retry_schedule = "1h".into()).await;
    let (hook, key, job) = a_webhook_that_failed_once(&app).await;
    let (status, body) =
        send(app.req(Method::POST, &format!("/v1/jobs/{job}/redeliver"), &key)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["queued"], 1);
    let (run_at, attempts): (chrono::DateTime<chrono::Utc>, i32) = sqlx::query_as(
        "SELECT run_at, attempts FROM tasks WHERE kind = 'delivery' AND state = 'available'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        run_at <= chrono::Utc::now(),
        "the retry still waits until {run_at}"
    );
    assert_eq!(
        attempts, 0,
        "the fresh schedule starts with the task's attempts used"
    );
    app.drain().await;
    assert_eq!(hook.received().len(), 2, "the redelivery was not sent now");
    assert_eq!(delivery_state(&app).await, "delivered");
    let ids: Vec<String> = hook
        .received()
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert_eq!(ids[0], ids[1], "a redelivery keeps its webhook-id");
}

/// A job whose webhook failed once, its retry due and its task held by
/// another worker on its last attempt (the schedule's next retry an hour
/// away): the app, the receiver, the job, that worker and its task.
async fn a_delivery_on_its_last_claim() -> (
    TestApp,
    Receiver,
    Uuid,
    paperhook_worker::Worker,
    paperhook_core::queue::Task,
) {
    let app =
        TestApp::spawn_with(StorageKind::Fs, |c| c.webhook_retry_schedule = "1h".into()).await;
    let (hook, _key, job) = a_webhook_that_failed_once(&app).await;
    sqlx::query(
        "UPDATE tasks SET run_at = now(), attempts = max_attempts - 1 WHERE kind = 'delivery'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (worker, task) = app
        .claimed_by_another_worker(paperhook_core::queue::kind::DELIVERY)
        .await;
    (app, hook, job, worker, task)
}

/// A worker giving up a delivery's task locks the delivery before the task,
/// as a redelivery does: it used to lock the task first, and a redelivery
/// asked for meanwhile (holding the delivery, waiting for the task) ended in
/// a deadlock that failed one of the two. And the redelivery is kept: the
/// give-up that comes after it gives the task back, and the webhook goes out.
#[tokio::test]
async fn giving_up_a_delivery_during_a_redelivery_neither_deadlocks_nor_loses_it() {
    let (app, hook, job, worker, task) = a_delivery_on_its_last_claim().await;

    // A redelivery holds the job's deliveries...
    let mut redelivery = app.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM webhook_deliveries WHERE job_id = $1 ORDER BY id FOR UPDATE")
        .bind(job)
        .execute(&mut *redelivery)
        .await
        .unwrap();
    // ...when the worker gives the task up, and waits for a lock...
    let giving_up = tokio::spawn(async move {
        paperhook_worker::pipeline::give_up(&worker, &task, "the worker kept crashing").await
    });
    waiting_for_a_lock(&app.pool, "the give-up waiting for a lock").await;
    // ...then the redelivery queues the task (which waits for the task's row
    // when the give-up holds it) and commits.
    let queued = paperhook_core::db::deliveries::redeliver(&mut redelivery, job, 25).await;
    assert!(queued.is_ok(), "the redelivery failed: {queued:?}");
    redelivery.commit().await.unwrap();
    let gave_up = giving_up.await.unwrap();
    assert!(
        matches!(gave_up, Ok(false)),
        "the give-up failed, or failed the redelivered webhook: {gave_up:?}"
    );
    let task_state: String = sqlx::query_scalar("SELECT state FROM tasks WHERE kind = 'delivery'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        (task_state.as_str(), delivery_state(&app).await.as_str()),
        ("available", "pending")
    );
    app.drain().await;
    assert_eq!(delivery_state(&app).await, "delivered");
    assert_eq!(hook.received().len(), 2, "the redelivery was not sent");
}

/// A delivery whose task is given up (claimed its max_attempts times:
/// workers dying while sending it) fails with an attempt saying why, and
/// is counted as a failed attempt: it used to fail with no attempt, and
/// uncounted.
#[tokio::test]
async fn a_delivery_given_up_is_recorded_as_an_attempt() {
    use paperhook_core::metrics::WEBHOOK_ATTEMPTS;
    let (app, hook, _job, worker, task) = a_delivery_on_its_last_claim().await;
    let counted = || {
        WEBHOOK_ATTEMPTS
            .with_label_values(&["failed", "none"])
            .get()
    };
    let before = counted();
    let gave_up =
        paperhook_worker::pipeline::give_up(&worker, &task, "the worker kept crashing").await;
    assert!(matches!(gave_up, Ok(true)), "{gave_up:?}");
    assert_eq!(delivery_state(&app).await, "failed");
    let (class, message): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT error_class, error_message FROM webhook_attempts ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(class.as_deref(), Some("gave_up"));
    let message = message.unwrap_or_default();
    assert!(message.contains("the worker kept crashing"), "{message}");
    assert!(counted() > before, "the give-up was not counted");
    assert_eq!(hook.received().len(), 1, "nothing more was sent");
}

/// Past `result_retention_secs` a job's results are expired for the API,
/// even before the janitor's pass marks them: its webhooks are not sent
/// either (they carry the results).
#[tokio::test]
async fn no_webhook_is_sent_once_the_results_are_past_retention() {
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (hook, key, job) = a_webhook_that_failed_once(&app).await;
    sqlx::query(
        "UPDATE jobs SET finished_at = now() - make_interval(secs => $2 + 1) WHERE id = $1",
    )
    .bind(job)
    .bind(app.config.result_retention_secs as f64)
    .execute(&app.pool)
    .await
    .unwrap();
    let (status, body) = send(
        app.req(Method::POST, "/v1/job-results", &key)
            .json(&serde_json::json!({"job_id": job})),
    )
    .await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    app.drain().await;
    assert_eq!(
        hook.received().len(),
        1,
        "a webhook went out after its results expired"
    );
    assert_eq!(delivery_state(&app).await, "failed");
    assert_eq!(
        attempts(&app).await,
        [
            (Some(503), Some("http".into())),
            (None, Some("expired".into()))
        ]
    );
}

/// A receiver's answer with a NUL character in its body (PostgreSQL text
/// cannot hold one) is recorded without it: recording the attempt used to
/// fail, and the delivered webhook was sent again and again.
#[tokio::test]
async fn a_response_body_with_nul_characters_is_recorded() {
    use std::sync::atomic::Ordering::SeqCst;
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (url, got, _) = receiver_answering(
        b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nok\0\0!!",
        false,
    )
    .await;
    let (_, key) = app.account(5).await;
    let (template, _) = app.template(&key, Some(&url)).await;
    app.submit(&key, template, "invoice.pdf", example_pdf())
        .await;
    app.drain().await;
    assert_eq!(got.load(SeqCst), 1);
    assert_eq!(delivery_state(&app).await, "delivered");
    let excerpt: String = sqlx::query_scalar("SELECT response_excerpt FROM webhook_attempts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(excerpt, "ok!!");
}

/// A webhook URL can carry secrets (`user:password@`, `?token=`): a failed
/// attempt's error, recorded and shown, must not quote them.
#[tokio::test]
async fn error_messages_do_not_quote_the_webhook_url() {
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (_, key) = app.account(5).await;
    // Port 9 (discard), which nothing listens on here, as in the other
    // tests that need a refused connection: a port picked free and closed
    // again could be taken meanwhile by another test's listener.
    let port = 9;
    let hook = Receiver::start().await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    sqlx::query("UPDATE templates SET webhook_url = $2 WHERE id = $1")
        .bind(template)
        .bind(format!(
            "http://hookuser:hunter2@127.0.0.1:{port}/hook?token=s3cr3t-t0ken"
        ))
        .execute(&app.pool)
        .await
        .unwrap();
    app.submit(&key, template, "invoice.pdf", example_pdf())
        .await;
    app.drain().await;
    let recorded: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT a.error_class, a.error_message FROM webhook_attempts a ORDER BY a.id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(!recorded.is_empty());
    let errors: Vec<String> = sqlx::query_scalar(
        "SELECT last_error FROM tasks WHERE kind = 'delivery' AND last_error IS NOT NULL",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    for (class, message) in &recorded {
        assert_eq!(class.as_deref(), Some("connect"), "{message:?}");
    }
    for text in recorded.iter().filter_map(|(_, m)| m.clone()).chain(errors) {
        assert!(
            !text.contains("hunter2") && !text.contains("s3cr3t") && !text.contains("hookuser"),
            "{text}"
        );
    }
}

/// A receiver that keeps webhooks waiting holds a worker's sending slots
/// (`worker_delivery_concurrency`), never its work slots: another
/// account's document is read meanwhile, and a webhook finding every
/// sending slot busy waits in the queue. (Webhooks used to take the same
/// slots as documents: receivers that drop requests without an answer,
/// each attempt held for `webhook_timeout_secs`, could stop every
/// extraction of the fleet.)
#[tokio::test]
async fn a_silent_receiver_does_not_hold_up_documents() {
    use std::sync::{Arc, Mutex};
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.worker_concurrency = 1;
        c.worker_delivery_concurrency = 2;
        c.webhook_timeout_secs = 300;
        c.worker_shutdown_grace_secs = 1;
    })
    .await;
    // Reads each request's connection and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/hook",
        listener.local_addr().unwrap().port()
    );
    let waiting = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn({
        let waiting = waiting.clone();
        async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let waiting = waiting.clone();
                tokio::spawn(async move {
                    if read_request(&mut sock).await.is_some() {
                        waiting.lock().unwrap().push(sock);
                    }
                });
            }
        }
    });
    let held = || waiting.lock().unwrap().len();
    let (_, silent_key) = app.account(10).await;
    let (silent, _) = app.template(&silent_key, Some(&url)).await;
    let (_, key) = app.account(10).await;
    let (template, _) = app.template(&key, None).await;
    let mut silent_jobs = Vec::new();
    for name in ["1.pdf", "2.pdf", "3.pdf"] {
        silent_jobs.push(app.submit(&silent_key, silent, name, example_pdf()).await);
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let (worker, stop) = (app.worker.clone(), stop.clone());
        async move { worker.run(stop).await }
    });
    eventually(60, "both sending slots waiting on the receiver", || async {
        (held() == 2).then_some(())
    })
    .await;
    let job = app.submit(&key, template, "4.pdf", example_pdf()).await;
    eventually(
        60,
        "the other account's document, read meanwhile",
        || async { (app.job_status(&key, job).await["status"] == "SUCCESS").then_some(()) },
    )
    .await;
    // All three silent jobs are done (submitted first, they took the one
    // work slot before the other account's job); the third's webhook waits
    // its turn.
    for silent_job in silent_jobs {
        let st = app.job_status(&silent_key, silent_job).await;
        assert_eq!(st["status"], "SUCCESS", "{st}");
    }
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE kind = 'delivery' AND state = 'available'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((pending, held()), (1, 2));
    stop.cancel();
    running.await.unwrap().unwrap();
}

/// Webhook attempts (what each receiver answered) are kept for
/// `webhook_attempts_retention_secs`, then deleted by the janitor; the
/// delivery itself stays.
#[tokio::test]
async fn webhook_attempts_are_deleted_after_their_retention() {
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (hook, _key, _job) = a_webhook_that_failed_once(&app).await;
    app.drain().await;
    assert_eq!(hook.received().len(), 2, "a 503, then the delivery");
    let attempts = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_attempts")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    assert_eq!(attempts().await, 2);

    let janitor = app.janitor();
    let retention = chrono::Duration::from_std(app.config.webhook_attempts_retention()).unwrap();
    // A day short of the retention: kept.
    let early = chrono::Utc::now() + retention - chrono::Duration::days(1);
    let report = janitor.run_once(early).await.unwrap();
    assert_eq!(report.attempts_deleted, 0, "{report:?}");
    assert_eq!(attempts().await, 2);
    // Past it: gone.
    let late = chrono::Utc::now() + retention + chrono::Duration::minutes(1);
    let report = janitor.run_once(late).await.unwrap();
    assert_eq!(report.attempts_deleted, 2, "{report:?}");
    assert_eq!(attempts().await, 0);
    assert_eq!(delivery_state(&app).await, "delivered");
}
