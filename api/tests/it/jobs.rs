//! `POST /process-job` and `GET /job-status`: the seed's shapes, every error,
//! idempotency, storage on disk and S3, and concurrency.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

fn json_job(template_id: impl ToString, doc: &[u8]) -> Value {
    json!({"template_id": template_id.to_string(), "actual_image": B64.encode(doc), "static_values": {"company_name": "Acme Corp"}})
}

async fn stored_key(app: &TestApp, job_id: &str) -> String {
    sqlx::query_scalar("SELECT storage_key FROM jobs WHERE id = $1")
        .bind(job_id.parse::<Uuid>().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// The seed's flow: base64 PNG and multipart PDF are accepted, stored,
/// queued as NEW and claimable.
async fn submit_and_check(app: &TestApp) {
    let (_, key) = app.account(100).await;
    let template_id = app.template(&key).await;

    let (s, body) = send(
        app.req(Method::POST, "/process-job", &key)
            .json(&json_job(template_id, example_png())),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["template_id"], template_id.to_string());
    assert_eq!(body["static_values"], json!({"company_name": "Acme Corp"}));
    let png_job = body["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        body.as_object().unwrap().len(),
        3,
        "exactly the seed's fields: {body}"
    );

    let form = Form::new()
        .text("template_id", template_id.to_string())
        .text(
            "static_values",
            r#"{"company_name": "Acme Corp", "batch": 7}"#,
        )
        .part(
            "actual_image",
            Part::bytes(example_pdf().to_vec()).file_name("invoice.pdf"),
        );
    let (s, body) = send(app.req(Method::POST, "/process-job", &key).multipart(form)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["static_values"]["batch"], 7);
    let pdf_job = body["job_id"].as_str().unwrap().to_owned();

    for (job, doc_type, bytes) in [
        (&png_job, "png", example_png()),
        (&pdf_job, "pdf", example_pdf()),
    ] {
        let (s, status) =
            send(app.req(Method::GET, &format!("/job-status?job_id={job}"), &key)).await;
        assert_eq!(s, StatusCode::OK, "{status}");
        assert_eq!(status["job_id"], job.as_str());
        assert_eq!(status["template_id"], template_id.to_string());
        assert_eq!(status["status"], "NEW");
        assert_eq!(status["document_type"], doc_type);
        let key = stored_key(app, job).await;
        assert_eq!(
            app.storage.get(&key).await.unwrap().as_ref(),
            bytes,
            "stored bytes differ"
        );
        // The PDF (985 bytes) is kept in the database with its job, the PNG
        // (72 KB, over inline_document_max_bytes) in the object store.
        let prefix = if doc_type == "pdf" {
            "inline/"
        } else {
            "documents/"
        };
        assert!(key.starts_with(prefix), "{key}");
    }
    let file_name: Option<String> = sqlx::query_scalar("SELECT file_name FROM jobs WHERE id = $1")
        .bind(pdf_job.parse::<Uuid>().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(file_name.as_deref(), Some("invoice.pdf"));

    // Both are claimable from the queue.
    let claimed = paperhook_core::queue::claim(
        &app.pool,
        "test-worker",
        &[paperhook_core::queue::kind::JOB],
        10,
        std::time::Duration::from_secs(30),
        None,
    )
    .await
    .unwrap();
    let mut ids: Vec<String> = claimed.iter().map(|t| t.ref_id.to_string()).collect();
    ids.sort();
    let mut want = vec![png_job, pdf_job];
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn submit_to_filesystem_storage() {
    submit_and_check(&TestApp::spawn().await).await;
}

/// A submission stores its job and queue task in the statement that
/// commits it, then wakes idle workers with a NOTIFY.
#[tokio::test]
async fn a_submission_queues_its_task_and_wakes_the_workers() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(100).await;
    let template_id = app.template(&key).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .unwrap();
    listener
        .listen(paperhook_core::queue::CHANNEL)
        .await
        .unwrap();
    let (s, body) = send(
        app.req(Method::POST, "/process-job", &key)
            .json(&json_job(template_id, example_pdf())),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let note = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .expect("no NOTIFY within 10 s")
        .unwrap();
    assert_eq!(note.payload(), paperhook_core::queue::kind::JOB);
    let job: Uuid = body["job_id"].as_str().unwrap().parse().unwrap();
    let tasks: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, state FROM tasks WHERE ref_id = $1")
            .bind(job)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(tasks, vec![("job".to_owned(), "available".to_owned())]);
}

#[tokio::test]
async fn submit_to_s3_storage() {
    submit_and_check(&TestApp::spawn_with(StorageKind::S3, |_| {}).await).await;
}

/// An S3 server that takes connections and never answers: a submission
/// fails 503 within the read timeout (and the SDK's retries) instead of
/// hanging, and no job is queued.
#[tokio::test]
async fn a_hung_s3_server_is_a_503_not_a_hang() {
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hung.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            connections.push(socket);
        }
    });
    let app = TestApp::spawn_with(StorageKind::S3, |c| {
        c.s3_endpoint = format!("http://{addr}");
        c.s3_read_timeout_secs = 1;
        // Every document to the object store, this small one too.
        c.inline_document_max_bytes = 0;
    })
    .await;
    let (_, key) = app.account(10).await;
    let template_id = app.template(&key).await;
    let started = std::time::Instant::now();
    let got = send(
        app.req(Method::POST, "/process-job", &key)
            .json(&json_job(template_id, example_pdf())),
    )
    .await;
    assert_error(&got, 503, "storage_unavailable");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
    held.abort();
}

#[tokio::test]
async fn new_keys_are_written_in_place_and_never_overwrite() {
    // The local store with and without flushing to the disk, then S3.
    for (local, fsync) in [(true, true), (true, false), (false, true)] {
        let kind = if local {
            StorageKind::Fs
        } else {
            StorageKind::S3
        };
        let app = TestApp::spawn_with(kind, |c| c.storage_fsync = fsync).await;
        let s = &app.storage;
        // A folder that does not exist yet is made.
        s.put_new_bytes(
            "documents/new-account/j1",
            bytes::Bytes::from_static(b"first"),
        )
        .await
        .unwrap();
        assert_eq!(
            s.get("documents/new-account/j1").await.unwrap().as_ref(),
            b"first"
        );
        if local {
            // The local store refuses a key that exists and keeps its file.
            assert!(
                s.put_new_bytes(
                    "documents/new-account/j1",
                    bytes::Bytes::from_static(b"second")
                )
                .await
                .is_err()
            );
            assert_eq!(
                s.get("documents/new-account/j1").await.unwrap().as_ref(),
                b"first"
            );
            // Still the one file.
            let listed = s.pages("documents/").next().await.unwrap().unwrap();
            assert_eq!(listed.len(), 1, "{listed:?}");
            // The worker's writes (temporary file, then rename) into new
            // folders, and over an existing key.
            for data in [&b"one"[..], b"two"] {
                s.put_bytes("documents/other/deep/r", bytes::Bytes::from(data))
                    .await
                    .unwrap();
                assert_eq!(
                    s.get("documents/other/deep/r").await.unwrap().as_ref(),
                    data
                );
            }
        }
    }
}

#[tokio::test]
async fn s3_storage_operations() {
    let app = TestApp::spawn_with(StorageKind::S3, |_| {}).await;
    let s = &app.storage;
    s.check().await.unwrap();
    assert!(!s.exists("documents/a/b").await.unwrap());
    s.put_bytes("documents/a/b", bytes::Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert!(s.exists("documents/a/b").await.unwrap());
    assert_eq!(s.get("documents/a/b").await.unwrap().as_ref(), b"hello");
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), vec![7u8; 3 * 1024 * 1024]).unwrap();
    assert_eq!(
        s.put_file("documents/a/big", tmp.path()).await.unwrap(),
        3 * 1024 * 1024
    );
    assert_eq!(
        s.get("documents/a/big").await.unwrap().len(),
        3 * 1024 * 1024
    );
    s.delete("documents/a/b").await.unwrap();
    s.delete("documents/a/b").await.unwrap(); // deleting twice is fine
    assert!(!s.exists("documents/a/b").await.unwrap());
    assert!(matches!(
        s.get("documents/a/b").await,
        Err(paperhook_core::storage::StorageError::NotFound(_))
    ));
}

#[tokio::test]
async fn every_bad_submission_gets_its_status_and_code() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.max_upload_bytes = 100_000).await;
    let (_, key) = app.account(100).await;
    let template_id = app.template(&key).await;
    let post = |body: Value| send(app.req(Method::POST, "/process-job", &key).json(&body));
    let raw = |ct: &str, body: &str| {
        send(
            app.req(Method::POST, "/process-job", &key)
                .header("content-type", ct)
                .body(body.to_owned()),
        )
    };

    // 401
    assert_error(
        &send(
            app.client
                .post(format!("{}/process-job", app.url))
                .json(&json_job(template_id, example_pdf())),
        )
        .await,
        401,
        "unauthorized",
    );
    // 400 malformed JSON and multipart
    assert_error(
        &raw("application/json", "{\"template_id\": ").await,
        400,
        "malformed_json",
    );
    assert_error(
        &raw(
            "multipart/form-data; boundary=XYZ",
            "--XYZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated",
        )
        .await,
        400,
        "malformed_body",
    );
    // A multipart Content-Type set by hand, without its boundary.
    let got = raw("multipart/form-data", "--XYZ\r\n").await;
    assert_error(&got, 400, "malformed_body");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("boundary"),
        "{got:?}"
    );
    // 415 wrong request type and unsupported document type
    assert_error(
        &raw("text/plain", "hello").await,
        415,
        "unsupported_media_type",
    );
    assert_error(
        &post(json_job(template_id, b"GIF89a not supported")).await,
        415,
        "unsupported_document_type",
    );
    // 422 invalid base64, static_values not an object, missing or bad ids, empty file
    let mut bad = json_job(template_id, example_pdf());
    bad["actual_image"] = json!("@@@not base64@@@");
    assert_error(&post(bad).await, 422, "invalid_base64");
    for not_object in [json!("a string"), json!([1, 2]), json!(5)] {
        let mut bad = json_job(template_id, example_pdf());
        bad["static_values"] = not_object;
        assert_error(&post(bad).await, 422, "invalid_static_values");
    }
    let mut deep = json!("leaf");
    for _ in 0..40 {
        deep = json!({ "k": deep });
    }
    let mut bad = json_job(template_id, example_pdf());
    bad["static_values"] = deep;
    assert_error(&post(bad).await, 422, "invalid_static_values");
    // Past serde_json's own depth limit, and past twice the size limit (its
    // text is measured before it is parsed): the same answer.
    let body = json!({"template_id": template_id.to_string(), "actual_image": "QUJD"}).to_string();
    let deeper = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let huge = format!("{{\"a\": [{}0]}}", "0,".repeat(200_000));
    for (values, says) in [
        (deeper, "nested deeper than 16 levels"),
        (huge, "bytes; the limit is 393216 as sent"),
    ] {
        let with = body.replacen('{', &format!("{{\"static_values\": {values}, "), 1);
        let got = raw("application/json", &with).await;
        assert_error(&got, 422, "invalid_static_values");
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    // A huge template_id is not echoed back.
    let got = post(json!({"template_id": "x".repeat(10_000), "actual_image": "QUJD"})).await;
    assert_error(&got, 422, "invalid_template_id");
    assert!(got.1.to_string().len() < 1_000, "{}", got.1);
    // The fields as an array, or a document that is no string.
    assert_error(
        &post(json!([template_id.to_string(), B64.encode(example_pdf())])).await,
        400,
        "malformed_json",
    );
    assert_error(
        &post(json!({"template_id": template_id.to_string(), "actual_image": 5})).await,
        422,
        "invalid_field",
    );
    // PostgreSQL stores no NUL character: 422, not a failed insert's 500.
    for with_nul in [
        json!({"ref": "a\u{0}b"}),
        json!({"a\u{0}": 1}),
        json!({"l": [["\u{0}"]]}),
    ] {
        let mut bad = json_job(template_id, example_pdf());
        bad["static_values"] = with_nul;
        assert_error(&post(bad).await, 422, "invalid_static_values");
    }
    assert_error(
        &post(json!({"actual_image": B64.encode(example_pdf())})).await,
        422,
        "missing_field",
    );
    assert_error(
        &post(json!({"template_id": template_id.to_string()})).await,
        422,
        "missing_field",
    );
    assert_error(
        &post(json!({"template_id": "not-a-uuid", "actual_image": B64.encode(example_pdf())}))
            .await,
        422,
        "invalid_template_id",
    );
    let mut bad = json_job(template_id, example_pdf());
    bad["actual_image"] = json!("");
    assert_error(&post(bad).await, 422, "empty_document");
    let form = Form::new()
        .text("template_id", template_id.to_string())
        .text("static_values", "[1,2]")
        .part(
            "actual_image",
            Part::bytes(example_pdf().to_vec()).file_name("a.pdf"),
        );
    assert_error(
        &send(app.req(Method::POST, "/process-job", &key).multipart(form)).await,
        422,
        "invalid_static_values",
    );
    // A field twice, or the document as a file and as base64: which one
    // counts is not guessed.
    let twice = [
        Form::new()
            .text("template_id", Uuid::new_v4().to_string())
            .text("template_id", template_id.to_string())
            .part(
                "actual_image",
                Part::bytes(example_pdf().to_vec()).file_name("a.pdf"),
            ),
        Form::new()
            .text("template_id", template_id.to_string())
            .text("actual_image", B64.encode(example_pdf()))
            .part(
                "actual_image",
                Part::bytes(example_pdf().to_vec()).file_name("a.pdf"),
            ),
    ];
    for form in twice {
        let got = send(app.req(Method::POST, "/process-job", &key).multipart(form)).await;
        assert_error(&got, 422, "invalid_field");
        assert!(
            got.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains("2 times"),
            "{got:?}"
        );
    }
    // A file sent as a text part (no filename) is said to be one; text
    // parts that are not UTF-8 are not stored altered.
    for doc in [example_pdf(), example_png()] {
        let form = Form::new()
            .text("template_id", template_id.to_string())
            .part("actual_image", Part::bytes(doc.to_vec()));
        let got = send(app.req(Method::POST, "/process-job", &key).multipart(form)).await;
        assert_error(&got, 422, "invalid_base64");
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(message.contains("file part"), "{got:?}");
    }
    let form = Form::new()
        .text("template_id", template_id.to_string())
        .part(
            "static_values",
            Part::bytes(b"{\"name\": \"Z\xfcrich\"}".to_vec()),
        )
        .part(
            "actual_image",
            Part::bytes(example_pdf().to_vec()).file_name("a.pdf"),
        );
    let got = send(app.req(Method::POST, "/process-job", &key).multipart(form)).await;
    assert_error(&got, 422, "invalid_static_values");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("UTF-8"),
        "{got:?}"
    );
    // 404 unknown template
    assert_error(
        &post(json_job(Uuid::new_v4(), example_pdf())).await,
        404,
        "template_not_found",
    );
    // 413 over the limit, as JSON and as multipart (the PNG is 72 KB, limit 100 KB)
    let big = vec![b'%'; 150_000];
    assert_error(
        &post(json_job(template_id, &big)).await,
        413,
        "document_too_large",
    );
    let form = Form::new()
        .text("template_id", template_id.to_string())
        .part(
            "actual_image",
            Part::bytes(big.clone()).file_name("big.pdf"),
        );
    assert_error(
        &send(app.req(Method::POST, "/process-job", &key).multipart(form)).await,
        413,
        "document_too_large",
    );
    let form = Form::new()
        .text("template_id", template_id.to_string())
        .part(
            "actual_image",
            Part::bytes(vec![b'%'; 2_000_000]).file_name("huge.pdf"),
        );
    assert_error(
        &send(app.req(Method::POST, "/process-job", &key).multipart(form)).await,
        413,
        "document_too_large",
    );

    // Nothing was stored or queued by any of these.
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!((jobs, tasks), (0, 0));

    // Within the limit once parsed, three times it as sent: every
    // character escaped, as Python's json.dumps writes them.
    let escaped = format!("{{\"name\": \"{}\"}}", "\\u0416".repeat(25_000));
    let pdf =
        json!({"template_id": template_id.to_string(), "actual_image": B64.encode(example_pdf())});
    let with = pdf
        .to_string()
        .replacen('{', &format!("{{\"static_values\": {escaped}, "), 1);
    let (status, got) = raw("application/json", &with).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{got}");
    assert_eq!(got["static_values"]["name"].as_str().unwrap().len(), 50_000);

    // The body's own limit leaves room for what clients do with base64: a
    // document just under the limit, its base64 wrapped at 76 characters
    // with CRLFs (as MIME encoders do), with static values of 61.5 KB.
    let mut doc = example_png().to_vec();
    doc.resize(99_000, 0);
    let encoded = B64.encode(&doc);
    let wrapped = encoded
        .as_bytes()
        .chunks(76)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n");
    let body = json!({
        "template_id": template_id.to_string(),
        "actual_image": wrapped,
        "static_values": {"note": "n".repeat(61_500)},
    });
    assert!(serde_json::to_vec(&body).unwrap().len() > 200_000);
    let (status, got) = post(body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{got}");
    // static_values sent as a file (`curl -F static_values=@values.json`)
    // is read as well, not ignored; held to the same checks.
    for (values, want) in [
        (r#"{"batch": 7}"#, StatusCode::ACCEPTED),
        ("[1, 2]", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let form = Form::new()
            .text("template_id", template_id.to_string())
            .part(
                "static_values",
                Part::bytes(values.as_bytes().to_vec()).file_name("values.json"),
            )
            .part(
                "actual_image",
                Part::bytes(example_pdf().to_vec()).file_name("a.pdf"),
            );
        let (status, got) = send(app.req(Method::POST, "/process-job", &key).multipart(form)).await;
        assert_eq!(status, want, "{got}");
        if status == StatusCode::ACCEPTED {
            assert_eq!(got["static_values"], json!({"batch": 7}));
        } else {
            assert_eq!(got["error"]["code"], "invalid_static_values");
        }
    }
    // A multipart body within the size limit but of too many parts: 400,
    // not a claim that the document is too large.
    let mut form = Form::new().text("template_id", template_id.to_string());
    for i in 0..130 {
        form = form.text(format!("extra_{i}"), "x");
    }
    let got = send(app.req(Method::POST, "/process-job", &key).multipart(form)).await;
    assert_error(&got, 400, "malformed_body");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("128 parts"),
        "{}",
        got.1
    );

    // job-status errors
    assert_error(
        &send(app.req(Method::GET, "/job-status", &key)).await,
        422,
        "missing_field",
    );
    for path in ["/v1/jobs/nope", "/v1/jobs/nope/redeliver"] {
        let method = if path.ends_with("redeliver") {
            Method::POST
        } else {
            Method::GET
        };
        assert_error(
            &send(app.req(method, path, &key)).await,
            422,
            "invalid_job_id",
        );
    }
    for limit in ["0", "201"] {
        let path = format!("/v1/account/ledger?limit={limit}");
        assert_error(
            &send(app.req(Method::GET, &path, &key)).await,
            422,
            "invalid_limit",
        );
    }
    let got = send(app.req(Method::GET, "/v1/account/ledger?limit=abc", &key)).await;
    assert_error(&got, 400, "bad_request");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/openapi.json")
    );
    assert_error(
        &send(app.req(Method::GET, "/job-status?job_id=nope", &key)).await,
        422,
        "invalid_job_id",
    );
    assert_error(
        &send(app.req(
            Method::GET,
            &format!("/job-status?job_id={}", Uuid::new_v4()),
            &key,
        ))
        .await,
        404,
        "job_not_found",
    );
}

#[tokio::test]
async fn no_credits_is_402() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(0).await;
    let template_id = app.template(&key).await;
    let got = send(
        app.req(Method::POST, "/process-job", &key)
            .json(&json_job(template_id, example_pdf())),
    )
    .await;
    assert_error(&got, 402, "insufficient_credits");
    // Before the body is read: a body that is no submission at all hears
    // about the credits, not about itself.
    let got = send(
        app.req(Method::POST, "/process-job", &key)
            .header("content-type", "application/json")
            .body("[not json"),
    )
    .await;
    assert_error(&got, 402, "insufficient_credits");
}

#[tokio::test]
async fn jobs_of_another_account_are_404() {
    // Documents in files, to see that Bob's is not kept (an inline one
    // comes only with its job: `jobs::tests` in the core crate).
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.inline_document_max_bytes = 0).await;
    let (_, alice) = app.account(10).await;
    let (_, bob) = app.account(10).await;
    let template_id = app.template(&alice).await;
    let (_, body) = send(
        app.req(Method::POST, "/process-job", &alice)
            .json(&json_job(template_id, example_pdf())),
    )
    .await;
    let job = body["job_id"].as_str().unwrap();
    assert_error(
        &send(app.req(Method::GET, &format!("/job-status?job_id={job}"), &bob)).await,
        404,
        "job_not_found",
    );
    // Bob cannot submit to Alice's template either, and his upload is not
    // kept (the insert checks the template after the file is stored).
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
    assert_error(
        &send(
            app.req(Method::POST, "/process-job", &bob)
                .json(&json_job(template_id, example_pdf())),
        )
        .await,
        404,
        "template_not_found",
    );
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
}

#[tokio::test]
async fn idempotency_key_returns_the_first_job() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let (_, other) = app.account(10).await;
    let template_id = app.template(&key).await;
    let other_template = app.template(&other).await;
    let submit = |key: &str, template: Uuid, idem: &str| {
        app.req(Method::POST, "/process-job", key)
            .header("Idempotency-Key", idem)
            .json(&json_job(template, example_pdf()))
            .send()
    };
    let first = submit(&key, template_id, "order-42").await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    // Sequential and concurrent repeats all get the first job.
    let repeats =
        futures::future::join_all((0..8).map(|_| submit(&key, template_id, "order-42"))).await;
    for res in repeats {
        let res = res.unwrap();
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        assert_eq!(res.headers()["idempotent-replayed"], "true");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["job_id"], first["job_id"]);
    }
    // Another key, or another account with the same key, makes a new job.
    let b: Value = submit(&key, template_id, "order-43")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(b["job_id"], first["job_id"]);
    let c: Value = submit(&other, other_template, "order-42")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(c["job_id"], first["job_id"]);
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 3);

    // After the 24 h window the key makes a new job.
    sqlx::query("UPDATE jobs SET created_at = now() - interval '25 hours' WHERE idempotency_key = 'order-42' AND account_id = (SELECT account_id FROM jobs WHERE id = $1)")
        .bind(first["job_id"].as_str().unwrap().parse::<Uuid>().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let d: Value = submit(&key, template_id, "order-42")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(d["job_id"], first["job_id"]);
}

#[tokio::test]
async fn hundred_parallel_submissions() {
    // Without a rate limit: the key's burst (100) would also have to cover
    // the template's creation, refilled or not depending on timing.
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.rate_limit_per_sec = 0).await;
    let (_, key) = app.account(1000).await;
    let template_id = app.template(&key).await;
    let body = json_job(template_id, example_pdf());
    let results = futures::future::join_all((0..100).map(|_| {
        app.req(Method::POST, "/process-job", &key)
            .json(&body)
            .send()
    }))
    .await;
    let mut ids = std::collections::HashSet::new();
    for res in results {
        let res = res.unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.insert(body["job_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 100);
    let keys: Vec<String> = sqlx::query_scalar("SELECT storage_key FROM jobs")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        keys.iter().collect::<std::collections::HashSet<_>>().len(),
        100
    );
    for k in &keys {
        assert!(app.storage.exists(k).await.unwrap(), "{k} not stored");
    }
    // Two claimers split the work with no overlap.
    let claim = |worker: &'static str| {
        paperhook_core::queue::claim(
            &app.pool,
            worker,
            &[paperhook_core::queue::kind::JOB],
            60,
            std::time::Duration::from_secs(30),
            None,
        )
    };
    let (a, b) = tokio::join!(claim("w1"), claim("w2"));
    let mut claimed: Vec<String> = a
        .unwrap()
        .iter()
        .chain(b.unwrap().iter())
        .map(|t| t.ref_id.to_string())
        .collect();
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), 100);
    assert!(claimed.iter().all(|c| ids.contains(c)));
}

/// `/v1/job-results` names a missing or mistyped field like `/process-job`
/// does (422), and a finished job's results past retention answer 410 even
/// before the janitor has deleted them, for results, redelivery and the
/// job's detail alike.
#[tokio::test]
async fn job_results_errors_name_the_field() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let res = app
        .req(Method::GET, "/v1/account", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    // An account's answers are kept by no cache (keys, secrets, results).
    assert_eq!(res.headers()["cache-control"], "no-store");
    let unauthorised = app
        .req(Method::GET, "/v1/account", "ph_wrong_key")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unauthorised.headers()["cache-control"], "no-store");
    let results = |body: Value| send(app.req(Method::POST, "/v1/job-results", &key).json(&body));
    assert_error(
        &results(json!({"result_format": "csv"})).await,
        422,
        "missing_field",
    );
    assert_error(&results(json!({"job_id": 5})).await, 422, "invalid_field");
    assert_error(
        &results(json!({"job_id": "not-a-uuid"})).await,
        422,
        "invalid_job_id",
    );

    let template_id = app.template(&key).await;
    let (s, body) = send(
        app.req(Method::POST, "/process-job", &key)
            .json(&json_job(template_id, example_pdf())),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let job = body["job_id"].as_str().unwrap().to_owned();
    let job_uuid: Uuid = job.parse().unwrap();
    // A finished job with one document's result, as a worker leaves it.
    sqlx::query(
        "WITH d AS (
             INSERT INTO documents (id, job_id, idx, status, pages)
             VALUES (gen_random_uuid(), $1, 0, 'PROCESS IMAGE SUCCESS', 1)
             RETURNING id, job_id)
         INSERT INTO results (document_id, job_id, result) SELECT id, job_id, '{\"total\": \"42\"}' FROM d",
    )
    .bind(job_uuid)
    .execute(&app.pool)
    .await
    .unwrap();
    let finished = |ago: &'static str| {
        sqlx::query(
            "UPDATE jobs SET status = 'SUCCESS', finished_at = now() - $2::interval WHERE id = $1",
        )
        .bind(job_uuid)
        .bind(ago)
        .execute(&app.pool)
    };
    let detail = || send(app.req(Method::GET, &format!("/v1/jobs/{job}"), &key));
    finished("1 hour").await.unwrap();
    let (s, body) = detail().await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["documents"][0]["result"]["total"], "42", "{body}");
    // Finished 25 hours ago (retention is 24 h); the janitor has not run.
    finished("25 hours").await.unwrap();
    // The job's page no longer shows the results either.
    let (s, body) = detail().await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["documents"][0]["status"], "PROCESS IMAGE SUCCESS");
    assert!(body["documents"][0]["result"].is_null(), "{body}");
    assert!(body["documents"][0]["fields"].is_null(), "{body}");
    assert_error(
        &results(json!({"job_id": job})).await,
        410,
        "results_expired",
    );
    assert_error(
        &send(app.req(Method::POST, &format!("/v1/jobs/{job}/redeliver"), &key)).await,
        410,
        "results_expired",
    );
}

/// Relays PostgreSQL connections to the real server, but cuts a connection
/// after it has sent the job insert, before the answer comes back: the
/// insert commits and the API cannot know.
fn cut_after_job_insert(target: String) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(&target).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let (sent_tx, mut sent_rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut insert_parsed = false;
                while let Ok(n @ 1..) = cr.read(&mut buf).await {
                    // Once the insert is parsed (sqlx prepares it first),
                    // the cut comes after the Execute message that runs it.
                    insert_parsed |= buf[..n].windows(16).any(|w| w == b"INSERT INTO jobs");
                    if insert_parsed && executes(&buf[..n]) {
                        let _ = sent_tx.send(true);
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = sr.read(&mut buf).await {
                    if *sent_rx.borrow_and_update() {
                        return; // drops both halves: the connection is cut
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Whether a chunk of frontend messages (type byte, then a big-endian
/// length that counts itself) holds an Execute.
fn executes(mut chunk: &[u8]) -> bool {
    while chunk.len() >= 5 {
        if chunk[0] == b'E' {
            return true;
        }
        let len = u32::from_be_bytes([chunk[1], chunk[2], chunk[3], chunk[4]]) as usize;
        chunk = chunk.get(1 + len..).unwrap_or_default();
    }
    false
}

/// A submission whose connection breaks after the insert was sent may have
/// made its job: the stored file stays (the job needs it; the janitor
/// deletes it as an orphan if there is no job), and the answer is 503.
#[tokio::test]
async fn a_job_insert_cut_off_in_flight_keeps_its_file() {
    use secrecy::ExposeSecret;
    let mut direct = String::new();
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        // A file in the object store (a document kept inline commits with
        // its job or not at all).
        c.inline_document_max_bytes = 0;
        direct = c.database_url.expose_secret().to_owned();
        let url = url::Url::parse(&direct).unwrap();
        let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
        let proxy = cut_after_job_insert(target);
        let mut via = url.clone();
        via.set_host(Some("127.0.0.1")).unwrap();
        via.set_port(Some(proxy.port())).unwrap();
        // In clear, so that the relay can see the insert go by.
        via.query_pairs_mut().append_pair("sslmode", "disable");
        c.database_url = via.to_string().into();
    })
    .await;
    let (_, key) = app.account(10).await;
    let template_id = app.template(&key).await;
    let got = send(
        app.req(Method::POST, "/process-job", &key)
            .json(&json_job(template_id, example_pdf())),
    )
    .await;
    assert_error(&got, 503, "database_unavailable");

    let direct = sqlx::PgPool::connect(&direct).await.unwrap();
    let keys: Vec<String> = sqlx::query_scalar("SELECT storage_key FROM jobs")
        .fetch_all(&direct)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "the insert committed");
    let files = app.stored_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with(&keys[0]), "{files:?} {keys:?}");
}

/// A body made `len` bytes long by white space after its JSON.
fn padded(template: Uuid, len: usize) -> Vec<u8> {
    let mut body = json_job(template, example_pdf()).to_string().into_bytes();
    body.resize(len, b' ');
    body
}

/// Submits a [`padded`] body of `len` bytes.
async fn submit_padded(app: &TestApp, key: &str, template: Uuid, len: usize) -> reqwest::Response {
    app.req(Method::POST, "/process-job", key)
        .header("content-type", "application/json")
        .body(padded(template, len))
        .send()
        .await
        .unwrap()
}

/// A client that sends the head of `body`, its first 1000 bytes, then
/// stalls.
async fn stall(app: &TestApp, key: &str, body: &[u8]) -> tokio::net::TcpStream {
    stall_at(app, "/process-job", Some(key), body).await
}

/// A JSON `POST` to `path` that declares `body` and sends its first 1000
/// bytes only.
async fn stall_at(
    app: &TestApp,
    path: &str,
    key: Option<&str>,
    body: &[u8],
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stalled = tokio::net::TcpStream::connect(app.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let auth = key.map(|k| format!("x-auth: {k}\r\n")).unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: paperhook\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&body[..1000]).await.unwrap();
    stalled
}

/// Sends a 400 kB submission (800 kB counted) with `key` until it is
/// answered 503, while `stalled` has taken its memory (re-stalled with
/// `body` when a busy machine answered it early); returns the 503.
async fn busy_beside(
    app: &TestApp,
    key: &str,
    template: Uuid,
    stalled: &mut tokio::net::TcpStream,
    stalled_key: &str,
    body: &[u8],
) -> reqwest::Response {
    use tokio::io::AsyncReadExt;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let res = submit_padded(app, key, template, 400_000).await;
        if res.status() == StatusCode::SERVICE_UNAVAILABLE {
            return res;
        }
        // Accepted while the stalled one is not as far as its memory yet.
        assert_eq!(res.status(), StatusCode::ACCEPTED, "{:?}", res.text().await);
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled submission never took its memory"
        );
        // Answered before its body came (a busy machine's 503 from the
        // key check): stalled again.
        let mut early = [0; 512];
        let peek = std::time::Duration::from_millis(100);
        if let Ok(read) = tokio::time::timeout(peek, stalled.read(&mut early)).await {
            let n = read.unwrap();
            eprintln!("answered early: {}", String::from_utf8_lossy(&early[..n]));
            *stalled = stall(app, stalled_key, body).await;
        }
    }
}

async fn assert_server_busy(res: reqwest::Response, setting: &str) {
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "server_busy", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("({setting})")), "{message}");
}

/// Large submissions at once take at most `submission_memory_bytes`: one
/// that does not fit answers `503 server_busy` with `Retry-After` before
/// its body is read, smaller ones still go through, and the memory comes
/// back once a submission is answered.
#[tokio::test]
async fn submissions_beyond_the_memory_budget_are_asked_to_retry() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The largest body is about 1.2 MB: it counts twice that, 2.4 MB.
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.max_upload_bytes = 400_000;
        c.submission_memory_bytes = 3_000_000;
        c.submission_memory_per_account_bytes = 3_000_000;
    })
    .await;
    let (_, key) = app.account(100).await;
    let template = app.template(&key).await;
    let (_, another) = app.account(100).await;
    let another_template = app.template(&another).await;

    // Another account's 1.2 MB body stalls; a 400 kB one does not fit
    // beside it.
    let slow = padded(another_template, 1_200_000);
    let mut stalled = stall(&app, &another, &slow).await;
    let busy = busy_beside(&app, &key, template, &mut stalled, &another, &slow).await;
    assert_server_busy(busy, "submission_memory_bytes").await;
    // A small one still fits.
    let (status, body) = send(
        app.req(Method::POST, "/process-job", &key)
            .json(&json_job(template, example_pdf())),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // The stalled body arrives: accepted, and its memory is back.
    stalled.write_all(&slow[1000..]).await.unwrap();
    let mut answer = Vec::new();
    stalled.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let res = submit_padded(&app, &key, template, 400_000).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
}

/// One account's uploads take at most `submission_memory_per_account_bytes`:
/// another account's still fit while the first's stall.
#[tokio::test]
async fn one_accounts_uploads_do_not_take_the_others_memory() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.max_upload_bytes = 400_000;
        c.submission_memory_bytes = 6_000_000;
        c.submission_memory_per_account_bytes = 3_000_000;
    })
    .await;
    let (_, greedy) = app.account(100).await;
    let (_, other) = app.account(100).await;
    let greedy_template = app.template(&greedy).await;
    let other_template = app.template(&other).await;
    let slow = padded(greedy_template, 1_200_000);
    let mut stalled = stall(&app, &greedy, &slow).await;
    let busy = busy_beside(&app, &greedy, greedy_template, &mut stalled, &greedy, &slow).await;
    assert_server_busy(busy, "submission_memory_per_account_bytes").await;
    let res = submit_padded(&app, &other, other_template, 400_000).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
}

/// A client that stalls mid-body is answered `408 request_timeout` after
/// `submission_read_timeout_secs`, and the memory it held is given back.
#[tokio::test]
async fn an_upload_stalled_mid_body_times_out_and_gives_its_memory_back() {
    use tokio::io::AsyncReadExt;
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.max_upload_bytes = 400_000;
        c.submission_memory_bytes = 3_000_000;
        c.submission_memory_per_account_bytes = 3_000_000;
        c.submission_read_timeout_secs = 1;
    })
    .await;
    let (_, key) = app.account(10).await;
    let template = app.template(&key).await;
    // Declares 1.2 MB (2.4 MB counted), sends 1000 bytes.
    let body = padded(template, 1_200_000);
    let mut tries = 0;
    let (answer, took) = loop {
        let mut stalled = stall(&app, &key, &body).await;
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            stalled.read_to_end(&mut answer),
        )
        .await
        .expect("the stalled upload was never answered")
        .unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        // A busy machine's 503 from the key check: stalled again.
        tries += 1;
        if !(answer.starts_with("HTTP/1.1 503") && tries < 3) {
            break (answer, started.elapsed());
        }
    };
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(took >= std::time::Duration::from_millis(900));
    // A 1.2 MB body fits again.
    let res = submit_padded(&app, &key, template, body.len()).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
}

/// Every JSON body has `submission_read_timeout_secs` to arrive (then
/// `408`, the connection and its buffer given back: a stalled body held
/// them for good), and a sign-in, which anyone may send, is at most 4 KiB
/// (`max_json_bytes`, 1 MiB, before).
#[tokio::test]
async fn json_bodies_time_out_and_a_sign_in_is_small() {
    use tokio::io::AsyncReadExt;
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.submission_read_timeout_secs = 1).await;
    let (_, key) = app.account(10).await;
    for (path, key) in [
        ("/v1/templates", Some(key.as_str())),
        ("/v1/session/sign-in", None),
    ] {
        let mut stalled = stall_at(&app, path, key, &[b' '; 3000]).await;
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            stalled.read_to_end(&mut answer),
        )
        .await
        .unwrap_or_else(|_| panic!("the stalled body to {path} was never answered"))
        .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("\"request_timeout\""), "{answer}");
    }
    let (status, body) = send(
        app.client
            .post(format!("{}/v1/session/sign-in", app.url))
            .json(&json!({"api_key": "k".repeat(5000)})),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "body_too_large");
}

/// Python's `requests.post(files={"template_id": id, ...})` sends every
/// entry of `files` as a file part (filename "template_id"): a small UTF-8
/// one is read as the field's text, trimmed.
#[tokio::test]
async fn template_id_may_come_as_a_small_file_part() {
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let template = app.template(&key).await;
    let submit = |template_id: Part| {
        let form = Form::new().part("template_id", template_id).part(
            "actual_image",
            Part::bytes(example_pdf().to_vec()).file_name("invoice.pdf"),
        );
        send(app.req(Method::POST, "/process-job", &key).multipart(form))
    };
    let (s, body) = submit(Part::text(format!(" {template}\r\n")).file_name("template_id")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["template_id"], template.to_string(), "{body}");
    // Larger than a UUID needs, or not text: refused as no UUID.
    let mut big = template.to_string().into_bytes();
    big.resize(2048, b' ');
    for part in [
        Part::bytes(big).file_name("template_id"),
        Part::bytes(vec![0xff, 0xfe, 0x00]).file_name("template_id"),
        Part::text("not-a-uuid").file_name("template_id"),
    ] {
        assert_error(&submit(part).await, 422, "invalid_template_id");
    }
    // As text and as a file at once: which one counts is not guessed.
    let form = Form::new()
        .text("template_id", template.to_string())
        .part(
            "template_id",
            Part::text(template.to_string()).file_name("template_id"),
        )
        .part(
            "actual_image",
            Part::bytes(example_pdf().to_vec()).file_name("invoice.pdf"),
        );
    assert_error(
        &send(app.req(Method::POST, "/process-job", &key).multipart(form)).await,
        422,
        "invalid_field",
    );
}

/// `curl -d @body.json` (form-urlencoded) and Python's
/// `requests.post(data=json.dumps(...))` (no Content-Type) send JSON as
/// something else: a body that is a JSON object is read as JSON, with its
/// limits and errors; any other keeps its 415.
#[tokio::test]
async fn a_json_object_sent_untyped_as_text_or_as_a_form_is_a_submission() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.max_upload_bytes = 1000).await;
    let (_, key) = app.account(10).await;
    let template = app.template(&key).await;
    let raw = |content_type: Option<&str>, body: Vec<u8>| {
        let mut req = app.req(Method::POST, "/process-job", &key).body(body);
        if let Some(content_type) = content_type {
            req = req.header("content-type", content_type);
        }
        send(req)
    };
    let job = json!({"template_id": template.to_string(), "actual_image": B64.encode(example_png_small()), "static_values": {"n": 1}});
    let types = [
        None,
        Some("text/plain"),
        Some("text/plain; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
    ];
    for content_type in types {
        let (s, body) = raw(content_type, format!("\n  {job}").into_bytes()).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{content_type:?}: {body}");
        assert_eq!(body["static_values"], json!({"n": 1}), "{body}");
        // The same errors as application/json.
        let got = raw(content_type, b"{\"template_id\": ".to_vec()).await;
        assert_error(&got, 400, "malformed_json");
        let got = raw(
            content_type,
            json!({"template_id": template.to_string()})
                .to_string()
                .into_bytes(),
        )
        .await;
        assert_error(&got, 422, "missing_field");
        // The same limits: a body declared larger than the envelope is a
        // file sent raw (`curl --data-binary @invoice.pdf`), refused
        // unread for its type.
        let mut huge = job.to_string().into_bytes();
        huge.resize(2 << 20, b' ');
        let got = raw(content_type, huge).await;
        assert_error(&got, 415, "unsupported_media_type");
        // Anything else is still no JSON.
        for other in [&b"hello"[..], b"template_id=x", b"[1, 2]", b"", b"  "] {
            let got = raw(content_type, other.to_vec()).await;
            assert_error(&got, 415, "unsupported_media_type");
            let message = got.1["error"]["message"].as_str().unwrap();
            assert!(
                message.starts_with("send application/json or multipart/form-data, not"),
                "{message}"
            );
        }
    }
    // Other types are not looked into.
    let got = raw(Some("text/csv"), job.to_string().into_bytes()).await;
    assert_error(&got, 415, "unsupported_media_type");
}

/// A document small enough for `max_upload_bytes` of 1000.
fn example_png_small() -> Vec<u8> {
    let mut png = std::io::Cursor::new(Vec::new());
    image::GrayImage::from_pixel(8, 8, image::Luma([255u8]))
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    png.into_inner()
}

/// `POST /v1/job-results` also takes its JSON untyped, as text or as a
/// form, and `job_id` and `result_format` from the query string when the
/// body is empty (a body wins over the query).
#[tokio::test]
async fn job_results_take_json_sent_loosely_or_the_query_string() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.max_json_bytes = 4096).await;
    let (_, key) = app.account(10).await;
    let template_id = app.template(&key).await;
    let (s, body) = send(
        app.req(Method::POST, "/process-job", &key)
            .json(&json_job(template_id, example_pdf())),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let job = body["job_id"].as_str().unwrap().to_owned();
    sqlx::query(
        "WITH d AS (
             INSERT INTO documents (id, job_id, idx, status, pages)
             VALUES (gen_random_uuid(), $1, 0, 'PROCESS IMAGE SUCCESS', 1)
             RETURNING id, job_id)
         INSERT INTO results (document_id, job_id, result) SELECT id, job_id, '{\"total\": \"42\"}' FROM d",
    )
    .bind(job.parse::<Uuid>().unwrap())
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE jobs SET status = 'SUCCESS', finished_at = now() WHERE id = $1::uuid")
        .bind(&job)
        .execute(&app.pool)
        .await
        .unwrap();
    let results = |query: &str, content_type: Option<&str>, body: String| {
        let mut req = app
            .req(Method::POST, &format!("/v1/job-results{query}"), &key)
            .body(body);
        if let Some(content_type) = content_type {
            req = req.header("content-type", content_type);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
            (status, content_type, res.text().await.unwrap())
        }
    };
    let csv = json!({"job_id": job, "result_format": "csv"}).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/json"),
    ] {
        let (s, got, text) = results("", content_type, format!(" {csv}")).await;
        assert_eq!(s, StatusCode::OK, "{content_type:?}: {text}");
        assert!(got.starts_with("text/csv"), "{got}");
        assert!(text.contains(",42"), "{text}");
        // An empty body: the query string's.
        let query = format!("?job_id={job}&result_format=csv");
        let (s, got, text) = results(&query, content_type, String::new()).await;
        assert_eq!(s, StatusCode::OK, "{content_type:?}: {text}");
        assert!(got.starts_with("text/csv"), "{got}");
        // Both: the body's.
        let body = json!({"job_id": job}).to_string();
        let (s, got, text) = results(&query, content_type, body).await;
        assert_eq!(s, StatusCode::OK, "{text}");
        assert!(got.starts_with("application/json"), "{got}: {text}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["job_id"], job);
        // Neither.
        let got = send(app.req(Method::POST, "/v1/job-results", &key).body("")).await;
        assert_error(&got, 422, "missing_field");
    }
    let send_raw = |content_type: &'static str, body: Vec<u8>| {
        send(
            app.req(Method::POST, "/v1/job-results", &key)
                .header("content-type", content_type)
                .body(body),
        )
    };
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        // Other bodies of these types, and other types: 415 as before.
        let got = send_raw(content_type, format!("job_id={job}").into_bytes()).await;
        assert_error(&got, 415, "unsupported_media_type");
        assert_error(
            &send_raw(content_type, b"{\"job_id\": ".to_vec()).await,
            400,
            "malformed_json",
        );
        let mut huge = csv.clone().into_bytes();
        huge.resize(5000, b' ');
        assert_error(&send_raw(content_type, huge).await, 413, "body_too_large");
    }
    assert_error(
        &send_raw("text/csv", csv.into_bytes()).await,
        415,
        "unsupported_media_type",
    );
}
