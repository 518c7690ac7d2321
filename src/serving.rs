//! What every replica runs, leader or not: watches `McpConnector`s and the Secrets the
//! operator manages, and keeps the key store the OAuth server reads in step with them. The
//! leader's reconciler writes Secrets; every replica, the leader included, learns of them
//! here within a watch event, with no restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::base_url;
use crate::crd::{CONNECTOR_LABEL, MANAGED_BY, MANAGED_BY_LABEL, McpConnector, SecretKeyRef};
use crate::keys::store::Entry;
use crate::keys::{Connector, KEYSET_KEY, KeyKind, KeyStore, Keys, Keyset, SecretString};
use crate::settings::{Settings, UpstreamSettings};
use crate::upstream::{OidcUpstream, ProxyUpstream, Upstream};

/// Whether the watches have listed everything once.
#[derive(Debug, Default)]
pub struct Synced(AtomicBool);

impl Synced {
    /// Whether the initial lists are in.
    pub fn is_synced(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `namespace/name`, the id a connector is known by in the key store.
pub fn connector_id(obj: &McpConnector) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Reads the upstream's own secret (the OIDC client secret or the proxy's shared secret).
pub async fn read_upstream(
    client: &Client,
    ns: &str,
    settings: &Settings,
) -> Result<Upstream, String> {
    let read = |secret_ref: SecretKeyRef| async move {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let name = &secret_ref.name;
        let secret = api
            .get_opt(name)
            .await
            .map_err(|e| format!("Secret {name} could not be read: {e}"))?;
        let value = secret
            .and_then(|s| s.data)
            .and_then(|d| d.get(&secret_ref.key).cloned())
            .ok_or_else(|| format!("Secret {name} has no key {}", secret_ref.key))?;
        let text = String::from_utf8(value.0)
            .map_err(|_| format!("Secret {name} key {} is not UTF-8", secret_ref.key))?;
        Ok::<_, String>(SecretString::new(text.trim()))
    };

    match &settings.upstream {
        UpstreamSettings::Oidc {
            issuer_url,
            client_id,
            secret_ref,
            scopes,
            username_claim,
            groups_claim,
        } => Ok(Upstream::Oidc(OidcUpstream {
            issuer_url: issuer_url.clone(),
            client_id: client_id.clone(),
            client_secret: read(secret_ref.clone()).await?,
            scopes: scopes.clone(),
            username_claim: username_claim.clone(),
            groups_claim: groups_claim.clone(),
        })),
        UpstreamSettings::Proxy {
            user_header,
            groups_header,
            secret_header,
            secret_ref,
        } => Ok(Upstream::Proxy(ProxyUpstream {
            user_header: user_header.clone(),
            groups_header: groups_header.clone(),
            secret_header: secret_header.clone(),
            shared_secret: read(secret_ref.clone()).await?,
        })),
        UpstreamSettings::DevUsers(users) => Ok(Upstream::DevUsers(users.clone())),
    }
}

/// The keys in the Secret `name` for the connector `connector` of `ns`; never those of a
/// Secret kept for another connector (see `crd::kept_for_another`).
fn keyset(
    secrets: &Store<Secret>,
    (ns, connector): (&str, &str),
    name: &str,
    kind: KeyKind,
) -> Result<Keyset, String> {
    let secret = secrets
        .get(&ObjectRef::new(name).within(ns))
        .ok_or_else(|| format!("Secret {name} does not hold keys made by mcp-connector yet"))?;
    if let Some(other) = crate::crd::kept_for_another(&secret, connector) {
        return Err(crate::crd::in_use(name, other));
    }
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEYSET_KEY))
        .map(|b| b.0.as_slice());
    let set = Keyset::from_bytes(bytes).map_err(|e| format!("Secret {name}: {e}"))?;
    kind.validate(&set)
        .map_err(|e| format!("Secret {name}: {e}"))?;
    Ok(set)
}

/// Builds the store entry of one connector from what the watches hold.
pub async fn entry(client: &Client, obj: &McpConnector, secrets: &Store<Secret>) -> Entry {
    let ns = obj.namespace().unwrap_or_default();
    let spec = &obj.spec;
    let base = base_url::resolve(
        spec.base_url.as_deref(),
        spec.tls.as_ref().and_then(|t| t.host.as_deref()),
    );
    let host = base.as_ref().ok().map(|b| b.host_key().to_string());
    let unavailable = |why: String| Entry::Unavailable {
        host: host.clone(),
        why,
    };

    let base = match base {
        Ok(b) => b,
        Err(e) => return unavailable(e.message),
    };
    let settings = match Settings::from_spec(&ns, spec) {
        Ok(s) => s,
        Err(e) => return unavailable(format!("the spec is invalid: {e}")),
    };
    let name = obj.name_any();
    let of = (ns.as_str(), name.as_str());
    let keys = keyset(secrets, of, &settings.dcr.name, KeyKind::Seal).and_then(|dcr| {
        let signing = keyset(secrets, of, &settings.signing_key.name, KeyKind::Signing)?;
        Keys::from_keysets(&dcr, &signing).map_err(|e| e.to_string())
    });
    let keys = match keys {
        Ok(k) => k,
        Err(why) => return unavailable(why),
    };
    let upstream = match read_upstream(client, &ns, &settings).await {
        Ok(Upstream::DevUsers(_)) if !base.is_loopback() => {
            return unavailable(
                "spec.upstream.devUsers is accepted only for a loopback base URL".into(),
            );
        }
        Ok(u) => u,
        Err(why) => return unavailable(why),
    };

    Entry::Serving(Arc::new(Connector {
        id: connector_id(obj),
        base,
        settings,
        upstream,
        keys: Arc::new(keys),
        loopback_aliases: false,
    }))
}

enum Changed {
    Connector(ObjectRef<McpConnector>),
    Listed,
    Resync,
}

/// How often every connector is rebuilt even when no watch event came.
const RESYNC: std::time::Duration = std::time::Duration::from_secs(300);

/// A stream that yields every `period`, the first time after one period.
fn every(period: std::time::Duration) -> impl futures::Stream<Item = ()> {
    stream::unfold(
        tokio::time::Instant::now() + period,
        move |next| async move {
            tokio::time::sleep_until(next).await;
            Some(((), next + period))
        },
    )
}

/// Keeps `store` in step with the cluster until the watches end.
pub async fn run(client: Client, store: KeyStore, namespace: Option<String>, synced: Arc<Synced>) {
    let (connectors, secrets): (Api<McpConnector>, Api<Secret>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let (connector_reader, connector_writer) = reflector::store();
    let (secret_reader, secret_writer) = reflector::store();
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));

    let connector_events = watcher(connectors, watcher::Config::default())
        .default_backoff()
        .reflect(connector_writer)
        .filter_map(|e| async move {
            match e {
                Ok(watcher::Event::Apply(c) | watcher::Event::Delete(c)) => {
                    Some(Changed::Connector(ObjectRef::from_obj(&c)))
                }
                Ok(watcher::Event::InitApply(c)) => {
                    Some(Changed::Connector(ObjectRef::from_obj(&c)))
                }
                Ok(watcher::Event::InitDone) => Some(Changed::Listed),
                Ok(watcher::Event::Init) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "connector watch failed; retrying");
                    None
                }
            }
        });
    let secret_events = watcher(secrets, managed)
        .default_backoff()
        .reflect(secret_writer)
        .filter_map(|e| async move {
            match e {
                Ok(
                    watcher::Event::Apply(s)
                    | watcher::Event::Delete(s)
                    | watcher::Event::InitApply(s),
                ) => owner_of(&s).map(Changed::Connector),
                Ok(watcher::Event::InitDone) => Some(Changed::Listed),
                Ok(watcher::Event::Init) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "Secret watch failed; retrying");
                    None
                }
            }
        });

    // The upstream's own Secret (the IdP client secret) is read, not watched: a periodic
    // pass picks up an edit of it, as it does anything a watch missed.
    let resync = every(RESYNC).map(|()| Changed::Resync);
    let mut events =
        stream::select(stream::select(connector_events, secret_events), resync).boxed();
    let mut listed = 0;
    while let Some(change) = events.next().await {
        let target = match change {
            Changed::Connector(r) => Some(r),
            Changed::Resync if listed >= 2 => {
                refresh_all(&client, &store, &connector_reader, &secret_reader).await;
                None
            }
            Changed::Resync => None,
            Changed::Listed => {
                listed += 1;
                if listed >= 2 {
                    refresh_all(&client, &store, &connector_reader, &secret_reader).await;
                    synced.0.store(true, Ordering::Relaxed);
                }
                None
            }
        };
        if let Some(r) = target
            && listed >= 2
        {
            refresh(&client, &store, &connector_reader, &secret_reader, &r).await;
        }
    }
}

fn owner_of(secret: &Secret) -> Option<ObjectRef<McpConnector>> {
    let name = secret.labels().get(CONNECTOR_LABEL)?;
    Some(ObjectRef::new(name).within(&secret.namespace()?))
}

async fn refresh(
    client: &Client,
    store: &KeyStore,
    connectors: &Store<McpConnector>,
    secrets: &Store<Secret>,
    r: &ObjectRef<McpConnector>,
) {
    let id = format!("{}/{}", r.namespace.clone().unwrap_or_default(), r.name);
    match connectors.get(r) {
        Some(obj) => store.upsert(&id, entry(client, &obj, secrets).await),
        None => store.remove(&id),
    }
}

async fn refresh_all(
    client: &Client,
    store: &KeyStore,
    connectors: &Store<McpConnector>,
    secrets: &Store<Secret>,
) {
    let listed = connectors.state();
    // Why: a connector deleted while the watch was away (its history compacted) has no
    // event of its own; after a list, only the connectors listed may stay served.
    let ids: Vec<String> = listed.iter().map(|obj| connector_id(obj)).collect();
    store.retain(|id| ids.iter().any(|listed| listed == id));
    for obj in listed {
        store.upsert(&connector_id(&obj), entry(client, &obj, secrets).await);
    }
}
