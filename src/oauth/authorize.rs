//! `GET /authorize` (OAuth 2.1 4.1.1 with PKCE, RFC 8707 `resource`, RFC 9207 `iss`), the
//! built-in development login form, and the step every sign-in ends with: issuing our code.
//!
//! Order matters: the client and its redirect URI are validated first, and until both are
//! known good every error is shown here and never redirected (RFC 6749 4.1.2.1), so this
//! endpoint can never be turned into an open redirector.

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use super::client::{self, Client};
use super::redirect::match_registered;
use super::seal::{self, Purpose};
use super::{AppState, ErrorCode, OAuthError, RequestBody, Served};
use crate::keys::random_token;
use crate::upstream::{Identity, Upstream, check_dev_user};

/// How long a user may take at the upstream sign-in.
const LOGIN_TTL: SignedDuration = SignedDuration::from_mins(10);

/// The cookie binding a login to the browser that started it (RFC 9700 4.7.1).
pub const LOGIN_COOKIE_PREFIX: &str = "mcpc_login_";

/// A login in progress, sealed into the upstream `state` (or the login form).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingLogin {
    /// Client id.
    pub c: String,
    /// The redirect URI the client asked for (validated).
    pub r: String,
    /// The client's `state`, echoed back exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s: Option<String>,
    /// PKCE S256 challenge.
    pub cc: String,
    /// Granted scopes, space separated.
    pub sc: String,
    /// The resource.
    pub res: String,
    /// The base URL the login was started at.
    pub base: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Browser binding, also the cookie's value.
    pub b: String,
    /// Upstream OIDC nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// Upstream PKCE verifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<String>,
}

/// What an authorization code holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CodeGrant {
    /// Client id.
    pub c: String,
    /// Redirect URI.
    pub r: String,
    /// PKCE S256 challenge.
    pub cc: String,
    /// Granted scopes.
    pub sc: String,
    /// Resource.
    pub res: String,
    /// User name.
    pub u: String,
    /// Groups.
    pub g: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Code id, for single use.
    pub j: String,
}

/// Parses a query or form once, refusing repeated parameters (RFC 6749 3.1) and values
/// that are not UTF-8.
pub fn params(raw: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for piece in raw.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match piece.iter().position(|b| *b == b'=') {
            Some(eq) => (&piece[..eq], &piece[eq + 1..]),
            None => (piece, &b""[..]),
        };
        // Why: a lossy decoding would replace such bytes, and a `state` must come back
        // exactly as it was sent (RFC 6749 4.1.2); refusing is the honest answer.
        let k = form_decode(k).ok_or("a parameter name is not UTF-8")?;
        let v = form_decode(v).ok_or_else(|| format!("parameter {k} is not UTF-8"))?;
        if out.insert(k.clone(), v).is_some() {
            return Err(format!("parameter {k} is repeated"));
        }
    }
    Ok(out)
}

/// Decodes one `application/x-www-form-urlencoded` name or value; `None` when the bytes
/// are not UTF-8. A `%` not followed by two hex digits stays as it is, as in WHATWG URL.
fn form_decode(raw: &[u8]) -> Option<String> {
    // Most values (codes, tokens, client ids) have nothing to decode: a copy then.
    if !raw.iter().any(|b| matches!(b, b'%' | b'+')) {
        return String::from_utf8(raw.to_vec()).ok();
    }

    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        // The hex digits are read only after a `%`: this runs on every byte of every form.
        let escaped = match raw[i] {
            b'%' => hex(raw.get(i + 1)).zip(hex(raw.get(i + 2))),
            _ => None,
        };
        match (raw[i], escaped) {
            (_, Some((high, low))) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// An error shown to the user: the request cannot be trusted to say where to send them.
fn error_page(error: OAuthError) -> Response {
    tracing::warn!(
        error = error.code.as_str(),
        description = %error.description,
        "authorize refused",
    );
    error.into_response()
}

/// Where errors and the code go once the client and redirect URI are known good.
pub struct ClientRedirect {
    uri: String,
    state: Option<String>,
    iss: String,
}

impl ClientRedirect {
    /// The redirect of a pending login.
    pub fn of(pending: &PendingLogin) -> ClientRedirect {
        ClientRedirect {
            uri: pending.r.clone(),
            state: pending.s.clone(),
            iss: pending.base.clone(),
        }
    }

    fn to(&self, pairs: &[(&str, &str)]) -> Response {
        let Ok(mut url) = url::Url::parse(&self.uri) else {
            return error_page(OAuthError::invalid_request("the redirect URI is not a URL"));
        };
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
            if let Some(state) = &self.state {
                q.append_pair("state", state);
            }
            // RFC 9207: every answer carries iss, errors too, against mix-up attacks.
            q.append_pair("iss", &self.iss);
        }
        found(url.as_str())
    }

    /// Sends an error back to the client (RFC 6749 4.1.2.1).
    pub fn error(&self, code: ErrorCode, description: &str) -> Response {
        self.to(&[("error", code.as_str()), ("error_description", description)])
    }

    /// Sends the code back.
    pub fn code(&self, code: &str) -> Response {
        self.to(&[("code", code)])
    }
}

/// A 302 to `location`.
pub fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => {
            let mut r = StatusCode::FOUND.into_response();
            r.headers_mut().insert(header::LOCATION, value);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(_) => OAuthError::internal("unencodable redirect").into_response(),
    }
}

/// The scopes granted for a request: all of the connector's when none are named;
/// `offline_access` accepted and dropped (a refresh token is issued anyway).
pub fn grant_scopes(allowed: &[String], requested: Option<&str>) -> Result<String, OAuthError> {
    let asked: Vec<&str> = requested
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty() && *s != "offline_access")
        .collect();
    if asked.is_empty() {
        return Ok(allowed.join(" "));
    }

    let mut granted: Vec<&str> = Vec::new();
    for scope in asked {
        if !allowed.iter().any(|a| a == scope) {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                format!("unknown scope {scope}"),
            ));
        }
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    Ok(granted.join(" "))
}

/// The resource meant (RFC 8707 2): absent means the canonical resource.
pub fn check_resource(served: &Served, requested: Option<&str>) -> Result<String, OAuthError> {
    let canonical = served.base.resource();
    match requested {
        None | Some("") => Ok(canonical.to_string()),
        Some(r) if r == canonical || r.strip_suffix('/') == Some(canonical) => {
            Ok(canonical.to_string())
        }
        Some(r) => Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            format!("resource {r} is not served here; use {canonical}"),
        )),
    }
}

/// Chooses the redirect URI: the one asked for if registered (loopback on any port), or the
/// only registered one when none is asked for.
fn redirect_uri(client: &Client, asked: Option<&str>) -> Result<String, OAuthError> {
    let refused = |why: &str| OAuthError::invalid_request(why.to_string());
    match asked {
        Some(uri) => match_registered(&client.redirect_uris, uri)
            .map(|_| uri.to_string())
            .ok_or_else(|| refused("redirect_uri is not registered for this client")),
        None if client.redirect_uris.len() == 1 => Ok(client.redirect_uris[0].clone()),
        None => Err(refused("redirect_uri is required")),
    }
}

/// `GET /authorize`.
pub async fn authorize(
    State(state): State<AppState>,
    served: Served,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let p = match params(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(why) => return error_page(OAuthError::invalid_request(why)),
    };
    let get = |k: &str| p.get(k).map(String::as_str);

    let client_id = get("client_id").unwrap_or_default();
    let client = match client::resolve(&state, &served, client_id).await {
        Ok(c) => c,
        Err(e) => return error_page(e),
    };
    let redirect = match redirect_uri(&client, get("redirect_uri")) {
        Ok(uri) => ClientRedirect {
            uri,
            state: get("state").map(String::from),
            iss: served.base.as_str().to_string(),
        },
        Err(e) => return error_page(e),
    };

    // From here on the redirect URI is trusted, so errors go back to the client.
    if get("response_type") != Some("code") {
        return redirect.error(
            ErrorCode::UnsupportedResponseType,
            "response_type must be code",
        );
    }
    let challenge = match (get("code_challenge"), get("code_challenge_method")) {
        (Some(c), Some("S256")) if valid_challenge(c) => c.to_string(),
        (Some(_), Some("S256")) => {
            return redirect.error(ErrorCode::InvalidRequest, "code_challenge is malformed");
        }
        (Some(_), _) => {
            return redirect.error(
                ErrorCode::InvalidRequest,
                "code_challenge_method must be S256",
            );
        }
        (None, _) => {
            return redirect.error(ErrorCode::InvalidRequest, "PKCE code_challenge is required");
        }
    };
    let resource = match check_resource(&served, get("resource")) {
        Ok(r) => r,
        Err(e) => return redirect.error(e.code, &e.description),
    };
    let scope = match grant_scopes(&served.connector.settings.scopes, get("scope")) {
        Ok(s) => s,
        Err(e) => return redirect.error(e.code, &e.description),
    };

    let Ok(binding) = random_token::<16>() else {
        return redirect.error(
            ErrorCode::ServerError,
            "the server could not start the login",
        );
    };
    let pending = PendingLogin {
        c: client.id.clone(),
        r: redirect.uri.clone(),
        s: redirect.state.clone(),
        cc: challenge,
        sc: scope,
        res: resource,
        base: served.base.as_str().to_string(),
        exp: state.clock.unix() + LOGIN_TTL.as_secs(),
        b: binding,
        n: None,
        v: None,
    };

    // prompt, login_hint and any other parameter stay here: the upstream is asked for a
    // plain sign-in of our own confidential client, never an admin consent.
    match &served.connector.upstream {
        Upstream::AutoLogin(user) => {
            let identity = Identity {
                username: user.clone(),
                groups: Vec::new(),
            };
            complete_login(&state, &served, &pending, &identity)
        }
        Upstream::Proxy(proxy) => match proxy.identity(&headers) {
            Ok(identity) => complete_login(&state, &served, &pending, &identity),
            Err(e) => {
                tracing::warn!(
                    connector = %served.connector.id,
                    error = %e,
                    "proxy sign-in refused",
                );
                redirect.error(ErrorCode::AccessDenied, &e.to_string())
            }
        },
        // Development users exist for loopback base URLs only (SPEC 5).
        Upstream::DevUsers(_) if !served.base.is_loopback() => redirect.error(
            ErrorCode::AccessDenied,
            "development sign-in is loopback only",
        ),
        Upstream::DevUsers(_) => login_form(&served, &pending, None),
        Upstream::Oidc(up) => start_oidc(&state, &served, pending, up, &redirect).await,
    }
}

/// A PKCE S256 challenge is 43 base64url characters (RFC 7636 4.2).
fn valid_challenge(c: &str) -> bool {
    c.len() == 43 && B64.decode(c).is_ok_and(|b| b.len() == 32)
}

async fn start_oidc(
    state: &AppState,
    served: &Served,
    mut pending: PendingLogin,
    up: &crate::upstream::OidcUpstream,
    redirect: &ClientRedirect,
) -> Response {
    let (Ok(nonce), Ok(verifier)) = (random_token::<16>(), random_token::<32>()) else {
        return redirect.error(
            ErrorCode::ServerError,
            "the server could not start the login",
        );
    };
    pending.n = Some(nonce.clone());
    pending.v = Some(verifier.clone());

    let sealed = match seal::seal(
        &served.connector.keys,
        Purpose::Pending,
        &served.connector.id,
        &pending,
    ) {
        Ok(s) => s,
        Err(e) => return OAuthError::internal(e).into_response(),
    };
    let callback = served.base.join("/oauth/callback");
    match state
        .oidc
        .authorize_url(up, &callback, &sealed, &nonce, &verifier)
        .await
    {
        Ok(url) => with_login_cookie(found(url.as_str()), served, &pending),
        Err(e) => {
            tracing::warn!(
                connector = %served.connector.id,
                error = %e,
                "upstream sign-in unavailable",
            );
            redirect.error(
                ErrorCode::TemporarilyUnavailable,
                "the sign-in provider is unavailable",
            )
        }
    }
}

/// Adds the cookie that binds the login to this browser.
fn with_login_cookie(mut response: Response, served: &Served, pending: &PendingLogin) -> Response {
    let secure = if served.base.as_str().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{LOGIN_COOKIE_PREFIX}{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        cookie_suffix(&pending.b),
        pending.b,
        LOGIN_TTL.as_secs()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn cookie_suffix(binding: &str) -> String {
    binding
        .chars()
        .take(8)
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// Whether the browser presents the cookie of this login.
pub fn cookie_matches(headers: &HeaderMap, pending: &PendingLogin) -> bool {
    let name = format!("{LOGIN_COOKIE_PREFIX}{}", cookie_suffix(&pending.b));
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(k, v)| {
            k == name
                && aws_lc_rs::constant_time::verify_slices_are_equal(
                    v.as_bytes(),
                    pending.b.as_bytes(),
                )
                .is_ok()
        })
}

/// Issues our code for a signed-in user and sends it to the client.
pub fn complete_login(
    state: &AppState,
    served: &Served,
    pending: &PendingLogin,
    identity: &Identity,
) -> Response {
    let redirect = ClientRedirect::of(pending);
    let Ok(code_id) = random_token::<16>() else {
        return redirect.error(ErrorCode::ServerError, "the server could not issue a code");
    };
    let grant = CodeGrant {
        c: pending.c.clone(),
        r: pending.r.clone(),
        cc: pending.cc.clone(),
        sc: pending.sc.clone(),
        res: pending.res.clone(),
        u: identity.username.clone(),
        g: identity.groups.clone(),
        exp: state.clock.unix() + served.connector.settings.ttl.code.as_secs(),
        j: code_id,
    };

    match seal::seal(
        &served.connector.keys,
        Purpose::Code,
        &served.connector.id,
        &grant,
    ) {
        Ok(code) => {
            tracing::info!(
                connector = %served.connector.id,
                user = %identity.username,
                "user signed in",
            );
            redirect.code(&code)
        }
        Err(e) => OAuthError::internal(e).into_response(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn login_form(served: &Served, pending: &PendingLogin, problem: Option<&str>) -> Response {
    let sealed = match seal::seal(
        &served.connector.keys,
        Purpose::Pending,
        &served.connector.id,
        pending,
    ) {
        Ok(s) => s,
        Err(e) => return OAuthError::internal(e).into_response(),
    };
    let problem = problem
        .map(|p| format!("<p role=\"alert\">{}</p>", escape(p)))
        .unwrap_or_default();
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign in</title></head>\
         <body><h1>Sign in to {name}</h1>{problem}\
         <form method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"request\" value=\"{sealed}\">\
         <label>User <input name=\"username\" autocomplete=\"username\"></label>\
         <label>Password <input type=\"password\" name=\"password\"></label>\
         <button type=\"submit\">Sign in</button></form>\
         <p>Development sign-in: this form exists only on a loopback address.</p></body></html>",
        name = escape(&served.connector.settings.resource_name),
    );

    let status = if problem.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    let mut response = (status, Html(page)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; form-action 'self'; frame-ancestors 'none'"),
    );
    response
}

/// `POST /login`: the development login form.
pub async fn login(
    State(state): State<AppState>,
    served: Served,
    RequestBody(body): RequestBody,
) -> Response {
    let Upstream::DevUsers(users) = &served.connector.upstream else {
        return OAuthError::new(ErrorCode::NotFound, "no login form on this connector")
            .into_response();
    };
    // Development users exist for loopback base URLs only (SPEC 5).
    if !served.base.is_loopback() {
        return OAuthError::new(
            ErrorCode::AccessDenied,
            "development sign-in is loopback only",
        )
        .into_response();
    }

    let Ok(form) = params(&body) else {
        return OAuthError::invalid_request("malformed form").into_response();
    };
    let sealed = form.get("request").map(String::as_str).unwrap_or_default();
    let opened = seal::open::<PendingLogin>(
        &served.connector.keys,
        Purpose::Pending,
        &served.connector.id,
        sealed,
    );
    let Some((pending, _)) = opened else {
        return OAuthError::invalid_request("the login request is invalid or expired")
            .into_response();
    };
    if pending.exp <= state.clock.unix() {
        return OAuthError::invalid_request("the login took too long; start again").into_response();
    }

    let username = form.get("username").map(String::as_str).unwrap_or_default();
    let password = form.get("password").map(String::as_str).unwrap_or_default();
    match check_dev_user(users, username, password) {
        Some(identity) => complete_login(&state, &served, &pending, &identity),
        None => login_form(&served, &pending, Some("Wrong user name or password.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused() {
        assert!(params(b"a=1&b=2").is_ok());
        assert!(params(b"a=1&a=2").is_err());
    }

    #[test]
    fn parameters_decode_as_forms_do_and_must_be_utf8() {
        let p = params(b"a=x+y%2B%zz%4&b&&c=%E2%9C%93").unwrap();

        assert_eq!(p["a"], "x y+%zz%4");
        assert_eq!(p["b"], "");
        assert_eq!(p["c"], "\u{2713}");
        assert!(params(b"state=%FF%FE").is_err());
        assert!(params(b"%FF=x").is_err());

        // Values with nothing to decode are copied, and must be UTF-8 too.
        let plain = params(b"code=eyJhbGciOi_-.x&client_id=abc").unwrap();
        assert_eq!(plain["code"], "eyJhbGciOi_-.x");
        assert!(params(b"state=\xff\xfe").is_err());
        assert!(params(b"\xff=x").is_err());
    }

    #[test]
    fn offline_access_is_accepted_and_not_granted() {
        let allowed = vec!["mcp".to_string(), "read".to_string()];

        assert_eq!(grant_scopes(&allowed, None).unwrap(), "mcp read");
        assert_eq!(
            grant_scopes(&allowed, Some("mcp offline_access")).unwrap(),
            "mcp"
        );
        assert_eq!(
            grant_scopes(&allowed, Some("offline_access")).unwrap(),
            "mcp read"
        );
        assert_eq!(
            grant_scopes(&allowed, Some("admin")).unwrap_err().code,
            ErrorCode::InvalidScope
        );
    }

    #[test]
    fn only_well_formed_s256_challenges_pass() {
        assert!(valid_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!valid_challenge("short"));
        assert!(!valid_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c!"
        ));
    }
}
