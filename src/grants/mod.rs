//! The little state that must be shared between replicas and survive restarts: codes
//! already redeemed, the current generation of each refresh grant, and revoked grants.
//!
//! Everything else (registrations, codes, refresh tokens) is sealed and carries its own
//! state. A grant nobody has refreshed yet has no record: generation 0 is implied, so issuing
//! a token writes nothing.

pub mod file;
pub mod kube;
pub mod memory;

use futures::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

pub use memory::MemoryGrants;

/// How long the previous refresh token of a grant keeps working after it was rotated, so
/// that two processes of one client refreshing at once both succeed.
pub const REFRESH_GRACE: SignedDuration = SignedDuration::from_secs(10);

/// The shared state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("grant state unavailable: {0}")]
pub struct GrantError(pub String);

/// What one refresh grant looks like in the shared state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// The generation whose refresh token is current.
    pub generation: u64,
    /// When the current generation replaced the previous one.
    pub rotated_at: Timestamp,
    /// When the record may be forgotten (the newest refresh token's expiry).
    pub expires: Timestamp,
    /// Set once the grant is revoked.
    #[serde(default)]
    pub revoked: bool,
}

/// The outcome of presenting a refresh token of generation `n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// `n` was current: the new token has this generation.
    Rotated(u64),
    /// `n` was replaced moments ago by a racing refresh: issue the current generation again.
    Raced(u64),
    /// `n` is older: a replay. The grant is now revoked (RFC 9700 4.14.2).
    Replayed,
    /// The grant was revoked before.
    Revoked,
}

/// Decides a refresh: the one rule both implementations share.
pub fn decide(
    record: Option<&GrantRecord>,
    presented: u64,
    now: Timestamp,
    expires: Timestamp,
) -> (Refresh, GrantRecord) {
    let current = record.cloned().unwrap_or(GrantRecord {
        generation: 0,
        rotated_at: now,
        expires,
        revoked: false,
    });

    if current.revoked {
        return (Refresh::Revoked, current);
    }
    if presented == current.generation {
        let next = GrantRecord {
            generation: current.generation + 1,
            rotated_at: now,
            expires: expires.max(current.expires),
            revoked: false,
        };
        return (Refresh::Rotated(next.generation), next);
    }

    let within_grace = now.duration_since(current.rotated_at) <= REFRESH_GRACE;
    if presented + 1 == current.generation && within_grace {
        return (Refresh::Raced(current.generation), current);
    }
    (
        Refresh::Replayed,
        GrantRecord {
            revoked: true,
            ..current
        },
    )
}

/// Shared grant state, in memory or in the Kubernetes API.
pub trait GrantStore: Send + Sync + 'static {
    /// Marks a code as redeemed; `false` when it already was (a replay).
    fn redeem_code<'a>(
        &'a self,
        connector: &'a str,
        code_id: &'a str,
        expires: Timestamp,
    ) -> BoxFuture<'a, Result<bool, GrantError>>;

    /// Presents a refresh token of generation `presented` of grant `grant`.
    fn refresh<'a>(
        &'a self,
        connector: &'a str,
        grant: &'a str,
        presented: u64,
        now: Timestamp,
        expires: Timestamp,
    ) -> BoxFuture<'a, Result<Refresh, GrantError>>;

    /// Revokes a grant until `until` (after which every token of it has expired anyway).
    fn revoke<'a>(
        &'a self,
        connector: &'a str,
        grant: &'a str,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<(), GrantError>>;

    /// Whether a grant is revoked, from memory: called on every `/mcp` request.
    fn is_revoked(&self, connector: &str, grant: &str) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s as i64).unwrap()
    }

    #[test]
    fn the_first_refresh_rotates_from_the_implied_generation() {
        let (outcome, record) = decide(None, 0, t(0), t(100));

        assert_eq!(outcome, Refresh::Rotated(1));
        assert_eq!(record.generation, 1);
    }

    #[test]
    fn a_race_inside_the_grace_window_gets_the_current_generation() {
        let (_, record) = decide(None, 0, t(0), t(100));

        let (outcome, _) = decide(
            Some(&record),
            0,
            t(0) + SignedDuration::from_millis(50),
            t(100),
        );

        assert_eq!(outcome, Refresh::Raced(1));
    }

    #[test]
    fn a_replay_after_the_window_revokes_the_grant() {
        let (_, record) = decide(None, 0, t(0), t(100));

        let (outcome, revoked) = decide(Some(&record), 0, t(60), t(100));
        let (after, _) = decide(Some(&revoked), 1, t(61), t(100));

        assert_eq!(outcome, Refresh::Replayed);
        assert!(revoked.revoked);
        assert_eq!(
            after,
            Refresh::Revoked,
            "even the current token stops working"
        );
    }

    #[test]
    fn a_token_from_the_future_is_a_replay() {
        let (outcome, _) = decide(None, 5, t(0), t(100));

        assert_eq!(outcome, Refresh::Replayed);
    }
}
