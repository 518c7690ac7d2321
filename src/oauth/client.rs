//! Who a client is: a registration sealed into its `client_id` (RFC 7591), or a Client ID
//! Metadata Document named by an https `client_id`; and how it authenticates at `/token`
//! and `/revoke` (RFC 6749 2.3).

use aws_lc_rs::constant_time::verify_slices_are_equal;
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use serde::{Deserialize, Serialize};

use super::seal::{self, Purpose};
use super::{AppState, OAuthError, Served};
use crate::keys::{SealKey, SecretString};

/// A registered client's token endpoint authentication method (RFC 7591 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A public client.
    None,
    /// Secret in an `Authorization: Basic` header.
    ClientSecretBasic,
    /// Secret in the form body.
    ClientSecretPost,
}

impl AuthMethod {
    /// The method as written in metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
        }
    }
}

/// What a sealed `client_id` holds. Short field names keep client ids short.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Registration {
    /// Registered redirect URIs.
    #[serde(rename = "r")]
    pub redirect_uris: Vec<String>,
    /// Authentication method.
    #[serde(rename = "m")]
    pub auth: AuthMethod,
    /// Client name, for the logs.
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Registration time, Unix seconds.
    #[serde(rename = "t")]
    pub issued_at: i64,
}

/// A client, resolved from its `client_id`.
#[derive(Debug)]
pub struct Client {
    /// The `client_id` as presented.
    pub id: String,
    /// Redirect URIs it may use.
    pub redirect_uris: Vec<String>,
    /// How it authenticates.
    pub auth: AuthMethod,
    /// Its name, if it gave one.
    pub name: Option<String>,
    expected_secret: Option<SecretString>,
}

/// The secret of a confidential client: a MAC of its `client_id`, so nothing is stored.
pub fn client_secret(key: &SealKey, client_id: &str) -> SecretString {
    let tag = key.mac(format!("client-secret/{client_id}").as_bytes());
    SecretString::new(B64.encode(tag.as_ref()))
}

/// Resolves a `client_id`. Any failure is `invalid_client`.
pub async fn resolve(
    state: &AppState,
    served: &Served,
    client_id: &str,
) -> Result<Client, OAuthError> {
    if client_id.is_empty() {
        return Err(OAuthError::invalid_request("client_id is required"));
    }

    if state.cimd.names_document(client_id) {
        return resolve_metadata_document(state, served, client_id).await;
    }

    let keys = &served.connector.keys;
    let opened = seal::open::<Registration>(keys, Purpose::Client, &served.connector.id, client_id);
    let Some((reg, key)) = opened else {
        // Also what a client registered before the DCR Secret was deleted sees: it
        // registers again (RFC 7591 clients do so on invalid_client).
        return Err(OAuthError::invalid_client(
            "unknown client_id; register the client again",
        ));
    };

    let expected_secret = match reg.auth {
        AuthMethod::None => None,
        _ => Some(client_secret(key, client_id)),
    };
    Ok(Client {
        id: client_id.to_string(),
        redirect_uris: reg.redirect_uris,
        auth: reg.auth,
        name: reg.name,
        expected_secret,
    })
}

async fn resolve_metadata_document(
    state: &AppState,
    served: &Served,
    client_id: &str,
) -> Result<Client, OAuthError> {
    let doc = state.cimd.fetch(client_id).await.map_err(|e| {
        tracing::warn!(client_id, error = %e, "client metadata document refused");
        OAuthError::invalid_client(format!("client metadata document: {e}"))
    })?;

    // The document's redirect URIs must also pass the operator's allowlist: the document is
    // the client's word, the allowlist is the operator's.
    for uri in &doc.redirect_uris {
        if served.connector.settings.allowlist.check(uri).is_err() {
            return Err(OAuthError::invalid_client(format!(
                "redirect URI {uri} of the client metadata document is not allowed here"
            )));
        }
    }
    Ok(Client {
        id: client_id.to_string(),
        redirect_uris: doc.redirect_uris.clone(),
        auth: AuthMethod::None,
        name: doc.client_name.clone(),
        expected_secret: None,
    })
}

/// Client credentials as presented at the token or revocation endpoint.
#[derive(Debug, Default)]
pub struct Credentials {
    /// The client id, from the header or the form.
    pub client_id: Option<String>,
    /// The secret, if one was sent.
    pub secret: Option<SecretString>,
    /// Whether they came in an `Authorization: Basic` header.
    pub basic: bool,
}

/// Reads credentials from the `Authorization` header and the form (RFC 6749 2.3.1).
pub fn credentials(
    headers: &HeaderMap,
    form_client_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<Credentials, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        });

    let Some(encoded) = basic else {
        return Ok(Credentials {
            client_id: form_client_id.map(String::from),
            secret: form_secret.filter(|s| !s.is_empty()).map(SecretString::new),
            basic: false,
        });
    };

    let bad = || {
        OAuthError::invalid_client("malformed Basic credentials").with_challenge(basic_challenge())
    };
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;

    // RFC 6749 2.3.1: both parts are form-urlencoded before base64.
    let id = form_decode(id);
    let secret = form_decode(secret);
    if form_client_id.is_some_and(|f| f != id) {
        return Err(OAuthError::invalid_request(
            "client_id in the form differs from the header",
        ));
    }
    Ok(Credentials {
        client_id: Some(id),
        secret: (!secret.is_empty()).then(|| SecretString::new(secret)),
        basic: true,
    })
}

fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The challenge sent with `invalid_client` when the client used Basic (RFC 6749 5.2).
pub fn basic_challenge() -> String {
    "Basic realm=\"mcp-connector\"".to_string()
}

/// Resolves and authenticates the client of a token or revocation request.
pub async fn authenticate(
    state: &AppState,
    served: &Served,
    creds: &Credentials,
) -> Result<Client, OAuthError> {
    let challenge = |e: OAuthError| {
        if creds.basic {
            e.with_challenge(basic_challenge())
        } else {
            e
        }
    };
    let Some(client_id) = creds.client_id.as_deref() else {
        return Err(OAuthError::invalid_client(
            "client authentication is required",
        ));
    };
    let client = resolve(state, served, client_id).await.map_err(challenge)?;

    match (&client.expected_secret, &creds.secret) {
        (None, None) => Ok(client),
        (None, Some(_)) => Err(challenge(OAuthError::invalid_client(
            "this client was registered as public (token_endpoint_auth_method none)",
        ))),
        (Some(_), None) => Err(challenge(OAuthError::invalid_client(
            "client secret is required",
        ))),
        (Some(expected), Some(given)) => {
            let ok =
                verify_slices_are_equal(expected.expose().as_bytes(), given.expose().as_bytes());
            if ok.is_err() {
                return Err(challenge(OAuthError::invalid_client(
                    "client secret is wrong",
                )));
            }
            Ok(client)
        }
    }
}
