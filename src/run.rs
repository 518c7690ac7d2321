//! `mcp-connector run`: the operator in a cluster.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::routing::get;

use crate::clock::Clock;
use crate::grants::MemoryGrants;
use crate::keys::KeyStore;
use crate::oauth::{AppState, router};
use crate::reconcile::{self, Context};

/// How `run` was asked to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// OAuth server and /mcp.
    pub listen: SocketAddr,
    /// Metrics and probes.
    pub admin_listen: SocketAddr,
    /// Watch one namespace only.
    pub namespace: Option<String>,
}

/// Why `run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No cluster configuration was found.
    #[error("no cluster access: {0}")]
    Kube(#[from] kube::Error),
    /// A listener could not be bound.
    #[error("could not listen: {0}")]
    Listen(#[from] std::io::Error),
}

/// Runs the operator until SIGTERM or Ctrl-C.
pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    let client = kube::Client::try_default().await?;
    let store = KeyStore::new();
    let clock = Clock::system();

    let instance = std::env::var("POD_NAME").ok();
    let ctx = Arc::new(Context::new(client, store.clone(), clock.clone(), instance));
    let state = AppState::new(store.clone(), Arc::new(MemoryGrants::new()), clock);

    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let admin = tokio::net::TcpListener::bind(opts.admin_listen).await?;
    tracing::info!(listen = %opts.listen, admin = %opts.admin_listen, "mcp-connector running");

    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let admin_app = axum::Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        );

    tokio::select! {
        _ = reconcile::run(ctx, opts.namespace, shutdown_signal()) => {}
        r = axum::serve(no_delay(listener), app).with_graceful_shutdown(shutdown_signal()) => r?,
        r = axum::serve(admin, admin_app).with_graceful_shutdown(shutdown_signal()) => r?,
    }
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A listener whose connections send each write at once. `axum::serve` leaves Nagle's
/// algorithm on, and a response written in pieces (headers, then each SSE event) then waits
/// for the client's delayed ACK: about 40 ms on every MCP call, and on every streamed event.
pub fn no_delay(listener: tokio::net::TcpListener) -> NoDelay {
    use axum::serve::ListenerExt;

    fn set(tcp: &mut tokio::net::TcpStream) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    }
    listener.tap_io(set)
}

/// What [`no_delay`] makes; a named type, so `ConnectInfo<SocketAddr>` still works.
pub type NoDelay = axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)>;
