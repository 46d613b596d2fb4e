//! `paperhook-worker`: runs the claim loop until SIGTERM or Ctrl-C.

use anyhow::Context;
use paperhook_core::config::{self, Config};
use paperhook_core::db;
use paperhook_core::storage::Storage;
use paperhook_worker::Worker;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load().context("loading configuration")?;
    config::init_logging(&config);
    config.validate().context("checking configuration")?;
    let pool = db::pool(&config)?;
    if config.migrate_on_start {
        db::migrate(&pool).await?;
    }
    let storage = Storage::from_config(&config).await?;
    paperhook_core::metrics::init("paperhook-worker");
    if !config.metrics_addr.is_empty() {
        let addr = paperhook_core::metrics::serve(&config.metrics_addr, Some(pool.clone()))
            .await
            .with_context(|| format!("serving metrics on {}", config.metrics_addr))?;
        tracing::info!(%addr, "metrics on /metrics");
    }
    let worker = Worker::new(pool, storage, config)?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal.cancel();
    });
    worker.run(shutdown).await
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested");
}
