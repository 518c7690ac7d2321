//! The real controller (`reconcile::run`) against the in-memory API server, through a real
//! `kube::Client`: the Secrets it keeps, the status and Events it writes, and the key store
//! the OAuth server reads, kept by `serving::run`, which every replica runs beside the
//! controller. Every step waits for what it expects by polling, within a bound.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use mcp_connector::base_url::BaseUrl;
use mcp_connector::clock::Clock;
use mcp_connector::crd::{Condition, McpConnector};
use mcp_connector::keys::store::Route;
use mcp_connector::keys::{Connector, KEYSET_KEY, KeyStore, Keyset};
use mcp_connector::reconcile::{self, Context};
use mcp_connector::serving;

use support::apiserver::ApiServer;

const NAMESPACE: &str = "kfuse";
const NAME: &str = "kfuse";
/// The id the key store knows the connector by.
const ID: &str = "kfuse/kfuse";
const DCR: &str = "kfuse-mcp-oauth-dcr-secret";
const SIGNING: &str = "kfuse-mcp-oauth-signing-key";
const IDP_SECRET: &str = "kfuse-mcp-idp";
const HOST: &str = "kloudfuse.example.com";

/// How long any one expected change may take.
const WAIT: Duration = Duration::from_secs(10);

/// Where the pinned clock starts.
fn t0() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

/// Polls `probe` until it gives a value, for at most `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A connector's JSON, built up field by field. It starts with only an OIDC upstream whose
/// client secret is in [`IDP_SECRET`]: the reconciler reads that Secret and never calls the
/// IdP.
struct ConnectorJson {
    spec: Value,
}

impl ConnectorJson {
    fn new() -> ConnectorJson {
        let upstream = json!({"oidc": {
            "issuerURL": "https://idp.example.com",
            "clientID": "kfuse-mcp",
            "clientSecretRef": {"name": IDP_SECRET, "key": "client-secret"},
        }});
        ConnectorJson {
            spec: json!({"upstream": upstream}),
        }
    }

    fn host(mut self, host: &str) -> ConnectorJson {
        self.spec["tls"] = json!({"host": host});
        self
    }

    fn base_url(mut self, url: &str) -> ConnectorJson {
        self.spec["baseURL"] = json!(url);
        self
    }

    fn access_ttl(mut self, ttl: &str) -> ConnectorJson {
        self.spec["tokens"] = json!({"accessTTL": ttl});
        self
    }

    fn build(self) -> McpConnector {
        serde_json::from_value(json!({
            "apiVersion": "mcp.kloudfuse.io/v1alpha1",
            "kind": "McpConnector",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": self.spec,
        }))
        .unwrap()
    }
}

/// A Secret with one data entry; `managed` puts the operator's label on it.
fn secret(name: &str, key: &str, value: &[u8], managed: bool) -> Secret {
    let labels = managed.then(|| {
        [(
            "app.kubernetes.io/managed-by".to_string(),
            "mcp-connector".to_string(),
        )]
        .into()
    });
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NAMESPACE.into()),
            labels,
            ..ObjectMeta::default()
        },
        data: Some([(key.to_string(), ByteString(value.to_vec()))].into()),
        ..Secret::default()
    }
}

fn keyset(secret: &Secret) -> Keyset {
    let data = secret.data.as_ref().expect("the Secret has data");
    Keyset::from_bytes(data.get(KEYSET_KEY).map(|b| b.0.as_slice())).unwrap()
}

fn kids(set: &Keyset) -> Vec<String> {
    set.keys.iter().map(|k| k.kid.clone()).collect()
}

fn raw_keys(secret: &Secret) -> Vec<u8> {
    secret.data.as_ref().unwrap()[KEYSET_KEY].0.clone()
}

fn condition<'a>(connector: &'a McpConnector, type_: &str) -> &'a Condition {
    let found = connector.condition(type_);
    found.unwrap_or_else(|| panic!("no {type_} condition in {:?}", connector.status))
}

/// Whether the status describes the object's current generation.
fn is_current(connector: &McpConnector) -> bool {
    let observed = connector
        .status
        .as_ref()
        .and_then(|s| s.observed_generation);
    observed.is_some() && observed == connector.metadata.generation
}

fn is_true(connector: &McpConnector, type_: &str) -> bool {
    connector
        .condition(type_)
        .is_some_and(|c| c.status == "True")
}

fn status_field(connector: &McpConnector, field: &str) -> Option<String> {
    let status = serde_json::to_value(connector.status.as_ref()?).unwrap();
    status.get(field)?.as_str().map(String::from)
}

/// An API server with the `McpConnector` kind and the IdP's client secret; the controller
/// and the key store's watcher running on `kfuse`, as one replica runs them.
struct Harness {
    api: ApiServer,
    ctx: Arc<Context>,
    store: KeyStore,
    clock: Clock,
    connectors: Api<McpConnector>,
    secrets: Api<Secret>,
    events: Api<Event>,
    stop: Option<oneshot::Sender<()>>,
    controller: JoinHandle<()>,
    serving: JoinHandle<()>,
}

impl Harness {
    async fn start(clock: Clock) -> Harness {
        let api = ApiServer::start().await;
        api.register(
            "mcp.kloudfuse.io",
            "v1alpha1",
            "McpConnector",
            "mcpconnectors",
            true,
        );
        let client = api.client();

        let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
        let idp = secret(IDP_SECRET, "client-secret", b"idp-client-secret", false);
        secrets.create(&PostParams::default(), &idp).await.unwrap();

        let ctx = Arc::new(Context::new(client.clone(), clock.clone(), None));
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            stopped.await.ok();
        };
        let controller = tokio::spawn(reconcile::run(
            ctx.clone(),
            Some(NAMESPACE.into()),
            shutdown,
        ));

        let store = KeyStore::new();
        let serving = tokio::spawn(serving::run(
            client.clone(),
            store.clone(),
            Some(NAMESPACE.into()),
            Arc::default(),
        ));

        Harness {
            connectors: Api::namespaced(client.clone(), NAMESPACE),
            events: Api::namespaced(client, NAMESPACE),
            api,
            ctx,
            store,
            clock,
            secrets,
            stop: Some(stop),
            controller,
            serving,
        }
    }

    async fn apply(&self, connector: ConnectorJson) {
        let object = connector.build();
        self.connectors
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
    }

    async fn patch_spec(&self, spec: Value) {
        let patch = Patch::Merge(json!({ "spec": spec }));
        self.connectors
            .patch(NAME, &PatchParams::default(), &patch)
            .await
            .unwrap();
    }

    async fn connector(&self) -> McpConnector {
        self.connectors.get(NAME).await.unwrap()
    }

    async fn secret(&self, name: &str) -> Option<Secret> {
        self.secrets.get_opt(name).await.unwrap()
    }

    /// Waits until the status describes the current generation and `check` holds of it.
    async fn settled(&self, what: &str, check: impl Fn(&McpConnector) -> bool) -> McpConnector {
        eventually(what, WAIT, || async {
            let connector = self.connector().await;
            (is_current(&connector) && check(&connector)).then_some(connector)
        })
        .await
    }

    async fn ready(&self) -> McpConnector {
        self.settled("the connector is Ready", |c| is_true(c, "Ready"))
            .await
    }

    /// Every Event of the connector's namespace with this reason.
    async fn events_with(&self, reason: &str) -> Vec<Event> {
        let all = self
            .events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        all.into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }

    /// Waits for an Event with this reason whose note names `secret`.
    async fn event_about(&self, reason: &str, secret: &str) -> Event {
        let what = format!("an Event {reason} about {secret}");
        eventually(&what, WAIT, || async {
            let events = self.events_with(reason).await;
            let names = |e: &Event| e.note.as_deref().is_some_and(|n| n.contains(secret));
            events.into_iter().find(names)
        })
        .await
    }

    fn route(&self, host: &str) -> Route {
        self.store.route(Some(host), true)
    }

    /// Waits until the key store serves `host` with a connector for which `check` holds.
    async fn served_where(
        &self,
        host: &str,
        check: impl Fn(&Connector) -> bool,
    ) -> (Arc<Connector>, BaseUrl) {
        eventually(&format!("the key store serves {host}"), WAIT, || async {
            match self.route(host) {
                Route::Serve(connector, base) if check(&connector) => Some((connector, base)),
                _ => None,
            }
        })
        .await
    }

    async fn served(&self, host: &str) -> (Arc<Connector>, BaseUrl) {
        self.served_where(host, |_| true).await
    }

    /// Waits until the key store knows why it does not serve `host`, and gives the why.
    async fn unavailable(&self, host: &str) -> String {
        let what = format!("the key store says why {host} is not served");
        eventually(&what, WAIT, || async {
            match self.route(host) {
                Route::Unavailable(why) => Some(why),
                _ => None,
            }
        })
        .await
    }

    fn reconciles(&self) -> u64 {
        self.ctx.stats.reconciles.load(Ordering::Relaxed)
    }

    /// Stops the controller and checks that it ends on its own, without a panic.
    async fn stop(mut self) {
        assert!(!self.controller.is_finished(), "the controller ended early");
        assert!(
            !self.serving.is_finished(),
            "the key store's watcher ended early"
        );
        self.stop.take().unwrap().send(()).ok();
        let ended = tokio::time::timeout(WAIT, &mut self.controller).await;
        ended
            .expect("the controller stops on shutdown")
            .expect("the controller did not panic");
        self.serving.abort();
    }
}

#[tokio::test]
async fn a_connector_with_a_host_gets_both_secrets_a_ready_status_and_is_served() {
    let h = Harness::start(Clock::system()).await;

    h.apply(ConnectorJson::new().host(HOST)).await;
    let connector = h.ready().await;

    let owner = connector.controller_owner_ref(&()).unwrap();
    for name in [DCR, SIGNING] {
        let secret = h
            .secret(name)
            .await
            .unwrap_or_else(|| panic!("no Secret {name}"));
        let labels = secret.labels();
        assert_eq!(
            labels["app.kubernetes.io/managed-by"], "mcp-connector",
            "{name}"
        );
        let owners = secret.owner_references();
        assert_eq!(owners.len(), 1, "{name}: {owners:?}");
        assert_eq!(owners[0].uid, owner.uid, "{name}");
        assert_eq!(owners[0].kind, "McpConnector", "{name}");
        assert_eq!(owners[0].controller, Some(true), "{name}");
    }

    for type_ in ["Ready", "SecretsReady", "BaseURLResolved"] {
        let c = condition(&connector, type_);
        assert_eq!(c.status, "True", "{type_}: {c:?}");
        assert_eq!(
            c.observed_generation, connector.metadata.generation,
            "{type_}"
        );
    }
    let status = connector.status.as_ref().unwrap();
    assert_eq!(status.observed_generation, connector.metadata.generation);

    let signing = keyset(&h.secret(SIGNING).await.unwrap());
    assert_eq!(
        status.signing_key_id.as_deref(),
        Some(signing.keys[0].kid.as_str())
    );

    let (served, base) = h.served(HOST).await;
    assert_eq!(served.id, ID);
    assert_eq!(base.as_str(), "https://kloudfuse.example.com");
    assert_eq!(served.keys.current_signing().kid, signing.keys[0].kid);

    // A key never reaches status or an Event.
    let dcr = keyset(&h.secret(DCR).await.unwrap());
    let status_json = serde_json::to_string(status).unwrap();
    let events = h.events.list(&ListParams::default()).await.unwrap().items;
    let notes = events
        .into_iter()
        .filter_map(|e| e.note)
        .collect::<Vec<_>>()
        .join("\n");
    for key in dcr.keys.iter().chain(&signing.keys) {
        let material = key.material.expose();
        let first_line = material.lines().find(|l| !l.starts_with("-----")).unwrap();
        assert!(!status_json.contains(first_line), "key material in status");
        assert!(!notes.contains(first_line), "key material in an Event");
    }

    h.stop().await;
}

#[tokio::test]
async fn tls_host_gives_an_https_base_url_and_an_explicit_base_url_wins() {
    let cases = [
        (
            "tls.host only",
            ConnectorJson::new().host(HOST),
            HOST,
            "https://kloudfuse.example.com",
        ),
        (
            "baseURL and tls.host",
            ConnectorJson::new()
                .host(HOST)
                .base_url("https://mcp.kloudfuse.example.com"),
            "mcp.kloudfuse.example.com",
            "https://mcp.kloudfuse.example.com",
        ),
    ];

    for (case, connector, served_host, base_url) in cases {
        let h = Harness::start(Clock::system()).await;

        h.apply(connector).await;
        let connector = h.ready().await;

        assert_eq!(
            status_field(&connector, "baseURL").as_deref(),
            Some(base_url),
            "{case}"
        );
        assert_eq!(
            status_field(&connector, "issuer").as_deref(),
            Some(base_url),
            "{case}"
        );
        let (_, served_base) = h.served(served_host).await;
        assert_eq!(served_base.as_str(), base_url, "{case}");
        if served_host != HOST {
            assert!(
                !matches!(h.route(HOST), Route::Serve(..)),
                "{case}: tls.host served"
            );
        }

        h.stop().await;
    }
}

#[tokio::test]
async fn without_host_or_base_url_no_issuer_is_advertised() {
    let h = Harness::start(Clock::system()).await;

    h.apply(ConnectorJson::new()).await;
    let connector = h
        .settled("BaseURLResolved is False", |c| {
            c.condition("BaseURLResolved")
                .is_some_and(|c| c.status == "False")
        })
        .await;

    let resolved = condition(&connector, "BaseURLResolved");
    assert_eq!(resolved.reason, "NoBaseURL");
    assert!(
        resolved.message.contains("spec.tls.host"),
        "{}",
        resolved.message
    );
    assert!(
        resolved.message.contains("spec.baseURL"),
        "{}",
        resolved.message
    );
    assert_eq!(condition(&connector, "Ready").status, "False");
    assert_eq!(status_field(&connector, "baseURL"), None);
    assert_eq!(status_field(&connector, "issuer"), None);

    let why = h.unavailable(HOST).await;
    assert!(why.contains("spec.tls.host"), "{why}");
    assert!(h.store.get(ID).is_none());

    h.stop().await;
}

#[tokio::test]
async fn a_spec_change_moves_the_base_url_and_the_routing() {
    let h = Harness::start(Clock::system()).await;
    h.apply(ConnectorJson::new().host("a.example.com")).await;
    h.ready().await;
    h.served("a.example.com").await;

    h.patch_spec(json!({"tls": {"host": "b.example.com"}}))
        .await;
    let connector = h.ready().await;

    assert_eq!(
        status_field(&connector, "baseURL").as_deref(),
        Some("https://b.example.com")
    );
    assert_eq!(
        status_field(&connector, "issuer").as_deref(),
        Some("https://b.example.com")
    );
    h.served("b.example.com").await;
    assert!(matches!(h.route("a.example.com"), Route::Unknown));

    // With the host gone there is no base URL: status stops advertising the old one.
    h.patch_spec(json!({"tls": null})).await;
    let connector = h
        .settled("BaseURLResolved is False", |c| {
            c.condition("BaseURLResolved")
                .is_some_and(|c| c.status == "False")
        })
        .await;

    assert_eq!(condition(&connector, "BaseURLResolved").reason, "NoBaseURL");
    assert_eq!(status_field(&connector, "baseURL"), None);
    assert_eq!(status_field(&connector, "issuer"), None);
    let why = h.unavailable("b.example.com").await;
    assert!(why.contains("spec.tls.host"), "{why}");

    h.stop().await;
}

#[tokio::test]
async fn a_deleted_secret_comes_back_with_fresh_keys_and_forces_reauth() {
    let h = Harness::start(Clock::system()).await;
    h.apply(ConnectorJson::new().host(HOST)).await;
    let before = h.ready().await;
    let old_dcr = h.secret(DCR).await.unwrap();
    let old_signing = h.secret(SIGNING).await.unwrap();
    let old_kid = keyset(&old_signing).keys[0].kid.clone();
    let old_seal_kid = keyset(&old_dcr).keys[0].kid.clone();
    let old_regenerated = before
        .status
        .as_ref()
        .unwrap()
        .secrets
        .clone()
        .unwrap()
        .regenerated_at;

    for name in [DCR, SIGNING] {
        h.secrets
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    for (name, old) in [(DCR, &old_dcr), (SIGNING, &old_signing)] {
        let new = eventually(&format!("{name} is back"), WAIT, || async {
            h.secret(name).await.filter(|s| s.uid() != old.uid())
        })
        .await;
        assert_ne!(raw_keys(&new), raw_keys(old), "{name}: same keys.json");
        let (new_kids, old_kids) = (kids(&keyset(&new)), kids(&keyset(old)));
        assert!(
            new_kids.iter().all(|k| !old_kids.contains(k)),
            "{name}: old key kept"
        );
        h.event_about("ForcedReauth", name).await;
    }

    let new_kid = keyset(&h.secret(SIGNING).await.unwrap()).keys[0]
        .kid
        .clone();
    let after = h
        .settled("status names the new signing key", |c| {
            let status = c.status.as_ref().unwrap();
            status.signing_key_id.as_deref() == Some(new_kid.as_str())
        })
        .await;
    let regenerated = after
        .status
        .as_ref()
        .unwrap()
        .secrets
        .clone()
        .unwrap()
        .regenerated_at;
    assert!(
        regenerated.is_some() && regenerated != old_regenerated,
        "{regenerated:?}"
    );
    assert!(is_true(&after, "Ready"));

    // The OAuth server sees only the fresh keys: nothing the old ones signed verifies.
    let (served, _) = h
        .served_where(HOST, |c| c.keys.current_signing().kid == new_kid)
        .await;
    assert!(served.keys.signing_by_kid(&old_kid).is_none());
    assert!(served.keys.seal.iter().all(|k| k.kid != old_seal_kid));

    h.stop().await;
}

#[tokio::test]
async fn garbage_in_a_managed_secret_is_replaced_and_the_event_says_why() {
    let h = Harness::start(Clock::system()).await;
    h.apply(ConnectorJson::new().host(HOST)).await;
    h.ready().await;
    let old_seal_kid = h.served(HOST).await.0.keys.current_seal().kid.clone();

    let garbage = Patch::Merge(json!({"data": {KEYSET_KEY: "bm90IGpzb24="}}));
    h.secrets
        .patch(DCR, &PatchParams::default(), &garbage)
        .await
        .unwrap();

    let replaced = eventually("the DCR Secret holds keys again", WAIT, || async {
        let secret = h.secret(DCR).await?;
        let bytes = secret.data.as_ref()?.get(KEYSET_KEY)?.0.clone();
        Keyset::from_bytes(Some(&bytes))
            .ok()
            .map(|set| (secret, set))
    })
    .await;
    let (secret, set) = replaced;
    assert_eq!(
        secret.labels()["app.kubernetes.io/managed-by"],
        "mcp-connector"
    );
    assert_ne!(set.keys[0].kid, old_seal_kid);

    let event = h.event_about("SecretReplaced", DCR).await;
    let note = event.note.unwrap();
    assert!(note.contains("not a valid keyset"), "{note}");
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    let connector = h.ready().await;
    assert!(is_true(&connector, "SecretsReady"));
    h.served_where(HOST, |c| c.keys.current_seal().kid == set.keys[0].kid)
        .await;

    h.stop().await;
}

#[tokio::test]
async fn a_foreign_secret_of_the_same_name_is_left_alone() {
    let h = Harness::start(Clock::system()).await;
    let foreign = secret(DCR, KEYSET_KEY, b"garbage", false);
    let foreign = h
        .secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();

    h.apply(ConnectorJson::new().host(HOST)).await;
    let connector = h
        .settled("SecretsReady is False", |c| {
            c.condition("SecretsReady")
                .is_some_and(|c| c.status == "False")
        })
        .await;

    let secrets_ready = condition(&connector, "SecretsReady");
    assert_eq!(secrets_ready.reason, "SecretNotManaged");
    assert!(
        secrets_ready.message.contains(DCR),
        "{}",
        secrets_ready.message
    );
    assert_eq!(condition(&connector, "Ready").status, "False");

    let untouched = h.secret(DCR).await.unwrap();
    assert_eq!(untouched.resource_version(), foreign.resource_version());
    assert_eq!(raw_keys(&untouched), b"garbage");
    assert!(untouched.owner_references().is_empty());
    let why = h.unavailable(HOST).await;
    assert!(why.contains(DCR), "{why}");

    h.stop().await;
}

#[tokio::test]
async fn a_second_connector_naming_the_first_ones_secrets_is_refused_them() {
    let h = Harness::start(Clock::system()).await;
    h.apply(ConnectorJson::new().host(HOST)).await;
    h.ready().await;
    let (dcr, signing) = (
        h.secret(DCR).await.unwrap(),
        h.secret(SIGNING).await.unwrap(),
    );

    // Both keep the default Secret names, in one namespace.
    let mut second = ConnectorJson::new().host("staging.example.com").build();
    second.metadata.name = Some("staging".into());
    h.connectors
        .create(&PostParams::default(), &second)
        .await
        .unwrap();
    let refused = eventually(
        "the second connector's SecretsReady is False",
        WAIT,
        || async {
            let c = h.connectors.get("staging").await.unwrap();
            let current = is_current(&c);
            let secrets_ready = c.condition("SecretsReady").cloned();
            secrets_ready.filter(|s| current && s.status == "False")
        },
    )
    .await;

    assert_eq!(refused.reason, "SecretInUse");
    for name in [DCR, "McpConnector kfuse", "spec.secrets"] {
        assert!(refused.message.contains(name), "{}", refused.message);
    }
    let why = h.unavailable("staging.example.com").await;
    assert!(why.contains(DCR), "{why}");

    // The first connector's Secrets and the keys it serves are untouched.
    for (name, before) in [(DCR, &dcr), (SIGNING, &signing)] {
        let after = h.secret(name).await.unwrap();
        assert_eq!(
            after.resource_version(),
            before.resource_version(),
            "{name}"
        );
        assert_eq!(
            after.owner_references(),
            before.owner_references(),
            "{name}"
        );
    }
    let (served, _) = h.served(HOST).await;
    assert_eq!(served.id, ID);
    assert_eq!(condition(&h.connector().await, "Ready").status, "True");

    h.stop().await;
}

#[tokio::test]
async fn a_due_rotation_keeps_the_previous_key_as_retired() {
    let h = Harness::start(Clock::pinned(t0())).await;
    h.apply(ConnectorJson::new().host(HOST)).await;
    let before = h.ready().await;
    let old_signing = keyset(&h.secret(SIGNING).await.unwrap());
    let old_dcr = keyset(&h.secret(DCR).await.unwrap());
    let old_kid = old_signing.keys[0].kid.clone();
    assert_eq!(
        before.status.as_ref().unwrap().signing_key_id.as_deref(),
        Some(&*old_kid)
    );

    // Past the default 720h; a change to an owned Secret starts a pass.
    h.clock.advance(SignedDuration::from_hours(721));
    let poke = Patch::Merge(json!({"metadata": {"labels": {"test/poke": "1"}}}));
    h.secrets
        .patch(DCR, &PatchParams::default(), &poke)
        .await
        .unwrap();

    let rotated_at = t0() + SignedDuration::from_hours(721);
    for (name, old) in [(SIGNING, &old_signing), (DCR, &old_dcr)] {
        let set = eventually(&format!("{name} rotates"), WAIT, || async {
            let set = keyset(&h.secret(name).await?);
            (set.keys.len() == 2).then_some(set)
        })
        .await;
        assert_ne!(
            set.keys[0].kid, old.keys[0].kid,
            "{name}: no new current key"
        );
        assert_eq!(set.keys[0].retired, None, "{name}");
        assert_eq!(
            set.keys[1].kid, old.keys[0].kid,
            "{name}: previous key not kept"
        );
        assert_eq!(set.keys[1].retired, Some(rotated_at), "{name}");
        h.event_about("KeyRotated", name).await;
    }

    let new_kid = keyset(&h.secret(SIGNING).await.unwrap()).keys[0]
        .kid
        .clone();
    let after = h
        .settled("status names the rotated key", |c| {
            c.status.as_ref().unwrap().signing_key_id.as_deref() == Some(new_kid.as_str())
        })
        .await;
    assert!(is_true(&after, "Ready"));

    // The previous key still verifies, and the JWKS publishes both.
    let (served, _) = h
        .served_where(HOST, |c| c.keys.current_signing().kid == new_kid)
        .await;
    assert!(served.keys.signing_by_kid(&old_kid).is_some());
    assert_eq!(served.keys.jwks["keys"].as_array().unwrap().len(), 2);

    h.stop().await;
}

#[tokio::test]
async fn a_steady_state_causes_no_further_writes() {
    let h = Harness::start(Clock::system()).await;
    h.apply(ConnectorJson::new().host(HOST)).await;
    h.ready().await;

    let (writes, reconciles) = (h.api.writes(), h.reconciles());
    // The quiet period is the measurement, so this one wait is fixed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (writes_after, reconciles_after) = (h.api.writes(), h.reconciles());

    println!(
        "steady state over 3 s: writes {writes} -> {writes_after}, \
         reconciles {reconciles} -> {reconciles_after}"
    );
    assert_eq!(writes_after, writes, "writes in a quiet period");
    assert!(
        reconciles_after - reconciles <= 2,
        "{reconciles} -> {reconciles_after}"
    );
    assert!(is_true(&h.connector().await, "Ready"));

    h.stop().await;
}

#[tokio::test]
async fn an_invalid_spec_is_reported_and_waits_for_a_fix() {
    let h = Harness::start(Clock::system()).await;

    h.apply(ConnectorJson::new().host(HOST).access_ttl("soon"))
        .await;
    let connector = h
        .settled("Ready is False", |c| {
            c.condition("Ready").is_some_and(|c| c.status == "False")
        })
        .await;

    let ready = condition(&connector, "Ready");
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready.message.contains("spec.tokens.accessTTL"),
        "{}",
        ready.message
    );
    let why = h.unavailable(HOST).await;
    assert!(why.contains("spec.tokens.accessTTL"), "{why}");
    assert_eq!(
        h.ctx.stats.errors.load(Ordering::Relaxed),
        0,
        "invalid input is no error"
    );

    h.patch_spec(json!({"tokens": {"accessTTL": "1h"}})).await;
    h.ready().await;
    h.served(HOST).await;

    h.stop().await;
}
