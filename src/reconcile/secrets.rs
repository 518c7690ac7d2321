//! The two managed Secrets: read what exists, decide (create, keep, rotate, replace), and
//! write the result. The decision is a pure function of what was read and the clock.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};

use crate::crd::{
    CONNECTOR_LABEL, MANAGED_BY, MANAGED_BY_LABEL, in_use, is_managed, kept_for_another,
};
use crate::keys::rotation::{self, Policy};
use crate::keys::{KEYSET_KEY, KeyError, KeyKind, Keyset};

use super::Error;

/// What happened to a Secret on this pass, for Events and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing: the keys are current.
    Kept,
    /// Created because it did not exist and never had.
    Created,
    /// Created again after it was deleted: everyone must log in again.
    Regenerated,
    /// Not the Secret recorded in status: made again by a pass that stopped before it
    /// could record it (or the cached status is older than the pass that did).
    Unrecorded,
    /// Replaced because its content was unusable, and why.
    Replaced(String),
    /// Rotated (or pruned), and why.
    Rotated(String),
}

/// The outcome of keeping one Secret.
#[derive(Clone, Debug)]
pub struct Kept {
    /// The keys now in the Secret.
    pub keyset: Keyset,
    /// The Secret's UID.
    pub uid: Option<String>,
    /// What this pass did.
    pub change: Change,
    /// When the keyset next needs a look.
    pub next_due: Option<Timestamp>,
}

/// What to do with one Secret, decided from what was read.
#[derive(Debug)]
pub enum Decision {
    /// Use it as it is.
    Keep(Keyset),
    /// Write this keyset over the existing Secret.
    Update(Keyset, Change),
    /// Create the Secret with this keyset.
    Create(Keyset, Change),
    /// A Secret of that name exists and is not ours: leave it alone.
    Foreign,
}

/// Why a Secret cannot be used, for the `SecretsReady` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The condition's reason.
    pub reason: &'static str,
    /// What to do about it.
    pub message: String,
}

/// Decides what a Secret needs. `known_uid` is the UID recorded in status, so that a
/// Secret that disappeared is told apart from one never made.
pub fn decide(
    existing: Option<&Secret>,
    known_uid: Option<&str>,
    kind: KeyKind,
    policy: Policy,
    now: Timestamp,
) -> Result<Decision, KeyError> {
    let Some(secret) = existing else {
        let change = if known_uid.is_some() {
            Change::Regenerated
        } else {
            Change::Created
        };
        return Ok(Decision::Create(
            Keyset {
                keys: vec![kind.generate(now)?],
            },
            change,
        ));
    };

    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEYSET_KEY))
        .map(|b| b.0.as_slice());
    let parsed = Keyset::from_bytes(bytes).and_then(|set| kind.validate(&set).map(|()| set));
    let set = match (parsed, is_managed(secret)) {
        (Ok(set), _) => set,
        (Err(_), false) => return Ok(Decision::Foreign),
        (Err(why), true) => {
            let fresh = Keyset {
                keys: vec![kind.generate(now)?],
            };
            return Ok(Decision::Update(fresh, Change::Replaced(why.to_string())));
        }
    };

    let plan = rotation::plan(&set, now, policy);
    if plan.is_noop() {
        return Ok(Decision::Keep(set));
    }
    let why = plan
        .rotate
        .clone()
        .unwrap_or_else(|| format!("retired key(s) {} expired", plan.prune.join(", ")));
    let next = rotation::apply(&set, &plan, now, || kind.generate(now))?;
    Ok(Decision::Update(next, Change::Rotated(why)))
}

/// The Secret the operator writes.
pub fn desired(
    name: &str,
    namespace: &str,
    connector: &str,
    owner: OwnerReference,
    keyset: &Keyset,
    existing: Option<&Secret>,
) -> Secret {
    let mut labels = existing
        .and_then(|s| s.metadata.labels.clone())
        .unwrap_or_default();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels.insert(CONNECTOR_LABEL.into(), connector.into());

    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            resource_version: existing.and_then(|s| s.metadata.resource_version.clone()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            KEYSET_KEY.to_string(),
            ByteString(keyset.to_bytes()),
        )])),
        ..Secret::default()
    }
}

/// Keeps one Secret: reads it, decides, writes.
#[allow(clippy::too_many_arguments)]
pub async fn keep(
    api: &Api<Secret>,
    name: &str,
    namespace: &str,
    connector: &str,
    owner: OwnerReference,
    known_uid: Option<&str>,
    kind: KeyKind,
    policy: Policy,
    now: Timestamp,
) -> Result<Result<Kept, Refused>, Error> {
    let existing = api
        .get_opt(name)
        .await
        .map_err(|source| Error::ReadSecret {
            name: name.into(),
            source,
        })?;
    if let Some(other) = existing
        .as_ref()
        .and_then(|s| kept_for_another(s, connector))
    {
        return Ok(Err(Refused {
            reason: "SecretInUse",
            message: format!(
                "{}; name another Secret in spec.secrets",
                in_use(name, other)
            ),
        }));
    }
    let decision =
        decide(existing.as_ref(), known_uid, kind, policy, now).map_err(Error::Generate)?;

    let (keyset, change, written) = match decision {
        Decision::Foreign => {
            return Ok(Err(Refused {
                reason: "SecretNotManaged",
                message: format!(
                    "Secret {name} exists, is not managed by mcp-connector and holds no usable \
                     keys; delete it or name another Secret in spec.secrets"
                ),
            }));
        }
        Decision::Keep(set) => {
            let uid = existing.as_ref().and_then(|s| s.metadata.uid.clone());
            let next_due = rotation::next_due(&set, policy);
            // Why: a Secret other than the one recorded in status was made again by a pass
            // that stopped before recording it; its regeneration (and the restarts that it
            // orders) must still be reported.
            let change = match known_uid {
                Some(known) if uid.as_deref() != Some(known) => Change::Unrecorded,
                _ => Change::Kept,
            };
            return Ok(Ok(Kept {
                keyset: set,
                uid,
                change,
                next_due,
            }));
        }
        Decision::Create(set, change) => {
            let secret = desired(name, namespace, connector, owner, &set, None);
            let created = api
                .create(&PostParams::default(), &secret)
                .await
                .map_err(|source| Error::WriteSecret {
                    name: name.into(),
                    source,
                })?;
            (set, change, created)
        }
        Decision::Update(set, change) => {
            // The resourceVersion makes this a compare-and-swap: a replica with a stale view
            // gets a conflict and retries instead of overwriting newer keys.
            let secret = desired(name, namespace, connector, owner, &set, existing.as_ref());
            let replaced = api
                .replace(name, &PostParams::default(), &secret)
                .await
                .map_err(|source| Error::WriteSecret {
                    name: name.into(),
                    source,
                })?;
            (set, change, replaced)
        }
    };

    let next_due = rotation::next_due(&keyset, policy);
    Ok(Ok(Kept {
        keyset,
        uid: written.metadata.uid,
        change,
        next_due,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    fn policy() -> Policy {
        Policy {
            rotate_every: SignedDuration::from_hours(720),
            retain_for: SignedDuration::from_hours(1),
        }
    }

    fn now() -> Timestamp {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    fn secret_with(bytes: &[u8], managed: bool) -> Secret {
        let mut s = Secret {
            data: Some(BTreeMap::from([(
                KEYSET_KEY.to_string(),
                ByteString(bytes.to_vec()),
            )])),
            ..Secret::default()
        };
        if managed {
            s.metadata.labels = Some(BTreeMap::from([(
                MANAGED_BY_LABEL.into(),
                MANAGED_BY.into(),
            )]));
        }
        s
    }

    #[test]
    fn a_missing_secret_is_created_or_regenerated() {
        let first = decide(None, None, KeyKind::Seal, policy(), now()).unwrap();
        let again = decide(None, Some("old-uid"), KeyKind::Seal, policy(), now()).unwrap();

        assert!(matches!(first, Decision::Create(_, Change::Created)));
        assert!(matches!(again, Decision::Create(_, Change::Regenerated)));
    }

    #[test]
    fn garbage_in_our_secret_is_replaced_and_in_a_foreign_one_left_alone() {
        let ours = decide(
            Some(&secret_with(b"garbage", true)),
            None,
            KeyKind::Seal,
            policy(),
            now(),
        );
        let theirs = decide(
            Some(&secret_with(b"garbage", false)),
            None,
            KeyKind::Seal,
            policy(),
            now(),
        );

        assert!(matches!(
            ours.unwrap(),
            Decision::Update(_, Change::Replaced(_))
        ));
        assert!(matches!(theirs.unwrap(), Decision::Foreign));
    }

    #[test]
    fn a_managed_secret_labelled_for_another_connector_is_theirs() {
        let mut secret = secret_with(b"", true);
        let labels = secret.metadata.labels.get_or_insert_default();
        labels.insert(CONNECTOR_LABEL.into(), "observability".into());

        assert_eq!(kept_for_another(&secret, "staging"), Some("observability"));
        assert_eq!(kept_for_another(&secret, "observability"), None);

        // A Secret someone else labelled is not ours to refuse; it is judged by its content.
        let mut foreign = secret.clone();
        foreign
            .metadata
            .labels
            .get_or_insert_default()
            .remove(MANAGED_BY_LABEL);
        assert_eq!(kept_for_another(&foreign, "staging"), None);
    }

    #[test]
    fn a_current_keyset_is_kept_and_an_old_one_rotated() {
        let young = Keyset {
            keys: vec![KeyKind::Signing.generate(now()).unwrap()],
        };
        let secret = secret_with(&young.to_bytes(), true);
        let later = now() + SignedDuration::from_hours(721);

        let kept = decide(Some(&secret), None, KeyKind::Signing, policy(), now()).unwrap();
        let rotated = decide(Some(&secret), None, KeyKind::Signing, policy(), later).unwrap();

        assert!(matches!(kept, Decision::Keep(_)));
        let Decision::Update(set, Change::Rotated(_)) = rotated else {
            panic!("{rotated:?}")
        };
        assert_eq!(set.keys[1].kid, young.keys[0].kid);
    }

    #[test]
    fn a_seal_keyset_in_the_signing_secret_is_unusable() {
        let seal = Keyset {
            keys: vec![KeyKind::Seal.generate(now()).unwrap()],
        };
        let secret = secret_with(&seal.to_bytes(), true);

        let d = decide(Some(&secret), None, KeyKind::Signing, policy(), now()).unwrap();

        assert!(matches!(d, Decision::Update(_, Change::Replaced(_))));
    }
}
