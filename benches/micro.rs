//! Micro benchmarks of what `/token` and `/mcp` do per request: ES256 signing and
//! verifying, sealing and opening, redirect matching, token validation on `/mcp`, and the
//! two `/token` grants through the router with no network.
//!
//! `cargo bench --bench micro` (add `-- es256` to run one group). `bench/run.sh` runs it
//! and reads the ES256 signing time from it for the token issuance target.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, LazyLock};

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use divan::{Bencher, black_box};
use http_body_util::BodyExt;
use tower::ServiceExt;

use mcp_connector::base_url::BaseUrl;
use mcp_connector::clock::Clock;
use mcp_connector::crd::McpConnectorSpec;
use mcp_connector::grants::{GrantStore, MemoryGrants};
use mcp_connector::keys::store::Entry;
use mcp_connector::keys::{Connector, KeyKind, KeyStore, Keys, Keyset, random_token};
use mcp_connector::oauth::access_token::{self, AccessClaims};
use mcp_connector::oauth::authorize::CodeGrant;
use mcp_connector::oauth::client::{AuthMethod, Registration};
use mcp_connector::oauth::redirect::{Allowlist, match_registered};
use mcp_connector::oauth::seal::{self, Purpose};
use mcp_connector::oauth::token::RefreshGrant;
use mcp_connector::oauth::verified::{self, VerifiedTokens};
use mcp_connector::oauth::{AppState, Served, router};
use mcp_connector::settings::Settings;
use mcp_connector::upstream::Upstream;

fn main() {
    divan::main();
}

const BASE: &str = "http://127.0.0.1:8080";
const HOST: &str = "127.0.0.1:8080";
const CONNECTOR: &str = "bench/a";
const REDIRECT: &str = "http://127.0.0.1:53682/callback";

/// Everything the benchmarks share, built once.
struct Fixture {
    keys: Arc<Keys>,
    pkcs8: Vec<u8>,
    claims: AccessClaims,
    token: String,
    code: CodeGrant,
    registration: Registration,
    sealed_code: String,
    client_id: String,
    verifier: String,
    rt: tokio::runtime::Runtime,
    state: AppState,
    served: Served,
    app: axum::Router,
    /// The same server with 20,000 codes redeemed in the last minute in its grant state.
    busy_app: axum::Router,
}

fn connector(keys: Arc<Keys>) -> Connector {
    let spec: McpConnectorSpec = serde_json::from_value(serde_json::json!({
        "baseURL": BASE,
        "upstream": {"devUsers": [{"username": "u", "password": "p"}]},
    }))
    .unwrap();
    Connector {
        id: CONNECTOR.into(),
        base: BaseUrl::parse(BASE, "bench").unwrap(),
        settings: Settings::from_spec("bench", &spec).unwrap(),
        upstream: Upstream::AutoLogin("alice".into()),
        keys,
        loopback_aliases: false,
    }
}

static FIX: LazyLock<Fixture> = LazyLock::new(|| {
    let now = jiff::Timestamp::now();
    let dcr = Keyset {
        keys: vec![KeyKind::Seal.generate(now).unwrap()],
    };
    let signing = Keyset {
        keys: vec![KeyKind::Signing.generate(now).unwrap()],
    };
    let pem = signing.keys[0].material.expose().to_string();
    let pkcs8 = rcgen::KeyPair::from_pem(&pem).unwrap().serialize_der();
    let keys = Arc::new(Keys::from_keysets(&dcr, &signing).unwrap());

    // Claims as `/token` issues them for a user with two groups.
    let claims = AccessClaims {
        iss: BASE.into(),
        aud: format!("{BASE}/mcp"),
        sub: "alice@example.com".into(),
        exp: now.as_second() + 3600,
        iat: now.as_second(),
        jti: random_token::<12>().unwrap(),
        client_id: String::new(),
        scope: "mcp".into(),
        preferred_username: "alice@example.com".into(),
        groups: vec!["sre".into(), "dev".into()],
        gid: random_token::<16>().unwrap(),
    };
    let registration = Registration {
        redirect_uris: vec!["http://127.0.0.1/callback".into()],
        auth: AuthMethod::None,
        name: Some("Claude Code".into()),
        issued_at: now.as_second(),
    };
    let client_id = seal::seal(&keys, Purpose::Client, CONNECTOR, &registration).unwrap();
    let claims = AccessClaims {
        client_id: client_id.clone(),
        ..claims
    };
    let token = access_token::mint(&keys, &claims).unwrap();

    let verifier = format!(
        "{}{}",
        random_token::<24>().unwrap(),
        random_token::<24>().unwrap()
    );
    let challenge = B64.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
    let code = CodeGrant {
        c: client_id.clone(),
        r: REDIRECT.into(),
        cc: challenge,
        sc: "mcp".into(),
        res: format!("{BASE}/mcp"),
        u: "alice@example.com".into(),
        g: vec!["sre".into(), "dev".into()],
        exp: now.as_second() + 60,
        j: random_token::<16>().unwrap(),
    };
    let sealed_code = seal::seal(&keys, Purpose::Code, CONNECTOR, &code).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let store = KeyStore::new();
    let connector = Arc::new(connector(keys.clone()));
    store.upsert(CONNECTOR, Entry::Serving(connector.clone()));
    let state = AppState::new(store, Arc::new(MemoryGrants::new()), Clock::system());
    let served = Served {
        connector,
        base: BaseUrl::parse(BASE, "bench").unwrap(),
    };
    let app = router(state.clone());
    let busy = Arc::new(MemoryGrants::new());
    let expires = now + jiff::SignedDuration::from_mins(1);
    for i in 0..20_000 {
        let code = format!("code-{i}");
        rt.block_on(busy.redeem_code(CONNECTOR, &code, expires))
            .unwrap();
    }
    let busy_app = router(AppState::new(state.store.clone(), busy, Clock::system()));
    drop(_guard);

    Fixture {
        keys,
        pkcs8,
        claims,
        token,
        code,
        registration,
        sealed_code,
        client_id,
        verifier,
        rt,
        state,
        served,
        app,
        busy_app,
    }
});

/// ES256 as the server uses it (`access_token::mint` and `verify`: JSON, base64 and the
/// signature), and the raw aws-lc-rs operations under it.
mod es256 {
    use super::*;

    #[divan::bench]
    fn mint() -> String {
        access_token::mint(&FIX.keys, black_box(&FIX.claims)).unwrap()
    }

    #[divan::bench]
    fn verify() -> AccessClaims {
        let now = Some(jiff::Timestamp::now().as_second());
        let token = black_box(FIX.token.as_str());
        access_token::verify(&FIX.keys, token, BASE, &FIX.claims.aud, now).unwrap()
    }

    /// What `jsonwebtoken::encode` does on every call before signing: parse the PKCS#8
    /// key (aws-lc checks the pair, which multiplies the base point once).
    #[divan::bench]
    fn parse_pkcs8_key() -> EcdsaKeyPair {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, black_box(&FIX.pkcs8)).unwrap()
    }

    /// The signature alone, with a key parsed once.
    #[divan::bench]
    fn raw_sign(bencher: Bencher) {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &FIX.pkcs8).unwrap();
        let rng = SystemRandom::new();
        let message = FIX.token.rsplit_once('.').unwrap().0.as_bytes();
        bencher.bench_local(|| pair.sign(&rng, black_box(message)).unwrap());
    }

    /// The verification alone.
    #[divan::bench]
    fn raw_verify(bencher: Bencher) {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &FIX.pkcs8).unwrap();
        let rng = SystemRandom::new();
        let message = b"header.claims";
        let signature = pair.sign(&rng, message).unwrap();
        let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref());
        bencher.bench_local(|| {
            public
                .verify(black_box(message), signature.as_ref())
                .unwrap()
        });
    }
}

/// AES-256-GCM sealed values: authorization codes and dynamic client ids.
mod sealing {
    use super::*;

    #[divan::bench]
    fn seal_code() -> String {
        seal::seal(&FIX.keys, Purpose::Code, CONNECTOR, black_box(&FIX.code)).unwrap()
    }

    #[divan::bench]
    fn open_code() -> CodeGrant {
        let sealed = black_box(FIX.sealed_code.as_str());
        seal::open(&FIX.keys, Purpose::Code, CONNECTOR, sealed)
            .unwrap()
            .0
    }

    #[divan::bench]
    fn seal_client_id() -> String {
        let registration = black_box(&FIX.registration);
        seal::seal(&FIX.keys, Purpose::Client, CONNECTOR, registration).unwrap()
    }

    #[divan::bench]
    fn open_client_id() -> Registration {
        let sealed = black_box(FIX.client_id.as_str());
        seal::open(&FIX.keys, Purpose::Client, CONNECTOR, sealed)
            .unwrap()
            .0
    }
}

/// Redirect URIs: the allowlist at registration, the registered list at `/authorize`.
mod redirect {
    use super::*;

    static DEFAULT: LazyLock<Allowlist> = LazyLock::new(Allowlist::default);
    static REGISTERED: LazyLock<Vec<String>> = LazyLock::new(|| {
        vec![
            "https://claude.ai/api/mcp/auth_callback".into(),
            "http://127.0.0.1/callback".into(),
        ]
    });

    #[divan::bench(args = [
        "http://127.0.0.1:53682/callback",
        "https://claude.ai/api/mcp/auth_callback",
        "https://evil.example/api/mcp/auth_callback",
    ])]
    fn allowlist_check(uri: &str) -> bool {
        DEFAULT.check(black_box(uri)).is_ok()
    }

    #[divan::bench(args = [
        "https://claude.ai/api/mcp/auth_callback",
        "http://127.0.0.1:53682/callback",
        "https://claude.ai/api/mcp/auth_callback/x",
    ])]
    fn match_registered_uri(uri: &str) -> bool {
        match_registered(&REGISTERED, black_box(uri)).is_some()
    }
}

/// Token validation on `/mcp`: what `proxy::authenticate` does today, and a cache hit.
mod mcp_auth {
    use super::*;

    fn headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        let value = format!("Bearer {}", FIX.token);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&value).unwrap(),
        );
        h
    }

    /// A token not seen before: bearer parsing, ES256 verification, the claims checks, the
    /// revocation lookup, remembering the token. Each call has an empty cache of its own.
    #[divan::bench]
    fn authenticate_uncached(bencher: Bencher) {
        let headers = headers();
        bencher
            .with_inputs(|| AppState {
                verified: Arc::new(VerifiedTokens::new(verified::DEFAULT_CAPACITY)),
                ..FIX.state.clone()
            })
            .bench_local_refs(|state| {
                mcp_connector::proxy::authenticate(state, &FIX.served, black_box(&headers)).unwrap()
            });
    }

    /// What `/mcp` does for every later call with the token, with 10,000 other tokens
    /// remembered: the SHA-256 of the token, a cache hit with its checks, the revocation
    /// lookup.
    #[divan::bench]
    fn authenticate_cached(bencher: Bencher) {
        let state = AppState {
            verified: Arc::new(VerifiedTokens::new(verified::DEFAULT_CAPACITY)),
            ..FIX.state.clone()
        };
        for i in 0..10_000 {
            let claims = AccessClaims {
                jti: format!("jti-{i}"),
                ..FIX.claims.clone()
            };
            let token = access_token::mint(&FIX.keys, &claims).unwrap();
            state.verified.insert(
                &token,
                &FIX.keys,
                Arc::new(mcp_connector::proxy::Caller::new(claims)),
            );
        }
        let headers = headers();
        mcp_connector::proxy::authenticate(&state, &FIX.served, &headers).unwrap();

        bencher.bench_local(|| {
            mcp_connector::proxy::authenticate(&state, &FIX.served, black_box(&headers)).unwrap()
        });
    }
}

/// The two `/token` grants through the whole router, in process: form parsing, client
/// authentication, the grant state, minting and sealing, the JSON answer.
mod token_endpoint {
    use super::*;

    fn post(form: String) -> Request<Body> {
        Request::post("/token")
            .header(header::HOST, HOST)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .unwrap()
    }

    fn call_on(app: &axum::Router, request: Request<Body>) -> bytes::Bytes {
        FIX.rt.block_on(async {
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.unwrap().to_bytes()
        })
    }

    fn call(request: Request<Body>) -> bytes::Bytes {
        call_on(&FIX.app, request)
    }

    fn call_busy(request: Request<Body>) -> bytes::Bytes {
        call_on(&FIX.busy_app, request)
    }

    fn form(pairs: &[(&str, &str)]) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    }

    fn code_request() -> Request<Body> {
        let code = CodeGrant {
            j: random_token::<16>().unwrap(),
            exp: jiff::Timestamp::now().as_second() + 60,
            ..FIX.code.clone()
        };
        let sealed = seal::seal(&FIX.keys, Purpose::Code, CONNECTOR, &code).unwrap();
        post(form(&[
            ("grant_type", "authorization_code"),
            ("code", &sealed),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &FIX.verifier),
            ("client_id", &FIX.client_id),
        ]))
    }

    fn refresh_request() -> Request<Body> {
        let grant = RefreshGrant {
            g: random_token::<16>().unwrap(),
            n: 0,
            c: FIX.client_id.clone(),
            u: "alice@example.com".into(),
            gr: vec!["sre".into(), "dev".into()],
            sc: "mcp".into(),
            res: format!("{BASE}/mcp"),
            exp: jiff::Timestamp::now().as_second() + 3600,
        };
        let sealed = seal::seal(&FIX.keys, Purpose::Refresh, CONNECTOR, &grant).unwrap();
        post(form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &sealed),
            ("client_id", &FIX.client_id),
        ]))
    }

    #[divan::bench]
    fn authorization_code(bencher: Bencher) {
        bencher.with_inputs(code_request).bench_local_values(call);
    }

    #[divan::bench]
    fn refresh_token(bencher: Bencher) {
        bencher
            .with_inputs(refresh_request)
            .bench_local_values(call);
    }

    /// With 20,000 codes redeemed in the last minute (a few seconds of load): the grant
    /// state sweeps expired entries on every write once it holds more than 4,096.
    #[divan::bench]
    fn authorization_code_20k_live_codes(bencher: Bencher) {
        bencher
            .with_inputs(code_request)
            .bench_local_values(call_busy);
    }

    #[divan::bench]
    fn refresh_token_20k_live_codes(bencher: Bencher) {
        bencher
            .with_inputs(refresh_request)
            .bench_local_values(call_busy);
    }
}
