//! PLACEHOLDER until the OIDC module lands (being written in parallel).
use crate::keys::SecretString;

pub struct OidcUpstream {
    pub issuer_url: url::Url,
    pub client_id: String,
    pub client_secret: SecretString,
    pub scopes: Vec<String>,
    pub username_claim: String,
    pub groups_claim: String,
}
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub username: String,
    pub groups: Vec<String>,
}
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("not built yet")]
    NotBuilt,
}
impl UpstreamError {
    pub fn is_transient(&self) -> bool {
        false
    }
}
pub struct OidcClient;
impl OidcClient {
    pub fn new(_http: reqwest::Client) -> OidcClient {
        OidcClient
    }
    pub async fn authorize_url(
        &self,
        _up: &OidcUpstream,
        _redirect_uri: &str,
        _state: &str,
        _nonce: &str,
        _pkce_verifier: &str,
    ) -> Result<url::Url, UpstreamError> {
        Err(UpstreamError::NotBuilt)
    }
    pub async fn finish(
        &self,
        _up: &OidcUpstream,
        _redirect_uri: &str,
        _code: &str,
        _nonce: &str,
        _pkce_verifier: &str,
        _now: i64,
    ) -> Result<Identity, UpstreamError> {
        Err(UpstreamError::NotBuilt)
    }
}
