//! What several replicas do on the API double: one holds the Lease and reconciles, the
//! others follow and take over when it goes; every replica's key store follows the Secrets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use tokio::sync::watch;

use mcp_connector::clock::Clock;
use mcp_connector::crd::McpConnector;
use mcp_connector::keys::KeyStore;
use mcp_connector::keys::store::Route;
use mcp_connector::leader::{self, Attempt, LeaseConfig, try_acquire};
use mcp_connector::reconcile::{self, Context};
use mcp_connector::serving::{self, Synced};
use support::apiserver::ApiServer;
use support::eventually;

const NS: &str = "kfuse";

fn lease_config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        name: "mcp-connector-leader".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_every: Duration::from_millis(200),
    }
}

#[tokio::test]
async fn only_one_replica_takes_a_live_lease() {
    let api = ApiServer::start().await;
    let leases: Api<Lease> = Api::namespaced(api.client(), NS);
    let clock = Clock::system();

    let a = try_acquire(&leases, &lease_config("a"), clock.now())
        .await
        .unwrap();
    let b = try_acquire(&leases, &lease_config("b"), clock.now())
        .await
        .unwrap();
    let a_again = try_acquire(&leases, &lease_config("a"), clock.now())
        .await
        .unwrap();

    assert_eq!(
        (a, b, a_again),
        (Attempt::Leading, Attempt::Following, Attempt::Leading)
    );
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let api = ApiServer::start().await;
    let leases: Api<Lease> = Api::namespaced(api.client(), NS);
    let clock = Clock::pinned(jiff::Timestamp::now());

    try_acquire(&leases, &lease_config("a"), clock.now())
        .await
        .unwrap();
    clock.advance(jiff::SignedDuration::from_secs(3));
    let b = try_acquire(&leases, &lease_config("b"), clock.now())
        .await
        .unwrap();
    let a = try_acquire(&leases, &lease_config("a"), clock.now())
        .await
        .unwrap();

    assert_eq!((b, a), (Attempt::Leading, Attempt::Following));
    let lease = leases
        .get("mcp-connector-leader")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("b"));
    assert_eq!(lease.lease_transitions, Some(1));
}

/// One replica's election loop, with a flag for whether its work is running.
struct Replica {
    leading: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn replica(api: &ApiServer, identity: &str) -> Replica {
    let leases: Api<Lease> = Api::namespaced(api.client(), NS);
    let (leading_tx, leading) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(false);
    let work = |stopped: watch::Receiver<bool>| leader::stopped(stopped);
    let task = tokio::spawn(leader::run(
        leases,
        lease_config(identity),
        Clock::system(),
        leading_tx,
        work,
        leader::stopped(stop_rx),
    ));
    Replica {
        leading,
        stop,
        task,
    }
}

#[tokio::test]
async fn when_the_leader_stops_another_replica_leads() {
    let api = ApiServer::start().await;
    let a = replica(&api, "a");
    eventually("a leads", || async { *a.leading.borrow() }).await;
    let b = replica(&api, "b");

    // b keeps following while a renews.
    let leases: Api<Lease> = Api::namespaced(api.client(), NS);
    for _ in 0..5 {
        let lease = leases.get("mcp-connector-leader").await.unwrap();
        assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("a"));
        assert!(!*b.leading.borrow());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    a.stop.send(true).unwrap();
    a.task.await.unwrap();
    eventually("b leads after a released the lease", || async {
        *b.leading.borrow()
    })
    .await;
    b.stop.send(true).unwrap();
    b.task.await.unwrap();
}

#[tokio::test]
async fn a_follower_serves_the_keys_the_leader_wrote_and_follows_a_regeneration() {
    let api = ApiServer::start().await;
    api.register(
        "mcp.kloudfuse.io",
        "v1alpha1",
        "McpConnector",
        "mcpconnectors",
        true,
    );
    let client = api.client();

    // The leader reconciles; a follower only runs the serving watch.
    let ctx = Arc::new(Context::new(client.clone(), Clock::system(), None));
    let (_stop, stopped) = watch::channel(false);
    tokio::spawn(reconcile::run(
        ctx,
        Some(NS.into()),
        leader::stopped(stopped),
    ));
    let follower = KeyStore::new();
    let synced = Arc::new(Synced::default());
    tokio::spawn(serving::run(
        client.clone(),
        follower.clone(),
        Some(NS.into()),
        synced.clone(),
    ));

    let connector: McpConnector = serde_json::from_value(json!({
        "apiVersion": "mcp.kloudfuse.io/v1alpha1", "kind": "McpConnector",
        "metadata": {"name": "kfuse", "namespace": NS},
        "spec": {"baseURL": "http://127.0.0.1:8080",
                 "upstream": {"devUsers": [{"username": "dev", "password": "pw"}]}}
    }))
    .unwrap();
    let connectors: Api<McpConnector> = Api::namespaced(client.clone(), NS);
    connectors
        .create(&PostParams::default(), &connector)
        .await
        .unwrap();

    let serving_kid = || {
        let route = follower.route(Some("127.0.0.1:8080"), false);
        match route {
            Route::Serve(c, _) => Some(c.keys.current_signing().kid.clone()),
            _ => None,
        }
    };
    eventually("the follower serves the connector", || async {
        serving_kid().is_some()
    })
    .await;
    assert!(synced.is_synced());
    let first = serving_kid().unwrap();

    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    secrets
        .delete("kfuse-mcp-oauth-signing-key", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the follower serves the regenerated key", || async {
        serving_kid().is_some_and(|kid| kid != first)
    })
    .await;

    connectors
        .delete("kfuse", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the follower forgets the deleted connector", || async {
        matches!(
            follower.route(Some("127.0.0.1:8080"), false),
            Route::Unknown
        )
    })
    .await;
}
