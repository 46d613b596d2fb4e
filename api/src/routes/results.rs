//! `POST /v1/job-results` (results as JSON or CSV, kept 24 hours after a job
//! finishes) and `POST /v1/jobs/{job_id}/redeliver` (send the webhooks again).

use paperhook_core::db::documents::{self, DocumentResult};
use paperhook_core::db::jobs::JobRow;
use paperhook_core::db::{deliveries, templates};
use paperhook_core::order::InTemplateOrder;
use paperhook_core::status;
use paperhook_csv::{DOCUMENT_COLUMNS, cell, push_row, unique_column};
use salvo::http::StatusCode;
use salvo::oapi::extract::PathParam;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::auth;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, ToSchema)]
pub struct JobResultsRequest {
    /// UUID of the job.
    pub job_id: String,
    /// `json` (default) or `csv`.
    pub result_format: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResultError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentResultOut {
    /// Position of the file in the job (0 for a single file; ZIP order otherwise).
    pub index: i32,
    pub file_name: Option<String>,
    /// PROCESS IMAGE SUCCESS or PROCESS IMAGE FAILED.
    pub status: String,
    pub pages: Option<i32>,
    /// The extracted fields (as in the webhook's `result`); null when the document failed.
    /// Keys in the order of the template's fields (then any other).
    #[salvo(schema(value_type = Option<Object>))]
    pub result: Option<InTemplateOrder>,
    pub error: Option<ResultError>,
}

/// Results of a finished job, as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobResults {
    pub job_id: Uuid,
    pub template_id: Uuid,
    /// SUCCESS or FAILED.
    pub status: String,
    #[salvo(schema(value_type = Object))]
    pub static_values: Value,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the results will be deleted (`result_retention_secs` after the job
    /// finished: 24 hours by default).
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub documents: Vec<DocumentResultOut>,
}

/// The results of a job: JSON with the job, its `static_values` and each
/// document's `result`, or CSV with one row per document (header: document
/// columns, static value keys, then the template's field names). Kept for
/// `result_retention_secs` (24 hours by default) after the job finishes;
/// then 410 `results_expired`. A job still
/// running answers 409 `results_not_ready`.
///
/// The body is JSON; sent without a Content-Type, or as `text/plain` or
/// `application/x-www-form-urlencoded` (`curl -d @body.json`), it is read
/// as JSON too when it is a JSON object (else 415). With an empty body,
/// `job_id` and `result_format` are read from the query string instead
/// (the body wins when both are sent).
#[endpoint(
    tags("jobs"),
    parameters(
        (
            "job_id" = Option<String>,
            Query,
            description = "UUID of the job, when the body is empty (the body's wins otherwise)."
        ),
        (
            "result_format" = Option<String>,
            Query,
            description = "`json` (default) or `csv`, when the body is empty (the body's wins otherwise)."
        ),
    ),
    request_body(content = Option<JobResultsRequest>, content_type = "application/json"),
    responses(
        (status_code = 200, body = JobResults, description = "JSON results (or text/csv when result_format is csv)"),
        (status_code = 409, description = "The job has not finished yet (results_not_ready)"),
        (status_code = 410, description = "The results were deleted result_retention_secs (24 hours by default) after the job finished (results_expired), or on request (results_deleted)")
    )
)]
pub async fn job_results(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<()> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot).clone();
    let what = "a JSON body with job_id and result_format";
    // An empty body: the query string's (`?job_id=…&result_format=csv`).
    let input = match crate::read_json_or_empty::<JobResultsRequest>(req, &state, what).await? {
        Some(input) => input,
        None => JobResultsRequest {
            job_id: req.query::<String>("job_id").ok_or_else(|| {
                ApiError::unprocessable(
                    "missing_field",
                    "job_id is required: in the JSON body, or in the query string when the body is empty",
                )
            })?,
            result_format: req.query::<String>("result_format"),
        },
    };
    let format = input
        .result_format
        .as_deref()
        .unwrap_or("json")
        .to_ascii_lowercase();
    if format != "json" && format != "csv" {
        return Err(ApiError::unprocessable(
            "invalid_result_format",
            format!(
                "result_format must be \"json\" or \"csv\", not {:?}",
                input.result_format.unwrap_or_default()
            ),
        ));
    }
    // The job and its results as of one moment: an expiry or a deletion
    // committing between the two reads would show a finished job without
    // its results instead of 410.
    let mut snapshot = paperhook_core::db::snapshot(&state.pool).await?;
    let job = super::own_job(&mut *snapshot, account_id, &input.job_id).await?;
    if !status::is_final(&job.status) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "results_not_ready",
            format!(
                "the job is still being processed (status {:?}); results are available once it is SUCCESS or FAILED",
                job.status
            ),
        ));
    }
    if job.data_deleted_at.is_some() {
        return Err(deleted());
    }
    let expires_at = expires_at(&state, &job);
    // By the database's clock, as the worker and the janitor decide.
    let now = paperhook_core::db::now(&mut *snapshot).await?;
    if job.results_expired_at.is_some() || expires_at.is_some_and(|t| t <= now) {
        return Err(expired());
    }
    // A page of documents at a time, whatever the size of the job.
    let first = documents::results_page(&mut *snapshot, job.id, -1, RESULTS_PAGE).await?;
    let fields = templates::field_names(&mut *snapshot, job.template_id).await?;
    let render = if format == "csv" {
        let keys = documents::result_keys(&mut *snapshot, job.id).await?;
        Render::Csv(CsvColumns::new(&job, &fields, keys))
    } else {
        Render::Json(fields.into())
    };
    snapshot.commit().await?;
    let (content_type, head) = match &render {
        Render::Json(_) => {
            // The job's fields, and the documents after them, written as
            // they are read.
            let mut head = serde_json::to_string(&JobResults {
                job_id: job.id,
                template_id: job.template_id,
                status: job.status.clone(),
                static_values: job.static_values.0.clone(),
                finished_at: job.finished_at,
                expires_at,
                documents: Vec::new(),
            })
            .map_err(|e| ApiError::internal("writing results", &e))?;
            debug_assert!(head.ends_with("[]}"));
            head.truncate(head.len() - 2);
            ("application/json; charset=utf-8", head)
        }
        Render::Csv(columns) => {
            res.headers_mut().insert(
                "content-disposition",
                format!("attachment; filename=\"job-{}.csv\"", job.id)
                    .parse()
                    .expect("ASCII header"),
            );
            let mut head = String::new();
            push_row(&mut head, &columns.header);
            ("text/csv; charset=utf-8", head)
        }
    };
    res.headers_mut().insert(
        salvo::http::header::CONTENT_TYPE,
        salvo::http::HeaderValue::from_static(content_type),
    );
    let sending = pages(Sending {
        pool: state.pool.clone(),
        job,
        render,
        head: Some(head),
        page: Some(first),
        sent: 0,
    });
    if req.version() < salvo::http::Version::HTTP_11 {
        // HTTP/1.0 has no chunks: an answer cut short would look whole
        // (nginx speaks HTTP/1.0 to the API unless told otherwise), so it
        // is read whole first.
        use futures::TryStreamExt;
        let whole: Vec<bytes::Bytes> = sending.try_collect().await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                expired()
            } else {
                ApiError::internal("reading results", &e)
            }
        })?;
        res.write_body(whole.concat())
            .map_err(|e| ApiError::internal("writing results", &e))?;
    } else {
        res.stream(sending);
    }
    Ok(())
}

/// Documents read at a time while results are sent: what one answer holds
/// in memory (this page and the next), whatever the size of the job (a ZIP
/// of 1,000 documents).
const RESULTS_PAGE: i64 = 100;

/// How a page of documents is written.
enum Render {
    /// With the template's field names: each `result` in their order.
    Json(std::sync::Arc<[String]>),
    Csv(CsvColumns),
}

/// An answer being sent, a page of documents at a time.
struct Sending {
    pool: sqlx::PgPool,
    job: JobRow,
    render: Render,
    /// What comes before the first document.
    head: Option<String>,
    /// The page to write next; none after the last.
    page: Option<Vec<DocumentResult>>,
    /// Documents written so far.
    sent: usize,
}

/// The body: each page written while the next is read. A job whose results
/// expire or are deleted before its last page was read ends the body short
/// of its end (an error for the client, never a shorter list).
fn pages(sending: Sending) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures::stream::unfold(sending, |mut s| async move {
        let page = s.page.take()?;
        let full = page.len() as i64 == RESULTS_PAGE;
        let after = page.last().map_or(-1, |d| d.idx);
        let mut out = s.head.take().unwrap_or_default();
        s.render.write(&mut out, &s.job, page, &mut s.sent);
        if !full {
            s.render.end(&mut out);
            return Some((Ok(bytes::Bytes::from(out)), s));
        }
        match next_page(&s.pool, s.job.id, after).await {
            Ok(Some(next)) if !next.is_empty() => s.page = Some(next),
            Ok(Some(_)) => s.render.end(&mut out),
            Ok(None) => {
                tracing::warn!(job_id = %s.job.id, "the job's results went while they were being sent; the answer ends short");
                let gone =
                    std::io::Error::new(std::io::ErrorKind::NotFound, "the results were deleted");
                return Some((Err(gone), s));
            }
            Err(e) => {
                tracing::warn!(job_id = %s.job.id, error = %e, "reading results failed while they were being sent; the answer ends short");
                return Some((Err(std::io::Error::other(e)), s));
            }
        }
        Some((Ok(bytes::Bytes::from(out)), s))
    })
}

/// The page of documents after index `after`, as of one moment with the
/// job still holding its results; None once they are gone.
async fn next_page(
    pool: &sqlx::PgPool,
    job_id: Uuid,
    after: i32,
) -> sqlx::Result<Option<Vec<DocumentResult>>> {
    let mut snapshot = paperhook_core::db::snapshot(pool).await?;
    let live: Option<bool> = sqlx::query_scalar(
        "SELECT data_deleted_at IS NULL AND results_expired_at IS NULL FROM jobs WHERE id = $1",
    )
    .bind(job_id)
    .fetch_optional(&mut *snapshot)
    .await?;
    if live != Some(true) {
        return Ok(None);
    }
    let page = documents::results_page(&mut *snapshot, job_id, after, RESULTS_PAGE).await?;
    snapshot.commit().await?;
    Ok(Some(page))
}

impl Render {
    fn write(&self, out: &mut String, job: &JobRow, page: Vec<DocumentResult>, sent: &mut usize) {
        for d in page {
            match self {
                Render::Json(fields) => {
                    if *sent > 0 {
                        out.push(',');
                    }
                    let doc = DocumentResultOut {
                        index: d.idx,
                        file_name: d.file_name.or_else(|| job.file_name.clone()),
                        status: d.status,
                        pages: d.pages,
                        result: d.result.map(|r| InTemplateOrder {
                            value: r.0,
                            fields: fields.clone(),
                        }),
                        error: d.error_code.map(|code| ResultError {
                            code,
                            message: d.error_message.unwrap_or_default(),
                        }),
                    };
                    // Plain data: serialising it cannot fail.
                    out.push_str(&serde_json::to_string(&doc).unwrap_or_default());
                }
                Render::Csv(columns) => columns.row(out, job, &d),
            }
            *sent += 1;
        }
    }

    /// What comes after the last document.
    fn end(&self, out: &mut String) {
        if let Render::Json(_) = self {
            out.push_str("]}");
        }
    }
}

/// Whether the job's results are past their retention (or deleted), whether
/// or not the janitor has removed them yet: no endpoint shows them then.
/// `now` is the database's (`finished_at` is its time, and the worker and
/// the janitor decide by it): an API host whose clock ran ahead answered
/// 410 for results still to be had, one behind served them and accepted
/// redeliveries the worker then failed.
pub(crate) fn results_gone(
    state: &crate::AppState,
    job: &JobRow,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    job.data_deleted_at.is_some()
        || job.results_expired_at.is_some()
        || expires_at(state, job).is_some_and(|t| t <= now)
}

/// When a finished job's results expire (`result_retention` after it finished).
fn expires_at(state: &crate::AppState, job: &JobRow) -> Option<chrono::DateTime<chrono::Utc>> {
    let retention = chrono::Duration::from_std(state.config.result_retention()).unwrap_or_default();
    job.finished_at.map(|t| t + retention)
}

/// The CSV's columns: the document's, the static value keys, then the
/// template's fields as they are now and any other key a result holds (a
/// field since renamed or removed), by the first document holding it: no
/// value is left out.
struct CsvColumns {
    header: Vec<String>,
    fields: Vec<String>,
}

impl CsvColumns {
    /// `keys`: the keys of the job's results, with the first document's
    /// index that holds each ([`documents::result_keys`]).
    fn new(job: &JobRow, template_fields: &[String], keys: Vec<(String, i32)>) -> CsvColumns {
        let mut fields = template_fields.to_vec();
        let mut others: Vec<(i32, String)> = keys
            .into_iter()
            .filter(|(key, _)| !fields.contains(key))
            .map(|(key, first)| (first, key))
            .collect();
        others.sort();
        fields.extend(others.into_iter().map(|(_, key)| key));
        let mut header: Vec<String> = DOCUMENT_COLUMNS.map(str::to_owned).to_vec();
        for key in statics(job).keys() {
            header.push(unique_column(&header, "static_values.", key));
        }
        for field in &fields {
            header.push(unique_column(&header, "result.", field));
        }
        CsvColumns { header, fields }
    }

    fn row(&self, out: &mut String, job: &JobRow, d: &DocumentResult) {
        let mut row = vec![
            job.id.to_string(),
            d.idx.to_string(),
            d.file_name
                .clone()
                .or_else(|| job.file_name.clone())
                .unwrap_or_default(),
            d.status.clone(),
            d.pages.map(|p| p.to_string()).unwrap_or_default(),
            d.error_code.clone().unwrap_or_default(),
            d.error_message.clone().unwrap_or_default(),
        ];
        row.extend(statics(job).values().map(|v| cell(Some(v))));
        let result = d.result.as_ref().map(|r| &r.0);
        row.extend(
            self.fields
                .iter()
                .map(|f| cell(result.and_then(|r| r.get(f)))),
        );
        push_row(out, &row);
    }
}

fn statics(job: &JobRow) -> &Map<String, Value> {
    static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
    job.static_values.0.as_object().unwrap_or(&EMPTY)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Redelivered {
    pub job_id: Uuid,
    /// How many webhook deliveries were queued again (one per document).
    pub queued: u64,
}

/// Sends every webhook of a finished job again, with the same `webhook-id`
/// per document and a fresh retry schedule.
///
/// Webhooks are one `POST` per document, signed per Standard Webhooks
/// (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64
/// HMAC-SHA256 of id.timestamp.body>` with the template's `whsec_` secret).
/// Success body: `{"job_id", "template_id", "static_values", "result",
/// "document": {"index", "file_name", "pages"}, "status": "SUCCESS"}`.
/// Failure body: the same with `"result": null`, `"status": "FAILED"` and
/// `"error": {"code", "message"}`.
#[endpoint(
    tags("jobs"),
    responses(
        (status_code = 202, body = Redelivered),
        (status_code = 409, description = "The job has not finished (job_not_finished) or has no webhook deliveries (nothing_to_redeliver)"),
        (status_code = 410, description = "The job's results expired (results_expired) or were deleted on request (results_deleted): nothing left to send"),
    )
)]
pub async fn redeliver(
    job_id: PathParam<String>,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<()> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot).clone();
    let job = super::own_job(&state.pool, account_id, &job_id.into_inner()).await?;
    if !status::is_final(&job.status) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "job_not_finished",
            "the job is still being processed; its webhooks are sent when each document finishes",
        ));
    }
    if job.data_deleted_at.is_some() {
        return Err(deleted());
    }
    // Past retention the results are gone, whether or not the janitor
    // has deleted them yet.
    let now = paperhook_core::db::now(&state.pool).await?;
    if job.results_expired_at.is_some() || expires_at(&state, &job).is_some_and(|t| t <= now) {
        return Err(expired());
    }
    let mut tx = state.pool.begin().await?;
    let queued = deliveries::redeliver(&mut tx, job.id, state.config.task_max_attempts()).await?;
    tx.commit().await?;
    if queued == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "nothing_to_redeliver",
            "this job has no webhook deliveries (its template had no webhook URL)",
        ));
    }
    res.status_code(StatusCode::ACCEPTED);
    res.render(Json(Redelivered {
        job_id: job.id,
        queued,
    }));
    Ok(())
}

/// The 410 for a job whose data was deleted on request.
pub fn deleted() -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "results_deleted",
        "the data of this job (file, results, webhook payloads, static values) was deleted on request and cannot be recovered",
    )
}

fn expired() -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "results_expired",
        "the results of this job were deleted when their retention ended (result_retention_secs after it finished) and cannot be recovered",
    )
}

/// Which deliveries to send again.
#[derive(Deserialize, ToSchema)]
pub struct RedeliverWhere {
    /// `failed` (retries spent) or `gone` (the receiver answered 410).
    delivery: String,
    /// Only the deliveries of this template's jobs.
    template_id: Option<Uuid>,
    /// At most this many deliveries, oldest first (1-1000, default 1000).
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct RedeliveredMany {
    /// How many webhook deliveries were queued again.
    queued: u64,
    /// The jobs they belong to.
    job_ids: Vec<Uuid>,
}

/// Sends again every webhook that `failed` (or was refused with 410,
/// `gone`), oldest first, for example once a receiver is fixed: the same
/// `webhook-id` per document and a fresh retry schedule. Jobs whose results
/// expired are left out. At most `limit` per call; call again while
/// `queued` equals it.
#[endpoint(
    tags("jobs"),
    responses(
        (status_code = 202, body = RedeliveredMany),
        (status_code = 404, description = "No such template (template_not_found)"),
        (status_code = 422, description = "delivery is not failed or gone (invalid_delivery), or limit is out of range (invalid_limit)"),
    )
)]
pub async fn redeliver_many(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<()> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot).clone();
    let input: RedeliverWhere = crate::read_json(
        req,
        &state,
        r#"JSON like {"delivery": "failed", "template_id": "…"}"#,
    )
    .await?;
    if !["failed", "gone"].contains(&input.delivery.as_str()) {
        return Err(ApiError::unprocessable(
            "invalid_delivery",
            format!(
                "delivery must be \"failed\" or \"gone\", not {:?} (pending deliveries are being retried; send a delivered job again with POST /v1/jobs/{{job_id}}/redeliver)",
                input.delivery
            ),
        ));
    }
    let limit = input.limit.unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::unprocessable(
            "invalid_limit",
            format!("limit must be 1-1000, not {limit}"),
        ));
    }
    if let Some(id) = input.template_id
        && templates::get(&state.pool, account_id, id).await?.is_none()
    {
        return Err(super::templates::not_found());
    }
    let mut tx = state.pool.begin().await?;
    let ids = deliveries::redeliver_where(
        &mut tx,
        account_id,
        &input.delivery,
        input.template_id,
        limit,
        state.config.result_retention(),
        state.config.task_max_attempts(),
    )
    .await?;
    let job_ids = deliveries::jobs_of(&mut *tx, &ids).await?;
    tx.commit().await?;
    res.status_code(StatusCode::ACCEPTED);
    res.render(Json(RedeliveredMany {
        queued: ids.len() as u64,
        job_ids,
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_keep_every_value_and_never_repeat() {
        let now = chrono::Utc::now();
        let job = JobRow {
            id: Uuid::nil(),
            account_id: Uuid::nil(),
            template_id: Uuid::nil(),
            status: "SUCCESS".into(),
            content_type: "pdf".into(),
            file_name: Some("a.pdf".into()),
            size_bytes: 1,
            storage_key: String::new(),
            static_values: sqlx::types::Json(serde_json::json!({"status": "mine", "ref": 7})),
            idempotency_key: None,
            error_code: None,
            error_message: None,
            created_at: now,
            updated_at: now,
            finished_at: Some(now),
            file_deleted_at: None,
            results_expired_at: None,
            data_deleted_at: None,
        };
        let doc = |result: Value| DocumentResult {
            idx: 0,
            file_name: None,
            status: "PROCESS IMAGE SUCCESS".into(),
            pages: Some(1),
            error_code: None,
            error_message: None,
            result: Some(sqlx::types::Json(result)),
            finished_at: Some(now),
        };
        // `old_name` was a field when the first document ran; `job_id` and
        // `ref` collide with a document column and a static value.
        let docs = [
            doc(serde_json::json!({"total": 1, "old_name": "x", "job_id": "J", "ref": "R"})),
            doc(serde_json::json!({"total": 2})),
        ];
        let fields = ["total".to_owned(), "job_id".to_owned(), "ref".to_owned()];
        // What `documents::result_keys` reads: each key with its first document.
        // Keys no field names go last, by the first document holding them,
        // then by name (as a result's keys come): `zz` before the later `a`.
        let keys = [
            ("total", 0),
            ("old_name", 0),
            ("job_id", 0),
            ("ref", 0),
            ("a", 1),
            ("zz", 0),
        ]
        .map(|(k, first)| (k.to_owned(), first))
        .to_vec();
        let columns = CsvColumns::new(&job, &fields, keys);
        let mut csv = String::new();
        push_row(&mut csv, &columns.header);
        for d in &docs {
            columns.row(&mut csv, &job, d);
        }
        let mut lines = csv.split("\r\n");
        assert_eq!(
            lines.next().unwrap(),
            "job_id,index,file_name,status,pages,error_code,error_message,\
             ref,static_values.status,total,result.job_id,result.ref,old_name,zz,a"
        );
        assert!(
            lines.next().unwrap().ends_with(",7,mine,1,J,R,x,,"),
            "{csv}"
        );
        assert!(lines.next().unwrap().ends_with(",7,mine,2,,,,,"), "{csv}");
    }
}
