//! Start-up shared by the worker and the janitor: configuration, logs,
//! the database (migrated when configured), storage and the metrics endpoint.

use anyhow::Context;
use sqlx::PgPool;

use crate::config::{self, Config};
use crate::storage::Storage;

/// Loads and checks the configuration, connects, migrates and opens storage;
/// serves `/metrics` on `metrics_addr` when it is set.
pub async fn start(binary: &str) -> anyhow::Result<(Config, PgPool, Storage)> {
    let config = Config::load().context("loading configuration")?;
    config::init_logging(&config);
    config.validate().context("checking configuration")?;
    let pool = crate::db::pool(&config)?;
    if config.migrate_on_start {
        crate::db::migrate_when_reachable(&pool).await?;
    }
    let storage = Storage::open(&config, &pool).await?;
    crate::metrics::init(binary);
    if !config.metrics_addr.is_empty() {
        let addr = crate::metrics::serve(&config.metrics_addr, Some(pool.clone()))
            .await
            .with_context(|| format!("serving metrics on {}", config.metrics_addr))?;
        tracing::info!(%addr, "metrics on /metrics");
    }
    Ok((config, pool, storage))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested");
}
