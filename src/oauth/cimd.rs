//! PLACEHOLDER until the CIMD fetcher lands (being written in parallel).
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct FetcherConfig {
    pub timeout: Duration,
    pub max_bytes: usize,
    pub cache_ttl: Duration,
    pub allow_private: bool,
}
impl Default for FetcherConfig {
    fn default() -> Self {
        FetcherConfig {
            timeout: Duration::from_secs(5),
            max_bytes: 65536,
            cache_ttl: Duration::from_secs(300),
            allow_private: false,
        }
    }
}
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ClientMetadataDocument {
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub scope: Option<String>,
}
#[derive(Debug, thiserror::Error)]
#[error("client metadata document unavailable")]
pub struct CimdError;
pub struct CimdFetcher;
impl CimdFetcher {
    pub fn new(_cfg: FetcherConfig) -> CimdFetcher {
        CimdFetcher
    }
    pub async fn fetch(&self, _client_id: &str) -> Result<Arc<ClientMetadataDocument>, CimdError> {
        Err(CimdError)
    }
}
pub fn is_cimd_client_id(client_id: &str) -> bool {
    client_id.starts_with("https://")
}
