//! Status conditions in the `metav1.Condition` shape, with `lastTransitionTime` moved only
//! when a condition's status changes, so that a steady state writes nothing.

use jiff::Timestamp;

use crate::crd::Condition;

/// Condition types.
pub const READY: &str = "Ready";
/// The base URL resolved.
pub const BASE_URL_RESOLVED: &str = "BaseURLResolved";
/// Both Secrets hold usable keys.
pub const SECRETS_READY: &str = "SecretsReady";
/// The upstream sign-in is configured (its Secret is readable).
pub const UPSTREAM_READY: &str = "UpstreamReady";
/// The MCP server's Deployment has rolled out.
pub const MCP_SERVER_READY: &str = "McpServerReady";
/// Dependents started after the MCP server.
pub const DEPENDENTS_ORDERED: &str = "DependentsOrdered";
/// The public base URL serves this connector's discovery document (the self-check).
pub const REACHABLE: &str = "Reachable";

/// A condition as computed on this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Type.
    pub type_: &'static str,
    /// `Some(true)` True, `Some(false)` False, `None` Unknown.
    pub status: Option<bool>,
    /// CamelCase reason.
    pub reason: String,
    /// For people.
    pub message: String,
}

impl Observed {
    /// A True condition.
    pub fn ok(type_: &'static str, reason: &str, message: impl Into<String>) -> Observed {
        Observed {
            type_,
            status: Some(true),
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A False condition.
    pub fn failed(type_: &'static str, reason: &str, message: impl Into<String>) -> Observed {
        Observed {
            type_,
            status: Some(false),
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// An Unknown condition.
    pub fn unknown(type_: &'static str, reason: &str, message: impl Into<String>) -> Observed {
        Observed {
            type_,
            status: None,
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn status_str(&self) -> &'static str {
        match self.status {
            Some(true) => "True",
            Some(false) => "False",
            None => "Unknown",
        }
    }
}

/// Builds the condition list, keeping each old `lastTransitionTime` whose status holds.
pub fn conditions(
    old: &[Condition],
    observed: &[Observed],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    observed
        .iter()
        .map(|o| {
            let status = o.status_str().to_string();
            let since = old
                .iter()
                .find(|c| c.type_ == o.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.to_string());
            Condition {
                type_: o.type_.to_string(),
                status,
                reason: o.reason.clone(),
                message: o.message.clone(),
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect()
}

/// `Ready`: true when every other condition is, else the first that is not.
pub fn ready(observed: &[Observed]) -> Observed {
    match observed.iter().find(|o| o.status != Some(true)) {
        None => Observed::ok(READY, "Ready", "the connector is serving"),
        Some(o) => Observed {
            type_: READY,
            status: Some(false),
            reason: o.reason.clone(),
            message: format!("{}: {}", o.type_, o.message),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let first = conditions(&[], &[Observed::ok(SECRETS_READY, "A", "m")], Some(1), t0);

        let same = conditions(
            &first,
            &[Observed::ok(SECRETS_READY, "B", "n")],
            Some(2),
            t1,
        );
        let flipped = conditions(
            &first,
            &[Observed::failed(SECRETS_READY, "C", "o")],
            Some(2),
            t1,
        );

        assert_eq!(same[0].last_transition_time, t0.to_string());
        assert_eq!(flipped[0].last_transition_time, t1.to_string());
    }

    #[test]
    fn ready_names_the_first_failing_condition() {
        let observed = [
            Observed::ok(BASE_URL_RESOLVED, "Resolved", "ok"),
            Observed::failed(SECRETS_READY, "SecretNotManaged", "x"),
        ];

        let r = ready(&observed);

        assert_eq!(r.status, Some(false));
        assert_eq!(r.reason, "SecretNotManaged");
        assert!(r.message.starts_with("SecretsReady"));
    }
}
