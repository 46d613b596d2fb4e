//! The web dashboard: a small single-page app embedded in the binary (no
//! CDN, works offline) that uses the same JSON API as everyone else. A user
//! signs in with an API key and gets an HttpOnly, SameSite=Strict session
//! cookie; state-changing requests carry the session's CSRF token.

use paperhook_core::db::sessions;
use salvo::http::cookie::{Cookie, SameSite};
use salvo::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::{self, SESSION_COOKIE};
use crate::error::{ApiError, ApiResult};

#[derive(Deserialize, ToSchema)]
pub struct SignIn {
    api_key: String,
}

#[derive(Serialize, ToSchema)]
pub struct SessionOut {
    account_id: Uuid,
    name: String,
    credits: i64,
    /// Send in `x-csrf-token` on every POST, PUT and DELETE made with the cookie.
    csrf_token: String,
    public_url: String,
}

fn cookie(value: String, secure: bool, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .path("/")
        .max_age(salvo::http::cookie::time::Duration::seconds(max_age_secs))
        .build()
}

/// Whether the session cookie is `Secure`: the dashboard is served over
/// HTTPS, as `public_url` says, or as the proxy in front says of this
/// request (`X-Forwarded-Proto: https`: an HTTPS deployment that never set
/// `public_url` issued cookies a plain-HTTP request would carry). Trusting
/// the header can only add the flag: a client that forges it gets a cookie
/// its plain-HTTP requests do not send back.
fn secure_cookie(state: &crate::AppState, req: &Request) -> bool {
    state.config.public_url.starts_with("https://")
        || req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The largest sign-in body: `{"api_key": "..."}` with room to spare.
const SIGN_IN_MAX_BYTES: u64 = 4096;

/// Signs in with an API key and sets the session cookie.
#[endpoint(tags("dashboard"), security())]
pub async fn sign_in(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) -> ApiResult<Json<SessionOut>> {
    let state = crate::state(depot).clone();
    // Anyone may send this one, before any key is known: a small body.
    let input: SignIn = crate::read_json_up_to(
        req,
        &state,
        "JSON with api_key",
        SIGN_IN_MAX_BYTES,
        "a sign-in is a key",
    )
    .await?;
    let key = input.api_key.trim();
    // Counts against the key's rate limit like any request made with it.
    let account = auth::admit(state.keys.check(key).await?, "unknown or revoked API key")?;
    let ttl = state.config.session_ttl();
    let (session, token) = sessions::create(&state.pool, key, ttl)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?;
    // The browser's session before this sign-in ends with it: it would
    // otherwise stay valid, unseen, until it expires.
    if let Some(old) = req.cookie(SESSION_COOKIE) {
        sessions::end(&state.pool, old.value()).await?;
    }
    let secure = secure_cookie(&state, req);
    res.add_cookie(cookie(token, secure, ttl.as_secs() as i64));
    Ok(Json(SessionOut {
        account_id: account.id,
        name: account.name,
        credits: account.credits,
        csrf_token: session.csrf_token,
        public_url: state.config.public_url.clone(),
    }))
}

/// The signed-in session (401 when there is none).
#[endpoint(tags("dashboard"))]
pub async fn current(depot: &mut Depot) -> ApiResult<Json<SessionOut>> {
    let account = auth::account(depot).clone();
    let session = auth::session(depot)
        .ok_or_else(|| ApiError::unauthorized("no dashboard session; sign in"))?;
    Ok(Json(SessionOut {
        account_id: account.id,
        name: account.name,
        credits: account.credits,
        csrf_token: session.csrf_token.clone(),
        public_url: crate::state(depot).config.public_url.clone(),
    }))
}

/// Signs out: ends the session and clears the cookie.
#[endpoint(tags("dashboard"), responses((status_code = 204, description = "Signed out")))]
pub async fn sign_out(req: &mut Request, depot: &mut Depot, res: &mut Response) -> ApiResult<()> {
    if let Some(session) = auth::session(depot) {
        sessions::delete(&crate::state(depot).pool, session.id).await?;
    }
    let secure = secure_cookie(crate::state(depot), req);
    res.add_cookie(cookie(String::new(), secure, 0));
    res.status_code(StatusCode::NO_CONTENT);
    Ok(())
}

const INDEX: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const APP_CSS: &str = include_str!("../dashboard/app.css");

fn security_headers(res: &mut Response) {
    let h = res.headers_mut();
    h.insert(
        "content-security-policy",
        salvo::http::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        "x-content-type-options",
        salvo::http::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "referrer-policy",
        salvo::http::HeaderValue::from_static("no-referrer"),
    );
}

/// The dashboard shell; every dashboard path serves it and the app routes itself.
#[handler]
pub async fn index(res: &mut Response) {
    security_headers(res);
    res.headers_mut().insert(
        "cache-control",
        salvo::http::HeaderValue::from_static("no-store"),
    );
    res.render(Text::Html(INDEX));
}

#[handler]
pub async fn app_js(res: &mut Response) {
    security_headers(res);
    res.render(Text::Js(APP_JS));
}

#[handler]
pub async fn app_css(res: &mut Response) {
    security_headers(res);
    res.render(Text::Css(APP_CSS));
}

#[handler]
pub async fn to_dashboard(res: &mut Response) {
    res.render(Redirect::found("/dashboard"));
}
