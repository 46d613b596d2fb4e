//! Running the server: bind, serve, and stop gracefully on SIGTERM or Ctrl-C.

use std::net::SocketAddr;

use anyhow::Context;
use paperhook_core::config::Config;
use paperhook_core::storage::Storage;
use salvo::conn::TcpListener;
use salvo::prelude::*;
use salvo::server::ServerHandle;

use crate::AppState;

/// Builds the state from configuration (pool, migrations, storage).
pub async fn state(config: Config) -> anyhow::Result<AppState> {
    paperhook_core::metrics::init("paperhook-api");
    let pool = paperhook_core::db::pool(&config)?;
    if config.migrate_on_start {
        paperhook_core::db::migrate(&pool)
            .await
            .context("migrating the database (is PostgreSQL running? see DATABASE_URL)")?;
    }
    let storage = Storage::open(&config, &pool).await?;
    AppState::new(pool, storage, config)
}

/// A bound server: its address and a handle to stop it.
pub struct Running {
    pub addr: SocketAddr,
    /// Where `/metrics` is served when `metrics_addr` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub handle: ServerHandle,
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds `addr` (port 0 picks a free port) and serves in a background task;
/// `/metrics` on `metrics_addr` instead when it is set.
pub async fn start(state: AppState, addr: &str) -> anyhow::Result<Running> {
    let metrics_addr = match state.config.metrics_addr.as_str() {
        "" => None,
        at => Some(
            paperhook_core::metrics::serve(at, Some(state.pool.clone()))
                .await
                .with_context(|| format!("serving metrics on {at}"))?,
        ),
    };
    let acceptor = TcpListener::new(addr.to_owned())
        .try_bind()
        .await
        .with_context(|| format!("binding {addr}"))?;
    let addr = acceptor.local_addr()?;
    let server = Server::new(acceptor);
    let handle = server.handle();
    let service = crate::service(state);
    let task = tokio::spawn(server.serve(service));
    Ok(Running {
        addr,
        metrics_addr,
        handle,
        task,
    })
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let addr = config.api_addr.clone();
    let state = state(config).await?;
    let config = state.config.clone();
    let running = start(state, &addr).await?;
    tracing::info!(addr = %running.addr, "paperhook-api listening");
    if let Some(at) = running.metrics_addr {
        tracing::info!(addr = %at, "metrics on /metrics");
    }
    let handle = running.handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop_gracefully(&handle, &config);
    });
    running.task.await?;
    Ok(())
}

/// Stops accepting connections, lets the requests in flight finish for
/// `api_shutdown_grace_secs`, then closes what is still open. A
/// supervisor's own wait (compose's `stop_grace_period`, Kubernetes'
/// `terminationGracePeriodSeconds`) must be longer, or it kills first.
pub fn stop_gracefully(handle: &ServerHandle, config: &Config) {
    let grace = config.api_shutdown_grace();
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: finishing requests in flight"
    );
    handle.stop_graceful(grace);
}

pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
