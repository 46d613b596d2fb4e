//! What the janitor keeps of webhook deliveries, and for how long.

use crate::helpers::*;

/// Webhook attempts (what each receiver answered) are kept for
/// `webhook_attempts_retention_secs`, then deleted by the janitor; the
/// delivery itself stays.
#[tokio::test]
async fn webhook_attempts_are_deleted_after_their_retention() {
    let app = TestApp::spawn_with(StorageKind::Fs, |_| {}).await;
    let hook = Receiver::start().await;
    hook.answers.lock().unwrap().extend([500]);
    let (_, key) = app.account(5).await;
    let (template, _) = app.template(&key, Some(&hook.url)).await;
    let job = app
        .submit(&key, template, "invoice.pdf", example_pdf())
        .await;
    app.drain().await;
    assert_eq!(hook.received().len(), 2, "a 500, then the delivery");
    let attempts = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_attempts")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    assert_eq!(attempts().await, 2);

    let janitor = app.janitor();
    let retention = chrono::Duration::from_std(app.config.webhook_attempts_retention()).unwrap();
    // A day short of the retention: kept.
    let early = chrono::Utc::now() + retention - chrono::Duration::days(1);
    let report = janitor.run_once(early).await.unwrap();
    assert_eq!(report.attempts_deleted, 0, "{report:?}");
    assert_eq!(attempts().await, 2);
    // Past it: gone.
    let late = chrono::Utc::now() + retention + chrono::Duration::minutes(1);
    let report = janitor.run_once(late).await.unwrap();
    assert_eq!(report.attempts_deleted, 2, "{report:?}");
    assert_eq!(attempts().await, 0);
    let state: String =
        sqlx::query_scalar("SELECT state FROM webhook_deliveries WHERE job_id = $1")
            .bind(job)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(state, "delivered");
}
