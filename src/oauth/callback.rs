//! `GET /oauth/callback`: where the upstream OpenID provider sends the user back. The one
//! redirect URI an operator registers at the IdP.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::authorize::{ClientRedirect, PendingLogin, complete_login, cookie_matches, params};
use super::seal::{self, Purpose};
use super::{AppState, ErrorCode, OAuthError, Served};
use crate::upstream::Upstream;

/// `GET /oauth/callback`.
pub async fn callback(
    State(state): State<AppState>,
    served: Served,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Ok(p) = params(query.unwrap_or_default().as_bytes()) else {
        return OAuthError::invalid_request("malformed callback").into_response();
    };
    let Upstream::Oidc(up) = &served.connector.upstream else {
        return OAuthError::new(
            ErrorCode::NotFound,
            "this connector has no upstream provider",
        )
        .into_response();
    };

    // The state is ours, sealed: until it opens nothing here may be trusted, so errors are
    // shown, not redirected.
    let sealed = p.get("state").map(String::as_str).unwrap_or_default();
    let opened = seal::open::<PendingLogin>(
        &served.connector.keys,
        Purpose::Pending,
        &served.connector.id,
        sealed,
    );
    let Some((pending, _)) = opened else {
        return OAuthError::invalid_request("unknown or tampered login state; start again")
            .into_response();
    };
    let redirect = ClientRedirect::of(&pending);

    if pending.exp <= state.clock.unix() {
        return redirect.error(ErrorCode::AccessDenied, "the sign-in took too long");
    }
    // Login CSRF (RFC 9700 4.7.1): the browser finishing the login must be the one that
    // started it.
    if !cookie_matches(&headers, &pending) {
        return OAuthError::invalid_request("this sign-in was started in another browser")
            .into_response();
    }
    if let Some(error) = p.get("error") {
        tracing::warn!(
            connector = %served.connector.id,
            upstream_error = %error,
            "upstream refused sign-in",
        );
        return redirect.error(
            ErrorCode::AccessDenied,
            "the sign-in provider refused the sign-in",
        );
    }

    let code = p.get("code").map(String::as_str).unwrap_or_default();
    let nonce = pending.n.clone().unwrap_or_default();
    let verifier = pending.v.clone().unwrap_or_default();
    let callback_uri = format!("{}/oauth/callback", pending.base);
    let result = state
        .oidc
        .finish(
            up,
            &callback_uri,
            code,
            &nonce,
            &verifier,
            state.clock.unix(),
        )
        .await;

    match result {
        Ok(identity) => complete_login(&state, &served, &pending, &identity),
        Err(e) => {
            tracing::warn!(connector = %served.connector.id, error = %e, "upstream sign-in failed");
            let code = if e.is_transient() {
                ErrorCode::TemporarilyUnavailable
            } else {
                ErrorCode::AccessDenied
            };
            redirect.error(code, "the sign-in could not be completed")
        }
    }
}
