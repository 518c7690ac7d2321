//! The OAuth server and `/mcp` as `dev` builds them, but with the grant state in memory
//! (`MemoryGrants`) as the peer keeps its own: this bench re-executed as a child process
//! with `--serve ADDR`. `dev` itself saves the grant state to a file after every change,
//! and `run` keeps it in the Kubernetes API; both are measured beside this.

use std::net::SocketAddr;
use std::sync::Arc;

use mcp_connector::base_url::BaseUrl;
use mcp_connector::clock::Clock;
use mcp_connector::crd::McpConnectorSpec;
use mcp_connector::grants::MemoryGrants;
use mcp_connector::keys::store::Entry;
use mcp_connector::keys::{Connector, KeyKind, KeyStore, Keys, Keyset};
use mcp_connector::oauth::access_token::AccessClaims;
use mcp_connector::oauth::{AppState, router};
use mcp_connector::settings::Settings;
use mcp_connector::upstream::Upstream;

/// Serves on `listen` until SIGTERM, `/mcp` proxied to `mcp_server` if given; logs as
/// `mcp-connector` does, at info to stderr.
pub fn main(listen: &str, mcp_server: Option<&str>) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::stderr)
        .init();
    let listen: SocketAddr = listen.parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(serve(listen, mcp_server));
}

async fn serve(listen: SocketAddr, mcp_server: Option<&str>) {
    let base = format!("http://{listen}");
    let mut spec = serde_json::json!({
        "baseURL": base,
        "upstream": {"devUsers": [{"username": "u", "password": "p"}]},
    });
    if let Some(url) = mcp_server {
        spec["mcpServer"] = serde_json::json!({"url": url});
    }
    let spec: McpConnectorSpec = serde_json::from_value(spec).unwrap();
    let keys = fresh_keys();
    let connector = Connector {
        id: "bench".into(),
        base: BaseUrl::parse(&base, "bench").unwrap(),
        settings: Settings::from_spec("bench", &spec).unwrap(),
        upstream: Upstream::AutoLogin("alice@example.com".into()),
        keys: Arc::new(keys),
        loopback_aliases: false,
    };
    let store = KeyStore::new();
    store.upsert("bench", Entry::Serving(Arc::new(connector)));

    let state = AppState::new(store, Arc::new(MemoryGrants::new()), Clock::system());
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    let stop = mcp_connector::run::shutdown_signal();
    mcp_connector::serve::serve(listener, router(state), stop).await;
}

/// The floor under `/token` on this machine, started as `--floor ADDR`: the product's `serve`
/// and an axum router of two routes that parse the form and answer with a token response,
/// with the headers `/token` sends. `POST /fixed` answers with one response made at start;
/// `POST /signed` signs an access token for each request first, as `/token` must. It logs
/// nothing, and leaves out the rest of `/token` (see `floor_runs`).
pub fn floor_main(listen: &str) {
    let listen: SocketAddr = listen.parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(floor(listen));
}

async fn floor(listen: SocketAddr) {
    use axum::Form;
    use axum::routing::post;
    use mcp_connector::oauth::access_token::mint;
    use std::collections::HashMap;

    let keys = Arc::new(fresh_keys());
    let claims = Arc::new(sample_claims(&format!("http://{listen}")));

    // The headers `/token` answers with, and a refresh token as long as a sealed one.
    const HEADERS: [(http::HeaderName, &str); 3] = [
        (http::header::CONTENT_TYPE, "application/json"),
        (http::header::CACHE_CONTROL, "no-store"),
        (http::header::PRAGMA, "no-cache"),
    ];
    let refresh = "r".repeat(220);
    let answer = move |access: &str| {
        let body = serde_json::json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": refresh,
            "scope": "mcp",
        });
        (HEADERS, body.to_string())
    };
    let fixed = answer(&mint(&keys, &claims).unwrap());
    type Fields = Form<HashMap<String, String>>;

    let app = axum::Router::new()
        .route(
            "/fixed",
            post(move |_form: Fields| {
                let fixed = fixed.clone();
                async move { fixed }
            }),
        )
        .route(
            "/signed",
            post(move |_form: Fields| {
                let (keys, claims, answer) = (keys.clone(), claims.clone(), answer.clone());
                async move { answer(&mint(&keys, &claims).unwrap()) }
            }),
        );

    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    let stop = mcp_connector::run::shutdown_signal();
    mcp_connector::serve::serve(listener, app, stop).await;
}

/// The floors under `/mcp` and its streams, each in a process of its own so that its CPU
/// and memory are measured as the operator's are, started as `--<kind>-relay ADDR URL`:
/// proxies to the MCP server at `URL` that check nothing and copy no header.
///
/// - `hyper`: HTTP/1.1. Each connection in gets a connection out of its own, and one task
///   drives both, so that an answer is forwarded in the poll that reads it. What is left
///   is parsing and writing each request and answer twice.
/// - `axum`: the product's `serve` and an axum router with one route, which forwards
///   through the product's per-connection upstreams (`proxy::local`): what `/mcp` costs
///   before routing by host, CORS, the token check and the copy of the headers.
/// - `h2-h1`, `h1-h2`, `h2-h2`: the protocols in and out, for the streams rows
///   ([`pooled_relay`]).
pub fn relay_main(kind: &str, listen: &str, up: &str) {
    let listen: SocketAddr = listen.parse().unwrap();
    let up: http::Uri = up.parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match kind {
        "hyper" => rt.block_on(hyper_relay(listen, up)),
        "h2-h1" => rt.block_on(pooled_relay(listen, up, true, false)),
        "h1-h2" => rt.block_on(pooled_relay(listen, up, false, true)),
        "h2-h2" => rt.block_on(pooled_relay(listen, up, true, true)),
        _ => rt.block_on(axum_relay(listen, up)),
    }
}

/// The floor under the event streams that are not HTTP/1.1 on both sides: in, over HTTP/2
/// if `http2_in` (hyper-util's automatic builder, as the warm-up calls come in over
/// HTTP/1.1) or else over HTTP/1.1 (hyper's own connection); out, over HTTP/2 from the
/// first byte if `http2_out`, on connections that carry 100 requests each as `/mcp`'s do
/// (`proxy::http2`), or else through hyper's pooled HTTP/1.1 client, a connection for each
/// stream open at once. Requests and answers pass through untouched.
async fn pooled_relay(listen: SocketAddr, up: http::Uri, http2_in: bool, http2_out: bool) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;

    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let pooled: Client<_, hyper::body::Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    let h2 = Arc::new(H2Connections::new(up.authority().unwrap().to_string()));

    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    while let Ok((inbound, _)) = listener.accept().await {
        let _ = inbound.set_nodelay(true);
        let (pooled, h2, up) = (pooled.clone(), h2.clone(), up.clone());
        let forward = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let (pooled, h2) = (pooled.clone(), h2.clone());
            *req.uri_mut() = up.clone();
            req.headers_mut().remove(http::header::HOST);
            async move {
                if http2_out {
                    *req.version_mut() = http::Version::HTTP_2;
                    let mut sender = h2.next().await;
                    sender.send_request(req).await.map_err(|e| e.to_string())
                } else {
                    *req.version_mut() = http::Version::HTTP_11;
                    pooled.request(req).await.map_err(|e| e.to_string())
                }
            }
        });
        let io = TokioIo::new(inbound);
        tokio::spawn(async move {
            if http2_in {
                let builder = Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(io, forward).await;
            } else {
                let _ = http1::Builder::new().serve_connection(io, forward).await;
            }
        });
    }
}

type H2Sender = hyper::client::conn::http2::SendRequest<hyper::body::Incoming>;

/// HTTP/2 connections to one server, the `n`th request going on connection `n / 100`.
/// Streams in the stream runs never close, so counting requests counts open streams.
struct H2Connections {
    authority: String,
    requests: std::sync::atomic::AtomicUsize,
    opened: tokio::sync::Mutex<Vec<H2Sender>>,
}

impl H2Connections {
    fn new(authority: String) -> H2Connections {
        H2Connections {
            authority,
            requests: Default::default(),
            opened: Default::default(),
        }
    }

    async fn next(&self) -> H2Sender {
        use hyper_util::rt::{TokioExecutor, TokioIo};

        let n = self
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut opened = self.opened.lock().await;
        while opened.len() <= n / 100 {
            let socket = tokio::net::TcpStream::connect(&self.authority)
                .await
                .unwrap();
            socket.set_nodelay(true).unwrap();
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(socket))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            opened.push(sender);
        }
        opened[n / 100].clone()
    }
}

async fn hyper_relay(listen: SocketAddr, up: http::Uri) {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let up = up.authority().unwrap().to_string();
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    while let Ok((inbound, _)) = listener.accept().await {
        let up = up.clone();
        tokio::spawn(async move {
            let Ok(outbound) = tokio::net::TcpStream::connect(up).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let handshake = hyper::client::conn::http1::handshake(TokioIo::new(outbound));
            let Ok((sender, upstream)) = handshake.await else {
                return;
            };

            // HTTP/1.1 answers one request at a time, so the lock is never contended.
            let sender = Arc::new(tokio::sync::Mutex::new(sender));
            let forward = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let sender = sender.clone();
                async move {
                    let mut sender = sender.lock().await;
                    sender.ready().await?;
                    sender.send_request(req).await
                }
            });
            let downstream = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(inbound), forward);
            tokio::select! {
                _ = downstream => {}
                _ = upstream => {}
            }
        });
    }
}

async fn axum_relay(listen: SocketAddr, up: http::Uri) {
    use axum::body::Body;
    use axum::response::IntoResponse;
    use mcp_connector::proxy::local::Upstreams;

    let forward = move |axum::Extension(upstreams): axum::Extension<Upstreams>,
                        request: axum::extract::Request| {
        let up = up.clone();
        async move {
            let (mut parts, body) = request.into_parts();
            parts.uri = up;
            parts.headers.remove(http::header::HOST);
            let outgoing = http::Request::from_parts(parts, body);
            match upstreams.send(outgoing).await {
                Ok(answer) => answer.map(Body::new).into_response(),
                Err(_) => http::StatusCode::BAD_GATEWAY.into_response(),
            }
        }
    };
    let app: axum::Router = axum::Router::new().route("/mcp", axum::routing::any(forward));

    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    let stop = mcp_connector::run::shutdown_signal();
    mcp_connector::serve::serve(listener, app, stop).await;
}

/// A sealing and a signing key made now.
pub fn fresh_keys() -> Keys {
    let now = jiff::Timestamp::now();
    let set = |kind: KeyKind| Keyset {
        keys: vec![kind.generate(now).unwrap()],
    };
    Keys::from_keysets(&set(KeyKind::Seal), &set(KeyKind::Signing)).unwrap()
}

/// The claims of an access token `issuer` would sign for a user in two groups, with a
/// client id as long as a sealed one.
pub fn sample_claims(issuer: &str) -> AccessClaims {
    let now = jiff::Timestamp::now().as_second();
    AccessClaims {
        iss: issuer.into(),
        aud: format!("{issuer}/mcp"),
        sub: "alice@example.com".into(),
        exp: now + 3600,
        iat: now,
        jti: "0123456789abcdef".into(),
        client_id: "c".repeat(180),
        scope: "mcp".into(),
        preferred_username: "alice@example.com".into(),
        groups: vec!["sre".into(), "dev".into()],
        gid: "0123456789abcdef0123".into(),
    }
}
