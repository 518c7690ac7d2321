//! When a keyset rotates and when retired keys are dropped: pure decisions with the clock
//! passed in, so that every branch is tested without waiting.
//!
//! A rotation never logs anyone out: the replaced key stays in the keyset, retired, for as
//! long as something it signed may still be presented (`retain_for`), and only then goes.

use jiff::{SignedDuration, Timestamp};

use super::{KeyError, Keyset, StoredKey};

/// How one Secret's keys age.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Age at which the current key is replaced.
    pub rotate_every: SignedDuration,
    /// How long a retired key keeps verifying: the longest lifetime of what it signed.
    pub retain_for: SignedDuration,
}

/// What a keyset needs now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Why the current key must be replaced, if it must.
    pub rotate: Option<String>,
    /// Retired keys whose retention has run out.
    pub prune: Vec<String>,
}

impl Plan {
    /// Whether the keyset stays as it is.
    pub fn is_noop(&self) -> bool {
        self.rotate.is_none() && self.prune.is_empty()
    }
}

/// Decides what a keyset needs at `now`.
pub fn plan(set: &Keyset, now: Timestamp, policy: Policy) -> Plan {
    let rotate = set
        .current()
        .and_then(|current| rotation_due(current, now, policy));
    let prune = set
        .keys
        .iter()
        .skip(1)
        .filter(|key| retention_over(key, now, policy))
        .map(|key| key.kid.clone())
        .collect();

    Plan { rotate, prune }
}

/// The current key is due once it is `rotate_every` old.
fn rotation_due(current: &StoredKey, now: Timestamp, policy: Policy) -> Option<String> {
    let age = now.duration_since(current.created);
    if age < policy.rotate_every {
        return None;
    }
    Some(format!(
        "key {} is {} old; it rotates every {}",
        current.kid,
        human(age),
        human(policy.rotate_every)
    ))
}

/// A retired key goes once nothing it signed can still be valid. A key with no retirement
/// time (edited by hand) is treated as retired when its successor was made.
fn retention_over(key: &StoredKey, now: Timestamp, policy: Policy) -> bool {
    let retired = key.retired.unwrap_or(key.created);
    now.duration_since(retired) >= policy.retain_for
}

/// Carries out a plan: `fresh` becomes the current key when the plan rotates.
pub fn apply(
    set: &Keyset,
    plan: &Plan,
    now: Timestamp,
    fresh: impl FnOnce() -> Result<StoredKey, KeyError>,
) -> Result<Keyset, KeyError> {
    let mut keys: Vec<StoredKey> = set
        .keys
        .iter()
        .filter(|key| !plan.prune.contains(&key.kid))
        .cloned()
        .collect();

    if plan.rotate.is_some() {
        if let Some(current) = keys.first_mut() {
            current.retired = Some(now);
        }
        keys.insert(0, fresh()?);
    }
    Ok(Keyset { keys })
}

/// When the keyset next needs a look: the earlier of the next rotation and the next prune.
pub fn next_due(set: &Keyset, policy: Policy) -> Option<Timestamp> {
    let rotation = set
        .current()
        .and_then(|c| c.created.checked_add(policy.rotate_every).ok());
    let prunes = set.keys.iter().skip(1).filter_map(|key| {
        let retired = key.retired.unwrap_or(key.created);
        retired.checked_add(policy.retain_for).ok()
    });

    rotation.into_iter().chain(prunes).min()
}

/// A duration as people write it, in whole hours when it is that long.
fn human(d: SignedDuration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 && secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_seal_key;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn policy() -> Policy {
        Policy {
            rotate_every: SignedDuration::from_hours(720),
            retain_for: SignedDuration::from_hours(24),
        }
    }

    fn keyset_made_at(t: &str) -> Keyset {
        Keyset {
            keys: vec![generate_seal_key(at(t)).unwrap()],
        }
    }

    #[test]
    fn a_young_key_stays() {
        let set = keyset_made_at("2026-01-01T00:00:00Z");

        let plan = plan(&set, at("2026-01-30T23:59:59Z"), policy());

        assert!(plan.is_noop(), "{plan:?}");
    }

    #[test]
    fn an_old_key_rotates_and_is_kept_as_previous() {
        let set = keyset_made_at("2026-01-01T00:00:00Z");
        let now = at("2026-01-31T00:00:00Z");

        let plan = plan(&set, now, policy());
        let next = apply(&set, &plan, now, || generate_seal_key(now)).unwrap();

        assert!(plan.rotate.as_deref().unwrap().contains("720h"));
        assert_eq!(next.keys.len(), 2);
        assert_eq!(next.keys[1].kid, set.keys[0].kid);
        assert_eq!(next.keys[1].retired, Some(now));
        assert_eq!(next.keys[0].retired, None);
        assert_ne!(next.keys[0].kid, set.keys[0].kid);
    }

    #[test]
    fn a_retired_key_goes_only_after_its_retention() {
        let made = at("2026-01-01T00:00:00Z");
        let rotated = at("2026-01-31T00:00:00Z");
        let set = keyset_made_at("2026-01-01T00:00:00Z");
        let rotated_set = apply(&set, &plan(&set, rotated, policy()), rotated, || {
            generate_seal_key(rotated)
        })
        .unwrap();

        let before = plan(&rotated_set, at("2026-01-31T23:59:59Z"), policy());
        let after = plan(&rotated_set, at("2026-02-01T00:00:00Z"), policy());

        assert!(before.is_noop(), "{before:?}");
        assert_eq!(after.prune, vec![set.keys[0].kid.clone()]);
        assert!(made < rotated);
    }

    #[test]
    fn next_due_is_the_earliest_of_rotation_and_prune() {
        let rotated = at("2026-01-31T00:00:00Z");
        let set = keyset_made_at("2026-01-01T00:00:00Z");
        let rotated_set = apply(&set, &plan(&set, rotated, policy()), rotated, || {
            generate_seal_key(rotated)
        })
        .unwrap();

        assert_eq!(next_due(&set, policy()), Some(at("2026-01-31T00:00:00Z")));
        assert_eq!(
            next_due(&rotated_set, policy()),
            Some(at("2026-02-01T00:00:00Z"))
        );
    }
}
