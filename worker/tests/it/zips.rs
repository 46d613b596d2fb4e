//! ZIP batches: one document (and one webhook) per root file, and the rules.

use std::collections::HashSet;

use paperhook_worker::Outcome;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn zip_of_three_files_makes_three_signed_webhooks() {
    // One document at a time per worker: two workers then share the three.
    let app = TestApp::spawn_with(StorageKind::S3, |c| c.worker_concurrency = 1).await;
    let hook = Receiver::start().await;
    let (account, key) = app.account(10).await;
    let (template, secret) = app.template(&key, Some(&hook.url)).await;
    let zip = make_zip(&[
        ("one.pdf", example_pdf()),
        ("__MACOSX/._one.pdf", b"resource fork"),
        (".DS_Store", b"junk"),
        ("two.pdf", example_pdf()),
        ("three.pdf", example_pdf()),
    ]);
    let job = app.submit(&key, template, "batch.zip", &zip).await;
    // The split: the job is the one task queued.
    assert_eq!(app.worker.run_once().await.unwrap(), Outcome::Worked(1));
    // Two workers share the documents. Each step claims one document at
    // most, so of the three, whichever worker claims first leaves the other
    // at least one: both work, on two different documents.
    let other = app.another_worker(|_| {});
    let (a, b) = tokio::join!(app.worker.run_once(), other.run_once());
    for step in [a.unwrap(), b.unwrap()] {
        assert!(matches!(step, Outcome::Worked(n) if n >= 1), "{step:?}");
    }
    let finished: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM documents WHERE job_id = $1 AND finished_at IS NOT NULL",
    )
    .bind(job)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(finished, 2, "each worker processed one document");
    // Then both drain the rest at once.
    tokio::join!(drain(&app.worker), drain(&other));
    app.drain().await;

    let st = app.job_status(&key, job).await;
    assert_eq!(st["status"], "SUCCESS", "{st}");
    let docs = st["documents"].as_array().unwrap();
    assert_eq!(docs.len(), 3);
    assert!(
        docs.iter().all(|d| d["status"] == "PROCESS IMAGE SUCCESS"),
        "{st}"
    );

    let got = hook.received();
    assert_eq!(got.len(), 3);
    let ids: HashSet<_> = got
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert_eq!(ids.len(), 3, "each document has its own webhook-id");
    let mut names: Vec<String> = Vec::new();
    for r in &got {
        verify_with_python(&secret, r);
        let p = r.json();
        assert_eq!(p["job_id"], job.to_string());
        assert_eq!(p["status"], "SUCCESS");
        assert_eq!(p["document"]["pages"], 1);
        names.push(p["document"]["file_name"].as_str().unwrap().to_owned());
    }
    names.sort();
    assert_eq!(names, ["one.pdf", "three.pdf", "two.pdf"]);
    assert_eq!(app.credits(account).await, 7);
    assert_eq!(app.charges(account).await, 3);

    // Every stored file (the ZIP and its documents) is gone.
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT storage_key FROM documents WHERE job_id = $1 UNION ALL SELECT storage_key FROM jobs WHERE id = $1",
    )
    .bind(job)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(keys.len(), 4);
    for k in keys {
        assert!(!app.storage.exists(&k).await.unwrap(), "{k} still stored");
    }
}

/// Sets the "encrypted" flag of the named entry in its local and central headers.
fn mark_encrypted(mut zip: Vec<u8>, name: &str) -> Vec<u8> {
    let n = name.as_bytes();
    let mut i = 0;
    while i + 46 < zip.len() {
        if zip[i..].starts_with(b"PK\x03\x04") && zip[i + 30..].starts_with(n) {
            zip[i + 6] |= 1;
        }
        if zip[i..].starts_with(b"PK\x01\x02") && zip[i + 46..].starts_with(n) {
            zip[i + 8] |= 1;
        }
        i += 1;
    }
    zip
}

/// `archive` with two entries [`make_zip`] cannot write appended: a
/// symbolic link (`link`: its name and target), and `big` stored
/// uncompressed (its 1:1 ratio keeps the ratio rule out of the way).
fn append_link_and_stored(archive: Vec<u8>, link: (&str, &str), big: (&str, &[u8])) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new_append(std::io::Cursor::new(archive)).unwrap();
    let opts = zip::write::SimpleFileOptions::default();
    w.add_symlink(link.0, link.1, opts).unwrap();
    w.start_file(
        big.0,
        opts.compression_method(zip::CompressionMethod::Stored),
    )
    .unwrap();
    w.write_all(big.1).unwrap();
    w.finish().unwrap().into_inner()
}

#[tokio::test]
async fn zip_rules_give_clear_per_document_reasons() {
    // Entries up to 2.5 MB: the 2 MB bomb below is refused for its ratio,
    // the 3 MB entry for its size.
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.zip_max_ratio = 50;
        c.zip_max_entry_bytes = 2_500_000;
    })
    .await;
    let hook = Receiver::start().await;
    let (account, key) = app.account(10).await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    let inner = make_zip(&[("x.pdf", example_pdf())]);
    let mut bomb = b"%PDF-1.4\n".to_vec();
    bomb.resize(2_000_000, b' ');
    let zip = make_zip(&[
        ("good.pdf", example_pdf()),
        ("folder/", b""),
        ("folder/inside.pdf", example_pdf()),
        ("notes.txt", b"hello"),
        ("inner.zip", &inner),
        ("../evil.pdf", example_pdf()),
        ("bomb.pdf", &bomb),
        ("secret.pdf", example_pdf()),
    ]);
    let mut big = b"%PDF-1.4\n".to_vec();
    big.resize(3_000_000, b' ');
    let zip = append_link_and_stored(zip, ("link.pdf", "good.pdf"), ("big.pdf", &big));
    let zip = mark_encrypted(zip, "secret.pdf");
    let job = app.submit(&key, template, "rules.zip", &zip).await;
    app.drain().await;

    let st = app.job_status(&key, job).await;
    assert_eq!(st["status"], "FAILED", "{st}");
    assert_eq!(st["error"]["code"], "documents_failed", "{st}");
    let by_name: Vec<(String, String, Value)> = st["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["file_name"].as_str().unwrap().to_owned(),
                d["status"].as_str().unwrap().to_owned(),
                d["error"]["code"].clone(),
            )
        })
        .collect();
    assert_eq!(
        by_name,
        [
            (
                "good.pdf".into(),
                "PROCESS IMAGE SUCCESS".into(),
                Value::Null
            ),
            (
                "folder/inside.pdf".into(),
                "PROCESS IMAGE FAILED".into(),
                json!("zip_entry_in_folder")
            ),
            (
                "notes.txt".into(),
                "PROCESS IMAGE FAILED".into(),
                json!("unsupported_type")
            ),
            (
                "inner.zip".into(),
                "PROCESS IMAGE FAILED".into(),
                json!("zip_nested")
            ),
            (
                "../evil.pdf".into(),
                "PROCESS IMAGE FAILED".into(),
                json!("zip_unsafe_path")
            ),
            (
                "bomb.pdf".into(),
                "PROCESS IMAGE FAILED".into(),
                json!("zip_ratio_exceeded")
            ),
            (
                "secret.pdf".into(),
                "PROCESS IMAGE FAILED".into(),
                json!("zip_entry_encrypted")
            ),
            (
                "link.pdf".into(),
                "PROCESS IMAGE FAILED".into(),
                json!("zip_symlink")
            ),
            (
                "big.pdf".into(),
                "PROCESS IMAGE FAILED".into(),
                json!("document_too_large")
            ),
        ]
    );
    let folder = &st["documents"][1]["error"]["message"];
    assert!(folder.as_str().unwrap().contains("root"), "{folder}");
    let too_large = &st["documents"][8]["error"]["message"];
    assert!(
        too_large
            .as_str()
            .unwrap()
            .contains("the limit is 2500000 bytes"),
        "{too_large}"
    );
    // Every document, failed or not, gets its webhook; only the good one is charged.
    let got = hook.received();
    assert_eq!(got.len(), 9);
    assert_eq!(
        got.iter()
            .filter(|r| r.json()["status"] == "FAILED")
            .count(),
        8
    );
    assert_eq!(app.charges(account).await, 1);
}

/// A ZIP that fails as a whole still tells the client, by webhook too:
/// the upload is reported as the job's one document, failed with the
/// job's error, with the usual failure payload.
#[tokio::test]
async fn whole_zip_failures() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.zip_max_entries = 3;
        c.zip_max_total_bytes = 1_000_000;
    })
    .await;
    let hook = Receiver::start().await;
    let (account, key) = app.account(10).await;
    let (template, secret) = app.template(&key, Some(&hook.url)).await;
    let pdf = example_pdf();
    let many = make_zip(&[
        ("1.pdf", pdf),
        ("2.pdf", pdf),
        ("3.pdf", pdf),
        ("4.pdf", pdf),
    ]);
    let mut big = b"%PDF-1.4\n".to_vec();
    big.resize(600_000, b'x');
    let huge = make_zip(&[("1.pdf", &big), ("2.pdf", &big)]);
    let empty = make_zip(&[("__MACOSX/._a", b"x"), ("folder/", b"")]);
    let mut cases = Vec::new();
    for (zip, code) in [
        (many, "zip_too_many_entries"),
        (huge, "zip_too_large"),
        (empty, "zip_empty"),
    ] {
        cases.push((app.submit(&key, template, "x.zip", &zip).await, code));
    }
    // A corrupt ZIP: the right magic, then garbage.
    let corrupt = app
        .submit(
            &key,
            template,
            "bad.zip",
            b"PK\x03\x04 this is not a zip at all",
        )
        .await;
    cases.push((corrupt, "invalid_zip"));
    app.drain().await;
    let got = hook.received();
    assert_eq!(got.len(), cases.len(), "one webhook per failed ZIP");
    for (job, code) in cases {
        let st = app.job_status(&key, job).await;
        assert_eq!(st["status"], "FAILED", "{st}");
        assert_eq!(st["error"]["code"], code, "{st}");
        let docs = st["documents"].as_array().unwrap();
        assert_eq!(docs.len(), 1, "{st}");
        assert_eq!(docs[0]["status"], "PROCESS IMAGE FAILED", "{st}");
        assert_eq!(docs[0]["error"]["code"], code, "{st}");
        let sent = got
            .iter()
            .find(|r| r.json()["job_id"] == job.to_string())
            .unwrap_or_else(|| panic!("no webhook for the job that failed with {code}"));
        verify_with_python(&secret, sent);
        let p = sent.json();
        assert_eq!(p["status"], "FAILED", "{p}");
        assert_eq!(p["error"]["code"], code, "{p}");
        assert_eq!(p["template_id"], template.to_string(), "{p}");
        assert_eq!(p["document"]["index"], 0, "{p}");
        assert_eq!(p.get("result"), Some(&Value::Null), "{p}");
        let (key_of, deleted): (String, Option<chrono::DateTime<chrono::Utc>>) =
            sqlx::query_as("SELECT storage_key, file_deleted_at FROM jobs WHERE id = $1")
                .bind(job)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert!(deleted.is_some());
        assert!(!app.storage.exists(&key_of).await.unwrap());
    }
    assert_eq!(app.charges(account).await, 0);
}

/// Files a ZIP's split stored before a commit that never came (its worker
/// was killed, the storage or the database failed) are named by no document
/// row: they must go with the job all the same, when the split is given up,
/// on the janitor's pass, and when the job's data is deleted on request.
#[tokio::test]
async fn files_unpacked_by_a_split_that_never_committed_are_deleted() {
    for kind in [StorageKind::Fs, StorageKind::S3] {
        let app = TestApp::spawn_with(kind, |_| {}).await;
        let (_, key) = app.account(10).await;
        let (template, _) = app.template(&key, None).await;
        let zip = make_zip(&[("a.pdf", example_pdf()), ("b.pdf", example_pdf())]);
        // Each job's split stored both entries and did not commit.
        let mut jobs = Vec::new();
        for _ in 0..3 {
            let job = app.submit(&key, template, "batch.zip", &zip).await;
            let original: String = sqlx::query_scalar("SELECT storage_key FROM jobs WHERE id = $1")
                .bind(job)
                .fetch_one(&app.pool)
                .await
                .unwrap();
            // The ZIP is kept in the database (it is small); its entries
            // go to the object store all the same.
            assert!(original.starts_with("inline/"), "{original}");
            let unpacked =
                |n| paperhook_core::db::documents::unpacked_key(&original, "0a1b2c3d", n);
            let files = vec![original.clone(), unpacked(0), unpacked(1)];
            for f in &files[1..] {
                app.storage
                    .put_bytes(f, example_pdf().to_vec().into())
                    .await
                    .unwrap();
            }
            jobs.push((job, files));
        }
        let stored = |files: Vec<String>| {
            let storage = app.storage.clone();
            async move {
                let mut left = Vec::new();
                for f in files {
                    if storage.exists(&f).await.unwrap() {
                        left.push(f);
                    }
                }
                left
            }
        };

        // 1. Its worker died on the split's last attempt: the next one gives up.
        let (job, files) = &jobs[0];
        sqlx::query(
            "UPDATE tasks SET state = 'running', attempts = max_attempts, locked_by = 'dead-worker',
                    locked_until = now() - interval '1 minute'
             WHERE kind = 'job' AND ref_id = $1",
        )
        .bind(job)
        .execute(&app.pool)
        .await
        .unwrap();
        app.drain().await;
        assert_eq!(app.job_status(&key, *job).await["status"], "FAILED");
        assert_eq!(stored(files.clone()).await, Vec::<String>::new());

        // 2 and 3. Given up, with its files left (the worker's storage failed).
        for (job, _) in &jobs[1..] {
            sqlx::query("UPDATE tasks SET state = 'failed', finished_at = now() WHERE ref_id = $1")
                .bind(job)
                .execute(&app.pool)
                .await
                .unwrap();
            sqlx::query(
                "UPDATE jobs SET status = 'FAILED', finished_at = now(), error_code = 'processing_failed'
                 WHERE id = $1",
            )
            .bind(job)
            .execute(&app.pool)
            .await
            .unwrap();
        }
        // 2. The janitor's pass after workers that stopped midway.
        let (job, files) = &jobs[1];
        sqlx::query("UPDATE jobs SET finished_at = now() - interval '1 hour' WHERE id = $1")
            .bind(job)
            .execute(&app.pool)
            .await
            .unwrap();
        let janitor = app.janitor();
        // The janitor takes the older job first; the pass may take both.
        janitor.run_once(chrono::Utc::now()).await.unwrap();
        assert_eq!(stored(files.clone()).await, Vec::<String>::new());

        // 3. DELETE /v1/jobs/{id}, should its files still be there.
        let (job, files) = &jobs[2];
        for f in &files[1..] {
            app.storage
                .put_bytes(f, example_pdf().to_vec().into())
                .await
                .unwrap();
        }
        sqlx::query("UPDATE jobs SET file_deleted_at = NULL WHERE id = $1")
            .bind(job)
            .execute(&app.pool)
            .await
            .unwrap();
        let (status, body) =
            send(app.req(reqwest::Method::DELETE, &format!("/v1/jobs/{job}"), &key)).await;
        assert_eq!(status, reqwest::StatusCode::NO_CONTENT, "{body}");
        assert_eq!(stored(files.clone()).await, Vec::<String>::new());
    }
}

/// A ZIP entry named with a NUL character (PostgreSQL text cannot hold one)
/// is rejected as unsafe under a name it can store: inserting it used to
/// fail, and the whole ZIP was retried until its attempts ran out.
#[tokio::test]
async fn an_entry_name_with_a_nul_character_is_rejected_and_stored() {
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (_, key) = app.account(10).await;
    let (template, _) = app.template(&key, None).await;
    let mut zip = make_zip(&[("good.pdf", example_pdf()), ("bad#name.pdf", example_pdf())]);
    // The name in the local and the central header.
    let mut patched = 0;
    for i in 0..zip.len() - 12 {
        if &zip[i..i + 12] == b"bad#name.pdf" {
            zip[i + 3] = 0;
            patched += 1;
        }
    }
    assert_eq!(patched, 2);
    let job = app.submit(&key, template, "nul.zip", &zip).await;
    app.drain().await;
    let st = app.job_status(&key, job).await;
    assert_eq!(st["status"], "FAILED", "{st}");
    assert_eq!(st["error"]["code"], "documents_failed", "{st}");
    let docs = st["documents"].as_array().unwrap();
    assert_eq!(docs.len(), 2, "{st}");
    assert_eq!(docs[0]["status"], "PROCESS IMAGE SUCCESS", "{st}");
    assert_eq!(docs[1]["error"]["code"], "zip_unsafe_path", "{st}");
    let name = docs[1]["file_name"].as_str().unwrap();
    assert!(!name.contains('\0'), "{name:?}");
    assert!(
        name.starts_with("bad") && name.ends_with("name.pdf"),
        "{name:?}"
    );
}

/// Two workers can split one ZIP at once: one whose lease ran out goes on
/// while the task's next holder splits and commits. The stale split stores
/// its own files, and deletes them again whether it fails (here its limits
/// refuse the archive after the first entry) or finds its task taken at the
/// commit; the committed split's files, which its documents name, stay. Both
/// splits used to store the same keys, so the stale one's clean-up deleted
/// the committed documents' files.
#[tokio::test]
async fn a_stale_split_keeps_away_from_the_files_of_the_split_that_committed() {
    use paperhook_core::queue;
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let (_, key) = app.account(10).await;
    let (template, _) = app.template(&key, None).await;
    let pdf = example_pdf();
    let zip = make_zip(&[("a.pdf", pdf), ("b.pdf", pdf)]);
    let refuses = app.another_worker(|c| c.zip_max_total_bytes = pdf.len() as u64 * 3 / 2);
    let accepts = app.another_worker(|_| {});
    for stale in [refuses, accepts] {
        let job = app.submit(&key, template, "batch.zip", &zip).await;
        let lease = std::time::Duration::from_secs(60);
        let claim = |w: &paperhook_worker::Worker, now: chrono::DateTime<chrono::Utc>| {
            let (pool, id) = (app.pool.clone(), w.id.clone());
            async move {
                let mut got = queue::claim(&pool, &id, &[queue::kind::JOB], 1, lease, Some(now))
                    .await
                    .unwrap();
                got.pop().expect("a job task to claim")
            }
        };
        let stale_task = claim(&stale, chrono::Utc::now()).await;
        // Its lease runs out; the next holder splits the job and commits.
        let later = chrono::Utc::now() + chrono::Duration::hours(1);
        assert_eq!(queue::rescue(&app.pool, Some(later)).await.unwrap(), 1);
        let task = claim(&app.worker, later).await;
        paperhook_worker::pipeline::split_job(&app.worker, &task)
            .await
            .unwrap();
        let (original, named): (String, Vec<String>) = sqlx::query_as(
            "SELECT j.storage_key, array_agg(d.storage_key ORDER BY d.idx)
             FROM jobs j JOIN documents d ON d.job_id = j.id WHERE j.id = $1
             GROUP BY j.storage_key",
        )
        .bind(job)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(named.len(), 2);
        // A stale attempt that read the job before that commit does not set
        // its status back to UNZIPPING FILE.
        let split_status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_ne!(split_status, "UNZIPPING FILE");
        assert!(
            !paperhook_core::db::documents::start_unzipping(&app.pool, job)
                .await
                .unwrap()
        );
        let after: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(after, split_status);
        // The stale worker read the job before that commit, and goes on.
        sqlx::query("UPDATE jobs SET status = 'UNZIPPING FILE' WHERE id = $1")
            .bind(job)
            .execute(&app.pool)
            .await
            .unwrap();
        paperhook_worker::pipeline::split_job(&stale, &stale_task)
            .await
            .unwrap();
        let mut stored = app
            .storage
            .keys_starting_with(&paperhook_core::db::documents::unpacked_prefix(&original))
            .await
            .unwrap();
        stored.sort();
        let mut want = named.clone();
        want.sort();
        assert_eq!(
            stored, want,
            "the stored entry files are the committed split's"
        );
        assert!(app.storage.exists(&original).await.unwrap());
        let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM documents WHERE job_id = $1")
            .bind(job)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(committed, 2, "the stale split changed the job's documents");
    }
}

/// A ZIP entry's name may be 65,535 bytes: stored, shown and sent in
/// webhooks it is held to the multipart rule (control characters dropped,
/// at most 255 characters), and messages quote only its start. A name of
/// 60,000 bytes of control characters used to be stored whole and quoted
/// escaped (six times longer) in the error sent to the receiver.
#[tokio::test]
async fn a_long_entry_name_is_cut_in_names_and_messages() {
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let hook = Receiver::start().await;
    let (_, key) = app.account(10).await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    // 60,000 bytes: a control character and a letter, over and over.
    let long = "\u{1}b".repeat(30_000);
    assert_eq!(long.len(), 60_000);
    let zip = make_zip(&[("good.pdf", example_pdf()), (&long, b"not a document")]);
    let job = app.submit(&key, template, "long.zip", &zip).await;
    app.drain().await;

    let st = app.job_status(&key, job).await;
    let docs = st["documents"].as_array().unwrap();
    assert_eq!(docs.len(), 2, "{st}");
    let bad = &docs[1];
    assert_eq!(bad["error"]["code"], "unsupported_type", "{bad}");
    assert_eq!(bad["file_name"], "b".repeat(255), "{bad}");
    let message = bad["error"]["message"].as_str().unwrap();
    assert!(message.len() < 1024, "{} bytes: {message}", message.len());
    assert!(message.contains(r"\u{1}b"), "{message}");

    let got = hook.received();
    assert_eq!(got.len(), 2, "a webhook per document");
    let failure = got
        .iter()
        .find(|r| r.json()["status"] == "FAILED")
        .expect("the failure webhook");
    let p = failure.json();
    assert_eq!(p["document"]["file_name"], "b".repeat(255), "{p}");
    assert_eq!(p["error"]["message"], message, "{p}");
    assert!(
        failure.body.len() < 2048,
        "{} bytes: {p}",
        failure.body.len()
    );
}
