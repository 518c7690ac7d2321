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

// ---------------------------------------------------------------------------------------
// Property tests.

/// 256 cases a property unless `PROPTEST_CASES` says otherwise; no regression files.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn check<S>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let mut runner = TestRunner::new(config());
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

fn fail(why: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(why.into())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Never a 5xx; a redirect has a Location without CR or LF; anything else is JSON, with
/// an `error` member when it is an error (SPEC 5).
fn well_formed(answer: &Answer) -> Result<(), TestCaseError> {
    prop_assert!(!answer.status.is_server_error(), "5xx: {}", answer.show());
    if answer.status == StatusCode::FOUND {
        let location = answer
            .location()
            .ok_or_else(|| fail("302 without Location"))?;
        prop_assert!(!location.contains(['\r', '\n']), "CR/LF in {location:?}");
        prop_assert!(
            url::Url::parse(&location).is_ok(),
            "bad Location {location:?}"
        );
        return Ok(());
    }
    let json_type = answer
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    prop_assert!(json_type, "not JSON: {}", answer.show());
    let body = answer.json();
    prop_assert!(
        body.is_object(),
        "body is not a JSON object: {}",
        answer.show()
    );
    if answer.status.is_client_error() {
        prop_assert!(
            body["error"].is_string(),
            "no error code: {}",
            answer.show()
        );
    }
    Ok(())
}

const SCHEMES: &[&str] = &[
    "http",
    "https",
    "HTTP",
    "hTTps",
    "javascript",
    "JavaScript",
    "data",
    "file",
    "vbscript",
    "cursor",
    "com.example.app",
    "ftp",
    "blob",
    "",
];
const SEPARATORS: &[&str] = &["://", "://", "://", ":", ":/", ":///", "//", ":\\\\"];
const USERINFO: &[&str] = &[
    "",
    "",
    "",
    "user@",
    "claude.ai@",
    "a:b@",
    "%40@",
    "localhost@",
];
const HOSTS: &[&str] = &[
    "localhost",
    "LocalHost",
    "127.0.0.1",
    "127.1",
    "0x7f.0.0.1",
    "2130706433",
    "127.000.000.001",
    "[::1]",
    "[0:0::1]",
    "[::ffff:127.0.0.1]",
    "claude.ai",
    "CLAUDE.AI",
    "claude.ai.",
    "claude.ai.evil.com",
    "evil-claude.ai",
    "claude.com",
    "claude.com:443@evil.com",
    "cl\u{0430}ude.ai",
    "\u{ff43}laude.ai",
    "xn--claude-9ya.ai",
    "localhost.evil.com",
    "localhost.",
    "%6cocalhost",
    "claude%2eai",
    "127.0.0.1.nip.io",
    "evil.com",
    "app.example.com",
    "anysphere.cursor-retrieval",
    "",
];
const PORTS: &[&str] = &[
    "", "", ":5000", ":0", ":65535", ":65536", ":*", ":05000", ":", ":443", ":80", ":8000",
];
const PATHS: &[&str] = &[
    "",
    "/",
    "/callback",
    "/cb",
    "/api/mcp/auth_callback",
    "/api/mcp/auth_callback/",
    "/api/mcp/../mcp/auth_callback",
    "/api/mcp/%2e%2e/auth_callback",
    "/api/mcp/auth%5fcallback",
    "/a b",
    "/%0d%0aSet-Cookie:%20x=y",
    "\\@evil.com",
    "/\u{2028}",
    "//evil.com",
];
const QUERIES: &[&str] = &["", "", "?", "?a=1", "?x=1", "?redirect=https://evil.com"];
const FRAGMENTS: &[&str] = &["", "", "", "#", "#x", "#@evil.com"];
const JUNK: &[&str] = &[
    "\r", "\n", "\r\n", "\t", " ", "\0", "\u{a0}", "\\", "@", "#", "%", "%00",
];

fn sel(options: &'static [&'static str]) -> impl Strategy<Value = &'static str> + Clone {
    select(options)
}

/// Inserts `junk` at a character boundary chosen by `at`.
fn insert_at(text: &str, at: Index, junk: &str) -> String {
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let at = bounds[at.index(bounds.len())];
    format!("{}{junk}{}", &text[..at], &text[at..])
}

/// Redirect URIs built from pieces that are each known to trip some matcher.
fn uri_from_pieces() -> impl Strategy<Value = String> + Clone {
    let head = (
        sel(SCHEMES),
        sel(SEPARATORS),
        sel(USERINFO),
        sel(HOSTS),
        sel(PORTS),
    );
    let tail = (sel(PATHS), sel(QUERIES), sel(FRAGMENTS));
    let junk = proptest::option::weighted(0.2, (any::<Index>(), sel(JUNK)));
    (head, tail, junk).prop_map(|((s, sep, u, h, p), (path, q, f), junk)| {
        let uri = format!("{s}{sep}{u}{h}{p}{path}{q}{f}");
        match junk {
            Some((at, j)) => insert_at(&uri, at, j),
            None => uri,
        }
    })
}

/// Any text: arbitrary Unicode, printable ASCII, or URIs from pieces.
fn uri_text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,120}",
        uri_from_pieces(),
        uri_from_pieces(),
    ]
}

/// What a URI's text says its host is: between `://` (after any userinfo) and the port,
/// path or query.
fn raw_host(uri: &str) -> &str {
    let rest = uri.split_once("://").map_or("", |(_, rest)| rest);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    }
}

/// Nothing in the text that a browser could read another way.
fn nothing_hidden(uri: &str) -> Result<url::Url, String> {
    if !uri.chars().all(|c| c.is_ascii_graphic()) {
        return Err("a space, control or non-ASCII character".into());
    }
    if let Some(c) = uri.chars().find(|c| matches!(c, '@' | '#' | '\\')) {
        return Err(format!("`{c}` in the URI"));
    }
    let url = url::Url::parse(uri).map_err(|e| e.to_string())?;
    let host = url.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !raw_host(uri).eq_ignore_ascii_case(host) {
        return Err(format!(
            "host written {:?} but read {host:?}",
            raw_host(uri)
        ));
    }
    Ok(url)
}

/// Judged without the matcher: a URI the default allowlist accepted has the scheme and
/// host of one of its entries (and the callback path of the claude entries).
fn within_default_allowlist(uri: &str) -> Result<(), String> {
    let url = nothing_hidden(uri)?;
    match (url.scheme(), url.host_str()) {
        ("http", Some("localhost" | "127.0.0.1")) => Ok(()),
        ("https", Some("claude.ai" | "claude.com"))
            if url.port().is_none() && url.path() == "/api/mcp/auth_callback" =>
        {
            Ok(())
        }
        (scheme, host) => Err(format!("outside the allowlist: {scheme} {host:?}")),
    }
}

const CUSTOM_LIST: [&str; 3] = ["https://app.example.com", "cursor://", "http://[::1]:*/cb"];

/// The same, for [`CUSTOM_LIST`].
fn within_custom_allowlist(uri: &str) -> Result<(), String> {
    let url = url::Url::parse(uri).map_err(|e| e.to_string())?;
    if url.scheme() == "cursor" {
        return Ok(());
    }
    nothing_hidden(uri)?;
    match (url.scheme(), url.host_str(), url.path()) {
        ("https", Some("app.example.com"), _) if url.port().is_none() => Ok(()),
        ("http", Some("[::1]"), "/cb") => Ok(()),
        (scheme, host, path) => Err(format!("outside the list: {scheme} {host:?} {path}")),
    }
}

const REGISTERED: [&str; 6] = [
    CLI,
    "http://localhost/cb",
    CLAUDE,
    "http://[::1]:8000/cb",
    "cursor://anysphere.cursor-retrieval/cb",
    "http://127.0.0.1:5000/callback?a=1",
];

/// Judged without the matcher: the registered URI matched is the one requested, or a
/// loopback one that differs from it in the port alone (RFC 8252 7.3).
fn sound_match(requested: &str, matched: &str) -> Result<(), String> {
    if !REGISTERED.contains(&matched) {
        return Err(format!("matched {matched:?}, which is not registered"));
    }
    if requested == matched {
        return Ok(());
    }
    let req = nothing_hidden(requested)?;
    let reg = url::Url::parse(matched).map_err(|e| e.to_string())?;
    let loopback = matches!(reg.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    let same = req.scheme() == reg.scheme()
        && req.host_str() == reg.host_str()
        && req.path() == reg.path()
        && req.query() == reg.query();
    if loopback && same {
        Ok(())
    } else {
        Err(format!("{requested:?} matched {matched:?}"))
    }
}

#[test]
fn the_redirect_matcher_never_panics_and_allows_nothing_off_its_list() {
    let default = Allowlist::default();
    let custom = Allowlist::parse(&CUSTOM_LIST).unwrap();
    let registered: Vec<String> = REGISTERED.iter().map(|s| s.to_string()).collect();

    check(uri_text(), |uri| {
        if default.check(&uri).is_ok() {
            within_default_allowlist(&uri).map_err(fail)?;
        }
        if custom.check(&uri).is_ok() {
            within_custom_allowlist(&uri).map_err(fail)?;
        }
        if let Some(matched) = match_registered(&registered, &uri) {
            sound_match(&uri, matched).map_err(fail)?;
        }
        Ok(())
    });
}

#[test]
fn allowlist_entries_never_panic_when_parsed() {
    check(vec(uri_text(), 0..4), |entries| {
        if let Ok(list) = Allowlist::parse(&entries) {
            let _ = list.check(CLI);
        }
        Ok(())
    });
}

const FIELDS: &[&str] = &[
    "redirect_uris",
    "token_endpoint_auth_method",
    "grant_types",
    "response_types",
    "client_name",
    "scope",
    "client_id",
    "client_secret",
    "jwks",
    "software_statement",
];

/// Any JSON, with keys that are often the fields of client metadata.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        uri_text().prop_map(Value::from),
    ];
    let key = prop_oneof![sel(FIELDS).prop_map(String::from), "[a-z_]{0,12}"];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            hash_map(key.clone(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const AUTH_METHODS: &[&str] = &[
    "none",
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "client_secret_jwt",
    "",
    "NONE",
];
const GRANT_TYPES: &[&str] = &[
    "authorization_code",
    "refresh_token",
    "implicit",
    "client_credentials",
    "password",
];
const RESPONSE_TYPES: &[&str] = &["code", "token", "id_token", "code token"];

/// Registration metadata from plausible and hostile field values.
fn metadata() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(vec(uri_text(), 0..4)),
        proptest::option::of(sel(AUTH_METHODS)),
        proptest::option::of(vec(sel(GRANT_TYPES), 0..3)),
        proptest::option::of(vec(sel(RESPONSE_TYPES), 0..2)),
        proptest::option::of(prop_oneof![any::<String>(), "x{300}"]),
        proptest::option::of(prop_oneof![Just("mcp".to_string()), any::<String>()]),
    )
        .prop_map(|(uris, method, grants, responses, name, scope)| {
            let mut m = serde_json::Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            };
            put("redirect_uris", uris.map(|u| json!(u)));
            put("token_endpoint_auth_method", method.map(|x| json!(x)));
            put("grant_types", grants.map(|g| json!(g)));
            put("response_types", responses.map(|r| json!(r)));
            put("client_name", name.map(Value::from));
            put("scope", scope.map(Value::from));
            Value::Object(m)
        })
}

fn registration_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => metadata().prop_map(|v| v.to_string().into_bytes()),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => vec(any::<u8>(), 0..400),
    ]
}

#[test]
fn registration_answers_json_and_registers_only_allowed_redirects() {
    let rt = runtime();
    let rig = rt.block_on(Rig::start());

    check(registration_body(), |body| {
        rt.block_on(async {
            let answer = rig
                .post_on(
                    &rig.host,
                    "/register",
                    "application/json",
                    &[],
                    body.clone(),
                )
                .await;
            well_formed(&answer)?;

            let reply = answer.json();
            if answer.status != StatusCode::CREATED {
                let code = reply["error"].as_str().unwrap_or_default();
                let known = ["invalid_redirect_uri", "invalid_client_metadata"];
                prop_assert!(known.contains(&code), "{}", answer.show());
                prop_assert_eq!(answer.status, StatusCode::BAD_REQUEST);
                return Ok(());
            }

            let sent: Value = serde_json::from_slice(&body).unwrap();
            for uri in reply["redirect_uris"].as_array().into_iter().flatten() {
                let uri = uri.as_str().unwrap_or_default();
                within_default_allowlist(uri).map_err(fail)?;
            }
            prop_assert_eq!(&reply["redirect_uris"], &sent["redirect_uris"]);
            let method = sent["token_endpoint_auth_method"]
                .as_str()
                .unwrap_or("client_secret_basic");
            prop_assert_eq!(reply["token_endpoint_auth_method"].as_str(), Some(method));
            prop_assert_eq!(reply["client_secret"].is_string(), method != "none");
            Ok(())
        })
    });
}

/// What a value in a generated request stands for; `$` names are filled in per case.
const TOKEN_VALUES: &[&str] = &[
    "$CODE",
    "$CODE",
    "$CODE_TAMPERED",
    "$VERIFIER",
    "$VERIFIER",
    "$PUBLIC",
    "$PUBLIC",
    "$CONFIDENTIAL",
    "$SECRET",
    "$REFRESH",
    "$REFRESH_TAMPERED",
    "$ACCESS",
    CLI,
    "http://127.0.0.1:5001/callback",
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "mcp",
    "mcp offline_access",
    "admin",
    "",
];
const TOKEN_KEYS: &[&str] = &[
    "grant_type",
    "grant_type",
    "code",
    "code_verifier",
    "client_id",
    "client_id",
    "client_secret",
    "redirect_uri",
    "refresh_token",
    "scope",
    "resource",
];
const AUTH_HEADERS: &[&str] = &[
    "",
    "",
    "Basic $PUBLIC:",
    "Basic $CONFIDENTIAL:$SECRET",
    "Basic $CONFIDENTIAL:wrong",
    "Basic !!!",
    "Basic Og==",
    "Bearer $ACCESS",
];

fn value_text(pool: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        4 => sel(pool).prop_map(String::from),
        1 => any::<String>(),
    ]
}

/// A `/token` request: form pairs and an `Authorization` header, in `$` names.
fn token_request() -> impl Strategy<Value = (Vec<(String, String)>, &'static str)> {
    let key = prop_oneof![6 => sel(TOKEN_KEYS).prop_map(String::from), 1 => "[a-z_]{0,8}"];
    (
        vec((key, value_text(TOKEN_VALUES)), 0..8),
        sel(AUTH_HEADERS),
    )
}

/// Fills the `$` names of one case.
struct Secrets {
    values: Vec<(&'static str, String)>,
}

impl Secrets {
    fn fill(&self, text: &str) -> String {
        let mut out = text.to_string();
        // Longest names first, so `$CODE` does not eat `$CODE_TAMPERED`.
        for (name, value) in &self.values {
            out = out.replace(name, value);
        }
        out
    }
}

/// Flips one bit in the middle of a base64url value, keeping it valid base64url.
fn tamper(value: &str) -> String {
    let mut bytes = B64.decode(value).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    B64.encode(bytes)
}

#[test]
fn token_requests_answer_json_and_issue_only_for_the_genuine_grant() {
    let rt = runtime();
    let rig = rt.block_on(Rig::start());
    let public = rt.block_on(rig.public_client(&[CLI]));
    let (confidential, secret) = rt.block_on(rig.confidential_client("client_secret_basic"));
    let tokens = rt.block_on(rig.tokens(&public));
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let access = tokens["access_token"].as_str().unwrap().to_string();

    check(token_request(), |(pairs, auth)| {
        rt.block_on(async {
            let (verifier, challenge) = pkce();
            let code = rig.code(&public, CLI, &challenge).await;
            let secrets = Secrets {
                values: vec![
                    ("$CODE_TAMPERED", tamper(&code)),
                    ("$CODE", code.clone()),
                    ("$VERIFIER", verifier.clone()),
                    ("$PUBLIC", public.clone()),
                    ("$CONFIDENTIAL", confidential.clone()),
                    ("$SECRET", secret.clone()),
                    ("$REFRESH_TAMPERED", tamper(&refresh)),
                    ("$REFRESH", refresh.clone()),
                    ("$ACCESS", access.clone()),
                ],
            };
            let filled: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.clone(), secrets.fill(v)))
                .collect();
            let pairs_ref: Vec<(&str, &str)> = filled
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut headers = Vec::new();
            let auth = secrets.fill(auth);
            if let Some(basic) = auth.strip_prefix("Basic ") {
                let value = match basic.split_once(':') {
                    Some((id, s)) => basic_header(id, s),
                    None => auth.clone(),
                };
                headers.push(("authorization", value));
            } else if !auth.is_empty() {
                headers.push(("authorization", auth.clone()));
            }
            let body = form(&pairs_ref).into_bytes();
            let content_type = "application/x-www-form-urlencoded";
            let answer = rig
                .post_on(&rig.host, "/token", content_type, &headers, body)
                .await;
            well_formed(&answer)?;

            let get = |k: &str| {
                let found: Vec<&str> = pairs_ref
                    .iter()
                    .filter(|(key, _)| *key == k)
                    .map(|(_, v)| *v)
                    .collect();
                (found.len() == 1).then(|| found[0])
            };
            if answer.status == StatusCode::OK {
                let basic_id = auth
                    .strip_prefix("Basic ")
                    .and_then(|b| b.split_once(':'))
                    .map(|(id, _)| id.to_string());
                let client = basic_id.or_else(|| get("client_id").map(String::from));
                prop_assert_eq!(client.as_deref(), Some(public.as_str()), "issued to");
                let genuine = match get("grant_type") {
                    Some("authorization_code") => {
                        get("code") == Some(code.as_str())
                            && get("code_verifier") == Some(verifier.as_str())
                    }
                    Some("refresh_token") => get("refresh_token") == Some(refresh.as_str()),
                    _ => false,
                };
                prop_assert!(genuine, "issued for a forged grant: {}", answer.show());
                let body = answer.json();
                prop_assert!(body["expires_in"].is_i64());
                let no_store = answer.headers.get(header::CACHE_CONTROL);
                prop_assert_eq!(no_store.and_then(|v| v.to_str().ok()), Some("no-store"));
            } else {
                let error = answer.error().unwrap_or_default();
                let unauthorized = answer.status == StatusCode::UNAUTHORIZED;
                prop_assert_eq!(unauthorized, error == "invalid_client", "{}", answer.show());
                if unauthorized && auth.starts_with("Basic ") {
                    let challenge = answer.headers.get(header::WWW_AUTHENTICATE);
                    prop_assert!(challenge.is_some(), "401 to Basic without a challenge");
                }
            }
            Ok(())
        })
    });
}

const AUTHORIZE_KEYS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "code_challenge",
    "code_challenge_method",
    "state",
    "scope",
    "resource",
    "prompt",
    "nonce",
];
const AUTHORIZE_VALUES: &[&str] = &[
    "$CLIENT",
    "$CLIENT_TAMPERED",
    "$CHALLENGE",
    CLI,
    "http://127.0.0.1:5999/callback",
    "http://127.0.0.1:5000/callback/",
    "http://localhost:5000/callback",
    CLAUDE,
    "https://claude.ai.evil.com/api/mcp/auth_callback",
    LOOPBACK_QUERY,
    "http://localhost:7/cb?x=1",
    "http://localhost/cb?x=2",
    "javascript:alert(1)",
    "code",
    "token",
    "S256",
    "plain",
    "mcp",
    "mcp offline_access",
    "admin",
    "$RESOURCE",
    "https://other.example/mcp",
    "consent",
    "",
    "a&b=c",
    "\r\nSet-Cookie: x=y",
];

/// An `/authorize` query: a good request with some pairs dropped, others appended.
fn authorize_request() -> impl Strategy<Value = Vec<(String, String)>> {
    let base = [
        ("response_type", "code"),
        ("client_id", "$CLIENT"),
        ("redirect_uri", CLI),
        ("code_challenge", "$CHALLENGE"),
        ("code_challenge_method", "S256"),
    ];
    let key = prop_oneof![6 => sel(AUTHORIZE_KEYS).prop_map(String::from), 1 => "[a-z_]{0,8}"];
    let state = proptest::option::of(prop_oneof!["[ -~]{0,40}", any::<String>()]);
    (
        vec(any::<bool>(), 5),
        state,
        vec((key, value_text(AUTHORIZE_VALUES)), 0..4),
    )
        .prop_map(move |(keep, state, extra)| {
            let mut pairs: Vec<(String, String)> = base
                .iter()
                .zip(keep)
                .filter(|(_, keep)| *keep)
                .map(|((k, v), _)| (k.to_string(), v.to_string()))
                .collect();
            if let Some(s) = state {
                pairs.push(("state".into(), s));
            }
            pairs.extend(extra);
            pairs
        })
}

/// Judged without the matcher: a redirect goes to a registered URI, on another port only
/// for loopback.
fn to_a_registered_uri(location: &str, registered: &[&str]) -> Result<(), String> {
    let to = url::Url::parse(location).map_err(|e| e.to_string())?;
    let ok = registered.iter().any(|r| {
        let r = url::Url::parse(r).unwrap();
        let loopback = matches!(r.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        r.scheme() == to.scheme()
            && r.host_str() == to.host_str()
            && r.path() == to.path()
            && (r.port() == to.port() || loopback)
    });
    if ok {
        Ok(())
    } else {
        Err(format!("redirect to an unregistered URI: {location}"))
    }
}

#[test]
fn authorize_never_redirects_anywhere_unregistered_and_echoes_state() {
    let rt = runtime();
    let rig = rt.block_on(Rig::start());
    let registered = [CLI, CLAUDE, LOOPBACK_QUERY];
    let client = rt.block_on(rig.public_client(&registered));
    let (_, challenge) = pkce();
    let resource = format!("{}/mcp", rig.issuer());
    let secrets = Secrets {
        values: vec![
            ("$CLIENT_TAMPERED", tamper(&client)),
            ("$CLIENT", client.clone()),
            ("$CHALLENGE", challenge),
            ("$RESOURCE", resource),
        ],
    };

    check(authorize_request(), |pairs| {
        rt.block_on(async {
            let filled: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.clone(), secrets.fill(v)))
                .collect();
            let pairs_ref: Vec<(&str, &str)> = filled
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let answer = rig.authorize(&pairs_ref).await;
            well_formed(&answer)?;

            if answer.status != StatusCode::FOUND {
                return Ok(());
            }
            let ids: Vec<&str> = pairs_ref
                .iter()
                .filter(|(k, _)| *k == "client_id")
                .map(|(_, v)| *v)
                .collect();
            prop_assert_eq!(ids, vec![client.as_str()], "redirect for another client");
            let location = answer.location().unwrap();
            to_a_registered_uri(&location, &registered).map_err(fail)?;

            let back = answer.redirect_pairs();
            prop_assert_eq!(count(&back, "iss"), 1, "{}", location);
            prop_assert_eq!(pair(&back, "iss"), Some(rig.issuer()));
            let states: Vec<String> = filled
                .iter()
                .filter(|(k, _)| k == "state")
                .map(|(_, v)| v.clone())
                .collect();
            prop_assert!(states.len() <= 1, "a repeated state was accepted");
            prop_assert_eq!(pair(&back, "state"), states.first().cloned());
            prop_assert!(count(&back, "state") <= 1);
            Ok(())
        })
    });
}

/// A tiny loopback server answering `/doc/{n}` with the body stored for `n`.
struct DocServer {
    addr: SocketAddr,
    docs: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    next: AtomicUsize,
    _task: tokio::task::JoinHandle<()>,
}

impl DocServer {
    async fn start() -> DocServer {
        let docs: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let served = docs.clone();
        let app = Router::new().route(
            "/doc/{n}",
            axum::routing::get(move |axum::extract::Path(n): axum::extract::Path<String>| {
                let body = served.lock().unwrap().get(&n).cloned().unwrap_or_default();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        DocServer {
            addr,
            docs,
            next: AtomicUsize::new(0),
            _task: task,
        }
    }

    /// Stores a body at a fresh URL (fresh, so the fetcher's cache never answers).
    fn put(&self, body: impl FnOnce(&str) -> Vec<u8>) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed).to_string();
        let url = format!("http://{}/doc/{n}", self.addr);
        self.docs.lock().unwrap().insert(n, body(&url));
        url
    }
}

/// A Client ID Metadata Document to generate: each member present or not, right or wrong.
#[derive(Clone, Debug)]
struct DocCase {
    client_id: u8,
    members: Vec<(&'static str, Value)>,
    junk: Option<Value>,
    raw: Option<Vec<u8>>,
}

fn member_values() -> impl Strategy<Value = Value> {
    let uris = vec(
        sel(&[CLI, CLAUDE, "", "javascript:x", "http://localhost/cb"]),
        0..3,
    );
    prop_oneof![
        uris.prop_map(|u| json!(u)),
        vec(sel(GRANT_TYPES), 0..3).prop_map(|g| json!(g)),
        vec(sel(RESPONSE_TYPES), 0..2).prop_map(|r| json!(r)),
        sel(AUTH_METHODS).prop_map(|m| json!(m)),
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        json_value(),
    ]
}

const DOC_MEMBERS: &[&str] = &[
    "redirect_uris",
    "redirect_uris",
    "token_endpoint_auth_method",
    "grant_types",
    "response_types",
    "client_name",
    "scope",
    "client_secret",
    "client_secret_expires_at",
];

fn doc_case() -> impl Strategy<Value = DocCase> {
    let members = vec((sel(DOC_MEMBERS), member_values()), 0..6);
    let raw = proptest::option::weighted(0.15, vec(any::<u8>(), 0..200));
    let junk = proptest::option::weighted(0.1, json_value());
    (0u8..5, members, junk, raw).prop_map(|(client_id, members, junk, raw)| DocCase {
        client_id,
        members,
        junk,
        raw,
    })
}

impl DocCase {
    fn body(&self, url: &str) -> Vec<u8> {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        if let Some(junk) = &self.junk {
            return junk.to_string().into_bytes();
        }
        let mut doc = serde_json::Map::new();
        let id = match self.client_id {
            0 | 1 => Some(json!(url)),
            2 => Some(json!(format!("{url}/"))),
            3 => Some(json!(7)),
            _ => None,
        };
        if let Some(id) = id {
            doc.insert("client_id".into(), id);
        }
        for (k, v) in &self.members {
            doc.insert(k.to_string(), v.clone());
        }
        Value::Object(doc).to_string().into_bytes()
    }
}

/// Judged without the parser: whether a document body is valid for `url` (CIMD draft, and
/// this server's `none`-only rule).
fn valid_document(body: &[u8], url: &str) -> bool {
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let string_or_absent = |k: &str| doc.get(k).is_none_or(|v| v.is_null() || v.is_string());
    let list_with = |k: &str, item: &str| match doc.get(k) {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => {
            a.iter().all(Value::is_string) && a.iter().any(|x| x.as_str() == Some(item))
        }
        Some(_) => false,
    };
    let uris_ok = match doc.get("redirect_uris") {
        Some(Value::Array(a)) => !a.is_empty() && a.iter().all(Value::is_string),
        _ => false,
    };
    let method_ok = match doc.get("token_endpoint_auth_method") {
        None | Some(Value::Null) => true,
        Some(v) => v.as_str() == Some("none"),
    };

    doc.get("client_id").and_then(Value::as_str) == Some(url)
        && !doc.contains_key("client_secret")
        && !doc.contains_key("client_secret_expires_at")
        && uris_ok
        && method_ok
        && list_with("grant_types", "authorization_code")
        && list_with("response_types", "code")
        && string_or_absent("client_name")
        && string_or_absent("scope")
}

#[test]
fn client_metadata_documents_are_accepted_exactly_when_valid() {
    let rt = runtime();
    let docs = rt.block_on(DocServer::start());
    let fetcher = CimdFetcher::new(FetcherConfig {
        allow_private: true,
        max_cache_entries: 10_000,
        ..FetcherConfig::default()
    });

    check(doc_case(), |case| {
        rt.block_on(async {
            let url = docs.put(|url| case.body(url));
            let body = case.body(&url);
            let got = fetcher.fetch(&url).await;
            let valid = valid_document(&body, &url);
            prop_assert_eq!(
                got.is_ok(),
                valid,
                "{} -> {:?}",
                String::from_utf8_lossy(&body),
                got.as_ref().err()
            );
            if let Ok(doc) = got {
                prop_assert_eq!(&doc.client_id, &url);
                prop_assert!(!doc.redirect_uris.is_empty());
            }
            Ok(())
        })
    });
}

fn test_keys() -> Keys {
    let now = START.parse().unwrap();
    let dcr = Keyset {
        keys: vec![KeyKind::Seal.generate(now).unwrap()],
    };
    let signing = Keyset {
        keys: vec![KeyKind::Signing.generate(now).unwrap()],
    };
    Keys::from_keysets(&dcr, &signing).unwrap()
}

const ISSUER: &str = "http://127.0.0.1:8080";
const AUDIENCE: &str = "http://127.0.0.1:8080/mcp";

fn claims() -> AccessClaims {
    let now = START.parse::<jiff::Timestamp>().unwrap().as_second();
    AccessClaims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: "alice".into(),
        exp: now + 3600,
        iat: now,
        jti: "j".into(),
        client_id: "c".into(),
        scope: "mcp".into(),
        preferred_username: "alice".into(),
        groups: vec![],
        gid: "g".into(),
    }
}

/// One change to a text: replace, insert or delete a character, truncate, or swap two.
fn mutate(text: &str, (at, kind, c): (Index, u8, char)) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return c.to_string();
    }
    let i = at.index(chars.len());
    let mut out = chars.clone();
    match kind % 5 {
        0 => out[i] = c,
        1 => out.insert(i, c),
        2 => {
            out.remove(i);
        }
        3 => out.truncate(i),
        _ => out.swap(i, (i + 1) % chars.len()),
    }
    out.into_iter().collect()
}

fn mutation() -> impl Strategy<Value = (Index, u8, char)> {
    let b64 = "[A-Za-z0-9_=+/.-]".prop_map(|s| s.chars().next().unwrap_or('A'));
    (any::<Index>(), any::<u8>(), prop_oneof![b64, any::<char>()])
}

/// JWT-shaped text: three base64url parts of generated headers, claims and signatures.
fn jwt_shaped(kid: String) -> impl Strategy<Value = String> {
    let alg = sel(&["ES256", "none", "HS256", "RS256", "es256", ""]);
    let kid = prop_oneof![Just(kid), any::<String>()];
    let payload = prop_oneof![Just(serde_json::to_value(claims()).unwrap()), json_value()];
    let signature = prop_oneof![vec(any::<u8>(), 0..80), Just(vec![])];
    (alg, kid, payload, signature).prop_map(|(alg, kid, payload, sig)| {
        let header = json!({"alg": alg, "kid": kid, "typ": "at+jwt"});
        format!(
            "{}.{}.{}",
            B64.encode(header.to_string()),
            B64.encode(payload.to_string()),
            B64.encode(sig)
        )
    })
}

#[test]
fn bearer_tokens_that_are_not_ours_never_verify() {
    let keys = test_keys();
    let now = Some(START.parse::<jiff::Timestamp>().unwrap().as_second());
    let genuine = mint(&keys, &claims()).unwrap();
    assert!(verify(&keys, &genuine, ISSUER, AUDIENCE, now).is_ok());

    let kid = keys.current_signing().kid.clone();
    let original = genuine.clone();
    let inputs = prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_.-]{0,400}",
        jwt_shaped(kid),
        mutation().prop_map(move |m| mutate(&original, m)),
    ];
    check(inputs, |token| {
        if token != genuine {
            let got = verify(&keys, &token, ISSUER, AUDIENCE, now);
            prop_assert!(got.is_err(), "{token:?} verified: {got:?}");
        }
        Ok(())
    });
}

#[test]
fn a_sealed_value_changed_in_any_way_never_opens() {
    let keys = test_keys();
    let value = json!({"r": [CLI], "m": "none", "t": 1});
    let sealed = seal(&keys, Purpose::Client, "test/a", &value).unwrap();
    let opened = open::<Value>(&keys, Purpose::Client, "test/a", &sealed);
    assert_eq!(opened.map(|(v, _)| v), Some(value));

    let changes = vec(mutation(), 1..4);
    check(changes, |changes| {
        let changed = changes.iter().fold(sealed.clone(), |s, m| mutate(&s, *m));
        if changed != sealed {
            let got = open::<Value>(&keys, Purpose::Client, "test/a", &changed);
            prop_assert!(got.is_none(), "{changed:?} opened");
        }
        for purpose in [Purpose::Pending, Purpose::Code, Purpose::Refresh] {
            prop_assert!(open::<Value>(&keys, purpose, "test/a", &sealed).is_none());
        }
        prop_assert!(open::<Value>(&keys, Purpose::Client, "test/b", &sealed).is_none());
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// Attack tables.

/// Asserts one row: the message names the row and why it must fail.
macro_rules! row {
    ($cond:expr, $row:expr, $why:expr, $answer:expr) => {
        assert!($cond, "row {:?} ({}): {}", $row, $why, $answer.show())
    };
}

/// An error page: JSON, the expected status, and no redirect anywhere.
fn assert_error_page(answer: &Answer, row: &str, why: &str, status: u16) {
    row!(answer.location().is_none(), row, why, answer);
    row!(answer.status == status, row, why, answer);
    row!(answer.error().is_some(), row, why, answer);
}

#[tokio::test]
async fn registration_refuses_open_redirects() {
    let rig = Rig::start().await;
    let long = format!("http://127.0.0.1:5000/{}", "a".repeat(3000));

    #[rustfmt::skip]
    let rows: Vec<(&str, &str)> = vec![
        ("https://evil.example/cb", "not on the list"),
        ("https://claude.ai.evil.com/api/mcp/auth_callback", "lookalike: listed host as a prefix"),
        ("https://evil-claude.ai/api/mcp/auth_callback", "lookalike: listed host as a suffix"),
        ("https://claude.ai@evil.com/api/mcp/auth_callback", "userinfo hides the real host"),
        ("https://claude.ai:x@evil.com/api/mcp/auth_callback", "userinfo with a password"),
        ("https://evil.com\\@claude.ai/api/mcp/auth_callback", "backslash read as /"),
        ("https://evil.com#@claude.ai/api/mcp/auth_callback", "fragment hides the real host"),
        ("https://claude.ai/api/mcp/auth_callback#x", "fragments are never allowed"),
        ("https://claude.ai./api/mcp/auth_callback", "trailing dot"),
        ("https://claude.ai:8443/api/mcp/auth_callback", "another port"),
        ("https://claude.ai/api/mcp/auth_callback/../../../evil", "dot segments"),
        ("https://claude.ai/api/mcp/%2e%2e/%2e%2e/evil", "percent-encoded dot segments"),
        ("https://claude.ai/api/mcp/other", "another path"),
        ("https://cl\u{0430}ude.ai/api/mcp/auth_callback", "Cyrillic a: homograph"),
        ("https://xn--cude-8ve.ai/api/mcp/auth_callback", "punycode of a homograph"),
        ("https://\u{ff43}laude.ai/api/mcp/auth_callback", "fullwidth c"),
        ("https://claude%2eai/api/mcp/auth_callback", "percent-encoded host"),
        ("https://%63laude.ai/api/mcp/auth_callback", "percent-encoded letter"),
        ("http://%6cocalhost:5000/cb", "percent-encoded localhost"),
        ("http://localhost.evil.com:5000/cb", "localhost as a prefix"),
        ("http://localhost.:5000/cb", "trailing dot on localhost"),
        ("http://127.1:5000/cb", "short IPv4 form"),
        ("http://2130706433:5000/cb", "decimal IPv4 form"),
        ("http://0x7f.0.0.1:5000/cb", "hex IPv4 form"),
        ("http://0177.0.0.1:5000/cb", "octal IPv4 form"),
        ("http://127.0.0.1.nip.io:5000/cb", "wildcard DNS to loopback"),
        ("http://[::ffff:127.0.0.1]:5000/cb", "IPv4-mapped IPv6 is not a listed host"),
        ("http://[::1]:5000/cb", "IPv6 loopback is not on the default list"),
        ("http://192.168.1.10:5000/cb", "cleartext to a private address"),
        ("http://example.com/cb", "cleartext to the internet"),
        ("http://127.0.0.1:5000/cb\r\nSet-Cookie: a=b", "CRLF"),
        ("http://127.0.0.1:5000/cb\n", "LF"),
        (" http://127.0.0.1:5000/cb", "leading space, trimmed by parsers"),
        ("http://127.0.0.1:5000/c\tb", "tab, dropped by parsers"),
        ("http://127.0.0.1:5000/cb\u{0}", "NUL"),
        ("http://127.0.0.1:5000/cb\u{2028}", "Unicode line separator"),
        ("http://127.0.0.1:05000/cb", "leading zero in the port"),
        ("javascript:alert(document.cookie)", "javascript:"),
        ("JAVASCRIPT://localhost/%0aalert(1)", "javascript: in capitals, with a host"),
        ("data:text/html;base64,PHNjcmlwdD4=", "data:"),
        ("file:///etc/passwd", "file:"),
        ("vbscript:msgbox(1)", "vbscript:"),
        ("cursor://anysphere.cursor-retrieval/oauth/callback", "custom scheme not listed"),
        ("com.evil.app:/oauth2redirect", "private-use scheme not listed"),
        ("//evil.com/cb", "scheme-relative"),
        ("/callback", "relative"),
        ("", "empty"),
        (long.as_str(), "too long"),
    ];

    for (uri, why) in rows {
        let metadata = json!({"redirect_uris": [uri], "token_endpoint_auth_method": "none"});
        let answer = rig.register(&metadata).await;
        row!(answer.status == 400, uri, why, answer);
        row!(
            answer.error().as_deref() == Some("invalid_redirect_uri"),
            uri,
            why,
            answer
        );
        let json_type = answer.headers[header::CONTENT_TYPE].to_str().unwrap();
        row!(json_type.starts_with("application/json"), uri, why, answer);
    }

    // One bad URI spoils the registration; malformed lists are metadata errors.
    #[rustfmt::skip]
    let bodies: Vec<(Value, &str, &str)> = vec![
        (json!({"redirect_uris": [CLI, "https://evil.com/cb"]}), "invalid_redirect_uri",
            "one URI off the list"),
        (json!({"redirect_uris": []}), "invalid_redirect_uri", "no URI"),
        (json!({}), "invalid_redirect_uri", "redirect_uris missing"),
        (json!({"redirect_uris": CLI}), "invalid_client_metadata", "a string, not a list"),
        (json!({"redirect_uris": [7]}), "invalid_client_metadata", "a number"),
        (json!({"redirect_uris": vec![CLI; 11]}), "invalid_redirect_uri", "more than ten"),
        (json!({"redirect_uris": [CLI], "response_types": ["token"]}), "invalid_client_metadata",
            "implicit flow"),
        (json!({"redirect_uris": [CLI], "grant_types": ["password"]}), "invalid_client_metadata",
            "password grant"),
        (json!({"redirect_uris": [CLI], "token_endpoint_auth_method": "private_key_jwt"}),
            "invalid_client_metadata", "an unsupported auth method"),
        (json!([CLI]), "invalid_client_metadata", "not an object"),
    ];
    for (body, code, why) in bodies {
        let answer = rig.register(&body).await;
        let shown = body.to_string();
        row!(answer.status == 400, shown, why, answer);
        row!(answer.error().as_deref() == Some(code), shown, why, answer);
    }
}

#[tokio::test]
async fn authorize_never_redirects_to_a_uri_that_was_not_registered() {
    let rig = Rig::start().await;
    let client = rig.public_client(&[CLI, CLAUDE]).await;
    let (_, challenge) = pkce();

    #[rustfmt::skip]
    let rows: Vec<(&str, &str)> = vec![
        ("https://evil.com/cb", "never registered"),
        ("http://127.0.0.1:5000/callback/", "trailing slash"),
        ("http://127.0.0.1:5000/Callback", "path case"),
        ("http://127.0.0.1:5000/callback?next=https://evil.com", "an added query"),
        ("http://127.0.0.1:5000/callback#x", "a fragment"),
        ("http://localhost:5000/callback", "a name for the registered address"),
        ("http://127.0.0.2:5000/callback", "another loopback address"),
        ("https://127.0.0.1:5000/callback", "another scheme"),
        ("http://user@127.0.0.1:5000/callback", "userinfo"),
        ("http://127.0.0.1:5000/x/../callback", "dot segments"),
        ("http://127.0.0.1:5000/%63allback", "an encoded path"),
        ("http://127.1:5000/callback", "a short IPv4 form"),
        ("http://127.0.0.1:5000/callback\r\nLocation: https://evil.com", "CRLF"),
        ("http://127.0.0.1:5000\\@evil.com/callback", "a backslash"),
        ("https://claude.ai:443/api/mcp/auth_callback", "not the exact registered string"),
        ("https://CLAUDE.AI/api/mcp/auth_callback", "not the exact registered string"),
        ("https://claude.ai/api/mcp/auth_callback?x=1", "an added query"),
        ("https://claude.ai.evil.com/api/mcp/auth_callback", "a lookalike host"),
        ("https://claude.ai@evil.com/api/mcp/auth_callback", "userinfo"),
        ("https://claude.com/api/mcp/auth_callback", "allowed, but not registered"),
        ("javascript:alert(1)", "javascript:"),
        ("cursor://anysphere.cursor-retrieval/cb", "a custom scheme never registered"),
        ("", "empty"),
    ];
    for (uri, why) in rows {
        let answer = rig.authorize(&login(&client, uri, &challenge)).await;
        assert_error_page(&answer, uri, why, 400);
    }

    // Until the client is known, nothing redirects either.
    let forged = tamper(&client);
    let loopback_cimd = format!("https://127.0.0.1:{}/client.json", rig.server.addr.port());
    #[rustfmt::skip]
    let clients: Vec<(Vec<(&str, &str)>, u16, &str)> = vec![
        (login(&forged, CLI, &challenge), 401, "a forged client_id"),
        (login("", CLI, &challenge), 400, "an empty client_id"),
        (login(&loopback_cimd, CLI, &challenge), 401, "a metadata document on loopback"),
        (vec![("redirect_uri", CLI), ("response_type", "code")], 400, "no client_id"),
        ({
            let mut q = login(&client, CLI, &challenge);
            q.retain(|(k, _)| *k != "redirect_uri");
            q
        }, 400, "two URIs registered, none named"),
        ({
            let mut q = login(&client, CLI, &challenge);
            q.push(("redirect_uri", "https://evil.com/cb"));
            q
        }, 400, "a repeated redirect_uri"),
    ];
    for (query, status, why) in clients {
        let answer = rig.authorize(&query).await;
        assert_error_page(&answer, &format!("{query:?}"), why, status);
    }
}

#[tokio::test]
async fn pkce_must_be_s256_and_its_verifier_must_match() {
    let rig = Rig::start().await;
    let client = rig.public_client(&[CLI]).await;
    let (verifier, challenge) = pkce();

    let with = |pkce: &[(&'static str, &'static str)]| {
        let mut q = vec![
            ("response_type", "code"),
            ("client_id", client.as_str()),
            ("redirect_uri", CLI),
            ("state", "s"),
        ];
        q.extend_from_slice(pkce);
        q
    };
    let short = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c";
    #[rustfmt::skip]
    let rows: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (with(&[]), "no code_challenge: PKCE is required"),
        (with(&[("code_challenge", "abc"), ("code_challenge_method", "plain")]), "plain"),
        (with(&[("code_challenge", short)]), "no method means plain"),
        (with(&[("code_challenge", short), ("code_challenge_method", "s256")]), "method case"),
        (with(&[("code_challenge", short), ("code_challenge_method", "S256")]), "42 characters"),
        (with(&[("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c!"),
            ("code_challenge_method", "S256")]), "not base64url"),
        (with(&[("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cMM"),
            ("code_challenge_method", "S256")]), "44 characters"),
        (with(&[("code_challenge_method", "S256")]), "a method without a challenge"),
    ];
    for (query, why) in rows {
        let answer = rig.authorize(&query).await;
        let back = answer.redirect_pairs();
        let shown = format!("{query:?}");
        row!(answer.status == 302, shown, why, answer);
        row!(
            pair(&back, "error").as_deref() == Some("invalid_request"),
            shown,
            why,
            answer
        );
        row!(pair(&back, "iss") == Some(rig.issuer()), shown, why, answer);
        row!(
            pair(&back, "state").as_deref() == Some("s"),
            shown,
            why,
            answer
        );
        row!(pair(&back, "code").is_none(), shown, why, answer);
    }

    let long = "a".repeat(129);
    let other = pkce().0;
    #[rustfmt::skip]
    let verifiers: Vec<(Option<&str>, &str, &str)> = vec![
        (None, "invalid_request", "no verifier"),
        (Some(challenge.as_str()), "invalid_grant", "the challenge sent back (plain)"),
        (Some(other.as_str()), "invalid_grant", "another verifier"),
        (Some(&verifier[..42]), "invalid_grant", "a prefix, 42 characters"),
        (Some(long.as_str()), "invalid_grant", "129 characters"),
        (Some(""), "invalid_grant", "empty"),
    ];
    for (given, code_wanted, why) in verifiers {
        let code = rig.code(&client, CLI, &challenge).await;
        let mut form = exchange(&client, &code, &verifier, CLI);
        form.retain(|(k, _)| *k != "code_verifier");
        if let Some(v) = given {
            form.push(("code_verifier", v));
        }
        let answer = rig.token(&form, None).await;
        row!(
            answer.error().as_deref() == Some(code_wanted),
            given,
            why,
            answer
        );
        row!(answer.status == 400, given, why, answer);
    }
}

#[tokio::test]
async fn state_comes_back_byte_identical() {
    let rig = Rig::start().await;
    let client = rig.public_client(&[CLI]).await;
    let (_, challenge) = pkce();
    let long = "s".repeat(1500);

    #[rustfmt::skip]
    let rows: Vec<(&str, &str)> = vec![
        ("", "empty"),
        ("abc", "plain"),
        ("a b  c ", "spaces, which form encoding turns into +"),
        ("a+b", "a plus"),
        ("&code=forged&iss=https://evil.com", "parameters smuggled in"),
        ("=&=", "separators only"),
        ("%41%", "percent signs that look encoded"),
        ("#frag", "a fragment mark"),
        ("\"'<script>alert(1)</script>", "markup and quotes"),
        ("x\r\nSet-Cookie: a=b", "CRLF"),
        ("\u{0}\u{1}\u{7f}", "control characters"),
        ("\u{e9}t\u{e9} \u{65e5}\u{672c} \u{1f511}", "non-ASCII and an emoji"),
        ("\u{fffd}", "the replacement character itself"),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "a JWT-shaped state"),
        (long.as_str(), "1500 characters"),
    ];
    for (state, why) in rows {
        for (scope, outcome) in [("mcp", "code"), ("admin", "error")] {
            let mut query = login(&client, CLI, &challenge);
            query.retain(|(k, _)| *k != "state");
            query.extend([("state", state), ("scope", scope)]);
            let answer = rig.authorize(&query).await;
            let back = answer.redirect_pairs();
            row!(answer.status == 302, state, why, answer);
            row!(pair(&back, outcome).is_some(), state, why, answer);
            row!(
                pair(&back, "state").as_deref() == Some(state),
                state,
                why,
                answer
            );
            row!(count(&back, "state") == 1, state, why, answer);
            row!(
                !answer.location().unwrap().contains(['\r', '\n']),
                state,
                why,
                answer
            );
        }
    }

    // Bytes that are not UTF-8 cannot be echoed as they came: the request is refused.
    let query = form(&login(&client, CLI, &challenge)).replace("state=s", "state=%FF%FEx");
    let answer = rig.get_on(&rig.host, &format!("/authorize?{query}")).await;
    let echoed = answer
        .location()
        .is_some_and(|l| l.contains("state=%FF%FEx"));
    let refused = answer.location().is_none() && answer.status == 400;
    row!(
        echoed || refused,
        "%FF%FEx",
        "invalid UTF-8 is echoed exactly or refused",
        answer
    );
}

/// A second connector on the same listener, reached as `localhost:PORT`: its host.
fn add_second_connector(rig: &Rig) -> String {
    let port = rig.server.addr.port();
    let upstream = Arc::new(|| Upstream::AutoLogin("bob".to_string()));
    let base = format!("http://localhost:{port}");
    rig.server
        .add_connector("test/b", &base, json!({}), upstream);
    format!("localhost:{port}")
}

#[tokio::test]
async fn a_code_works_once_for_its_client_and_redirect_uri_only() {
    let rig = Rig::start().await;
    let other_host = add_second_connector(&rig);
    let client = rig.public_client(&[CLI]).await;
    let thief = rig.public_client(&[CLI]).await;
    let (confidential, secret) = rig.confidential_client("client_secret_post").await;
    let (verifier, challenge) = pkce();

    // A code that connector B issued, for a client of B.
    let b_metadata = json!({"redirect_uris": [CLI], "token_endpoint_auth_method": "none"});
    let b_body = metadata_body(&b_metadata);
    let b_client = rig
        .post_on(&other_host, "/register", "application/json", &[], b_body)
        .await
        .json()["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b_code = {
        let answer = rig
            .authorize_on(&other_host, &login(&b_client, CLI, &challenge))
            .await;
        pair(&answer.redirect_pairs(), "code").unwrap()
    };

    type Form = Box<dyn Fn(&str) -> Vec<(String, String)>>;
    let owned = |pairs: Vec<(&str, &str)>| -> Vec<(String, String)> {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let (c, t, v) = (client.clone(), thief.clone(), verifier.clone());
    let (cc, cs, bc) = (confidential.clone(), secret.clone(), b_code.clone());
    #[rustfmt::skip]
    let rows: Vec<(&str, Form, u16, &str)> = vec![
        ("redeemed by another public client", Box::new(move |code| {
            owned(exchange(&t, code, &v, CLI))
        }), 400, "invalid_grant"),
        ("redeemed by a confidential client with its secret", {
            let v = verifier.clone();
            Box::new(move |code| {
                let mut f = owned(exchange(&cc, code, &v, CLI));
                f.push(("client_secret".into(), cs.clone()));
                f
            })
        }, 400, "invalid_grant"),
        ("another loopback port than the code was sent to", {
            let (c, v) = (c.clone(), verifier.clone());
            Box::new(move |code| owned(exchange(&c, code, &v, "http://127.0.0.1:5001/callback")))
        }, 400, "invalid_grant"),
        ("another path", {
            let (c, v) = (c.clone(), verifier.clone());
            Box::new(move |code| owned(exchange(&c, code, &v, "http://127.0.0.1:5000/other")))
        }, 400, "invalid_grant"),
        ("tampered", {
            let (c, v) = (c.clone(), verifier.clone());
            Box::new(move |code| owned(exchange(&c, &tamper(code), &v, CLI)))
        }, 400, "invalid_grant"),
        ("presented as a refresh token", {
            let c = c.clone();
            Box::new(move |code| owned(vec![
                ("grant_type", "refresh_token"), ("refresh_token", code), ("client_id", &c),
            ]))
        }, 400, "invalid_grant"),
        ("presented as the client_id", {
            let v = verifier.clone();
            Box::new(move |code| owned(exchange(code, code, &v, CLI)))
        }, 401, "invalid_client"),
        ("a code of another connector", {
            let (c, v) = (c.clone(), verifier.clone());
            Box::new(move |_| owned(exchange(&c, &bc, &v, CLI)))
        }, 400, "invalid_grant"),
    ];

    for (what, make, status, code_wanted) in &rows {
        let code = rig.code(&client, CLI, &challenge).await;
        let form = make(&code);
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let answer = rig.token(&pairs, None).await;
        row!(answer.status == *status, what, code_wanted, answer);
        row!(answer.error().as_deref() == Some(*code_wanted), what, code_wanted, answer);

        // The genuine client can still redeem it: the attempt did not help anyone.
        let good = rig.token(&exchange(&client, &code, &verifier, CLI), None).await;
        row!(good.status == 200, what, "the genuine exchange still works", good);
    }

    let code = rig.code(&client, CLI, &challenge).await;
    let first = rig.token(&exchange(&client, &code, &verifier, CLI), None).await;
    let replay = rig.token(&exchange(&client, &code, &verifier, CLI), None).await;
    row!(first.status == 200, "first use", "a fresh code", first);
    row!(replay.error().as_deref() == Some("invalid_grant"), "replay", "single use", replay);

    let late = rig.code(&client, CLI, &challenge).await;
    rig.server.clock.advance(SignedDuration::from_secs(61));
    let expired = rig.token(&exchange(&client, &late, &verifier, CLI), None).await;
    row!(expired.error().as_deref() == Some("invalid_grant"), "expired", "60 s TTL", expired);
}

fn metadata_body(metadata: &Value) -> Vec<u8> {
    metadata.to_string().into_bytes()
}

#[tokio::test]
async fn every_redirect_carries_the_issuer_it_came_from() {
    let rig = Rig::start().await;
    let other_host = add_second_connector(&rig);
    let client = rig.public_client(&[CLI]).await;
    let (_, challenge) = pkce();

    let change = |k: &'static str, v: &'static str| {
        let mut q = login(&client, CLI, &challenge);
        q.retain(|(key, _)| *key != k);
        if !v.is_empty() {
            q.push((k, v));
        }
        q
    };
    #[rustfmt::skip]
    let rows: Vec<(Vec<(&str, &str)>, &str, &str)> = vec![
        (login(&client, CLI, &challenge), "code", "success"),
        (change("response_type", "token"), "error", "unsupported_response_type"),
        (change("response_type", ""), "error", "response_type missing"),
        (change("code_challenge", ""), "error", "PKCE missing"),
        (change("code_challenge_method", "plain"), "error", "plain PKCE"),
        (change("scope", "admin"), "error", "invalid_scope"),
        (change("resource", "https://evil.example/mcp"), "error", "invalid_target"),
    ];
    for (query, outcome, why) in rows {
        let answer = rig.authorize(&query).await;
        let back = answer.redirect_pairs();
        row!(pair(&back, outcome).is_some(), why, "the redirect happened", answer);
        row!(count(&back, "iss") == 1, why, "exactly one iss (RFC 9207)", answer);
        row!(pair(&back, "iss") == Some(rig.issuer()), why, "iss is the issuer", answer);
    }

    // Another connector's redirects name that connector, so a client can tell them apart.
    let b_metadata = json!({"redirect_uris": [CLI], "token_endpoint_auth_method": "none"});
    let b_body = metadata_body(&b_metadata);
    let answer = rig
        .post_on(&other_host, "/register", "application/json", &[], b_body)
        .await;
    let b_client = answer.json()["client_id"].as_str().unwrap().to_string();
    let answer = rig
        .authorize_on(&other_host, &login(&b_client, CLI, &challenge))
        .await;
    let b_issuer = format!("http://{other_host}");
    let iss = pair(&answer.redirect_pairs(), "iss");
    row!(iss == Some(b_issuer), "connector B", "B's issuer, not A's", answer);
}

#[tokio::test]
async fn tokens_and_clients_of_one_connector_are_nothing_on_another() {
    let (addr, _mcp) = mcp_connector::dev::whoami::spawn().await.unwrap();
    let server = TestServer::start(
        json!({"mcpServer": {"url": format!("http://{addr}/mcp")}}),
        None,
    )
    .await;
    let rig = Rig::over(server, hermetic_cimd());
    let other = add_second_connector(&rig);
    let client = rig.public_client(&[CLI]).await;
    let tokens = rig.tokens(&client).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let b_metadata = json!({"redirect_uris": [CLI], "token_endpoint_auth_method": "none"});
    let answer = rig
        .post_on(&other, "/register", "application/json", &[], metadata_body(&b_metadata))
        .await;
    let b_client = answer.json()["client_id"].as_str().unwrap().to_string();

    let mcp = |host: String| {
        let rig = &rig;
        async move {
            let request = Request::post("/mcp")
                .header(header::HOST, host)
                .header(header::AUTHORIZATION, format!("Bearer {access}"))
                .header(header::ACCEPT, "application/json, text/event-stream")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string(),
                ))
                .unwrap();
            rig.call(request).await
        }
    };
    let home = mcp(rig.host.clone()).await;
    row!(home.status != 401, "A's token on A", "the control: it works at home", home);

    let on_b = mcp(other.clone()).await;
    row!(on_b.status == 401, "A's token on B's /mcp", "another audience and key", on_b);
    row!(
        on_b.headers.contains_key(header::WWW_AUTHENTICATE),
        "A's token on B's /mcp",
        "a challenge",
        on_b
    );

    #[rustfmt::skip]
    let rows: Vec<(Vec<(&str, &str)>, u16, &str, &str)> = vec![
        (vec![("grant_type", "refresh_token"), ("refresh_token", refresh),
            ("client_id", &client)], 401, "invalid_client", "A's client and refresh at B"),
        (vec![("grant_type", "refresh_token"), ("refresh_token", refresh),
            ("client_id", &b_client)], 400, "invalid_grant", "A's refresh with B's client"),
    ];
    for (form, status, code_wanted, why) in rows {
        let answer = rig.token_on(&other, &form, None).await;
        row!(answer.status == status, why, code_wanted, answer);
        row!(answer.error().as_deref() == Some(code_wanted), why, code_wanted, answer);
    }

    let (_, challenge) = pkce();
    let answer = rig.authorize_on(&other, &login(&client, CLI, &challenge)).await;
    assert_error_page(&answer, "A's client at B's /authorize", "unknown at B", 401);
}

#[tokio::test]
async fn a_replayed_refresh_token_revokes_the_whole_grant() {
    let rig = Rig::start().await;
    let client = rig.public_client(&[CLI]).await;
    let tokens = rig.tokens(&client).await;
    let r0 = tokens["refresh_token"].as_str().unwrap().to_string();
    let refresh = |token: String| {
        let (rig, client) = (&rig, client.clone());
        async move {
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
                ("client_id", client.as_str()),
            ];
            rig.token(&form, None).await
        }
    };

    let first = refresh(r0.clone()).await;
    row!(first.status == 200, "r0", "the first refresh rotates", first);
    let r1 = first.json()["refresh_token"].as_str().unwrap().to_string();
    let access = first.json()["access_token"].as_str().unwrap().to_string();
    row!(r1 != r0, "r0", "the refresh token rotates", first);

    let raced = refresh(r0.clone()).await;
    row!(raced.status == 200, "r0 again at once", "a race within the grace window", raced);

    rig.server.clock.advance(SignedDuration::from_secs(11));
    let rows = [
        (r0.clone(), "r0 after the window", "a replay: the grant is revoked"),
        (r1.clone(), "r1", "the current token of a revoked grant"),
        (r0.clone(), "r0 once more", "still revoked"),
    ];
    for (token, what, why) in rows {
        let answer = refresh(token).await;
        row!(answer.status == 400, what, why, answer);
        row!(answer.error().as_deref() == Some("invalid_grant"), what, why, answer);
    }

    let request = Request::get("/mcp")
        .header(header::HOST, &rig.host)
        .header(header::AUTHORIZATION, format!("Bearer {access}"))
        .body(Body::empty())
        .unwrap();
    let answer = rig.call(request).await;
    row!(answer.status == 401, "the access token of the grant", "revoked with it", answer);
}

/// Flips one bit of the decoded value at `byte`.
fn flip(value: &str, byte: usize) -> String {
    let mut bytes = B64.decode(value).unwrap();
    let at = byte.min(bytes.len() - 1);
    bytes[at] ^= 0x01;
    B64.encode(bytes)
}

#[tokio::test]
async fn a_forged_or_tampered_client_id_is_an_unknown_client() {
    let rig = Rig::start().await;
    let other = add_second_connector(&rig);
    let client = rig.public_client(&[CLI]).await;
    let (verifier, challenge) = pkce();
    let code = rig.code(&client, CLI, &challenge).await;
    let b_metadata = json!({"redirect_uris": [CLI], "token_endpoint_auth_method": "none"});
    let answer = rig
        .post_on(&other, "/register", "application/json", &[], metadata_body(&b_metadata))
        .await;
    let b_client = answer.json()["client_id"].as_str().unwrap().to_string();
    let len = B64.decode(&client).unwrap().len();
    let random = B64.encode(vec![7u8; len]);
    let upper = client.to_uppercase();

    #[rustfmt::skip]
    let rows: Vec<(String, &str)> = vec![
        (flip(&client, 0), "version byte"),
        (flip(&client, 2), "key tag"),
        (flip(&client, 8), "nonce"),
        (flip(&client, len / 2), "ciphertext"),
        (flip(&client, len - 1), "authentication tag"),
        (client[..client.len() - 1].to_string(), "one character short"),
        (format!("{client}A"), "one character more"),
        (format!("{client}{client}"), "doubled"),
        (upper, "case changed"),
        (random, "random bytes of the same length"),
        (b_client, "a client of another connector"),
        (code.clone(), "a code as a client_id"),
        ("null".to_string(), "a word"),
        ("https://127.0.0.1/client.json".to_string(), "a metadata URL on loopback"),
    ];
    for (forged, why) in &rows {
        let answer = rig.authorize(&login(forged, CLI, &challenge)).await;
        assert_error_page(&answer, forged, why, 401);
        row!(answer.error().as_deref() == Some("invalid_client"), forged, why, answer);

        let answer = rig.token(&exchange(forged, &code, &verifier, CLI), None).await;
        row!(answer.status == 401, forged, why, answer);
        row!(answer.error().as_deref() == Some("invalid_client"), forged, why, answer);
    }
    let good = rig.token(&exchange(&client, &code, &verifier, CLI), None).await;
    row!(good.status == 200, "the genuine client_id", "still works", good);
}
