//! The caller's account and credit ledger.

use paperhook_core::db::accounts::{self, LedgerEntry};
use salvo::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth;
use crate::error::ApiResult;

#[derive(Serialize, ToSchema)]
pub struct AccountOut {
    account_id: Uuid,
    name: String,
    /// Credits left: one is charged per processed page.
    credits: i64,
}

/// The caller's account and credit balance.
#[endpoint(tags("account"))]
pub async fn get_account(depot: &mut Depot) -> ApiResult<Json<AccountOut>> {
    let account = auth::account(depot);
    Ok(Json(AccountOut {
        account_id: account.id,
        name: account.name.clone(),
        credits: account.credits,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct LedgerEntryOut {
    id: i64,
    /// Positive for grants, negative for charges.
    delta: i64,
    balance_after: i64,
    /// `grant` or `document`.
    reason: String,
    job_id: Option<Uuid>,
    document_id: Option<Uuid>,
    created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct LedgerPage {
    entries: Vec<LedgerEntryOut>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    next_before: Option<i64>,
}

impl From<LedgerEntry> for LedgerEntryOut {
    fn from(e: LedgerEntry) -> Self {
        LedgerEntryOut {
            id: e.id,
            delta: e.delta,
            balance_after: e.balance_after,
            reason: e.reason,
            job_id: e.job_id,
            document_id: e.document_id,
            created_at: e.created_at,
        }
    }
}

/// `?limit=&before=` paging of the ledger.
#[derive(Debug, Deserialize, ToParameters)]
#[salvo(parameters(default_parameter_in = Query))]
pub struct LedgerQuery {
    /// Entries per page, 1-200 (default 50; others: `422 invalid_limit`).
    limit: Option<i64>,
    /// The `next_before` of the previous page: only entries older than it.
    before: Option<i64>,
}

/// Credit movements, newest first, paged with `limit` and `before`.
#[endpoint(tags("account"))]
pub async fn get_ledger(depot: &mut Depot, query: LedgerQuery) -> ApiResult<Json<LedgerPage>> {
    let account_id = auth::account(depot).id;
    let limit = super::page_limit(query.limit, "before")?;
    let before = query.before;
    let state = crate::state(depot);
    let entries = accounts::ledger(&state.pool, account_id, before, limit).await?;
    let next_before = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(LedgerPage {
        entries: entries.into_iter().map(Into::into).collect(),
        next_before,
    }))
}
