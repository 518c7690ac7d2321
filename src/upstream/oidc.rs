//! Sign-in at an upstream OpenID Connect provider (Okta, Entra ID, Google, Keycloak, Dex).
//!
//! Toward the provider the connector is one confidential client of its own. The
//! authorization request carries only what this module puts in it: response type, client
//! id, redirect URI, scopes, state, nonce and the PKCE challenge. Nothing an MCP client sent
//! is forwarded, so a client's `prompt=consent` can never become an admin-consent request
//! at the provider.
//!
//! The provider's discovery document and keys are cached per issuer. Every request to the
//! provider goes through [`send`], which follows no redirect (a provider answering with one
//! could otherwise steer the server to any address it can reach), caps the answer's size
//! and gives up after ten seconds.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, NO_PAD};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreErrorResponseType, CoreIdToken,
    CoreJsonWebKeySet, CoreProviderMetadata, CoreTokenResponse,
};
use openidconnect::http::{self, StatusCode, header};
use openidconnect::{
    AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    DiscoveryError, EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse,
    JsonWebKeySetUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError,
    Scope, SignatureVerificationError, StandardErrorResponse,
};
use serde_json::{Map, Value};
use tracing::{debug, info, warn};

use crate::keys::SecretString;

/// How long one request to the provider may take, answer included.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read from the provider; discovery documents and key sets are a few KiB.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// How long discovery and keys are trusted before they are fetched again.
const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// Clock difference tolerated between us and the provider for `exp` and `iat`.
const LEEWAY_SECS: i64 = 60;

/// Tells an answer the provider refused from one it could not give: worth retrying.
const TRANSIENT_OAUTH_ERRORS: [&str; 2] = ["temporarily_unavailable", "server_error"];

/// The client of the oidc crate as built from discovery: authorization endpoint set, token
/// and userinfo endpoints as the document says.
type ProviderClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

type TokenError = RequestTokenError<HttpFailure, StandardErrorResponse<CoreErrorResponseType>>;

/// One upstream OpenID provider and how the connector signs users in there.
#[derive(Clone, Debug)]
pub struct OidcUpstream {
    /// The provider's issuer identifier; discovery is read below it.
    pub issuer_url: url::Url,

    /// Our client id at the provider.
    pub client_id: String,

    /// Our client secret at the provider; its `Debug` prints nothing of it.
    pub client_secret: SecretString,

    /// Scopes asked for; `openid` is always asked for, listed or not.
    pub scopes: Vec<String>,

    /// The ID-token claim that names the user, string-valued (`email`, `upn`, ...).
    pub username_claim: String,

    /// The ID-token claim with the user's groups: a list of strings or one string.
    pub groups_claim: String,
}

/// Who signed in, as the provider's verified ID token says.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// The value of the configured user-name claim.
    pub username: String,

    /// The values of the configured groups claim; empty when the claim is absent.
    pub groups: Vec<String>,
}

/// What went wrong at the provider. Messages name no token, code, verifier or secret, so
/// they may be logged and shown to the user.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The discovery document or the key set could not be fetched or is not usable.
    #[error("cannot use the OpenID provider `{issuer}`: {reason}")]
    Discovery {
        issuer: String,
        reason: String,
        transient: bool,
    },

    /// Our own side of the request is malformed (redirect URI, state, nonce or verifier).
    #[error("cannot build the request to the OpenID provider: {0}")]
    InvalidRequest(&'static str),

    /// The token endpoint could not be reached, or answered with something other than OAuth.
    #[error("the token endpoint of the OpenID provider failed: {reason}")]
    TokenEndpoint { reason: String, transient: bool },

    /// The provider refused to exchange the code, with the OAuth error it gave.
    #[error("the OpenID provider refused the code exchange: {error}{}", described(.description))]
    Exchange {
        error: String,
        description: Option<String>,
    },

    /// The ID token is missing, or failed verification (signature, iss, aud, azp, time, nonce).
    #[error("the ID token was rejected: {0}")]
    IdToken(String),

    /// The verified ID token lacks the claim that is configured to carry the user name.
    #[error("the ID token has no `{claim}` claim")]
    MissingClaim { claim: String },

    /// A configured claim has a value of the wrong type.
    #[error("the `{claim}` claim of the ID token is not {expected}")]
    BadClaim {
        claim: String,
        expected: &'static str,
    },
}

impl UpstreamError {
    /// Whether trying again later may succeed: the network or the provider failed, as opposed
    /// to a bad token, a refused code or a wrong configuration.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Discovery { transient, .. } | Self::TokenEndpoint { transient, .. } => *transient,
            Self::Exchange { error, .. } => TRANSIENT_OAUTH_ERRORS.contains(&error.as_str()),
            Self::InvalidRequest(_)
            | Self::IdToken(_)
            | Self::MissingClaim { .. }
            | Self::BadClaim { .. } => false,
        }
    }
}

fn described(description: &Option<String>) -> String {
    description
        .as_ref()
        .map(|text| format!(" ({text})"))
        .unwrap_or_default()
}

/// Signs users in at OpenID providers. Caches provider metadata (discovery + JWKS) per issuer
/// for `ttl` (default 10 min); refetches the JWKS once when an ID token names an unknown
/// `kid` (key rotation at the IdP).
pub struct OidcClient {
    http: reqwest::Client,
    ttl: Duration,
    providers: Mutex<HashMap<String, Arc<Provider>>>,
}

/// What discovery found for one issuer, keys included.
struct Provider {
    metadata: CoreProviderMetadata,
    fetched_at: Instant,
}

impl fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let issuers: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_struct("OidcClient")
            .field("ttl", &self.ttl)
            .field("cached_issuers", &issuers)
            .finish_non_exhaustive()
    }
}

impl OidcClient {
    /// The caller passes a client built with `redirect::Policy::none()`: a redirect answer
    /// is refused here, but only a client that does not follow it keeps it from being fetched.
    pub fn new(http: reqwest::Client) -> OidcClient {
        OidcClient {
            http,
            ttl: DEFAULT_TTL,
            providers: Mutex::new(HashMap::new()),
        }
    }

    /// Changes how long discovery and keys are cached.
    pub fn with_ttl(mut self, ttl: Duration) -> OidcClient {
        self.ttl = ttl;
        self
    }

    /// The URL of the IdP's authorization endpoint for this login: response_type=code, our
    /// client_id, redirect_uri, scope, state, nonce, PKCE S256 challenge derived from
    /// `pkce_verifier`. Nothing else.
    pub async fn authorize_url(
        &self,
        up: &OidcUpstream,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        pkce_verifier: &str,
    ) -> Result<url::Url, UpstreamError> {
        let redirect = redirect_url(redirect_uri)?;
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&pkce(pkce_verifier)?);
        if state.is_empty() || nonce.is_empty() {
            return Err(UpstreamError::InvalidRequest(
                "the state and the nonce must not be empty",
            ));
        }

        let provider = self.provider(up).await?;
        let client = provider_client(up, &provider.metadata).set_redirect_uri(redirect);

        let (state, nonce) = (state.to_owned(), nonce.to_owned());
        let (url, _, _) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .add_scopes(extra_scopes(&up.scopes))
            .set_pkce_challenge(challenge)
            .url();
        Ok(url)
    }

    /// Exchanges the code (client_secret_basic, falling back to client_secret_post if the
    /// IdP's metadata lists only that), verifies the ID token (signature via the IdP's JWKS,
    /// iss, aud, azp if present, exp/iat with the given `now` unix seconds and 60 s leeway,
    /// nonce), and reads the user name and groups from the configured claims of the verified
    /// ID token.
    pub async fn finish(
        &self,
        up: &OidcUpstream,
        redirect_uri: &str,
        code: &str,
        nonce: &str,
        pkce_verifier: &str,
        now: i64,
    ) -> Result<Identity, UpstreamError> {
        let redirect = redirect_url(redirect_uri)?;
        let verifier = pkce(pkce_verifier)?;
        let provider = self.provider(up).await?;

        let hidden = [code, pkce_verifier, up.client_secret.expose()];
        let answer = self
            .exchange(up, &provider.metadata, redirect, code, verifier)
            .await;
        let answer = answer.map_err(|err| token_error(err, &hidden))?;
        let id_token = answer.extra_fields().id_token().ok_or_else(|| {
            UpstreamError::IdToken("the token answer carries no ID token".to_owned())
        })?;

        // A key the cached set lacks means the provider rotated its keys since we fetched
        // them. The token came from the token endpoint on our own connection, not from the
        // user's browser, so this refetch cannot be triggered at will by a caller.
        match verify_id_token(up, &provider.metadata, id_token, nonce, now) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let provider = self.refetch_keys(up, &provider).await?;
                verify_id_token(up, &provider.metadata, id_token, nonce, now)
                    .map_err(id_token_error)?;
            }
            verified => verified.map_err(id_token_error)?,
        }

        let identity = identity_from(up, &verified_payload(id_token)?)?;
        debug!(issuer = %up.issuer_url, username = %identity.username, "upstream sign-in verified");
        Ok(identity)
    }

    async fn exchange(
        &self,
        up: &OidcUpstream,
        metadata: &CoreProviderMetadata,
        redirect: RedirectUrl,
        code: &str,
        verifier: PkceCodeVerifier,
    ) -> Result<CoreTokenResponse, TokenError> {
        let client = provider_client(up, metadata)
            .set_redirect_uri(redirect)
            .set_auth_type(auth_type(metadata));
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|_| {
                TokenError::Other("the discovery document names no token endpoint".to_owned())
            })?;

        let http = |request| send(self.http.clone(), request);
        request
            .set_pkce_verifier(verifier)
            .request_async(&http)
            .await
    }

    /// The provider's metadata, from the cache while it is fresh.
    async fn provider(&self, up: &OidcUpstream) -> Result<Arc<Provider>, UpstreamError> {
        let issuer = up.issuer_url.as_str();
        let cached = self.lock().get(issuer).cloned();
        if let Some(provider) = cached.filter(|p| p.fetched_at.elapsed() < self.ttl) {
            return Ok(provider);
        }

        // Two logins that miss together both fetch; the last one's result stays. That costs
        // a request, and saves holding a lock across the network.
        let metadata = self.discover(up).await?;
        let provider = Arc::new(Provider {
            metadata,
            fetched_at: Instant::now(),
        });
        self.lock().insert(issuer.to_owned(), provider.clone());
        debug!(
            issuer,
            "fetched the OpenID provider's discovery document and keys"
        );
        Ok(provider)
    }

    async fn discover(&self, up: &OidcUpstream) -> Result<CoreProviderMetadata, UpstreamError> {
        let issuer = &up.issuer_url;
        let failed = |reason: String, transient| UpstreamError::Discovery {
            issuer: issuer.to_string(),
            reason,
            transient,
        };
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err(failed(
                "an issuer URL has no query or fragment".to_owned(),
                false,
            ));
        }

        // OpenID Discovery 4: the document lives at the issuer + /.well-known/...
        let base = issuer.as_str().trim_end_matches('/');
        let request = http::Request::builder()
            .method(http::Method::GET)
            .uri(format!("{base}/.well-known/openid-configuration"))
            .header(header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|err| failed(format!("bad discovery URL: {err}"), false))?;
        let answer = send(self.http.clone(), request)
            .await
            .map_err(|err| failed(format!("discovery failed: {err}"), err.is_transient()))?;
        if answer.status() != StatusCode::OK {
            let reason = format!("discovery answered HTTP {}", answer.status());
            return Err(failed(reason, false));
        }

        let metadata: CoreProviderMetadata = serde_json::from_slice(answer.body())
            .map_err(|err| failed(format!("the discovery document is not valid: {err}"), false))?;

        // OpenID Discovery 4.3: the document must name the issuer it was fetched for, or a
        // provider could speak for another; the ID token's `iss` is then held to this name.
        if !same_issuer(metadata.issuer().as_str(), issuer) {
            let named = metadata.issuer().as_str();
            return Err(failed(
                format!("the discovery document names issuer `{named}`"),
                false,
            ));
        }

        let keys = self.fetch_keys(up, metadata.jwks_uri()).await?;
        Ok(metadata.set_jwks(keys))
    }

    async fn fetch_keys(
        &self,
        up: &OidcUpstream,
        jwks_uri: &JsonWebKeySetUrl,
    ) -> Result<CoreJsonWebKeySet, UpstreamError> {
        let http = |request| send(self.http.clone(), request);
        let fetched = CoreJsonWebKeySet::fetch_async(jwks_uri, &http).await;
        fetched.map_err(|err| {
            let (reason, transient) = key_set_error(err);
            UpstreamError::Discovery {
                issuer: up.issuer_url.to_string(),
                reason,
                transient,
            }
        })
    }

    /// Replaces the cached keys of `stale`'s issuer; the discovery document is kept, and so
    /// is its age.
    async fn refetch_keys(
        &self,
        up: &OidcUpstream,
        stale: &Provider,
    ) -> Result<Arc<Provider>, UpstreamError> {
        let keys = self.fetch_keys(up, stale.metadata.jwks_uri()).await?;

        let provider = Arc::new(Provider {
            metadata: stale.metadata.clone().set_jwks(keys),
            fetched_at: stale.fetched_at,
        });
        let issuer = up.issuer_url.as_str();
        self.lock().insert(issuer.to_owned(), provider.clone());
        info!(
            issuer,
            "refetched the OpenID provider's keys: an ID token named an unknown key"
        );
        Ok(provider)
    }

    // The map is replaced entry by entry, never left half-written, so a panic elsewhere
    // while it was held does not make it wrong.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Provider>>> {
        self.providers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn provider_client(up: &OidcUpstream, metadata: &CoreProviderMetadata) -> ProviderClient {
    CoreClient::from_provider_metadata(
        metadata.clone(),
        ClientId::new(up.client_id.clone()),
        Some(ClientSecret::new(up.client_secret.expose().to_owned())),
    )
}

/// client_secret_basic is the default of RFC 6749 2.3.1 and of OpenID Discovery when the
/// provider lists no method; client_secret_post only when it is listed and basic is not.
fn auth_type(metadata: &CoreProviderMetadata) -> AuthType {
    let Some(methods) = metadata.token_endpoint_auth_methods_supported() else {
        return AuthType::BasicAuth;
    };

    let post = methods.contains(&CoreClientAuthMethod::ClientSecretPost);
    let basic = methods.contains(&CoreClientAuthMethod::ClientSecretBasic);
    if post && !basic {
        AuthType::RequestBody
    } else {
        AuthType::BasicAuth
    }
}

/// The configured scopes other than `openid`, which the oidc crate always sends first;
/// an entry holding several space-separated scopes counts as several.
fn extra_scopes(scopes: &[String]) -> Vec<Scope> {
    let mut kept: Vec<&str> = Vec::new();
    for scope in scopes.iter().flat_map(|entry| entry.split_whitespace()) {
        if scope != "openid" && !kept.contains(&scope) {
            kept.push(scope);
        }
    }
    kept.into_iter()
        .map(|scope| Scope::new(scope.to_owned()))
        .collect()
}

/// `url::Url` writes an issuer without a path as `https://host/`. Most providers name
/// themselves without that slash, some with it; that one character is all that may differ.
fn same_issuer(named: &str, configured: &url::Url) -> bool {
    let configured_str = configured.as_str();
    if named == configured_str {
        return true;
    }

    configured.path() == "/" && Some(named) == configured_str.strip_suffix('/')
}

fn redirect_url(redirect_uri: &str) -> Result<RedirectUrl, UpstreamError> {
    RedirectUrl::new(redirect_uri.to_owned())
        .map_err(|_| UpstreamError::InvalidRequest("the redirect URI is not an absolute URL"))
}

/// RFC 7636 4.1: 43 to 128 characters of ALPHA / DIGIT / "-" / "." / "_" / "~". Checked
/// here because the oidc crate asserts it, and a panic is no answer to bad input.
fn pkce(verifier: &str) -> Result<PkceCodeVerifier, UpstreamError> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    if !(43..=128).contains(&verifier.len()) || !verifier.bytes().all(unreserved) {
        return Err(UpstreamError::InvalidRequest(
            "the PKCE verifier is not 43 to 128 unreserved characters (RFC 7636 4.1)",
        ));
    }

    Ok(PkceCodeVerifier::new(verifier.to_owned()))
}

/// Checks the signature, `iss`, `aud`, `azp`, `exp`, `iat` and `nonce` (OpenID Connect Core
/// 3.1.3.7) against `now`, in unix seconds.
fn verify_id_token(
    up: &OidcUpstream,
    metadata: &CoreProviderMetadata,
    id_token: &CoreIdToken,
    nonce: &str,
    now: i64,
) -> Result<(), ClaimsVerificationError> {
    let client = provider_client(up, metadata);
    let latest_issue = unix_time(now.saturating_add(LEEWAY_SECS));
    let verifier = client
        .id_token_verifier()
        .set_time_fn(move || unix_time(now.saturating_sub(LEEWAY_SECS)).into())
        .set_issue_time_verifier_fn(move |iat| {
            if SystemTime::from(iat) > latest_issue {
                return Err("issued in the future".to_owned());
            }
            Ok(())
        });
    let claims = id_token.claims(&verifier, &Nonce::new(nonce.to_owned()))?;

    // Core 3.1.3.7 step 5: an `azp` must be our client id. The oidc crate leaves this
    // check to its callers; extra audiences it already refuses.
    if let Some(azp) = claims.authorized_party()
        && azp.as_str() != up.client_id
    {
        return Err(ClaimsVerificationError::InvalidAudience(format!(
            "`azp` is `{}`, not our client id",
            azp.as_str()
        )));
    }
    Ok(())
}

/// A unix time as a `SystemTime`, held within years 1970 to 9999 so that the conversion the
/// oidc crate makes from it cannot overflow.
fn unix_time(secs: i64) -> SystemTime {
    const YEAR_9999: u64 = 253_402_300_799;
    let secs = u64::try_from(secs).unwrap_or(0).min(YEAR_9999);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The claims of an ID token that has passed [`verify_id_token`].
///
/// The user-name and groups claims are chosen by the operator at run time, so they are read
/// from the token's own JSON payload rather than through a typed `AdditionalClaims`. The oidc
/// crate keeps the token as received, so these are exactly the bytes the signature covers.
fn verified_payload(id_token: &CoreIdToken) -> Result<Map<String, Value>, UpstreamError> {
    // The same decoding the oidc crate applied to this segment when it parsed the token.
    let engine = GeneralPurpose::new(&URL_SAFE, NO_PAD.with_decode_allow_trailing_bits(true));
    let unreadable = || UpstreamError::IdToken("the payload is not a JSON object".to_owned());

    let compact = id_token.to_string();
    let payload = compact.split('.').nth(1).ok_or_else(unreadable)?;
    let json = engine.decode(payload).map_err(|_| unreadable())?;
    serde_json::from_slice(&json).map_err(|_| unreadable())
}

fn identity_from(
    up: &OidcUpstream,
    claims: &Map<String, Value>,
) -> Result<Identity, UpstreamError> {
    let bad = |claim: &str, expected| UpstreamError::BadClaim {
        claim: claim.to_owned(),
        expected,
    };

    // No fallback to another claim: a login without the configured name must fail clearly.
    let username = match claims.get(&up.username_claim) {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            return Err(UpstreamError::MissingClaim {
                claim: up.username_claim.clone(),
            });
        }
        Some(_) => return Err(bad(&up.username_claim, "a string")),
    };

    let groups_claim = &up.groups_claim;
    let groups = match claims.get(groups_claim) {
        None | Some(Value::Null) => {
            if names_distributed_claim(claims, groups_claim) {
                warn!(
                    issuer = %up.issuer_url,
                    claim = %groups_claim,
                    "the provider left the groups claim out of the ID token (too many groups, \
                     as Entra ID does past 200): the user gets no groups"
                );
            }
            Vec::new()
        }
        Some(Value::String(group)) => vec![group.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| bad(groups_claim, "a list of strings"))?,
        Some(_) => return Err(bad(groups_claim, "a string or a list of strings")),
    };
    let groups = groups
        .into_iter()
        .filter(|group| !group.is_empty())
        .collect();

    Ok(Identity { username, groups })
}

/// Core 5.6.2: a claim served elsewhere is named in `_claim_names` instead of being present.
fn names_distributed_claim(claims: &Map<String, Value>, claim: &str) -> bool {
    claims
        .get("_claim_names")
        .and_then(Value::as_object)
        .is_some_and(|names| names.contains_key(claim))
}

fn id_token_error(err: ClaimsVerificationError) -> UpstreamError {
    // The oidc crate's messages name claims, times, key ids and algorithms, never the token.
    let reason = match err {
        ClaimsVerificationError::SignatureVerification(cause) => {
            format!("bad signature: {cause}")
        }

        // The "current time" in the crate's message is ours less the leeway.
        ClaimsVerificationError::Expired(times) => {
            format!("expired or not yet valid: {times}, allowing {LEEWAY_SECS} s of clock skew")
        }
        other => other.to_string(),
    };
    UpstreamError::IdToken(reason)
}

/// Turns the token request's failure into ours. `hidden` are the code, the verifier and the
/// secret, cut out of any description the provider wrote, since it is outside our control.
fn token_error(err: TokenError, hidden: &[&str]) -> UpstreamError {
    match err {
        RequestTokenError::ServerResponse(answer) => UpstreamError::Exchange {
            error: answer.error().as_ref().to_owned(),
            description: answer
                .error_description()
                .map(|text| scrubbed(text, hidden)),
        },
        RequestTokenError::Request(failure) => UpstreamError::TokenEndpoint {
            transient: failure.is_transient(),
            reason: failure.to_string(),
        },

        // The body of an answer that did not parse may hold tokens: only the place is named.
        RequestTokenError::Parse(err, _body) => UpstreamError::TokenEndpoint {
            reason: format!(
                "the answer is not a token answer (unreadable at `{}`)",
                err.path()
            ),
            transient: false,
        },
        RequestTokenError::Other(reason) => UpstreamError::TokenEndpoint {
            reason,
            transient: false,
        },
    }
}

fn scrubbed(text: &str, hidden: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in hidden.iter().filter(|secret| !secret.is_empty()) {
        text = text.replace(secret, "[redacted]");
    }
    text.chars().take(300).collect()
}

fn key_set_error(err: DiscoveryError<HttpFailure>) -> (String, bool) {
    match err {
        DiscoveryError::Request(failure) => (
            format!("fetching its keys failed: {failure}"),
            failure.is_transient(),
        ),
        DiscoveryError::Response(status, _, reason) => (
            format!("fetching its keys failed: {reason}"),
            status.is_server_error(),
        ),
        DiscoveryError::Parse(err) => (
            format!("its key set is not valid (at `{}`)", err.path()),
            false,
        ),
        other => (format!("fetching its keys failed: {other}"), false),
    }
}

/// Why a request to the provider got no usable HTTP answer.
#[derive(Debug, thiserror::Error)]
enum HttpFailure {
    #[error("the request could not be formed: {0}")]
    Build(String),

    #[error("no complete answer within {} s", HTTP_TIMEOUT.as_secs())]
    Timeout,

    #[error("{0}")]
    Transport(String),

    #[error("answered with a redirect (HTTP {0}), which is not followed")]
    Redirect(StatusCode),

    #[error("answered HTTP {0}")]
    Unavailable(StatusCode),

    #[error("the answer is larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
}

impl HttpFailure {
    fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Timeout | Self::Transport(_) | Self::Unavailable(_)
        )
    }

    fn from_reqwest(err: reqwest::Error) -> Self {
        if err.is_timeout() {
            return Self::Timeout;
        }
        if err.is_builder() {
            return Self::Build(error_chain(&err));
        }
        Self::Transport(error_chain(&err))
    }
}

/// An error and its causes on one line; reqwest's own message leaves the cause out.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The HTTP client the oidc crate calls: reqwest, with no redirect followed, the answer
/// capped at [`MAX_ANSWER_BYTES`] and the whole exchange bounded by [`HTTP_TIMEOUT`].
/// A 5xx or 429 answer is a failure here, so that it counts as transient wherever it comes.
async fn send(http: reqwest::Client, request: HttpRequest) -> Result<HttpResponse, HttpFailure> {
    tokio::time::timeout(HTTP_TIMEOUT, send_unbounded(http, request))
        .await
        .unwrap_or(Err(HttpFailure::Timeout))
}

async fn send_unbounded(
    http: reqwest::Client,
    request: HttpRequest,
) -> Result<HttpResponse, HttpFailure> {
    let mut request =
        reqwest::Request::try_from(request).map_err(|err| HttpFailure::Build(error_chain(&err)))?;
    *request.timeout_mut() = Some(HTTP_TIMEOUT);

    let mut answer = http
        .execute(request)
        .await
        .map_err(HttpFailure::from_reqwest)?;
    let status = answer.status();
    if status.is_redirection() {
        return Err(HttpFailure::Redirect(status));
    }
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(HttpFailure::Unavailable(status));
    }

    let too_large = |len: usize| len > MAX_ANSWER_BYTES;
    if answer
        .content_length()
        .is_some_and(|len| len > MAX_ANSWER_BYTES as u64)
    {
        return Err(HttpFailure::TooLarge);
    }
    let headers = answer.headers().clone();
    let version = answer.version();
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(HttpFailure::from_reqwest)? {
        if too_large(body.len() + chunk.len()) {
            return Err(HttpFailure::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }

    let mut response = HttpResponse::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    *response.version_mut() = version;
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
    use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    const CLIENT: &str = "connector";
    const SECRET: &str = "fake-idp-secret-51d0";
    const REDIRECT: &str = "https://connector.example/oauth/callback";
    const NONCE: &str = "nonce-1";
    const VERIFIER: &str = "fake-verifier-0123456789abcdefghijklmnopqrstuvwxyz";
    const NOW: i64 = 1_800_000_000;

    /// An RS256 key the fake provider signs with and may publish.
    struct SigningKey {
        kid: String,
        pair: KeyPair,
    }

    impl SigningKey {
        fn new(kid: &str) -> Arc<Self> {
            let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
            Arc::new(Self {
                kid: kid.to_owned(),
                pair,
            })
        }

        fn jwk(&self) -> Value {
            let public = PublicKeyComponents::<Vec<u8>>::from(self.pair.public_key());
            json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                "n": URL_SAFE_NO_PAD.encode(public.n), "e": URL_SAFE_NO_PAD.encode(public.e),
            })
        }

        fn sign(&self, claims: &Value) -> String {
            let header = json!({ "alg": "RS256", "typ": "JWT", "kid": self.kid });
            let encode = |part: &Value| URL_SAFE_NO_PAD.encode(part.to_string());
            let input = format!("{}.{}", encode(&header), encode(claims));

            let mut signature = vec![0; self.pair.public_modulus_len()];
            let rng = SystemRandom::new();
            self.pair
                .sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut signature)
                .unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
        }
    }

    /// What the fake provider answers; a test changes it between requests.
    struct Script {
        discovery_status: u16,
        named_issuer: Option<String>,
        auth_methods: Option<Vec<&'static str>>,
        published: Vec<Arc<SigningKey>>,
        signer: Arc<SigningKey>,
        with_id_token: bool,
        /// Merged into the default ID-token claims; a `null` removes a claim.
        claims: Value,
    }

    /// One request the fake provider received.
    struct Seen {
        path: String,
        head: String,
        body: String,
    }

    struct FakeIdp {
        issuer: String,
        script: Arc<Mutex<Script>>,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl FakeIdp {
        async fn start() -> FakeIdp {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let issuer = format!("http://{}", listener.local_addr().unwrap());
            let key = SigningKey::new("key-1");
            let script = Arc::new(Mutex::new(Script {
                discovery_status: 200,
                named_issuer: None,
                auth_methods: None,
                published: vec![key.clone()],
                signer: key,
                with_id_token: true,
                claims: json!({}),
            }));
            let seen = Arc::new(Mutex::new(Vec::new()));

            let (state, log, base) = (script.clone(), seen.clone(), issuer.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (state, log, base) = (state.clone(), log.clone(), base.clone());
                    tokio::spawn(async move { serve(stream, &base, &state, &log).await });
                }
            });
            FakeIdp {
                issuer,
                script,
                seen,
            }
        }

        fn upstream(&self) -> OidcUpstream {
            OidcUpstream {
                issuer_url: self.issuer.parse().unwrap(),
                client_id: CLIENT.to_owned(),
                client_secret: SecretString::new(SECRET),
                scopes: vec!["openid".to_owned(), "email".to_owned()],
                username_claim: "email".to_owned(),
                groups_claim: "groups".to_owned(),
            }
        }

        fn script(&self) -> MutexGuard<'_, Script> {
            self.script.lock().unwrap()
        }

        fn count(&self, path: &str) -> usize {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .filter(|seen| seen.path == path)
                .count()
        }

        fn last(&self, path: &str) -> (String, String) {
            let seen = self.seen.lock().unwrap();
            let last = seen.iter().rev().find(|seen| seen.path == path).unwrap();
            (last.head.clone(), last.body.clone())
        }
    }

    async fn serve(
        mut stream: TcpStream,
        issuer: &str,
        script: &Mutex<Script>,
        log: &Mutex<Vec<Seen>>,
    ) {
        let mut raw = Vec::new();
        let mut buf = [0; 4096];
        let head_end = loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request ended early");
            raw.extend_from_slice(&buf[..n]);
            if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_lowercase();
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |n| n.trim().parse::<usize>().unwrap());
        while raw.len() < head_end + length {
            let n = stream.read(&mut buf).await.unwrap();
            raw.extend_from_slice(&buf[..n]);
        }
        let body = String::from_utf8_lossy(&raw[head_end..]).into_owned();
        let path = head
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();

        let (status, answer) = answer(&path, issuer, &script.lock().unwrap());
        log.lock().unwrap().push(Seen { path, head, body });
        let reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
             location: http://10.0.0.1/\r\ncontent-length: {}\r\nconnection: close\r\n\r\n\
             {answer}",
            answer.len()
        );
        stream.write_all(reply.as_bytes()).await.unwrap();
    }

    fn answer(path: &str, issuer: &str, script: &Script) -> (u16, String) {
        match path {
            "/.well-known/openid-configuration" => {
                let mut doc = json!({
                    "issuer": script.named_issuer.as_deref().unwrap_or(issuer),
                    "authorization_endpoint": format!("{issuer}/auth"),
                    "token_endpoint": format!("{issuer}/token"),
                    "jwks_uri": format!("{issuer}/jwks"),
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                });
                if let Some(methods) = &script.auth_methods {
                    doc["token_endpoint_auth_methods_supported"] = json!(methods);
                }
                (script.discovery_status, doc.to_string())
            }
            "/jwks" => {
                let keys: Vec<Value> = script.published.iter().map(|key| key.jwk()).collect();
                (200, json!({ "keys": keys }).to_string())
            }
            "/token" => {
                let mut claims = json!({
                    "iss": issuer, "aud": CLIENT, "sub": "u-1", "nonce": NONCE,
                    "iat": NOW, "exp": NOW + 300,
                    "email": "bob@example.com", "groups": ["ops"],
                });
                for (name, value) in script.claims.as_object().unwrap() {
                    match value {
                        Value::Null => claims.as_object_mut().unwrap().remove(name),
                        value => claims
                            .as_object_mut()
                            .unwrap()
                            .insert(name.clone(), value.clone()),
                    };
                }
                let mut answer = json!({ "access_token": "at", "token_type": "Bearer" });
                if script.with_id_token {
                    answer["id_token"] = json!(script.signer.sign(&claims));
                }
                (200, answer.to_string())
            }
            _ => (404, json!({ "error": "not_found" }).to_string()),
        }
    }

    fn client() -> OidcClient {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        OidcClient::new(http)
    }

    async fn finish(
        client: &OidcClient,
        up: &OidcUpstream,
        now: i64,
    ) -> Result<Identity, UpstreamError> {
        client
            .finish(up, REDIRECT, "code-1", NONCE, VERIFIER, now)
            .await
    }

    #[tokio::test]
    async fn a_rotated_key_is_fetched_once_more() {
        let idp = FakeIdp::start().await;
        let (client, up) = (client(), idp.upstream());
        finish(&client, &up, NOW).await.unwrap();

        let rotated = SigningKey::new("key-2");
        idp.script().published = vec![rotated.clone()];
        idp.script().signer = rotated;
        let identity = finish(&client, &up, NOW).await.unwrap();

        assert_eq!(identity.username, "bob@example.com");
        assert_eq!(
            (
                idp.count("/.well-known/openid-configuration"),
                idp.count("/jwks")
            ),
            (1, 2)
        );
        finish(&client, &up, NOW).await.unwrap();
        assert_eq!(idp.count("/jwks"), 2, "the new key is cached");
    }

    #[tokio::test]
    async fn a_key_the_provider_does_not_publish_fails_after_one_refetch() {
        let idp = FakeIdp::start().await;
        idp.script().signer = SigningKey::new("key-unpublished");

        let err = finish(&client(), &idp.upstream(), NOW).await.unwrap_err();

        assert!(
            matches!(&err, UpstreamError::IdToken(why) if why.contains("signature")),
            "{err}"
        );
        assert_eq!(idp.count("/jwks"), 2);
    }

    #[tokio::test]
    async fn the_secret_goes_in_basic_unless_only_post_is_listed() {
        let basic = format!("authorization: basic {}", {
            URL_SAFE_NO_PAD
                .encode(format!("{CLIENT}:{SECRET}"))
                .to_lowercase()
        });
        // (methods listed in discovery, secret in the Authorization header)
        let cases = [
            (None, true),
            (
                Some(vec!["client_secret_basic", "client_secret_post"]),
                true,
            ),
            (Some(vec!["client_secret_post"]), false),
            (Some(vec!["private_key_jwt"]), true),
        ];
        for (methods, in_header) in cases {
            let idp = FakeIdp::start().await;
            idp.script().auth_methods = methods.clone();

            finish(&client(), &idp.upstream(), NOW).await.unwrap();

            let (head, body) = idp.last("/token");
            let head_has = head.contains(basic.trim_end_matches('='));
            let body_has = body.contains(&format!("client_secret={SECRET}"));
            assert_eq!(
                (head_has, body_has),
                (in_header, !in_header),
                "{methods:?}: {head}{body}"
            );
            assert!(
                body.contains("code_verifier=") && body.contains("grant_type=authorization_code")
            );
        }
    }

    #[tokio::test]
    async fn discovery_is_cached_for_the_ttl() {
        let idp = FakeIdp::start().await;
        let up = idp.upstream();
        let twice = async |client: OidcClient| {
            for _ in 0..2 {
                let url = client
                    .authorize_url(&up, REDIRECT, "s", NONCE, VERIFIER)
                    .await;
                url.unwrap();
            }
        };

        twice(client()).await;
        assert_eq!(idp.count("/.well-known/openid-configuration"), 1);
        twice(client().with_ttl(Duration::ZERO)).await;
        assert_eq!(idp.count("/.well-known/openid-configuration"), 3);
    }

    #[tokio::test]
    async fn unusable_discovery_answers_are_refused() {
        // (status, issuer the document names, message part, transient)
        let cases = [
            (302, None, "redirect", false),
            (503, None, "503", true),
            (404, None, "404", false),
            (
                200,
                Some("https://elsewhere.example"),
                "names issuer",
                false,
            ),
        ];
        for (status, named, part, transient) in cases {
            let idp = FakeIdp::start().await;
            idp.script().discovery_status = status;
            idp.script().named_issuer = named.map(str::to_owned);

            let err = client()
                .authorize_url(&idp.upstream(), REDIRECT, "s", NONCE, VERIFIER)
                .await
                .unwrap_err();

            assert!(
                matches!(err, UpstreamError::Discovery { .. }),
                "{status}: {err}"
            );
            assert!(err.to_string().contains(part), "{status}: {err}");
            assert_eq!(err.is_transient(), transient, "{status}: {err}");
            assert_eq!(idp.count("/jwks"), 0);
        }
    }

    #[tokio::test]
    async fn id_tokens_are_checked() {
        let idp = FakeIdp::start().await;
        let client = client();
        // (why, claims changed, now, part of the refusal or None for accepted)
        let cases = [
            (
                "exp within the leeway",
                json!({ "exp": NOW - 30 }),
                NOW,
                None,
            ),
            (
                "exp past the leeway",
                json!({ "exp": NOW - 90 }),
                NOW,
                Some("expired"),
            ),
            (
                "iat within the leeway",
                json!({ "iat": NOW + 30 }),
                NOW,
                None,
            ),
            (
                "iat past the leeway",
                json!({ "iat": NOW + 90 }),
                NOW,
                Some("future"),
            ),
            (
                "the clock is the argument",
                json!({}),
                NOW + 400,
                Some("expired"),
            ),
            (
                "a clock past year 9999",
                json!({}),
                i64::MAX,
                Some("expired"),
            ),
            ("a clock before 1970", json!({}), i64::MIN, Some("future")),
            (
                "azp of another client",
                json!({ "azp": "other" }),
                NOW,
                Some("azp"),
            ),
            ("azp of ours", json!({ "azp": CLIENT }), NOW, None),
            (
                "for another client",
                json!({ "aud": "other" }),
                NOW,
                Some("audience"),
            ),
            (
                "also for another",
                json!({ "aud": [CLIENT, "other"] }),
                NOW,
                Some("audience"),
            ),
            (
                "another issuer",
                json!({ "iss": "https://evil.example" }),
                NOW,
                Some("issuer"),
            ),
            ("no nonce", json!({ "nonce": null }), NOW, Some("nonce")),
            (
                "another nonce",
                json!({ "nonce": "nonce-2" }),
                NOW,
                Some("nonce"),
            ),
        ];
        for (why, claims, now, refusal) in cases {
            idp.script().claims = claims;

            let result = finish(&client, &idp.upstream(), now).await;

            match (refusal, result) {
                (None, Ok(_)) => {}
                (Some(part), Err(UpstreamError::IdToken(reason))) => {
                    assert!(reason.to_lowercase().contains(part), "{why}: {reason}");
                }
                (_, other) => panic!("{why}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_token_answer_without_an_id_token_is_refused() {
        let idp = FakeIdp::start().await;
        idp.script().with_id_token = false;

        let err = finish(&client(), &idp.upstream(), NOW).await.unwrap_err();

        assert!(matches!(&err, UpstreamError::IdToken(why) if why.contains("no ID token")));
    }

    #[tokio::test]
    async fn malformed_input_of_ours_is_an_error_not_a_panic() {
        let idp = FakeIdp::start().await;
        let (client, up) = (client(), idp.upstream());
        let short = "too-short";

        let cases = [
            client
                .authorize_url(&up, REDIRECT, "s", NONCE, short)
                .await
                .unwrap_err(),
            client
                .authorize_url(&up, REDIRECT, "s", NONCE, &"é".repeat(50))
                .await
                .unwrap_err(),
            client
                .authorize_url(&up, "/relative", "s", NONCE, VERIFIER)
                .await
                .unwrap_err(),
            client
                .authorize_url(&up, REDIRECT, "", NONCE, VERIFIER)
                .await
                .unwrap_err(),
            client
                .finish(&up, REDIRECT, "c", NONCE, short, NOW)
                .await
                .unwrap_err(),
        ];

        for err in cases {
            assert!(matches!(err, UpstreamError::InvalidRequest(_)), "{err}");
            assert!(!err.to_string().contains(short));
        }
        assert_eq!(idp.count("/token"), 0);
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn the_user_name_and_groups_come_from_the_configured_claims() {
        let up = OidcUpstream {
            username_claim: "upn".to_owned(),
            groups_claim: "roles".to_owned(),
            ..FakeIdpless::upstream()
        };
        let strings = |items: &[&str]| items.iter().map(|item| item.to_string()).collect();
        // (why, claims, the identity's groups)
        let cases = [
            (
                "a list",
                json!({ "upn": "a@x", "roles": ["r1", "r2"] }),
                strings(&["r1", "r2"]),
            ),
            (
                "one string",
                json!({ "upn": "a@x", "roles": "r1" }),
                strings(&["r1"]),
            ),
            ("absent", json!({ "upn": "a@x" }), Vec::new()),
            ("null", json!({ "upn": "a@x", "roles": null }), Vec::new()),
            (
                "empty names",
                json!({ "upn": "a@x", "roles": ["", "r1"] }),
                strings(&["r1"]),
            ),
            (
                "served elsewhere",
                json!({ "upn": "a@x", "_claim_names": { "roles": "src1" } }),
                Vec::new(),
            ),
        ];
        for (why, value, groups) in cases {
            let identity = identity_from(&up, &claims(value)).unwrap();
            assert_eq!(
                identity,
                Identity {
                    username: "a@x".to_owned(),
                    groups
                },
                "{why}"
            );
        }
    }

    #[test]
    fn a_claim_of_the_wrong_shape_fails_the_login() {
        let up = FakeIdpless::upstream();
        // (why, claims, the claim the error names)
        let cases = [
            ("no user name", json!({ "groups": ["g"] }), "email", true),
            ("an empty user name", json!({ "email": "" }), "email", true),
            ("a null user name", json!({ "email": null }), "email", true),
            ("a numeric user name", json!({ "email": 7 }), "email", false),
            (
                "groups as a number",
                json!({ "email": "a@x", "groups": 7 }),
                "groups",
                false,
            ),
            (
                "a group as a number",
                json!({ "email": "a@x", "groups": ["g", 7] }),
                "groups",
                false,
            ),
            (
                "groups as an object",
                json!({ "email": "a@x", "groups": {} }),
                "groups",
                false,
            ),
        ];
        for (why, value, named, missing) in cases {
            match identity_from(&up, &claims(value)) {
                Err(UpstreamError::MissingClaim { claim }) if missing => assert_eq!(claim, named),
                Err(UpstreamError::BadClaim { claim, .. }) if !missing => assert_eq!(claim, named),
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    /// An upstream for the tests that need no provider.
    struct FakeIdpless;

    impl FakeIdpless {
        fn upstream() -> OidcUpstream {
            OidcUpstream {
                issuer_url: "https://idp.example".parse().unwrap(),
                client_id: CLIENT.to_owned(),
                client_secret: SecretString::new(SECRET),
                scopes: Vec::new(),
                username_claim: "email".to_owned(),
                groups_claim: "groups".to_owned(),
            }
        }
    }

    #[test]
    fn scopes_are_sent_once_each_with_openid_left_to_the_crate() {
        let configured = ["email", "openid", "groups email", " profile "].map(String::from);

        let scopes: Vec<String> = extra_scopes(&configured)
            .iter()
            .map(|s| s.to_string())
            .collect();

        assert_eq!(scopes, ["email", "groups", "profile"]);
    }

    #[test]
    fn an_issuer_may_differ_by_the_slash_url_adds_and_nothing_else() {
        // (issuer the document names, issuer configured, accepted)
        let cases = [
            ("https://idp.example", "https://idp.example", true),
            ("https://idp.example/", "https://idp.example", true),
            (
                "https://idp.example/realms/a",
                "https://idp.example/realms/a",
                true,
            ),
            (
                "https://idp.example/realms/a/",
                "https://idp.example/realms/a",
                false,
            ),
            (
                "https://idp.example/realms/a",
                "https://idp.example/realms/a/",
                false,
            ),
            ("https://idp.example.evil", "https://idp.example", false),
            ("http://idp.example", "https://idp.example", false),
        ];
        for (named, configured, accepted) in cases {
            let configured: url::Url = configured.parse().unwrap();
            assert_eq!(
                same_issuer(named, &configured),
                accepted,
                "{named} vs {configured}"
            );
        }
    }

    #[test]
    fn descriptions_from_the_provider_lose_our_secrets() {
        let text = format!(
            "code code-1 and secret {SECRET} were wrong{}",
            "!".repeat(400)
        );

        let shown = scrubbed(&text, &["code-1", SECRET, ""]);

        assert!(shown.starts_with("code [redacted] and secret [redacted] were wrong"));
        assert_eq!(shown.chars().count(), 300);
    }

    #[test]
    fn out_of_range_clocks_are_clamped() {
        assert_eq!(unix_time(-5), UNIX_EPOCH);
        assert!(unix_time(i64::MAX) > unix_time(NOW));
    }

    #[test]
    fn the_futures_can_move_between_threads() {
        fn sendable<T: Send>(_: T) {}
        let (client, up) = (client(), FakeIdpless::upstream());

        sendable(client.authorize_url(&up, REDIRECT, "s", NONCE, VERIFIER));
        sendable(client.finish(&up, REDIRECT, "c", NONCE, VERIFIER, NOW));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let shown = format!("{:?} {:?}", FakeIdpless::upstream(), client());

        assert!(!shown.contains(SECRET), "{shown}");
    }
}
