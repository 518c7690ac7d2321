//! Grant state in the Kubernetes API, so that it survives restarts and every replica sees
//! it. It lives in ConfigMaps in the operator's namespace, sharded by a hash of the id:
//! `mcp-connector-grants-<n>` for refresh grants and revocations, `mcp-connector-codes-<n>`
//! for redeemed codes. Each entry carries its expiry and is dropped on the next write to its
//! shard after that, so the objects stay small however many users log in.
//!
//! Every write is a compare-and-swap on the ConfigMap's resourceVersion: two replicas
//! redeeming one code, or refreshing one grant, cannot both win. Reads for `/mcp` (is this
//! grant revoked?) come from an in-memory set fed by a watch, never from the API.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use super::{GrantError, GrantRecord, GrantStore, Refresh, decide};
use crate::crd::{MANAGED_BY, MANAGED_BY_LABEL};

/// Number of shards of each kind.
pub const SHARDS: u64 = 16;

/// Label telling the grant ConfigMaps apart from others.
pub const GRANTS_LABEL: &str = "mcp.kloudfuse.io/grant-state";

/// Attempts of one compare-and-swap before giving up.
const ATTEMPTS: usize = 8;

#[derive(Clone, Copy)]
enum Kind {
    Codes,
    Grants,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Codes => "mcp-connector-codes",
            Kind::Grants => "mcp-connector-grants",
        }
    }
}

fn shard_of(id: &str) -> u64 {
    // FNV-1a: stable across processes and versions, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % SHARDS
}

/// ConfigMap keys must be `[-._a-zA-Z0-9]+`; connector ids hold a `/`.
fn entry_key(connector: &str, id: &str) -> String {
    format!("{}.{id}", connector.replace('/', "."))
}

/// Grant state in ConfigMaps.
pub struct KubeGrants {
    api: Api<ConfigMap>,
    revoked: Arc<RwLock<HashSet<String>>>,
}

impl KubeGrants {
    /// Grant state in `namespace`. Call [`KubeGrants::watch`] to keep the revocation set
    /// current.
    pub fn new(client: kube::Client, namespace: &str) -> KubeGrants {
        KubeGrants {
            api: Api::namespaced(client, namespace),
            revoked: Arc::default(),
        }
    }

    /// Follows the grant ConfigMaps and keeps the in-memory set of revoked grants, until
    /// the watch ends.
    pub fn watch(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let api = self.api.clone();
        let revoked = self.revoked.clone();
        let selector = format!("{GRANTS_LABEL}=grants");

        async move {
            let stream = watcher(api, watcher::Config::default().labels(&selector))
                .default_backoff()
                .applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                let Ok(cm) = item else { continue };
                let found: Vec<String> = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(_, v)| {
                        serde_json::from_str::<GrantRecord>(v).is_ok_and(|r| r.revoked)
                    })
                    .map(|(k, _)| k)
                    .collect();
                let mut set = match revoked.write() {
                    Ok(s) => s,
                    Err(p) => p.into_inner(),
                };
                set.extend(found);
            }
        }
    }

    fn remember_revoked(&self, key: String) {
        let mut set = match self.revoked.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        set.insert(key);
    }

    /// Reads a shard, applies `edit` to its entries, and writes it back if it changed,
    /// retrying on conflicts. Expired entries are dropped on the way.
    async fn update<T>(
        &self,
        kind: Kind,
        id: &str,
        now: Timestamp,
        mut edit: impl FnMut(&mut BTreeMap<String, String>) -> T,
    ) -> Result<T, GrantError> {
        let name = format!("{}-{}", kind.prefix(), shard_of(id));

        for _ in 0..ATTEMPTS {
            let existing = self
                .api
                .get_opt(&name)
                .await
                .map_err(|e| GrantError(e.to_string()))?;
            let mut data = existing
                .as_ref()
                .and_then(|c| c.data.clone())
                .unwrap_or_default();
            let before = data.clone();
            data.retain(|_, v| !expired(v, now));
            let out = edit(&mut data);
            if data == before {
                return Ok(out);
            }

            let result = match existing {
                Some(mut cm) => {
                    cm.data = Some(data);
                    self.api.replace(&name, &PostParams::default(), &cm).await
                }
                None => {
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            labels: Some(BTreeMap::from([
                                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                                (
                                    GRANTS_LABEL.to_string(),
                                    match kind {
                                        Kind::Codes => "codes".to_string(),
                                        Kind::Grants => "grants".to_string(),
                                    },
                                ),
                            ])),
                            ..ObjectMeta::default()
                        },
                        data: Some(data),
                        ..ConfigMap::default()
                    };
                    self.api.create(&PostParams::default(), &cm).await
                }
            };
            match result {
                Ok(_) => return Ok(out),
                // Another replica wrote the shard first: read it again and redo the edit.
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(GrantError(e.to_string())),
            }
        }
        Err(GrantError(format!("{name}: too many conflicting writes")))
    }
}

/// Whether an entry (a code's expiry, or a grant record) has expired.
fn expired(value: &str, now: Timestamp) -> bool {
    if let Ok(record) = serde_json::from_str::<GrantRecord>(value) {
        return record.expires <= now;
    }
    value.parse::<Timestamp>().is_ok_and(|t| t <= now)
}

impl GrantStore for KubeGrants {
    fn redeem_code<'a>(
        &'a self,
        connector: &'a str,
        code_id: &'a str,
        expires: Timestamp,
    ) -> BoxFuture<'a, Result<bool, GrantError>> {
        async move {
            let key = entry_key(connector, code_id);
            let now = Timestamp::now();
            self.update(Kind::Codes, code_id, now, |data| {
                if data.contains_key(&key) {
                    return false;
                }
                data.insert(key.clone(), expires.to_string());
                true
            })
            .await
        }
        .boxed()
    }

    fn refresh<'a>(
        &'a self,
        connector: &'a str,
        grant: &'a str,
        presented: u64,
        now: Timestamp,
        expires: Timestamp,
    ) -> BoxFuture<'a, Result<Refresh, GrantError>> {
        async move {
            let key = entry_key(connector, grant);
            let outcome = self
                .update(Kind::Grants, grant, now, |data| {
                    let record = data.get(&key).and_then(|v| serde_json::from_str(v).ok());
                    let (outcome, next) = decide(record.as_ref(), presented, now, expires);
                    if let Ok(json) = serde_json::to_string(&next) {
                        data.insert(key.clone(), json);
                    }
                    outcome
                })
                .await?;
            if matches!(outcome, Refresh::Replayed | Refresh::Revoked) {
                self.remember_revoked(key);
            }
            Ok(outcome)
        }
        .boxed()
    }

    fn revoke<'a>(
        &'a self,
        connector: &'a str,
        grant: &'a str,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<(), GrantError>> {
        async move {
            let key = entry_key(connector, grant);
            let now = Timestamp::now();
            self.update(Kind::Grants, grant, now, |data| {
                let mut record = data
                    .get(&key)
                    .and_then(|v| serde_json::from_str::<GrantRecord>(v).ok())
                    .unwrap_or(GrantRecord {
                        generation: 0,
                        rotated_at: now,
                        expires: until,
                        revoked: true,
                    });
                record.revoked = true;
                record.expires = record.expires.max(until);
                if let Ok(json) = serde_json::to_string(&record) {
                    data.insert(key.clone(), json);
                }
            })
            .await?;
            self.remember_revoked(key);
            Ok(())
        }
        .boxed()
    }

    fn is_revoked(&self, connector: &str, grant: &str) -> bool {
        let set = match self.revoked.read() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        set.contains(&entry_key(connector, grant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        let shards: HashSet<u64> = (0..200).map(|i| shard_of(&format!("grant-{i}"))).collect();

        assert_eq!(shard_of("abc"), shard_of("abc"));
        assert_eq!(shards.len(), SHARDS as usize);
    }

    #[test]
    fn entry_keys_are_valid_configmap_keys() {
        let key = entry_key("ns/name", "Zx_-9");

        assert!(
            key.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
            "{key}"
        );
    }

    #[test]
    fn expiry_reads_both_entry_shapes() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let record = GrantRecord {
            generation: 1,
            rotated_at: now,
            expires: now,
            revoked: false,
        };

        assert!(expired(&serde_json::to_string(&record).unwrap(), now));
        assert!(expired("2025-12-31T23:59:59Z", now));
        assert!(!expired("2026-01-01T00:00:01Z", now));
    }
}
