//! `POST /revoke` (RFC 7009): revoking a refresh or access token revokes its whole grant.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::access_token::verify;
use super::authorize::params;
use super::client;
use super::seal::{self, Purpose};
use super::token::RefreshGrant;
use super::{AppState, ErrorCode, OAuthError, RequestBody, Served};

/// `POST /revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    served: Served,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Result<Response, OAuthError> {
    let form = params(&body).map_err(OAuthError::invalid_request)?;
    let get = |k: &str| form.get(k).map(String::as_str);

    let creds = client::credentials(&headers, get("client_id"), get("client_secret"))?;
    let client = client::authenticate(&state, &served, &creds).await?;
    let token = get("token").ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let connector = &served.connector;

    let grant = if let Some((refresh, _)) =
        seal::open::<RefreshGrant>(&connector.keys, Purpose::Refresh, &connector.id, token)
    {
        Some((refresh.c, refresh.g, refresh.exp))
    } else {
        let issuer = served.base.as_str();
        verify(&connector.keys, token, issuer, served.base.resource(), None)
            .ok()
            .map(|claims| (claims.client_id, claims.gid, claims.exp))
    };

    // RFC 7009 2.2: an unknown or foreign token is answered like a revoked one, so the
    // endpoint tells nothing about tokens that are not the client's.
    if let Some((owner, gid, exp)) = grant
        && owner == client.id
    {
        let until = jiff::Timestamp::from_second(exp).unwrap_or_else(|_| state.clock.now());
        state
            .grants
            .revoke(&connector.id, &gid, until)
            .await
            .map_err(|e| OAuthError::new(ErrorCode::TemporarilyUnavailable, e.to_string()))?;
        tracing::info!(connector = %connector.id, "grant revoked");
    }
    Ok(Json(serde_json::json!({})).into_response())
}
