//! Liveness, readiness and the API docs page.

use salvo::prelude::*;
use serde::Serialize;

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: &'static str,
    database: Option<&'static str>,
    storage: Option<&'static str>,
}

/// Liveness: the process is up.
#[endpoint(tags("health"), security())]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        database: None,
        storage: None,
    })
}

/// Readiness: the database and the document storage are reachable (503 if not).
#[endpoint(tags("health"), security(), responses((status_code = 200, body = Health), (status_code = 503, body = Health)))]
pub async fn readyz(depot: &mut Depot, res: &mut Response) {
    let state = crate::state(depot);
    let db_ok = sqlx::query("SELECT 1").execute(&state.pool).await.is_ok();
    let storage_ok = state.storage.check().await.is_ok();
    let ok = db_ok && storage_ok;
    let word = |b: bool| if b { "ok" } else { "unavailable" };
    if !ok {
        res.status_code(StatusCode::SERVICE_UNAVAILABLE);
    }
    res.render(Json(Health {
        status: word(ok),
        database: Some(word(db_ok)),
        storage: Some(word(storage_ok)),
    }));
}

/// A small, dependency-free page that renders /openapi.json.
#[handler]
pub async fn docs_page(res: &mut Response) {
    res.render(Text::Html(include_str!("docs.html")));
}
