//! A finished job's data: its results whole over HTTP/1.0, and deleting it
//! (`DELETE /v1/jobs/{id}`) while the object store is unreachable.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

/// A job of `key`'s account, finished with `documents` documents whose
/// results are `{"n": INDEX}`, as a worker leaves it (none runs here).
async fn finished_job(app: &TestApp, key: &str, documents: i32) -> Uuid {
    let template = app.template(key).await;
    let (s, body) = send(app.req(Method::POST, "/process-job", key).json(&json!({
        "template_id": template.to_string(),
        "actual_image": B64.encode(example_pdf()),
        "static_values": {"company_name": "Acme Corp"},
    })))
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let job: Uuid = body["job_id"].as_str().unwrap().parse().unwrap();
    sqlx::query(
        "WITH d AS (
             INSERT INTO documents (id, job_id, idx, status, pages)
             SELECT gen_random_uuid(), $1, i, 'PROCESS IMAGE SUCCESS', 1
             FROM generate_series(0, $2::int - 1) AS i
             RETURNING id, job_id, idx)
         INSERT INTO results (document_id, job_id, result)
         SELECT id, job_id, jsonb_build_object('n', idx) FROM d",
    )
    .bind(job)
    .bind(documents)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE jobs SET status = 'SUCCESS', finished_at = now() WHERE id = $1")
        .bind(job)
        .execute(&app.pool)
        .await
        .unwrap();
    job
}

/// Everything the database holds of `job`: its row, documents, results,
/// webhook deliveries (payloads) and their attempts, as one JSON value.
async fn everything_of(app: &TestApp, job: Uuid) -> Value {
    sqlx::query_scalar(
        "SELECT jsonb_build_object(
             'job', (SELECT to_jsonb(j) FROM jobs j WHERE j.id = $1),
             'documents', (SELECT jsonb_agg(to_jsonb(d) ORDER BY d.idx)
                           FROM documents d WHERE d.job_id = $1),
             'results', (SELECT jsonb_agg(to_jsonb(r) ORDER BY r.document_id)
                         FROM results r WHERE r.job_id = $1),
             'deliveries', (SELECT jsonb_agg(to_jsonb(w) ORDER BY w.id)
                            FROM webhook_deliveries w WHERE w.job_id = $1),
             'attempts', (SELECT jsonb_agg(to_jsonb(a) ORDER BY a.id)
                          FROM webhook_attempts a
                          JOIN webhook_deliveries w ON w.id = a.delivery_id
                          WHERE w.job_id = $1))",
    )
    .bind(job)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Over HTTP/1.0 there are no chunks: an answer cut short would look whole,
/// so `/v1/job-results` reads every page of documents first and answers
/// with a Content-Length (what nginx, speaking HTTP/1.0 to the API unless
/// told otherwise, passes on). Raw TCP: reqwest speaks HTTP/1.1.
#[tokio::test]
async fn results_over_http_1_0_come_whole_with_a_length() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    // More documents than one page of the answer (100): several are read.
    let documents = 250;
    let job = finished_job(&app, &key, documents).await;
    let request = json!({"job_id": job.to_string()}).to_string();
    let mut conn = tokio::net::TcpStream::connect(app.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/job-results HTTP/1.0\r\nHost: paperhook\r\nx-auth: {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        request.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    // The server closes the connection after an HTTP/1.0 answer.
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        conn.read_to_end(&mut answer),
    )
    .await
    .expect("the connection was not closed after the answer")
    .unwrap();
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(&answer)));
    let head = std::str::from_utf8(&answer[..end]).unwrap().to_owned();
    let body = &answer[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap();
    assert!(
        status.starts_with("HTTP/1.") && status.split(' ').nth(1) == Some("200"),
        "{head}\n\n{}",
        String::from_utf8_lossy(body)
    );
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap_or_else(|| panic!("{l:?}"));
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let length: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(length, [body.len().to_string()], "{head}");
    assert!(
        !headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked")),
        "{head}"
    );
    let results: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(results["job_id"], job.to_string());
    assert_eq!(
        results["static_values"],
        json!({"company_name": "Acme Corp"})
    );
    let got = results["documents"].as_array().unwrap();
    assert_eq!(got.len(), documents as usize, "every document, every page");
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d["index"], i, "{d}");
        assert_eq!(d["result"], json!({"n": i}), "{d}");
    }
}

/// `DELETE /v1/jobs/{id}` when the object store cannot delete the job's
/// file: `503 storage_unavailable` and nothing changed (a retry finds the
/// job as it was, its results still served); once the store answers again
/// the deletion goes through.
#[tokio::test]
async fn deleting_a_job_while_the_store_is_down_changes_nothing() {
    // The job's file in the object store: a document kept inline, in the
    // database, is deleted there and would not reach the broken store.
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.inline_document_max_bytes = 0).await;
    let (_, key) = app.account(10).await;
    let job = finished_job(&app, &key, 2).await;
    // Each document's webhook delivered, with the payload and what the
    // receiver answered, which a deletion empties.
    sqlx::query(
        "WITH w AS (
             INSERT INTO webhook_deliveries
                 (id, message_id, account_id, job_id, document_id, state, payload, attempts, delivered_at)
             SELECT gen_random_uuid(), 'msg_' || d.id::text, j.account_id, j.id, d.id, 'delivered',
                    jsonb_build_object('result', r.result), 1, now()
             FROM documents d JOIN jobs j ON j.id = d.job_id JOIN results r ON r.document_id = d.id
             WHERE d.job_id = $1
             RETURNING id)
         INSERT INTO webhook_attempts (delivery_id, status_code, latency_ms, response_excerpt)
         SELECT id, 200, 5, 'ok' FROM w",
    )
    .bind(job)
    .execute(&app.pool)
    .await
    .unwrap();
    let file: String = sqlx::query_scalar("SELECT storage_key FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!file.starts_with("inline/"), "{file}");
    assert!(app.storage.exists(&file).await.unwrap(), "{file}");

    // A second API process on the same database, whose object store is an
    // S3 endpoint nothing listens on (port 9, as in the other tests that
    // need a refused connection: a port picked free and closed again could
    // be taken meanwhile by another test's listener): every request to it
    // is refused at once.
    let port = 9;
    let mut config = app.config.clone();
    config.storage_url = "s3://paperhook-unreachable/test".into();
    config.s3_endpoint = format!("http://127.0.0.1:{port}");
    config.s3_force_path_style = true;
    // Given, so that the SDK does not look for credentials elsewhere.
    config.s3_access_key_id = "unreachable".into();
    config.s3_secret_access_key = "unreachable-secret".to_owned().into();
    config.s3_connect_timeout_secs = 1;
    config.s3_read_timeout_secs = 1;
    let state = paperhook_api::serve::state(config.clone()).await.unwrap();
    let broken = TestApp::start(state, config, tempfile::tempdir().unwrap()).await;

    let before = everything_of(&app, job).await;
    assert!(before["job"]["data_deleted_at"].is_null(), "{before}");
    assert_eq!(
        before["results"].as_array().map(Vec::len),
        Some(2),
        "{before}"
    );
    assert_eq!(
        before["deliveries"].as_array().map(Vec::len),
        Some(2),
        "{before}"
    );
    let got = send(broken.req(Method::DELETE, &format!("/v1/jobs/{job}"), &key)).await;
    assert_error(&got, 503, "storage_unavailable");
    assert_eq!(
        everything_of(&app, job).await,
        before,
        "the job's data changed on a 503"
    );
    assert!(app.storage.exists(&file).await.unwrap(), "{file} is gone");
    let results = || {
        send(
            app.req(Method::POST, "/v1/job-results", &key)
                .json(&json!({"job_id": job.to_string()})),
        )
    };
    let (s, served) = results().await;
    assert_eq!(s, StatusCode::OK, "{served}");
    assert_eq!(
        served["documents"][1]["result"],
        json!({"n": 1}),
        "{served}"
    );

    // Through a process whose store works, the deletion goes through.
    let res = app
        .req(Method::DELETE, &format!("/v1/jobs/{job}"), &key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let after = everything_of(&app, job).await;
    assert!(after["job"]["data_deleted_at"].is_string(), "{after}");
    assert_eq!(after["job"]["static_values"], json!({}), "{after}");
    assert!(after["results"].is_null(), "{after}");
    assert!(
        after["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["payload"] == json!({})),
        "{after}"
    );
    assert!(
        !app.storage.exists(&file).await.unwrap(),
        "{file} is still stored"
    );
    assert_error(&results().await, 410, "results_deleted");
}

/// A job's detail shows each delivery's latest 20 attempts, oldest first,
/// and how many there are in all: redeliveries can make millions.
#[tokio::test]
async fn a_job_shows_the_latest_attempts_of_each_delivery_and_their_count() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let job = finished_job(&app, &key, 2).await;
    // Document 0's webhook tried 45 times (latency i ms for the i-th),
    // document 1's 3 times.
    sqlx::query(
        "WITH w AS (
             INSERT INTO webhook_deliveries
                 (id, message_id, account_id, job_id, document_id, state, payload, attempts)
             SELECT gen_random_uuid(), 'msg_' || d.id::text, j.account_id, j.id, d.id, 'pending',
                    '{}'::jsonb, 0
             FROM documents d JOIN jobs j ON j.id = d.job_id
             WHERE d.job_id = $1
             RETURNING id, document_id)
         INSERT INTO webhook_attempts (delivery_id, status_code, latency_ms, response_excerpt)
         SELECT w.id, 500, i, 'no'
         FROM w JOIN documents d ON d.id = w.document_id,
              generate_series(1, CASE d.idx WHEN 0 THEN 45 ELSE 3 END) AS i
         ORDER BY i",
    )
    .bind(job)
    .execute(&app.pool)
    .await
    .unwrap();
    let (s, body) = send(app.req(Method::GET, &format!("/v1/jobs/{job}"), &key)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let latencies = |doc: usize| -> Vec<i64> {
        body["documents"][doc]["delivery"]["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["latency_ms"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(latencies(0), (26..=45).collect::<Vec<_>>(), "{body}");
    assert_eq!(body["documents"][0]["delivery"]["attempts_total"], 45);
    assert_eq!(latencies(1), [1, 2, 3], "{body}");
    assert_eq!(body["documents"][1]["delivery"]["attempts_total"], 3);
}
