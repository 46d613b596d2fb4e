//! `paperhook-worker`: runs the claim loop until SIGTERM or Ctrl-C.

use paperhook_worker::Worker;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, pool, storage) = paperhook_core::boot::start("paperhook-worker").await?;
    let worker = Worker::new(pool, storage, config)?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        paperhook_core::boot::shutdown_signal().await;
        signal.cancel();
    });
    worker.run(shutdown).await
}
