//! Authentication: an API key in the `x-auth` header, or a dashboard session
//! cookie. Cookie-authenticated requests that change state must carry the
//! session's CSRF token in `x-csrf-token`. Every request counts against its
//! key's rate limit (a session's: the key it was opened with).

use paperhook_core::db::accounts::{Account, KeyCheck};
use paperhook_core::db::sessions::{self, Session};
use salvo::Writer;
use salvo::http::{Method, StatusCode};
use salvo::prelude::*;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

pub const SESSION_COOKIE: &str = "paperhook_session";

/// Puts the caller's [`Account`] (and [`Session`] for cookies) in the depot, or answers 401/403/429.
#[handler]
pub async fn require_key(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
    ctrl: &mut FlowCtrl,
) {
    match authenticate(req, depot).await {
        Ok((account, session)) => {
            depot.insert_typed(account);
            if let Some(session) = session {
                depot.insert_typed(session);
            }
        }
        Err(err) => {
            err.write(req, depot, res).await;
            ctrl.skip_rest();
        }
    }
}

async fn authenticate(
    req: &Request,
    depot: &Depot,
) -> Result<(Account, Option<Session>), ApiError> {
    let state = crate::state(depot);
    let limit = state.config.rate_limit();
    if let Some(value) = req.headers().get("x-auth") {
        let key = value.to_str().unwrap_or_default().trim();
        let account = admit(state.keys.check(key).await?, "unknown or revoked API key")?;
        return Ok((account, None));
    }
    let Some(token) = req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned()) else {
        return Err(ApiError::unauthorized(
            "missing API key: send it in the x-auth header",
        ));
    };
    let (session, account) = admit(
        sessions::authenticate(&state.pool, &token, limit).await?,
        "your session has ended; sign in again",
    )?;
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        let sent = req
            .headers()
            .get("x-csrf-token")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !bool::from(sent.ct_eq(session.csrf_token.as_bytes())) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "missing or wrong x-csrf-token for this session; reload the page",
            ));
        }
    }
    Ok((account, Some(session)))
}

/// A valid credential's value, or 401 (`invalid`) or 429.
pub(crate) fn admit<T>(check: KeyCheck<T>, invalid: &str) -> Result<T, ApiError> {
    match check {
        KeyCheck::Valid(value) => Ok(value),
        KeyCheck::RateLimited { retry_after_secs } => Err(ApiError::rate_limited(retry_after_secs)),
        KeyCheck::Invalid => Err(ApiError::unauthorized(invalid)),
    }
}

/// The authenticated account of this request.
pub fn account(depot: &Depot) -> &Account {
    depot
        .get_typed::<Account>()
        .expect("require_key runs before every authenticated handler")
}

/// The dashboard session of this request, if it came with a cookie.
pub fn session(depot: &Depot) -> Option<&Session> {
    depot.get_typed::<Session>().ok()
}
