//! Previews for setting up a template: render a sample page, and run a
//! template on a sample without creating a job. Nothing is stored or charged;
//! samples are limited to `preview_max_pages` pages, to the configured pixel
//! limits, and to `page_time_limit_secs` for the whole sample; at most
//! `preview_max_concurrent` run at once in a process.

use std::io::Cursor;

use paperhook_core::order::{InTemplateOrder, field_names};
use paperhook_extract::{Options, Template};
use salvo::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

#[derive(Serialize, ToSchema)]
pub struct PreviewResult {
    /// The `result` object a webhook would receive (keys in the template's order).
    #[salvo(schema(value_type = Object))]
    result: InTemplateOrder,
    /// Per field, in the same order: page, box (normalised), confidence, source.
    #[salvo(schema(value_type = Object))]
    fields: InTemplateOrder,
    pages: u32,
    missing_required: Vec<String>,
}

/// The sample's bytes and the form's text fields.
/// Counted against `submission_memory_bytes` while the permit is held: the
/// form's text fields are in memory, and the sample is read whole.
async fn read_sample(
    req: &mut Request,
    depot: &Depot,
) -> ApiResult<(
    Vec<u8>,
    std::collections::HashMap<String, String>,
    crate::upload_memory::Reservation,
)> {
    let state = crate::state(depot);
    let max = state.config.max_upload_bytes;
    let limit = max + 256 * 1024;
    let account = crate::auth::account(depot).id;
    let memory = super::jobs::reserve_memory(req, state, account, limit, max)?;
    let read = async {
        req.form_data_max_size(limit as usize)
            .await
            .map_err(|e| ApiError::from_parse(e, max, "multipart/form-data with a file"))
    };
    let form = crate::within_read_timeout(state, read).await?;
    let file = form
        .files
        .get("file")
        .ok_or_else(|| ApiError::unprocessable("missing_field", "file is required"))?;
    if file.size() > max {
        return Err(ApiError::too_large(max));
    }
    let bytes = tokio::fs::read(file.path())
        .await
        .map_err(|e| ApiError::internal("reading a preview upload", &e))?;
    if matches!(
        paperhook_core::sniff::detect(&bytes),
        None | Some(paperhook_core::sniff::DocType::Zip)
    ) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_document_type",
            "a sample must be a PDF, PNG, JPEG or TIFF",
        ));
    }
    let fields = form
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok((bytes, fields, memory))
}

fn options(depot: &Depot) -> Options {
    let opts = crate::state(depot).config.extract_options();
    Options {
        max_pages: crate::state(depot)
            .config
            .preview_max_pages
            .min(opts.max_pages),
        document_time_limit: opts.document_time_limit.min(opts.page_time_limit),
        ..opts
    }
}

/// Runs a preview on the blocking pool in one of the process's
/// `preview_max_concurrent` places (503 when none is free), given up past
/// `limit`. A given-up preview's thread runs on and keeps its place until
/// it ends (see `paperhook_abandoned_extractions`).
async fn bounded<T: Send + 'static>(
    depot: &Depot,
    limit: std::time::Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> ApiResult<T> {
    use paperhook_core::bounded::{Bounded, run_bounded};
    let state = crate::state(depot);
    let Ok(place) = state.previews.clone().try_acquire_owned() else {
        return Err(ApiError::unavailable(
            "previews_busy",
            format!(
                "{} previews are already running on this server (preview_max_concurrent); retry in a few seconds",
                state.config.preview_max_concurrent
            ),
        ));
    };
    let work = move || {
        let out = work();
        drop(place);
        out
    };
    match run_bounded(limit, work).await {
        Ok(Bounded::Done(out)) => Ok(out),
        Ok(Bounded::Abandoned) => Err(ApiError::unprocessable(
            "document_timeout",
            format!(
                "reading the sample did not stop within {} s and was given up; try a smaller sample",
                limit.as_secs()
            ),
        )),
        Err(e) => Err(ApiError::internal("running a preview", &e)),
    }
}

fn extract_error(e: paperhook_extract::Error) -> ApiError {
    ApiError::unprocessable(e.code(), e.to_string())
}

/// Renders one page of a sample document as a PNG (field `file`, optional `page`, 1-based).
#[endpoint(tags("templates"), responses((status_code = 200, description = "image/png")))]
pub async fn render(req: &mut Request, depot: &mut Depot, res: &mut Response) -> ApiResult<()> {
    let (bytes, form, _memory) = read_sample(req, depot).await?;
    let page: u32 = match form.get("page").map(|s| s.trim()) {
        None | Some("") => 1,
        Some(p) => p.parse().ok().filter(|p| *p >= 1).ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_page",
                format!("page must be a number from 1, not {p:?}"),
            )
        })?,
    };
    let config = &crate::state(depot).config;
    let (max_pages, dpi) = (config.preview_max_pages, config.preview_dpi);
    if page > max_pages {
        return Err(ApiError::unprocessable(
            "invalid_page",
            format!(
                "previews show the first {max_pages} pages of a sample (preview_max_pages), \
                 not page {page}"
            ),
        ));
    }
    let opts = options(depot);
    let png = bounded(
        depot,
        opts.give_up_after(),
        move || -> ApiResult<Vec<u8>> {
            let img =
                paperhook_extract::render_page(&bytes, page, dpi, &opts).map_err(extract_error)?;
            let mut out = Cursor::new(Vec::new());
            img.write_to(&mut out, image::ImageFormat::Png)
                .map_err(|e| ApiError::internal("encoding a preview PNG", &e))?;
            Ok(out.into_inner())
        },
    )
    .await??;
    res.headers_mut().insert(
        "content-type",
        salvo::http::HeaderValue::from_static("image/png"),
    );
    res.write_body(png)
        .map_err(|e| ApiError::internal("writing a preview", &e))?;
    Ok(())
}

/// Runs a template (field `template`, JSON: fields, keywords, languages) on a sample (field `file`).
#[endpoint(tags("templates"))]
pub async fn extract(req: &mut Request, depot: &mut Depot) -> ApiResult<Json<PreviewResult>> {
    let (bytes, form, _memory) = read_sample(req, depot).await?;
    let raw = form
        .get("template")
        .ok_or_else(|| ApiError::unprocessable("missing_field", "template is required"))?;
    let config = &crate::state(depot).config;
    // As for a template's JSON body sent to /v1/templates.
    if raw.len() as u64 > config.max_json_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "template is {} bytes; the limit is {} (max_json_bytes)",
                raw.len(),
                config.max_json_bytes
            ),
        ));
    }
    let value: Value = serde_json::from_str(raw).map_err(|e| {
        ApiError::unprocessable("invalid_template", format!("template is not JSON: {e}"))
    })?;
    let max_fields = config.template_max_fields;
    let order: std::sync::Arc<[String]> = field_names(&value).into();
    let opts = options(depot);
    // Compiling a template's patterns is work too: on the preview's
    // thread, under its time limit, not on the server's async threads.
    // One regex cache: the check and the extraction compile each pattern once.
    let out = bounded(depot, opts.give_up_after(), move || -> ApiResult<_> {
        paperhook_extract::with_regex_cache(|| {
            // Checked as a template being saved is (the preview is its test).
            let template =
                Template::from_json_limited(value, max_fields, Some("template_max_fields"))
                    .and_then(|t| t.check_new().map(|()| t))
                    .map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
            paperhook_extract::extract(&bytes, &template, &opts).map_err(extract_error)
        })
    })
    .await??;
    Ok(Json(PreviewResult {
        result: InTemplateOrder {
            value: Value::Object(out.result),
            fields: order.clone(),
        },
        fields: InTemplateOrder {
            value: serde_json::to_value(&out.fields).unwrap_or(Value::Null),
            fields: order,
        },
        pages: out.pages,
        missing_required: out.missing_required,
    }))
}
