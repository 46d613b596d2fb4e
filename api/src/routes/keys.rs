//! The account's API keys: list by prefix, create (shown once), revoke.

use paperhook_core::db::accounts::{self, ApiKeyInfo, CreatedKey};
use salvo::oapi::extract::PathParam;
use salvo::prelude::*;
use serde::Serialize;

use crate::auth;
use crate::error::{ApiError, ApiResult};

#[derive(Serialize, ToSchema)]
pub struct ApiKeyOut {
    /// The public part of the key (`ph_xxxxxxx`), enough to identify it.
    prefix: String,
    created_at: chrono::DateTime<chrono::Utc>,
    last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    keys: Vec<ApiKeyOut>,
}

#[derive(Serialize, ToSchema)]
pub struct NewApiKeyOut {
    /// The whole key. It is shown only this once: only its hash is stored.
    api_key: String,
    prefix: String,
}

impl From<ApiKeyInfo> for ApiKeyOut {
    fn from(k: ApiKeyInfo) -> Self {
        ApiKeyOut {
            prefix: k.prefix,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// The account's API keys, newest first (prefixes only).
#[endpoint(tags("account"))]
pub async fn list_keys(depot: &mut Depot) -> ApiResult<Json<ApiKeyList>> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot);
    let keys = accounts::list_keys(&state.pool, account_id).await?;
    Ok(Json(ApiKeyList {
        keys: keys.into_iter().map(Into::into).collect(),
    }))
}

/// Creates an API key; the answer is the only time the whole key is shown.
///
/// An account holds at most `max_api_keys_per_account` (50 by default) keys
/// that are not revoked: one more answers 422 `too_many_api_keys`.
#[endpoint(tags("account"), responses((status_code = 201, body = NewApiKeyOut)))]
pub async fn create_key(depot: &mut Depot, res: &mut Response) -> ApiResult<()> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot);
    let max = state.config.max_api_keys_per_account;
    let key = match accounts::create_key(&state.pool, account_id, max).await? {
        CreatedKey::Created(key) => key,
        CreatedKey::NoAccount => {
            return Err(ApiError::unauthorized("the account no longer exists"));
        }
        CreatedKey::TooMany { max } => return Err(too_many_keys(max)),
    };
    res.status_code(StatusCode::CREATED);
    res.render(Json(NewApiKeyOut {
        api_key: key.key,
        prefix: key.prefix,
    }));
    Ok(())
}

/// `422 too_many_api_keys`: the account holds `max` keys not revoked.
pub fn too_many_keys(max: u32) -> ApiError {
    ApiError::unprocessable(
        "too_many_api_keys",
        format!(
            "the account already has {max} API keys that are not revoked \
             (max_api_keys_per_account); revoke one it no longer uses, then create another"
        ),
    )
}

/// Revokes one of the account's keys by its prefix; requests with it get 401 from now on.
#[endpoint(tags("account"), responses((status_code = 204, description = "Revoked")))]
pub async fn revoke_key(
    depot: &mut Depot,
    prefix: PathParam<String>,
    res: &mut Response,
) -> ApiResult<()> {
    let account_id = auth::account(depot).id;
    let state = crate::state(depot);
    accounts::revoke_key(&state.pool, prefix.trim(), Some(account_id))
        .await?
        .ok_or_else(|| ApiError::not_found("api_key_not_found", "no API key with this prefix"))?;
    res.status_code(StatusCode::NO_CONTENT);
    Ok(())
}
