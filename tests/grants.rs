//! Grant state in the Kubernetes API (ConfigMaps) through a real `kube::Client` on the API
//! double: two replicas sharing it, and a restart, see one state.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};

use mcp_connector::grants::kube::KubeGrants;
use mcp_connector::grants::{GrantStore, Refresh};
use support::apiserver::ApiServer;

const NS: &str = "mcp-connector-system";

fn later(secs: i64) -> Timestamp {
    Timestamp::now() + SignedDuration::from_secs(secs)
}

#[tokio::test]
async fn a_code_is_redeemed_once_across_replicas_and_restarts() {
    let api = ApiServer::start().await;
    let (a, b) = (
        KubeGrants::new(api.client(), NS),
        KubeGrants::new(api.client(), NS),
    );

    let (first, second) = tokio::join!(
        a.redeem_code("ns/c", "code-1", later(60)),
        b.redeem_code("ns/c", "code-1", later(60)),
    );
    let restarted = KubeGrants::new(api.client(), NS);
    let third = restarted
        .redeem_code("ns/c", "code-1", later(60))
        .await
        .unwrap();

    let wins = [first.unwrap(), second.unwrap()]
        .iter()
        .filter(|w| **w)
        .count();
    assert_eq!(wins, 1, "exactly one replica redeems the code");
    assert!(!third, "a restarted replica still knows the code was used");
    assert!(
        restarted
            .redeem_code("other/c", "code-1", later(60))
            .await
            .unwrap(),
        "per connector"
    );
}

#[tokio::test]
async fn refresh_generations_are_shared_and_a_replay_revokes_everywhere() {
    let api = ApiServer::start().await;
    let (a, b) = (
        KubeGrants::new(api.client(), NS),
        KubeGrants::new(api.client(), NS),
    );
    let watch = tokio::spawn(b.watch());
    let now = Timestamp::now();

    let rotated = a.refresh("ns/c", "g1", 0, now, later(3600)).await.unwrap();
    let raced = b.refresh(
        "ns/c",
        "g1",
        0,
        now + SignedDuration::from_millis(50),
        later(3600),
    );
    let raced = raced.await.unwrap();
    assert_eq!((rotated, raced), (Refresh::Rotated(1), Refresh::Raced(1)));

    let replay = b.refresh(
        "ns/c",
        "g1",
        0,
        now + SignedDuration::from_secs(60),
        later(3600),
    );
    assert_eq!(replay.await.unwrap(), Refresh::Replayed);
    let current = a.refresh(
        "ns/c",
        "g1",
        1,
        now + SignedDuration::from_secs(61),
        later(3600),
    );
    assert_eq!(
        current.await.unwrap(),
        Refresh::Revoked,
        "the whole grant is revoked"
    );

    // The other replica learns of the revocation from the watch, not from its own write.
    let watcher_side = KubeGrants::new(api.client(), NS);
    let follow = tokio::spawn(watcher_side.watch());
    for _ in 0..500 {
        if watcher_side.is_revoked("ns/c", "g1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(watcher_side.is_revoked("ns/c", "g1"));
    assert!(!watcher_side.is_revoked("ns/c", "g2"));
    watch.abort();
    follow.abort();
}

#[tokio::test]
async fn expired_entries_are_dropped_so_shards_stay_small() {
    let api = ApiServer::start().await;
    let grants = KubeGrants::new(api.client(), NS);
    let configmaps: Api<ConfigMap> = Api::namespaced(api.client(), NS);

    for i in 0..40 {
        grants
            .redeem_code("ns/c", &format!("old-{i}"), later(-1))
            .await
            .unwrap();
    }
    for i in 0..40 {
        grants
            .redeem_code("ns/c", &format!("new-{i}"), later(60))
            .await
            .unwrap();
    }

    let entries: usize = configmaps
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|cm| cm.data.as_ref().map_or(0, |d| d.len()))
        .sum();
    assert!(
        entries <= 40 + 16,
        "expired codes are pruned on write: {entries} entries"
    );
    assert!(entries >= 40);
}
