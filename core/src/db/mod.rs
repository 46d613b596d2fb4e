//! PostgreSQL access: the pool, migrations, and the queries of each table,
//! next to their row types.

pub mod accounts;
pub mod batch;
pub mod deliveries;
pub mod documents;
pub mod jobs;
#[cfg(test)]
mod migration_rules;
pub mod sessions;
pub mod templates;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::Config;

/// The migrations of this version, strict: it refuses a database with a
/// migration applied that it does not know (one of a newer version). The
/// explicit `paperhook-api migrate` runs it ([`migrate_strict`]).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// [`MIGRATOR`] for start-up: an applied migration this version does not
/// know is a newer version's, during a rolling upgrade or after a rollback,
/// and this version's processes keep working beside it (its migrations
/// only add), so it is named in a warning instead of stopping the process.
static START_UP_MIGRATOR: std::sync::LazyLock<sqlx::migrate::Migrator> =
    std::sync::LazyLock::new(|| {
        let mut migrator =
            sqlx::migrate::Migrator::with_migrations(MIGRATOR.iter().cloned().collect());
        migrator.set_ignore_missing(true);
        migrator
    });

/// A lazy pool: processes start (and answer 503) while the database is down,
/// and reconnect on their own when it is back.
pub fn pool(config: &Config) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = config
        .database_url
        .expose_secret()
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid database_url: {e}"))?;
    let (names, values): (Vec<&str>, Vec<String>) =
        config.db_session_settings().into_iter().unzip();
    Ok(PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .acquire_timeout(config.db_acquire_timeout())
        .idle_timeout(Some(Duration::from_secs(300)))
        .after_connect(move |conn, _| {
            let (names, values) = (names.clone(), values.clone());
            Box::pin(async move {
                if !names.is_empty() {
                    // By SET rather than startup options, which PgBouncer refuses.
                    sqlx::query(
                        "SELECT set_config(name, value, false)
                         FROM unnest($1::text[], $2::text[]) AS s(name, value)",
                    )
                    .bind(names)
                    .bind(values)
                    .execute(conn)
                    .await
                    .inspect_err(|e| {
                        // The pool only reports that it timed out.
                        tracing::error!(error = %e, "setting the database session's timeouts failed (db_idle_in_transaction_timeout_secs, db_keepalive_secs; 0 leaves them to the server)");
                    })?;
                }
                Ok(())
            })
        })
        .connect_lazy_with(options.application_name("paperhook")))
}

/// Applies pending migrations at start-up (`migrate_on_start`): migrations
/// applied by a newer version are left alone and named in a warning.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    START_UP_MIGRATOR
        .run(pool)
        .await
        .map_err(|e| anyhow::anyhow!("applying migrations: {e}"))?;
    warn_of_unknown_migrations(pool).await;
    Ok(())
}

/// Applies pending migrations, refusing a database on which a migration
/// this version does not know was applied (`paperhook-api migrate`: an
/// operator running an older version's migrations by mistake hears of it).
pub async fn migrate_strict(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::VersionMissing(version) => anyhow::anyhow!(
            "applying migrations: migration {version} was applied by a newer version of Paperhook \
             (this version's processes still start beside it, ignoring it); \
             run the newest version's `paperhook-api migrate`"
        ),
        e => anyhow::anyhow!("applying migrations: {e}"),
    })
}

/// The applied migrations [`MIGRATOR`] does not know, oldest first.
pub async fn unknown_migrations(pool: &PgPool) -> sqlx::Result<Vec<i64>> {
    let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    sqlx::query_scalar(
        "SELECT version FROM _sqlx_migrations WHERE NOT (version = ANY($1)) ORDER BY version",
    )
    .bind(known)
    .fetch_all(pool)
    .await
}

async fn warn_of_unknown_migrations(pool: &PgPool) {
    match unknown_migrations(pool).await {
        Ok(versions) if versions.is_empty() => {}
        Ok(versions) => tracing::warn!(
            ?versions,
            "the database has migrations this version does not know, applied by a newer version \
             (a rolling upgrade or a rollback): starting anyway"
        ),
        Err(e) => tracing::warn!(error = %e, "listing the applied migrations failed"),
    }
}

/// [`migrate`], waiting while the database is unavailable (retrying with a
/// backoff up to 5 s): a worker or janitor restarted during a database
/// outage starts when it is back instead of exiting. Other errors end it.
pub async fn migrate_when_reachable(pool: &PgPool) -> anyhow::Result<()> {
    let mut wait = Duration::from_millis(250);
    loop {
        match START_UP_MIGRATOR.run(pool).await {
            Ok(()) => {
                warn_of_unknown_migrations(pool).await;
                return Ok(());
            }
            Err(sqlx::migrate::MigrateError::Execute(e)) if is_unavailable(&e) => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "database unavailable; waiting to migrate");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(anyhow::anyhow!("applying migrations: {e}")),
        }
    }
}

/// True when the error means the database cannot be reached right now
/// (as opposed to a bad query): callers answer 503 and retry later.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-5: shutdown, crash, cannot
            // connect now, idle session timeout; 25P03: the server ended a
            // transaction left idle (db_idle_in_transaction_timeout_secs).
            code.starts_with("08") || code.starts_with("57P") || code == "25P03"
        }),
        _ => false,
    }
}

/// Whether a statement may have committed although it failed: the
/// connection broke after it was sent, so only the database knows. (No
/// connection in time, or an error the database answered, is a statement
/// that did not run.)
pub fn outcome_unknown(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed)
}

pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// The database's clock: the one `finished_at`, leases and due times are
/// stamped with, which every process judges them by (a host's own clock
/// may be off).
pub async fn now(db: impl sqlx::PgExecutor<'_>) -> sqlx::Result<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("SELECT now()").fetch_one(db).await
}

/// A read-only transaction whose statements all see the database as it was
/// at its first: reads that must agree go through it (a job and its
/// results, which an expiry or a deletion committing between two
/// statements would otherwise show as a job with results but none).
pub async fn snapshot(pool: &PgPool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::postgres::PgPoolOptions;

    use super::migrate_when_reachable;

    fn pool(url: &str) -> sqlx::PgPool {
        PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(300))
            .connect_lazy(url)
            .unwrap()
    }

    #[tokio::test]
    async fn start_up_waits_for_an_unreachable_database() {
        // Nothing listens on port 9: the database is "down"; start-up keeps waiting.
        let waiting = tokio::time::timeout(
            Duration::from_secs(2),
            migrate_when_reachable(&pool("postgres://postgres@127.0.0.1:9/x")),
        )
        .await;
        assert!(waiting.is_err(), "gave up: {waiting:?}");
    }

    /// A database a newer version has migrated (a rolling upgrade, a
    /// rollback): this version's processes start, `paperhook-api migrate`
    /// of this version says why it stops.
    #[tokio::test]
    async fn start_up_accepts_a_newer_versions_migration() {
        let pool = crate::testing::migrated_database().await;
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (99991231000000, 'from a newer version', true, '\\x00'::bytea, 0)",
        )
        .execute(&pool)
        .await
        .unwrap();

        super::migrate(&pool).await.unwrap();
        migrate_when_reachable(&pool).await.unwrap();
        assert_eq!(
            super::unknown_migrations(&pool).await.unwrap(),
            vec![99991231000000]
        );
        let strict = super::migrate_strict(&pool).await.unwrap_err();
        assert!(
            strict
                .to_string()
                .contains("99991231000000 was applied by a newer version"),
            "{strict:#}"
        );
    }

    #[tokio::test]
    async fn start_up_fails_at_once_on_other_errors() {
        // A reachable server without that database: waiting cannot help.
        let admin = crate::testing::admin_database_url();
        let (base, _) = admin.rsplit_once('/').unwrap();
        let missing = format!("{base}/paperhook_no_such_database");
        let failed = tokio::time::timeout(
            Duration::from_secs(10),
            migrate_when_reachable(&pool(&missing)),
        )
        .await
        .expect("returned at once");
        assert!(failed.is_err());
    }

    fn config(url: &str, dir: &std::path::Path, settings: &[(&str, u64)]) -> crate::config::Config {
        let figment = settings.iter().fold(
            crate::testing::figment(url, crate::testing::TestStorage::Fs(dir)),
            |f, (key, value)| f.merge((*key, *value)),
        );
        crate::testing::extract(figment)
    }

    #[tokio::test]
    async fn a_transaction_left_idle_by_its_client_loses_its_locks() {
        let url = crate::testing::fresh_database().await;
        let dir = tempfile::tempdir().unwrap();
        let other = sqlx::PgPool::connect(&url).await.unwrap();
        let pool = super::pool(&config(
            &url,
            dir.path(),
            &[("db_idle_in_transaction_timeout_secs", 2)],
        ))
        .unwrap();
        let lock_free = || async {
            sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_xact_lock(7)")
                .fetch_one(&other)
                .await
                .unwrap()
        };

        // Busy past the limit: only waiting for the client counts.
        let mut busy = pool.begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock(7), pg_sleep(2.5)")
            .execute(&mut *busy)
            .await
            .unwrap();
        assert!(!lock_free().await);
        busy.commit().await.unwrap();

        // A client that stops mid-transaction (frozen, or its connection
        // silently gone): the server ends the transaction.
        let mut idle = pool.begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock(7)")
            .execute(&mut *idle)
            .await
            .unwrap();
        assert!(!lock_free().await);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !lock_free().await {
            assert!(
                std::time::Instant::now() < deadline,
                "the idle transaction kept its lock"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ended = sqlx::query("SELECT 1")
            .execute(&mut *idle)
            .await
            .unwrap_err();
        assert!(super::is_unavailable(&ended), "{ended:?}");
        drop(idle);
        sqlx::query("SELECT 1").execute(&pool).await.unwrap();
    }

    #[tokio::test]
    async fn every_session_tells_the_server_when_to_give_up_on_it() {
        let url = crate::testing::fresh_database().await;
        let dir = tempfile::tempdir().unwrap();
        let plain = sqlx::PgPool::connect(&url).await.unwrap();
        let settings = |pool: sqlx::PgPool| async move {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT name, setting FROM pg_settings
                 WHERE name IN ('idle_in_transaction_session_timeout', 'tcp_keepalives_idle',
                                'tcp_keepalives_interval', 'tcp_keepalives_count', 'tcp_user_timeout')
                 ORDER BY name",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            rows
        };
        let set =
            settings(super::pool(&config(&url, dir.path(), &[("db_keepalive_secs", 90)])).unwrap())
                .await;
        let expected = [
            ("idle_in_transaction_session_timeout", "60000"),
            ("tcp_keepalives_count", "3"),
            ("tcp_keepalives_idle", "45"),
            ("tcp_keepalives_interval", "15"),
            ("tcp_user_timeout", "90000"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        // Over a Unix socket the server reads the TCP ones as 0.
        let tcp: bool = sqlx::query_scalar("SELECT inet_client_addr() IS NOT NULL")
            .fetch_one(&plain)
            .await
            .unwrap();
        if tcp {
            assert_eq!(set, expected);
        } else {
            assert_eq!(set[0], expected[0]);
        }
        // At 0 the server's own settings stay.
        let server = settings(plain.clone()).await;
        let off = settings(
            super::pool(&config(
                &url,
                dir.path(),
                &[
                    ("db_keepalive_secs", 0),
                    ("db_idle_in_transaction_timeout_secs", 0),
                ],
            ))
            .unwrap(),
        )
        .await;
        assert_eq!(off, server);
        assert_ne!(off, expected);
    }

    /// Reads through a snapshot agree with each other: a row deleted by
    /// another session after the first read is still there for the second.
    #[tokio::test]
    async fn reads_through_a_snapshot_see_one_moment() {
        let pool = crate::testing::migrated_database().await;
        let (account, _) = crate::db::accounts::create(&pool, "A", 10).await.unwrap();
        let count = "SELECT count(*) FROM accounts WHERE id = $1";
        let mut snapshot = super::snapshot(&pool).await.unwrap();
        let before: i64 = sqlx::query_scalar(count)
            .bind(account.id)
            .fetch_one(&mut *snapshot)
            .await
            .unwrap();
        sqlx::query("DELETE FROM accounts WHERE id = $1")
            .bind(account.id)
            .execute(&pool)
            .await
            .unwrap();
        let after: i64 = sqlx::query_scalar(count)
            .bind(account.id)
            .fetch_one(&mut *snapshot)
            .await
            .unwrap();
        assert_eq!((before, after), (1, 1));
        let write = sqlx::query("DELETE FROM accounts")
            .execute(&mut *snapshot)
            .await;
        assert!(write.is_err(), "a snapshot only reads");
    }
}
