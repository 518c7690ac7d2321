//! Restart ordering (SPEC 4) with the real controller on the API double. Nothing plays the
//! Deployment controller or the kubelet here: each test sets Pods (the double stamps their
//! creation time) and Deployment status itself, the way a rollout would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use mcp_connector::clock::Clock;
use mcp_connector::crd::McpConnector;
use mcp_connector::reconcile::restart::{RESTART_CAUSE, RESTARTED_AT};
use mcp_connector::reconcile::{self, Context};
use support::apiserver::ApiServer;
use support::eventually;

const NS: &str = "kfuse";
const DEPENDENT: &str = "user-mgmt-service";

/// A running operator that can be stopped, as a process exit would.
struct Operator {
    ctx: Arc<Context>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Operator {
    fn start(api: &ApiServer, clock: Clock) -> Operator {
        let ctx = Arc::new(Context::new(api.client(), clock, None));
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(reconcile::run(ctx.clone(), Some(NS.into()), shutdown));
        Operator {
            ctx,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        self.task.abort();
    }

    fn restarts(&self) -> u64 {
        let stats = &self.ctx.stats;
        stats.restarts_mcp_server.load(Ordering::Relaxed)
            + stats.restarts_secrets.load(Ordering::Relaxed)
    }
}

/// A cluster with the operator's CRD registered and, by default, a clock well in the past,
/// so that the Secrets' creation is older than every Pod and causes no restart by itself.
struct World {
    api: ApiServer,
    client: kube::Client,
    clock: Clock,
}

impl World {
    async fn new() -> World {
        let api = ApiServer::start().await;
        api.register(
            "mcp.kloudfuse.io",
            "v1alpha1",
            "McpConnector",
            "mcpconnectors",
            true,
        );
        let client = api.client();
        let clock = Clock::pinned(Timestamp::now() - SignedDuration::from_hours(24));
        World { api, client, clock }
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn connectors(&self) -> Api<McpConnector> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Creates a Deployment of one replica selecting `app.kubernetes.io/name=<name>`.
    async fn deployment(&self, name: &str, revision: &str) {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "annotations": {"deployment.kubernetes.io/revision": revision},
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": name}},
                    "spec": {"containers": [{"name": name, "image": "example/app"}]}
                }
            }
        }))
        .unwrap();
        self.deployments()
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }

    /// Sets a Deployment's status: rolled out, or not.
    async fn rollout_status(&self, name: &str, rolled_out: bool) {
        let d = self.deployments().get(name).await.unwrap();
        let generation = d.metadata.generation.unwrap_or(1);
        let ready = if rolled_out { 1 } else { 0 };
        let status = json!({"status": {
            "observedGeneration": generation,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": ready,
            "availableReplicas": ready,
        }});
        self.deployments()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    /// Creates a Pod of `app`, Ready since `ready_at` when given.
    async fn pod(&self, name: &str, app: &str, ready_at: Option<Timestamp>) {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": app}},
            "spec": {"containers": [{"name": app, "image": "example/app"}]}
        }))
        .unwrap();
        self.pods()
            .create(&PostParams::default(), &p)
            .await
            .unwrap();

        if let Some(at) = ready_at {
            let status = json!({"status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": at.to_string()}
            ]}});
            self.pods()
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
        }
    }

    /// Plays the rollout the Deployment controller would do after a restart: the old Pods
    /// go, a new one comes, and the status catches up.
    async fn play_rollout(&self, name: &str, new_pod: &str) {
        let selector = format!("app.kubernetes.io/name={name}");
        let old = self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap();
        for p in old.items {
            let pod_name = p.metadata.name.unwrap();
            self.pods()
                .delete(&pod_name, &DeleteParams::default())
                .await
                .unwrap();
        }
        self.pod(new_pod, name, Some(Timestamp::now())).await;
        self.rollout_status(name, true).await;
    }

    async fn connector(&self) {
        let c: McpConnector = serde_json::from_value(json!({
            "apiVersion": "mcp.kloudfuse.io/v1alpha1",
            "kind": "McpConnector",
            "metadata": {"name": "kfuse", "namespace": NS},
            "spec": {
                "baseURL": "http://127.0.0.1:8080",
                "upstream": {"devUsers": [{"username": "dev", "password": "pw"}]}
            }
        }))
        .unwrap();
        self.connectors()
            .create(&PostParams::default(), &c)
            .await
            .unwrap();
    }

    async fn condition(&self, type_: &str) -> Option<(String, String, String)> {
        let c = self.connectors().get_opt("kfuse").await.ok()??;
        let cond = c.condition(type_)?;
        Some((
            cond.status.clone(),
            cond.reason.clone(),
            cond.message.clone(),
        ))
    }

    async fn await_condition(&self, type_: &str, status: &str, reason: &str) {
        let what = format!("{type_}={status} ({reason})");
        eventually(&what, || async {
            matches!(self.condition(type_).await, Some((s, r, _)) if s == status && r == reason)
        })
        .await;
    }

    async fn template_annotations(&self, name: &str) -> BTreeMap<String, String> {
        let d = self.deployments().get(name).await.unwrap();
        d.spec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .unwrap_or_default()
    }

    /// Patches the operator sent to a Deployment (restarts; the tests' own writes go
    /// through `/status` or are creates).
    fn restart_patches(&self, name: &str) -> usize {
        let path = format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}");
        self.api
            .requests()
            .iter()
            .filter(|(method, p)| method == "PATCH" && p.split('?').next() == Some(path.as_str()))
            .count()
    }

    /// Upgrades the MCP server to `revision`: a new spec the controller has not observed.
    async fn upgrade_mcp_server(&self, revision: &str) {
        let patch = json!({
            "metadata": {"annotations": {"deployment.kubernetes.io/revision": revision}},
            "spec": {"template": {"metadata": {"labels": {"revision": revision}}}}
        });
        self.deployments()
            .patch("kf-mcp", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
}

/// kf-mcp at revision 1, Ready an hour ago; user-mgmt-service started now.
async fn settled_world() -> World {
    let w = World::new().await;
    let an_hour_ago = Timestamp::now() - SignedDuration::from_hours(1);

    w.deployment("kf-mcp", "1").await;
    w.pod("kf-mcp-1", "kf-mcp", Some(an_hour_ago)).await;
    w.rollout_status("kf-mcp", true).await;
    w.deployment(DEPENDENT, "1").await;
    w.pod("ums-1", DEPENDENT, Some(Timestamp::now())).await;
    w.rollout_status(DEPENDENT, true).await;
    w.connector().await;
    w
}

#[tokio::test]
async fn a_dependent_younger_than_the_mcp_server_is_left_alone() {
    let w = settled_world().await;
    let op = Operator::start(&w.api, w.clock.clone());

    w.await_condition("DependentsOrdered", "True", "InOrder")
        .await;
    w.await_condition("McpServerReady", "True", "RolledOut")
        .await;

    assert_eq!(op.restarts(), 0);
    assert_eq!(w.restart_patches(DEPENDENT), 0);
    assert!(
        !w.template_annotations(DEPENDENT)
            .await
            .contains_key(RESTARTED_AT)
    );
    op.stop().await;
}

#[tokio::test]
async fn an_upgraded_mcp_server_restarts_each_dependent_once_after_it_is_ready() {
    let w = settled_world().await;
    let op = Operator::start(&w.api, w.clock.clone());
    w.await_condition("DependentsOrdered", "True", "InOrder")
        .await;

    w.upgrade_mcp_server("2").await;
    w.pod("kf-mcp-2", "kf-mcp", None).await;
    w.await_condition("McpServerReady", "False", "RollingOut")
        .await;
    w.await_condition("DependentsOrdered", "False", "McpServerNotReady")
        .await;
    assert_eq!(
        w.restart_patches(DEPENDENT),
        0,
        "nothing restarts before Ready"
    );

    let ready_at = Timestamp::now() + SignedDuration::from_secs(5);
    let status = json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": ready_at.to_string()}]}});
    w.pods()
        .patch_status("kf-mcp-2", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    w.pods()
        .delete("kf-mcp-1", &DeleteParams::default())
        .await
        .unwrap();
    w.rollout_status("kf-mcp", true).await;

    eventually("the dependent is restarted", || async {
        w.template_annotations(DEPENDENT)
            .await
            .get(RESTART_CAUSE)
            .map(String::as_str)
            == Some("mcp-server:2")
    })
    .await;
    w.await_condition("DependentsOrdered", "False", "DependentRollingOut")
        .await;
    w.play_rollout(DEPENDENT, "ums-2").await;
    w.await_condition("DependentsOrdered", "True", "InOrder")
        .await;

    assert_eq!(w.restart_patches(DEPENDENT), 1);
    assert_eq!(op.ctx.stats.restarts_mcp_server.load(Ordering::Relaxed), 1);
    let c = w.connectors().get("kfuse").await.unwrap();
    let record = &c.status.unwrap().dependents[0];
    assert_eq!(record.last_cause.as_deref(), Some("mcp-server:2"));
    op.stop().await;
}

#[tokio::test]
async fn deleted_secrets_restart_the_dependent_once_after_they_are_regenerated() {
    let w = settled_world().await;
    let op = Operator::start(&w.api, w.clock.clone());
    w.await_condition("DependentsOrdered", "True", "InOrder")
        .await;

    // Move the operator's clock past the dependent's start, then force a re-auth.
    w.clock.advance(SignedDuration::from_hours(48));
    let secrets: Api<Secret> = Api::namespaced(w.client.clone(), NS);
    secrets
        .delete("kfuse-mcp-oauth-dcr-secret", &DeleteParams::default())
        .await
        .unwrap();

    eventually("the dependent is restarted for the Secrets", || async {
        w.template_annotations(DEPENDENT)
            .await
            .get(RESTART_CAUSE)
            .is_some_and(|c| c.starts_with("secrets:"))
    })
    .await;
    w.play_rollout(DEPENDENT, "ums-2").await;
    w.await_condition("DependentsOrdered", "True", "InOrder")
        .await;

    // The new Pod is still older than the pinned clock's regeneration time; the recorded
    // cause is what keeps it from restarting again.
    assert_eq!(w.restart_patches(DEPENDENT), 1);
    assert_eq!(op.ctx.stats.restarts_secrets.load(Ordering::Relaxed), 1);
    op.stop().await;
}

#[tokio::test]
async fn an_mcp_server_that_never_becomes_ready_restarts_nothing() {
    let w = World::new().await;
    w.deployment("kf-mcp", "1").await;
    w.pod("kf-mcp-1", "kf-mcp", None).await;
    w.rollout_status("kf-mcp", false).await;
    w.deployment(DEPENDENT, "1").await;
    w.pod("ums-1", DEPENDENT, Some(Timestamp::now())).await;
    w.rollout_status(DEPENDENT, true).await;
    w.connector().await;
    let op = Operator::start(&w.api, w.clock.clone());

    w.await_condition("DependentsOrdered", "False", "McpServerNotReady")
        .await;
    let (_, _, message) = w.condition("DependentsOrdered").await.unwrap();
    w.await_condition("Ready", "True", "Ready").await;

    assert!(message.contains("restarting nothing"), "{message}");
    assert_eq!(op.restarts(), 0);
    assert_eq!(w.restart_patches(DEPENDENT), 0);
    op.stop().await;
}

#[tokio::test]
async fn an_operator_restarted_midway_does_not_restart_twice_for_one_cause() {
    let w = settled_world().await;
    let first = Operator::start(&w.api, w.clock.clone());
    w.await_condition("DependentsOrdered", "True", "InOrder")
        .await;

    w.upgrade_mcp_server("2").await;
    let ready_at = Timestamp::now() + SignedDuration::from_secs(5);
    w.pods()
        .delete("kf-mcp-1", &DeleteParams::default())
        .await
        .unwrap();
    w.pod("kf-mcp-2", "kf-mcp", Some(ready_at)).await;
    w.rollout_status("kf-mcp", true).await;
    eventually("the dependent is restarted", || async {
        w.template_annotations(DEPENDENT)
            .await
            .contains_key(RESTART_CAUSE)
    })
    .await;
    first.stop().await;

    // As if the first operator died before recording the cause in status, and the
    // Deployment reported rolled out with an old Pod still listed.
    let forget = json!({"status": {"dependents": null}});
    w.connectors()
        .patch_status("kfuse", &PatchParams::default(), &Patch::Merge(&forget))
        .await
        .unwrap();
    w.rollout_status(DEPENDENT, true).await;
    let second = Operator::start(&w.api, w.clock.clone());
    eventually("the second operator has looked", || async {
        second.ctx.stats.reconciles.load(Ordering::Relaxed) >= 1
    })
    .await;
    w.await_condition("DependentsOrdered", "True", "InOrder")
        .await;

    assert_eq!(w.restart_patches(DEPENDENT), 1);
    assert_eq!(second.restarts(), 0);
    second.stop().await;
}

#[tokio::test]
async fn a_quiet_world_reconciled_many_times_restarts_nothing() {
    let w = settled_world().await;
    let op = Operator::start(&w.api, w.clock.clone());
    w.await_condition("DependentsOrdered", "True", "InOrder")
        .await;
    let before = op.ctx.stats.reconciles.load(Ordering::Relaxed);

    // Each status write of the MCP server's Deployment triggers a pass.
    for i in 0..20 {
        let touch: Value = json!({"status": {"conditions": [
            {"type": "Progressing", "status": "True", "reason": format!("Touch{i}")}]}});
        w.deployments()
            .patch_status("kf-mcp", &PatchParams::default(), &Patch::Merge(&touch))
            .await
            .unwrap();
        let seen = before + i + 1;
        eventually("the touch is reconciled", || async {
            op.ctx.stats.reconciles.load(Ordering::Relaxed) >= seen
        })
        .await;
    }

    let passes = op.ctx.stats.reconciles.load(Ordering::Relaxed) - before;
    println!("quiet world: {passes} passes, {} restarts", op.restarts());
    assert!(passes >= 20);
    assert_eq!(op.restarts(), 0);
    assert_eq!(w.restart_patches(DEPENDENT), 0);
    op.stop().await;
}
