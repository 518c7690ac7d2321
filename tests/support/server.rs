//! An OAuth server on loopback built from the library's own parts, with a pinned clock and
//! keys a test can rotate or delete, and a scripted OAuth client that drives it over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jiff::Timestamp;
use serde_json::{Value, json};

use mcp_connector::base_url::BaseUrl;
use mcp_connector::clock::Clock;
use mcp_connector::crd::McpConnectorSpec;
use mcp_connector::grants::MemoryGrants;
use mcp_connector::keys::rotation;
use mcp_connector::keys::store::Entry;
use mcp_connector::keys::{Connector, KeyKind, KeyStore, Keys, Keyset};
use mcp_connector::oauth::{AppState, cimd::FetcherConfig, router};
use mcp_connector::settings::Settings;
use mcp_connector::upstream::Upstream;

/// Where the pinned clock starts.
pub const START: &str = "2026-06-01T12:00:00Z";

/// Makes the upstream of a connector; called again whenever keys change.
pub type UpstreamFactory = Arc<dyn Fn() -> Upstream + Send + Sync>;

struct Published {
    id: String,
    base: BaseUrl,
    settings: Settings,
    upstream: UpstreamFactory,
    dcr: Keyset,
    signing: Keyset,
}

/// A running OAuth server serving one or more connectors.
pub struct TestServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The store it serves from.
    pub store: KeyStore,
    /// Its pinned clock.
    pub clock: Clock,
    /// Its grant state.
    pub grants: Arc<MemoryGrants>,
    connectors: Mutex<Vec<Published>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connector spec for tests: the given fields over a loopback base URL and dev users.
pub fn spec(overrides: Value) -> McpConnectorSpec {
    let mut base = json!({"upstream": {"devUsers": [{"username": "u", "password": "p"}]}});
    merge(&mut base, overrides);
    serde_json::from_value(base).unwrap()
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

impl TestServer {
    /// Starts a server with one connector, id `test/a`, reached at `http://127.0.0.1:PORT`,
    /// signing every login in as `alice` unless `upstream` says otherwise.
    pub async fn start(overrides: Value, upstream: Option<UpstreamFactory>) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let clock = Clock::pinned(START.parse().unwrap());
        let store = KeyStore::new();
        let grants = Arc::new(MemoryGrants::new());

        let cimd = FetcherConfig {
            allow_private: true,
            ..FetcherConfig::default()
        };
        let state = AppState::with_cimd(store.clone(), grants.clone(), clock.clone(), cimd);
        let stop = std::future::pending();
        let task = tokio::spawn(mcp_connector::serve::serve(listener, router(state), stop));

        let server = TestServer {
            addr,
            store,
            clock,
            grants,
            connectors: Mutex::new(Vec::new()),
            task,
        };
        let upstream =
            upstream.unwrap_or_else(|| Arc::new(|| Upstream::AutoLogin("alice".to_string())));
        server.add_connector(
            "test/a",
            &format!("http://127.0.0.1:{}", addr.port()),
            overrides,
            upstream,
        );
        server
    }

    /// Adds another connector on the same listener, reached at `base`.
    pub fn add_connector(&self, id: &str, base: &str, overrides: Value, upstream: UpstreamFactory) {
        let mut overrides = overrides;
        merge(&mut overrides, json!({"baseURL": base}));
        let spec = spec(overrides);
        let now = self.clock.now();

        let published = Published {
            id: id.to_string(),
            base: BaseUrl::parse(base, "test").unwrap(),
            settings: Settings::from_spec("test", &spec).unwrap(),
            upstream,
            dcr: Keyset {
                keys: vec![KeyKind::Seal.generate(now).unwrap()],
            },
            signing: Keyset {
                keys: vec![KeyKind::Signing.generate(now).unwrap()],
            },
        };
        self.publish(&published);
        self.connectors.lock().unwrap().push(published);
    }

    fn publish(&self, p: &Published) {
        let keys = Keys::from_keysets(&p.dcr, &p.signing).unwrap();
        let connector = Connector {
            id: p.id.clone(),
            base: p.base.clone(),
            settings: p.settings.clone(),
            upstream: (p.upstream)(),
            keys: Arc::new(keys),
            loopback_aliases: false,
        };
        self.store
            .upsert(&p.id, Entry::Serving(Arc::new(connector)));
    }

    fn edit(&self, edit: impl FnOnce(&mut Published)) {
        let mut all = self.connectors.lock().unwrap();
        let first = &mut all[0];
        edit(first);
        self.publish(first);
    }

    /// Rotates the first connector's keys as the reconciler would: the old key retired.
    pub fn rotate(&self, kind: KeyKind) {
        let now = self.clock.now();
        self.edit(|p| {
            let set = match kind {
                KeyKind::Seal => &mut p.dcr,
                KeyKind::Signing => &mut p.signing,
            };
            let plan = rotation::Plan {
                rotate: Some("test".into()),
                prune: vec![],
            };
            *set = rotation::apply(set, &plan, now, || kind.generate(now)).unwrap();
        });
    }

    /// Replaces the first connector's keys of one kind with fresh ones, as after the
    /// Secret was deleted.
    pub fn regenerate(&self, kind: KeyKind) {
        let now = self.clock.now();
        self.edit(|p| {
            let fresh = Keyset {
                keys: vec![kind.generate(now).unwrap()],
            };
            match kind {
                KeyKind::Seal => p.dcr = fresh,
                KeyKind::Signing => p.signing = fresh,
            }
        });
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    /// A URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// The current time of the pinned clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// An HTTP client that follows no redirects, as an OAuth client must not.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap()
}

/// A PKCE verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = format!("{}{}", B64.encode(rand_bytes()), B64.encode(rand_bytes()));
    let challenge = B64.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
    (verifier, challenge)
}

fn rand_bytes() -> [u8; 24] {
    mcp_connector::keys::random_bytes::<24>().unwrap()
}

/// A registered client as the server answered.
#[derive(Clone, Debug)]
pub struct Registered {
    /// The answer's JSON.
    pub body: Value,
    /// `client_id`.
    pub id: String,
    /// `client_secret`, if issued.
    pub secret: Option<String>,
}

/// Tokens as the server answered.
#[derive(Clone, Debug)]
pub struct Tokens {
    /// The answer's JSON.
    pub body: Value,
    /// `access_token`.
    pub access: String,
    /// `refresh_token`.
    pub refresh: String,
}

/// Registers a client with the given metadata.
pub async fn register(server: &TestServer, metadata: Value) -> (reqwest::StatusCode, Value) {
    let r = http()
        .post(server.url("/register"))
        .json(&metadata)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// Registers a public client with one redirect URI.
pub async fn register_public(server: &TestServer, redirect: &str) -> Registered {
    let (status, body) = register(
        server,
        json!({"redirect_uris": [redirect], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    Registered {
        id: body["client_id"].as_str().unwrap().to_string(),
        secret: None,
        body,
    }
}

/// Query parameters of a URL.
pub fn query(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// Runs `/authorize` with the given extra parameters and returns the redirect's Location.
pub async fn authorize(
    server: &TestServer,
    client_id: &str,
    redirect: &str,
    challenge: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", "st4te"),
    ];
    params.extend_from_slice(extra);
    http()
        .get(server.url("/authorize"))
        .query(&params)
        .send()
        .await
        .unwrap()
}

/// The Location of a redirect.
pub fn location(r: &reqwest::Response) -> String {
    r.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_string()
}

/// Authorizes and returns the code from the redirect.
pub async fn code(
    server: &TestServer,
    client_id: &str,
    redirect: &str,
    challenge: &str,
    extra: &[(&str, &str)],
) -> String {
    let r = authorize(server, client_id, redirect, challenge, extra).await;
    assert_eq!(r.status(), 302, "{:?}", r.text().await);
    let q = query(&location(&r));
    assert!(q.contains_key("code"), "{q:?}");
    q["code"].clone()
}

/// Posts a form to `/token`, optionally with Basic credentials.
pub async fn token(
    server: &TestServer,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = http().post(server.url("/token")).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.json().await.unwrap())
}

/// A whole login of a public client: register, authorize, token.
pub async fn login(server: &TestServer, redirect: &str) -> (Registered, Tokens) {
    let client = register_public(server, redirect).await;
    let (verifier, challenge) = pkce();
    let code = code(server, &client.id, redirect, &challenge, &[]).await;

    let (status, _, body) = token(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("code_verifier", &verifier),
            ("client_id", &client.id),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let tokens = Tokens {
        access: body["access_token"].as_str().unwrap().to_string(),
        refresh: body["refresh_token"].as_str().unwrap().to_string(),
        body,
    };
    (client, tokens)
}

/// Refreshes with a public client.
pub async fn refresh(
    server: &TestServer,
    client_id: &str,
    refresh_token: &str,
    scope: Option<&str>,
) -> (reqwest::StatusCode, Value) {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", client_id),
    ];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    let (status, _, body) = token(server, &form, None).await;
    (status, body)
}
