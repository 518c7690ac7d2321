//! `mcp-connector run`: the operator in a cluster. Every replica serves OAuth and `/mcp`
//! from the Secrets it watches; the one holding the Lease also reconciles.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::grants::kube::KubeGrants;
use crate::keys::KeyStore;
use crate::leader::{self, LeaseConfig};
use crate::metrics::{self, Metrics};
use crate::oauth::{AppState, router};
use crate::reconcile::{self, Context, Stats};
use crate::serve::serve;
use crate::serving::{self, Synced};

/// How `run` was asked to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// OAuth server and /mcp.
    pub listen: SocketAddr,
    /// Metrics and probes.
    pub admin_listen: SocketAddr,
    /// Watch one namespace only.
    pub namespace: Option<String>,
    /// Fetch each connector's own discovery document at its public URL.
    pub self_check: bool,
    /// How long open streams may take to finish after SIGTERM.
    pub drain: Duration,
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

/// What the admin server reports on.
#[derive(Clone)]
struct Admin {
    store: KeyStore,
    synced: Arc<Synced>,
    leading: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    stats: Arc<Stats>,
}

async fn readyz(State(admin): State<Admin>) -> impl IntoResponse {
    let (known, serving) = admin.store.counts();
    let synced = admin.synced.is_synced();

    // Ready once the watches have listed everything and keys are loaded for at least one
    // connector, when there is any: a replica that cannot serve stays out of the Service.
    let ready = synced && (known == 0 || serving > 0);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "ready": ready,
        "synced": synced,
        "connectors": known,
        "serving": serving,
        "leader": *admin.leading.borrow(),
    });
    (status, Json(body))
}

async fn metrics_text(State(admin): State<Admin>) -> impl IntoResponse {
    let registry = metrics::registry(&admin.metrics, Some(admin.stats.clone()));
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([("content-type", content_type)], metrics::encode(&registry))
}

/// The admin routes: `/metrics`, `/healthz`, `/readyz`.
fn admin_router(admin: Admin) -> axum::Router {
    axum::Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(admin)
}

/// This replica's identity for the Lease: its Pod name, else the host name.
fn identity() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("mcp-connector-{}", std::process::id()))
}

/// Runs the operator until SIGTERM or Ctrl-C, then drains for at most `opts.drain`.
pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    let client = kube::Client::try_default().await?;
    let store = KeyStore::new();
    let clock = Clock::system();
    let synced = Arc::new(Synced::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopping = move || leader::stopped(stop_rx.clone());

    let ctx = Context::new(client.clone(), clock.clone(), Some(identity()));
    let ctx = Arc::new(if opts.self_check {
        ctx.with_self_check()
    } else {
        ctx
    });
    let lease_ns = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into());
    let grants = Arc::new(KubeGrants::new(client.clone(), &lease_ns));
    let grant_watch = tokio::spawn(grants.watch());
    let state = AppState::new(store.clone(), grants, clock.clone());
    let (leading_tx, leading_rx) = watch::channel(false);
    let admin = Admin {
        store: store.clone(),
        synced: synced.clone(),
        leading: leading_rx,
        metrics: state.metrics.clone(),
        stats: ctx.stats.clone(),
    };

    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let admin_listener = tokio::net::TcpListener::bind(opts.admin_listen).await?;
    tracing::info!(listen = %opts.listen, admin = %opts.admin_listen, "mcp-connector running");

    let serving = tokio::spawn(serving::run(
        client.clone(),
        store,
        opts.namespace.clone(),
        synced,
    ));
    let leases: Api<Lease> = Api::namespaced(client, &lease_ns);
    let namespace = opts.namespace.clone();
    let election = tokio::spawn(leader::run(
        leases,
        LeaseConfig::new("mcp-connector-leader", identity()),
        clock,
        leading_tx,
        move |stop| reconcile::run(ctx.clone(), namespace.clone(), leader::stopped(stop)),
        stopping(),
    ));

    let oauth = tokio::spawn(serve(listener, router(state), stopping()));
    let admin = tokio::spawn(serve(admin_listener, admin_router(admin), stopping()));

    shutdown_signal().await;
    tracing::info!(drain = ?opts.drain, "shutting down; draining open requests");
    let _ = stop_tx.send(true);

    // Event streams can stay open for hours: past the drain bound they are cut.
    let drained = tokio::time::timeout(opts.drain, async {
        let _ = election.await;
        let _ = oauth.await;
        let _ = admin.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("drain bound reached; closing the remaining connections");
    }
    serving.abort();
    grant_watch.abort();
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
