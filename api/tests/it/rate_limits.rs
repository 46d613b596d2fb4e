//! Per-API-key rate limits: 429 with Retry-After, per key, shared by every
//! API process through PostgreSQL, recovering, and off when set to 0.

use std::time::{Duration, Instant};

use paperhook_core::db::accounts::KeyCheck;
use reqwest::{Method, StatusCode};

use crate::helpers::*;

/// 1 request a second with bursts of 3: the 4th quick request is refused.
fn strict(config: &mut paperhook_core::config::Config) {
    config.rate_limit_per_sec = 1;
    config.rate_limit_burst = 3;
}

/// The burst of [`shared`], for the tests that spend one budget through
/// two ways in. The rate cannot go under 1 request a second (it is whole
/// requests), so a pause of a second on a loaded machine lets one more
/// through, and the refusal cannot be required of the very next request
/// the second way. What proves the budget shared is the total let
/// through: at most the burst plus what the time taken refilled
/// ([`at_most`]), where two budgets would let twice the burst through. A
/// burst well over any refill keeps the two apart.
const SHARED_BURST: usize = 10;

/// 1 request a second with bursts of [`SHARED_BURST`].
fn shared(config: &mut paperhook_core::config::Config) {
    config.rate_limit_per_sec = 1;
    config.rate_limit_burst = SHARED_BURST as u32;
}

/// The most a budget of 1 request a second with bursts of `burst` lets
/// through in the time since `started`: the burst, one a whole second
/// since, and one for the edges of the measure.
fn at_most(burst: usize, started: Instant) -> usize {
    burst + started.elapsed().as_secs() as usize + 1
}

/// Sends GET /v1/account with `key` until one is refused (at most `tries`):
/// returns how many passed first, and the refusal's Retry-After and body.
async fn until_limited(app: &TestApp, key: &str, tries: usize) -> (usize, u64) {
    until_refused(tries, || app.req(Method::GET, "/v1/account", key)).await
}

/// Sends the requests `request` makes until one is refused 429 (at most
/// `tries`, each else 200): returns how many passed first, and the
/// refusal's Retry-After.
async fn until_refused(
    tries: usize,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> (usize, u64) {
    for passed in 0..tries {
        let res = request().send().await.unwrap();
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry_after: u64 = res.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .expect("Retry-After is whole seconds");
            let body: serde_json::Value = res.json().await.unwrap();
            assert_error(&(StatusCode::TOO_MANY_REQUESTS, body), 429, "rate_limited");
            return (passed, retry_after);
        }
        assert_eq!(res.status(), StatusCode::OK);
    }
    panic!("{tries} requests passed a limit of 1/s without a 429");
}

#[tokio::test]
async fn a_key_over_its_limit_gets_429_then_recovers() {
    let app = TestApp::spawn_with(StorageKind::Fs, strict).await;
    let (account, key) = app.account(10).await;
    let (_, other_account_key) = app.account(10).await;
    let second_key = match paperhook_core::db::accounts::create_key(&app.pool, account, 50)
        .await
        .unwrap()
    {
        paperhook_core::db::accounts::CreatedKey::Created(key) => key.key,
        _ => panic!("no second key"),
    };

    // The burst passes (time refills the budget meanwhile, so maybe a few
    // more), then the key is refused with a Retry-After of about a second.
    let (passed, retry_after) = until_limited(&app, &key, 10).await;
    assert!(passed >= 3, "only {passed} requests passed a burst of 3");
    assert!(
        (1..=2).contains(&retry_after),
        "Retry-After {retry_after} s"
    );
    // Every endpoint behind the key is refused, writes too.
    let got = send(
        app.req(Method::POST, "/v1/templates", &key)
            .json(&example_template()),
    )
    .await;
    assert_error(&got, 429, "rate_limited");

    // Other keys, of this account and of another, have their own budgets.
    for other in [&second_key, &other_account_key] {
        let (s, b) = send(app.req(Method::GET, "/v1/account", other)).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    // A wrong secret behind the limited key's prefix is still 401, not 429.
    let tampered = tamper(&key);
    let got = send(app.req(Method::GET, "/v1/account", &tampered)).await;
    assert_error(&got, 401, "unauthorized");

    // The budget refills: the key is served again within Retry-After (plus
    // scheduling slack), polled rather than slept.
    let refused_at = Instant::now();
    let deadline = refused_at + Duration::from_secs(retry_after) + Duration::from_secs(3);
    loop {
        let (s, _) = send(app.req(Method::GET, "/v1/account", &key)).await;
        if s == StatusCode::OK {
            break;
        }
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        assert!(Instant::now() < deadline, "the limit did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_budget_is_shared_by_every_api_process() {
    let app = TestApp::spawn_with(StorageKind::Fs, shared).await;
    let (_, key) = app.account(10).await;
    // A second API process on the same database, as on another machine.
    let state = paperhook_api::serve::state(app.config.clone())
        .await
        .unwrap();
    let other = TestApp::start(state, app.config.clone(), tempfile::tempdir().unwrap()).await;
    // The key's budget spent through one process is spent in the other:
    // it refuses the key too, after at most what the time since refilled
    // (see SHARED_BURST), not after a burst of its own.
    let started = Instant::now();
    let (here, _) = until_limited(&app, &key, 3 * SHARED_BURST).await;
    assert!(
        here >= SHARED_BURST,
        "only {here} requests passed a burst of {SHARED_BURST}"
    );
    let (there, _) = until_limited(&other, &key, 3 * SHARED_BURST).await;
    let most = at_most(SHARED_BURST, started);
    assert!(
        here + there <= most,
        "{here} requests passed through one process and {there} more through \
         the other, where a shared budget lets {most} through in {:?}",
        started.elapsed()
    );

    // Concurrent requests through both processes are counted exactly: of
    // 60 at once on a fresh key, the burst passes (plus one a second the
    // run takes), none is lost to a race on the key's row.
    let (_, fresh) = app.account(10).await;
    let started = Instant::now();
    let answers = futures::future::join_all((0..60).map(|i| {
        let via = if i % 2 == 0 { &app } else { &other };
        via.req(Method::GET, "/v1/account", &fresh).send()
    }))
    .await;
    let most = at_most(SHARED_BURST, started);
    let mut ok = 0;
    for res in answers {
        match res.unwrap().status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        (SHARED_BURST..=most).contains(&ok),
        "{ok} of 60 passed a burst of {SHARED_BURST}, where at most {most} may"
    );
}

#[tokio::test]
async fn the_budget_is_taken_atomically_under_contention() {
    // Straight at the database, with more connections than an API process
    // has: every check of one key queues on its row, none reads a stale
    // budget (without the row lock, about three times the burst passes).
    let app = TestApp::spawn().await;
    let (_, key) = app.account(10).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(24)
        .connect_with((*app.pool.connect_options()).clone())
        .await
        .unwrap();
    // Open every connection first, so the checks really run side by side.
    let warm = futures::future::join_all((0..24).map(|_| pool.acquire())).await;
    drop(warm);
    let limit = paperhook_core::db::accounts::RateLimit {
        per_sec: 1,
        burst: 10,
    };
    let started = Instant::now();
    let checks = futures::future::join_all(
        (0..400).map(|_| paperhook_core::db::accounts::authenticate(&pool, &key, limit)),
    )
    .await;
    let refill = started.elapsed().as_secs() as usize;
    let ok = checks
        .into_iter()
        .filter(|c| matches!(c.as_ref().unwrap(), KeyCheck::Valid(_)))
        .count();
    assert!(
        (10..=10 + refill + 1).contains(&ok),
        "{ok} of 400 passed a burst of 10 in {refill} s"
    );
}

#[tokio::test]
async fn dashboard_sessions_count_against_their_key() {
    let app = TestApp::spawn_with(StorageKind::Fs, shared).await;
    let (_, key) = app.account(10).await;
    let started = Instant::now();
    // Signing in is a request with the key: one from its budget.
    let session = sign_in(&app, &key).await;
    let (with_key, _) = until_limited(&app, &key, 3 * SHARED_BURST).await;
    // The session is refused as the key is (a 429 with Retry-After), after
    // at most what the time since refilled (see SHARED_BURST): its requests
    // take from the key's budget, not from one of their own.
    let (with_session, _) = until_refused(3 * SHARED_BURST, || {
        session.req(&app, Method::GET, "/v1/session")
    })
    .await;
    let most = at_most(SHARED_BURST, started);
    assert!(
        1 + with_key + with_session <= most,
        "a sign-in, {with_key} requests with the key and {with_session} with \
         its session passed, where one budget lets {most} through in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_limit_of_zero_never_answers_429() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| {
        c.rate_limit_per_sec = 0;
        c.rate_limit_burst = 0;
    })
    .await;
    let (_, key) = app.account(10).await;
    // Far more than any limit would allow, at once.
    let answers = futures::future::join_all(
        (0..300).map(|_| app.req(Method::GET, "/v1/account", &key).send()),
    )
    .await;
    for res in answers {
        assert_eq!(res.unwrap().status(), StatusCode::OK);
    }
    let used: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_used_at FROM api_keys")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(used.is_some(), "last_used_at is still kept");
}

#[tokio::test]
async fn the_default_limit_lets_a_batch_client_through() {
    // The shipped default (50/s, bursts of 100): a burst of 100 requests
    // from one key at once all pass.
    let app = TestApp::spawn().await;
    assert_eq!(
        (app.config.rate_limit_per_sec, app.config.rate_limit_burst),
        (50, 100)
    );
    let (_, key) = app.account(10).await;
    let answers = futures::future::join_all(
        (0..100).map(|_| app.req(Method::GET, "/v1/account", &key).send()),
    )
    .await;
    for res in answers {
        assert_eq!(res.unwrap().status(), StatusCode::OK);
    }
}

/// Signing in to the dashboard is a request made with the key: over its
/// limit it is refused like any other, so sessions cannot be minted without
/// bound.
#[tokio::test]
async fn signing_in_counts_against_the_keys_limit() {
    let app = TestApp::spawn_with(StorageKind::Fs, strict).await;
    let (_, key) = app.account(10).await;
    let sign_in = || {
        app.client
            .post(format!("{}/v1/session/sign-in", app.url))
            .json(&serde_json::json!({"api_key": key}))
            .send()
    };
    let mut passed = 0;
    let refused = loop {
        let res = sign_in().await.unwrap();
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            break res;
        }
        assert_eq!(res.status(), StatusCode::OK);
        passed += 1;
        assert!(
            passed < 10,
            "{passed} sign-ins passed a limit of 1/s with bursts of 3"
        );
    };
    assert!(passed >= 3, "only {passed} sign-ins passed a burst of 3");
    assert!(refused.headers().contains_key("retry-after"));
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(sessions, passed as i64);
}
