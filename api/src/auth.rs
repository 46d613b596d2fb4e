//! API key authentication from the `x-auth` header.

use paperhook_core::db::accounts::{self, Account};
use salvo::Writer;
use salvo::prelude::*;

use crate::error::ApiError;

/// Puts the caller's [`Account`] in the depot, or answers 401.
#[handler]
pub async fn require_key(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
    ctrl: &mut FlowCtrl,
) {
    match authenticate(req, depot).await {
        Ok(account) => {
            depot.insert_typed(account);
        }
        Err(err) => {
            err.write(req, depot, res).await;
            ctrl.skip_rest();
        }
    }
}

async fn authenticate(req: &Request, depot: &Depot) -> Result<Account, ApiError> {
    let Some(value) = req.headers().get("x-auth") else {
        return Err(ApiError::unauthorized(
            "missing API key: send it in the x-auth header",
        ));
    };
    let key = value.to_str().unwrap_or_default().trim();
    let state = crate::state(depot);
    accounts::authenticate(&state.pool, key)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))
}

/// The authenticated account of this request.
pub fn account(depot: &Depot) -> &Account {
    depot
        .get_typed::<Account>()
        .expect("require_key runs before every authenticated handler")
}
