//! Faults, with the real controller (`reconcile::run`) and the serving watcher
//! (`serving::run`) on the API double: the API server down for a while, watches that
//! expire during a rotation, conflict storms, Secrets edited to garbage, and an operator
//! killed between writing a key and recording it. Nothing may panic, nothing already
//! signed may stop verifying by accident, and nothing the operator owes may be lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use base64::Engine;
use http::{Request, StatusCode, header};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use mcp_connector::clock::Clock;
use mcp_connector::crd::McpConnector;
use mcp_connector::grants::kube::KubeGrants;
use mcp_connector::keys::rotation::{self, Plan};
use mcp_connector::keys::store::Route;
use mcp_connector::keys::{Connector, KEYSET_KEY, KeyKind, KeyStore, Keyset};
use mcp_connector::oauth::access_token::{AccessClaims, mint, verify};
use mcp_connector::oauth::{AppState, router};
use mcp_connector::reconcile::{self, Context};
use mcp_connector::serving;
use support::apiserver::ApiServer;
use support::server::pkce;

const NS: &str = "kfuse";
const NAME: &str = "kfuse";
const DCR: &str = "kfuse-mcp-oauth-dcr-secret";
const SIGNING: &str = "kfuse-mcp-oauth-signing-key";
const HOST: &str = "127.0.0.1:8080";
const BASE: &str = "http://127.0.0.1:8080";
const CLI: &str = "http://127.0.0.1:5000/callback";

/// How long any one expected change may take; watches back off after an outage.
const WAIT: Duration = Duration::from_secs(30);

fn t0() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {WAIT:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One controller, as one operator process runs it.
struct Operator {
    ctx: Arc<Context>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Operator {
    fn start(api: &ApiServer, clock: &Clock) -> Operator {
        let ctx = Arc::new(Context::new(api.client(), clock.clone(), None));
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            stopped.await.ok();
        };
        let task = tokio::spawn(reconcile::run(ctx.clone(), Some(NS.into()), shutdown));
        Operator {
            ctx,
            stop: Some(stop),
            task,
        }
    }

    fn alive(&self) -> bool {
        !self.task.is_finished()
    }

    fn status_writes(&self) -> u64 {
        self.ctx.stats.status_writes.load(Ordering::Relaxed)
    }

    fn reconciles(&self) -> u64 {
        self.ctx.stats.reconciles.load(Ordering::Relaxed)
    }

    /// Stops it the way SIGTERM does, and checks it ends without a panic.
    async fn stop(mut self) {
        assert!(self.alive(), "the controller ended early");
        self.stop.take().unwrap().send(()).ok();
        let ended = tokio::time::timeout(WAIT, &mut self.task).await;
        ended.expect("the controller stops").expect("no panic");
    }

    /// Ends it at once, wherever it is, as a killed process would.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The API double with the connector kind, one operator, and the serving watcher.
struct World {
    api: Arc<ApiServer>,
    clock: Clock,
    store: KeyStore,
    serving: JoinHandle<()>,
    connectors: Api<McpConnector>,
    secrets: Api<Secret>,
    events: Api<Event>,
}

impl World {
    async fn start(clock: Clock) -> (World, Operator) {
        let api = ApiServer::start().await;
        api.register(
            "mcp.kloudfuse.io",
            "v1alpha1",
            "McpConnector",
            "mcpconnectors",
            true,
        );
        let client = api.client();
        let store = KeyStore::new();
        let serving = tokio::spawn(serving::run(
            client.clone(),
            store.clone(),
            Some(NS.into()),
            Arc::default(),
        ));
        let operator = Operator::start(&api, &clock);
        let world = World {
            api: Arc::new(api),
            clock,
            store,
            serving,
            connectors: Api::namespaced(client.clone(), NS),
            secrets: Api::namespaced(client.clone(), NS),
            events: Api::namespaced(client, NS),
        };
        (world, operator)
    }

    /// Applies the connector: a loopback base URL and a development user, so signing in
    /// needs nothing from the API server.
    async fn apply(&self, spec: Value) {
        let mut full = json!({
            "baseURL": BASE,
            "upstream": {"devUsers": [{"username": "dev", "password": "pw"}]},
        });
        for (k, v) in spec.as_object().unwrap() {
            full[k] = v.clone();
        }
        let object: McpConnector = serde_json::from_value(json!({
            "apiVersion": "mcp.kloudfuse.io/v1alpha1", "kind": "McpConnector",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": full,
        }))
        .unwrap();
        self.connectors
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
    }

    async fn connector(&self) -> Option<McpConnector> {
        self.connectors.get(NAME).await.ok()
    }

    /// Waits until the status describes the current generation, and `check` holds.
    async fn settled(&self, what: &str, check: impl Fn(&McpConnector) -> bool) -> McpConnector {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let c = self.connector().await;
            if let Some(c) = &c {
                let current = c
                    .status
                    .as_ref()
                    .is_some_and(|s| s.observed_generation == c.metadata.generation);
                if current && check(c) {
                    return c.clone();
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let status = c.map(|c| (c.metadata.generation, c.status));
                panic!("timed out after {WAIT:?} waiting until {what}; last: {status:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn ready(&self) -> McpConnector {
        self.settled("the connector is Ready", ready).await
    }

    /// The keys a Secret holds, when they are usable keys of its kind.
    async fn keyset(&self, name: &str) -> Option<Keyset> {
        let secret = self.secrets.get_opt(name).await.ok()??;
        let bytes = secret.data.as_ref()?.get(KEYSET_KEY)?.0.clone();
        let set = Keyset::from_bytes(Some(&bytes)).ok()?;
        let kind = if name == DCR {
            KeyKind::Seal
        } else {
            KeyKind::Signing
        };
        kind.validate(&set).ok().map(|()| set)
    }

    fn served(&self) -> Option<Arc<Connector>> {
        match self.store.route(Some(HOST), true) {
            Route::Serve(c, _) => Some(c),
            _ => None,
        }
    }

    async fn served_where(&self, what: &str, check: impl Fn(&Connector) -> bool) -> Arc<Connector> {
        eventually(what, || async { self.served().filter(|c| check(c)) }).await
    }

    async fn events_with(&self, reason: &str) -> Vec<Event> {
        let list = self.events.list(&ListParams::default()).await.unwrap();
        let reason = Some(reason);
        list.items
            .into_iter()
            .filter(|e| e.reason.as_deref() == reason)
            .collect()
    }

    async fn patch_spec(&self, spec: Value) {
        let patch = Patch::Merge(json!({ "spec": spec }));
        self.connectors
            .patch(NAME, &PatchParams::default(), &patch)
            .await
            .unwrap();
    }
}

fn ready(c: &McpConnector) -> bool {
    c.condition("Ready").is_some_and(|c| c.status == "True")
}

fn kids(set: &Keyset) -> Vec<String> {
    set.keys.iter().map(|k| k.kid.clone()).collect()
}

fn signing_kid(c: &McpConnector) -> Option<String> {
    c.status.as_ref()?.signing_key_id.clone()
}

/// An access token signed by the served connector's current key, valid for 1000 h.
fn token_of(connector: &Connector, now: Timestamp) -> String {
    let claims = AccessClaims {
        iss: BASE.into(),
        aud: format!("{BASE}/mcp"),
        sub: "dev".into(),
        exp: now.as_second() + 1000 * 3600,
        iat: now.as_second(),
        jti: "before-the-fault".into(),
        client_id: "c".into(),
        scope: "mcp".into(),
        preferred_username: "dev".into(),
        groups: vec![],
        gid: "g".into(),
    };
    mint(&connector.keys, &claims).unwrap()
}

fn verifies(connector: &Connector, token: &str, now: Timestamp) -> bool {
    let aud = format!("{BASE}/mcp");
    verify(&connector.keys, token, BASE, &aud, Some(now.as_second())).is_ok()
}

/// The OAuth server over a key store, called in-process.
struct Oauth {
    app: Router,
}

struct Answer {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

impl Oauth {
    fn new(state: AppState) -> Oauth {
        Oauth { app: router(state) }
    }

    async fn send(&self, request: http::request::Builder, body: String) -> Answer {
        let request = request.header(header::HOST, HOST).body(Body::from(body));
        let response = self.app.clone().oneshot(request.unwrap()).await.unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Answer {
            status,
            location,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&self, target: &str) -> Answer {
        self.send(Request::get(target), String::new()).await
    }

    async fn form(&self, path: &str, pairs: &[(&str, &str)]) -> Answer {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, v);
        }
        let request =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        self.send(request, s.finish()).await
    }

    /// Registers a public client and signs the development user in: the code's answer,
    /// and the verifier.
    async fn sign_in(&self) -> (String, Answer, String) {
        let metadata = json!({"redirect_uris": [CLI], "token_endpoint_auth_method": "none"});
        let request = Request::post("/register").header(header::CONTENT_TYPE, "application/json");
        let registered = self.send(request, metadata.to_string()).await;
        assert_eq!(registered.status, 201, "{}", registered.body);
        let client = registered.json()["client_id"].as_str().unwrap().to_string();

        let (verifier, challenge) = pkce();
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("response_type", "code"),
                ("client_id", client.as_str()),
                ("redirect_uri", CLI),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ])
            .finish();
        let page = self.get(&format!("/authorize?{query}")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let sealed = page
            .body
            .split("name=\"request\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_string();
        let signed_in = self
            .form(
                "/login",
                &[
                    ("request", &sealed),
                    ("username", "dev"),
                    ("password", "pw"),
                ],
            )
            .await;
        assert_eq!(signed_in.status, 302, "{}", signed_in.body);
        let location = signed_in.location.as_deref().unwrap();
        let code = url::Url::parse(location)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned();
        let answer = self
            .form(
                "/token",
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("code_verifier", &verifier),
                    ("client_id", &client),
                ],
            )
            .await;
        (client, answer, verifier)
    }
}

#[tokio::test]
async fn with_the_api_server_down_oauth_serves_on_and_reconcile_catches_up_after() {
    let (mcp, _mcp_task) = mcp_connector::dev::whoami::spawn().await.unwrap();
    let (world, operator) = World::start(Clock::system()).await;
    world
        .apply(json!({"mcpServer": {"url": format!("http://{mcp}/mcp")}}))
        .await;
    world.ready().await;
    let before = world
        .served_where("the connector is served", |_| true)
        .await;
    let old_seal = before.keys.current_seal().kid.clone();

    // Grant state in the API, as `run` has it.
    let grants = Arc::new(KubeGrants::new(world.api.client(), NS));
    let _grant_watch = tokio::spawn(grants.watch());
    let oauth = Oauth::new(AppState::new(
        world.store.clone(),
        grants,
        world.clock.clone(),
    ));
    let (_, answer, _) = oauth.sign_in().await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let access = answer.json()["access_token"].as_str().unwrap().to_string();
    let mcp_call = |token: String| {
        let oauth = &oauth;
        async move {
            let request = Request::post("/mcp")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::ACCEPT, "application/json, text/event-stream")
                .header(header::CONTENT_TYPE, "application/json");
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "faults", "version": "1"}}});
            oauth.send(request, body.to_string()).await
        }
    };

    world.api.set_down(true);
    let outage = tokio::time::Instant::now();

    // What needs no write to the API keeps working with the keys already loaded.
    let discovery = oauth.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(discovery.status, 200, "discovery: {}", discovery.body);
    let call = mcp_call(access.clone()).await;
    assert_eq!(
        call.status, 200,
        "/mcp with a token issued before: {}",
        call.body
    );
    // Redeeming a code is shared state: it fails closed, as JSON, and promptly.
    let started = tokio::time::Instant::now();
    let (_, exchange, _) = oauth.sign_in().await;
    assert_eq!(exchange.status, 503, "{}", exchange.body);
    assert_eq!(exchange.json()["error"], "temporarily_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the exchange hung"
    );
    assert!(world.served().is_some(), "the store dropped the connector");

    tokio::time::sleep(Duration::from_secs(2).saturating_sub(outage.elapsed())).await;
    assert!(world.served().is_some(), "the store dropped the connector");
    assert!(operator.alive(), "the controller died during the outage");
    assert!(!world.serving.is_finished(), "the serving watcher died");

    // Back up: a spec change and a deleted Secret, made before the watches have come back
    // from their backoff. (A compacted history on top would add one more backoff step of
    // kube's default watcher backoff, up to 30 s each, before the relist.)
    world.api.set_down(false);
    let old_uid = world.secrets.get(DCR).await.unwrap().uid();
    world
        .secrets
        .delete(DCR, &DeleteParams::default())
        .await
        .unwrap();
    world
        .patch_spec(json!({"resourceName": "After the outage"}))
        .await;

    let after = world.ready().await;
    assert_eq!(after.metadata.generation, Some(2));
    let new_uid = world.secrets.get(DCR).await.unwrap().uid();
    assert!(
        new_uid.is_some() && new_uid != old_uid,
        "the DCR Secret was not regenerated"
    );
    eventually("a ForcedReauth Event", || async {
        let events = world.events_with("ForcedReauth").await;
        (!events.is_empty()).then_some(())
    })
    .await;
    let served = world
        .served_where("the fresh DCR keys are served", |c| {
            c.keys.current_seal().kid != old_seal && c.settings.resource_name == "After the outage"
        })
        .await;
    assert!(
        served
            .keys
            .seal_by_tag(&before.keys.current_seal().tag)
            .is_none()
    );

    // Logins work again; the access token still works (its signing key was not deleted).
    let (_, exchange, _) = oauth.sign_in().await;
    assert_eq!(exchange.status, 200, "{}", exchange.body);
    assert_eq!(mcp_call(access).await.status, 200);
    operator.stop().await;
}

#[tokio::test]
async fn a_status_storm_does_not_make_the_controller_fight_or_stall() {
    let (world, operator) = World::start(Clock::system()).await;
    world.apply(json!({})).await;
    world.ready().await;
    let (writes_before, reconciles_before) = (operator.status_writes(), operator.reconciles());

    // Another writer overwrites the status as fast as it can, for two seconds.
    let storming = Arc::new(AtomicBool::new(true));
    let storm_writes = Arc::new(AtomicU64::new(0));
    let storm = {
        let (api, storming, count) = (
            world.connectors.clone(),
            storming.clone(),
            storm_writes.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0u64;
            while storming.load(Ordering::Relaxed) {
                i += 1;
                let patch = Patch::Merge(json!({"status": {
                    "observedGeneration": 0,
                    "conditions": [{"type": "Ready", "status": "False", "reason": "Storm",
                        "message": format!("storm {i}"),
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                }}));
                if api
                    .patch_status(NAME, &PatchParams::default(), &patch)
                    .await
                    .is_ok()
                {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    world
        .patch_spec(json!({"resourceName": "During the storm"}))
        .await;
    tokio::time::sleep(Duration::from_millis(1700)).await;
    storming.store(false, Ordering::Relaxed);
    storm.await.unwrap();

    // A status write, the storm's included, starts no pass: the controller did not fight.
    let storm_writes = storm_writes.load(Ordering::Relaxed);
    let reconciles = operator.reconciles() - reconciles_before;
    assert!(
        storm_writes > 50,
        "the storm wrote only {storm_writes} times"
    );
    assert!(
        reconciles <= 3,
        "{reconciles} passes for {storm_writes} status writes"
    );
    assert!(operator.alive());

    // The next generation converges to the controller's view.
    world
        .patch_spec(json!({"resourceName": "After the storm"}))
        .await;
    let c = world.ready().await;
    let types: Vec<&str> = c
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .map(|c| c.type_.as_str())
        .collect();
    for t in ["Ready", "BaseURLResolved", "SecretsReady", "McpServerReady"] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    let writes = operator.status_writes() - writes_before;
    assert!(writes <= 4, "{writes} status writes for two spec changes");
    assert_eq!(operator.ctx.stats.errors.load(Ordering::Relaxed), 0);
    operator.stop().await;
}

#[tokio::test]
async fn a_rotation_under_a_storm_of_secret_writes_still_happens_exactly_once() {
    let (world, operator) = World::start(Clock::pinned(t0())).await;
    world.apply(json!({})).await;
    world.ready().await;
    let old = world.keyset(SIGNING).await.unwrap();
    let writes_before = world.api.writes_to("secrets");

    // Another writer bumps the signing Secret's resourceVersion every few milliseconds, so
    // the controller's compare-and-swap writes conflict.
    let storming = Arc::new(AtomicBool::new(true));
    let storm_writes = Arc::new(AtomicU64::new(0));
    let storm = {
        let (api, storming, count) = (
            world.secrets.clone(),
            storming.clone(),
            storm_writes.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0u64;
            while storming.load(Ordering::Relaxed) {
                i += 1;
                let patch = Patch::Merge(json!({"metadata": {"labels": {"storm": i.to_string()}}}));
                if api
                    .patch(SIGNING, &PatchParams::default(), &patch)
                    .await
                    .is_ok()
                {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    world.clock.advance(SignedDuration::from_hours(721));

    for name in [SIGNING, DCR] {
        eventually(&format!("{name} rotates under the storm"), || async {
            world.keyset(name).await.filter(|s| s.keys.len() >= 2)
        })
        .await;
    }
    storming.store(false, Ordering::Relaxed);
    storm.await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let new = world.keyset(SIGNING).await.unwrap();
    assert_eq!(
        new.keys.len(),
        2,
        "rotated more than once: {:?}",
        kids(&new)
    );
    assert_eq!(
        new.keys[1].kid, old.keys[0].kid,
        "the previous key was not kept"
    );
    assert_eq!(world.keyset(DCR).await.unwrap().keys.len(), 2);
    let storm_writes = storm_writes.load(Ordering::Relaxed) as usize;
    let ours = world.api.writes_to("secrets") - writes_before - storm_writes;
    let conflicts = operator.ctx.stats.errors.load(Ordering::Relaxed);
    println!("storm: {storm_writes} writes; controller: {ours} Secret writes, {conflicts} errors");
    assert!(ours <= 40, "{ours} Secret writes by the controller");
    let c = world
        .settled("status names the rotated key", |c| {
            signing_kid(c).as_deref() == Some(new.keys[0].kid.as_str())
        })
        .await;
    assert!(ready(&c));
    assert!(operator.alive());
    operator.stop().await;
}

#[tokio::test]
async fn a_watch_that_expires_during_a_rotation_does_not_rotate_twice() {
    let (world, operator) = World::start(Clock::pinned(t0())).await;
    world.apply(json!({})).await;
    world.ready().await;
    let old = world.keyset(SIGNING).await.unwrap();
    let old_dcr = world.keyset(DCR).await.unwrap();

    // The rotation falls due, and every watch expires with its history gone: the only
    // thing that starts the pass is the relist.
    world.clock.advance(SignedDuration::from_hours(721));
    world.api.compact();
    world.api.end_watches();

    for (name, before) in [(SIGNING, &old), (DCR, &old_dcr)] {
        let set = eventually(&format!("{name} rotates after the relist"), || async {
            world.keyset(name).await.filter(|s| s.keys.len() >= 2)
        })
        .await;
        assert_eq!(set.keys[1].kid, before.keys[0].kid, "{name}");
    }
    // More expiries while it settles change nothing.
    for _ in 0..3 {
        world.api.compact();
        world.api.end_watches();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for name in [SIGNING, DCR] {
        let set = world.keyset(name).await.unwrap();
        assert_eq!(
            set.keys.len(),
            2,
            "{name} rotated more than once: {:?}",
            kids(&set)
        );
    }
    let new = world.keyset(SIGNING).await.unwrap();
    world
        .settled("status names the rotated key", |c| {
            signing_kid(c).as_deref() == Some(new.keys[0].kid.as_str())
        })
        .await;
    let served = world
        .served_where("the store serves the rotated key", |c| {
            c.keys.current_signing().kid == new.keys[0].kid
        })
        .await;
    assert!(served.keys.signing_by_kid(&old.keys[0].kid).is_some());
    let rotated = world.events_with("KeyRotated").await;
    assert_eq!(rotated.len(), 2, "one KeyRotated Event per Secret");
    operator.stop().await;
}

/// A Secret whose keys.json is `bytes`.
fn keys_patch(bytes: &[u8]) -> Patch<Value> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    Patch::Merge(json!({"data": {KEYSET_KEY: encoded}}))
}

#[tokio::test]
async fn a_secret_edited_to_garbage_is_replaced_and_says_so() {
    let (world, operator) = World::start(Clock::system()).await;
    world.apply(json!({})).await;
    world.ready().await;
    let now = world.clock.now();
    let seal_set = Keyset {
        keys: vec![KeyKind::Seal.generate(now).unwrap()],
    };
    let mut truncated = world.keyset(SIGNING).await.unwrap();
    let material = truncated.keys[0].material.expose().to_string();
    truncated.keys[0].material = mcp_connector::keys::SecretString::new(&material[..60]);

    #[rustfmt::skip]
    let rows: Vec<(&str, Patch<Value>, &str)> = vec![
        (DCR, keys_patch(b"not json"), "not JSON"),
        (DCR, keys_patch(br#"{"keys":[]}"#), "an empty keyset"),
        (DCR, keys_patch(&[0xff, 0xfe, 0x00, 0x80]), "binary junk"),
        (DCR, Patch::Merge(json!({"data": {KEYSET_KEY: null}})), "the entry removed"),
        (DCR, keys_patch(br#"{"keys":[{"kid":"a","created":"2026-01-01T00:00:00Z",
            "material":"AAAA"}]}"#), "a key of the wrong length"),
        (SIGNING, keys_patch(&seal_set.to_bytes()), "a sealing key where a signing key goes"),
        (SIGNING, keys_patch(&truncated.to_bytes()), "a truncated PEM"),
        (SIGNING, Patch::Merge(json!({"data": null})), "all data removed"),
    ];
    for (name, patch, why) in rows {
        let before = world.keyset(name).await.unwrap();
        let other = if name == DCR { SIGNING } else { DCR };
        let other_before = world.keyset(other).await.unwrap();
        world
            .secrets
            .patch(name, &PatchParams::default(), &patch)
            .await
            .unwrap();

        let replaced = eventually(&format!("row {why:?}: {name} is replaced"), || async {
            world
                .keyset(name)
                .await
                .filter(|s| s.keys[0].kid != before.keys[0].kid)
        })
        .await;
        assert_eq!(replaced.keys.len(), 1, "row {why:?}");
        assert_eq!(
            world.keyset(other).await.unwrap(),
            other_before,
            "row {why:?}"
        );
        let served = world
            .served_where(&format!("row {why:?}: the new key is served"), |c| {
                let kid = &replaced.keys[0].kid;
                match name {
                    DCR => &c.keys.current_seal().kid == kid,
                    _ => &c.keys.current_signing().kid == kid,
                }
            })
            .await;
        assert!(
            served.keys.signing_by_kid(&before.keys[0].kid).is_none(),
            "row {why:?}"
        );
        assert!(operator.alive(), "row {why:?}: the controller died");
        assert!(
            !world.serving.is_finished(),
            "row {why:?}: the serving watcher died"
        );
    }

    let events = world.events_with("SecretReplaced").await;
    let notes: Vec<String> = events.iter().filter_map(|e| e.note.clone()).collect();
    assert!(notes.iter().any(|n| n.contains(DCR)), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains(SIGNING)), "{notes:?}");
    assert!(events.iter().all(|e| e.type_.as_deref() == Some("Warning")));
    world.ready().await;
    operator.stop().await;
}

/// Writes `set` into a Secret the way the operator does, keeping its labels and owner.
async fn write_keyset(world: &World, name: &str, set: &Keyset) {
    let mut secret = world.secrets.get(name).await.unwrap();
    secret.data = Some([(KEYSET_KEY.to_string(), ByteString(set.to_bytes()))].into());
    world
        .secrets
        .replace(name, &PostParams::default(), &secret)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_operator_killed_after_rotating_a_key_but_before_recording_it_loses_nothing() {
    let (world, operator) = World::start(Clock::pinned(t0())).await;
    world.apply(json!({})).await;
    world.ready().await;
    let before = world.served_where("served", |_| true).await;
    let token = token_of(&before, world.clock.now());
    let old_kid = before.keys.current_signing().kid.clone();
    operator.stop().await;

    // What the killed operator wrote: the signing Secret rotated; status not updated.
    world.clock.advance(SignedDuration::from_hours(721));
    let now = world.clock.now();
    let old = world.keyset(SIGNING).await.unwrap();
    let plan = Plan {
        rotate: Some("rotation due".into()),
        prune: vec![],
    };
    let rotated = rotation::apply(&old, &plan, now, || KeyKind::Signing.generate(now)).unwrap();
    write_keyset(&world, SIGNING, &rotated).await;

    let operator = Operator::start(&world.api, &world.clock);
    let c = world
        .settled("the new operator records the rotated key", |c| {
            signing_kid(c).as_deref() == Some(rotated.keys[0].kid.as_str())
        })
        .await;
    assert!(ready(&c));
    let set = world.keyset(SIGNING).await.unwrap();
    assert_eq!(
        kids(&set),
        kids(&rotated),
        "the signing Secret was rotated again"
    );
    let served = world
        .served_where("the rotated key is served", |c| {
            c.keys.current_signing().kid == rotated.keys[0].kid
        })
        .await;
    assert!(
        served.keys.signing_by_kid(&old_kid).is_some(),
        "the old key was dropped"
    );
    assert!(
        verifies(&served, &token, now),
        "a token issued before the kill stopped working"
    );
    operator.stop().await;
}

#[tokio::test]
async fn an_operator_killed_mid_rotation_leaves_a_consistent_state() {
    let (world, operator) = World::start(Clock::pinned(t0())).await;
    world.apply(json!({})).await;
    world.ready().await;
    let before = world.served_where("served", |_| true).await;
    let token = token_of(&before, world.clock.now());
    let old_kid = before.keys.current_signing().kid.clone();

    // The API goes away right after the first Secret write of the rotation is seen, and
    // the operator is killed there.
    let target = world.api.writes_to("secrets") + 1;
    let api = world.api.clone();
    let cut = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + WAIT;
        while api.writes_to("secrets") < target && std::time::Instant::now() < deadline {
            std::hint::spin_loop();
        }
        api.set_down(true);
    });
    world.clock.advance(SignedDuration::from_hours(721));
    world.api.compact();
    world.api.end_watches();
    cut.await.unwrap();
    let writes_before_kill = operator.status_writes();
    operator.kill().await;
    world.api.set_down(false);

    let operator = Operator::start(&world.api, &world.clock);
    let now = world.clock.now();
    for name in [SIGNING, DCR] {
        eventually(&format!("{name} is rotated"), || async {
            world.keyset(name).await.filter(|s| s.keys.len() >= 2)
        })
        .await;
    }
    let set = world.keyset(SIGNING).await.unwrap();
    world
        .settled("status names the current key", |c| {
            signing_kid(c).as_deref() == Some(set.keys[0].kid.as_str()) && ready(c)
        })
        .await;
    for name in [SIGNING, DCR] {
        let set = world.keyset(name).await.unwrap();
        assert_eq!(set.keys.len(), 2, "{name}: {:?}", kids(&set));
    }
    let served = world
        .served_where("the current key is served", |c| {
            c.keys.current_signing().kid == set.keys[0].kid
        })
        .await;
    assert!(served.keys.signing_by_kid(&old_kid).is_some());
    assert!(
        verifies(&served, &token, now),
        "a token issued before the kill stopped working"
    );
    println!("status writes of the killed operator in its last pass: {writes_before_kill}");
    operator.stop().await;
}

#[tokio::test]
async fn an_operator_killed_after_regenerating_a_secret_still_records_the_forced_reauth() {
    let (world, operator) = World::start(Clock::system()).await;
    world.apply(json!({})).await;
    let c = world.ready().await;
    let recorded = c.status.clone().unwrap().secrets.unwrap();
    operator.stop().await;

    // The Secret was deleted; the operator made it again with fresh keys and was killed
    // before it could record the new Secret or the regeneration in status.
    let old = world.secrets.get(DCR).await.unwrap();
    world
        .secrets
        .delete(DCR, &DeleteParams::default())
        .await
        .unwrap();
    let fresh = Keyset {
        keys: vec![KeyKind::Seal.generate(world.clock.now()).unwrap()],
    };
    let mut remade = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(DCR.into()),
            namespace: Some(NS.into()),
            labels: old.metadata.labels.clone(),
            owner_references: Some(vec![c.controller_owner_ref(&()).unwrap()]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    remade.data = Some([(KEYSET_KEY.to_string(), ByteString(fresh.to_bytes()))].into());
    let remade = world
        .secrets
        .create(&PostParams::default(), &remade)
        .await
        .unwrap();

    let operator = Operator::start(&world.api, &world.clock);
    let after = world
        .settled("status records the new Secret", |c| {
            let secrets = c.status.as_ref().and_then(|s| s.secrets.clone());
            secrets.and_then(|s| s.dcr_uid) == remade.uid()
        })
        .await;
    let secrets = after.status.unwrap().secrets.unwrap();
    assert_ne!(
        secrets.regenerated_at, recorded.regenerated_at,
        "the regeneration was lost: dependents would never restart for it"
    );
    assert_eq!(
        world.keyset(DCR).await.unwrap(),
        fresh,
        "the keys were replaced again"
    );
    eventually("a ForcedReauth Event", || async {
        let events = world.events_with("ForcedReauth").await;
        (!events.is_empty()).then_some(())
    })
    .await;
    operator.stop().await;
}

#[tokio::test]
async fn a_connector_deleted_while_the_watches_were_away_stops_being_served() {
    let (world, operator) = World::start(Clock::system()).await;
    world.apply(json!({})).await;
    world.ready().await;
    world
        .served_where("the connector is served", |_| true)
        .await;
    operator.stop().await;

    // The watches fail and back off; meanwhile the connector goes and its history is
    // compacted: the serving watcher learns of the deletion only by listing again.
    world.api.set_down(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    world.api.set_down(false);
    world
        .connectors
        .delete(NAME, &DeleteParams::default())
        .await
        .unwrap();
    world.api.compact();

    eventually("the deleted connector is no longer served", || async {
        matches!(world.store.route(Some(HOST), true), Route::Unknown).then_some(())
    })
    .await;
}
