//! The real `mcp-connector run` binary against the API double: it reconciles, serves OAuth
//! for the connector it reconciled, checks its own public URL, exposes probes and metrics,
//! and on SIGTERM drains and gives up its Lease.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::process::Command;

use mcp_connector::crd::McpConnector;
use support::apiserver::ApiServer;
use support::eventually;

const NS: &str = "kfuse";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kubeconfig(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let config = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: double\n\
         clusters: [{{name: double, cluster: {{server: \"{server}\"}}}}]\n\
         users: [{{name: test, user: {{token: test}}}}]\n\
         contexts: [{{name: double, context: {{cluster: double, user: test, namespace: {NS}}}}}]\n"
    );
    std::fs::write(&path, config).unwrap();
    path
}

#[tokio::test]
async fn run_reconciles_serves_checks_itself_and_drains_on_sigterm() {
    let api = ApiServer::start().await;
    api.register(
        "mcp.kloudfuse.io",
        "v1alpha1",
        "McpConnector",
        "mcpconnectors",
        true,
    );
    let dir = std::env::temp_dir().join(format!("mcp-connector-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (port, admin_port) = (free_port(), free_port());

    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-connector"))
        .args([
            "--log-json",
            "run",
            "--namespace",
            NS,
            "--drain-seconds",
            "5",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .env("KUBECONFIG", kubeconfig(&dir, &api.url()))
        .env("POD_NAME", "mcp-connector-0")
        .env("POD_NAMESPACE", NS)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let base = format!("http://127.0.0.1:{port}");

    eventually("the admin server answers", || async {
        http.get(format!("{admin}/healthz")).send().await.is_ok()
    })
    .await;
    let connector: McpConnector = serde_json::from_value(json!({
        "apiVersion": "mcp.kloudfuse.io/v1alpha1", "kind": "McpConnector",
        "metadata": {"name": "kfuse", "namespace": NS},
        "spec": {"baseURL": base, "upstream": {"devUsers": [{"username": "dev", "password": "pw"}]}}
    }))
    .unwrap();
    let connectors: Api<McpConnector> = Api::namespaced(api.client(), NS);
    connectors
        .create(&PostParams::default(), &connector)
        .await
        .unwrap();

    let discovery = format!("{base}/.well-known/oauth-protected-resource/mcp");
    eventually("the connector is served", || async {
        let r = http.get(&discovery).send().await;
        r.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let ready: serde_json::Value = http
        .get(format!("{admin}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(
        (ready["serving"].as_u64(), ready["leader"].as_bool()),
        (Some(1), Some(true))
    );
    let doc: serde_json::Value = http
        .get(&discovery)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["resource"], format!("{base}/mcp"));

    // The operator fetched that same document itself: the Reachable condition.
    eventually("Reachable is Verified", || async {
        let c = connectors.get("kfuse").await.unwrap();
        c.condition("Reachable")
            .is_some_and(|c| c.status == "True" && c.reason == "Verified")
    })
    .await;

    let registered = http
        .post(format!("{base}/register"))
        .json(&json!({
            "redirect_uris": ["http://127.0.0.1:5000/cb"],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let metrics = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "mcp_connector_reconciles_total",
        "mcp_connector_registrations_total{outcome=\"ok\"} 1",
        "mcp_connector_dependent_restarts_total",
        "mcp_connector_mcp_latency_seconds",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    let leases: Api<Lease> = Api::namespaced(api.client(), NS);
    let holder = leases
        .get("mcp-connector-leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("mcp-connector-0"));

    // SIGTERM: the process drains and exits, and gives the Lease back.
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let holder = leases
        .get("mcp-connector-leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder, None, "the lease was released on the way out");
    let _ = std::fs::remove_dir_all(&dir);
}
