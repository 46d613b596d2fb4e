//! HTTP handlers, one module per area.

pub mod account;
pub mod health;
pub mod job_views;
pub mod jobs;
pub mod keys;
pub mod preview;
pub mod results;
pub mod templates;

use salvo::oapi::ToParameters;
use serde::Deserialize;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// A `job_id` from a query or body: a UUID, or 422 `invalid_job_id`.
pub fn parse_job_id(raw: &str) -> ApiResult<Uuid> {
    parse_uuid("job_id", "invalid_job_id", raw)
}

/// The id in parameter `field`: a UUID, or 422 with `code`.
pub fn parse_uuid(field: &str, code: &'static str, raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw.trim())
        .map_err(|_| ApiError::unprocessable(code, format!("{field} must be a UUID, not {raw:?}")))
}

/// The caller's job with id `raw`: 422 `invalid_job_id` unless it is a
/// UUID, 404 `job_not_found` unless the job is the account's.
pub async fn own_job(
    db: impl sqlx::PgExecutor<'_>,
    account_id: Uuid,
    raw: &str,
) -> ApiResult<paperhook_core::db::jobs::JobRow> {
    paperhook_core::db::jobs::get(db, account_id, parse_job_id(raw)?)
        .await?
        .ok_or_else(job_not_found)
}

/// The 404 for an unknown job, or one of another account.
pub fn job_not_found() -> ApiError {
    ApiError::not_found("job_not_found", "no job with this id")
}

/// `?limit=&offset=` paging. Out of range answers `422` rather than a page
/// of another size than asked for, which a client paging by offsets would
/// misread.
#[derive(Debug, Deserialize, ToParameters)]
#[salvo(parameters(default_parameter_in = Query))]
pub struct Page {
    /// How many items (1-200, default 50).
    pub limit: Option<i64>,
    /// How many items to skip (0 or more, default 0).
    pub offset: Option<i64>,
}

impl Page {
    /// `(limit, offset)`, or `422 invalid_limit` / `invalid_offset`.
    pub fn bounds(&self) -> ApiResult<(i64, i64)> {
        let limit = page_limit(self.limit, "offset")?;
        let offset = self.offset.unwrap_or(0);
        if offset < 0 {
            return Err(ApiError::unprocessable(
                "invalid_offset",
                format!("offset must be 0 or more, not {offset}"),
            ));
        }
        Ok((limit, offset))
    }
}

/// The most items a page of a listing holds.
pub const MAX_PAGE: i64 = 200;

/// A listing's `limit` (50 by default), or `422 invalid_limit` outside
/// 1-[`MAX_PAGE`]: a page of another size than asked for would be misread.
/// `paging` names the parameter that pages on.
pub fn page_limit(limit: Option<i64>, paging: &str) -> ApiResult<i64> {
    let limit = limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::unprocessable(
            "invalid_limit",
            format!("limit must be 1-{MAX_PAGE}, not {limit}; page with {paging}"),
        ));
    }
    Ok(limit)
}
