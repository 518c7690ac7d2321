//! The key store the OAuth server reads on every request: each connector's base URL,
//! settings and keys, indexed by the host it is served on.
//!
//! Writers (the reconciler, `dev`) replace a whole connector at once; readers take an `Arc`
//! of the current snapshot, so a request sees one consistent view and a key change is
//! visible to the next request without a restart.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock};

use crate::base_url::{BaseUrl, request_host_key};
use crate::settings::Settings;
use crate::upstream::Upstream;

use super::{KeyError, Keyset, SealKey, SigningKey};

/// A connector's usable keys: sealing keys and signing keys, current first.
pub struct Keys {
    /// Sealing keys from the DCR Secret, current first.
    pub seal: Vec<SealKey>,
    /// Signing keys from the signing-key Secret, current first.
    pub signing: Vec<SigningKey>,
    /// The JWKS document, built once.
    pub jwks: serde_json::Value,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seal: Vec<&str> = self.seal.iter().map(|k| k.kid.as_str()).collect();
        let signing: Vec<&str> = self.signing.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("Keys")
            .field("seal", &seal)
            .field("signing", &signing)
            .finish()
    }
}

impl Keys {
    /// Decodes both keysets.
    pub fn from_keysets(dcr: &Keyset, signing: &Keyset) -> Result<Keys, KeyError> {
        let seal = dcr
            .keys
            .iter()
            .map(SealKey::from_stored)
            .collect::<Result<Vec<_>, _>>()?;
        let signing = signing
            .keys
            .iter()
            .map(SigningKey::from_stored)
            .collect::<Result<Vec<_>, _>>()?;
        if seal.is_empty() || signing.is_empty() {
            return Err(KeyError::EmptyKeyset);
        }

        let jwks = serde_json::json!({
            "keys": signing.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()
        });
        Ok(Keys {
            seal,
            signing,
            jwks,
        })
    }

    /// The sealing key new values are sealed with.
    pub fn current_seal(&self) -> &SealKey {
        &self.seal[0]
    }

    /// The sealing key with this tag, current or retired.
    pub fn seal_by_tag(&self, tag: &[u8]) -> Option<&SealKey> {
        self.seal.iter().find(|k| k.tag == tag)
    }

    /// The key new access tokens are signed with.
    pub fn current_signing(&self) -> &SigningKey {
        &self.signing[0]
    }

    /// The signing key with this `kid`, current or retired.
    pub fn signing_by_kid(&self, kid: &str) -> Option<&SigningKey> {
        self.signing.iter().find(|k| k.kid == kid)
    }
}

/// Everything the OAuth server needs to serve one connector.
#[derive(Debug)]
pub struct Connector {
    /// `namespace/name` of the `McpConnector`, or `dev`.
    pub id: String,
    /// The public base URL.
    pub base: BaseUrl,
    /// The validated spec.
    pub settings: Settings,
    /// How users sign in, with its secrets.
    pub upstream: Upstream,
    /// The keys.
    pub keys: Arc<Keys>,
    /// Serve any loopback name of the base URL's port (`dev` only).
    pub loopback_aliases: bool,
}

/// One connector as the store knows it.
#[derive(Clone, Debug)]
pub enum Entry {
    /// Ready to serve.
    Serving(Arc<Connector>),
    /// Known, but not serving: the host it would serve (if its base URL resolved) and why.
    Unavailable {
        /// Host key of the base URL, when there is one.
        host: Option<String>,
        /// Why it does not serve.
        why: String,
    },
}

/// Where a request goes.
#[derive(Clone, Debug)]
pub enum Route {
    /// To this connector, reached at this base URL.
    Serve(Arc<Connector>, BaseUrl),
    /// No connector serves the host, but some connector has no base URL yet: why.
    Unavailable(String),
    /// No connector serves the host.
    Unknown,
}

#[derive(Default)]
struct Snapshot {
    entries: BTreeMap<String, Entry>,
    by_host: HashMap<String, Arc<Connector>>,
    unavailable_hosts: HashMap<String, String>,
    aliased: Vec<Arc<Connector>>,
}

impl Snapshot {
    fn build(entries: BTreeMap<String, Entry>) -> Snapshot {
        let mut by_host = HashMap::new();
        let mut aliased = Vec::new();
        let mut unavailable_hosts = HashMap::new();

        // Entries are visited in id order, so when two connectors claim one host the
        // choice is stable across replicas.
        for entry in entries.values() {
            match entry {
                Entry::Serving(c) => {
                    by_host
                        .entry(c.base.host_key().to_string())
                        .or_insert_with(|| c.clone());
                    if c.loopback_aliases {
                        aliased.push(c.clone());
                    }
                }
                Entry::Unavailable {
                    host: Some(host),
                    why,
                } => {
                    unavailable_hosts
                        .entry(host.clone())
                        .or_insert_with(|| why.clone());
                }
                Entry::Unavailable { host: None, .. } => {}
            }
        }
        unavailable_hosts.retain(|host, _| !by_host.contains_key(host));
        Snapshot {
            entries,
            by_host,
            unavailable_hosts,
            aliased,
        }
    }
}

/// The shared, cheaply cloned view of every connector.
#[derive(Clone, Default)]
pub struct KeyStore {
    inner: Arc<RwLock<Arc<Snapshot>>>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snap = self.snapshot();
        let ids: Vec<&String> = snap.entries.keys().collect();
        f.debug_struct("KeyStore")
            .field("connectors", &ids)
            .finish()
    }
}

impl KeyStore {
    /// An empty store.
    pub fn new() -> KeyStore {
        KeyStore::default()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        match self.inner.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn update(&self, edit: impl FnOnce(&mut BTreeMap<String, Entry>)) {
        let mut guard = match self.inner.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut entries = guard.entries.clone();
        edit(&mut entries);
        *guard = Arc::new(Snapshot::build(entries));
    }

    /// Adds or replaces a connector.
    pub fn upsert(&self, id: &str, entry: Entry) {
        self.update(|entries| {
            entries.insert(id.to_string(), entry);
        });
    }

    /// Forgets a connector.
    pub fn remove(&self, id: &str) {
        self.update(|entries| {
            entries.remove(id);
        });
    }

    /// Forgets every connector whose id `keep` refuses.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.update(|entries| entries.retain(|id, _| keep(id)));
    }

    /// The connector with this id, if it is serving.
    pub fn get(&self, id: &str) -> Option<Arc<Connector>> {
        match self.snapshot().entries.get(id) {
            Some(Entry::Serving(c)) => Some(c.clone()),
            _ => None,
        }
    }

    /// How many connectors are known and how many serve.
    pub fn counts(&self) -> (usize, usize) {
        let snap = self.snapshot();
        (snap.entries.len(), snap.by_host.len())
    }

    /// Routes a request by the host it names (its target's authority, else its `Host`).
    pub fn route(&self, host: Option<&str>, https: bool) -> Route {
        let snap = self.snapshot();
        let Some(host) = host else {
            return Route::Unknown;
        };
        let key = request_host_key(host, https);
        let key = key.as_ref();

        if let Some(c) = snap.by_host.get(key) {
            return Route::Serve(c.clone(), c.base.clone());
        }
        if let Some(why) = snap.unavailable_hosts.get(key) {
            return Route::Unavailable(why.clone());
        }
        for c in &snap.aliased {
            if let Some(alias) = c.base.with_loopback_host(key) {
                return Route::Serve(c.clone(), alias);
            }
        }

        let unavailable: Vec<String> = snap
            .entries
            .iter()
            .filter_map(|(id, e)| match e {
                Entry::Unavailable { host: None, why } => Some(format!("{id}: {why}")),
                _ => None,
            })
            .collect();
        if unavailable.is_empty() {
            Route::Unknown
        } else {
            Route::Unavailable(unavailable.join("; "))
        }
    }
}
