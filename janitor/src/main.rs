//! `paperhook-janitor`: runs retention passes until SIGTERM or Ctrl-C.

use paperhook_janitor::Janitor;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, pool, storage) = paperhook_core::boot::start("paperhook-janitor").await?;
    let janitor = Janitor {
        pool,
        storage,
        config,
    };
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        paperhook_core::boot::shutdown_signal().await;
        signal.cancel();
    });
    janitor.run(shutdown).await
}
