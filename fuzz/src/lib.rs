//! What the fuzz targets share: one connector served by the real router, called
//! in-process, and the checks every answer must pass.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use http::{StatusCode, header};
use tower::ServiceExt;

use mcp_connector::base_url::BaseUrl;
use mcp_connector::clock::Clock;
use mcp_connector::grants::MemoryGrants;
use mcp_connector::keys::store::Entry;
use mcp_connector::keys::{Connector, KeyKind, KeyStore, Keys, Keyset};
use mcp_connector::oauth::cimd::FetcherConfig;
use mcp_connector::oauth::{AppState, router};
use mcp_connector::settings::Settings;
use mcp_connector::upstream::Upstream;

/// The base URL the connector is served at.
pub const BASE: &str = "http://127.0.0.1:8080";
/// The `Host` header that reaches it.
pub const HOST: &str = "127.0.0.1:8080";

/// A runtime and the router, made once per fuzzing process.
pub struct Rig {
    /// Runs the requests.
    pub runtime: tokio::runtime::Runtime,
    /// The whole HTTP surface.
    pub app: Router,
    /// The connector's keys, for targets that seal or sign.
    pub keys: Arc<Keys>,
}

/// The shared rig.
pub fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let clock = Clock::pinned("2026-06-01T12:00:00Z".parse().unwrap());
        let now = clock.now();
        let dcr = Keyset {
            keys: vec![KeyKind::Seal.generate(now).unwrap()],
        };
        let signing = Keyset {
            keys: vec![KeyKind::Signing.generate(now).unwrap()],
        };
        let keys = Arc::new(Keys::from_keysets(&dcr, &signing).unwrap());
        let spec = serde_json::from_value(serde_json::json!({
            "baseURL": BASE,
            "upstream": {"devUsers": [{"username": "u", "password": "p"}]},
        }))
        .unwrap();
        let connector = Connector {
            id: "fuzz/a".into(),
            base: BaseUrl::parse(BASE, "fuzz").unwrap(),
            settings: Settings::from_spec("fuzz", &spec).unwrap(),
            upstream: Upstream::AutoLogin("alice".into()),
            keys: keys.clone(),
            loopback_aliases: false,
        };
        let store = KeyStore::new();
        store.upsert("fuzz/a", Entry::Serving(Arc::new(connector)));
        // No DNS and no network: metadata document URLs fail closed at once.
        let cimd = FetcherConfig {
            timeout: std::time::Duration::from_millis(200),
            ..FetcherConfig::default()
        };
        let state = AppState::with_cimd(store, Arc::new(MemoryGrants::new()), clock, cimd);
        Rig {
            runtime,
            app: router(state),
            keys,
        }
    })
}

/// Sends a request in-process; the status, the Location and the body.
pub fn send(
    request: http::request::Builder,
    body: Vec<u8>,
) -> (StatusCode, Option<String>, Vec<u8>) {
    let rig = rig();
    let Ok(request) = request.header(header::HOST, HOST).body(Body::from(body)) else {
        return (StatusCode::BAD_REQUEST, None, Vec::new());
    };
    rig.runtime.block_on(async {
        let response = rig.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        (status, location, body)
    })
}

/// Never a 5xx; a redirect's Location has no CR or LF; anything else is a JSON object.
pub fn assert_well_formed(status: StatusCode, location: Option<&str>, body: &[u8]) {
    assert!(
        !status.is_server_error(),
        "{status}: {}",
        String::from_utf8_lossy(body)
    );
    if status == StatusCode::FOUND {
        let location = location.expect("a redirect without Location");
        assert!(!location.contains(['\r', '\n']), "{location:?}");
        return;
    }
    let json: serde_json::Value = serde_json::from_slice(body).expect("a JSON body");
    assert!(json.is_object(), "{json}");
}
