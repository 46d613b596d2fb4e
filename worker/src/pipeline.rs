//! The stages of a job: split it into documents (a single file, or a ZIP
//! batch), then process each document: extract, charge, store, and queue
//! its webhook.

use std::io::Cursor;

use anyhow::Context;
use paperhook_core::bounded::{Bounded, run_bounded};
use paperhook_core::db::accounts;
use paperhook_core::db::deliveries::{self, Sender};
use paperhook_core::db::documents::{self, Charge, Finished, NewDocument};
use paperhook_core::db::jobs::{self, DocumentRow, JobRow};
use paperhook_core::db::templates::{self, TemplateRow};
use paperhook_core::queue::{self, Task};
use paperhook_core::storage::StorageError;
use paperhook_core::{metrics, status};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::unzip::{self, Entry, Limits, ZipFailure};
use crate::{Next, Retry, Worker};

/// How often a document whose extraction failed for a reason that may pass
/// (a page over its time limit) is tried before it fails with that reason.
const TRANSIENT_ATTEMPTS: i32 = 2;

/// Splits a job into documents. Steps: load the job; a single file becomes
/// one document; a ZIP is unpacked entry by entry into stored documents
/// (or fails as a whole); the documents and their tasks commit together
/// with the task's completion.
#[tracing::instrument(skip_all, fields(job_id = %task.ref_id))]
pub async fn split_job(w: &Worker, task: &Task) -> Result<Next, Retry> {
    let Some(job) = jobs::get_any(&w.pool, task.ref_id).await? else {
        queue::complete(&w.pool, task).await?;
        return Ok(None);
    };
    if job.status != status::NEW && job.status != status::UNZIPPING_FILE {
        // Already split by an earlier attempt that committed.
        queue::complete(&w.pool, task).await?;
        return Ok(None);
    }
    if job.content_type != "zip" {
        let doc = NewDocument {
            id: Uuid::now_v7(),
            idx: 0,
            file_name: job.file_name.clone(),
            content_type: Some(job.content_type.clone()),
            storage_key: Some(job.storage_key.clone()),
            failure: None,
        };
        // One transaction makes the document, marks it and the job
        // PROCESSING IMAGE, and hands its task to this worker, to run next.
        let mut tx = w.pool.begin().await?;
        documents::insert_all(&mut tx, job.id, std::slice::from_ref(&doc)).await?;
        let id: Uuid = sqlx::query_scalar("SELECT id FROM documents WHERE job_id = $1 AND idx = 0")
            .bind(job.id)
            .fetch_one(&mut *tx)
            .await?;
        documents::start(&mut *tx, id).await?;
        documents::set_job_status(&mut *tx, job.id, status::PROCESSING_IMAGE).await?;
        let next = queue::enqueue_claimed(
            &mut tx,
            queue::kind::DOCUMENT,
            id,
            &w.id,
            w.config.worker_lease(),
            w.config.task_max_attempts(),
        )
        .await?;
        if !queue::complete(&mut *tx, task).await? {
            return Ok(None);
        }
        tx.commit().await?;
        return Ok(next);
    }
    unzip_job(w, task, &job).await
}

async fn unzip_job(w: &Worker, task: &Task, job: &JobRow) -> Result<Next, Retry> {
    if !documents::start_unzipping(&w.pool, job.id).await? {
        // Split by another attempt since this one read the job: done (left
        // running, the task would wait for its lease and spend an attempt).
        queue::complete(&w.pool, task).await?;
        return Ok(None);
    }
    let archive = match w.storage.get(&job.storage_key).await {
        Ok(bytes) => bytes,
        Err(StorageError::NotFound(_)) => {
            return fail_whole_job(
                w,
                task,
                job,
                "file_missing",
                "the uploaded file is no longer in storage",
                &[],
            )
            .await;
        }
        Err(e) => return Err(e.into()),
    };
    let limits = Limits {
        max_entries: w.config.zip_max_entries,
        max_total_bytes: w.config.zip_max_total_bytes,
        max_entry_bytes: w.config.zip_max_entry_bytes,
        max_ratio: w.config.zip_max_ratio,
    };
    // The archive is read on a blocking thread; each entry crosses a
    // one-slot channel and is stored before the next one is unpacked.
    let started = std::time::Instant::now();
    let (send, mut recv) = tokio::sync::mpsc::channel::<Entry>(1);
    let scanner = tokio::task::spawn_blocking(move || {
        unzip::scan(Cursor::new(archive), limits, |entry| {
            send.blocking_send(entry).map_err(|_| ZipFailure {
                code: "internal_error",
                message: "the unpacking was interrupted".into(),
            })
        })
    });
    let mut docs = Vec::new();
    let mut stored = Vec::new();
    let mut store_error = None;
    let split = format!("{:08x}", rand::random::<u32>());
    while let Some(entry) = recv.recv().await {
        let idx = docs.len() as i32;
        let doc = match entry {
            Entry::Document {
                name,
                doc_type,
                data,
            } => {
                let key = documents::unpacked_key(&job.storage_key, &split, docs.len());
                if store_error.is_none() {
                    match w.storage.put_bytes(&key, data.into()).await {
                        Ok(()) => stored.push(key.clone()),
                        Err(e) => store_error = Some(e),
                    }
                }
                NewDocument {
                    id: Uuid::now_v7(),
                    idx,
                    file_name: Some(name),
                    content_type: Some(doc_type.as_str().to_owned()),
                    storage_key: Some(key),
                    failure: None,
                }
            }
            Entry::Rejected {
                name,
                code,
                message,
            } => NewDocument {
                id: Uuid::now_v7(),
                idx,
                file_name: Some(name),
                content_type: None,
                storage_key: None,
                failure: Some((code.to_owned(), message)),
            },
        };
        docs.push(doc);
    }
    let scanned = scanner
        .await
        .map_err(|e| Retry::from(format!("unzip panicked: {e}")))?;
    metrics::observe_stage("unzip", scanned.is_ok(), started.elapsed().as_secs_f64());
    if let Some(e) = store_error {
        // The retry stores them again (a split that stops before its commit
        // leaves its files to the job's clean-up, which lists them).
        discard(w, &stored).await;
        return Err(e.into());
    }
    if let Err(failure) = scanned {
        return fail_whole_job(w, task, job, failure.code, &failure.message, &stored).await;
    }
    if docs.is_empty() {
        return fail_whole_job(
            w,
            task,
            job,
            "zip_empty",
            "the ZIP archive has no documents in its root (folders, __MACOSX/ and dot-files are ignored)",
            &stored,
        )
        .await;
    }
    let template = match template_of(w, job).await {
        Ok(template) => template,
        Err(retry) => {
            discard(w, &stored).await;
            return Err(retry);
        }
    };
    let mut tx = w.pool.begin().await?;
    documents::insert_all(&mut tx, job.id, &docs).await?;
    documents::set_job_status(&mut *tx, job.id, status::UNZIP_FILE_SUCCESS).await?;
    let rows = paperhook_core::db::jobs::documents(&mut *tx, job.id).await?;
    // One statement and one NOTIFY for all the documents to process, not
    // two per entry (a ZIP may hold zip_max_entries of them).
    let to_process: Vec<_> = rows
        .iter()
        .filter(|row| row.finished_at.is_none())
        .map(|row| row.id)
        .collect();
    let max_attempts = w.config.task_max_attempts();
    queue::enqueue_many(&mut tx, queue::kind::DOCUMENT, &to_process, max_attempts).await?;
    // Entries that failed as they were unpacked get their webhooks now, also
    // with one statement.
    if template.webhook_url.is_some() {
        let failed: Vec<_> = rows
            .iter()
            .filter(|row| row.finished_at.is_some())
            .map(|row| (row.id, failure_payload(job, row)))
            .collect();
        deliveries::create_many(&mut tx, job.account_id, job.id, failed, max_attempts).await?;
    }
    let finished = documents::finish_job_if_done(&mut tx, job.id).await?;
    if !queue::complete(&mut *tx, task).await? {
        // Another worker holds the task now (this one's lease ran out) and
        // commits its own split: these files are nobody's.
        drop(tx);
        discard(w, &stored).await;
        return Ok(None);
    }
    tx.commit().await?;
    Finished::record(finished);
    tracing::info!(documents = rows.len(), "ZIP unpacked");
    // Entries rejected as they were unpacked are finished documents too.
    let rejected = docs.iter().filter(|d| d.failure.is_some()).count();
    documents_failed(rejected);
    w.cleanup_files(job.id).await;
    Ok(None)
}

async fn fail_whole_job(
    w: &Worker,
    task: &Task,
    job: &JobRow,
    code: &str,
    message: &str,
    stored: &[String],
) -> Result<Next, Retry> {
    discard(w, stored).await;
    let mut tx = w.pool.begin().await?;
    let (failed, next) = fail_as_upload(&mut tx, job, code, message, w.sends()).await?;
    let finished =
        documents::fail_job(&mut tx, job.id, status::UNZIP_FILE_FAILED, code, message).await?;
    if !queue::complete(&mut *tx, task).await? {
        return Ok(None);
    }
    tx.commit().await?;
    Finished::record(finished);
    documents_failed(usize::from(failed));
    tracing::info!(code, "ZIP rejected");
    w.cleanup_files(job.id).await;
    Ok(next)
}

/// A job that fails as a whole (a ZIP that cannot be unpacked, a split
/// given up) has no document to report it, and a client that waits for
/// webhooks would wait forever: the upload itself becomes the job's one
/// document, failed with the job's error, and its failure webhook is
/// queued (with `sender`) if the template has a webhook. Nothing when the job has documents already.
/// Returns whether the upload became a failed document, and the webhook's
/// task if `sender` claimed it.
async fn fail_as_upload(
    tx: &mut sqlx::PgConnection,
    job: &JobRow,
    code: &str,
    message: &str,
    sender: Sender<'_>,
) -> anyhow::Result<(bool, Option<Task>)> {
    let upload = NewDocument {
        id: Uuid::now_v7(),
        idx: 0,
        file_name: job.file_name.clone(),
        content_type: Some(job.content_type.clone()),
        storage_key: None,
        failure: Some((code.to_owned(), message.to_owned())),
    };
    documents::insert_all(&mut *tx, job.id, std::slice::from_ref(&upload)).await?;
    let Some(doc) = documents::get(&mut *tx, upload.id).await? else {
        return Ok((false, None)); // the job had documents: they report themselves
    };
    if !has_webhook(tx, job).await? {
        return Ok((true, None));
    }
    let payload = failure_payload(job, &doc);
    let next = deliveries::create(tx, job.account_id, job.id, doc.id, &payload, sender).await?;
    Ok((true, next))
}

/// Counts `n` documents that ended `FAILED` (committed).
fn documents_failed(n: usize) {
    metrics::DOCUMENTS_PROCESSED
        .with_label_values(&["failed"])
        .inc_by(n as u64);
}

/// Whether the job's template has a webhook to send to.
async fn has_webhook(tx: &mut sqlx::PgConnection, job: &JobRow) -> sqlx::Result<bool> {
    Ok(templates::get_any(&mut *tx, job.template_id)
        .await?
        .is_some_and(|t| t.webhook_url.is_some()))
}

/// What a failed document records, whether its extraction failed or its
/// task was given up: its error (`(code, message)`), its failure webhook
/// (queued with `sender`) when the template has one, and the end of its job if it was the last. Returns the
/// webhook's task if `sender` claimed it, and the job if it finished.
async fn record_failure(
    tx: &mut sqlx::PgConnection,
    job: &JobRow,
    doc_id: Uuid,
    webhook: bool,
    pages: Option<i32>,
    (code, message): (&str, &str),
    sender: Sender<'_>,
) -> anyhow::Result<(Option<Task>, Option<Finished>)> {
    documents::fail(&mut *tx, doc_id, pages, code, message).await?;
    let mut next = None;
    if webhook {
        let failed = documents::get(&mut *tx, doc_id)
            .await?
            .context("document vanished")?;
        let payload = failure_payload(job, &failed);
        next =
            deliveries::create(&mut *tx, job.account_id, job.id, doc_id, &payload, sender).await?;
    }
    let finished = documents::finish_job_if_done(tx, job.id).await?;
    Ok((next, finished))
}

/// Deletes files a split stored and will not commit. One that fails to
/// go is deleted with the job's files, which include every file stored
/// under its entries' prefix.
async fn discard(w: &Worker, stored: &[String]) {
    for key in stored {
        if let Err(e) = w.storage.delete(key).await {
            tracing::warn!(error = %e, "deleting an unpacked file failed; it goes with the job's files");
        }
    }
}

async fn template_of(w: &Worker, job: &JobRow) -> Result<TemplateRow, Retry> {
    templates::get_any(&w.pool, job.template_id)
        .await?
        .ok_or_else(|| {
            Retry::from(format!(
                "template {} of job {} is missing",
                job.template_id, job.id
            ))
        })
}

/// `document`: index, file name and pages, as the payloads carry it.
fn document_json(job: &JobRow, doc: &DocumentRow, pages: Option<i32>) -> Value {
    json!({
        "index": doc.idx,
        "file_name": doc.file_name.clone().or_else(|| job.file_name.clone()),
        "pages": pages.or(doc.pages),
    })
}

/// The seed's success payload plus `document` and `status`.
pub fn success_payload(job: &JobRow, doc: &DocumentRow, pages: i32, result: &Value) -> Value {
    json!({
        "job_id": job.id,
        "template_id": job.template_id,
        "static_values": job.static_values.0,
        "result": result,
        "document": document_json(job, doc, Some(pages)),
        "status": status::SUCCESS,
    })
}

/// A failed document's payload: `result` null, an error instead. `result`
/// is sent rather than left out because the product page shows it as part
/// of the one payload shape: receivers index it.
pub fn failure_payload(job: &JobRow, doc: &DocumentRow) -> Value {
    json!({
        "job_id": job.id,
        "template_id": job.template_id,
        "static_values": job.static_values.0,
        "result": Value::Null,
        "document": document_json(job, doc, None),
        "status": status::FAILED,
        "error": {
            "code": doc.error_code.clone().unwrap_or_else(|| "processing_failed".into()),
            "message": doc.error_message.clone().unwrap_or_default(),
        },
    })
}

/// Processes one document. Steps: load it, its job and template; mark it
/// PROCESSING IMAGE; read the file; extract on a blocking thread; then in
/// one transaction charge, store the result, queue the webhook, maybe end
/// the job, and complete the task.
#[tracing::instrument(skip_all, fields(document_id = %task.ref_id))]
pub async fn process_document(w: &Worker, task: &Task) -> Result<Next, Retry> {
    let Some(doc) = documents::get(&w.pool, task.ref_id).await? else {
        queue::complete(&w.pool, task).await?;
        return Ok(None);
    };
    if doc.finished_at.is_some() {
        queue::complete(&w.pool, task).await?;
        return Ok(None);
    }
    let job = jobs::get_any(&w.pool, doc.job_id)
        .await?
        .ok_or_else(|| Retry::from("the document's job is missing"))?;
    let template = template_of(w, &job).await?;
    if doc.status != status::PROCESSING_IMAGE || job.status != status::PROCESSING_IMAGE {
        let mut tx = w.pool.begin().await?;
        documents::start(&mut *tx, doc.id).await?;
        documents::set_job_status(&mut *tx, job.id, status::PROCESSING_IMAGE).await?;
        tx.commit().await?;
    }
    // An account with nothing left cannot pay for any page: failed before
    // the extraction (up to `document_time_limit_secs` of work per document,
    // each of a ZIP's entries after the balance ran out) rather than after.
    // The charge below is the check that counts.
    let account = accounts::get(&w.pool, job.account_id).await?;
    // Failed before it was read: no page count.
    let unread = |code, message| finish_failed(w, task, &job, &template, &doc, None, code, message);
    if account.is_some_and(|a| a.credits <= 0) {
        return unread(
            "insufficient_credits",
            "the account has no credits left (a page costs 1): add credits, then submit this document again",
        )
        .await;
    }
    let key = doc.storage_key.clone().unwrap_or_default();
    let data = match w.storage.get(&key).await {
        Ok(data) => data,
        Err(StorageError::NotFound(_) | StorageError::InvalidKey(_)) => {
            return unread("file_missing", "the document is no longer in storage").await;
        }
        Err(e) => return Err(e.into()),
    };
    let spec = template.spec.0.clone();
    let opts = w.config.extract_options();
    let hard_limit = opts.give_up_after();
    let started = std::time::Instant::now();
    let extracted = run_bounded(hard_limit, move || {
        // One regex cache: the check and the extraction compile each
        // pattern once.
        paperhook_extract::with_regex_cache(|| {
            // No field limit here: the API checked the template against
            // `template_max_fields` when it was saved, and lowering that
            // limit must not break the templates saved under it.
            let template = paperhook_extract::Template::from_json_limited(spec, usize::MAX, None)?;
            paperhook_extract::extract(&data, &template, &opts)
        })
    })
    .await
    .map_err(|e| Retry::from(format!("extraction panicked: {e}")))?;
    let extracted = match extracted {
        Bounded::Done(extracted) => extracted,
        Bounded::Abandoned => {
            tracing::error!(
                document = %doc.id,
                limit_secs = hard_limit.as_secs(),
                "the extraction did not stop at its time limit; given up (its thread runs on)"
            );
            let message = format!(
                "processing the document did not stop within {} s (document_time_limit_secs plus page_time_limit_secs) and was given up; split it into smaller documents, or check that it is not damaged",
                hard_limit.as_secs()
            );
            w.request_restart("an extraction did not stop at its time limit and still runs");
            return finish_failed(
                w,
                task,
                &job,
                &template,
                &doc,
                None,
                "document_timeout",
                &message,
            )
            .await;
        }
    };
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "extracted");
    metrics::observe_stage(
        "extract",
        extracted.is_ok(),
        started.elapsed().as_secs_f64(),
    );
    if let Ok(x) = &extracted {
        for (stage, spent) in [("render", x.timings.render), ("ocr", x.timings.ocr)] {
            if !spent.is_zero() {
                metrics::observe_stage(stage, true, spent.as_secs_f64());
            }
        }
    }
    let extraction = match extracted {
        Ok(x) => x,
        // A page over its time limit may have met a busy machine: it is
        // tried once more, then fails (each try may cost a page limit per
        // page, and 25 of them with their back-off took hours).
        Err(e) if e.is_transient() && task.attempts < TRANSIENT_ATTEMPTS => {
            return Err(Retry::from(format!("{} ({})", e, e.code())));
        }
        Err(e) => {
            return finish_failed(
                w,
                task,
                &job,
                &template,
                &doc,
                None,
                e.code(),
                &e.to_string(),
            )
            .await;
        }
    };
    let pages = extraction.pages.max(1) as i32;
    if !extraction.missing_required.is_empty() {
        let message = format!(
            "required fields were not found in the document: {}",
            extraction.missing_required.join(", ")
        );
        return finish_failed(
            w,
            task,
            &job,
            &template,
            &doc,
            Some(pages),
            "required_field_missing",
            &message,
        )
        .await;
    }
    let result = Value::Object(extraction.result);
    let meta = serde_json::to_value(&extraction.fields).unwrap_or(Value::Null);

    let mut tx = w.pool.begin().await?;
    match documents::charge(&mut tx, job.account_id, job.id, doc.id, i64::from(pages)).await? {
        Charge::Insufficient { balance } => {
            drop(tx);
            let message = format!(
                "the document has {pages} page(s) and costs {pages} credit(s); the account has {balance}: add credits, then submit this document again"
            );
            return finish_failed(
                w,
                task,
                &job,
                &template,
                &doc,
                Some(pages),
                "insufficient_credits",
                &message,
            )
            .await;
        }
        Charge::Charged { .. } | Charge::AlreadyCharged => {}
    }
    documents::succeed(&mut tx, &doc, pages, &result, &meta).await?;
    let mut next = None;
    if template.webhook_url.is_some() {
        let payload = success_payload(&job, &doc, pages, &result);
        next = deliveries::create(&mut tx, job.account_id, job.id, doc.id, &payload, w.sends())
            .await?;
    }
    let finished = documents::finish_job_if_done(&mut tx, job.id).await?;
    if !queue::complete(&mut *tx, task).await? {
        tracing::warn!("lease lost before completion; another worker owns the document");
        return Ok(None);
    }
    tx.commit().await?;
    Finished::record(finished);
    tracing::info!(pages, "document succeeded");
    metrics::DOCUMENTS_PROCESSED
        .with_label_values(&["success"])
        .inc();
    metrics::PAGES_PROCESSED.inc_by(pages as u64);
    metrics::CREDITS_CHARGED.inc_by(pages as u64);
    if next.is_none() {
        // (With its webhook still to send, the files stay: the delivery
        // cleans up after itself.)
        w.cleanup_files(job.id).await;
    }
    Ok(next)
}

#[allow(clippy::too_many_arguments)]
async fn finish_failed(
    w: &Worker,
    task: &Task,
    job: &JobRow,
    template: &TemplateRow,
    doc: &DocumentRow,
    pages: Option<i32>,
    code: &str,
    message: &str,
) -> Result<Next, Retry> {
    let mut tx = w.pool.begin().await?;
    let (next, finished) = record_failure(
        &mut tx,
        job,
        doc.id,
        template.webhook_url.is_some(),
        pages,
        (code, message),
        w.sends(),
    )
    .await?;
    if !queue::complete(&mut *tx, task).await? {
        return Ok(None);
    }
    tx.commit().await?;
    Finished::record(finished);
    tracing::info!(code, "document failed");
    documents_failed(1);
    if next.is_none() {
        w.cleanup_files(job.id).await;
    }
    Ok(next)
}

/// A task out of attempts: records the failure on what it was for, so the
/// job still ends, and fails the task, in one transaction. Only while this
/// worker still holds the task: a task whose work committed was completed
/// in that commit (a failure after it, such as deleting files, must not
/// fail the job), and one whose lease was lost belongs to another worker.
/// A delivery's task that a redelivery asked for again meanwhile is given
/// back to the queue instead. Returns whether it gave the task up.
pub async fn give_up(w: &Worker, task: &Task, error: &str) -> anyhow::Result<bool> {
    let message = format!("processing failed repeatedly: {error}");
    let mut tx = w.pool.begin().await?;
    if task.kind == queue::kind::DELIVERY {
        // A delivery's row is locked before its task's, as a redelivery
        // and the recording of an attempt lock them: the other way round,
        // a redelivery asked for now could deadlock with this.
        sqlx::query("SELECT id FROM webhook_deliveries WHERE id = $1 FOR UPDATE")
            .bind(task.ref_id)
            .execute(&mut *tx)
            .await?;
        // A redelivery asked for since this claim reset the task's attempts
        // (queue::requeue_now_many): it goes out again on its fresh
        // schedule instead of failing.
        let redelivered: Option<bool> =
            sqlx::query_scalar("SELECT attempts < $2 FROM tasks WHERE id = $1 AND locked_by = $3")
                .bind(task.id)
                .bind(task.attempts)
                .bind(&task.locked_by)
                .fetch_optional(&mut *tx)
                .await?;
        if redelivered == Some(true) {
            queue::release(&mut *tx, task).await?;
            tx.commit().await?;
            return Ok(false);
        }
    }
    // What the task is for before the task's own row, in the order the work
    // that completes a task locks them: the account (charged; and the
    // webhook delivery this may create refers to it), the document, its
    // job, then the task. The other way round, a stale claim committing its
    // work while this gives up, or a sibling document charging, deadlocked
    // with it (PostgreSQL ended one). The rows are locked as an UPDATE locks
    // them, which the siblings' foreign-key checks do not wait for.
    let rows: Option<(Uuid, Option<Uuid>, Uuid)> =
        match task.kind.as_str() {
            queue::kind::DOCUMENT => sqlx::query_as(
                "SELECT j.account_id, d.id, j.id FROM documents d JOIN jobs j ON j.id = d.job_id
                 WHERE d.id = $1",
            )
            .bind(task.ref_id)
            .fetch_optional(&mut *tx)
            .await?,
            queue::kind::JOB => {
                sqlx::query_as("SELECT account_id, NULL::uuid, id FROM jobs WHERE id = $1")
                    .bind(task.ref_id)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            _ => None,
        };
    if let Some((account, document, job)) = rows {
        sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR KEY SHARE")
            .bind(account)
            .execute(&mut *tx)
            .await?;
        if let Some(document) = document {
            sqlx::query("SELECT 1 FROM documents WHERE id = $1 FOR NO KEY UPDATE")
                .bind(document)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("SELECT 1 FROM jobs WHERE id = $1 FOR NO KEY UPDATE")
            .bind(job)
            .execute(&mut *tx)
            .await?;
    }
    // Then the task, so that its row stays locked until the commit.
    if !queue::fail(&mut *tx, task, error).await? {
        return Ok(false);
    }
    let mut job_id = None;
    let mut failed = false;
    let mut gave_up_delivery = false;
    let finished = match task.kind.as_str() {
        queue::kind::DOCUMENT => match documents::get(&mut *tx, task.ref_id).await? {
            None => None,
            Some(doc) => {
                job_id = Some(doc.job_id);
                let job = jobs::get_any(&mut *tx, doc.job_id)
                    .await?
                    .context("job missing")?;
                let webhook = has_webhook(&mut tx, &job).await?;
                let failure = ("processing_failed", message.as_str());
                failed = true;
                record_failure(&mut tx, &job, doc.id, webhook, None, failure, w.queues())
                    .await?
                    .1
            }
        },
        queue::kind::JOB => {
            job_id = Some(task.ref_id);
            if let Some(job) = jobs::get_any(&mut *tx, task.ref_id).await? {
                let upload = "processing_failed";
                failed = fail_as_upload(&mut tx, &job, upload, &message, w.queues())
                    .await?
                    .0;
            }
            documents::fail_job(
                &mut tx,
                task.ref_id,
                status::FAILED,
                "processing_failed",
                &message,
            )
            .await?
        }
        _ => {
            let done = sqlx::query(
                "UPDATE webhook_deliveries SET state = 'failed' WHERE id = $1 AND state = 'pending'",
            )
            .bind(task.ref_id)
            .execute(&mut *tx)
            .await?;
            // Recorded as an attempt, as an expiry is: the delivery's
            // attempts say why it failed, and the failure is counted.
            gave_up_delivery = done.rows_affected() == 1;
            if gave_up_delivery {
                sqlx::query(
                    "INSERT INTO webhook_attempts (delivery_id, latency_ms, error_class, error_message)
                     VALUES ($1, 0, 'gave_up', $2)",
                )
                .bind(task.ref_id)
                .bind(&message)
                .execute(&mut *tx)
                .await?;
            }
            None
        }
    };
    tx.commit().await?;
    if gave_up_delivery {
        paperhook_core::metrics::WEBHOOK_ATTEMPTS
            .with_label_values(&["failed", paperhook_core::metrics::status_class(None)])
            .inc();
    }
    Finished::record(finished);
    documents_failed(usize::from(failed));
    // A job given up may have files no document row names: those its
    // split stored before a commit that never came.
    if let Some(job_id) = job_id {
        w.cleanup_files(job_id).await;
    }
    Ok(true)
}
