//! `/token` under load, the same way for mcp-connector and the peer: register a public
//! client, collect authorization codes through the sign-in, then redeem them, and refresh
//! with rotation, from `concurrency` keep-alive connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http::{Method, header};
use http_body_util::Full;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::client::{Conn, Jar, Samples, form, request};

/// Where the client says it listens; never called, the code is read from the redirect.
pub const REDIRECT: &str = "http://127.0.0.1:53682/callback";

/// The routes of one OAuth server.
#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    pub register: &'static str,
    pub authorize: &'static str,
    pub token: &'static str,
}

impl Server {
    /// mcp-connector's routes.
    pub fn ours(addr: SocketAddr) -> Server {
        Server {
            addr,
            register: "/register",
            authorize: "/authorize",
            token: "/token",
        }
    }

    /// oidc-provider's routes.
    pub fn peer(addr: SocketAddr) -> Server {
        Server {
            addr,
            register: "/reg",
            authorize: "/auth",
            token: "/token",
        }
    }

    /// The protected resource, `<issuer>/mcp` on both.
    pub fn resource(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
}

/// A registered public client and its PKCE pair (one pair serves every code).
#[derive(Clone)]
pub struct Client {
    pub server: Server,
    pub id: String,
    pub verifier: String,
    pub challenge: String,
}

#[derive(Deserialize)]
struct Registered {
    client_id: String,
}

#[derive(Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
}

/// Registers a public client.
pub async fn register(server: &Server) -> Client {
    let mut conn = Conn::open(server.addr).await.unwrap();
    let metadata = serde_json::json!({
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "client_name": "load driver",
    });
    let req = request(Method::POST, server.addr, server.register)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(metadata.to_string())))
        .unwrap();
    let answer = conn.call(req).await.unwrap();
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    let registered: Registered = serde_json::from_slice(&answer.body).unwrap();

    let verifier = format!("{}{}", B64.encode([7u8; 24]), B64.encode([9u8; 24]));
    let challenge = B64.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
    Client {
        server: server.clone(),
        id: registered.client_id,
        verifier,
        challenge,
    }
}

/// Runs the sign-in once and returns the code: `/authorize` answers with the code at once
/// on mcp-connector (auto-login) and on the peer once its session cookie is held; the
/// peer's first sign-in goes through its interaction first.
pub async fn code(conn: &mut Conn, client: &Client, jar: &mut Jar) -> String {
    let resource = client.server.resource();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", &client.id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &client.challenge),
            ("code_challenge_method", "S256"),
            ("scope", "mcp"),
            ("state", "load"),
            ("resource", &resource),
        ])
        .finish();
    let mut target = format!("{}?{query}", client.server.authorize);
    let origin = format!("http://{}", client.server.addr);

    for _ in 0..6 {
        let mut req = request(Method::GET, client.server.addr, &target);
        if let Some(cookies) = jar.header() {
            req = req.header(header::COOKIE, cookies);
        }
        let answer = conn.call(req.body(Full::default()).unwrap()).await.unwrap();
        jar.take(&answer.headers);
        assert!(
            answer.status.is_redirection(),
            "{target}: {} {:?}",
            answer.status,
            answer.body
        );
        let location = answer.headers[header::LOCATION].to_str().unwrap();
        if location.starts_with(REDIRECT) {
            let url = url::Url::parse(location).unwrap();
            let code = url.query_pairs().find(|(k, _)| k == "code");
            return code.unwrap_or_else(|| panic!("{location}")).1.into_owned();
        }
        target = location
            .strip_prefix(&origin)
            .unwrap_or(location)
            .to_string();
    }
    panic!("the sign-in did not end at the redirect URI");
}

/// Collects `count` codes with `workers` connections. Each sign-in starts with no cookie,
/// so that every code is of a grant of its own, as when many users log in: on the peer a
/// session's later codes would all join its one grant.
pub async fn codes(client: &Client, count: usize, workers: usize) -> Vec<String> {
    let out = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let left = Arc::new(AtomicUsize::new(count));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (client, out, left) = (client.clone(), out.clone(), left.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(client.server.addr).await.unwrap();
            let mut mine = Vec::new();
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                mine.push(code(&mut conn, &client, &mut Jar::default()).await);
            }
            out.lock().await.extend(mine);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(out).ok().unwrap().into_inner()
}

fn code_form(client: &Client, code: &str, resource: &str) -> crate::client::Body {
    form(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", &client.verifier),
        ("client_id", &client.id),
        ("resource", resource),
    ])
}

fn refresh_form(client: &Client, refresh: &str, resource: &str) -> crate::client::Body {
    form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("client_id", &client.id),
        ("resource", resource),
    ])
}

fn token_request(client: &Client, body: crate::client::Body) -> http::Request<crate::client::Body> {
    request(Method::POST, client.server.addr, client.server.token)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .unwrap()
}

/// Redeems one code for tokens.
pub async fn redeem(conn: &mut Conn, client: &Client, code: &str) -> Tokens {
    let resource = client.server.resource();
    let req = token_request(client, code_form(client, code, &resource));
    let answer = conn.call(req).await.unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    serde_json::from_slice(&answer.body).unwrap()
}

/// Sends one token request per form in `forms` from `workers` connections; the run's rate
/// and latencies. An answer counts when it is a 200 with a refresh token in it.
async fn send_all(client: &Client, forms: Vec<crate::client::Body>, workers: usize) -> Samples {
    let forms = Arc::new(std::sync::Mutex::new(forms));
    let mut conns = Vec::new();
    for _ in 0..workers {
        conns.push(Conn::open(client.server.addr).await.unwrap());
    }

    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (client, forms) = (client.clone(), forms.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            loop {
                let Some(body) = forms.lock().unwrap().pop() else {
                    break;
                };
                let req = token_request(&client, body);
                let sent = Instant::now();
                match conn.call(req).await {
                    Ok(a) if a.status == 200 && has_refresh_token(&a.body) => {
                        samples.micros.push(sent.elapsed().as_micros() as u32);
                    }
                    Ok(a) => samples.failed(|| format!("{} {:?}", a.status, a.body)),
                    Err(e) => samples.failed(|| e),
                }
            }
            samples
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        all.merge(t.await.unwrap());
    }
    all.elapsed = start.elapsed();
    all
}

fn has_refresh_token(body: &[u8]) -> bool {
    let needle = b"\"refresh_token\"";
    body.windows(needle.len()).any(|w| w == needle)
}

/// Redeems every code.
pub async fn redeem_all(client: &Client, codes: Vec<String>, workers: usize) -> Samples {
    let resource = client.server.resource();
    let forms = codes
        .iter()
        .map(|c| code_form(client, c, &resource))
        .collect();
    send_all(client, forms, workers).await
}

/// Refresh tokens of `count` grants of their own, each fresh from its code.
pub async fn refresh_tokens(client: &Client, count: usize, workers: usize) -> Vec<String> {
    let codes = codes(client, count, workers).await;
    let codes = Arc::new(std::sync::Mutex::new(codes));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (client, codes) = (client.clone(), codes.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(client.server.addr).await.unwrap();
            let mut mine = Vec::new();
            loop {
                let Some(code) = codes.lock().unwrap().pop() else {
                    break;
                };
                // `dev` refuses some redemptions under concurrency (its grant file); a
                // grant short is no matter here.
                let resource = client.server.resource();
                let req = token_request(&client, code_form(&client, &code, &resource));
                let answer = conn.call(req).await;
                let tokens = answer
                    .ok()
                    .filter(|a| a.status == 200)
                    .and_then(|a| serde_json::from_slice::<Tokens>(&a.body).ok());
                mine.extend(tokens.map(|t| t.refresh_token));
            }
            mine
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Refreshes each token once: one rotation of each of many grants, as when many users'
/// clients refresh.
pub async fn refresh_all(client: &Client, tokens: Vec<String>, workers: usize) -> Samples {
    let resource = client.server.resource();
    let forms = tokens
        .iter()
        .map(|t| refresh_form(client, t, &resource))
        .collect();
    send_all(client, forms, workers).await
}
