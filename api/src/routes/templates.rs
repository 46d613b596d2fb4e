//! Templates: the fields to extract (validated by `paperhook-extract`) and
//! the webhook that receives the results.

use std::collections::BTreeMap;
use std::net::IpAddr;

use paperhook_core::db::templates::{self, TemplateRow, TemplateWrite};
use paperhook_core::{crypto, webhook};
use salvo::oapi::extract::PathParam;
use salvo::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::{AppState, auth};

/// Headers that the delivery itself sets; a template may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "user-agent",
];
const MAX_NAME_CHARS: usize = 200;
const MAX_URL_CHARS: usize = 2048;

/// A template as clients send it (create and full update).
#[derive(Deserialize, ToSchema)]
#[salvo(schema(name = "TemplateInput"))]
pub struct TemplateInput {
    /// A name for people (1-200 characters).
    name: String,
    /// The fields to extract: see extract/README.md for the field model.
    fields: Vec<Value>,
    /// Words that must appear in a document for the template to apply.
    #[serde(default)]
    keywords: Vec<String>,
    /// Tesseract languages for OCR, e.g. `["eng", "deu"]`.
    #[serde(default)]
    languages: Vec<String>,
    /// Where results are POSTed; optional.
    webhook: Option<WebhookInput>,
}

#[derive(Deserialize, ToSchema)]
pub struct WebhookInput {
    /// An http(s) URL.
    url: String,
    /// Custom headers sent with every delivery (e.g. `Authorization`). Stored
    /// encrypted; returned masked. On update, a value equal to its masked
    /// form keeps the stored value while the webhook url stays the same;
    /// with another url it is 422 invalid_webhook (send the value again).
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Serialize, ToSchema)]
pub struct TemplateOut {
    id: Uuid,
    name: String,
    fields: Value,
    keywords: Value,
    languages: Value,
    webhook: Option<WebhookOut>,
    /// The Standard Webhooks signing secret, masked; see `/webhook-secret`.
    signing_secret_hint: String,
    /// After a rotation: until when the previous secret still signs too.
    previous_secret_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookOut {
    url: String,
    /// Header names with masked values.
    headers: BTreeMap<String, String>,
}

#[derive(Serialize, ToSchema)]
pub struct TemplateList {
    templates: Vec<TemplateOut>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookSecret {
    /// `whsec_` followed by base64: verify deliveries with it (Standard Webhooks).
    secret: String,
    /// After a rotation: until when webhooks also carry a signature made
    /// with the previous secret (null when they do not).
    previous_secret_expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// How long the previous secret keeps signing after a rotation, at most.
const MAX_PREVIOUS_VALID_SECS: u64 = 7 * 24 * 3600;

#[derive(Debug, Deserialize, ToParameters)]
#[salvo(parameters(default_parameter_in = Query))]
pub struct RotateQuery {
    /// How long webhooks also carry a signature made with the previous
    /// secret, so receivers can switch without failures: seconds, 0-604800
    /// (default 86400, a day). 0 stops it at once (a leaked secret).
    previous_valid_secs: Option<u64>,
}

/// Until when the previous secret signs, if it still did when the row was
/// read (judged by the database's clock, which stamped the expiry).
fn previous_until(row: &TemplateRow) -> Option<chrono::DateTime<chrono::Utc>> {
    row.previous_secret_enc()
        .and(row.webhook_previous_secret_expires_at)
}

/// The shortest value whose last 4 characters are shown: a sixth of it at
/// most, while a short token's tail would be a good part of it.
const MASK_TAIL_FROM: usize = 24;

/// `****`, plus the last 4 characters of values of [`MASK_TAIL_FROM`]
/// characters or more; never enough to guess.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() >= MASK_TAIL_FROM {
        format!(
            "****{}",
            chars[chars.len() - 4..].iter().collect::<String>()
        )
    } else {
        "****".to_owned()
    }
}

fn decrypt_headers(state: &AppState, row: &TemplateRow) -> ApiResult<BTreeMap<String, String>> {
    let Some(enc) = &row.webhook_headers_enc else {
        return Ok(BTreeMap::new());
    };
    let plain = state
        .keyring
        .open(enc, &crypto::context(row.id, crypto::WEBHOOK_HEADERS))
        .map_err(|e| ApiError::internal("decrypting webhook headers", &e))?;
    serde_json::from_slice(&plain).map_err(|e| ApiError::internal("decoding webhook headers", &e))
}

fn decrypt_secret(state: &AppState, row: &TemplateRow) -> ApiResult<String> {
    let plain = state
        .keyring
        .open(
            &row.webhook_secret_enc,
            &crypto::context(row.id, crypto::WEBHOOK_SECRET),
        )
        .map_err(|e| ApiError::internal("decrypting webhook secret", &e))?;
    String::from_utf8(plain).map_err(|e| ApiError::internal("decoding webhook secret", &e))
}

fn render(state: &AppState, row: &TemplateRow) -> ApiResult<TemplateOut> {
    let spec = &row.spec.0;
    let webhook = match &row.webhook_url {
        Some(url) => Some(WebhookOut {
            url: url.clone(),
            headers: decrypt_headers(state, row)?
                .iter()
                .map(|(k, v)| (k.clone(), mask(v)))
                .collect(),
        }),
        None => None,
    };
    Ok(TemplateOut {
        id: row.id,
        name: row.name.clone(),
        fields: spec.get("fields").cloned().unwrap_or(Value::Array(vec![])),
        keywords: spec
            .get("keywords")
            .cloned()
            .unwrap_or(Value::Array(vec![])),
        languages: spec
            .get("languages")
            .cloned()
            .unwrap_or(Value::Array(vec![])),
        webhook,
        signing_secret_hint: mask(&decrypt_secret(state, row)?),
        previous_secret_expires_at: previous_until(row),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn invalid_webhook(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_webhook", message)
}

/// A webhook URL as the url crate writes it (checked by [`check_url`]
/// first): `https://h.example:443/a` and `https://h.example/a` are one URL.
fn normalized(url: &str) -> String {
    url::Url::parse(url)
        .map(String::from)
        .unwrap_or_else(|_| url.to_owned())
}

/// Checks a webhook URL. An IP address the SSRF guard refuses (in any
/// spelling the url crate accepts: `2130706433`, `0x7f.1`, `[::ffff:127.0.0.1]`)
/// is refused here already; names are resolved and checked by the worker at
/// every delivery, since what they resolve to can change. A user name or
/// password in it is refused: the URL is stored and shown as it is, while
/// custom headers are encrypted and masked.
fn check_url(url: &str, allow: &[webhook::Cidr]) -> ApiResult<()> {
    if url.chars().count() > MAX_URL_CHARS {
        return Err(invalid_webhook(format!(
            "webhook url is longer than {MAX_URL_CHARS} characters"
        )));
    }
    let parsed = url::Url::parse(url)
        .map_err(|e| invalid_webhook(format!("webhook url {url:?} is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none_or(|h| h.is_empty())
    {
        return Err(invalid_webhook(format!(
            "webhook url {url:?} must be an absolute http:// or https:// URL"
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid_webhook(
            "the webhook url must not carry a user name or password: send credentials in a \
             custom header instead (e.g. authorization), which is stored encrypted",
        ));
    }
    let ip: Option<IpAddr> = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => Some(ip.into()),
        Some(url::Host::Ipv6(ip)) => Some(ip.into()),
        _ => None,
    };
    if let Some(ip) = ip
        && let Some(reason) = webhook::refused(ip, allow)
    {
        return Err(invalid_webhook(format!(
            "webhook url {url:?} points at {ip}, a {reason} address webhooks may not reach; \
             allow it with webhook_allow_cidrs (PAPERHOOK_WEBHOOK_ALLOW_CIDRS)"
        )));
    }
    Ok(())
}

/// `max` is (`webhook_max_headers`, `webhook_max_header_bytes`).
fn check_headers(headers: &BTreeMap<String, String>, max: (usize, usize)) -> ApiResult<()> {
    let (max_headers, max_bytes) = max;
    if headers.len() > max_headers {
        return Err(invalid_webhook(format!(
            "at most {max_headers} custom headers are allowed (webhook_max_headers), not {}",
            headers.len()
        )));
    }
    let total: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > max_bytes {
        return Err(invalid_webhook(format!(
            "custom headers total {total} bytes; the limit is {max_bytes} (webhook_max_header_bytes)"
        )));
    }
    for (name, value) in headers {
        if salvo::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid_webhook(format!(
                "{name:?} is not a valid header name"
            )));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(invalid_webhook(format!(
                "header {name:?} is set by Paperhook itself and cannot be overridden"
            )));
        }
        if salvo::http::HeaderValue::from_str(value).is_err() {
            return Err(invalid_webhook(format!(
                "the value of header {name:?} is not a valid header value"
            )));
        }
    }
    Ok(())
}

/// Reads and validates a template body; `existing` keeps masked header values.
/// The template `id` as the request writes it (`existing` when it is an
/// update).
async fn read_input(
    req: &mut Request,
    state: &AppState,
    id: Uuid,
    existing: Option<&TemplateRow>,
) -> ApiResult<TemplateWrite> {
    let input: TemplateInput = crate::read_json(req, state, "a JSON template").await?;
    let name = input.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::unprocessable(
            "invalid_template",
            format!("name must be 1-{MAX_NAME_CHARS} characters"),
        ));
    }
    let mut spec = Map::new();
    spec.insert("fields".into(), Value::Array(input.fields));
    spec.insert(
        "keywords".into(),
        serde_json::to_value(input.keywords).unwrap_or_default(),
    );
    if !input.languages.is_empty() {
        spec.insert(
            "languages".into(),
            serde_json::to_value(input.languages).unwrap_or_default(),
        );
    }
    // Checking compiles every pattern of the template: blocking work.
    let max_fields = state.config.template_max_fields;
    let template = tokio::task::spawn_blocking(move || {
        let template = paperhook_extract::Template::from_json_limited(
            Value::Object(spec),
            max_fields,
            Some("template_max_fields"),
        )?;
        template.check_new()?;
        Ok::<_, paperhook_extract::TemplateError>(template)
    })
    .await
    .map_err(|e| ApiError::internal("checking a template", &e))?
    .map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
    let spec = serde_json::to_value(&template)
        .map_err(|e| ApiError::internal("serialising a template", &e))?;

    let (webhook_url, webhook_headers_enc) = match input.webhook {
        None => (None, None),
        Some(webhook) => {
            let url = webhook.url.trim().to_owned();
            let allow = state
                .config
                .webhook_allow_list()
                .map_err(|e| ApiError::internal("reading webhook_allow_cidrs", &e))?;
            check_url(&url, &allow)?;
            let mut headers = webhook.headers;
            if let Some(row) = existing {
                let stored = decrypt_headers(state, row)?;
                let same_url = row.webhook_url.as_deref().map(normalized) == Some(normalized(&url));
                for (name, value) in headers.iter_mut() {
                    if let Some(old) = stored.get(name)
                        && *value == mask(old)
                    {
                        // A masked value stands for the stored one only for
                        // the same URL: otherwise whoever can edit the
                        // template could send the secret to an endpoint of
                        // theirs, on another host or on a shared one
                        // (hooks.zapier.com/hooks/catch/..., an API gateway).
                        if !same_url {
                            return Err(invalid_webhook(format!(
                                "the webhook url changed; send the value of header {name:?} \
                                 again: stored header values are only kept while the url stays \
                                 the same"
                            )));
                        }
                        value.clone_from(old);
                    }
                }
            }
            let config = &state.config;
            check_headers(
                &headers,
                (config.webhook_max_headers, config.webhook_max_header_bytes),
            )?;
            let enc = (!headers.is_empty()).then(|| {
                state.keyring.seal(
                    &serde_json::to_vec(&headers).unwrap_or_default(),
                    &crypto::context(id, crypto::WEBHOOK_HEADERS),
                )
            });
            (Some(url), enc)
        }
    };
    Ok(TemplateWrite {
        name,
        spec,
        webhook_url,
        webhook_headers_enc,
    })
}

/// The template id of a path: a UUID, or 422 `invalid_template_id`.
fn template_id(id: PathParam<String>) -> ApiResult<Uuid> {
    super::parse_uuid("template id", "invalid_template_id", &id.into_inner())
}

/// The 404 for an unknown template, or one of another account.
pub fn not_found() -> ApiError {
    ApiError::not_found("template_not_found", "no template with this id")
}

/// Creates a template; a signing secret is generated for its webhook.
#[endpoint(tags("templates"), request_body = TemplateInput, responses((status_code = 201, body = TemplateOut)))]
pub async fn create_template(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<()> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot).clone();
    // Made here: its secrets are sealed to it.
    let id = Uuid::new_v4();
    let write = read_input(req, &state, id, None).await?;
    let secret = state.keyring.seal(
        crypto::generate_webhook_secret().as_bytes(),
        &crypto::context(id, crypto::WEBHOOK_SECRET),
    );
    let row = templates::insert_with_id(&state.pool, id, account_id, &write, &secret).await?;
    res.status_code(StatusCode::CREATED);
    res.render(Json(render(&state, &row)?));
    Ok(())
}

/// Lists the account's templates, newest first.
#[endpoint(tags("templates"))]
pub async fn list_templates(depot: &mut Depot, page: super::Page) -> ApiResult<Json<TemplateList>> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot);
    let (limit, offset) = page.bounds()?;
    let rows = templates::list(&state.pool, account_id, limit, offset).await?;
    let templates = rows
        .iter()
        .map(|row| render(state, row))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(TemplateList { templates }))
}

async fn load(state: &AppState, account_id: Uuid, id: Uuid) -> ApiResult<TemplateRow> {
    templates::get(&state.pool, account_id, id)
        .await?
        .ok_or_else(not_found)
}

/// One template.
#[endpoint(tags("templates"))]
pub async fn get_template(
    depot: &mut Depot,
    id: PathParam<String>,
) -> ApiResult<Json<TemplateOut>> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot);
    let row = load(state, account_id, template_id(id)?).await?;
    Ok(Json(render(state, &row)?))
}

/// Replaces a template's name, fields and webhook (the signing secret is kept).
#[endpoint(tags("templates"), request_body = TemplateInput)]
pub async fn update_template(
    req: &mut Request,
    depot: &mut Depot,
    id: PathParam<String>,
) -> ApiResult<Json<TemplateOut>> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot).clone();
    let id = template_id(id)?;
    let existing = load(&state, account_id, id).await?;
    let write = read_input(req, &state, existing.id, Some(&existing)).await?;
    let row = templates::update(&state.pool, account_id, id, &write)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(render(&state, &row)?))
}

/// Deletes a template. Jobs already accepted still finish.
#[endpoint(tags("templates"), responses((status_code = 204, description = "Deleted")))]
pub async fn delete_template(
    depot: &mut Depot,
    id: PathParam<String>,
    res: &mut Response,
) -> ApiResult<()> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot);
    if !templates::delete(&state.pool, account_id, template_id(id)?).await? {
        return Err(not_found());
    }
    res.status_code(StatusCode::NO_CONTENT);
    Ok(())
}

/// The template's webhook signing secret, in clear.
#[endpoint(tags("templates"))]
pub async fn get_webhook_secret(
    depot: &mut Depot,
    id: PathParam<String>,
) -> ApiResult<Json<WebhookSecret>> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot);
    let row = load(state, account_id, template_id(id)?).await?;
    Ok(Json(WebhookSecret {
        secret: decrypt_secret(state, &row)?,
        previous_secret_expires_at: previous_until(&row),
    }))
}

/// Replaces the signing secret with a new one and returns it. Webhooks are
/// signed with the new secret from now on and, for `previous_valid_secs`
/// (a day unless told), also with the previous one (two signatures in
/// `webhook-signature`, either of which verifies), so receivers can move to
/// the new secret without failed deliveries.
#[endpoint(tags("templates"))]
pub async fn rotate_webhook_secret(
    depot: &mut Depot,
    id: PathParam<String>,
    query: RotateQuery,
) -> ApiResult<Json<WebhookSecret>> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot);
    let previous_valid = query.previous_valid_secs.unwrap_or(24 * 3600);
    if previous_valid > MAX_PREVIOUS_VALID_SECS {
        return Err(ApiError::unprocessable(
            "invalid_previous_valid_secs",
            format!(
                "previous_valid_secs must be 0-{MAX_PREVIOUS_VALID_SECS} (7 days), not {previous_valid}"
            ),
        ));
    }
    let id = template_id(id)?;
    let secret = crypto::generate_webhook_secret();
    let enc = state.keyring.seal(
        secret.as_bytes(),
        &crypto::context(id, crypto::WEBHOOK_SECRET),
    );
    let row = templates::set_secret(
        &state.pool,
        account_id,
        id,
        &enc,
        std::time::Duration::from_secs(previous_valid),
    )
    .await?
    .ok_or_else(not_found)?;
    Ok(Json(WebhookSecret {
        secret,
        previous_secret_expires_at: previous_until(&row),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct TestEventOut {
    /// The `webhook-id` the test event carried.
    webhook_id: String,
    /// The receiver's HTTP status, if it answered.
    status_code: Option<i32>,
    latency_ms: i32,
    /// The first 2 KiB of the receiver's answer.
    response_excerpt: Option<String>,
    /// timeout, dns, connect, tls, http or refused (the SSRF guard).
    error_class: Option<String>,
    error_message: Option<String>,
}

/// Sends a signed test event (`"type": "test"`) to the template's webhook now
/// and shows what the receiver answered. Nothing is queued or recorded. At
/// most `webhook_test_max_concurrent` at once per API process: then 503
/// `webhook_tests_busy` with Retry-After.
#[endpoint(tags("templates"))]
pub async fn send_test_event(
    depot: &mut Depot,
    id: PathParam<String>,
) -> ApiResult<Json<TestEventOut>> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot);
    let row = load(state, account_id, template_id(id)?).await?;
    if row.webhook_url.is_none() {
        return Err(invalid_webhook(
            "the template has no webhook URL; set one first",
        ));
    }
    // Each holds a connection out for up to webhook_timeout_secs: without a
    // bound, one key's rate limit alone would allow hundreds at once.
    let Ok(_place) = state.webhook_tests.clone().try_acquire_owned() else {
        return Err(ApiError::unavailable(
            "webhook_tests_busy",
            format!(
                "{} test events are already out from this server (webhook_test_max_concurrent); retry in a few seconds",
                state.config.webhook_test_max_concurrent
            ),
        ));
    };
    let (webhook_id, attempt) =
        paperhook_worker::deliver::send_test(&state.config, &state.keyring, &row)
            .await
            .map_err(|e| ApiError::internal("sending a test event", &format!("{e:#}")))?;
    Ok(Json(TestEventOut {
        webhook_id,
        status_code: attempt.status_code,
        latency_ms: attempt.latency_ms,
        response_excerpt: attempt.response_excerpt,
        error_class: attempt.error_class.map(str::to_owned),
        error_message: attempt.error_message,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_hide_secrets() {
        assert_eq!(mask("short"), "****");
        assert_eq!(mask("Bearer abcdefgh1234"), "****");
        assert_eq!(mask("X-Api-Key 123456789012"), "****");
        assert_eq!(mask("Bearer abcdefgh12345678901234"), "****1234");
        assert!(check_url("https://example.com/hook", &[]).is_ok());
        assert!(check_url("ftp://example.com", &[]).is_err());
        assert!(check_url("/relative", &[]).is_err());
        let mut h = BTreeMap::new();
        h.insert("Webhook-Signature".to_string(), "x".to_string());
        assert!(check_headers(&h, (20, 8192)).is_err());
        h.clear();
        h.insert("X-Token".to_string(), "ok\nbad".to_string());
        assert!(check_headers(&h, (20, 8192)).is_err());
    }
}
