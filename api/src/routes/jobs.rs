//! `POST /process-job` and `GET /job-status`, as the product page specifies.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use paperhook_core::db::jobs::{self, JobRow, NewJob};
use paperhook_core::sniff::{self, DocType};
use paperhook_core::storage;
use salvo::http::ParseError;
use salvo::http::form::{FilePart, FormLimits};
use salvo::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::{AppState, auth};

/// The JSON form of a submission, borrowing the base64 text from the body.
#[derive(Deserialize)]
struct ProcessJobInput<'a> {
    // All three as the text sent: the values parsed only once their size is
    // known to be within limits (a 70 MB array of numbers is gigabytes as a
    // `Value`), the base64 decoded from the body with its escapes (a string
    // with `\/` or `\r\n` would be copied whole to be unescaped).
    #[serde(borrow)]
    template_id: Option<&'a RawValue>,
    #[serde(borrow)]
    actual_image: Option<&'a RawValue>,
    #[serde(borrow)]
    static_values: Option<&'a RawValue>,
}

/// A submission as JSON (multipart/form-data carries the same fields, with
/// `actual_image` as a file and `static_values` as a JSON string).
#[derive(Deserialize, ToSchema)]
pub struct ProcessJobRequest {
    /// UUID of the template to use.
    pub template_id: Uuid,
    /// The image, PDF or ZIP, base64-encoded (a `data:` URL prefix is accepted).
    pub actual_image: String,
    /// Optional key-value pairs returned with the result.
    pub static_values: Option<serde_json::Map<String, Value>>,
}

/// The 202 answer: the job is queued with status NEW.
#[derive(Serialize, Deserialize, ToSchema, Debug)]
pub struct JobAccepted {
    pub job_id: Uuid,
    pub template_id: Uuid,
    pub static_values: Value,
}

#[derive(Serialize, ToSchema)]
pub struct JobError {
    code: String,
    message: String,
}

#[derive(Serialize, ToSchema)]
pub struct DocumentStatus {
    /// Position of the file in the job (0 for a single file; ZIP order otherwise).
    index: i32,
    file_name: Option<String>,
    status: String,
    pages: Option<i32>,
    error: Option<JobError>,
}

#[derive(Serialize, ToSchema)]
pub struct JobStatus {
    job_id: Uuid,
    template_id: Uuid,
    /// NEW, UNZIPPING FILE, UNZIP FILE SUCCESS, UNZIP FILE FAILED, PROCESSING IMAGE,
    /// PROCESS IMAGE SUCCESS, PROCESS IMAGE FAILED, SUCCESS or FAILED.
    status: String,
    /// pdf, png, jpeg, tiff or zip: detected from the file's bytes.
    document_type: String,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    error: Option<JobError>,
    /// Each file of the job with its own status (one for a single file, one per ZIP entry);
    /// empty until a worker starts the job (`NEW`).
    documents: Vec<DocumentStatus>,
}

/// A document received from the client: in memory when small, else
/// spooled to a temporary file.
#[derive(Debug)]
struct Upload {
    body: UploadBody,
    size: u64,
    file_name: Option<String>,
}

#[derive(Debug)]
enum UploadBody {
    Memory(bytes::Bytes),
    Spooled {
        path: PathBuf,
        // Keeps the file alive as long as the upload: the store goes on in
        // its own task when the client hangs up and the request is dropped.
        _guard: SpoolGuard,
    },
}

/// What deletes a spool file when its upload is dropped.
#[derive(Debug)]
enum SpoolGuard {
    /// Our own, of a decoded base64 document.
    Decoded { _file: tempfile::TempPath },
    /// salvo's, of a multipart file part (a clone shares its clean-up).
    Part { _file: FilePart },
}

/// A base64 document whose decoded size is at most this stays in memory;
/// a larger one is decoded to a spool file. Most single documents are
/// smaller, and a file created and deleted per submission costs more than
/// the rest of the request (ext4 inode allocation, measured under load).
const IN_MEMORY_MAX: usize = 2 << 20;

struct Submission {
    template_id: Uuid,
    static_values: Value,
    upload: Upload,
}

fn missing(field: &str) -> ApiError {
    ApiError::unprocessable("missing_field", format!("{field} is required"))
}

/// `template_id` as sent (JSON text, or a form field's text), a UUID string.
fn parse_template_id(sent: Option<TemplateId<'_>>) -> ApiResult<Uuid> {
    let sent = sent.ok_or_else(|| missing("template_id"))?;
    let (text, json) = match sent {
        TemplateId::Json(raw) => (raw.get(), true),
        TemplateId::Field(text) => (text, false),
    };
    let invalid = |shown: &str| {
        ApiError::unprocessable(
            "invalid_template_id",
            format!("template_id must be a UUID string, not {shown}"),
        )
    };
    // A UUID with room for spaces and escapes; longer is not echoed back.
    if text.len() > 256 {
        return Err(invalid(&format!("{} bytes of text", text.len())));
    }
    let value = if json {
        serde_json::from_str::<Value>(text).map_err(|e| ApiError::from_json(&e))?
    } else {
        Value::String(text.to_owned())
    };
    value
        .as_str()
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
        .ok_or_else(|| invalid(&value.to_string()))
}

/// How a submission carried `template_id`.
enum TemplateId<'a> {
    Json(&'a RawValue),
    Field(&'a str),
}

/// How much longer than `max_static_values_bytes` the text of
/// `static_values` may be as sent: indentation, and `\uXXXX` escapes (six
/// bytes for a character counted as one to four once parsed; Python's
/// `json.dumps` writes every non-ASCII character so).
const STATIC_VALUES_TEXT_FACTOR: u64 = 6;

/// `422 invalid_static_values` for a text of `static_values` longer than
/// [`STATIC_VALUES_TEXT_FACTOR`] times `max_static_values_bytes`.
fn static_values_text_within(state: &AppState, len: u64) -> ApiResult<()> {
    let max = state.config.max_static_values_bytes;
    let limit = max.saturating_mul(STATIC_VALUES_TEXT_FACTOR);
    if len > limit {
        return Err(ApiError::unprocessable(
            "invalid_static_values",
            format!(
                "static_values is {len} bytes; the limit is {limit} as sent \
                 ({STATIC_VALUES_TEXT_FACTOR} x max_static_values_bytes {max})"
            ),
        ));
    }
    Ok(())
}

/// `static_values` as sent, parsed if its text is within
/// [`STATIC_VALUES_TEXT_FACTOR`] times `max_static_values_bytes` (the limit
/// itself is checked on the values, see [`check_static_values`]), so the
/// parsed values' memory is bounded.
fn parse_static_values(state: &AppState, text: &str) -> ApiResult<Value> {
    static_values_text_within(state, text.len() as u64)?;
    serde_json::from_str::<Value>(text).map_err(|e| {
        // serde_json stops at 128 levels, far past the limit.
        let message = if e.to_string().starts_with("recursion limit exceeded") {
            format!(
                "static_values is nested deeper than {} levels",
                state.config.max_static_values_depth
            )
        } else {
            format!("static_values must be a JSON object string: {e}")
        };
        ApiError::unprocessable("invalid_static_values", message)
    })
}

fn depth(value: &Value) -> u32 {
    // Iterative, so a hostile nesting cannot overflow the stack.
    let mut max = 0;
    let mut stack = vec![(value, 1u32)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(items) => {
                max = max.max(d);
                stack.extend(items.iter().map(|i| (i, d + 1)));
            }
            Value::Object(map) => {
                max = max.max(d);
                stack.extend(map.values().map(|i| (i, d + 1)));
            }
            _ => {}
        }
    }
    max
}

/// Whether a key or string anywhere in `value` holds U+0000 (PostgreSQL
/// cannot store it).
fn has_nul(value: &Value) -> bool {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if s.contains('\0') => return true,
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                if map.keys().any(|k| k.contains('\0')) {
                    return true;
                }
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    false
}

fn check_static_values(state: &AppState, value: Option<Value>) -> ApiResult<Value> {
    let value = match value {
        None | Some(Value::Null) => return Ok(Value::Object(Default::default())),
        Some(v @ Value::Object(_)) => v,
        Some(other) => {
            return Err(ApiError::unprocessable(
                "invalid_static_values",
                format!(
                    "static_values must be a JSON object, not {}",
                    type_name(&other)
                ),
            ));
        }
    };
    if has_nul(&value) {
        return Err(ApiError::unprocessable(
            "invalid_static_values",
            "static_values may not contain the NUL character (\\u0000)",
        ));
    }
    let max_depth = state.config.max_static_values_depth;
    if depth(&value) > max_depth {
        return Err(ApiError::unprocessable(
            "invalid_static_values",
            format!("static_values is nested deeper than {max_depth} levels"),
        ));
    }
    let size = serde_json::to_vec(&value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX) as u64;
    let max = state.config.max_static_values_bytes;
    if size > max {
        return Err(ApiError::unprocessable(
            "invalid_static_values",
            format!("static_values is {size} bytes; the limit is {max}"),
        ));
    }
    Ok(value)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The base64 text of `actual_image`: a form field's text, or the text of
/// a JSON string as sent, escapes and all (`\/`, `\r\n`), read without an
/// unescaped copy.
#[derive(Clone, Copy)]
enum Base64Text<'a> {
    Plain(&'a str),
    /// Between the quotes of a JSON string.
    Json(&'a str),
}

impl<'a> Base64Text<'a> {
    fn chars(self) -> TextChars<'a> {
        match self {
            Base64Text::Plain(text) => TextChars {
                chars: text.chars(),
                json: false,
            },
            Base64Text::Json(text) => TextChars {
                chars: text.chars(),
                json: true,
            },
        }
    }

    /// At least the length of the text it stands for.
    fn len(self) -> usize {
        match self {
            Base64Text::Plain(text) | Base64Text::Json(text) => text.len(),
        }
    }
}

/// The characters of a [`Base64Text`], JSON escapes resolved (the body was
/// parsed as JSON already, so they are well formed; a lone surrogate
/// becomes U+FFFD, which is not base64).
struct TextChars<'a> {
    chars: std::str::Chars<'a>,
    json: bool,
}

impl Iterator for TextChars<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if !self.json || c != '\\' {
            return Some(c);
        }
        Some(match self.chars.next()? {
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'u' => {
                let hex: String = self.chars.by_ref().take(4).collect();
                u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            }
            // `\"`, `\\`, `\/`.
            other => other,
        })
    }
}

/// A body declared this small may be answered before it is read.
const EARLY_ANSWER_MAX: u64 = 64 * 1024;

/// Whether a request may be answered before its body is read: its
/// client waits for `100 Continue`, or it declares a small body.
fn may_answer_unread(req: &Request) -> bool {
    let waits = req
        .headers()
        .get(salvo::http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    waits || declared_length(req).is_some_and(|n| n <= EARLY_ANSWER_MAX)
}

fn no_credits() -> ApiError {
    ApiError::new(
        StatusCode::PAYMENT_REQUIRED,
        "insufficient_credits",
        "the account has no credits left; add credits to submit documents",
    )
}

/// Bodies from this size are parsed and decoded off the async threads.
const CPU_BOUND_FROM: usize = 1 << 20;

/// Runs `f`, which walks `bytes` bytes of a request: from
/// [`CPU_BOUND_FROM`], as blocking work (some 100 ms for a 50 MiB
/// document), so that the other requests, health checks and the insert
/// batcher go on meanwhile. Inline on a current-thread runtime (tests),
/// which has no other thread to hand its work to.
fn cpu_bound<T>(bytes: usize, f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let threaded =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if bytes >= CPU_BOUND_FROM && threaded {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Decodes base64 `actual_image` (a `data:` URL prefix and whitespace are
/// accepted): in memory up to `in_memory_max` decoded bytes, else into a
/// spool file in bounded chunks, so memory never holds a second full copy
/// of a large document beside the request body.
fn decode_base64(encoded: Base64Text<'_>, limit: u64, in_memory_max: usize) -> ApiResult<Upload> {
    let mut chars = encoded.chars().skip_while(|c| c.is_whitespace()).peekable();
    // A `data:` URL's prefix ends at its first comma.
    let mut head = String::new();
    while head.len() < 4096 {
        match chars.next() {
            Some(c) => {
                head.push(c);
                if c == ',' {
                    break;
                }
            }
            None => break,
        }
    }
    if head.starts_with("data:") {
        if !head.ends_with(";base64,") {
            return Err(ApiError::unprocessable(
                "invalid_base64",
                "a data: URL must be ;base64, encoded",
            ));
        }
        head.clear();
    }
    let mut data = head
        .chars()
        .chain(chars)
        .filter(|c| !c.is_whitespace())
        .peekable();
    if data.peek().is_none() {
        return Err(ApiError::unprocessable(
            "empty_document",
            "actual_image is empty",
        ));
    }
    // An upper bound: whitespace, escapes and padding only make it smaller.
    let decoded_max = encoded.len() / 4 * 3 + 3;
    if decoded_max <= in_memory_max {
        let mut buf = Vec::with_capacity(decoded_max);
        let size = decode_into(data, limit, &mut buf)?;
        return Ok(Upload {
            body: UploadBody::Memory(buf.into()),
            size,
            file_name: None,
        });
    }
    let file = tempfile::NamedTempFile::new()
        .map_err(|e| ApiError::internal("creating a spool file", &e))?;
    let (mut file, path) = file.into_parts();
    let size = decode_into(data, limit, &mut file)?;
    file.flush()
        .map_err(|e| ApiError::internal("writing a spool file", &e))?;
    Ok(Upload {
        body: UploadBody::Spooled {
            path: path.to_path_buf(),
            _guard: SpoolGuard::Decoded { _file: path },
        },
        size,
        file_name: None,
    })
}

/// Decodes the base64 characters of `chars` (no white space) into `out` in
/// chunks of 48 KiB; the decoded size.
fn decode_into(
    mut chars: impl Iterator<Item = char>,
    limit: u64,
    out: &mut impl Write,
) -> ApiResult<u64> {
    let engine = base64::engine::general_purpose::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let mut size = 0u64;
    let mut chunk = String::with_capacity(64 * 1024);
    let mut buf = Vec::with_capacity(48 * 1024);
    let bad = |offset: u64| {
        ApiError::unprocessable(
            "invalid_base64",
            format!("actual_image is not valid base64 (near decoded byte {offset})"),
        )
    };
    loop {
        chunk.clear();
        // A multiple of 4 characters decodes on its own.
        chunk.extend(chars.by_ref().take(64 * 1024));
        if chunk.is_empty() {
            return Ok(size);
        }
        buf.clear();
        engine
            .decode_vec(chunk.as_bytes(), &mut buf)
            .map_err(|_| bad(size))?;
        size += buf.len() as u64;
        if size > limit {
            return Err(ApiError::too_large(limit));
        }
        out.write_all(&buf)
            .map_err(|e| ApiError::internal("writing a spool file", &e))?;
    }
}

/// The most a request body of `/process-job` may hold: a document of
/// `max_upload_bytes` in base64 with room for line breaks and escapes
/// (`\r\n` every 76 characters, `\/`), `static_values` and the rest. The
/// decoded document is held to `max_upload_bytes` itself as it is decoded.
fn envelope_limit(config: &paperhook_core::config::Config) -> u64 {
    let encoded = config.max_upload_bytes.div_ceil(3) * 4;
    encoded + encoded / 16 + config.max_static_values_bytes * STATIC_VALUES_TEXT_FACTOR + 256 * 1024
}

/// The KiB a body of `body` bytes counts against `submission_memory_bytes`:
/// the body, and what is made of it in memory besides, at most the body and
/// at most `copy`.
fn memory_kib(body: u64, copy: u64) -> u32 {
    let bytes = body.saturating_add(body.min(copy));
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// The budget of [`reserve_memory`], refused when one upload of
/// `max_upload_bytes` could never fit in it or in an account's share.
pub fn upload_memory(
    config: &paperhook_core::config::Config,
) -> anyhow::Result<crate::upload_memory::UploadMemory> {
    crate::upload_memory::UploadMemory::new(
        config.submission_memory_bytes / 1024,
        config.submission_memory_per_account_bytes / 1024,
        memory_kib(envelope_limit(config), IN_MEMORY_MAX as u64),
    )
    .map_err(anyhow::Error::msg)
}

/// The length a request's body declares, if it does.
fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(salvo::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Takes the memory a request's body may need, for as long as the
/// reservation is held: its declared length (or `limit`, the most it may
/// be), and as much again up to `copy` for what is made of it (a decoded
/// document, a sample read whole). When the account's share or the process
/// has none left, `503 server_busy`: many large bodies at once wait for
/// their clients' retries rather than exhaust the memory, and one account's
/// do not keep the others'.
pub fn reserve_memory(
    req: &Request,
    state: &AppState,
    account: Uuid,
    limit: u64,
    copy: u64,
) -> ApiResult<crate::upload_memory::Reservation> {
    use crate::upload_memory::Full;
    let body = declared_length(req).map_or(limit, |n| n.min(limit));
    state
        .upload_memory
        .reserve(account, memory_kib(body, copy))
        .map_err(|full| {
            let (whose, setting) = match full {
                Full::Account => (
                    "this account's uploads take",
                    "submission_memory_per_account_bytes",
                ),
                Full::Process => ("this server is reading", "submission_memory_bytes"),
            };
            ApiError::unavailable(
                "server_busy",
                format!(
                    "{whose} as much memory at once as allowed ({setting}); retry in a few seconds"
                ),
            )
        })
}

/// A body over [`envelope_limit`]: `413 document_too_large`; or, declared
/// within it (only a multipart body can fail so: salvo's part and file
/// counts), `400`.
fn envelope_error(req: &Request, state: &AppState, err: ParseError, what: &str) -> ApiError {
    let max = state.config.max_upload_bytes;
    if !matches!(err, ParseError::PayloadTooLarge) {
        return ApiError::from_parse(err, max, what);
    }
    let limit = envelope_limit(&state.config);
    let declared = declared_length(req);
    if declared.is_some_and(|n| n <= limit) {
        return ApiError::bad_request(
            "malformed_body",
            format!(
                "the multipart body has too many parts: at most {MAX_FORM_PARTS} parts and \
                 {MAX_FORM_FILES} files"
            ),
        );
    }
    // Without a declared length (a chunked body), salvo's error does not
    // tell too many parts from too many bytes: the answer names both.
    let or_parts = if declared.is_none()
        && req
            .content_type()
            .is_some_and(|m| m.subtype() == "form-data")
    {
        format!(
            ", or (a multipart body) has more than {MAX_FORM_PARTS} parts or {MAX_FORM_FILES} files"
        )
    } else {
        String::new()
    };
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "document_too_large",
        format!(
            "the request body is larger than {limit} bytes, the most a document of {max} bytes \
             ({:.1} MiB, max_upload_bytes) takes in base64 with static_values and the rest \
             of the request{or_parts}",
            max as f64 / (1024.0 * 1024.0)
        ),
    )
}

/// Parts and files a multipart submission may have (salvo's defaults).
const MAX_FORM_PARTS: usize = 128;
const MAX_FORM_FILES: usize = 32;

/// `415 unsupported_media_type` for a body sent as `content_type`.
fn unsupported_media_type(content_type: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "send application/json or multipart/form-data, not {:?}",
            if content_type.is_empty() {
                "no Content-Type"
            } else {
                content_type
            }
        ),
    )
}

/// A JSON body: sent as `application/json`, or as another `content_type`
/// that [`crate::json_when_object`] takes when the body is a JSON object.
async fn read_json(
    req: &mut Request,
    state: &AppState,
    content_type: &str,
) -> ApiResult<Submission> {
    let body_limit = envelope_limit(&state.config);
    let body = match req.payload_with_max_size(body_limit as usize).await {
        Ok(body) => body,
        Err(e) => return Err(envelope_error(req, state, e, "JSON")),
    };
    // An object, not an array of the fields in order (which serde would
    // take, and whose elements are kept unparsed below).
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        if content_type != "application/json" {
            return Err(unsupported_media_type(content_type));
        }
        return Err(ApiError::bad_request(
            "malformed_json",
            "the JSON body must be an object with template_id, actual_image and static_values",
        ));
    }
    cpu_bound(body.len(), || json_submission(state, body))
}

/// The submission in a JSON body: parsed and its document decoded.
fn json_submission(state: &AppState, body: &[u8]) -> ApiResult<Submission> {
    let max = state.config.max_upload_bytes;
    let input: ProcessJobInput<'_> =
        serde_json::from_slice(body).map_err(|e| ApiError::from_json(&e))?;
    let template_id = parse_template_id(input.template_id.map(TemplateId::Json))?;
    let static_values = input
        .static_values
        .map(|raw| parse_static_values(state, raw.get()))
        .transpose()?;
    let static_values = check_static_values(state, static_values)?;
    let encoded = input.actual_image.ok_or_else(|| missing("actual_image"))?;
    let encoded = encoded
        .get()
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_field",
                "invalid field: actual_image must be a base64 string",
            )
        })?;
    let upload = decode_base64(Base64Text::Json(encoded), max, IN_MEMORY_MAX)?;
    Ok(Submission {
        template_id,
        static_values,
        upload,
    })
}

async fn read_multipart(req: &mut Request, state: &AppState) -> ApiResult<Submission> {
    let max = state.config.max_upload_bytes;
    // (salvo calls a missing boundary a wrong content type: 415.)
    if req
        .content_type()
        .is_some_and(|m| m.get_param("boundary").is_none())
    {
        return Err(ApiError::bad_request(
            "malformed_body",
            "the Content-Type multipart/form-data has no boundary parameter: let the HTTP \
             client set the header for the form it sends, rather than setting it by hand",
        ));
    }
    // Files go to a spool file; the document is held to `max` below.
    req.set_form_limits(
        FormLimits::new()
            .max_parts(MAX_FORM_PARTS)
            .max_files(MAX_FORM_FILES),
    );
    let form = match req
        .form_data_max_size(envelope_limit(&state.config) as usize)
        .await
    {
        Ok(form) => form,
        Err(e) => return Err(envelope_error(req, state, e, "multipart/form-data")),
    };
    // A field sent twice (or as a file and as text) is ambiguous: which one
    // counts is the client's to say, not ours to guess.
    for name in ["template_id", "static_values", "actual_image"] {
        let sent = form.fields.get_vec(name).map_or(0, Vec::len)
            + form.files.get_vec(name).map_or(0, Vec::len);
        if sent > 1 {
            return Err(ApiError::unprocessable(
                "invalid_field",
                format!("invalid field: {name} is sent {sent} times; send it once"),
            ));
        }
    }
    let field = |name: &str| form.fields.get(name).map(|s| s.as_str());
    // A file part too: Python's `requests.post(files={"template_id": id})`
    // sends every entry of `files` as one.
    let template_id_file = match (field("template_id"), form.files.get("template_id")) {
        (None, Some(file)) => Some(read_template_id_file(file).await?),
        _ => None,
    };
    let template_id = parse_template_id(
        template_id_file
            .as_deref()
            .or(field("template_id"))
            .map(TemplateId::Field),
    )?;
    // A file part too (`curl -F static_values=@values.json`).
    let from_file = match (field("static_values"), form.files.get("static_values")) {
        (None, Some(file)) => Some(read_static_values_file(file, state).await?),
        _ => None,
    };
    // A text part's bytes that are not UTF-8 arrive replaced with U+FFFD
    // (salvo decodes them lossily): refused rather than stored altered.
    if field("static_values").is_some_and(|t| t.contains('\u{FFFD}')) {
        return Err(ApiError::unprocessable(
            "invalid_static_values",
            "static_values is not valid UTF-8 (or holds U+FFFD, the mark of text already damaged): send it as UTF-8",
        ));
    }
    let static_values = match from_file
        .as_deref()
        .or(field("static_values"))
        .map(str::trim)
    {
        None | Some("") => None,
        Some(text) => Some(parse_static_values(state, text)?),
    };
    let static_values = check_static_values(state, static_values)?;
    let upload = if let Some(file) = form.files.get("actual_image") {
        from_file_part(file, max)?
    } else if let Some(text) = field("actual_image") {
        cpu_bound(text.len(), || {
            decode_base64(Base64Text::Plain(text), max, IN_MEMORY_MAX)
        })
        .map_err(|e| file_sent_as_text(text).unwrap_or(e))?
    } else {
        return Err(missing("actual_image"));
    };
    Ok(Submission {
        template_id,
        static_values,
        upload,
    })
}

/// A document sent as a text part (no filename: `curl -F actual_image=<f`,
/// or Python's `(None, data)`) is no base64: said so, rather than where
/// its base64 broke.
fn file_sent_as_text(text: &str) -> Option<ApiError> {
    // Binary bytes arrive as U+FFFD (the text is decoded lossily).
    const MAGIC: [&str; 6] = [
        "%PDF-",
        "\u{FFFD}PNG",
        "PK\u{3}\u{4}",
        "II*\0",
        "MM\0*",
        "\u{FFFD}\u{FFFD}\u{FFFD}",
    ];
    MAGIC.iter().any(|m| text.starts_with(m)).then(|| {
        ApiError::unprocessable(
            "invalid_base64",
            "actual_image is a text part holding a file, not base64: send the file as a file part \
             with a filename (curl -F actual_image=@invoice.pdf), or its content in base64",
        )
    })
}

/// The most a `template_id` file part may hold: a UUID with room for
/// line breaks and spaces.
const TEMPLATE_ID_FILE_MAX: u64 = 1024;

/// The text of a `template_id` file part, trimmed.
async fn read_template_id_file(file: &FilePart) -> ApiResult<String> {
    let invalid = |shown: String| {
        ApiError::unprocessable(
            "invalid_template_id",
            format!("template_id must be a UUID string, not {shown}"),
        )
    };
    if file.size() > TEMPLATE_ID_FILE_MAX {
        return Err(invalid(format!(
            "a file part of {} bytes (at most {TEMPLATE_ID_FILE_MAX})",
            file.size()
        )));
    }
    let text = part_text(
        file,
        invalid("a file part that is not UTF-8 text".to_owned()),
    )
    .await?;
    Ok(text.trim().to_owned())
}

/// The text of a small file part (its size checked by the caller), or
/// `not_utf8` when it is not UTF-8.
async fn part_text(file: &FilePart, not_utf8: ApiError) -> ApiResult<String> {
    let bytes = tokio::fs::read(file.path())
        .await
        .map_err(|e| ApiError::internal("reading a spooled part", &e))?;
    String::from_utf8(bytes).map_err(|_| not_utf8)
}

/// The text of a `static_values` file part, within its size limit.
async fn read_static_values_file(file: &FilePart, state: &AppState) -> ApiResult<String> {
    static_values_text_within(state, file.size())?;
    part_text(
        file,
        ApiError::unprocessable("invalid_static_values", "static_values must be UTF-8 JSON"),
    )
    .await
}

fn from_file_part(file: &FilePart, max: u64) -> ApiResult<Upload> {
    if file.size() > max {
        return Err(ApiError::too_large(max));
    }
    if file.size() == 0 {
        return Err(ApiError::unprocessable(
            "empty_document",
            "actual_image is empty",
        ));
    }
    Ok(Upload {
        body: UploadBody::Spooled {
            path: file.path().to_path_buf(),
            _guard: SpoolGuard::Part {
                _file: file.clone(),
            },
        },
        size: file.size(),
        file_name: file.name().map(paperhook_extract::sniff::file_name),
    })
}

/// The document's type from its first bytes (415 if it is none we take).
async fn sniff(upload: &Upload) -> ApiResult<DocType> {
    let head = match &upload.body {
        UploadBody::Memory(data) => data.slice(..data.len().min(sniff::SNIFF_LEN)),
        UploadBody::Spooled { path, .. } => read_head(path).await?.into(),
    };
    sniff::detect(&head).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_document_type",
            "the file is not a supported type: send a PDF, PNG, JPEG, TIFF or ZIP (detected from its content, not its name)",
        )
    })
}

async fn read_head(path: &Path) -> ApiResult<Vec<u8>> {
    // One trip to the blocking pool (tokio::fs would make one per call).
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut head = Vec::with_capacity(sniff::SNIFF_LEN);
        std::fs::File::open(path)?
            .take(sniff::SNIFF_LEN as u64)
            .read_to_end(&mut head)?;
        Ok(head)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    .map_err(|e: std::io::Error| ApiError::internal("reading a spool file", &e))
}

fn idempotency_key(req: &Request) -> ApiResult<Option<String>> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default().trim();
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::unprocessable(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

fn accepted(res: &mut Response, job: &JobRow, replayed: bool) {
    res.status_code(StatusCode::ACCEPTED);
    if replayed {
        res.headers_mut().insert(
            "idempotent-replayed",
            salvo::http::HeaderValue::from_static("true"),
        );
    }
    res.render(Json(JobAccepted {
        job_id: job.id,
        template_id: job.template_id,
        static_values: job.static_values.0.clone(),
    }));
}

/// Submit a document (image, PDF or ZIP) for asynchronous extraction.
///
/// Send JSON with a base64 `actual_image`, or multipart/form-data with an
/// `actual_image` file; `template_id` is required and `static_values` (a JSON
/// object; a JSON string in multipart) optional. The job is stored and queued
/// with status NEW; results go to the template's webhook and to
/// `/v1/job-results`. With an `Idempotency-Key` header, a repeat of the same
/// key within `idempotency_ttl_secs` (24 hours by default) returns the first job (header `Idempotent-Replayed: true`).
///
/// A body sent without a Content-Type, or as `text/plain` or
/// `application/x-www-form-urlencoded` (what `curl -d @body.json` and
/// Python's `requests.post(data=json.dumps(...))` send), is read as JSON
/// when it is a JSON object, with the same limits; any other is 415. In
/// multipart, `template_id` may also be a file part (Python's
/// `requests.post(files={"template_id": id, ...})`) of at most 1 KiB of
/// UTF-8 text.
#[endpoint(
    tags("jobs"),
    parameters((
        "Idempotency-Key" = Option<String>,
        Header,
        min_length = 1,
        max_length = 255,
        description = "Any 1-255 visible ASCII characters: a repeat within `idempotency_ttl_secs` (24 hours by default) answers the first job instead of making another."
    )),
    request_body(content = ProcessJobRequest, content_type = "application/json"),
    responses((
        status_code = 202,
        body = JobAccepted,
        headers((
            "Idempotent-Replayed" = String,
            description = "`true` when the job is an earlier one with the same Idempotency-Key; absent otherwise."
        ))
    ))
)]
pub async fn process_job(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<()> {
    let account = auth::account(depot).clone();
    let state = crate::state(depot).clone();
    let idempotency_key = idempotency_key(req)?;
    if let Some(key) = &idempotency_key
        && let Some(job) =
            jobs::find_idempotent(&state.pool, account.id, key, state.config.idempotency_ttl())
                .await?
    {
        accepted(res, &job, true);
        return Ok(());
    }

    // An account with nothing left to spend hears why rather than about
    // its body, before the body when that is safe: a client waiting for
    // `100 Continue` sends nothing more, and a small body is read with the
    // head. Answering a large upload unread would close the connection
    // under it, and many clients report the reset instead of the 402.
    if account.credits <= 0 && may_answer_unread(req) {
        return Err(no_credits());
    }
    let content_type = req
        .content_type()
        .map(|m| m.essence_str().to_owned())
        .unwrap_or_default();
    let multipart = match content_type.as_str() {
        "multipart/form-data" => true,
        "application/json" => false,
        // Taken as JSON if the body is a JSON object (checked once read);
        // one declared larger than any submission is a file sent raw
        // (`curl --data-binary @invoice.pdf`): said so without reading it.
        other if crate::json_when_object(other) => {
            if declared_length(req).is_some_and(|n| n > envelope_limit(&state.config)) {
                return Err(unsupported_media_type(other));
            }
            false
        }
        other => return Err(unsupported_media_type(other)),
    };
    // Held until the answer (salvo keeps the body until then), and by the
    // store below, which goes on if the client hangs up.
    let memory = reserve_memory(
        req,
        &state,
        account.id,
        envelope_limit(&state.config),
        IN_MEMORY_MAX as u64,
    )?;
    let submission = if multipart {
        crate::within_read_timeout(&state, read_multipart(req, &state)).await?
    } else {
        crate::within_read_timeout(&state, read_json(req, &state, &content_type)).await?
    };
    if account.credits <= 0 {
        return Err(no_credits());
    }
    let doc_type = sniff(&submission.upload).await?;
    // Its own task: a client that hangs up drops this handler at its next
    // await, and the stored file must not outlive a job that never came.
    let store = store_and_enqueue(
        state.clone(),
        account.id,
        submission,
        doc_type,
        idempotency_key,
    );
    let (job, replayed) = tokio::spawn(async move {
        let _memory = memory;
        store.await
    })
    .await
    .map_err(|e| ApiError::internal("storing a submission", &e))??;
    accepted(res, &job, replayed);
    Ok(())
}

/// Stores the document, then inserts its job and queue task; the stored
/// file is removed again whenever no job comes of it. The job, and whether
/// it is an earlier one with the same Idempotency-Key.
async fn store_and_enqueue(
    state: AppState,
    account_id: Uuid,
    submission: Submission,
    doc_type: DocType,
    idempotency_key: Option<String>,
) -> ApiResult<(JobRow, bool)> {
    let job_id = Uuid::now_v7();
    // A small document goes into the database with its job (one durable
    // commit); a larger one to the object store first.
    let inline_data = if submission.upload.size <= state.config.inline_document_max_bytes {
        match &submission.upload.body {
            UploadBody::Memory(data) => Some(data.clone()),
            UploadBody::Spooled { path, .. } => Some(
                tokio::fs::read(path)
                    .await
                    .map_err(|e| ApiError::internal("reading a spool file", &e))?
                    .into(),
            ),
        }
    } else {
        None
    };
    let (storage_key, stored) = if inline_data.is_some() {
        (storage::inline_key(account_id, job_id), Ok(()))
    } else {
        let storage_key = storage::document_key(account_id, job_id);
        let stored = match &submission.upload.body {
            UploadBody::Memory(data) => {
                state
                    .storage
                    .put_new_bytes(&storage_key, data.clone())
                    .await
            }
            UploadBody::Spooled { path, .. } => {
                state.storage.put_file(&storage_key, path).await.map(drop)
            }
        };
        (storage_key, stored)
    };
    let new = NewJob {
        id: job_id,
        account_id,
        template_id: submission.template_id,
        content_type: doc_type.as_str().to_owned(),
        file_name: submission.upload.file_name.clone(),
        size_bytes: submission.upload.size as i64,
        storage_key: storage_key.clone(),
        static_values: submission.static_values,
        idempotency_key: idempotency_key.clone(),
        inline_data,
    };
    let size = new.size_bytes;
    let inline = new.inline_data.is_some();
    let mut maybe_committed = false;
    let inserted = match stored {
        Ok(()) => insert_and_enqueue(&state, new).await.map_err(|e| {
            maybe_committed = paperhook_core::db::outcome_unknown(&e);
            ApiError::from(e)
        }),
        Err(err) => Err(err.into()),
    };
    match inserted {
        Ok(Some(job)) => {
            state.waker.wake();
            if inline {
                // Stored by the insert: counted as the object store's writes are.
                paperhook_core::metrics::STORAGE_WRITTEN_BYTES.inc_by(size as u64);
            }
            paperhook_core::metrics::JOBS_SUBMITTED
                .with_label_values(&[doc_type.as_str()])
                .inc();
            tracing::info!(job_id = %job.id, doc_type = doc_type.as_str(), size, "job accepted");
            Ok((job, false))
        }
        failed => {
            // No job came of it: the stored file goes (a write that failed
            // or timed out may still have landed). Unless the connection
            // broke after the insert was sent: the job may exist, and then
            // it needs its file; if it does not, the janitor deletes the
            // file as an orphan (`orphan_file_grace_secs`).
            if !maybe_committed && !inline {
                let _ = state.storage.delete(&storage_key).await;
            }
            failed?;
            // Inserted nothing: no such template for this account (checked
            // by the insert, to save a round trip), or a concurrent request
            // with the same Idempotency-Key won.
            if let Some(key) = &idempotency_key
                && let Some(job) = jobs::find_idempotent(
                    &state.pool,
                    account_id,
                    key,
                    state.config.idempotency_ttl(),
                )
                .await?
            {
                return Ok((job, true));
            }
            Err(ApiError::not_found(
                "template_not_found",
                "no template with this id",
            ))
        }
    }
}

/// The job row and its queue task commit together: a job is claimable as
/// soon as it exists (the caller then wakes the workers). Without an
/// idempotency key the insert shares a statement with concurrent
/// submissions.
async fn insert_and_enqueue(state: &AppState, new: NewJob) -> sqlx::Result<Option<JobRow>> {
    if new.idempotency_key.is_none() {
        return state.inserter.insert(new).await;
    }
    jobs::insert_and_enqueue(
        &state.pool,
        &new,
        state.config.idempotency_ttl(),
        state.config.task_max_attempts(),
    )
    .await
}

fn error_of(code: &Option<String>, message: &Option<String>) -> Option<JobError> {
    code.as_ref().map(|code| JobError {
        code: code.clone(),
        message: message.clone().unwrap_or_default(),
    })
}

/// The current status of a job, with each of its documents.
#[endpoint(
    tags("jobs"),
    parameters(("job_id" = String, Query, description = "The `job_id` that `POST /process-job` answered.")),
)]
pub async fn job_status(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<JobStatus>> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot);
    // Read by hand, not by salvo's QueryParam: its generic description would
    // replace the one above in /openapi.json.
    let job_id = req.query::<String>("job_id").ok_or_else(|| {
        ApiError::unprocessable(
            "missing_field",
            "job_id is required: the job_id that POST /process-job answered",
        )
    })?;
    let job = super::own_job(&state.pool, account_id, &job_id).await?;
    let documents = jobs::documents(&state.pool, job.id).await?;
    Ok(Json(JobStatus {
        job_id: job.id,
        template_id: job.template_id,
        status: job.status,
        document_type: job.content_type,
        created_at: job.created_at,
        updated_at: job.updated_at,
        finished_at: job.finished_at,
        error: error_of(&job.error_code, &job.error_message),
        documents: documents
            .into_iter()
            .map(|d| DocumentStatus {
                index: d.idx,
                file_name: d.file_name,
                status: d.status,
                pages: d.pages,
                error: error_of(&d.error_code, &d.error_message),
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(up: &Upload) -> Vec<u8> {
        match &up.body {
            UploadBody::Memory(data) => data.to_vec(),
            UploadBody::Spooled { path, .. } => std::fs::read(path).unwrap(),
        }
    }

    #[test]
    fn the_memory_budget_fits_one_largest_submission_at_least() {
        use figment::providers::Format;
        // The body, and its decoded document up to 2 MiB.
        let copy = IN_MEMORY_MAX as u64;
        assert_eq!(memory_kib(1024, copy), 2);
        assert_eq!(memory_kib(10 << 20, copy), (10 << 10) + (2 << 10));
        assert_eq!(memory_kib(10 << 20, u64::MAX), 20 << 10);
        assert_eq!(memory_kib(u64::MAX, copy), u32::MAX);
        let mut config: paperhook_core::config::Config = figment::Figment::from(
            figment::providers::Toml::string(paperhook_core::config::DEFAULTS),
        )
        .extract()
        .unwrap();
        // 50 MiB documents: a body of about 75 MB, 77 MB counted.
        let one = u64::from(memory_kib(envelope_limit(&config), copy)) * 1024;
        assert!((76_000_000..78_000_000).contains(&one), "{one}");
        (
            config.submission_memory_bytes,
            config.submission_memory_per_account_bytes,
        ) = (one, one);
        assert_eq!(
            upload_memory(&config).unwrap().available() as u64,
            one / 1024
        );
        config.submission_memory_per_account_bytes = one - 1024;
        let err = upload_memory(&config).unwrap_err().to_string();
        assert!(err.contains("submission_memory_per_account_bytes"), "{err}");
        config.submission_memory_bytes = one - 1024;
        let err = upload_memory(&config).unwrap_err().to_string();
        assert!(err.contains(&format!("at least {one}")), "{err}");
    }

    #[test]
    fn base64_decodes_in_memory_or_to_a_spool_file() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let encoded = base64::engine::general_purpose::STANDARD.encode(&data);
        let plain = |text: &str, limit, in_memory_max| {
            decode_base64(Base64Text::Plain(text), limit, in_memory_max)
        };
        let small = plain(&encoded, 1 << 20, 1 << 20).unwrap();
        assert!(matches!(small.body, UploadBody::Memory(_)));
        assert_eq!(contents(&small), data);
        let large = plain(&encoded, 1 << 20, 100_000).unwrap();
        assert!(matches!(large.body, UploadBody::Spooled { .. }));
        assert_eq!((contents(&large), large.size), (data.clone(), 200_000));
        let with_newlines: String = encoded
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        for in_memory_max in [0, 1 << 20] {
            let up = plain(&with_newlines, 1 << 20, in_memory_max).unwrap();
            assert_eq!(contents(&up), data);
            let url = format!("data:application/pdf;base64,{encoded}");
            let up = plain(&url, 1 << 20, in_memory_max).unwrap();
            assert_eq!(up.size, data.len() as u64);
            let err = |text: &str, limit| plain(text, limit, in_memory_max).unwrap_err().code;
            assert_eq!(err("!!!!", 100), "invalid_base64");
            assert_eq!(err(&encoded, 1000), "document_too_large");
            assert_eq!(err("  ", 1000), "empty_document");
            assert_eq!(err("data:text/plain,abcd", 1000), "invalid_base64");
            assert_eq!(err("data:;base64,", 1000), "empty_document");
        }
    }

    #[test]
    fn base64_in_a_json_string_is_decoded_with_its_escapes() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let encoded = base64::engine::general_purpose::STANDARD.encode(&data);
        assert!(encoded.contains('/') && encoded.contains('+'));
        // As PHP's json_encode writes it: every `/` escaped, a data: URL,
        // lines of 76 with `\r\n`; and a few characters as `\u` escapes.
        let lines: Vec<&str> = encoded
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let json = serde_json::to_string(&format!(
            "data:application/pdf;base64,{}",
            lines.join("\r\n")
        ))
        .unwrap()
        .replace('/', "\\/")
        .replacen('A', "\\u0041", 3);
        assert!(json.contains("\\r\\n") && json.contains("\\/") && json.contains("\\u0041"));
        let inner = &json[1..json.len() - 1];
        for in_memory_max in [0, 1 << 20] {
            let up = decode_base64(Base64Text::Json(inner), 1 << 20, in_memory_max).unwrap();
            assert_eq!((contents(&up), up.size), (data.clone(), data.len() as u64));
        }
        // Text that only unescapes to base64 is not taken as it is.
        assert_eq!(
            decode_base64(Base64Text::Plain("QU\\/B"), 100, 100)
                .unwrap_err()
                .code,
            "invalid_base64"
        );
        // A lone surrogate is no base64 character.
        assert_eq!(
            decode_base64(Base64Text::Json("QUJD\\ud800"), 100, 100)
                .unwrap_err()
                .code,
            "invalid_base64"
        );
    }

    #[test]
    fn nesting_depth() {
        let v: Value = serde_json::json!({"a": {"b": [1, {"c": 2}]}});
        assert_eq!(depth(&v), 4);
    }
}
