//! `POST /register`: dynamic client registration (RFC 7591). The registration is sealed
//! into the `client_id` it returns, so an unauthenticated request writes nothing anywhere.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::client::{AuthMethod, Registration, client_secret};
use super::seal::{self, Purpose};
use super::{AppState, ErrorCode, OAuthError, RequestBody, Served, peer_ip};

/// Most redirect URIs one registration may list.
const MAX_REDIRECT_URIS: usize = 10;
/// Longest redirect URI accepted.
const MAX_URI_LEN: usize = 2048;
/// Longest client name kept.
const MAX_NAME_LEN: usize = 200;

/// Registrations allowed per client address and window.
const REGISTRATIONS_PER_WINDOW: u32 = 30;
const WINDOW: Duration = Duration::from_secs(60);

/// A fixed-window limit of registrations per client address.
#[derive(Default)]
pub struct RateLimit {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimit {
    /// Counts one registration from `ip`; `false` when over the limit.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut windows = match self.windows.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        if windows.len() > 10_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }

        let entry = windows.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= REGISTRATIONS_PER_WINDOW
    }
}

/// Client metadata as sent (RFC 7591 2). Unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
struct Metadata {
    redirect_uris: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    client_name: Option<String>,
    scope: Option<String>,
}

fn bad_metadata(description: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClientMetadata, description)
}

fn auth_method(raw: Option<&str>) -> Result<AuthMethod, OAuthError> {
    // RFC 7591 2: the default is client_secret_basic.
    match raw.unwrap_or("client_secret_basic") {
        "none" => Ok(AuthMethod::None),
        "client_secret_basic" => Ok(AuthMethod::ClientSecretBasic),
        "client_secret_post" => Ok(AuthMethod::ClientSecretPost),
        other => Err(bad_metadata(format!(
            "token_endpoint_auth_method {other} is not supported; use none, \
             client_secret_basic or client_secret_post"
        ))),
    }
}

fn check_list(list: &Option<Vec<String>>, field: &str, allowed: &[&str]) -> Result<(), OAuthError> {
    for value in list.iter().flatten() {
        if !allowed.contains(&value.as_str()) {
            return Err(bad_metadata(format!("{field} {value} is not supported")));
        }
    }
    Ok(())
}

fn validate(served: &Served, meta: &Metadata) -> Result<Vec<String>, OAuthError> {
    let uris = meta.redirect_uris.clone().unwrap_or_default();
    if uris.is_empty() {
        return Err(OAuthError::new(
            ErrorCode::InvalidRedirectUri,
            "redirect_uris is required",
        ));
    }
    if uris.len() > MAX_REDIRECT_URIS {
        return Err(OAuthError::new(
            ErrorCode::InvalidRedirectUri,
            format!("at most {MAX_REDIRECT_URIS} redirect_uris may be registered"),
        ));
    }

    for uri in &uris {
        if uri.len() > MAX_URI_LEN {
            return Err(OAuthError::new(
                ErrorCode::InvalidRedirectUri,
                "a redirect URI is too long",
            ));
        }
        if let Err(e) = served.connector.settings.allowlist.check(uri) {
            return Err(OAuthError::new(
                ErrorCode::InvalidRedirectUri,
                format!("redirect URI {uri} is not allowed by this server: {e}"),
            ));
        }
    }

    check_list(
        &meta.grant_types,
        "grant_type",
        &["authorization_code", "refresh_token"],
    )?;
    check_list(&meta.response_types, "response_type", &["code"])?;
    Ok(uris)
}

/// The scope a registration answers with: the asked scopes this server grants (with
/// `offline_access`, which `/authorize` and `/token` accept), or all of the connector's when
/// none of them was asked. An unknown scope is dropped rather than refused, so that a
/// client that registers `openid profile` still gets a client; it is refused at
/// `/authorize` only if asked there.
fn registered_scope(allowed: &[String], requested: Option<&str>) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for scope in requested.unwrap_or_default().split(' ') {
        let known = scope == "offline_access" || allowed.iter().any(|a| a == scope);
        if known && !kept.contains(&scope) {
            kept.push(scope);
        }
    }
    if !kept.iter().any(|s| allowed.iter().any(|a| a == s)) {
        let mut all: Vec<&str> = allowed.iter().map(String::as_str).collect();
        all.extend(kept);
        return all.join(" ");
    }
    kept.join(" ")
}

/// `POST /register`.
pub async fn register(
    State(state): State<AppState>,
    served: Served,
    parts: Parts,
    RequestBody(body): RequestBody,
) -> Result<Response, OAuthError> {
    let answer = registration(&state, &served, &parts, &body).await;
    state.metrics.registration(match &answer {
        Ok(_) => "ok",
        Err(e) => {
            tracing::warn!(
                connector = %served.connector.id,
                error = e.code.as_str(),
                description = %e.description,
                "registration refused"
            );
            e.code.as_str()
        }
    });
    answer.map_err(|e| {
        if e.status == Some(StatusCode::TOO_MANY_REQUESTS) {
            e.with_retry_after(WINDOW.as_secs())
        } else {
            e
        }
    })
}

async fn registration(
    state: &AppState,
    served: &Served,
    parts: &Parts,
    body: &Bytes,
) -> Result<Response, OAuthError> {
    if let Some(ip) = peer_ip(parts)
        && !state.register_limit.allow(ip, Instant::now())
    {
        return Err(
            OAuthError::invalid_request("too many registrations; try again in a minute")
                .with_status(StatusCode::TOO_MANY_REQUESTS),
        );
    }

    let meta: Metadata = serde_json::from_slice(body)
        .map_err(|e| bad_metadata(format!("the body is not client metadata JSON: {e}")))?;
    let redirect_uris = validate(served, &meta)?;
    let auth = auth_method(meta.token_endpoint_auth_method.as_deref())?;
    let name = meta
        .client_name
        .as_ref()
        .map(|n| n.chars().take(MAX_NAME_LEN).collect::<String>());

    let now = state.clock.unix();
    let registration = Registration {
        redirect_uris: redirect_uris.clone(),
        auth,
        name: name.clone(),
        issued_at: now,
    };
    let keys = &served.connector.keys;
    let client_id = seal::seal(keys, Purpose::Client, &served.connector.id, &registration)
        .map_err(OAuthError::internal)?;

    let scope = registered_scope(&served.connector.settings.scopes, meta.scope.as_deref());
    let grant_types = meta
        .grant_types
        .clone()
        .unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
    let mut answer = json!({
        "client_id": client_id,
        "client_id_issued_at": now,
        "redirect_uris": redirect_uris,
        "token_endpoint_auth_method": auth.as_str(),
        "grant_types": grant_types,
        "response_types": ["code"],
        "scope": scope,
    });
    if let Some(name) = name {
        answer["client_name"] = json!(name);
    }
    if auth != AuthMethod::None {
        let secret = client_secret(keys.current_seal(), &client_id);
        answer["client_secret"] = json!(secret.expose());
        answer["client_secret_expires_at"] = json!(0);
    }

    tracing::info!(
        connector = %served.connector.id,
        client_name = registration.name.as_deref().unwrap_or(""),
        auth = auth.as_str(),
        "client registered"
    );
    Ok((
        StatusCode::CREATED,
        [("cache-control", "no-store")],
        Json(answer),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_is_answered_with_the_scopes_it_can_be_granted() {
        let allowed = vec!["mcp".to_string(), "read".to_string()];
        let scope = |asked| registered_scope(&allowed, asked);

        assert_eq!(scope(None), "mcp read");
        assert_eq!(scope(Some("read")), "read");
        assert_eq!(scope(Some("mcp offline_access")), "mcp offline_access");
        assert_eq!(scope(Some("openid mcp admin mcp")), "mcp");
        assert_eq!(scope(Some("openid profile")), "mcp read");
        assert_eq!(scope(Some("offline_access")), "mcp read offline_access");
        assert_eq!(scope(Some("  ")), "mcp read");
    }

    #[test]
    fn the_rate_limit_resets_each_window() {
        let limit = RateLimit::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let start = Instant::now();

        let allowed = (0..40).filter(|_| limit.allow(ip, start)).count();
        let later = limit.allow(ip, start + WINDOW);

        assert_eq!(allowed, REGISTRATIONS_PER_WINDOW as usize);
        assert!(later);
    }

    #[test]
    fn auth_methods_default_to_basic_and_refuse_others() {
        assert_eq!(auth_method(None).unwrap(), AuthMethod::ClientSecretBasic);
        assert_eq!(auth_method(Some("none")).unwrap(), AuthMethod::None);
        assert!(auth_method(Some("private_key_jwt")).is_err());
    }
}
