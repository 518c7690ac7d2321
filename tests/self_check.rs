//! The self-check (the reference page's Verify step, done by the operator): what the
//! `Reachable` condition says for each kind of answer at the connector's public URL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Html;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::sync::watch;

use mcp_connector::clock::Clock;
use mcp_connector::crd::McpConnector;
use mcp_connector::leader;
use mcp_connector::reconcile::{self, Context};
use support::apiserver::ApiServer;

const NS: &str = "kfuse";

/// Serves `app` on loopback; returns its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

async fn reachable(base_url: &str) -> (String, String, String) {
    let api = ApiServer::start().await;
    api.register(
        "mcp.kloudfuse.io",
        "v1alpha1",
        "McpConnector",
        "mcpconnectors",
        true,
    );
    let ctx = Arc::new(Context::new(api.client(), Clock::system(), None).with_self_check());
    let (_stop, stopped) = watch::channel(false);
    tokio::spawn(reconcile::run(
        ctx,
        Some(NS.into()),
        leader::stopped(stopped),
    ));

    let connector: McpConnector = serde_json::from_value(json!({
        "apiVersion": "mcp.kloudfuse.io/v1alpha1", "kind": "McpConnector",
        "metadata": {"name": "kfuse", "namespace": NS},
        "spec": {"baseURL": base_url,
                 "upstream": {"devUsers": [{"username": "dev", "password": "pw"}]}}
    }))
    .unwrap();
    let connectors: Api<McpConnector> = Api::namespaced(api.client(), NS);
    connectors
        .create(&PostParams::default(), &connector)
        .await
        .unwrap();

    for _ in 0..1000 {
        let c = connectors.get("kfuse").await.unwrap();
        if let Some(cond) = c.condition("Reachable") {
            return (
                cond.status.clone(),
                cond.reason.clone(),
                cond.message.clone(),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no Reachable condition");
}

#[tokio::test]
async fn an_html_404_means_the_oauth_paths_are_not_routed() {
    let app = axum::Router::new()
        .fallback(|| async { (StatusCode::NOT_FOUND, Html("<h1>Not Found</h1>")) });
    let base = serve(app).await;

    let (status, reason, message) = reachable(&base).await;

    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "NotRouted"),
        "{message}"
    );
    assert!(message.contains("404"), "{message}");
}

#[tokio::test]
async fn another_servers_document_is_a_wrong_issuer() {
    let app = axum::Router::new().route(
        "/.well-known/oauth-protected-resource/mcp",
        axum::routing::get(|| async {
            axum::Json(json!({"resource": "https://other.example/mcp",
                              "authorization_servers": ["https://other.example"]}))
        }),
    );
    let base = serve(app).await;

    let (status, reason, _) = reachable(&base).await;

    assert_eq!((status.as_str(), reason.as_str()), ("False", "WrongIssuer"));
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let (status, reason, _) = reachable(&format!("http://127.0.0.1:{port}")).await;

    assert_eq!((status.as_str(), reason.as_str()), ("False", "Unreachable"));
}
