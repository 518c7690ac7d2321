//! Hostile input. Property tests feed generated input to every parser an attacker reaches:
//! the redirect matcher, registration metadata, the `/token` form, the `/authorize` query,
//! Client ID Metadata Documents, bearer tokens and sealed values. Tables then try the known
//! attacks, one family per test, each row with the reason it must fail.
//!
//! The router is driven in-process (`oneshot`) wherever many requests are sent, since the
//! loopback listener limits registrations per address; timing cases use real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use http::{HeaderMap, Request, StatusCode, header};
use jiff::SignedDuration;
use proptest::collection::{hash_map, vec};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use mcp_connector::keys::{KeyKind, Keys, Keyset};
use mcp_connector::oauth::access_token::{AccessClaims, mint, verify};
use mcp_connector::oauth::cimd::{CimdError, CimdFetcher, FetcherConfig};
use mcp_connector::oauth::redirect::{Allowlist, match_registered};
use mcp_connector::oauth::seal::{Purpose, open, seal};
use mcp_connector::oauth::{AppState, router};
use mcp_connector::upstream::Upstream;
use support::server::{START, TestServer, pkce};

const CLI: &str = "http://127.0.0.1:5000/callback";
const CLAUDE: &str = "https://claude.ai/api/mcp/auth_callback";
const LOOPBACK_QUERY: &str = "http://localhost/cb?x=1";

// ---------------------------------------------------------------------------------------
// The in-process rig.

/// An answer as a client sees it.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn error(&self) -> Option<String> {
        self.json()["error"].as_str().map(String::from)
    }

    fn location(&self) -> Option<String> {
        let value = self.headers.get(header::LOCATION)?;
        Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
    }

    /// The query pairs of the Location, decoded, in order.
    fn redirect_pairs(&self) -> Vec<(String, String)> {
        let location = self.location().unwrap_or_default();
        url::Url::parse(&location)
            .map(|u| u.query_pairs().into_owned().collect())
            .unwrap_or_default()
    }

    fn show(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        format!("{} {:?} {body}", self.status, self.location())
    }
}

/// A resolver that knows only the names a test gives it, so no test reaches real DNS.
struct Names(HashMap<&'static str, Vec<IpAddr>>);

impl Names {
    fn none() -> Arc<Names> {
        Arc::new(Names(HashMap::new()))
    }
}

impl Resolve for Names {
    fn resolve(&self, name: Name) -> Resolving {
        let found = self.0.get(name.as_str()).cloned();
        Box::pin(async move {
            match found {
                Some(ips) => {
                    let addrs = ips.into_iter().map(|ip| SocketAddr::new(ip, 0));
                    Ok(Box::new(addrs.collect::<Vec<_>>().into_iter()) as Addrs)
                }
                None => Err("the test resolver does not know this name".into()),
            }
        })
    }
}

/// A CIMD fetcher configuration that never leaves the machine.
fn hermetic_cimd() -> FetcherConfig {
    FetcherConfig {
        resolver: Some(Names::none()),
        timeout: Duration::from_secs(2),
        ..FetcherConfig::default()
    }
}

/// A [`TestServer`]'s connectors, served by a router called in-process.
struct Rig {
    server: TestServer,
    app: Router,
    host: String,
}

impl Rig {
    async fn start() -> Rig {
        Rig::over(TestServer::start(json!({}), None).await, hermetic_cimd())
    }

    fn over(server: TestServer, cimd: FetcherConfig) -> Rig {
        let state = AppState::with_cimd(
            server.store.clone(),
            server.grants.clone(),
            server.clock.clone(),
            cimd,
        );
        Rig {
            app: router(state),
            host: format!("127.0.0.1:{}", server.addr.port()),
            server,
        }
    }

    fn issuer(&self) -> String {
        self.server.base()
    }

    async fn call(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn get_on(&self, host: &str, target: &str) -> Answer {
        let request = Request::get(target).header(header::HOST, host);
        self.call(request.body(Body::empty()).unwrap()).await
    }

    async fn post_on(
        &self,
        host: &str,
        path: &str,
        content_type: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Answer {
        let mut request = Request::post(path)
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, content_type);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        self.call(request.body(Body::from(body)).unwrap()).await
    }

    async fn register(&self, metadata: &Value) -> Answer {
        let body = metadata.to_string().into_bytes();
        self.post_on(&self.host, "/register", "application/json", &[], body)
            .await
    }

    async fn public_client(&self, redirects: &[&str]) -> String {
        let metadata = json!({"redirect_uris": redirects, "token_endpoint_auth_method": "none"});
        let answer = self.register(&metadata).await;
        assert_eq!(answer.status, 201, "{}", answer.show());
        answer.json()["client_id"].as_str().unwrap().to_string()
    }

    /// A confidential client: its id and secret.
    async fn confidential_client(&self, method: &str) -> (String, String) {
        let metadata = json!({"redirect_uris": [CLI], "token_endpoint_auth_method": method});
        let answer = self.register(&metadata).await;
        assert_eq!(answer.status, 201, "{}", answer.show());
        let body = answer.json();
        let id = body["client_id"].as_str().unwrap().to_string();
        (id, body["client_secret"].as_str().unwrap().to_string())
    }

    async fn authorize_on(&self, host: &str, pairs: &[(&str, &str)]) -> Answer {
        let query = form(pairs);
        self.get_on(host, &format!("/authorize?{query}")).await
    }

    async fn authorize(&self, pairs: &[(&str, &str)]) -> Answer {
        self.authorize_on(&self.host, pairs).await
    }

    /// A code for `client_id` at `redirect`, with this challenge.
    async fn code(&self, client_id: &str, redirect: &str, challenge: &str) -> String {
        let answer = self.authorize(&login(client_id, redirect, challenge)).await;
        let code = pair(&answer.redirect_pairs(), "code");
        code.unwrap_or_else(|| panic!("no code: {}", answer.show()))
    }

    async fn token_on(
        &self,
        host: &str,
        pairs: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Answer {
        let headers: Vec<(&str, String)> = basic
            .map(|(id, secret)| ("authorization", basic_header(id, secret)))
            .into_iter()
            .collect();
        let body = form(pairs).into_bytes();
        let content_type = "application/x-www-form-urlencoded";
        self.post_on(host, "/token", content_type, &headers, body)
            .await
    }

    async fn token(&self, pairs: &[(&str, &str)], basic: Option<(&str, &str)>) -> Answer {
        self.token_on(&self.host, pairs, basic).await
    }

    /// A whole login of a public client: its tokens' answer.
    async fn tokens(&self, client_id: &str) -> Value {
        let (verifier, challenge) = pkce();
        let code = self.code(client_id, CLI, &challenge).await;
        let answer = self
            .token(&exchange(client_id, &code, &verifier, CLI), None)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.show());
        answer.json()
    }
}

/// The parameters of a good authorization request.
fn login<'a>(client_id: &'a str, redirect: &'a str, challenge: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", "s"),
    ]
}

/// The form of a good code exchange.
fn exchange<'a>(
    client_id: &'a str,
    code: &'a str,
    verifier: &'a str,
    redirect: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("code_verifier", verifier),
        ("redirect_uri", redirect),
        ("client_id", client_id),
    ]
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        serializer.append_pair(k, v);
    }
    serializer.finish()
}

fn basic_header(id: &str, secret: &str) -> String {
    let encode = |s: &str| form(&[("x", s)]).trim_start_matches("x=").to_string();
    let raw = format!("{}:{}", encode(id), encode(secret));
    format!("Basic {}", STANDARD.encode(raw))
}

fn pair(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

fn count(pairs: &[(String, String)], key: &str) -> usize {
    pairs.iter().filter(|(k, _)| k == key).count()
}

/// Flips one bit in the middle of a base64url value, keeping it valid base64url.
fn tamper(value: &str) -> String {
    let mut bytes = B64.decode(value).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    B64.encode(bytes)
}

#[path = "hostile/properties.rs"]
mod properties;

#[path = "hostile/attacks.rs"]
mod attacks;
