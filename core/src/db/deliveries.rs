//! Webhook deliveries (one per document, `message_id` stable across
//! retries) and the record of every attempt.

use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgExecutor};
use uuid::Uuid;

use crate::queue;

#[derive(Debug, Clone, FromRow)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub message_id: String,
    pub account_id: Uuid,
    pub job_id: Uuid,
    pub document_id: Uuid,
    pub state: String,
    pub payload: Json<serde_json::Value>,
    pub attempts: i32,
    /// When its document finished.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Its last 2xx; None until it was first delivered.
    pub delivered_at: Option<chrono::DateTime<chrono::Utc>>,
    /// How many times it was queued again on request (see [`record`]).
    pub redeliveries: i32,
}

/// Who sends a new delivery: any worker through the queue, or the worker
/// creating it, right after its commit; and how many times its task may be
/// claimed (`task_max_attempts`).
#[derive(Debug, Clone, Copy)]
pub enum Sender<'a> {
    Queue {
        max_attempts: i32,
    },
    Claimed {
        worker: &'a str,
        lease: std::time::Duration,
        max_attempts: i32,
    },
}

/// A delivery's `webhook-id`, the same for every attempt.
fn message_id(id: Uuid) -> String {
    format!("msg_{}", id.simple())
}

/// Creates the delivery of a finished document and its task (once per
/// document); returns the task when `sender` claimed it.
pub async fn create(
    tx: &mut PgConnection,
    account_id: Uuid,
    job_id: Uuid,
    document_id: Uuid,
    payload: &serde_json::Value,
    sender: Sender<'_>,
) -> sqlx::Result<Option<queue::Task>> {
    let id = Uuid::now_v7();
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (id, message_id, account_id, job_id, document_id, payload)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (document_id) DO NOTHING RETURNING id",
    )
    .bind(id)
    .bind(message_id(id))
    .bind(account_id)
    .bind(job_id)
    .bind(document_id)
    .bind(Json(payload))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = inserted else {
        return Ok(None);
    };
    match sender {
        Sender::Queue { max_attempts } => {
            queue::enqueue(tx, queue::kind::DELIVERY, id, None, max_attempts).await?;
            Ok(None)
        }
        Sender::Claimed {
            worker,
            lease,
            max_attempts,
        } => {
            queue::enqueue_claimed(tx, queue::kind::DELIVERY, id, worker, lease, max_attempts).await
        }
    }
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<DeliveryRow>> {
    sqlx::query_as(
        "SELECT id, message_id, account_id, job_id, document_id, state, payload, attempts,
                created_at, delivered_at, redeliveries
         FROM webhook_deliveries WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

/// One attempt as it is recorded.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub response_excerpt: Option<String>,
    /// timeout | dns | connect | tls | http | refused
    pub error_class: Option<&'static str>,
    pub error_message: Option<String>,
}

/// Records an attempt of the delivery read as `read`, and unless it was
/// queued again on request since (its `redeliveries` changed), counts the
/// attempt and moves the delivery to `state` (pending | delivered | failed
/// | gone). Returns the delivery's state now, or `None` when it was queued
/// again: it is left pending with its fresh schedule, for the caller to
/// send again. A delivery that failed meanwhile (its results expired or
/// were deleted while the attempt was out) stays failed unless the
/// attempt delivered it: a retry would only fail it again.
pub async fn record(
    tx: &mut PgConnection,
    read: &DeliveryRow,
    attempt: &Attempt,
    state: &str,
) -> sqlx::Result<Option<String>> {
    let id = read.id;
    // The delivery first: an expiry or deletion of the job's data locks it
    // (`expire`) before it forgets the excerpts, so this waits for that to
    // commit and the insert below, a new statement, sees it done. (Inserting
    // first decided the excerpt on a snapshot taken before the wait.)
    sqlx::query("SELECT 1 FROM webhook_deliveries WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    // An attempt that ends after its job's results expired or its data was
    // deleted (`DELETE` waits for it) keeps no excerpt: the receiver may
    // echo what it was sent.
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, status_code, latency_ms, response_excerpt,
                                       error_class, error_message)
         VALUES ($1, $2, $3,
                 CASE WHEN (SELECT j.data_deleted_at IS NULL AND j.results_expired_at IS NULL
                            FROM webhook_deliveries d
                            JOIN jobs j ON j.id = d.job_id WHERE d.id = $1)
                      THEN $4 END,
                 $5, $6)",
    )
    .bind(id)
    .bind(attempt.status_code)
    .bind(attempt.latency_ms)
    .bind(&attempt.response_excerpt)
    .bind(attempt.error_class)
    .bind(&attempt.error_message)
    .execute(&mut *tx)
    .await?;
    sqlx::query_scalar(
        "UPDATE webhook_deliveries SET attempts = attempts + 1,
                state = CASE WHEN state = 'pending' OR $2 = 'delivered' THEN $2 ELSE state END,
                delivered_at = CASE WHEN $2 = 'delivered' THEN now() ELSE delivered_at END
         WHERE id = $1 AND redeliveries = $3
         RETURNING state",
    )
    .bind(id)
    .bind(state)
    .bind(read.redeliveries)
    .fetch_optional(&mut *tx)
    .await
}

/// Creates and queues, for any worker, the deliveries of documents that
/// finished as their ZIP was unpacked (an entry that could not be
/// processed), each once: one statement and one NOTIFY for all of them.
/// Their tasks may be claimed `max_attempts` times.
pub async fn create_many(
    tx: &mut PgConnection,
    account_id: Uuid,
    job_id: Uuid,
    documents: Vec<(Uuid, serde_json::Value)>,
    max_attempts: i32,
) -> sqlx::Result<()> {
    if documents.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = documents.iter().map(|_| Uuid::now_v7()).collect();
    let message_ids: Vec<String> = ids.iter().copied().map(message_id).collect();
    let (document_ids, payloads): (Vec<Uuid>, Vec<serde_json::Value>) =
        documents.into_iter().unzip();
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (id, message_id, account_id, job_id, document_id, payload)
         SELECT d.id, d.message_id, $3, $4, d.document_id, d.payload
         FROM unnest($1::uuid[], $2::text[], $5::uuid[], $6::jsonb[])
              AS d(id, message_id, document_id, payload)
         ON CONFLICT (document_id) DO NOTHING RETURNING id",
    )
    .bind(&ids)
    .bind(&message_ids)
    .bind(account_id)
    .bind(job_id)
    .bind(&document_ids)
    .bind(&payloads)
    .fetch_all(&mut *tx)
    .await?;
    queue::enqueue_many(tx, queue::kind::DELIVERY, &inserted, max_attempts).await
}

/// Sends every delivery of the job again, now (a fresh retry schedule, the
/// same webhook-id; one waiting for a retry no longer waits); returns how
/// many were queued. One being sent meanwhile keeps its running task: its
/// worker sends it again (see [`record`]). Each task may be claimed
/// `max_attempts` times from now.
pub async fn redeliver(
    tx: &mut PgConnection,
    job_id: Uuid,
    max_attempts: i32,
) -> sqlx::Result<u64> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, redeliveries = redeliveries + 1
         WHERE id IN (
             -- Locked in the order expire() locks them: two transactions
             -- over one job's deliveries wait for each other, never deadlock.
             SELECT id FROM webhook_deliveries WHERE job_id = $1 ORDER BY id FOR UPDATE)
         RETURNING id",
    )
    .bind(job_id)
    .fetch_all(&mut *tx)
    .await?;
    queue::requeue_now_many(tx, queue::kind::DELIVERY, &ids, max_attempts).await?;
    Ok(ids.len() as u64)
}

/// Sends again, oldest first, up to `limit` of the account's deliveries in
/// `state` (`failed` or `gone`), optionally of one template's jobs, whose
/// results have not expired; returns the ids queued. Each task may be
/// claimed `max_attempts` times from now.
pub async fn redeliver_where(
    tx: &mut PgConnection,
    account_id: Uuid,
    state: &str,
    template_id: Option<Uuid>,
    limit: i64,
    retention: std::time::Duration,
    max_attempts: i32,
) -> sqlx::Result<Vec<Uuid>> {
    // Past retention a job's results are gone, deleted by the janitor yet
    // or not.
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, redeliveries = redeliveries + 1
         WHERE id IN (
             SELECT d.id FROM webhook_deliveries d JOIN jobs j ON j.id = d.job_id
             WHERE d.account_id = $1 AND d.state = $2 AND j.results_expired_at IS NULL
               AND (j.finished_at IS NULL OR j.finished_at > now() - make_interval(secs => $5))
               AND ($3::uuid IS NULL OR j.template_id = $3)
             ORDER BY d.created_at, d.id LIMIT $4
             FOR UPDATE OF d SKIP LOCKED)
         RETURNING id",
    )
    .bind(account_id)
    .bind(state)
    .bind(template_id)
    .bind(limit)
    .bind(retention.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    queue::requeue_now_many(tx, queue::kind::DELIVERY, &ids, max_attempts).await?;
    Ok(ids)
}

/// The jobs of these deliveries, each once, oldest first.
pub async fn jobs_of(db: impl PgExecutor<'_>, ids: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT job_id FROM webhook_deliveries WHERE id = ANY($1)
         GROUP BY job_id ORDER BY min(created_at), job_id",
    )
    .bind(ids)
    .fetch_all(db)
    .await
}

/// Whether a worker holds one of the job's deliveries under a live lease:
/// it may be sending that webhook, with the payload it read, right now.
pub async fn being_sent(db: impl PgExecutor<'_>, job_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (
             SELECT 1 FROM webhook_deliveries d
             JOIN tasks t ON t.kind = 'delivery' AND t.ref_id = d.id
             WHERE d.job_id = $1 AND t.state = 'running' AND t.locked_until > now())",
    )
    .bind(job_id)
    .fetch_one(db)
    .await
}

/// Results expire (or are deleted) with their jobs: the webhook payloads
/// (which hold them) are emptied, and deliveries still waiting for a retry
/// fail, with an attempt of class `expired` saying `why`.
///
/// The deliveries are locked first (in one order, as every caller does):
/// a worker recording an attempt at the same time commits before the
/// attempt and the state here are decided, so a delivery that has just
/// been delivered stays delivered with no `expired` attempt after its 2xx.
pub async fn expire(tx: &mut PgConnection, job_ids: &[Uuid], why: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT id FROM webhook_deliveries WHERE job_id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(job_ids)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, latency_ms, error_class, error_message)
         SELECT id, 0, 'expired', $2
         FROM webhook_deliveries WHERE job_id = ANY($1) AND state = 'pending'",
    )
    .bind(job_ids)
    .bind(why)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE webhook_deliveries SET payload = '{}'::jsonb,
                state = CASE WHEN state = 'pending' THEN 'failed' ELSE state END
         WHERE job_id = ANY($1)",
    )
    .bind(job_ids)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{accounts, documents, jobs, templates};

    /// A job with one document and its pending delivery; the delivery as a
    /// worker reads it.
    async fn one_delivery(pool: &sqlx::PgPool) -> (Uuid, DeliveryRow) {
        let (account, _) = accounts::create(pool, "A", 10).await.unwrap();
        let write = templates::TemplateWrite {
            name: "t".into(),
            spec: serde_json::json!({"fields": []}),
            webhook_url: None,
            webhook_headers_enc: None,
        };
        let template = templates::insert(pool, account.id, &write, b"secret")
            .await
            .unwrap();
        let job_id = Uuid::now_v7();
        let new = jobs::NewJob {
            id: job_id,
            account_id: account.id,
            template_id: template.id,
            content_type: "application/pdf".into(),
            file_name: None,
            size_bytes: 10,
            storage_key: crate::storage::document_key(account.id, job_id),
            static_values: serde_json::json!({}),
            idempotency_key: None,
            inline_data: None,
        };
        let job = jobs::insert_and_enqueue(pool, &new, std::time::Duration::ZERO, 25)
            .await
            .unwrap()
            .unwrap();
        let doc = documents::NewDocument {
            id: Uuid::now_v7(),
            idx: 0,
            file_name: None,
            content_type: None,
            storage_key: None,
            failure: None,
        };
        let mut tx = pool.begin().await.unwrap();
        documents::insert_all(&mut tx, job.id, std::slice::from_ref(&doc))
            .await
            .unwrap();
        let payload = serde_json::json!({"fields": {"a": 1}});
        create(
            &mut tx,
            account.id,
            job.id,
            doc.id,
            &payload,
            Sender::Queue { max_attempts: 25 },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let read: DeliveryRow = sqlx::query_as(
            "SELECT id, message_id, account_id, job_id, document_id, state, payload, attempts,
                    created_at, delivered_at, redeliveries
             FROM webhook_deliveries WHERE job_id = $1",
        )
        .bind(job.id)
        .fetch_one(pool)
        .await
        .unwrap();
        (job_id, read)
    }

    /// The oldest-pending gauge ages first deliveries, not ones sent again
    /// on request (which keep their first `created_at`).
    #[tokio::test]
    async fn a_resent_delivery_does_not_age_the_backlog() {
        use crate::metrics::{WEBHOOK_OLDEST_PENDING_AGE, refresh_queue};
        let pool = crate::testing::migrated_database().await;
        let (_, read) = one_delivery(&pool).await;
        let set = |redeliveries: i32| {
            sqlx::query(
                "UPDATE webhook_deliveries SET created_at = now() - interval '20 hours',
                        redeliveries = $2 WHERE id = $1",
            )
            .bind(read.id)
            .bind(redeliveries)
            .execute(&pool)
        };
        set(0).await.unwrap();
        refresh_queue(&pool).await.unwrap();
        assert!(WEBHOOK_OLDEST_PENDING_AGE.get() >= 20 * 3600 - 60);
        set(1).await.unwrap();
        refresh_queue(&pool).await.unwrap();
        assert_eq!(WEBHOOK_OLDEST_PENDING_AGE.get(), 0);
    }

    /// A worker records a 2xx while the results expire: the expiry waits for
    /// it and leaves the delivery delivered, with no `expired` attempt after
    /// its success (it used to decide the attempt on a snapshot taken before
    /// the worker committed).
    #[tokio::test]
    async fn expiry_during_a_successful_attempt_leaves_it_delivered() {
        let pool = crate::testing::migrated_database().await;
        let (job_id, read) = one_delivery(&pool).await;

        // The worker's 2xx, recorded but not yet committed.
        let mut worker = pool.begin().await.unwrap();
        let ok = Attempt {
            status_code: Some(200),
            ..Attempt::default()
        };
        assert_eq!(
            record(&mut worker, &read, &ok, "delivered").await.unwrap(),
            Some("delivered".to_owned())
        );
        let expiry = tokio::spawn({
            let pool = pool.clone();
            async move {
                let mut tx = pool.begin().await.unwrap();
                expire(&mut tx, &[job_id], "expired while sending").await?;
                tx.commit().await
            }
        });
        // The expiry is waiting for the worker's row lock.
        crate::testing::waiting_for_a_lock(&pool, "%webhook_deliveries%", "the expiry").await;
        worker.commit().await.unwrap();
        expiry.await.unwrap().unwrap();

        let after = get(&pool, read.id).await.unwrap().unwrap();
        assert_eq!(after.state, "delivered");
        assert_eq!(
            after.payload.0,
            serde_json::json!({}),
            "the payload is emptied"
        );
        let classes = || {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT error_class FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id",
            )
            .bind(read.id)
            .fetch_all(&pool)
        };
        assert_eq!(
            classes().await.unwrap(),
            vec![None],
            "only the 2xx is recorded"
        );

        // A delivery still pending when its results expire fails, with an
        // `expired` attempt.
        sqlx::query("UPDATE webhook_deliveries SET state = 'pending' WHERE id = $1")
            .bind(read.id)
            .execute(&pool)
            .await
            .unwrap();
        let mut tx = pool.begin().await.unwrap();
        expire(&mut tx, &[job_id], "expired").await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(get(&pool, read.id).await.unwrap().unwrap().state, "failed");
        assert_eq!(
            classes().await.unwrap(),
            vec![None, Some("expired".to_owned())]
        );
    }

    /// An attempt that ends while its job's results expire (or its data is
    /// deleted) keeps no excerpt of the receiver's answer, which may echo the
    /// results: it waits for the expiry and decides after it. (It used to
    /// decide on a snapshot from before the wait and keep the excerpt the
    /// expiry had just cleared everywhere else.)
    #[tokio::test]
    async fn an_attempt_ending_during_expiry_keeps_no_excerpt() {
        let pool = crate::testing::migrated_database().await;
        let (job_id, read) = one_delivery(&pool).await;
        let delivery_id = read.id;
        // The expiry, under way: the deliveries locked, the job marked.
        let mut expiry = pool.begin().await.unwrap();
        expire(&mut expiry, &[job_id], "expired").await.unwrap();
        sqlx::query("UPDATE jobs SET results_expired_at = now() WHERE id = $1")
            .bind(job_id)
            .execute(&mut *expiry)
            .await
            .unwrap();
        let worker = tokio::spawn({
            let pool = pool.clone();
            async move {
                let answered = Attempt {
                    status_code: Some(422),
                    response_excerpt: Some(r#"{"input": {"a": 1}}"#.into()),
                    ..Attempt::default()
                };
                let mut tx = pool.begin().await?;
                let now = record(&mut tx, &read, &answered, "pending").await?;
                tx.commit().await.map(|()| now)
            }
        });
        crate::testing::waiting_for_a_lock(&pool, "%webhook_%", "the attempt").await;
        expiry.commit().await.unwrap();
        // The expiry failed the delivery: the 4xx does not make it pending
        // again (listed as retrying, holding its job's files, until a retry
        // failed it a second time).
        assert_eq!(worker.await.unwrap().unwrap(), Some("failed".to_owned()));
        assert_eq!(
            get(&pool, delivery_id).await.unwrap().unwrap().state,
            "failed"
        );
        let excerpts: Vec<(Option<i32>, Option<String>)> = sqlx::query_as(
            "SELECT a.status_code, a.response_excerpt FROM webhook_attempts a
             JOIN webhook_deliveries d ON d.id = a.delivery_id
             WHERE d.job_id = $1 AND a.error_class IS NULL",
        )
        .bind(job_id)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            excerpts,
            vec![(Some(422), None)],
            "the attempt is recorded, without the answer"
        );
    }
}
