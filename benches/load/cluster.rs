//! The operator against the in-process Kubernetes API double: many `McpConnector`s
//! reconciled to Ready, and the resident memory of an idle `mcp-connector run`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use mcp_connector::clock::Clock;
use mcp_connector::crd::McpConnector;
use mcp_connector::keys::KeyStore;
use mcp_connector::reconcile::{self, Context};
use mcp_connector::serving::{self, Synced};

use crate::apiserver::ApiServer;
use crate::procs;

pub const NS: &str = "bench";

/// A cluster with the CRD registered.
pub async fn cluster() -> ApiServer {
    let api = ApiServer::start().await;
    api.register(
        "mcp.kloudfuse.io",
        "v1alpha1",
        "McpConnector",
        "mcpconnectors",
        true,
    );
    api
}

/// A connector with Secrets of its own names: connectors sharing a namespace must not
/// share the default Secret names.
fn connector(name: &str, base: &str) -> McpConnector {
    serde_json::from_value(json!({
        "apiVersion": "mcp.kloudfuse.io/v1alpha1",
        "kind": "McpConnector",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "baseURL": base,
            "upstream": {"devUsers": [{"username": "dev", "password": "pw"}]},
            "secrets": {
                "dcr": {"name": format!("{name}-dcr")},
                "signingKey": {"name": format!("{name}-signing-key")},
            },
        },
    }))
    .unwrap()
}

/// Creates connectors `from..to`, each with its own loopback base URL.
pub async fn create(client: &kube::Client, from: usize, to: usize) {
    let api: Api<McpConnector> = Api::namespaced(client.clone(), NS);
    futures::stream::iter(from..to)
        .map(|i| {
            let api = api.clone();
            async move {
                let c = connector(
                    &format!("c{i:04}"),
                    &format!("http://127.0.0.1:{}", 20000 + i),
                );
                api.create(&PostParams::default(), &c).await.unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// How many connectors have `Ready=True`.
pub async fn ready(client: &kube::Client) -> usize {
    let api: Api<McpConnector> = Api::namespaced(client.clone(), NS);
    let Ok(list) = api.list(&ListParams::default()).await else {
        return 0;
    };
    list.items
        .iter()
        .filter(|c| c.condition("Ready").is_some_and(|r| r.status == "True"))
        .count()
}

/// What reconciling many connectors took.
pub struct Reconciled {
    pub count: usize,
    pub ready: Duration,
    pub serving: Duration,
    pub reconciles: u64,
    pub errors: u64,
    pub requests: usize,
}

/// Creates `count` connectors, then starts the controller and the serving side in this
/// process and waits until every connector is Ready and served.
pub async fn reconcile_many(count: usize) -> Reconciled {
    let api = cluster().await;
    let client = api.client();
    create(&client, 0, count).await;
    let before = api.requests().len();

    let ctx = Arc::new(Context::new(client.clone(), Clock::system(), None));
    let store = KeyStore::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let controller = tokio::spawn(reconcile::run(ctx.clone(), Some(NS.into()), async move {
        let _ = stopped.await;
    }));
    let serving = tokio::spawn(serving::run(
        client.clone(),
        store.clone(),
        Some(NS.into()),
        Arc::new(Synced::default()),
    ));

    let (mut ready_at, mut serving_at) = (None, None);
    while ready_at.is_none() || serving_at.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "connectors not Ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        if serving_at.is_none() && store.counts().1 >= count {
            serving_at = Some(start.elapsed());
        }
        if ready_at.is_none() && ready(&client).await >= count {
            ready_at = Some(start.elapsed());
        }
    }
    let stats = &ctx.stats;
    let out = Reconciled {
        count,
        ready: ready_at.unwrap_or_default(),
        serving: serving_at.unwrap_or_default(),
        reconciles: stats.reconciles.load(std::sync::atomic::Ordering::Relaxed),
        errors: stats.errors.load(std::sync::atomic::Ordering::Relaxed),
        requests: api.requests().len() - before,
    };
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), controller).await;
    serving.abort();
    out
}

/// Resident memory of `mcp-connector run` at rest, and with many connectors.
pub struct IdleRun {
    pub empty_mib: f64,
    pub one_mib: f64,
    /// With one connector: anonymous and file-backed resident memory.
    pub one_split: (f64, f64),
    pub many: usize,
    pub many_mib: f64,
    pub many_ready: Duration,
}

async fn readyz(http: &reqwest::Client, admin: SocketAddr) -> serde_json::Value {
    let url = format!("http://{admin}/readyz");
    match http.get(url).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

async fn until_serving(http: &reqwest::Client, admin: SocketAddr, count: u64, within: Duration) {
    let start = Instant::now();
    loop {
        let r = readyz(http, admin).await;
        if r["synced"] == true && r["serving"].as_u64() >= Some(count) {
            return;
        }
        assert!(start.elapsed() < within, "run did not serve {count}: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the binary, lets it settle for `settle` at each step: no connector, one, then
/// `many` (timed until every one is Ready).
pub async fn idle_run(settle: Duration, many: usize) -> IdleRun {
    let api = cluster().await;
    let client = api.client();
    let listen: SocketAddr = format!("127.0.0.1:{}", procs::free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", procs::free_port()).parse().unwrap();
    let run = procs::run(&api.url(), NS, listen, admin);
    let http = reqwest::Client::new();

    procs::wait_listening(admin, "mcp-connector run").await;
    until_serving(&http, admin, 0, Duration::from_secs(30)).await;
    tokio::time::sleep(settle).await;
    let empty_mib = run.rss_mib();

    // One connector served on the address `run` listens on, so the self-check finds it.
    let api_c: Api<McpConnector> = Api::namespaced(client.clone(), NS);
    let first = connector("only", &format!("http://{listen}"));
    api_c.create(&PostParams::default(), &first).await.unwrap();
    until_serving(&http, admin, 1, Duration::from_secs(30)).await;
    tokio::time::sleep(settle).await;
    let (one_mib, one_split) = (run.rss_mib(), run.rss_split_mib());

    let start = Instant::now();
    create(&client, 1, many).await;
    until_serving(&http, admin, many as u64, Duration::from_secs(120)).await;
    while ready(&client).await < many {
        assert!(start.elapsed() < Duration::from_secs(120), "not Ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let many_ready = start.elapsed();
    tokio::time::sleep(settle).await;
    let many_mib = run.rss_mib();

    run.terminate(Duration::from_secs(10)).await;
    IdleRun {
        empty_mib,
        one_mib,
        one_split,
        many,
        many_mib,
        many_ready,
    }
}
