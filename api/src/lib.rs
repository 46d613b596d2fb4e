//! The Paperhook HTTP API: job submission and status, templates, account and
//! credits, health, and the OpenAPI document. Handlers parse and check the
//! request, call `paperhook-core`, and render; the admin CLI lives in `admin`.

pub mod admin;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod serve;
pub mod upload_memory;

use std::sync::Arc;

use paperhook_core::config::Config;
use paperhook_core::crypto::Keyring;
use paperhook_core::db::{accounts, jobs};
use paperhook_core::queue::{self, Waker};
use paperhook_core::storage::Storage;
use salvo::catcher::Catcher;
use salvo::oapi::OpenApi;
use salvo::prelude::*;
use sqlx::PgPool;

/// Everything a handler needs, shared by all requests of this process.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub pool: PgPool,
    pub storage: Storage,
    pub config: Config,
    pub keyring: Keyring,
    /// Wakes idle workers after a submission commits.
    pub waker: Waker,
    /// Inserts concurrent submissions together.
    pub inserter: jobs::Inserter,
    /// Checks the API keys of concurrent requests together.
    pub keys: accounts::KeyChecker,
    /// Places for template previews (`preview_max_concurrent`).
    pub previews: Arc<tokio::sync::Semaphore>,
    /// Places for test events (`webhook_test_max_concurrent`).
    pub webhook_tests: Arc<tokio::sync::Semaphore>,
    /// The memory uploads may take (`submission_memory_bytes`).
    pub upload_memory: upload_memory::UploadMemory,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Needs a Tokio runtime (it starts the [`Waker`]'s and the
    /// [`jobs::Inserter`]'s and [`accounts::KeyChecker`]'s tasks).
    pub fn new(pool: PgPool, storage: Storage, config: Config) -> anyhow::Result<AppState> {
        let keyring = config.keyring()?;
        let waker = Waker::spawn(pool.clone(), queue::kind::JOB);
        let inserter = jobs::Inserter::spawn(
            pool.clone(),
            config.submission_batch_max_rows as usize,
            config.submission_batch_statements as usize,
            config.task_max_attempts(),
        );
        let keys = accounts::KeyChecker::spawn(
            pool.clone(),
            config.rate_limit(),
            config.auth_batch_max_keys as usize,
            config.auth_batch_statements as usize,
        );
        let previews = Arc::new(tokio::sync::Semaphore::new(
            config.preview_max_concurrent as usize,
        ));
        let webhook_tests = Arc::new(tokio::sync::Semaphore::new(
            config.webhook_test_max_concurrent as usize,
        ));
        let upload_memory = routes::jobs::upload_memory(&config)?;
        Ok(AppState(Arc::new(Inner {
            previews,
            webhook_tests,
            upload_memory,
            waker,
            inserter,
            keys,
            pool,
            storage,
            config,
            keyring,
        })))
    }
}

/// The state of this process, injected by the router.
pub fn state(depot: &Depot) -> &AppState {
    depot
        .get_typed::<AppState>()
        .expect("AppState is injected at the root of the router")
}

/// Reads a JSON body of at most `max_json_bytes`; `what` names the expected
/// body in the error (400 malformed_json, 413 body_too_large, 415).
pub async fn read_json<T: serde::de::DeserializeOwned>(
    req: &mut Request,
    state: &AppState,
    what: &str,
) -> error::ApiResult<T> {
    read_json_up_to(
        req,
        state,
        what,
        state.config.max_json_bytes,
        "max_json_bytes",
    )
    .await
}

/// [`read_json`] with a smaller limit (`setting` names it in the 413).
/// The body must arrive within `submission_read_timeout_secs` (else `408`):
/// a client stalling mid-body holds a connection and its buffer no longer.
pub async fn read_json_up_to<T: serde::de::DeserializeOwned>(
    req: &mut Request,
    state: &AppState,
    what: &str,
    limit: u64,
    setting: &str,
) -> error::ApiResult<T> {
    let parse = async {
        req.parse_json_with_max_size(limit as usize)
            .await
            .map_err(|e| match e {
                salvo::http::ParseError::PayloadTooLarge => body_too_large(limit, setting),
                e => error::ApiError::from_parse(e, limit, what),
            })
    };
    let value: T = within_read_timeout(state, parse).await?;
    // The body is cached: this reads it again without waiting.
    if let Ok(body) = req.payload_with_max_size(limit as usize).await
        && has_nul_escape(body)
    {
        return Err(error::ApiError::nul_in_text());
    }
    Ok(value)
}

/// Whether a body sent as `content_type` (a media type's essence, empty
/// for none) is read as JSON when it is a JSON object (its first byte
/// after white space `{`): what `curl -d @body.json`
/// (`application/x-www-form-urlencoded`) and Python's
/// `requests.post(data=json.dumps(...))` (no Content-Type) send. Only for
/// `POST /process-job` and `POST /v1/job-results`, whose key is in a
/// header: a dashboard session's request that changes state needs its
/// `x-csrf-token`, which no cross-site form sends.
pub fn json_when_object(content_type: &str) -> bool {
    matches!(
        content_type,
        "" | "text/plain" | "application/x-www-form-urlencoded"
    )
}

/// A JSON body of at most `max_json_bytes` as [`read_json`] reads it, also
/// sent as a type that [`json_when_object`] takes (other bodies of such a
/// type, and other types, are `415`); `None` for an empty body (white
/// space only), whatever its type.
pub async fn read_json_or_empty<T: serde::de::DeserializeOwned>(
    req: &mut Request,
    state: &AppState,
    what: &str,
) -> error::ApiResult<Option<T>> {
    let limit = state.config.max_json_bytes;
    let content_type = req
        .content_type()
        .map(|m| m.essence_str().to_owned())
        .unwrap_or_default();
    let declared_json = req
        .content_type()
        .is_some_and(|m| m.subtype() == salvo::http::mime::JSON);
    let unsupported =
        || error::ApiError::from_parse(salvo::http::ParseError::InvalidContentType, limit, what);
    if !declared_json && !json_when_object(&content_type) {
        return Err(unsupported());
    }
    let read = async {
        req.payload_with_max_size(limit as usize)
            .await
            .cloned()
            .map_err(|e| match e {
                salvo::http::ParseError::PayloadTooLarge => body_too_large(limit, "max_json_bytes"),
                e => error::ApiError::from_parse(e, limit, what),
            })
    };
    let body = within_read_timeout(state, read).await?;
    let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Ok(None);
    };
    if !declared_json && *first != b'{' {
        return Err(unsupported());
    }
    let value = serde_json::from_slice(&body).map_err(|e| error::ApiError::from_json(&e))?;
    if has_nul_escape(&body) {
        return Err(error::ApiError::nul_in_text());
    }
    Ok(Some(value))
}

/// `413 body_too_large`: a JSON body over `limit` (`setting`).
fn body_too_large(limit: u64, setting: &str) -> error::ApiError {
    error::ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the JSON body is larger than the limit of {limit} bytes ({setting})"),
    )
}

/// Reads a request's body (`read`) within `submission_read_timeout_secs`,
/// or `408 request_timeout`: a client that stalls holds its memory and a
/// connection no longer than that.
pub async fn within_read_timeout<T>(
    state: &AppState,
    read: impl std::future::Future<Output = error::ApiResult<T>>,
) -> error::ApiResult<T> {
    let limit = state.config.submission_read_timeout();
    tokio::time::timeout(limit, read).await.unwrap_or_else(|_| {
        Err(error::ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s (submission_read_timeout_secs)",
                limit.as_secs()
            ),
        ))
    })
}

/// Whether JSON text holds `\u0000` in a string: PostgreSQL stores no NUL
/// character in text, so such a value could never be saved. (A raw NUL is
/// not valid JSON at all; `\\u0000` is a backslash and `u0000`.)
pub fn has_nul_escape(json: &[u8]) -> bool {
    let mut rest = json;
    while let Some(at) = rest.iter().position(|&b| b == b'\\') {
        let run = rest[at..].iter().take_while(|&&b| b == b'\\').count();
        let after = &rest[at + run..];
        if run % 2 == 1 && after.starts_with(b"u0000") {
            return true;
        }
        rest = after;
    }
    false
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .hoop(no_store)
        .hoop(auth::require_key)
        .push(Router::with_path("process-job").post(routes::jobs::process_job))
        .push(Router::with_path("job-status").get(routes::jobs::job_status))
        .push(
            Router::with_path("v1")
                .push(Router::with_path("job-results").post(routes::results::job_results))
                .push(Router::with_path("jobs/redeliver").post(routes::results::redeliver_many))
                .push(Router::with_path("jobs/{job_id}/redeliver").post(routes::results::redeliver))
                .push(
                    Router::with_path("templates")
                        .get(routes::templates::list_templates)
                        .post(routes::templates::create_template)
                        .push(
                            Router::with_path("{id}")
                                .get(routes::templates::get_template)
                                .put(routes::templates::update_template)
                                .delete(routes::templates::delete_template)
                                .push(
                                    Router::with_path("webhook-test")
                                        .post(routes::templates::send_test_event),
                                )
                                .push(
                                    Router::with_path("webhook-secret")
                                        .get(routes::templates::get_webhook_secret)
                                        .push(
                                            Router::with_path("rotate")
                                                .post(routes::templates::rotate_webhook_secret),
                                        ),
                                ),
                        ),
                )
                .push(
                    Router::with_path("account")
                        .get(routes::account::get_account)
                        .push(Router::with_path("ledger").get(routes::account::get_ledger)),
                )
                .push(
                    Router::with_path("api-keys")
                        .get(routes::keys::list_keys)
                        .post(routes::keys::create_key)
                        .push(Router::with_path("{prefix}/revoke").post(routes::keys::revoke_key)),
                )
                .push(
                    Router::with_path("jobs")
                        .get(routes::job_views::list_jobs)
                        .push(
                            Router::with_path("{job_id}")
                                .get(routes::job_views::get_job)
                                .delete(routes::job_views::delete_job),
                        ),
                )
                .push(
                    Router::with_path("preview")
                        .push(Router::with_path("render").post(routes::preview::render))
                        .push(Router::with_path("extract").post(routes::preview::extract)),
                )
                .push(
                    Router::with_path("session")
                        .get(dashboard::current)
                        .delete(dashboard::sign_out),
                ),
        );
    // With `metrics_addr` set, `/metrics` is served there only (see
    // `serve::start`), away from the port clients reach.
    let metrics_here = state.config.metrics_addr.is_empty();
    let mut router = Router::new()
        .hoop(affix_state::inject(state))
        // Outside CatchPanic: a handler's panic unwinds through the hoops
        // inside it, and its 500 must be counted like any other.
        .hoop(metrics::track)
        .hoop(CatchPanic::new())
        .hoop(nosniff);
    if metrics_here {
        router = router.push(Router::with_path("metrics").get(metrics::scrape));
    }
    let router = router
        .push(Router::with_path("healthz").get(routes::health::healthz))
        .push(Router::with_path("readyz").get(routes::health::readyz))
        .push(
            Router::with_path("v1/session/sign-in")
                .hoop(no_store)
                .post(dashboard::sign_in),
        )
        .push(api);
    let doc = OpenApi::new("Paperhook API", env!("CARGO_PKG_VERSION"))
        .add_security_scheme(
            "api_key",
            salvo::oapi::security::SecurityScheme::ApiKey(salvo::oapi::security::ApiKey::Header(
                salvo::oapi::security::ApiKeyValue::new("x-auth"),
            )),
        )
        .security([salvo::oapi::SecurityRequirement::new(
            "api_key",
            Vec::<String>::new(),
        )])
        .merge_router(&router);
    let doc = describe_other_content(describe_path_parameters(doc));
    router
        .push(doc.into_router("/openapi.json"))
        .push(Router::with_path("docs").get(routes::health::docs_page))
        .push(Router::new().get(dashboard::to_dashboard))
        .push(
            Router::with_path("dashboard")
                .push(Router::with_path("app.js").get(dashboard::app_js))
                .push(Router::with_path("app.css").get(dashboard::app_css))
                .push(Router::with_path("{**rest}").get(dashboard::index)),
        )
}

/// Every answer is what its `Content-Type` says: browsers must not guess
/// (a CSV of extracted text rendered as HTML, say).
#[handler]
async fn nosniff(res: &mut Response) {
    res.headers_mut().insert(
        "x-content-type-options",
        salvo::http::HeaderValue::from_static("nosniff"),
    );
}

/// Answers to a key are the account's own (a new API key, a webhook
/// secret, a session's CSRF token, results): no cache along the way or in
/// a browser keeps them.
#[handler]
async fn no_store(res: &mut Response) {
    res.headers_mut().insert(
        "cache-control",
        salvo::http::HeaderValue::from_static("no-store"),
    );
}

/// What the endpoint macros cannot say: `/process-job` also takes
/// multipart (the file as a part), and `/v1/job-results` also answers CSV.
fn describe_other_content(mut doc: OpenApi) -> OpenApi {
    use salvo::oapi::{BasicType, Content, KnownFormat, Object, RefOr, SchemaFormat};
    let string = || Object::new().schema_type(BasicType::String);
    if let Some(body) = doc
        .paths
        .get_mut("/process-job")
        .and_then(|item| item.operations.values_mut().next())
        .and_then(|op| op.request_body.as_mut())
    {
        let form = Object::new()
            .property(
                "template_id",
                string()
                    .format(SchemaFormat::Custom("uuid".to_owned()))
                    .description(
                        "UUID of the template to use: a text part, or a file part of at most 1 KiB.",
                    ),
            )
            .required("template_id")
            .property(
                "actual_image",
                string()
                    .format(SchemaFormat::KnownFormat(KnownFormat::Binary))
                    .description("The image, PDF or ZIP file (or its base64 as a text part)."),
            )
            .required("actual_image")
            .property(
                "static_values",
                string().description("Optional: a JSON object, as text."),
            );
        body.contents
            .insert("multipart/form-data".to_owned(), Content::new(form));
    }
    if let Some(RefOr::Type(ok)) = doc
        .paths
        .get_mut("/v1/job-results")
        .and_then(|item| item.operations.values_mut().next())
        .and_then(|op| op.responses.get_mut("200"))
    {
        ok.contents.insert(
            "text/csv".to_owned(),
            Content::new(string().description(
                "RFC 4180 CSV with a header row: one row per document (result_format csv).",
            )),
        );
    }
    doc
}

/// salvo's `PathParam` describes every path parameter as "Get parameter
/// `x` from request url path."; say what each one is.
fn describe_path_parameters(mut doc: OpenApi) -> OpenApi {
    for (path, item) in doc.paths.iter_mut() {
        for op in item.operations.values_mut() {
            let in_path = op
                .parameters
                .iter_inline_mut()
                .filter(|p| p.parameter_in == salvo::oapi::ParameterIn::Path);
            for p in in_path {
                let what = match p.name.as_str() {
                    "id" if path.starts_with("/v1/templates/") => "The template's id.",
                    "job_id" => "The job's id: the `job_id` that `POST /process-job` answered.",
                    "prefix" => "The key's prefix (`ph_…`), as `GET /v1/api-keys` lists it.",
                    _ => continue,
                };
                p.description = Some(what.to_owned());
            }
        }
    }
    doc
}

pub fn service(state: AppState) -> Service {
    Service::new(router(state)).catcher(Catcher::default().hoop(error::catch_errors))
}
