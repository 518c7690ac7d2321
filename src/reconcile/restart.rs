//! Restart ordering: the dependents (`user-mgmt-service`) read connector state at start-up,
//! so they must start after the MCP server is Ready and after the Secrets were last made.
//!
//! The decision is a chain of named checks over plain views of the Deployments and Pods,
//! with the times passed in. A restart is recorded by its cause (the MCP server's revision,
//! or the Secrets' regeneration time) in status and on the Pod template, so one cause
//! restarts a dependent once, also across operator restarts.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};

use super::Error;

/// The annotation `kubectl rollout restart` sets; setting it restarts the same way.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// The annotation recording why the operator restarted a Deployment.
pub const RESTART_CAUSE: &str = "mcp.kloudfuse.io/restart-cause";

/// The MCP server as the decision sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpServerView {
    /// `Ok` when rolled out, else why not.
    pub ready: Result<(), String>,
    /// The Deployment's revision.
    pub revision: String,
    /// When the newest Ready Pod became Ready.
    pub newest_ready_at: Option<Timestamp>,
}

/// One dependent as the decision sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependentView {
    /// Deployment name.
    pub name: String,
    /// `Ok` when rolled out, else why not.
    pub rolled_out: Result<(), String>,
    /// Creation time of its oldest Pod.
    pub oldest_pod: Option<Timestamp>,
    /// The cause recorded on its Pod template by an earlier restart.
    pub template_cause: Option<String>,
    /// The cause recorded in status by an earlier restart.
    pub status_cause: Option<String>,
}

/// What to do with one dependent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing now, and why.
    Wait {
        /// Condition reason.
        reason: &'static str,
        /// For people.
        message: String,
    },
    /// Restart it for this cause.
    Restart {
        /// The cause, recorded so it restarts once.
        cause: String,
        /// For people and Events.
        why: String,
    },
    /// It started after everything it depends on.
    InOrder,
}

/// Whether a Deployment has rolled out: the controller has seen the newest spec, and every
/// replica is updated, ready and available, with no Pod of an older revision left.
pub fn rollout(deployment: &Deployment) -> Result<(), String> {
    let wanted = deployment.spec.replicas.unwrap_or(1);
    let generation = deployment.metadata.generation.unwrap_or(0);
    let Some(status) = &deployment.status else {
        return Err("it has no status yet".into());
    };

    if status.observed_generation.unwrap_or(0) < generation {
        return Err("its newest spec has not been observed yet".into());
    }
    let counts = [
        ("updated", status.updated_replicas),
        ("ready", status.ready_replicas),
        ("available", status.available_replicas),
    ];
    for (what, count) in counts {
        let count = count.unwrap_or(0);
        if count < wanted {
            return Err(format!("{count} of {wanted} replicas are {what}"));
        }
    }
    if status.replicas.unwrap_or(0) > wanted {
        return Err("Pods of an older revision are still running".into());
    }
    Ok(())
}

/// Decides whether a dependent must restart.
pub fn decide(
    mcp: &McpServerView,
    dependent: &DependentView,
    secrets_regenerated_at: Option<Timestamp>,
) -> Decision {
    if let Err(why) = &mcp.ready {
        return Decision::Wait {
            reason: "McpServerNotReady",
            message: format!("the MCP server is not Ready ({why}); restarting nothing"),
        };
    }
    if let Err(why) = &dependent.rolled_out {
        return Decision::Wait {
            reason: "DependentRollingOut",
            message: format!("{} is rolling out ({why}); waiting for it", dependent.name),
        };
    }
    let Some(oldest) = dependent.oldest_pod else {
        return Decision::InOrder;
    };

    let causes = [
        mcp.newest_ready_at.map(|at| {
            (
                format!("mcp-server:{}", mcp.revision),
                at,
                "the MCP server's newest Pod became Ready",
            )
        }),
        secrets_regenerated_at
            .map(|at| (format!("secrets:{at}"), at, "the Secrets were regenerated")),
    ];
    for (cause, at, event) in causes.into_iter().flatten() {
        let already = dependent.status_cause.as_deref() == Some(cause.as_str())
            || dependent.template_cause.as_deref() == Some(cause.as_str());
        if oldest < at && !already {
            return Decision::Restart {
                why: format!(
                    "a Pod of {} started at {oldest}, before {event} at {at}",
                    dependent.name
                ),
                cause,
            };
        }
    }
    Decision::InOrder
}

fn selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn created(pod: &Pod) -> Option<Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    ready
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| created(pod))
}

async fn pods(api: &Api<Pod>, labels: &BTreeMap<String, String>) -> Result<Vec<Pod>, Error> {
    let params = ListParams::default().labels(&selector(labels));
    let list = api
        .list(&params)
        .await
        .map_err(|source| Error::ReadWorkload {
            what: format!("Pods {}", selector(labels)),
            source,
        })?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

async fn deployment(api: &Api<Deployment>, name: &str) -> Result<Option<Deployment>, Error> {
    api.get_opt(name)
        .await
        .map_err(|source| Error::ReadWorkload {
            what: format!("Deployment {name}"),
            source,
        })
}

/// Reads the MCP server's Deployment and Pods; `None` when the Deployment does not exist.
pub async fn view_mcp_server(
    deployments: &Api<Deployment>,
    pods_api: &Api<Pod>,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Option<McpServerView>, Error> {
    let Some(d) = deployment(deployments, name).await? else {
        return Ok(None);
    };
    let revision = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision").cloned())
        .unwrap_or_else(|| d.metadata.generation.unwrap_or(0).to_string());

    let pods = pods(pods_api, labels).await?;
    Ok(Some(McpServerView {
        ready: rollout(&d),
        revision,
        newest_ready_at: pods.iter().filter_map(ready_since).max(),
    }))
}

/// Reads one dependent; `None` when its Deployment does not exist.
pub async fn view_dependent(
    deployments: &Api<Deployment>,
    pods_api: &Api<Pod>,
    name: &str,
    status_cause: Option<String>,
) -> Result<Option<DependentView>, Error> {
    let Some(d) = deployment(deployments, name).await? else {
        return Ok(None);
    };
    let template = d.spec.template.metadata.as_ref();
    let template_cause = template.and_then(|m| m.annotations.as_ref()?.get(RESTART_CAUSE).cloned());
    let labels = d.spec.selector.match_labels.clone().unwrap_or_default();

    let oldest_pod = if labels.is_empty() {
        None
    } else {
        pods(pods_api, &labels)
            .await?
            .iter()
            .filter_map(created)
            .min()
    };
    Ok(Some(DependentView {
        name: name.into(),
        rolled_out: rollout(&d),
        oldest_pod,
        template_cause,
        status_cause,
    }))
}

/// Restarts a Deployment as `kubectl rollout restart` does, recording the cause.
pub async fn restart(
    deployments: &Api<Deployment>,
    name: &str,
    cause: &str,
    now: Timestamp,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT: now.to_string(),
            RESTART_CAUSE: cause,
        }}}}
    });
    deployments
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::RestartDependent {
            name: name.into(),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ready_mcp(revision: &str, ready_at: &str) -> McpServerView {
        McpServerView {
            ready: Ok(()),
            revision: revision.into(),
            newest_ready_at: Some(at(ready_at)),
        }
    }

    fn dependent(oldest: &str) -> DependentView {
        DependentView {
            name: "user-mgmt-service".into(),
            rolled_out: Ok(()),
            oldest_pod: Some(at(oldest)),
            template_cause: None,
            status_cause: None,
        }
    }

    #[test]
    fn an_older_dependent_restarts_once_per_revision() {
        let mcp = ready_mcp("7", "2026-01-01T10:00:00Z");
        let old = dependent("2026-01-01T09:00:00Z");

        let first = decide(&mcp, &old, None);
        let Decision::Restart { cause, .. } = &first else {
            panic!("{first:?}")
        };
        let recorded = DependentView {
            status_cause: Some(cause.clone()),
            ..old.clone()
        };
        let on_template = DependentView {
            template_cause: Some(cause.clone()),
            ..old
        };

        assert_eq!(cause, "mcp-server:7");
        assert_eq!(decide(&mcp, &recorded, None), Decision::InOrder);
        assert_eq!(decide(&mcp, &on_template, None), Decision::InOrder);
    }

    #[test]
    fn a_younger_dependent_stays() {
        let mcp = ready_mcp("7", "2026-01-01T10:00:00Z");

        assert_eq!(
            decide(&mcp, &dependent("2026-01-01T10:00:01Z"), None),
            Decision::InOrder
        );
    }

    #[test]
    fn nothing_restarts_while_the_mcp_server_is_not_ready() {
        let mcp = McpServerView {
            ready: Err("0 of 1 replicas are ready".into()),
            ..ready_mcp("7", "2026-01-01T10:00:00Z")
        };

        let d = decide(&mcp, &dependent("2026-01-01T09:00:00Z"), None);

        assert!(
            matches!(
                d,
                Decision::Wait {
                    reason: "McpServerNotReady",
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn a_dependent_rolling_out_is_waited_for() {
        let mcp = ready_mcp("7", "2026-01-01T10:00:00Z");
        let rolling = DependentView {
            rolled_out: Err("1 of 2".into()),
            ..dependent("2026-01-01T09:00:00Z")
        };

        assert!(matches!(
            decide(&mcp, &rolling, None),
            Decision::Wait {
                reason: "DependentRollingOut",
                ..
            }
        ));
    }

    #[test]
    fn regenerated_secrets_restart_an_older_dependent() {
        let mcp = ready_mcp("7", "2026-01-01T08:00:00Z");

        let d = decide(
            &mcp,
            &dependent("2026-01-01T09:00:00Z"),
            Some(at("2026-01-01T11:00:00Z")),
        );

        let Decision::Restart { cause, .. } = d else {
            panic!("{d:?}")
        };
        assert!(cause.starts_with("secrets:"));
    }

    fn deployment(generation: i64, status: DeploymentStatus) -> Deployment {
        let mut d = Deployment {
            spec: DeploymentSpec {
                replicas: Some(2),
                ..Default::default()
            },
            status: Some(status),
            ..Default::default()
        };
        d.metadata.generation = Some(generation);
        d
    }

    #[test]
    fn rollout_needs_every_replica_updated_ready_available_and_no_old_pods() {
        let done = DeploymentStatus {
            observed_generation: Some(3),
            replicas: Some(2),
            updated_replicas: Some(2),
            ready_replicas: Some(2),
            available_replicas: Some(2),
            ..Default::default()
        };
        let cases = [
            (
                DeploymentStatus {
                    observed_generation: Some(2),
                    ..done.clone()
                },
                "observed",
            ),
            (
                DeploymentStatus {
                    updated_replicas: Some(1),
                    ..done.clone()
                },
                "updated",
            ),
            (
                DeploymentStatus {
                    ready_replicas: Some(1),
                    ..done.clone()
                },
                "ready",
            ),
            (
                DeploymentStatus {
                    available_replicas: None,
                    ..done.clone()
                },
                "available",
            ),
            (
                DeploymentStatus {
                    replicas: Some(3),
                    ..done.clone()
                },
                "older revision",
            ),
        ];

        assert_eq!(rollout(&deployment(3, done.clone())), Ok(()));
        for (status, why) in cases {
            let err = rollout(&deployment(3, status)).unwrap_err();
            assert!(err.contains(why), "{why}: {err}");
        }
    }
}
