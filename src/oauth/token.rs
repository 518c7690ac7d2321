//! `POST /token`: the `authorization_code` and `refresh_token` grants (OAuth 2.1 4.1.3 and
//! 4.3), with rotating refresh tokens whose reuse revokes the grant (RFC 9700 4.14.2).

use std::collections::HashMap;

use aws_lc_rs::digest;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::access_token::{AccessClaims, mint};
use super::authorize::{CodeGrant, check_resource, params};
use super::client::{self, Client};
use super::seal::{self, Purpose};
use super::{AppState, ErrorCode, OAuthError, RequestBody, Served};
use crate::grants::Refresh;
use crate::keys::random_token;

/// What a refresh token holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefreshGrant {
    /// Grant id.
    pub g: String,
    /// Generation within the grant.
    pub n: u64,
    /// Client id.
    pub c: String,
    /// User name.
    pub u: String,
    /// Groups.
    pub gr: Vec<String>,
    /// Granted scopes.
    pub sc: String,
    /// Resource.
    pub res: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// `POST /token`.
pub async fn token(
    State(state): State<AppState>,
    served: Served,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Result<Response, OAuthError> {
    let form = params(&body).map_err(OAuthError::invalid_request)?;
    // Only known grant types become metric labels, so clients cannot grow the series.
    let grant_type = form
        .get("grant_type")
        .map(String::as_str)
        .filter(|g| matches!(*g, "authorization_code" | "refresh_token"))
        .unwrap_or("other");

    let answer = grant(&state, &served, &headers, &form).await;
    let outcome = match &answer {
        Ok(_) => "issued",
        Err(e) => {
            tracing::warn!(
                connector = %served.connector.id,
                grant_type,
                error = e.code.as_str(),
                description = %e.description,
                "token request refused"
            );
            e.code.as_str()
        }
    };
    state.metrics.token(grant_type, outcome);
    answer
}

async fn grant(
    state: &AppState,
    served: &Served,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let (state, served) = (state.clone(), served);
    let get = |k: &str| form.get(k).map(String::as_str);

    let creds = client::credentials(headers, get("client_id"), get("client_secret"))?;
    let client = client::authenticate(&state, served, &creds).await?;

    match get("grant_type") {
        Some("authorization_code") => authorization_code(&state, served, &client, form).await,
        Some("refresh_token") => refresh_token(&state, served, &client, form).await,
        Some(other) => Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            format!("grant_type {other} is not supported"),
        )),
        None => Err(OAuthError::invalid_request("grant_type is required")),
    }
}

fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    // RFC 7636 4.1: 43 to 128 unreserved characters.
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = B64.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));

    well_formed
        && aws_lc_rs::constant_time::verify_slices_are_equal(
            computed.as_bytes(),
            challenge.as_bytes(),
        )
        .is_ok()
}

async fn authorization_code(
    state: &AppState,
    served: &Served,
    client: &Client,
    form: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let get = |k: &str| form.get(k).map(String::as_str);
    let connector = &served.connector;
    let now = state.clock.unix();

    let sealed = get("code").ok_or_else(|| OAuthError::invalid_request("code is required"))?;
    let (code, _) = seal::open::<CodeGrant>(&connector.keys, Purpose::Code, &connector.id, sealed)
        .ok_or_else(|| OAuthError::invalid_grant("the code is invalid"))?;

    if code.exp <= now {
        return Err(OAuthError::invalid_grant("the code has expired"));
    }
    if code.c != client.id {
        return Err(OAuthError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    // OAuth 2.1 4.1.3: the redirect URI must be the one the code was sent to.
    if get("redirect_uri").is_some_and(|r| r != code.r) {
        return Err(OAuthError::invalid_grant(
            "redirect_uri differs from the authorization request",
        ));
    }
    let verifier = get("code_verifier")
        .ok_or_else(|| OAuthError::invalid_request("code_verifier is required (PKCE)"))?;
    if !pkce_matches(verifier, &code.cc) {
        return Err(OAuthError::invalid_grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    let resource = check_resource(served, get("resource"))?;
    if resource != code.res {
        return Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            "resource differs from the login",
        ));
    }

    let expires = jiff::Timestamp::from_second(code.exp).unwrap_or_else(|_| state.clock.now());
    let first = state
        .grants
        .redeem_code(&connector.id, &code.j, expires)
        .await
        .map_err(|e| OAuthError::new(ErrorCode::TemporarilyUnavailable, e.to_string()))?;
    if !first {
        // OAuth 2.1 4.1.3: a replayed code revokes what the first redemption issued. The
        // grant is named after the code, so this needs no lookup.
        let until = now + connector.settings.ttl.refresh.as_secs();
        let until = jiff::Timestamp::from_second(until).unwrap_or_else(|_| state.clock.now());
        if let Err(e) = state.grants.revoke(&connector.id, &code.j, until).await {
            tracing::warn!(
                connector = %connector.id,
                error = %e,
                "could not revoke a replayed grant",
            );
        }
        tracing::warn!(connector = %connector.id, user = %code.u, "code replayed; grant revoked");
        return Err(OAuthError::invalid_grant("the code was already used"));
    }

    let grant = RefreshGrant {
        g: code.j.clone(),
        n: 0,
        c: client.id.clone(),
        u: code.u,
        gr: code.g,
        sc: code.sc.clone(),
        res: code.res,
        exp: now + connector.settings.ttl.refresh.as_secs(),
    };
    tracing::info!(connector = %connector.id, user = %grant.u, "tokens issued");
    issue(state, served, &grant, &code.sc)
}

async fn refresh_token(
    state: &AppState,
    served: &Served,
    client: &Client,
    form: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let get = |k: &str| form.get(k).map(String::as_str);
    let connector = &served.connector;
    let now = state.clock.now();

    let sealed = get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
    let (old, _) =
        seal::open::<RefreshGrant>(&connector.keys, Purpose::Refresh, &connector.id, sealed)
            .ok_or_else(|| OAuthError::invalid_grant("the refresh token is invalid"))?;

    if old.exp <= now.as_second() {
        return Err(OAuthError::invalid_grant("the refresh token has expired"));
    }
    if old.c != client.id {
        return Err(OAuthError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if check_resource(served, get("resource"))? != old.res {
        return Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            "resource differs from the grant",
        ));
    }
    let scope = narrowed_scope(&old.sc, get("scope"))?;

    let exp = now.as_second() + connector.settings.ttl.refresh.as_secs();
    let expires = jiff::Timestamp::from_second(exp).unwrap_or(now);
    let outcome = state
        .grants
        .refresh(&connector.id, &old.g, old.n, now, expires)
        .await
        .map_err(|e| OAuthError::new(ErrorCode::TemporarilyUnavailable, e.to_string()))?;

    let generation = match outcome {
        Refresh::Rotated(n) | Refresh::Raced(n) => n,
        Refresh::Replayed => {
            tracing::warn!(
                connector = %connector.id,
                user = %old.u,
                "refresh token replayed; grant revoked",
            );
            return Err(OAuthError::invalid_grant(
                "the refresh token was already used",
            ));
        }
        Refresh::Revoked => return Err(OAuthError::invalid_grant("the grant was revoked")),
    };

    let grant = RefreshGrant {
        n: generation,
        exp,
        ..old
    };
    issue(state, served, &grant, &scope)
}

/// The scope of a refreshed access token: the grant's, or a subset of it (RFC 6749 6).
/// `offline_access` may be asked again and is ignored.
fn narrowed_scope(granted: &str, asked: Option<&str>) -> Result<String, OAuthError> {
    let granted_list: Vec<&str> = granted.split(' ').filter(|s| !s.is_empty()).collect();
    let asked: Vec<&str> = asked
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty() && *s != "offline_access")
        .collect();
    if asked.is_empty() {
        return Ok(granted.to_string());
    }

    for scope in &asked {
        if !granted_list.contains(scope) {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                format!("scope {scope} was not granted"),
            ));
        }
    }
    Ok(asked.join(" "))
}

fn issue(
    state: &AppState,
    served: &Served,
    grant: &RefreshGrant,
    scope: &str,
) -> Result<Response, OAuthError> {
    let connector = &served.connector;
    let now = state.clock.unix();
    let ttl = connector.settings.ttl.access.as_secs();

    let claims = AccessClaims {
        iss: served.base.as_str().to_string(),
        aud: grant.res.clone(),
        sub: grant.u.clone(),
        exp: now + ttl,
        iat: now,
        jti: random_token::<12>().map_err(OAuthError::internal)?,
        client_id: grant.c.clone(),
        scope: scope.to_string(),
        preferred_username: grant.u.clone(),
        groups: grant.gr.clone(),
        gid: grant.g.clone(),
    };
    let access = mint(&connector.keys, &claims).map_err(OAuthError::internal)?;
    let refresh = seal::seal(&connector.keys, Purpose::Refresh, &connector.id, grant)
        .map_err(OAuthError::internal)?;

    let body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl,
        "refresh_token": refresh,
        "scope": scope,
    });
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_checks_the_rfc_7636_example() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX",
            challenge
        ));
        assert!(!pkce_matches("short", challenge));
    }

    #[test]
    fn a_refresh_may_narrow_but_not_widen() {
        assert_eq!(narrowed_scope("mcp read", None).unwrap(), "mcp read");
        assert_eq!(
            narrowed_scope("mcp read", Some("mcp offline_access")).unwrap(),
            "mcp"
        );
        assert!(narrowed_scope("mcp", Some("admin")).is_err());
    }
}
