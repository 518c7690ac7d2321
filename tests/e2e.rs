//! End to end, with real parts only: `mcp-connector dev` on loopback, a real upstream
//! OpenID provider (`oidc-provider`, through `tests/js/idp.mjs`), and real MCP clients: the
//! rmcp SDK's OAuth client and Streamable HTTP transport, and the official TypeScript SDK.
//!
//! Refusals of bad tokens (another connector's, expired, signed by a deleted key) are in
//! `tests/oauth.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResult, ProgressNotificationParam};
use rmcp::model::{ClientRequest, Request, RequestMetaObject};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{AuthClient, AuthorizationManager, AuthorizationRequest, OAuthState};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ClientHandler, ErrorData, Peer, RoleClient, RoleServer, ServiceExt};
use rmcp::{tool, tool_router};
use url::Url;

use mcp_connector::dev::{self, DevOidc, DevOptions, DevServer};
use mcp_connector::keys::SecretString;
use support::idp::{Idp, browser_login, run_ts_client};

/// Our client at the IdP.
const IDP_CLIENT_ID: &str = "mcp-connector-e2e";
const IDP_CLIENT_SECRET: &str = "e2e-client-secret";

/// Generous limits for a loaded two-core CI machine; none of them is waited out on success.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// A port that was free a moment ago, for a server that must be named before it listens
/// (the IdP is given our callback URL before `dev` starts).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A fresh state folder for one `dev` server.
fn state_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mcp-connector-e2e-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn options(listen: SocketAddr) -> DevOptions {
    DevOptions {
        listen,
        state_dir: state_dir(),
        mcp_server: None,
        mcp_server_http2: false,
        oidc: None,
        auto_login: None,
    }
}

/// `dev` with the built-in `whoami` server, signing in at a real IdP with alice on it.
async fn dev_with_idp() -> (DevServer, Idp) {
    let port = free_port();
    let callback = format!("http://127.0.0.1:{port}/oauth/callback");
    let idp = Idp::start(IDP_CLIENT_ID, IDP_CLIENT_SECRET, &callback).await;

    let mut opts = options(SocketAddr::from(([127, 0, 0, 1], port)));
    opts.oidc = Some(DevOidc {
        issuer: Url::parse(&idp.issuer).unwrap(),
        client_id: IDP_CLIENT_ID.to_string(),
        client_secret: SecretString::new(IDP_CLIENT_SECRET),
    });
    let server = dev::start(opts).await.unwrap();
    (server, idp)
}

/// `dev` proxying to `mcp_server`, signing every login in as alice with no form.
async fn dev_auto_login(mcp_server: Url) -> DevServer {
    let mut opts = options(SocketAddr::from(([127, 0, 0, 1], 0)));
    opts.mcp_server = Some(mcp_server);
    opts.auto_login = Some("alice".to_string());
    dev::start(opts).await.unwrap()
}

fn mcp_url(server: &DevServer) -> String {
    format!("{}/mcp", server.base_url)
}

/// An HTTP client that follows no redirects, to look at where one points.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {STEP_TIMEOUT:?}"))
}

/// The start of an rmcp login: discovery from the MCP URL, dynamic registration with a
/// loopback redirect (a port nobody listens on: the callback is never fetched), and the
/// authorization URL.
async fn start_login(mcp_url: &str) -> (OAuthState, String, String) {
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    let mut state = OAuthState::new(mcp_url, None).await.unwrap();
    let request = AuthorizationRequest::new(&redirect).with_client_name("mcp-connector e2e");
    within(
        "discovery and registration",
        state.start_authorization(request),
    )
    .await
    .unwrap();
    let auth_url = state.get_authorization_url().await.unwrap();
    (state, auth_url, redirect)
}

/// The end of an rmcp login: the callback URL exchanged for tokens.
async fn finish_login(mut state: OAuthState, callback: &str) -> AuthorizationManager {
    within("token exchange", state.handle_callback_url(callback))
        .await
        .unwrap();
    state
        .into_authorization_manager()
        .expect("authorized after the callback")
}

/// A whole rmcp login against `--auto-login`: no browser, just our redirect's Location.
async fn login_without_browser(mcp_url: &str) -> AuthorizationManager {
    let (state, auth_url, redirect) = start_login(mcp_url).await;
    let r = no_redirects().get(&auth_url).send().await.unwrap();
    assert_eq!(r.status(), 302, "{:?}", r.text().await);
    let callback = r.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    assert!(callback.starts_with(&redirect), "{callback}");
    finish_login(state, &callback).await
}

type AuthedClient = AuthClient<reqwest::Client>;

/// An rmcp MCP client on `mcp_url` that sends the manager's tokens.
async fn connect<H: ClientHandler>(
    handler: H,
    mcp_url: &str,
    manager: AuthorizationManager,
) -> (RunningService<RoleClient, H>, AuthedClient) {
    let auth = AuthClient::new(reqwest::Client::new(), manager);
    let config = StreamableHttpClientTransportConfig::with_uri(mcp_url.to_string());
    let transport = StreamableHttpClientTransport::with_client(auth.clone(), config);
    let client = within("initialize", handler.serve(transport))
        .await
        .unwrap();
    (client, auth)
}

fn text_of(result: &CallToolResult) -> String {
    assert_ne!(result.is_error, Some(true), "{result:?}");
    result
        .content
        .iter()
        .filter_map(|c| c.as_text())
        .map(|t| t.text.as_str())
        .collect()
}

async fn whoami(client: &Peer<RoleClient>) -> serde_json::Value {
    let result = within(
        "whoami",
        client.call_tool(CallToolRequestParams::new("whoami")),
    )
    .await
    .unwrap();
    let text = text_of(&result);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("whoami answered {text:?}: {e}"))
}

#[tokio::test]
async fn the_rmcp_client_logs_in_at_the_idp_calls_whoami_and_refreshes() {
    let (server, idp) = dev_with_idp().await;
    let mcp = mcp_url(&server);
    let (state, auth_url, redirect) = start_login(&mcp).await;

    // The client asks for consent, as claude.ai and the Python SDK do; the IdP must see a
    // plain sign-in of our own client, with no prompt (C14, over the OIDC leg).
    let auth_url = format!("{auth_url}&prompt=consent");
    let r = no_redirects().get(&auth_url).send().await.unwrap();
    assert_eq!(r.status(), 302, "{:?}", r.text().await);
    let upstream = r.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        upstream.starts_with(&idp.issuer),
        "not sent to the IdP: {upstream}"
    );
    let upstream_query: Vec<(String, String)> = Url::parse(&upstream)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert!(
        !upstream_query.iter().any(|(k, _)| k == "prompt"),
        "{upstream}"
    );
    let param = |name: &str| {
        upstream_query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    };
    assert_eq!(param("client_id").map(String::as_str), Some(IDP_CLIENT_ID));

    let callback = browser_login(&auth_url, &redirect, "alice", "alice-password").await;
    let manager = finish_login(state, &callback).await;
    let (client, auth) = connect((), &mcp, manager).await;

    let tools = within("tools/list", client.list_all_tools()).await.unwrap();
    assert!(tools.iter().any(|t| t.name == "whoami"), "{tools:?}");
    let me = whoami(client.peer()).await;
    assert_eq!(
        me["user"],
        "alice@example.com",
        "{me}\nIdP log:\n{}",
        idp.logs()
    );
    assert_eq!(me["groups"], "sre,dev", "{me}");

    let before = auth.get_access_token().await.unwrap();
    let refreshed = within("refresh", async {
        auth.auth_manager.lock().await.refresh_token().await
    })
    .await
    .unwrap();
    let after = auth.get_access_token().await.unwrap();
    assert_ne!(before, after, "the refresh returned the same access token");
    assert_eq!(
        serde_json::to_value(&refreshed).unwrap()["access_token"],
        after.as_str()
    );

    let me = whoami(client.peer()).await;
    assert_eq!(me["user"], "alice@example.com", "{me}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn the_typescript_sdk_logs_in_at_the_idp_calls_whoami_and_refreshes() {
    let (server, idp) = dev_with_idp().await;

    let (ok, steps) = run_ts_client(&mcp_url(&server), "alice", "alice-password").await;

    let show = || format!("{steps:#?}\nIdP log:\n{}", idp.logs());
    assert!(ok, "ts-client failed: {}", show());
    let step = |name: &'static str| steps.iter().filter(move |s| s["step"] == name);
    let listed = step("tools/list").any(|s| {
        s["tools"]
            .as_array()
            .is_some_and(|tools| tools.iter().any(|t| t == "whoami"))
    });
    assert!(listed, "tools/list without whoami: {}", show());
    let calls: Vec<_> = step("tools/call").collect();
    assert_eq!(calls.len(), 2, "{}", show());
    for call in &calls {
        let text = call["text"].as_str().unwrap_or_default();
        assert!(text.contains("alice@example.com"), "{}", show());
    }
    assert!(calls.iter().any(|c| c["after"] == "refresh"), "{}", show());
    assert!(step("refresh").all(|s| s["ok"] == true), "{}", show());
    assert_eq!(step("refresh").count(), 1, "{}", show());
}

/// An MCP server with one slow tool that reports progress as it goes.
#[derive(Clone, Debug, Default)]
struct SlowCounter;

const PROGRESS_STEPS: u32 = 3;
const PROGRESS_GAP: Duration = Duration::from_millis(300);

#[tool_router(server_handler)]
impl SlowCounter {
    /// Counts to three, a notification per step, then answers.
    #[tool(description = "Counts to three slowly, reporting progress")]
    async fn slow_count(
        &self,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> Result<String, ErrorData> {
        let token = meta
            .get_progress_token()
            .ok_or_else(|| ErrorData::invalid_params("a progress token is required", None))?;
        for step in 1..=PROGRESS_STEPS {
            let progress = ProgressNotificationParam::new(token.clone(), f64::from(step))
                .with_total(f64::from(PROGRESS_STEPS));
            peer.notify_progress(progress)
                .await
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
            tokio::time::sleep(PROGRESS_GAP).await;
        }
        Ok(format!("counted to {PROGRESS_STEPS}"))
    }
}

/// Serves `SlowCounter` on loopback; its `/mcp` URL.
async fn spawn_slow_counter() -> Url {
    let service = StreamableHttpService::new(
        || Ok(SlowCounter),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Url::parse(&format!("http://{addr}/mcp")).unwrap()
}

/// A client that notes when each progress notification arrived.
#[derive(Clone, Default)]
struct ProgressRecorder {
    seen: Arc<Mutex<Vec<(Instant, f64)>>>,
}

impl ClientHandler for ProgressRecorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.seen
            .lock()
            .unwrap()
            .push((Instant::now(), params.progress));
    }
}

#[tokio::test]
async fn progress_notifications_stream_through_the_proxy_unbuffered() {
    let server = dev_auto_login(spawn_slow_counter().await).await;
    let mcp = mcp_url(&server);
    let manager = login_without_browser(&mcp).await;
    let recorder = ProgressRecorder::default();
    let (client, _auth) = connect(recorder.clone(), &mcp, manager).await;

    let call =
        ClientRequest::CallToolRequest(Request::new(CallToolRequestParams::new("slow_count")));
    let handle = client.send_cancellable_request(call, PeerRequestOptions::no_options());
    let handle = within("tools/call slow_count", handle).await.unwrap();
    let response = within("the slow_count result", handle.await_response())
        .await
        .unwrap();
    let done = Instant::now();

    let rmcp::model::ServerResult::CallToolResult(result) = response else {
        panic!("not a tool result: {response:?}");
    };
    assert_eq!(text_of(&result), "counted to 3");
    let seen = recorder.seen.lock().unwrap().clone();
    let steps: Vec<f64> = seen.iter().map(|(_, p)| *p).collect();
    assert_eq!(steps, [1.0, 2.0, 3.0]);

    // The tool sleeps 300 ms after each notification, so an unbuffered proxy delivers the
    // first one about 900 ms before the result; a buffering one, with it.
    let lead = done.duration_since(seen[0].0);
    assert!(
        lead >= Duration::from_millis(400),
        "first progress only {lead:?} before the result"
    );
    client.cancel().await.unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How long one `whoami` call takes.
async fn time_whoami(client: &Peer<RoleClient>) -> Duration {
    let start = Instant::now();
    let result = client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .unwrap();
    let elapsed = start.elapsed();
    text_of(&result);
    elapsed
}

/// Times `n` sequential `whoami` calls on each client, alternating, so that whatever else
/// the machine is doing weighs on both alike; each list sorted.
async fn time_both(a: &Peer<RoleClient>, b: &Peer<RoleClient>, n: usize) -> [Vec<Duration>; 2] {
    let mut times = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for _ in 0..n {
        times[0].push(time_whoami(a).await);
        times[1].push(time_whoami(b).await);
    }
    times.iter_mut().for_each(|t| t.sort());
    times
}

/// Measured, not asserted: shown with `--nocapture`.
#[tokio::test]
async fn proxy_added_latency_is_measured() {
    const N: usize = 200;
    let (backend_addr, _backend) = dev::whoami::spawn().await.unwrap();
    let backend = Url::parse(&format!("http://{backend_addr}/mcp")).unwrap();
    let server = dev_auto_login(backend.clone()).await;
    let mcp = mcp_url(&server);

    let manager = login_without_browser(&mcp).await;
    let (proxied, _auth) = connect((), &mcp, manager).await;
    let direct_transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(backend.to_string()),
    );
    let direct = within("initialize", ().serve(direct_transport))
        .await
        .unwrap();

    // Warm both paths (connections, the token cache) before timing.
    time_both(direct.peer(), proxied.peer(), 10).await;
    let [direct_times, proxied_times] = within(
        "the timed calls",
        time_both(direct.peer(), proxied.peer(), N),
    )
    .await;

    let (d50, d99) = (
        percentile(&direct_times, 0.5),
        percentile(&direct_times, 0.99),
    );
    let (p50, p99) = (
        percentile(&proxied_times, 0.5),
        percentile(&proxied_times, 0.99),
    );
    println!(
        "proxy added latency: p50={:.2} ms p99={:.2} ms (direct p50={:.2}, proxied p50={:.2}; \
         N={N} sequential tools/call whoami each)",
        ms(p50.saturating_sub(d50)),
        ms(p99.saturating_sub(d99)),
        ms(d50),
        ms(p50),
    );
    direct.cancel().await.unwrap();
    proxied.cancel().await.unwrap();
}
