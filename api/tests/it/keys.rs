//! API keys per account: at most `max_api_keys_per_account` not revoked,
//! counted one creation after another across API processes.

use reqwest::{Method, StatusCode};

use crate::helpers::*;

async fn active_keys(app: &TestApp, account: uuid::Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL")
        .bind(account)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_account_holds_at_most_max_api_keys_per_account() {
    use paperhook_api::admin::{AdminCommand, run};
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.max_api_keys_per_account = 3).await;
    let (account, key) = app.account(0).await;
    let create = || send(app.req(Method::POST, "/v1/api-keys", &key));
    let mut made = Vec::new();
    for _ in 0..2 {
        let (s, body) = create().await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        made.push(body["prefix"].as_str().unwrap().to_owned());
    }
    let got = create().await;
    assert_error(&got, 422, "too_many_api_keys");
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains('3') && message.contains("revoke"),
        "{message}"
    );
    // The admin command counts the same keys.
    let err = run(
        AdminCommand::CreateKey { account },
        &app.pool,
        None,
        &app.config,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("revoke"), "{err}");
    assert_eq!(active_keys(&app, account).await, 3);
    // A revoked key does not count.
    let (s, _) = send(app.req(
        Method::POST,
        &format!("/v1/api-keys/{}/revoke", made[0]),
        &key,
    ))
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, body) = create().await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_error(&create().await, 422, "too_many_api_keys");

    // Many at once, through two API processes: no more than the limit.
    let (other, other_key) = app.account(0).await;
    let second = TestApp::start(
        paperhook_api::serve::state(app.config.clone())
            .await
            .unwrap(),
        app.config.clone(),
        tempfile::tempdir().unwrap(),
    )
    .await;
    let answers = futures::future::join_all((0..10).map(|i| {
        let through = if i % 2 == 0 { &app } else { &second };
        send(through.req(Method::POST, "/v1/api-keys", &other_key))
    }))
    .await;
    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    for got in answers.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_error(got, 422, "too_many_api_keys");
    }
    assert_eq!(created, 2);
    assert_eq!(active_keys(&app, other).await, 3);
}

/// A creation waits for another one's transaction (the account's row is
/// locked), then counts the key it made.
#[tokio::test]
async fn a_key_creation_counts_the_keys_of_one_committing_meanwhile() {
    let app = TestApp::spawn_with(StorageKind::Fs, |c| c.max_api_keys_per_account = 2).await;
    let (account, key) = app.account(0).await;
    // Another creation, as far as its insert, not yet committed.
    let mut other = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
        .bind(account)
        .execute(&mut *other)
        .await
        .unwrap();
    let new = paperhook_core::crypto::generate_api_key();
    sqlx::query("INSERT INTO api_keys (id, account_id, prefix, key_hash) VALUES ($1, $2, $3, $4)")
        .bind(uuid::Uuid::now_v7())
        .bind(account)
        .bind(&new.prefix)
        .bind(&new.hash)
        .execute(&mut *other)
        .await
        .unwrap();
    let create = tokio::spawn(send(app.req(Method::POST, "/v1/api-keys", &key)));
    paperhook_core::testing::waiting_for_a_lock(&app.pool, "%FOR NO KEY UPDATE%", "the creation")
        .await;
    other.commit().await.unwrap();
    assert_error(&create.await.unwrap(), 422, "too_many_api_keys");
    assert_eq!(active_keys(&app, account).await, 2);
}
