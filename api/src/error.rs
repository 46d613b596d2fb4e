//! The API's error type: every failure becomes `{"error": {"code", "message"}}`
//! with the right status. Internal causes are logged, never sent.

use salvo::http::{ParseError, StatusCode};
use salvo::oapi::{self, Components, EndpointOutRegister, Operation, ToSchema};
use salvo::prelude::*;
use serde::Serialize;

use paperhook_core::storage::StorageError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

/// The error body every endpoint answers with.
#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "Error"))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ErrorDetail"))]
pub struct ErrorDetail {
    /// A stable, machine-readable code such as `template_not_found`.
    pub code: String,
    /// A human-readable explanation of what went wrong and how to fix it.
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn too_large(limit: u64) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "document_too_large",
            format!(
                "the document is larger than the limit of {limit} bytes ({:.1} MiB)",
                limit as f64 / (1024.0 * 1024.0)
            ),
        )
    }

    /// The API key used up its request budget (`rate_limit_per_sec`, `rate_limit_burst`).
    pub fn rate_limited(retry_after_secs: u64) -> ApiError {
        ApiError {
            retry_after_secs: Some(retry_after_secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this API key made too many requests; retry in {retry_after_secs} s (Retry-After)"
                ),
            )
        }
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after_secs: Some(5),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// An unexpected failure: logged with its cause, answered with an opaque 500.
    pub fn internal(context: &str, err: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; it has been logged",
        )
    }

    /// A JSON body that does not parse is 400 `malformed_json`; one that
    /// parses but lacks a field or has one of the wrong type is 422
    /// `missing_field` or `invalid_field`, as for `/process-job`.
    pub fn from_json(e: &serde_json::Error) -> ApiError {
        if !e.is_data() {
            return ApiError::bad_request(
                "malformed_json",
                format!("the JSON body is invalid: {e}"),
            );
        }
        let message = e.to_string();
        if message.starts_with("missing field") {
            ApiError::unprocessable("missing_field", message)
        } else {
            ApiError::unprocessable("invalid_field", format!("invalid field: {message}"))
        }
    }

    /// 422 for text holding the NUL character (`\u0000`), which no stored
    /// text may contain.
    pub fn nul_in_text() -> ApiError {
        ApiError::unprocessable(
            "invalid_field",
            "text may not contain the NUL character (\\u0000); remove it and send again",
        )
    }

    /// Maps a request-body parse failure (from salvo) to our error.
    pub fn from_parse(err: ParseError, limit: u64, what: &str) -> ApiError {
        match err {
            ParseError::PayloadTooLarge => ApiError::too_large(limit),
            ParseError::InvalidContentType | ParseError::NotFormData => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("send {what}"),
            ),
            ParseError::SerdeJson(e) => ApiError::from_json(&e),
            other => ApiError::bad_request(
                "malformed_body",
                format!("the request body could not be read as {what}: {other}"),
            ),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> ApiError {
        if paperhook_core::db::is_unavailable(&err) {
            tracing::warn!(error = %err, "database unavailable");
            ApiError::unavailable(
                "database_unavailable",
                "the database is unavailable; retry shortly",
            )
        } else {
            ApiError::internal("database query failed", &err)
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> ApiError {
        tracing::error!(error = %err, "storage failed");
        ApiError::unavailable(
            "storage_unavailable",
            "document storage is unavailable; retry shortly",
        )
    }
}

pub fn write_error(res: &mut Response, status: StatusCode, code: &str, message: &str) {
    res.status_code(status);
    res.render(Json(ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    }));
}

#[async_trait]
impl Writer for ApiError {
    async fn write(self, _req: &mut Request, _depot: &mut Depot, res: &mut Response) {
        if let Some(secs) = self.retry_after_secs
            && let Ok(value) = secs.to_string().parse()
        {
            res.headers_mut().insert("retry-after", value);
        }
        write_error(res, self.status, self.code, &self.message);
    }
}

/// Every endpoint may answer these; the body is always [`ErrorBody`].
impl EndpointOutRegister for ApiError {
    fn register(components: &mut Components, operation: &mut Operation) {
        let schema = ErrorBody::to_schema(components);
        for (status, description) in [
            ("400", "Malformed request (JSON or multipart)"),
            ("401", "Missing, unknown or revoked API key"),
            ("402", "No credits left"),
            (
                "403",
                "A dashboard session's state-changing request without its x-csrf-token",
            ),
            ("404", "Unknown id, or one of another account"),
            (
                "408",
                "The request's body did not arrive within submission_read_timeout_secs",
            ),
            ("413", "Document or body over the size limit"),
            ("415", "Unsupported document or media type"),
            (
                "422",
                "Invalid values (base64, static_values, template fields)",
            ),
            (
                "429",
                "Too many requests for this API key; retry after Retry-After seconds",
            ),
            ("500", "Internal error (logged)"),
            (
                "503",
                "Database or storage unavailable, or too many previews, test events or large submissions at once; retry after Retry-After seconds",
            ),
        ] {
            operation.responses.insert(
                status,
                oapi::Response::new(description)
                    .add_content("application/json", oapi::Content::new(schema.clone())),
            );
        }
    }
}

/// Turns salvo's own errors (unknown route, wrong method, panics) into our JSON shape.
#[handler]
pub async fn catch_errors(res: &mut Response, ctrl: &mut FlowCtrl) {
    let status = res.status_code.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint; see /openapi.json"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "method not allowed on this endpoint")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "unsupported content type")
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            ("unavailable", "the service is unavailable; retry shortly")
        }
        // salvo's own 400s come from parameters its extractors could not read.
        StatusCode::BAD_REQUEST => (
            "bad_request",
            "a parameter of the request could not be read (say, limit=abc); see /openapi.json",
        ),
        s if s.is_client_error() => ("bad_request", "the request could not be handled"),
        _ => (
            "internal_error",
            "an internal error occurred; it has been logged",
        ),
    };
    write_error(res, status, code, message);
    ctrl.skip_rest();
}
