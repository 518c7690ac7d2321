//! Grant state in this process's memory: for `dev`, for tests, and as the cache in front
//! of the Kubernetes-backed store.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::FutureExt;
use futures::future::BoxFuture;
use jiff::Timestamp;

use super::{GrantError, GrantRecord, GrantStore, Refresh, decide};

/// Entries beyond which expired ones are swept on the next write.
const SWEEP_AT: usize = 4096;

/// Everything the store holds, as saved by [`super::file::FileGrants`].
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct State {
    codes: HashMap<String, Timestamp>,
    grants: HashMap<String, GrantRecord>,
    /// Entries at which the next sweep runs: twice what the last sweep kept. A store full
    /// of live entries (a minute of codes under load) is then not scanned on every write.
    #[serde(skip)]
    sweep_at: usize,
}

/// Grant state held in memory.
#[derive(Default)]
pub struct MemoryGrants {
    state: Mutex<State>,
}

impl MemoryGrants {
    /// An empty store.
    pub fn new() -> MemoryGrants {
        MemoryGrants::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// A store holding `state`.
    pub fn from_state(state: State) -> MemoryGrants {
        MemoryGrants {
            state: Mutex::new(state),
        }
    }

    /// A copy of everything held, with expired entries left out.
    pub fn state(&self, now: Timestamp) -> State {
        self.with(|s| State {
            codes: s
                .codes
                .iter()
                .filter(|(_, e)| **e > now)
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            grants: s
                .grants
                .iter()
                .filter(|(_, g)| g.expires > now)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            sweep_at: 0,
        })
    }

    /// Number of grant records held, for tests and metrics.
    pub fn grant_count(&self) -> usize {
        self.with(|s| s.grants.len())
    }
}

fn key(connector: &str, id: &str) -> String {
    format!("{connector}\u{0}{id}")
}

fn sweep(state: &mut State, now: Timestamp) {
    if state.codes.len() + state.grants.len() <= state.sweep_at.max(SWEEP_AT) {
        return;
    }
    state.codes.retain(|_, exp| *exp > now);
    state.grants.retain(|_, g| g.expires > now);
    state.sweep_at = 2 * (state.codes.len() + state.grants.len());
}

impl GrantStore for MemoryGrants {
    fn redeem_code<'a>(
        &'a self,
        connector: &'a str,
        code_id: &'a str,
        expires: Timestamp,
    ) -> BoxFuture<'a, Result<bool, GrantError>> {
        let first = self.with(|s| {
            sweep(s, Timestamp::now());
            s.codes.insert(key(connector, code_id), expires).is_none()
        });
        async move { Ok(first) }.boxed()
    }

    fn refresh<'a>(
        &'a self,
        connector: &'a str,
        grant: &'a str,
        presented: u64,
        now: Timestamp,
        expires: Timestamp,
    ) -> BoxFuture<'a, Result<Refresh, GrantError>> {
        let outcome = self.with(|s| {
            sweep(s, now);
            let k = key(connector, grant);
            let (outcome, record) = decide(s.grants.get(&k), presented, now, expires);
            s.grants.insert(k, record);
            outcome
        });
        async move { Ok(outcome) }.boxed()
    }

    fn revoke<'a>(
        &'a self,
        connector: &'a str,
        grant: &'a str,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<(), GrantError>> {
        self.with(|s| {
            let record = s
                .grants
                .entry(key(connector, grant))
                .or_insert(GrantRecord {
                    generation: 0,
                    rotated_at: until,
                    expires: until,
                    revoked: true,
                });
            record.revoked = true;
            record.expires = record.expires.max(until);
        });
        async move { Ok(()) }.boxed()
    }

    fn is_revoked(&self, connector: &str, grant: &str) -> bool {
        self.with(|s| {
            s.grants
                .get(&key(connector, grant))
                .is_some_and(|g| g.revoked)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    #[test]
    fn live_entries_are_not_rescanned_on_every_write_and_expired_ones_go() {
        let now = Timestamp::now();
        let mut state = State::default();
        for i in 0..=SWEEP_AT {
            state
                .codes
                .insert(format!("live-{i}"), now + SignedDuration::from_mins(1));
        }
        state
            .codes
            .insert("old".into(), now - SignedDuration::from_secs(1));

        sweep(&mut state, now);
        assert!(!state.codes.contains_key("old"));
        assert_eq!(state.sweep_at, 2 * (SWEEP_AT + 1));

        // Below the new mark nothing is scanned, so an expired entry may stay a while.
        state
            .codes
            .insert("old".into(), now - SignedDuration::from_secs(1));
        sweep(&mut state, now);
        assert!(state.codes.contains_key("old"));
    }
}
