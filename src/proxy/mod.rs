//! `/mcp`: the protected resource. A request with a valid bearer token is proxied to the
//! connector's MCP server, streaming both ways; anything else gets the RFC 6750 challenge
//! that starts a client's login (RFC 9728 5.1).

pub mod http2;
pub mod local;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::oauth::access_token::{AccessClaims, TokenProblem, verify};
use crate::oauth::{AppState, ErrorCode, OAuthError, Served};

/// Largest request body `/mcp` passes on; JSON-RPC messages are far smaller.
pub const MAX_MCP_BODY: usize = 16 * 1024 * 1024;

/// Headers that carry the verified identity to the MCP server. Any the client sends are
/// dropped, so the MCP server can trust them.
pub const USER_HEADER: &str = "x-mcp-connector-user";
/// Groups of the verified user, comma separated.
pub const GROUPS_HEADER: &str = "x-mcp-connector-groups";
/// The client the token was issued to.
pub const CLIENT_HEADER: &str = "x-mcp-connector-client-id";
/// The granted scopes.
pub const SCOPE_HEADER: &str = "x-mcp-connector-scope";

/// The four identity headers, in the order of [`Caller`]'s values.
const IDENTITY: [HeaderName; 4] = [
    HeaderName::from_static(USER_HEADER),
    HeaderName::from_static(GROUPS_HEADER),
    HeaderName::from_static(CLIENT_HEADER),
    HeaderName::from_static(SCOPE_HEADER),
];

/// Identity headers other proxies use. A client could set them to impersonate someone to an
/// MCP server that trusts one of them, so they never pass.
const IDENTITY_LOOKALIKES: [&str; 6] = [
    "x-auth-request-",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-remote-",
];

/// Hop-by-hop headers (RFC 9110 7.6.1), never forwarded in either direction. As names, so
/// that looking one up or comparing it parses nothing.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn challenge(served: &Served, problem: Option<TokenProblem>) -> OAuthError {
    let metadata = served
        .base
        .join("/.well-known/oauth-protected-resource/mcp");
    let scope = served.connector.settings.scopes.join(" ");
    let mut value = format!("Bearer resource_metadata=\"{metadata}\", scope=\"{scope}\"");

    let description = match problem {
        Some(p) => {
            value.push_str(&format!(
                ", error=\"invalid_token\", error_description=\"{p}\""
            ));
            p.to_string()
        }
        None => "a bearer token is required".to_string(),
    };
    OAuthError::new(ErrorCode::InvalidToken, description).with_challenge(value)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The browser origins `/mcp` serves: the base URL's own, loopback, and the spec's list.
fn origin_allowed(served: &Served, origin: &str) -> bool {
    if origin == served.base.as_str() {
        return true;
    }
    if served
        .connector
        .settings
        .allowed_origins
        .iter()
        .any(|o| o.trim_end_matches('/') == origin)
    {
        return true;
    }
    url::Url::parse(origin)
        .ok()
        .and_then(|u| u.host().map(|h| crate::base_url::is_loopback(&h)))
        .unwrap_or(false)
}

/// The client `/mcp` talks to MCP servers with: no redirects, no overall timeout (event
/// streams are long-lived), HTTP/2 from the first byte if `http2`.
pub fn client(http2: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true);
    let builder = if http2 {
        builder
            .http2_prior_knowledge()
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_while_idle(true)
    } else {
        builder
    };
    builder.build().unwrap_or_default()
}

/// A caller whose token was verified: its claims, and the identity headers made of them,
/// once for all the calls the token makes.
pub struct Caller {
    /// The token's claims.
    pub claims: AccessClaims,
    /// The values of [`USER_HEADER`], [`GROUPS_HEADER`], [`CLIENT_HEADER`] and
    /// [`SCOPE_HEADER`]; or the name of the first that cannot be a header value.
    identity: Result<[HeaderValue; 4], &'static str>,
}

impl Caller {
    /// The caller with these claims.
    pub fn new(claims: AccessClaims) -> Caller {
        Caller {
            identity: identity(&claims),
            claims,
        }
    }
}

/// The identity header values of `claims`, or the name of the first that cannot be one.
fn identity(claims: &AccessClaims) -> Result<[HeaderValue; 4], &'static str> {
    let value = |name: &'static str, value: &str| HeaderValue::from_str(value).map_err(|_| name);
    Ok([
        value(USER_HEADER, &claims.sub)?,
        value(GROUPS_HEADER, &claims.groups.join(","))?,
        value(CLIENT_HEADER, &claims.client_id)?,
        value(SCOPE_HEADER, &claims.scope)?,
    ])
}

impl AsRef<AccessClaims> for Caller {
    fn as_ref(&self) -> &AccessClaims {
        &self.claims
    }
}

/// Checks the request's token; the caller when it is good. A token verified before with
/// the connector's current keys is taken from the cache (`oauth::verified`), with its
/// expiry, issuer and audience checked again; revocation is asked on every request.
pub fn authenticate(
    state: &AppState,
    served: &Served,
    headers: &HeaderMap,
) -> Result<Arc<Caller>, OAuthError> {
    let token = bearer(headers).ok_or_else(|| challenge(served, None))?;
    let keys = &served.connector.keys;
    let (issuer, audience) = (served.base.as_str(), served.base.resource());
    let now = state.clock.unix();

    let caller = match state.verified.get(token, keys, issuer, audience, now) {
        Some(caller) => caller,
        None => {
            let claims = verify(keys, token, issuer, audience, Some(now))
                .map_err(|p| challenge(served, Some(p)))?;
            let caller = Arc::new(Caller::new(claims));
            state.verified.insert(token, keys, caller.clone());
            caller
        }
    };
    if state
        .grants
        .is_revoked(&served.connector.id, &caller.claims.gid)
    {
        return Err(challenge(served, Some(TokenProblem::Revoked)));
    }
    Ok(caller)
}

/// `/mcp`, every method.
pub async fn mcp(State(state): State<AppState>, served: Served, request: Request) -> Response {
    let method = request.method().clone();
    if !matches!(
        method,
        Method::GET | Method::HEAD | Method::POST | Method::DELETE
    ) {
        return OAuthError::invalid_request("method not allowed on /mcp")
            .with_status(StatusCode::METHOD_NOT_ALLOWED)
            .into_response();
    }

    // DNS rebinding (MCP security best practices): the MCP server behind us no longer sees
    // the browser's host, so the Origin is checked here.
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let allowed = origin.to_str().is_ok_and(|o| origin_allowed(&served, o));
        if !allowed {
            return OAuthError::new(
                ErrorCode::InvalidOrigin,
                "this browser origin may not call /mcp",
            )
            .into_response();
        }
    }

    let started = std::time::Instant::now();
    let caller = match authenticate(&state, &served, request.headers()) {
        Ok(c) => c,
        Err(e) => {
            let labels = crate::metrics::OutcomeLabels {
                outcome: e.code.as_str().into(),
            };
            state.metrics.mcp_refused.get_or_create(&labels).inc();
            return e.into_response();
        }
    };
    if let Some(refused) = too_large(request.headers()) {
        return refused.into_response();
    }
    let response = forward(&state, &served, &caller, request).await;
    state
        .metrics
        .mcp_latency
        .observe(started.elapsed().as_secs_f64());
    response
}

/// A request whose `Content-Length` is over [`MAX_MCP_BODY`] is refused before anything is
/// sent on; a body sent without one is cut at that length instead, which fails the
/// exchange with the MCP server and is answered the same (see `forward`).
fn too_large(headers: &HeaderMap) -> Option<OAuthError> {
    let length: u64 = headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    (length > MAX_MCP_BODY as u64).then(body_too_large)
}

fn body_too_large() -> OAuthError {
    let description = format!(
        "the request body is larger than {} MiB",
        MAX_MCP_BODY / (1024 * 1024)
    );
    OAuthError::invalid_request(description).with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

/// Why an exchange with the MCP server failed, through either client.
struct SendError(Box<dyn std::error::Error + Send + Sync>);

impl<E: std::error::Error + Send + Sync + 'static> From<E> for SendError {
    fn from(e: E) -> SendError {
        SendError(Box::new(e))
    }
}

impl SendError {
    /// The errors and their causes, outermost first.
    fn causes(&self) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
        let first: &(dyn std::error::Error + 'static) = &*self.0;
        std::iter::successors(Some(first), |e| e.source())
    }

    /// Whether the request body was cut at [`MAX_MCP_BODY`].
    fn body_too_large(&self) -> bool {
        self.causes()
            .any(|e| e.is::<http_body_util::LengthLimitError>())
    }

    /// Every cause, joined, for the log.
    fn chain(&self) -> String {
        let causes: Vec<String> = self.causes().map(ToString::to_string).collect();
        causes.join(": ")
    }
}

/// The names a `Connection` header lists (RFC 9110 7.6.1), lowercased: hop-by-hop too.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect()
}

/// The headers the MCP server gets: the client's, less the hop-by-hop ones, its credentials,
/// anything that looks like identity, and the headers of the connector's own authenticating
/// proxy (`private`: its shared secret, and the user and groups it sets); then the verified
/// identity. An identity that cannot be written as a header value is refused rather than
/// left out, since the MCP server would then see a request with no user.
fn forwarded_headers(
    incoming: &HeaderMap,
    caller: &Caller,
    private: &[Option<&str>],
) -> Result<HeaderMap, OAuthError> {
    let listed = connection_listed(incoming);

    let mut out = HeaderMap::with_capacity(incoming.len() + 4);
    for (name, value) in incoming {
        let n = name.as_str();
        let dropped = HOP_BY_HOP.contains(name)
            || [header::AUTHORIZATION, header::HOST, header::COOKIE].contains(name)
            || listed.iter().any(|c| c == n)
            || n.starts_with("x-mcp-connector-")
            || IDENTITY_LOOKALIKES.iter().any(|p| n.starts_with(p))
            || private.iter().flatten().any(|p| p.eq_ignore_ascii_case(n));
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }

    let identity = caller.identity.as_ref().map_err(|name| {
        OAuthError::new(
            ErrorCode::AccessDenied,
            format!("the token's identity cannot be passed to the MCP server in {name}"),
        )
        .with_status(StatusCode::FORBIDDEN)
    })?;
    for (name, value) in IDENTITY.into_iter().zip(identity) {
        out.insert(name, value.clone());
    }
    Ok(out)
}

/// Removes the hop-by-hop headers of an answer, those its `Connection` lists included.
/// Most answers have none but the framing, so the names are looked up one by one (eight
/// hash lookups) only when a pass over the few headers there are finds one.
fn drop_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|n| HOP_BY_HOP.contains(n)) {
        return;
    }
    for name in connection_listed(headers) {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The request headers of the connector's authenticating proxy, which stay with us. Asked
/// on every `/mcp` call, so they come back in an array rather than a new `Vec`.
fn proxy_headers(served: &Served) -> [Option<&str>; 3] {
    match &served.connector.upstream {
        crate::upstream::Upstream::Proxy(p) => [
            Some(p.user_header.as_str()),
            Some(p.secret_header.as_str()),
            p.groups_header.as_deref(),
        ],
        _ => [None; 3],
    }
}

async fn forward(state: &AppState, served: &Served, caller: &Caller, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = Body::new(http_body_util::Limited::new(body, MAX_MCP_BODY));
    let server = &served.connector.settings.mcp_server;
    let headers = match forwarded_headers(&parts.headers, caller, &proxy_headers(served)) {
        Ok(h) => h,
        Err(refused) => {
            tracing::warn!(
                connector = %served.connector.id,
                description = %refused.description,
                "MCP request refused"
            );
            return refused.into_response();
        }
    };
    let local = parts
        .extensions
        .get::<local::Upstreams>()
        .filter(|_| parts.version <= http::Version::HTTP_11)
        .filter(|_| !server.http2 && server.url.scheme() == "http");

    // The body streams through as it arrives; nothing is collected first. The answer's body
    // passes through frame by frame, with its length and its end as the MCP server gave
    // them (so that the end goes out with the last event); when the client goes away the
    // body is dropped, which closes the upstream request too.
    let answered = match local {
        Some(upstreams) => {
            let mut outgoing = http::Request::new(body);
            *outgoing.method_mut() = parts.method;
            *outgoing.uri_mut() = server.uri.clone();
            *outgoing.headers_mut() = headers;
            upstreams
                .send(outgoing)
                .await
                .map(|r| r.map(Body::new))
                .map_err(SendError::from)
        }
        None => send_shared(state, server, parts.method, headers, body).await,
    };
    let (upstream, body) = match answered {
        Ok(r) => r.into_parts(),
        Err(e) if e.body_too_large() => return body_too_large().into_response(),
        Err(e) => {
            let error = e.chain();
            tracing::warn!(connector = %served.connector.id, %error, "MCP server unreachable");
            return OAuthError::new(ErrorCode::BadGateway, "the MCP server is unreachable")
                .into_response();
        }
    };

    let mut response = Response::new(body);
    *response.status_mut() = upstream.status;
    *response.headers_mut() = upstream.headers;
    let h = response.headers_mut();
    drop_hop_by_hop(h);
    // An ingress in front (nginx) would otherwise buffer the event stream.
    let streaming = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if streaming {
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    response
}

/// Sends a request through the shared clients: HTTP/2, `https://`, or a request that came
/// in without a client connection of ours (a router called in process). Over HTTP/2 the
/// answer's body holds its stream's place on the connection until it ends or is dropped.
async fn send_shared(
    state: &AppState,
    server: &crate::settings::McpServer,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<http::Response<Body>, SendError> {
    let (http, stream) = if server.http2 {
        let (client, stream) = state.proxy_http2.checkout();
        (client, Some(stream))
    } else {
        (state.proxy_http.clone(), None)
    };

    let mut outgoing = http.request(method, server.url.clone()).headers(headers);
    if !body.is_end_stream() {
        outgoing = outgoing.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let upstream = outgoing.send().await.map_err(SendError::from)?;

    let (upstream, body) = http::Response::<reqwest::Body>::from(upstream).into_parts();
    let body = match stream {
        Some(stream) => Body::new(http2::Counted::new(Body::new(body), stream)),
        None => Body::new(body),
    };
    Ok(http::Response::from_parts(upstream, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(sub: &str) -> Caller {
        Caller::new(AccessClaims {
            iss: "https://kloudfuse.example.com".into(),
            aud: "https://kloudfuse.example.com/mcp".into(),
            sub: sub.into(),
            exp: 0,
            iat: 0,
            jti: "j".into(),
            client_id: "c".into(),
            scope: "mcp".into(),
            preferred_username: sub.into(),
            groups: vec!["sre".into()],
            gid: "g".into(),
        })
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn the_authenticating_proxys_own_headers_stay_here() {
        let incoming = headers(&[
            ("x-auth-proxy-secret", "s3cret"),
            ("x-user", "mallory"),
            ("mcp-session-id", "abc"),
        ]);

        let out = forwarded_headers(
            &incoming,
            &caller("alice"),
            &[Some("X-Auth-Proxy-Secret"), Some("X-User")],
        )
        .unwrap();

        assert!(!out.contains_key("x-auth-proxy-secret"));
        assert!(!out.contains_key("x-user"));
        assert_eq!(out["mcp-session-id"], "abc");
        assert_eq!(out[USER_HEADER], "alice");
    }

    #[test]
    fn an_identity_that_cannot_be_a_header_is_refused_not_left_out() {
        let refused = forwarded_headers(&HeaderMap::new(), &caller("eve\u{1}"), &[]).unwrap_err();

        assert_eq!(refused.code, ErrorCode::AccessDenied);
        assert_eq!(refused.status, Some(StatusCode::FORBIDDEN));
        assert!(
            refused.description.contains(USER_HEADER),
            "{}",
            refused.description
        );
    }

    #[test]
    fn an_answers_hop_by_hop_headers_go_with_those_its_connection_names() {
        let mut answer = headers(&[
            ("connection", "x-upstream-secret, keep-alive"),
            ("x-upstream-secret", "leak"),
            ("keep-alive", "timeout=5"),
            ("content-type", "text/event-stream"),
        ]);

        drop_hop_by_hop(&mut answer);

        let names: Vec<&str> = answer.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type"]);
    }
}
