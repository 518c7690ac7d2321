//! Discovery documents: RFC 9728 protected-resource metadata, RFC 8414 and OpenID
//! Discovery authorization-server metadata, and the RFC 7517 JWKS.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Served;

/// Discovery answers may be cached briefly; keys and URLs change rarely and the JWKS
/// keeps the previous key, so a short cache never breaks a login.
fn cached(body: Value) -> Response {
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// The protected-resource document, in the exact shape of the reference page, plus
/// `scopes_supported` (RFC 9728 2).
pub fn protected_resource_document(served: &Served) -> Value {
    let settings = &served.connector.settings;
    json!({
        "resource": served.base.resource(),
        "authorization_servers": [served.base.as_str()],
        "bearer_methods_supported": ["header"],
        "resource_name": settings.resource_name,
        "scopes_supported": settings.scopes,
    })
}

/// `GET /.well-known/oauth-protected-resource[/mcp]`.
pub async fn protected_resource(served: Served) -> Response {
    cached(protected_resource_document(&served))
}

fn metadata(served: &Served) -> Value {
    let base = &served.base;
    json!({
        "issuer": base.as_str(),
        "authorization_endpoint": base.join("/authorize"),
        "token_endpoint": base.join("/token"),
        "registration_endpoint": base.join("/register"),
        "revocation_endpoint": base.join("/revoke"),
        "jwks_uri": base.join("/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported":
            ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported":
            ["none", "client_secret_basic", "client_secret_post"],
        "scopes_supported": served.connector.settings.scopes,
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true,
    })
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414 3).
pub async fn authorization_server(served: Served) -> Response {
    cached(metadata(&served))
}

/// `GET /.well-known/openid-configuration`: the same metadata with the fields OpenID
/// Discovery requires. No ID tokens are issued; the signing algorithm is the access token's.
pub async fn openid_configuration(served: Served) -> Response {
    let mut doc = metadata(&served);
    if let Some(map) = doc.as_object_mut() {
        map.insert("subject_types_supported".into(), json!(["public"]));
        map.insert(
            "id_token_signing_alg_values_supported".into(),
            json!(["ES256"]),
        );
    }
    cached(doc)
}

/// `GET /jwks.json`: the current and retired signing keys.
pub async fn jwks(served: Served) -> Response {
    cached(served.connector.keys.jwks.clone())
}
