//! The embedded OAuth 2.1 authorization server and the routes MCP clients use, one file per
//! endpoint. [`router`] builds the whole HTTP surface so tests drive it in-process.

pub mod access_token;
pub mod authorize;
pub mod callback;
pub mod cimd;
pub mod client;
pub mod discovery;
pub mod error;
pub mod redirect;
pub mod register;
pub mod revoke;
pub mod seal;
pub mod token;
pub mod verified;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderName, Method, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::base_url::BaseUrl;
use crate::clock::Clock;
use crate::grants::GrantStore;
use crate::keys::store::Route;
use crate::keys::{Connector, KeyStore};
use crate::proxy::http2::Http2Clients;
use crate::upstream::oidc::OidcClient;

pub use error::{ErrorCode, OAuthError};

/// Largest form or JSON body accepted on the OAuth routes.
pub const MAX_BODY: usize = 64 * 1024;

/// How long an OAuth request may take, reading its body included, so that a client that
/// sends headers and then trickles the body cannot hold a connection forever. `/mcp` has
/// no such bound: its event streams stay open for hours.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Connectors, their settings and keys.
    pub store: KeyStore,
    /// Redeemed codes, refresh generations, revocations.
    pub grants: Arc<dyn GrantStore>,
    /// The time.
    pub clock: Clock,
    /// Fetches Client ID Metadata Documents.
    pub cimd: Arc<cimd::CimdFetcher>,
    /// Talks to upstream OpenID providers.
    pub oidc: Arc<OidcClient>,
    /// Talks to MCP servers; no overall timeout, since event streams are long-lived.
    pub proxy_http: reqwest::Client,
    /// The same for MCP servers spoken to in HTTP/2 from the first byte
    /// (`spec.mcpServer.http2`), as many connections as the open streams need.
    pub proxy_http2: Arc<Http2Clients>,
    /// Limits registrations per client address.
    pub register_limit: Arc<register::RateLimit>,
    /// Access tokens already verified on `/mcp`.
    pub verified: Arc<verified::VerifiedTokens<crate::proxy::Caller>>,
    /// Counters and latencies for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The bound on one OAuth request ([`REQUEST_TIMEOUT`]; tests shorten it).
    pub request_timeout: Duration,
}

impl AppState {
    /// State with the given store and grants, and network clients built for production.
    pub fn new(store: KeyStore, grants: Arc<dyn GrantStore>, clock: Clock) -> AppState {
        AppState::with_cimd(store, grants, clock, cimd::FetcherConfig::default())
    }

    /// Like [`AppState::new`], with a CIMD fetcher configuration (tests allow loopback).
    pub fn with_cimd(
        store: KeyStore,
        grants: Arc<dyn GrantStore>,
        clock: Clock,
        cimd: cimd::FetcherConfig,
    ) -> AppState {
        let upstream_http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let proxy_http = crate::proxy::client(false);
        let proxy_http2 = Arc::new(Http2Clients::new(
            || crate::proxy::client(true),
            crate::proxy::http2::STREAMS_PER_CONNECTION,
        ));

        AppState {
            store,
            grants,
            clock,
            cimd: Arc::new(cimd::CimdFetcher::new(cimd)),
            oidc: Arc::new(OidcClient::new(upstream_http)),
            proxy_http,
            proxy_http2,
            register_limit: Arc::new(register::RateLimit::default()),
            verified: Arc::new(verified::VerifiedTokens::new(verified::DEFAULT_CAPACITY)),
            metrics: Arc::default(),
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

/// The connector a request is for, and the base URL it was reached at.
pub struct Served {
    /// The connector.
    pub connector: Arc<Connector>,
    /// Its base URL as reached (in `dev`, the loopback name used).
    pub base: BaseUrl,
}

impl FromRequestParts<AppState> for Served {
    type Rejection = OAuthError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, OAuthError> {
        // The request target's authority, when it has one, is the host: HTTP/2's
        // `:authority`, or an absolute-form target, which wins over `Host` (RFC 9112 3.2.2).
        // Two `Host` headers, or none with no authority, are refused (RFC 9112 3.2).
        let mut hosts = parts.headers.get_all(header::HOST).iter();
        let host_header = hosts.next();
        if hosts.next().is_some() {
            return Err(OAuthError::invalid_request(
                "the request has more than one Host header",
            ));
        }
        let host = parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| host_header.and_then(|h| h.to_str().ok()));
        if host.is_none() && host_header.is_none() {
            return Err(OAuthError::invalid_request("the request names no host"));
        }

        // Routing by host, with a 404 for unknown hosts, is the DNS-rebinding defence
        // together with the Origin check on /mcp.
        match state.store.route(host, true) {
            Route::Serve(connector, base) => Ok(Served { connector, base }),
            Route::Unavailable(why) => Err(OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                format!("no issuer is advertised: {why}"),
            )),
            Route::Unknown => Err(OAuthError::new(
                ErrorCode::NotFound,
                "no MCP connector is served on this host",
            )),
        }
    }
}

/// A request body of at most [`MAX_BODY`] bytes. A body that is too large or cannot be
/// read is answered like every other error, as JSON; axum's own rejection is plain text.
pub struct RequestBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RequestBody {
    type Rejection = OAuthError;

    async fn from_request(request: Request, state: &S) -> Result<Self, OAuthError> {
        match Bytes::from_request(request, state).await {
            Ok(body) => Ok(RequestBody(body)),
            Err(rejection) => {
                let status = rejection.status();
                let description = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!("the request body is larger than {} KiB", MAX_BODY / 1024)
                } else {
                    "the request body could not be read".to_string()
                };
                Err(OAuthError::invalid_request(description).with_status(status))
            }
        }
    }
}

/// Answers 408 when an OAuth request, its body included, takes longer than the bound.
async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => OAuthError::invalid_request("the request took too long; send it again")
            .with_status(StatusCode::REQUEST_TIMEOUT)
            .into_response(),
    }
}

/// The client's address, when the server was started with connection info.
pub fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip())
}

/// The request headers MCP clients send that browsers must be allowed to send.
const MCP_HEADERS: [&str; 7] = [
    "authorization",
    "content-type",
    "accept",
    "mcp-protocol-version",
    "mcp-session-id",
    "mcp-method",
    "mcp-name",
];

fn cors() -> CorsLayer {
    let mut allow: Vec<HeaderName> = MCP_HEADERS
        .iter()
        .map(|h| HeaderName::from_static(h))
        .collect();
    allow.push(HeaderName::from_static("last-event-id"));

    // No cookies or credentials cross origins; /mcp checks the Origin itself before
    // forwarding anything, so mirroring the origin here only lets the browser read answers.
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(allow)
        .expose_headers([
            header::WWW_AUTHENTICATE,
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("mcp-protocol-version"),
        ])
        .max_age(Duration::from_secs(86_400))
}

/// The OAuth server and `/mcp`, all routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(discovery::protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(discovery::protected_resource),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::authorization_server),
        )
        .route(
            "/.well-known/openid-configuration",
            get(discovery::openid_configuration),
        )
        .route("/jwks.json", get(discovery::jwks))
        .route("/register", post(register::register))
        .route("/authorize", get(authorize::authorize))
        .route("/login", post(authorize::login))
        .route("/oauth/callback", get(callback::callback))
        .route("/token", post(token::token))
        .route("/revoke", post(revoke::revoke))
        // Only the routes above: /mcp is added after, so its event streams are not cut.
        .route_layer(middleware::from_fn_with_state(state.clone(), deadline))
        .route("/mcp", any(crate::proxy::mcp))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(cors())
        .with_state(state)
}

async fn not_found() -> OAuthError {
    OAuthError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> OAuthError {
    OAuthError::invalid_request("method not allowed on this route")
        .with_status(axum::http::StatusCode::METHOD_NOT_ALLOWED)
}
