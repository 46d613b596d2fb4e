//! `paperhook-worker`: runs the claim loop until SIGTERM or Ctrl-C.

use paperhook_worker::Worker;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, pool, storage) = paperhook_core::boot::start("paperhook-worker").await?;
    if config.worker_keep_page_buffers && !paperhook_extract::keep_page_buffers() {
        tracing::info!(
            "this C library keeps its malloc defaults: page buffers are not kept between pages"
        );
    }
    let worker = Worker::new(pool, storage, config)?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        paperhook_core::boot::shutdown_signal().await;
        signal.cancel();
    });
    // Exit at once either way: dropping the runtime would wait for every
    // blocking thread, that of an extraction released to the queue at the
    // end of the shutdown grace period included (up to its time limit, while
    // another worker does it again).
    if let Err(e) = worker.run(shutdown).await {
        tracing::error!(error = format!("{e:#}"), "paperhook-worker stopped");
        std::process::exit(1);
    }
    std::process::exit(0)
}
