//! `paperhook-janitor`: runs retention passes until SIGTERM or Ctrl-C.

use anyhow::Context;
use paperhook_core::config::{self, Config};
use paperhook_core::db;
use paperhook_core::storage::Storage;
use paperhook_janitor::Janitor;
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
    let janitor = Janitor {
        pool,
        storage,
        config,
    };
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        signal.cancel();
    });
    janitor.run(shutdown).await
}
