//! A single document from submission to webhook, credits and results.

use std::time::Duration;

use paperhook_core::testing::keys_in_order;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn pdf_end_to_end_signed_charged_deleted_and_results() {
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    let (account, key) = app.account(10).await;
    let (template, secret) = app.template(&key, Some(&hook.url)).await;
    let job = app
        .submit(&key, template, "invoice.pdf", example_pdf())
        .await;

    // Not finished yet: a clear not-ready answer.
    let (status, body) = send(
        app.req(Method::POST, "/v1/job-results", &key)
            .json(&json!({"job_id": job, "result_format": "json"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "results_not_ready");

    app.drain().await;
    let st = app.job_status(&key, job).await;
    assert_eq!(st["status"], "SUCCESS", "{st}");
    assert_eq!(
        st["documents"][0]["status"], "PROCESS IMAGE SUCCESS",
        "{st}"
    );

    // One signed webhook with the seed's shape plus document and status.
    let got = hook.received();
    assert_eq!(got.len(), 1);
    verify_with_python(&secret, &got[0]);
    assert_eq!(got[0].headers["authorization"], "Bearer test-token");
    assert!(got[0].headers["webhook-id"].starts_with("msg_"));
    let p = got[0].json();
    assert_eq!(p["job_id"], job.to_string());
    assert_eq!(p["template_id"], template.to_string());
    assert_eq!(
        p["static_values"],
        json!({"company_name": "Acme Corp", "batch": 7})
    );
    assert_eq!(p["status"], "SUCCESS");
    assert_eq!(
        p["document"],
        json!({"index": 0, "file_name": "invoice.pdf", "pages": 1})
    );
    assert_eq!(p["result"]["invoice_number"], "INV-2026-0042", "{p}");
    // In the product page's order, `result` in the template's.
    let body = std::str::from_utf8(&got[0].body).unwrap();
    assert_eq!(
        keys_in_order(body, &[]),
        [
            "job_id",
            "template_id",
            "static_values",
            "result",
            "document",
            "status"
        ]
    );
    let template_order = [
        "invoice_number",
        "invoice_date",
        "total",
        "vendor",
        "line_items",
    ];
    assert_eq!(keys_in_order(body, &["result"]), template_order);
    assert_eq!(
        keys_in_order(body, &["document"]),
        ["index", "file_name", "pages"]
    );

    // Charged once: one credit for one page.
    assert_eq!(app.credits(account).await, 9);
    assert_eq!(app.charges(account).await, 1);

    // The stored file is gone after delivery.
    let key_of: String = sqlx::query_scalar("SELECT storage_key FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!app.storage.exists(&key_of).await.unwrap());

    // Results as JSON and CSV.
    let (status, body) = send(
        app.req(Method::POST, "/v1/job-results", &key)
            .json(&json!({"job_id": job, "result_format": "json"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "SUCCESS");
    assert_eq!(body["static_values"]["company_name"], "Acme Corp");
    assert_eq!(
        body["documents"][0]["result"]["invoice_number"],
        "INV-2026-0042"
    );
    // The results, and the job's detail: in the template's order.
    let mut text = String::new();
    for req in [
        app.req(Method::POST, "/v1/job-results", &key)
            .json(&json!({"job_id": job})),
        app.req(Method::GET, &format!("/v1/jobs/{job}"), &key),
    ] {
        text = req.send().await.unwrap().text().await.unwrap();
        assert_eq!(
            keys_in_order(&text, &["documents", "0", "result"]),
            template_order,
            "{text}"
        );
    }
    // The detail's whereabouts of each field found, in the same order.
    let located = keys_in_order(&text, &["documents", "0", "fields"]);
    let mut in_template_order = template_order.to_vec();
    in_template_order.retain(|f| located.iter().any(|l| l == f));
    assert!(located.len() >= 3, "{text}");
    assert_eq!(located, in_template_order, "{text}");
    let res = app
        .req(Method::POST, "/v1/job-results", &key)
        .json(&json!({"job_id": job, "result_format": "csv"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = res.text().await.unwrap();
    let mut lines = csv.split("\r\n");
    assert_eq!(
        lines.next().unwrap(),
        "job_id,index,file_name,status,pages,error_code,error_message,batch,company_name,invoice_number,invoice_date,total,vendor,line_items"
    );
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(&format!(
            "{job},0,invoice.pdf,PROCESS IMAGE SUCCESS,1,,,7,Acme Corp,INV-2026-0042,"
        )),
        "{row}"
    );
    // The table is one quoted JSON cell.
    assert!(row.contains("\"[{\"\""), "{row}");

    // Another account's job is unknown.
    let (_, other) = app.account(1).await;
    let (status, body) = send(
        app.req(Method::POST, "/v1/job-results", &other)
            .json(&json!({"job_id": job, "result_format": "json"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = send(
        app.req(Method::POST, "/v1/job-results", &key)
            .json(&json!({"job_id": job, "result_format": "xml"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Redeliver: the same webhook-id again.
    let (status, body) =
        send(app.req(Method::POST, &format!("/v1/jobs/{job}/redeliver"), &key)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["queued"], 1);
    app.drain().await;
    let got = hook.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].headers["webhook-id"], got[0].headers["webhook-id"]);
    verify_with_python(&secret, &got[1]);
    assert_eq!(app.charges(account).await, 1, "redelivery never charges");

    // A redelivery still queued when the results expire is not sent.
    let (status, _) = send(app.req(Method::POST, &format!("/v1/jobs/{job}/redeliver"), &key)).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // 25 hours later (the janitor's clock moves, nothing sleeps): expired.
    let janitor = app.janitor();
    let report = janitor.run_once(chrono::Utc::now()).await.unwrap();
    assert_eq!(report.jobs_expired, 0);
    // What the receiver answered ("ok": it could as well echo the results)
    // is shown while the results are, and not once they are past their
    // retention, even before the janitor has come.
    let excerpts = |detail: &serde_json::Value| -> Vec<serde_json::Value> {
        detail["documents"][0]["delivery"]["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["response_excerpt"].clone())
            .collect()
    };
    let (_, detail) = send(app.req(Method::GET, &format!("/v1/jobs/{job}"), &key)).await;
    assert_eq!(excerpts(&detail), [json!("ok"), json!("ok")], "{detail}");
    let finished = |hours: i32| {
        sqlx::query(
            "UPDATE jobs SET finished_at = finished_at - make_interval(hours => $2) WHERE id = $1",
        )
        .bind(job)
        .bind(hours)
        .execute(&app.pool)
    };
    finished(25).await.unwrap();
    let (_, detail) = send(app.req(Method::GET, &format!("/v1/jobs/{job}"), &key)).await;
    assert_eq!(excerpts(&detail), [json!(null), json!(null)], "{detail}");
    finished(-25).await.unwrap();
    let later = chrono::Utc::now() + chrono::Duration::hours(25);
    let report = janitor.run_once(later).await.unwrap();
    assert!(report.leader);
    assert_eq!(report.jobs_expired, 1);
    let (status, body) = send(
        app.req(Method::POST, "/v1/job-results", &key)
            .json(&json!({"job_id": job, "result_format": "csv"})),
    )
    .await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(body["error"]["code"], "results_expired");
    assert_eq!(results_of(&app, job).await, 0);

    // The webhook payload held the results: emptied too, and the queued
    // redelivery failed, saying why, instead of sending anything.
    let (state, payload): (String, serde_json::Value) =
        sqlx::query_as("SELECT state, payload FROM webhook_deliveries WHERE job_id = $1")
            .bind(job)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), &payload), ("failed", &json!({})));
    let last: (String, String) = sqlx::query_as(
        "SELECT a.error_class, a.error_message FROM webhook_attempts a
         JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.job_id = $1 ORDER BY a.id DESC LIMIT 1",
    )
    .bind(job)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(last.0, "expired");
    assert!(last.1.contains("result_retention_secs"), "{}", last.1);
    // The answers are gone from the attempts, which are kept longer.
    let (_, kept) = answers_kept(&app.pool, job).await;
    assert_eq!(kept, 0, "the receiver's answers outlived the results");
    app.drain().await;
    assert_eq!(hook.received().len(), 2, "nothing sent after expiry");
    let (status, body) =
        send(app.req(Method::POST, &format!("/v1/jobs/{job}/redeliver"), &key)).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(body["error"]["code"], "results_expired");
    let (status, body) = send(
        app.req(Method::POST, "/v1/jobs/redeliver", &key)
            .json(&json!({"delivery": "failed"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["queued"], 0, "expired jobs are left out");
}

#[tokio::test]
async fn insufficient_credits_fails_without_charging() {
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    let (account, key) = app.account(1).await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    let first = app.submit(&key, template, "a.pdf", example_pdf()).await;
    app.drain().await;
    // Accepted while the account had a credit (as when another document
    // took the last one meanwhile), read once it has none.
    let set_credits = |n: i64| {
        let pool = app.pool.clone();
        async move {
            sqlx::query("UPDATE accounts SET credits = $2 WHERE id = $1")
                .bind(account)
                .bind(n)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    set_credits(1).await;
    let second = app.submit(&key, template, "b.pdf", example_pdf()).await;
    set_credits(0).await;
    app.drain().await;
    let a = app.job_status(&key, first).await;
    let b = app.job_status(&key, second).await;
    let mut statuses = [a["status"].clone(), b["status"].clone()];
    statuses.sort_by_key(|s| s.to_string());
    assert_eq!(statuses, [json!("FAILED"), json!("SUCCESS")]);
    let failed = if a["status"] == "FAILED" { &a } else { &b };
    assert_eq!(
        failed["documents"][0]["error"]["code"], "insufficient_credits",
        "{failed}"
    );
    assert_eq!(failed["documents"][0]["status"], "PROCESS IMAGE FAILED");
    // With no credit left it is not even read: failed before extraction.
    assert!(failed["documents"][0]["pages"].is_null(), "{failed}");
    assert!(
        failed["documents"][0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no credits left (a page costs 1): add credits"),
        "{failed}"
    );
    assert_eq!(app.credits(account).await, 0);
    assert_eq!(app.charges(account).await, 1);
    let got = hook.received();
    assert_eq!(got.len(), 2);
    let failure = got
        .iter()
        .map(|r| r.json())
        .find(|p| p["status"] == "FAILED")
        .unwrap();
    assert_eq!(failure["error"]["code"], "insufficient_credits");
    // Sent as null: receivers index `result` in every payload.
    assert_eq!(
        failure.get("result"),
        Some(&serde_json::Value::Null),
        "{failure}"
    );
}

#[tokio::test]
async fn without_webhook_the_file_is_deleted_when_finished() {
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (_, key) = app.account(5).await;
    let (template, _) = app.template(&key, None).await;
    let job = app.submit(&key, template, "scan.png", example_png()).await;
    app.drain().await;
    // The example scan is read (OCR) and holds every required field.
    let st = app.job_status(&key, job).await;
    assert_eq!(st["status"], "SUCCESS", "{st}");
    assert_eq!(
        st["documents"][0]["status"], "PROCESS IMAGE SUCCESS",
        "{st}"
    );
    let (key_of, deleted): (String, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT storage_key, file_deleted_at FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(deleted.is_some());
    assert!(!app.storage.exists(&key_of).await.unwrap());
}

#[tokio::test]
async fn pdf_page_limit_fails_the_document_without_charging() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.max_pages = 2).await;
    let (account, key) = app.account(10).await;
    let (template, _) = app.template(&key, None).await;
    let job = app.submit(&key, template, "long.pdf", &blank_pdf(3)).await;
    app.drain().await;
    let st = app.job_status(&key, job).await;
    assert_eq!(st["status"], "FAILED", "{st}");
    assert_eq!(st["documents"][0]["status"], "PROCESS IMAGE FAILED");
    assert_eq!(
        st["documents"][0]["error"]["code"], "page_limit_exceeded",
        "{st}"
    );
    assert_eq!(st["error"]["code"], "page_limit_exceeded");
    assert_eq!(app.charges(account).await, 0);
    assert_eq!(app.credits(account).await, 10);
}

#[tokio::test]
async fn results_and_redeliver_are_in_the_openapi_document() {
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (status, doc) = send(app.client.get(format!("{}/openapi.json", app.url))).await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/v1/job-results"), "{:?}", paths.keys());
    assert!(
        paths.contains_key("/v1/jobs/{job_id}/redeliver"),
        "{:?}",
        paths.keys()
    );
    let text = doc.to_string();
    assert!(text.contains("webhook-signature"));
}

/// A document whose workers all died (kill -9 on every attempt) must not stay
/// in PROCESSING IMAGE: the rescuer hands it back, and the next worker records
/// the failure, delivers it and finishes the job.
#[tokio::test]
async fn a_document_whose_workers_keep_dying_ends_failed() {
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    let (account, key) = app.account(5).await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    let job = app.submit(&key, template, "a.pdf", example_pdf()).await;
    // A worker split the job, then died on the document's last attempt: the
    // job's task is done; the document's runs under an expired lease, out
    // of attempts. (A real worker runs a single file's document straight
    // after the split, so the state is set up here.)
    let mut tx = app.pool.begin().await.unwrap();
    let storage_key: String = sqlx::query_scalar("SELECT storage_key FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let new = paperhook_core::db::documents::NewDocument {
        id: uuid::Uuid::now_v7(),
        idx: 0,
        file_name: Some("a.pdf".into()),
        content_type: Some("pdf".into()),
        storage_key: Some(storage_key),
        failure: None,
    };
    paperhook_core::db::documents::insert_all(&mut tx, job, &[new])
        .await
        .unwrap();
    for sql in [
        "UPDATE jobs SET status = 'PROCESSING IMAGE' WHERE id = $1",
        "UPDATE tasks SET state = 'completed', finished_at = now() WHERE kind = 'job' AND ref_id = $1",
        "INSERT INTO tasks (kind, ref_id, state, attempts, max_attempts, locked_by, locked_until)
         SELECT 'document', id, 'running', 25, 25, 'dead-worker', now() - interval '1 minute'
         FROM documents WHERE job_id = $1",
    ] {
        sqlx::query(sql).bind(job).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();

    app.drain().await;
    let status = app.job_status(&key, job).await;
    assert_eq!(status["status"], "FAILED", "{status}");
    assert_eq!(status["documents"][0]["status"], "PROCESS IMAGE FAILED");
    assert_eq!(status["documents"][0]["error"]["code"], "processing_failed");
    assert_eq!(app.charges(account).await, 0);
    let got = hook.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["status"], "FAILED");
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE state IN ('available', 'running')")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
}

/// A single file runs job, document and webhook in one claim: the worker
/// inserts each next task already claimed and runs it in the same slot, so
/// nothing waits in the queue in between.
#[tokio::test]
async fn a_single_file_goes_from_claim_to_webhook_in_one_slot() {
    let app = TestApp::spawn().await;
    let hook = Receiver::start().await;
    let (account, key) = app.account(5).await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    let job = app.submit(&key, template, "a.pdf", example_pdf()).await;
    let worker = app.another_worker(|c| c.worker_concurrency = 1);
    assert_eq!(
        worker.run_once().await.unwrap(),
        paperhook_worker::Outcome::Worked(1)
    );
    assert_eq!(hook.received().len(), 1);
    assert_eq!(app.job_status(&key, job).await["status"], "SUCCESS");
    assert_eq!(app.charges(account).await, 1);
    let tasks: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT kind, state, attempts FROM tasks ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let done = |kind: &str| (kind.to_owned(), "completed".to_owned(), 1);
    assert_eq!(tasks, vec![done("job"), done("document"), done("delivery")]);
}

/// A document whose stored file is gone before a worker reads it (deleted
/// by hand, lost with a volume) fails at once with `file_missing`: no retry
/// would find it, no page was read to charge, and the failure webhook still
/// tells the client.
#[tokio::test]
async fn a_stored_file_gone_before_processing_fails_the_document_with_file_missing() {
    for kind in [StorageKind::Fs, StorageKind::S3] {
        // The document in the object store, not inline in the database.
        let app = TestApp::spawn_with(kind, |c| c.inline_document_max_bytes = 0).await;
        let hook = Receiver::start().await;
        let (account, key) = app.account(5).await;
        let (template, secret) = app.template(&key, Some(&hook.url)).await;
        let job = app
            .submit(&key, template, "invoice.pdf", example_pdf())
            .await;
        let key_of: String = sqlx::query_scalar("SELECT storage_key FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert!(
            key_of.starts_with(paperhook_core::storage::DOCUMENTS_PREFIX),
            "{key_of}"
        );
        assert!(app.storage.exists(&key_of).await.unwrap());
        // No worker has run yet: the file goes before the job is read.
        app.storage.delete(&key_of).await.unwrap();
        assert!(!app.storage.exists(&key_of).await.unwrap());
        app.drain().await;

        let st = app.job_status(&key, job).await;
        assert_document_failed(&st, "file_missing", "no longer in storage");
        assert_eq!(st["error"]["code"], "file_missing", "{st}");
        assert_eq!(st["documents"][0]["status"], "PROCESS IMAGE FAILED", "{st}");
        // Never read: no page count, nothing charged.
        assert!(st["documents"][0]["pages"].is_null(), "{st}");
        assert_eq!(app.credits(account).await, 5);
        assert_eq!(app.charges(account).await, 0);
        // Failed on its first attempt, not retried until its attempts ran out.
        let task: (String, i32) =
            sqlx::query_as("SELECT state, attempts FROM tasks WHERE kind = 'document'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(task, ("completed".to_owned(), 1));

        let got = hook.received();
        assert_eq!(got.len(), 1, "one failure webhook");
        verify_with_python(&secret, &got[0]);
        let p = got[0].json();
        assert_eq!(p["job_id"], job.to_string(), "{p}");
        assert_eq!(p["status"], "FAILED", "{p}");
        assert_eq!(p["error"]["code"], "file_missing", "{p}");
        assert_eq!(
            p["document"],
            json!({"index": 0, "file_name": "invoice.pdf", "pages": null}),
            "{p}"
        );
        assert_eq!(p.get("result"), Some(&serde_json::Value::Null), "{p}");
    }
}

/// A worker that cannot delete a delivered job's files (the storage is down,
/// or it is killed first) must not record them as deleted: the janitor's
/// next pass deletes them. Found by the fault-injection suite: the files
/// used to be marked deleted before the deletion, and were then never
/// deleted at all.
#[tokio::test]
async fn files_a_worker_could_not_delete_go_on_the_janitors_next_pass() {
    // The document in the object store, not inline in the database.
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.inline_document_max_bytes = 0).await;
    let (_, key) = app.account(5).await;
    let (template, _) = app.template(&key, None).await;
    let job = app
        .submit(&key, template, "invoice.pdf", example_pdf())
        .await;
    // A worker whose storage is unreachable processes nothing here but the
    // clean-up: hand it the finished job with its file still stored.
    app.drain().await;
    let key_of: String = sqlx::query_scalar("SELECT storage_key FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    app.storage
        .put_bytes(&key_of, example_pdf().to_vec().into())
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET file_deleted_at = NULL WHERE id = $1")
        .bind(job)
        .execute(&app.pool)
        .await
        .unwrap();
    let mut down = app.config.clone();
    down.storage_url = "s3://paperhook-down/x".into();
    down.s3_endpoint = "http://127.0.0.1:9".into();
    down.s3_access_key_id = "down".into();
    let storage = paperhook_core::storage::Storage::from_config(&down)
        .await
        .unwrap();
    let stranded = paperhook_worker::Worker::new(app.pool.clone(), storage, down).unwrap();
    stranded.cleanup_files(job).await;
    let deleted_at = || async {
        sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
            "SELECT file_deleted_at FROM jobs WHERE id = $1",
        )
        .bind(job)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    assert_eq!(deleted_at().await, None, "marked deleted, yet still stored");
    assert!(app.storage.exists(&key_of).await.unwrap());

    // The janitor's next pass (no clock moved: not the 24 h retention).
    let janitor = app.janitor();
    let report = janitor.run_once(chrono::Utc::now()).await.unwrap();
    assert_eq!(report.leftover_files_deleted, 1, "{report:?}");
    assert_eq!(report.jobs_expired, 0);
    assert!(!app.storage.exists(&key_of).await.unwrap());
    assert!(deleted_at().await.is_some());
    // Nothing left for the pass after.
    let report = janitor.run_once(chrono::Utc::now()).await.unwrap();
    assert_eq!(report.leftover_files_deleted, 0, "{report:?}");
}

/// Stored documents that belong to no job (an API process died between
/// storing and committing), or to a job whose files are deleted, and the
/// local store's half-written temporary files are deleted once older than
/// the grace period;
/// a job's document, a younger orphan's turn, and keys that are not ours stay.
#[tokio::test]
async fn the_janitor_deletes_documents_of_no_job_after_the_grace_period() {
    for kind in [StorageKind::Fs, StorageKind::S3] {
        // Documents in the object store (inline ones: the next test).
        let app = TestApp::spawn_with(kind, |c| c.inline_document_max_bytes = 0).await;
        let (_, key) = app.account(10).await;
        let (template, _) = app.template(&key, None).await;
        // Processed, its files deleted; then a file under its key, as a
        // worker whose lease ran out stores and may not live to delete.
        let done = app.submit(&key, template, "a.pdf", example_pdf()).await;
        app.drain().await;
        let done_key: String = sqlx::query_scalar(
            "SELECT storage_key FROM jobs WHERE id = $1 AND file_deleted_at IS NOT NULL",
        )
        .bind(done)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        // Submitted, not processed: its document stays stored.
        let job = app.submit(&key, template, "a.pdf", example_pdf()).await;
        let job_key: String = sqlx::query_scalar("SELECT storage_key FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        let orphans = [
            format!(
                "documents/{}/{}",
                uuid::Uuid::new_v4(),
                uuid::Uuid::now_v7()
            ),
            format!(
                "documents/{}/{}-doc-2",
                uuid::Uuid::new_v4(),
                uuid::Uuid::now_v7()
            ),
            format!("{done_key}-doc-0a1b2c3d-0"),
        ];
        let stranger = "documents/notes/readme.txt".to_owned();
        for k in orphans.iter().chain([&stranger]) {
            app.storage
                .put_bytes(k, bytes::Bytes::from_static(b"%PDF-1.4"))
                .await
                .unwrap();
        }
        // A copy a process killed mid-write left in the local store's
        // temporary folder goes with them.
        let temporary = match app.config.storage_location().unwrap() {
            paperhook_core::config::StorageLocation::File(root) => {
                let path = root.join(".tmp").join("killed-mid-write");
                std::fs::write(&path, b"%PDF-1.4 half of it").unwrap();
                Some(path)
            }
            _ => None,
        };
        let swept = 3 + u64::from(temporary.is_some());
        assert_eq!(
            app.orphan_sweeps().await,
            (0, swept),
            "none within the grace"
        );
        for k in &orphans {
            assert!(!app.storage.exists(k).await.unwrap(), "{k}");
        }
        if let Some(path) = temporary {
            assert!(!path.exists(), "the temporary file stayed");
        }
        assert!(app.storage.exists(&job_key).await.unwrap());
        assert!(app.storage.exists(&stranger).await.unwrap());
    }
}

/// Documents kept in the database go with their job's files: read by the
/// worker, deleted once delivered; one left behind (its job's files are
/// recorded deleted, or it has no job) goes on the janitor's pass after the
/// grace period, and a job's document waiting to be processed stays.
#[tokio::test]
async fn inline_documents_are_deleted_with_their_job_and_swept_when_left_behind() {
    let app = TestApp::spawn_with(StorageKind::S3, |_| {}).await;
    let hook = Receiver::start().await;
    let (_, key) = app.account(10).await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    let key_of = |job: uuid::Uuid| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT storage_key FROM jobs WHERE id = $1")
                .bind(job)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let inline_rows = || async {
        sqlx::query_scalar::<_, String>("SELECT key FROM inline_documents ORDER BY key")
            .fetch_all(&app.pool)
            .await
            .unwrap()
    };
    let done = app.submit(&key, template, "a.pdf", example_pdf()).await;
    let done_key = key_of(done).await;
    assert!(done_key.starts_with("inline/"), "{done_key}");
    assert_eq!(
        app.storage.get(&done_key).await.unwrap().as_ref(),
        example_pdf()
    );
    // Nothing went to the object store.
    assert!(
        app.storage
            .pages("documents/")
            .next()
            .await
            .transpose()
            .unwrap()
            .unwrap_or_default()
            .is_empty()
    );
    app.drain().await;
    let p = hook.received()[0].json();
    assert_eq!(p["result"]["invoice_number"], "INV-2026-0042", "{p}");
    assert!(inline_rows().await.is_empty(), "deleted once delivered");

    // Left behind: a row for the delivered job and one for no job at all.
    let waiting = app.submit(&key, template, "b.pdf", example_pdf()).await;
    let waiting_key = key_of(waiting).await;
    let nobody = uuid::Uuid::now_v7();
    for (key, job) in [(&done_key, done), (&format!("inline/x/{nobody}"), nobody)] {
        sqlx::query("INSERT INTO inline_documents (key, job_id, data) VALUES ($1, $2, 'x')")
            .bind(key)
            .bind(job)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    assert_eq!(inline_rows().await.len(), 3);
    assert_eq!(app.orphan_sweeps().await, (0, 2), "none within the grace");
    assert_eq!(inline_rows().await, std::slice::from_ref(&waiting_key));
    // Only the job insert writes an inline key.
    assert!(
        app.storage
            .put_bytes(&waiting_key, bytes::Bytes::from_static(b"x"))
            .await
            .is_err()
    );
    assert_eq!(
        app.storage.get(&waiting_key).await.unwrap().as_ref(),
        example_pdf()
    );
}

#[tokio::test]
async fn extraction_limits_come_from_the_configuration() {
    // An image over the configured pixel limit fails before it is decoded.
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.max_pixels_per_page = 10_000).await;
    let (account, key) = app.account(10).await;
    let (template, _) = app.template(&key, None).await;
    let job = app.submit(&key, template, "scan.png", example_png()).await;
    app.drain().await;
    let st = app.job_status(&key, job).await;
    assert_eq!(st["status"], "FAILED", "{st}");
    assert_eq!(
        st["documents"][0]["error"]["code"], "image_too_large",
        "{st}"
    );
    assert_eq!(app.charges(account).await, 0);

    // A document that takes longer than its time limit (100 blank pages to
    // render and read, 1 s) fails at once: no retry would do better.
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.document_time_limit_secs = 1).await;
    let (account, key) = app.account(1000).await;
    let (template, _) = app.template(&key, None).await;
    let started = std::time::Instant::now();
    let job = app
        .submit(&key, template, "long.pdf", &blank_pdf(100))
        .await;
    app.drain().await;
    let st = app.job_status(&key, job).await;
    assert_document_failed(&st, "document_timeout", "longer than its limit of 1 s");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(app.charges(account).await, 0);
    let attempts: i32 = sqlx::query_scalar(
        "SELECT attempts FROM tasks WHERE kind = 'document' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
}

/// A page over its time limit is tried once more (the machine may have
/// been busy), then the document fails with `timeout`: it used to be
/// retried 25 times with back-off, for hours.
#[tokio::test]
async fn a_page_over_its_time_limit_is_tried_twice_then_fails() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.page_time_limit_secs = 1;
        c.max_drawing_operations = 1 << 40;
    })
    .await;
    let (account, key) = app.account(10).await;
    let (template, _) = app.template(&key, None).await;
    let job = app
        .submit(&key, template, "slow.pdf", &slow_page_pdf())
        .await;
    let attempts = || {
        sqlx::query_scalar::<_, i32>(
            "SELECT attempts FROM tasks WHERE kind = 'document' ORDER BY id DESC LIMIT 1",
        )
        .fetch_one(&app.pool)
    };
    app.drain().await;
    // Tried once, waiting for its retry: brought forward.
    assert_eq!(attempts().await.unwrap(), 1);
    let st = app.job_status(&key, job).await;
    assert_ne!(st["status"], "FAILED", "{st}");
    sqlx::query("UPDATE tasks SET run_at = now() WHERE kind = 'document'")
        .execute(&app.pool)
        .await
        .unwrap();
    app.drain().await;
    let st = app.job_status(&key, job).await;
    assert_document_failed(&st, "timeout", "(at page 1)");
    assert_eq!(attempts().await.unwrap(), 2);
    assert_eq!(app.charges(account).await, 0);
}

/// One page drawing a form that draws the next ten times, seven deep: ten
/// million little squares, most of a minute to interpret.
fn slow_page_pdf() -> Vec<u8> {
    let stream = |dict: &str, data: &str| {
        format!(
            "<< {dict} /Length {} >>\nstream\n{data}\nendstream",
            data.len()
        )
    };
    let mut objs = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R \
         /Resources << /XObject << /X 5 0 R >> >> >>"
            .to_owned(),
        stream("", "/X Do"),
    ];
    for level in 0..=7 {
        let form = "/Type /XObject /Subtype /Form /BBox [0 0 595 842]";
        objs.push(if level < 7 {
            stream(
                &format!(
                    "{form} /Resources << /XObject << /X {} 0 R >> >>",
                    6 + level
                ),
                &"/X Do\n".repeat(10),
            )
        } else {
            stream(form, "0 0 1 1 re f")
        });
    }
    paperhook_core::testing::pdf_from_objects(&objs)
}

/// A webhook of the job is being sent when its data is deleted: the data
/// goes at once, but `DELETE` answers only once that attempt has ended, so
/// nothing of the job leaves after the 204, and what the receiver answered
/// (it may echo what it was sent) is not kept.
#[tokio::test]
async fn deleting_a_jobs_data_waits_for_a_webhook_being_sent() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use tokio::io::AsyncWriteExt;

    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    // A receiver that holds each request until released.
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
                    g.fetch_add(1, SeqCst);
                    r.notified().await;
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 14\r\nconnection: close\r\n\r\nINV-2026-0042!",
                        )
                        .await;
                }
            });
        }
    });
    let (_, key) = app.account(10).await;
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

    let mut deleting = tokio::spawn(send(app.req(
        Method::DELETE,
        &format!("/v1/jobs/{job}"),
        &key,
    )));
    let pool = app.pool.clone();
    eventually(30, "the job's data being deleted", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
                "SELECT data_deleted_at FROM jobs WHERE id = $1",
            )
            .bind(job)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    })
    .await;
    // The answer waits while the webhook is still in flight (a window, as
    // only the absence of an answer can show it).
    let early = tokio::time::timeout(std::time::Duration::from_millis(700), &mut deleting).await;
    assert!(
        early.is_err(),
        "DELETE answered while a webhook of the job was being sent: {early:?}"
    );
    release.notify_one();
    let (status, body) = deleting.await.unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(
        !paperhook_core::db::deliveries::being_sent(&app.pool, job)
            .await
            .unwrap()
    );
    working.await.unwrap();
    assert_eq!(got.load(SeqCst), 1, "nothing is sent after the deletion");
    let (answered, excerpts) = answers_kept(&app.pool, job).await;
    assert_eq!(answered, 1, "the attempt in flight was not recorded");
    assert_eq!(
        excerpts, 0,
        "the attempt that ended after the deletion kept the receiver's answer"
    );
}

/// `template_max_fields` is checked when a template is saved: a template
/// saved under a higher limit still extracts on a worker configured lower
/// (and over the extraction crate's default of 200 fields).
#[tokio::test]
async fn a_template_saved_under_a_higher_field_limit_still_extracts() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.template_max_fields = 250).await;
    let (_, key) = app.account(10).await;
    let mut t: serde_json::Value =
        serde_json::from_str(include_str!("../../../examples/template.json")).unwrap();
    t.as_object_mut().unwrap().remove("webhook");
    let fields = t["fields"].as_array_mut().unwrap();
    while fields.len() < 250 {
        let i = fields.len();
        fields.push(json!({"name": format!("extra_{i}"), "type": "text",
            "locator": {"kind": "label", "label": format!("No label {i}")}}));
    }
    let (status, body) = send(app.req(Method::POST, "/v1/templates", &key).json(&t)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let template: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
    let job = app
        .submit(&key, template, "invoice.pdf", example_pdf())
        .await;
    let lowered = app.another_worker(|c| c.template_max_fields = 10);
    drain(&lowered).await;
    let st = app.job_status(&key, job).await;
    assert_eq!(st["status"], "SUCCESS", "{st}");
    let (status, body) = send(
        app.req(Method::POST, "/v1/job-results", &key)
            .json(&json!({"job_id": job, "result_format": "json"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let result = &body["documents"][0]["result"];
    assert_eq!(result["invoice_number"], "INV-2026-0042", "{body}");
    assert!(result["extra_249"].is_null(), "{body}");
}

/// `DELETE /v1/jobs/{id}`: the files, results, webhook payloads and static
/// values go at once; the job stays with its statuses and charges, and a
/// webhook still waiting is never sent.
#[tokio::test]
async fn deleting_a_jobs_data_removes_files_results_and_payloads() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.webhook_retry_schedule = "0s,10m".into()
    })
    .await;
    let hook = Receiver::start().await;
    let (_, key) = app.account(10).await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    let zip = make_zip(&[("1.pdf", example_pdf()), ("2.pdf", example_pdf())]);
    // One webhook delivered, the other told to come back in two minutes.
    hook.answers.lock().unwrap().extend([429]);
    let job = app.submit(&key, template, "two.zip", &zip).await;
    let (status, body) = send(app.req(Method::DELETE, &format!("/v1/jobs/{job}"), &key)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "job_not_finished");
    app.drain().await;
    assert_eq!(app.job_status(&key, job).await["status"], "SUCCESS");
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT storage_key FROM jobs WHERE id = $1
         UNION SELECT storage_key FROM documents WHERE job_id = $1 AND storage_key IS NOT NULL",
    )
    .bind(job)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(keys.len(), 3, "the ZIP and its two documents: {keys:?}");
    for k in &keys {
        assert!(
            app.storage.exists(k).await.unwrap(),
            "{k} is stored until delivered"
        );
    }
    let sent = hook.received().len();
    let excerpts = |detail: &serde_json::Value| {
        detail["documents"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["delivery"]["attempts"].as_array().unwrap().clone())
            .map(|a| a["response_excerpt"].clone())
            .collect::<Vec<_>>()
    };
    let names = |detail: &serde_json::Value| {
        let mut names = vec![detail["file_name"].clone()];
        names.extend(
            detail["documents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["file_name"].clone()),
        );
        names
    };
    let (_, detail) = send(app.req(Method::GET, &format!("/v1/jobs/{job}"), &key)).await;
    assert_eq!(
        names(&detail),
        [json!("two.zip"), json!("1.pdf"), json!("2.pdf")]
    );
    assert_eq!(
        excerpts(&detail),
        [json!("ok"), json!("ok")],
        "what the receiver answered: {detail}"
    );

    let (_, other) = app.account(1).await;
    let (status, _) = send(app.req(Method::DELETE, &format!("/v1/jobs/{job}"), &other)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for _ in 0..2 {
        let res = app
            .req(Method::DELETE, &format!("/v1/jobs/{job}"), &key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::NO_CONTENT,
            "and again: nothing changes"
        );
    }

    for k in &keys {
        assert!(!app.storage.exists(k).await.unwrap(), "{k} was deleted");
    }
    assert_eq!(results_of(&app, job).await, 0);
    let payloads: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT state, payload FROM webhook_deliveries WHERE job_id = $1 ORDER BY state",
    )
    .bind(job)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        payloads,
        [
            ("delivered".into(), json!({})),
            ("failed".into(), json!({}))
        ]
    );
    let (status, detail) = send(app.req(Method::GET, &format!("/v1/jobs/{job}"), &key)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(detail["data_deleted_at"].is_string(), "{detail}");
    assert_eq!(detail["static_values"], json!({}));
    assert_eq!(
        names(&detail),
        [json!(null), json!(null), json!(null)],
        "file names can be personal data: {detail}"
    );
    assert_eq!(detail["credits_charged"], 2, "charges stay on record");
    assert!(
        excerpts(&detail).iter().all(|e| e.is_null()),
        "a receiver's answer can echo what it was sent: {detail}"
    );
    let attempts = detail["documents"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["delivery"]["attempts"].as_array().unwrap().clone())
        .collect::<Vec<_>>();
    assert!(
        attempts.iter().any(|a| a["error_class"] == "expired"
            && a["error_message"]
                .as_str()
                .unwrap()
                .contains("deleted on request")),
        "{attempts:?}"
    );
    assert_eq!(app.job_status(&key, job).await["status"], "SUCCESS");
    for (path, body) in [
        (
            "/v1/job-results".to_owned(),
            Some(json!({"job_id": job, "result_format": "json"})),
        ),
        (format!("/v1/jobs/{job}/redeliver"), None),
    ] {
        let mut req = app.req(Method::POST, &path, &key);
        if let Some(body) = &body {
            req = req.json(body);
        }
        let (status, got) = send(req).await;
        assert_eq!(status, StatusCode::GONE, "{path}: {got}");
        assert_eq!(got["error"]["code"], "results_deleted", "{got}");
    }
    // The waiting webhook is due in two minutes; make it due now: it is
    // not sent, its payload is gone.
    sqlx::query("UPDATE tasks SET run_at = now() WHERE kind = 'delivery' AND state = 'available'")
        .execute(&app.pool)
        .await
        .unwrap();
    app.drain().await;
    assert_eq!(hook.received().len(), sent, "nothing sent after deletion");

    // A worker that was sending it during the deletion may set it pending
    // again with a retry: that retry finds the results gone and sends nothing.
    sqlx::query(
        "UPDATE webhook_deliveries SET state = 'pending' WHERE job_id = $1 AND state = 'failed'",
    )
    .bind(job)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO tasks (kind, ref_id) SELECT 'delivery', id FROM webhook_deliveries
         WHERE job_id = $1 AND state = 'pending'",
    )
    .bind(job)
    .execute(&app.pool)
    .await
    .unwrap();
    app.drain().await;
    assert_eq!(
        hook.received().len(),
        sent,
        "an emptied payload is never sent"
    );
    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM webhook_deliveries WHERE job_id = $1 ORDER BY state")
            .bind(job)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(states, ["delivered", "failed"]);
}

#[tokio::test]
async fn deleting_a_jobs_data_forgets_names_quoted_in_error_messages() {
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (_, key) = app.account(10).await;
    let (template, _) = app.template(&key, None).await;
    let zip = make_zip(&[
        ("ok.pdf", example_pdf()),
        ("jane-doe/payslip.pdf", example_pdf()),
    ]);
    let job = app.submit(&key, template, "jane-doe.zip", &zip).await;
    app.drain().await;
    let detail = || async {
        let (status, detail) = send(app.req(Method::GET, &format!("/v1/jobs/{job}"), &key)).await;
        assert_eq!(status, StatusCode::OK, "{detail}");
        detail
    };
    let before = detail().await;
    assert_eq!(before["status"], "FAILED", "{before}");
    let failed = &before["documents"][1]["error"];
    assert_eq!(failed["code"], "zip_entry_in_folder", "{before}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("\"jane-doe/payslip.pdf\""),
        "{before}"
    );

    let (status, body) = send(app.req(Method::DELETE, &format!("/v1/jobs/{job}"), &key)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let after = detail().await;
    assert!(!after.to_string().contains("jane-doe"), "{after}");
    let failed = &after["documents"][1]["error"];
    assert_eq!(failed["code"], "zip_entry_in_folder", "the reason stays");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .starts_with("a file (name deleted) is inside a folder"),
        "{after}"
    );

    // An entry that fails the whole batch is no document: its name is in
    // the job's message and in the one document named after the upload.
    let corrupt = {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        w.start_file("ok.pdf", stored).unwrap();
        w.write_all(example_pdf()).unwrap();
        w.start_file("jane-roe.pdf", stored).unwrap();
        w.write_all(b"%PDF-1.4 a file whose checksum will not match")
            .unwrap();
        let mut zip = w.finish().unwrap().into_inner();
        let at = zip
            .windows(8)
            .position(|w| w == b"checksum")
            .expect("the stored entry's bytes");
        zip[at] = b'C';
        zip
    };
    let job = app.submit(&key, template, "batch.zip", &corrupt).await;
    app.drain().await;
    let (_, before) = send(app.req(Method::GET, &format!("/v1/jobs/{job}"), &key)).await;
    assert_eq!(before["error"]["code"], "invalid_zip", "{before}");
    assert!(
        before["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("\"jane-roe.pdf\" could not be unpacked"),
        "{before}"
    );
    let (status, body) = send(app.req(Method::DELETE, &format!("/v1/jobs/{job}"), &key)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, after) = send(app.req(Method::GET, &format!("/v1/jobs/{job}"), &key)).await;
    assert!(!after.to_string().contains("jane-roe"), "{after}");
    assert!(
        after["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("a file (name deleted) could not be unpacked"),
        "{after}"
    );
}

async fn results_of(app: &TestApp, job: uuid::Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM results WHERE job_id = $1")
        .bind(job)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// A worker whose storage is unreachable: every task that reads a file fails
/// and is retried.
async fn worker_with_storage_down(app: &TestApp) -> paperhook_worker::Worker {
    let mut down = app.config.clone();
    down.storage_url = "s3://paperhook-down/x".into();
    down.s3_endpoint = "http://127.0.0.1:9".into();
    down.s3_access_key_id = "down".into();
    let storage = paperhook_core::storage::Storage::from_config(&down)
        .await
        .unwrap();
    paperhook_worker::Worker::new(app.pool.clone(), storage, down).unwrap()
}

/// Makes the next statement that sets a job FAILED fail, once, as a
/// database that restarts or a connection that breaks would.
async fn fail_the_next_job_failure(app: &TestApp) {
    for sql in [
        "CREATE SEQUENCE blink",
        "CREATE FUNCTION blink() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.status = 'FAILED' AND nextval('blink') = 1 THEN
                 RAISE EXCEPTION 'the database blinked';
             END IF;
             RETURN NEW;
         END $$",
        "CREATE TRIGGER blink BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION blink()",
    ] {
        sqlx::query(sql).execute(&app.pool).await.unwrap();
    }
}

/// A task's last attempt fails, and recording that failure on its job fails
/// too: the task must stay leased, so that the rescuer hands it back and the
/// next claim records the failure. Failing the task there left its job in
/// UNZIPPING FILE for ever, never final, never cleaned up.
#[tokio::test]
async fn a_last_failure_that_cannot_be_recorded_is_recorded_on_the_next_claim() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(5).await;
    let (template, _) = app.template(&key, None).await;
    let zip = make_zip(&[("a.pdf", example_pdf())]);
    let job = app.submit(&key, template, "batch.zip", &zip).await;
    // The next claim of the job's task is its last.
    sqlx::query("UPDATE tasks SET attempts = max_attempts - 1 WHERE kind = 'job' AND ref_id = $1")
        .bind(job)
        .execute(&app.pool)
        .await
        .unwrap();
    fail_the_next_job_failure(&app).await;
    let down = worker_with_storage_down(&app).await;
    assert_eq!(
        down.run_once().await.unwrap(),
        paperhook_worker::Outcome::Worked(1)
    );
    let task_state = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT state FROM tasks WHERE kind = 'job' AND ref_id = $1",
        )
        .bind(job)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    assert_eq!(
        task_state().await,
        "running",
        "the task must keep its lease"
    );
    assert_eq!(app.job_status(&key, job).await["status"], "UNZIPPING FILE");

    // Its lease expires; a worker rescues it and records the failure.
    sqlx::query("UPDATE tasks SET locked_until = now() - interval '1 minute' WHERE ref_id = $1")
        .bind(job)
        .execute(&app.pool)
        .await
        .unwrap();
    app.drain().await;
    let st = app.job_status(&key, job).await;
    assert_eq!(st["status"], "FAILED", "{st}");
    assert_eq!(st["error"]["code"], "processing_failed", "{st}");
    // Finished, so that the janitor expires it.
    assert!(st["finished_at"].is_string(), "{st}");
    assert_eq!(task_state().await, "failed");
}

/// Giving up a task whose work already committed changes nothing: a ZIP
/// whose split committed (its documents queued) must not end FAILED because
/// something after that commit failed on the split's last attempt. (What
/// fails there, the database right after a commit, cannot be provoked from
/// outside, so the give-up is called as the worker would.)
#[tokio::test]
async fn giving_up_a_task_whose_work_committed_changes_nothing() {
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (_, key) = app.account(5).await;
    let (template, _) = app.template(&key, None).await;
    let zip = make_zip(&[("a.pdf", example_pdf()), ("b.pdf", example_pdf())]);
    let job = app.submit(&key, template, "batch.zip", &zip).await;
    // Only the split: its documents wait in the queue.
    let splitter = app.another_worker(|c| c.worker_concurrency = 1);
    let task: paperhook_core::queue::Task = sqlx::query_as(
        "UPDATE tasks SET attempts = max_attempts - 1 WHERE kind = 'job' AND ref_id = $1
         RETURNING id, kind, ref_id, attempts, max_attempts, locked_by, locked_until",
    )
    .bind(job)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    splitter.run_once().await.unwrap();
    assert_eq!(
        app.job_status(&key, job).await["status"],
        "UNZIP FILE SUCCESS"
    );
    // The split's last attempt, as its worker held it.
    let held = paperhook_core::queue::Task {
        attempts: task.max_attempts,
        locked_by: Some(splitter.id.clone()),
        ..task
    };
    let gave_up = paperhook_worker::pipeline::give_up(&splitter, &held, "cleaning up failed")
        .await
        .expect("give_up ran");
    assert!(!gave_up, "a task completed by its commit is not given up");
    assert_eq!(
        app.job_status(&key, job).await["status"],
        "UNZIP FILE SUCCESS"
    );
    app.drain().await;
    let st = app.job_status(&key, job).await;
    assert_eq!(st["status"], "SUCCESS", "{st}");
    assert_eq!(st["documents"].as_array().unwrap().len(), 2);
}

/// A task that never ends (here it waits for the account's row, which the
/// test holds; in production, a database connection the network dropped
/// without a word, which the client waits on for ever) is stopped at
/// `worker_task_time_limit_secs` and tried again, instead of keeping its
/// lease, renewed by the heartbeat, from every other worker for good.
#[tokio::test]
async fn a_task_past_its_time_limit_is_stopped_and_tried_again() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        (c.document_time_limit_secs, c.page_time_limit_secs) = (3, 2);
        c.webhook_timeout_secs = 1;
        c.worker_task_time_limit_secs = 10;
    })
    .await;
    let (account, key) = app.account(10).await;
    let (template, _) = app.template(&key, None).await;
    let job = app.submit(&key, template, "a.pdf", example_pdf()).await;
    // What charging the document takes, held.
    let mut holder = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
        .bind(account)
        .execute(&mut *holder)
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let ran = tokio::time::timeout(Duration::from_secs(60), app.worker.run_once()).await;
    assert!(
        matches!(ran, Ok(Ok(paperhook_worker::Outcome::Worked(1)))),
        "{ran:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(10));
    let (state, error): (String, Option<String>) =
        sqlx::query_as("SELECT state, last_error FROM tasks WHERE kind = 'document'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(state, "available");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("worker_task_time_limit_secs (10 s)"),
        "{error}"
    );
    assert_eq!(
        app.job_status(&key, job).await["status"],
        "PROCESSING IMAGE"
    );
    assert_eq!(app.charges(account).await, 0);

    // Once the row is free, the retry charges the document once.
    holder.rollback().await.unwrap();
    let st = eventually(60, "the retried document", || async {
        app.worker.run_once().await.unwrap();
        let st = app.job_status(&key, job).await;
        (st["status"] == "SUCCESS").then_some(st)
    })
    .await;
    assert_eq!(st["documents"][0]["pages"], 1, "{st}");
    assert_eq!(app.charges(account).await, 1);
    assert_eq!(app.credits(account).await, 9);
}

/// Giving a task up locks what the task is for (its account, then its job
/// here) before the task, as the work that completes a task does: the other
/// way round, a stale claim committing its work (holding the account and the
/// job, waiting for the task) while a new holder gave up (holding the task,
/// waiting for them) deadlocked, and PostgreSQL ended one of the two.
#[tokio::test]
async fn giving_up_locks_the_account_and_job_before_the_task() {
    use paperhook_core::testing::waiting_for_a_lock;
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (account, key) = app.account(10).await;
    let (template, _) = app.template(&key, None).await;
    let job = app.submit(&key, template, "a.pdf", example_pdf()).await;
    let (worker, task) = app
        .claimed_by_another_worker(paperhook_core::queue::kind::JOB)
        .await;

    // The account's row held, as by a charge, and the job's, as by work
    // committing.
    let mut charge = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
        .bind(account)
        .execute(&mut *charge)
        .await
        .unwrap();
    let mut work = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM jobs WHERE id = $1 FOR NO KEY UPDATE")
        .bind(job)
        .execute(&mut *work)
        .await
        .unwrap();
    let giving_up = tokio::spawn(async move {
        paperhook_worker::pipeline::give_up(&worker, &task, "the worker kept crashing").await
    });
    // A charge's lock does not hold the give-up (its key-share lock, and
    // its delivery's foreign-key check, go with it): it waits for the job.
    waiting_for_a_lock(&app.pool, "%FROM jobs%", "the give-up, for the job").await;
    // The task is not locked meanwhile: the work could complete it.
    let task_free = sqlx::query("SELECT 1 FROM tasks WHERE kind = 'job' FOR UPDATE NOWAIT")
        .execute(&app.pool)
        .await;
    assert!(task_free.is_ok(), "{task_free:?}");
    work.rollback().await.unwrap();
    // Given up while the charge still holds the account.
    let gave_up = giving_up.await.unwrap();
    assert!(matches!(gave_up, Ok(true)), "{gave_up:?}");
    charge.rollback().await.unwrap();
    let st = app.job_status(&key, job).await;
    assert_eq!(st["status"], "FAILED", "{st}");
    assert_eq!(st["error"]["code"], "processing_failed", "{st}");
}

/// Two documents of a job finishing at once, each having inserted its
/// webhook row first (whose foreign-key check holds the job FOR KEY SHARE),
/// both get through `finish_job_if_done`, one after the other: its lock on
/// the job was FOR UPDATE, which waits for the other's key-share lock, so
/// each waited for the other and PostgreSQL ended one (a deadlock), to be
/// extracted again.
#[tokio::test]
async fn siblings_finishing_together_do_not_deadlock() {
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (_, key) = app.account(10).await;
    let (template, _) = app.template(&key, None).await;
    let job = app.submit(&key, template, "a.pdf", example_pdf()).await;
    let sibling = || {
        let pool = app.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SELECT 1 FROM jobs WHERE id = $1 FOR KEY SHARE")
                .bind(job)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx
        }
    };
    // Both hold the job FOR KEY SHARE before either asks for its lock; each
    // then finishes and ends its own transaction, as a worker does.
    let (a, b) = (sibling().await, sibling().await);
    let finish = |mut tx: sqlx::Transaction<'static, sqlx::Postgres>| {
        tokio::spawn(async move {
            let finished = paperhook_core::db::documents::finish_job_if_done(&mut tx, job).await;
            tx.rollback().await.unwrap();
            finished.map(|_| ())
        })
    };
    let (a, b) = (finish(a), finish(b));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
}

/// A job's webhook attempts answered 200, and those that kept an excerpt of
/// the answer.
async fn answers_kept(pool: &sqlx::PgPool, job: uuid::Uuid) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE a.status_code = 200), count(a.response_excerpt)
         FROM webhook_attempts a
         JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.job_id = $1",
    )
    .bind(job)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Results are read and written a page of documents at a time: a job of
/// 250 documents comes back whole and in order, as JSON and as CSV (a key
/// only the last document's result holds gets its column); and an answer
/// whose results expire while it is being sent ends short (an error for the
/// client) instead of listing fewer documents.
#[tokio::test]
async fn results_are_sent_a_page_at_a_time() {
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (_, key) = app.account(10).await;
    let (template, _) = app.template(&key, None).await;
    let job = app
        .submit(&key, template, "invoice.pdf", example_pdf())
        .await;
    app.drain().await;
    // More documents like the first, as a ZIP would have; `extra` is added
    // to the result of the last.
    let more = |upto: i32, extra: serde_json::Value| {
        let pool = app.pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO documents (id, job_id, idx, file_name, status, pages, finished_at)
                 SELECT gen_random_uuid(), d.job_id, k, 'doc-' || k || '.pdf', d.status, d.pages, d.finished_at
                 FROM documents d, generate_series((SELECT max(idx) + 1 FROM documents WHERE job_id = $1), $2) k
                 WHERE d.job_id = $1 AND d.idx = 0",
            )
            .bind(job)
            .bind(upto)
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO results (document_id, job_id, result)
                 SELECT d.id, d.job_id, r.result || CASE WHEN d.idx = $2 THEN $3 ELSE '{}' END
                 FROM documents d, results r
                 WHERE d.job_id = $1
                   AND r.document_id = (SELECT id FROM documents WHERE job_id = $1 AND idx = 0)
                   AND NOT EXISTS (SELECT 1 FROM results x WHERE x.document_id = d.id)",
            )
            .bind(job)
            .bind(upto)
            .bind(extra)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    // Two full pages: the end comes with an empty third.
    more(199, json!({})).await;
    let (status, body) = send(
        app.req(Method::POST, "/v1/job-results", &key)
            .json(&json!({"job_id": job})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["documents"].as_array().unwrap().len(), 200);
    assert_eq!(body["documents"][199]["index"], 199);
    more(249, json!({"late": "yes"})).await;
    let (status, body) = send(
        app.req(Method::POST, "/v1/job-results", &key)
            .json(&json!({"job_id": job})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let docs = body["documents"].as_array().unwrap();
    let indexes: Vec<i64> = docs.iter().map(|d| d["index"].as_i64().unwrap()).collect();
    assert_eq!(indexes, (0..250).collect::<Vec<_>>());
    assert_eq!(docs[0]["file_name"], "invoice.pdf");
    assert_eq!(docs[170]["file_name"], "doc-170.pdf");
    assert_eq!(docs[170]["result"]["invoice_number"], "INV-2026-0042");
    assert_eq!(docs[249]["result"]["late"], "yes");
    assert_eq!(body["static_values"]["company_name"], "Acme Corp");
    let csv = app
        .req(Method::POST, "/v1/job-results", &key)
        .json(&json!({"job_id": job, "result_format": "csv"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.trim_end().split("\r\n").collect();
    assert_eq!(lines.len(), 251, "a header and 250 rows");
    assert!(lines[0].ends_with(",line_items,late"), "{}", lines[0]);
    assert!(lines[250].starts_with(&format!("{job},249,doc-249.pdf,")));
    assert!(lines[250].ends_with(",yes"), "{}", lines[250]);
    assert!(lines[249].ends_with(','), "{}", lines[249]);

    // 1,000 documents of 40 KB: more than the connection buffers between
    // the API and the client hold, so the API is still reading pages when
    // the results expire below.
    more(999, json!({})).await;
    sqlx::query("UPDATE results SET result = result || jsonb_build_object('pad', repeat('x', 40000)) WHERE job_id = $1")
        .bind(job)
        .execute(&app.pool)
        .await
        .unwrap();
    let mut res = app
        .req(Method::POST, "/v1/job-results", &key)
        .json(&json!({"job_id": job}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let first = res.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"{\"job_id\""));
    sqlx::query("UPDATE jobs SET results_expired_at = now() WHERE id = $1")
        .bind(job)
        .execute(&app.pool)
        .await
        .unwrap();
    let mut received = first.len();
    let ended = loop {
        match res.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => break Ok(received),
            Err(e) => break Err(e),
        }
    };
    assert!(
        ended.is_err(),
        "the answer ended as if whole after {received} bytes"
    );
}
