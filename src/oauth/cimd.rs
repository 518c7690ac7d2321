//! Client ID Metadata Documents: a `client_id` that is an https URL names a JSON document
//! of client metadata, which this server fetches (draft-ietf-oauth-client-id-metadata-
//! document, adopted by the MCP authorization spec of 2025-11-25).
//!
//! Fetching a URL that an unauthenticated caller picks is server-side request forgery by
//! design, so the guards are about what the fetch can reach and what it can cost:
//!
//! - only `https` URLs of the shape in the draft's "Client Identifier URL" section: a
//!   host, a path other than `/`, no fragment, no userinfo, no `.` or `..` segments;
//! - every address the host resolves to must be a public one, checked inside the resolver
//!   that the HTTP client connects through, so the address checked is the address
//!   connected to (no window for DNS rebinding); literal IP hosts are checked before any
//!   request; no proxy is used, since a proxy would resolve the name itself;
//! - redirects are not followed (a 3xx is an error), the whole fetch has one deadline,
//!   the body is capped while it streams, and at most a few fetches run at once;
//! - documents are cached by URL, failures too (briefly), in a bounded cache, and
//!   concurrent requests for one URL share a single fetch.
//!
//! `allow_private` lifts the address check (and allows `http` to a loopback host) so that
//! tests can serve documents from loopback. Nothing else may set it.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HeaderMap};
use tokio::sync::Semaphore;
use url::{Host, Url};

/// Shortest time a fetched document (or a failure) is cached, whatever the server says.
const MIN_CACHE_TTL: Duration = Duration::from_secs(30);

/// Longest time anything is cached, whatever the configuration says.
const MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Longest `client_id` URL accepted.
const MAX_CLIENT_ID_LEN: usize = 2048;

/// Why a Client ID Metadata Document was not accepted.
///
/// Every variant is an OAuth `invalid_client` (see [`CimdError::error_code`]); messages
/// are safe to show to the client and never carry the document or internal addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CimdError {
    /// The `client_id` is not an https URL of the shape the draft requires.
    #[error("client_id is not a valid client metadata document URL: {0}")]
    InvalidUrl(&'static str),

    /// The host is, or resolves to, a loopback, private or otherwise non-public address.
    #[error("client_id host does not resolve to a public internet address")]
    ForbiddenAddress,

    /// The host name does not resolve. Same message as a forbidden address, so that the
    /// answer does not tell which internal names exist.
    #[error("client_id host does not resolve to a public internet address")]
    Unresolvable,

    /// Connecting, TLS or reading the answer failed.
    #[error("the client metadata document could not be fetched")]
    Fetch,

    /// The fetch did not finish within the configured timeout.
    #[error("fetching the client metadata document timed out")]
    Timeout,

    /// The URL answered with a redirect, which is never followed.
    #[error("the client metadata document URL answered with a redirect, which is not followed")]
    Redirect,

    /// The URL answered a status other than 200.
    #[error("the client metadata document URL answered HTTP {0} instead of 200")]
    Status(u16),

    /// The answer is not `application/json` (or `application/*+json`).
    #[error("the client metadata document is not served as application/json")]
    ContentType,

    /// The body is larger than the configured cap.
    #[error("the client metadata document is larger than {0} bytes")]
    TooLarge(usize),

    /// The body is not a JSON object.
    #[error("the client metadata document is not a JSON object")]
    NotJsonObject,

    /// The document's `client_id` is not the URL it was fetched from.
    #[error("the client metadata document's client_id is not the URL it was fetched from")]
    ClientIdMismatch,

    /// The document asks for `private_key_jwt`, which this server does not support.
    #[error("token_endpoint_auth_method private_key_jwt is not supported here; use none")]
    PrivateKeyJwtUnsupported,

    /// The document breaks another rule; the text says which.
    #[error("the client metadata document is invalid: {0}")]
    InvalidDocument(&'static str),

    /// Too many fetches were under way to start this one in time; not cached.
    #[error("the server is busy fetching client metadata documents; try again shortly")]
    Busy,

    /// The HTTP client could not be built (TLS set-up failed).
    #[error("the client metadata document fetcher could not be set up")]
    Setup,
}

impl CimdError {
    /// The OAuth error code for every variant: the client cannot be identified.
    pub fn error_code(&self) -> &'static str {
        "invalid_client"
    }
}

/// Client metadata from a Client ID Metadata Document (RFC 7591 2 names); other members
/// are ignored.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ClientMetadataDocument {
    /// Equal to the URL the document was fetched from.
    pub client_id: String,
    /// Name to show on a consent page; chosen by the client, so not proof of anything.
    pub client_name: Option<String>,
    /// Redirect URIs; never empty. Still to be checked against the connector's allowlist.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// `none`, or absent.
    pub token_endpoint_auth_method: Option<String>,
    /// Grant types; when present they include `authorization_code`.
    pub grant_types: Option<Vec<String>>,
    /// Response types; when present they include `code`.
    pub response_types: Option<Vec<String>>,
    /// Space-separated scopes the client may ask for.
    pub scope: Option<String>,
}

/// Limits and switches of a [`CimdFetcher`].
#[derive(Clone)]
pub struct FetcherConfig {
    /// Deadline of one whole fetch: resolve, connect, TLS, headers and body.
    pub timeout: Duration,
    /// Largest body accepted, enforced while it streams.
    pub max_bytes: usize,
    /// How long a document is cached; a smaller `Cache-Control: max-age` wins, and
    /// nothing is cached for less than 30 s.
    pub cache_ttl: Duration,
    /// How long a failure is cached, so a bad URL cannot make us hammer its host.
    pub failure_ttl: Duration,
    /// Most URLs cached at once; the oldest is evicted first.
    pub max_cache_entries: usize,
    /// Most fetches under way at once, over all URLs.
    pub max_concurrent_fetches: usize,
    /// Tests only: allow loopback and private addresses, and `http` to a loopback host.
    pub allow_private: bool,
    /// Tests only: resolve names with this instead of the system resolver. Its answers
    /// are checked like the system's.
    pub resolver: Option<Arc<dyn Resolve>>,
}

impl Default for FetcherConfig {
    fn default() -> Self {
        FetcherConfig {
            timeout: Duration::from_secs(5),
            max_bytes: 64 * 1024,
            cache_ttl: Duration::from_secs(300),
            failure_ttl: MIN_CACHE_TTL,
            max_cache_entries: 1000,
            max_concurrent_fetches: 16,
            allow_private: false,
            resolver: None,
        }
    }
}

impl fmt::Debug for FetcherConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetcherConfig")
            .field("timeout", &self.timeout)
            .field("max_bytes", &self.max_bytes)
            .field("cache_ttl", &self.cache_ttl)
            .field("failure_ttl", &self.failure_ttl)
            .field("max_cache_entries", &self.max_cache_entries)
            .field("max_concurrent_fetches", &self.max_concurrent_fetches)
            .field("allow_private", &self.allow_private)
            .field("resolver", &self.resolver.as_ref().map(|_| "custom"))
            .finish()
    }
}

/// Whether a `client_id` is meant as a Client ID Metadata Document URL: an https URL with
/// a host and a path other than `/`. [`CimdFetcher::fetch`] applies the full rules.
pub fn is_cimd_client_id(client_id: &str) -> bool {
    let https = client_id
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("https://"));

    https
        && Url::parse(client_id).is_ok_and(|u| {
            u.scheme() == "https" && u.host().is_some() && !matches!(u.path(), "" | "/")
        })
}

type FetchResult = Result<Arc<ClientMetadataDocument>, CimdError>;
type SharedFetch = Shared<BoxFuture<'static, FetchResult>>;

/// One cached URL.
enum Slot {
    /// A finished fetch, good or bad, until `expires`.
    Done {
        result: FetchResult,
        stored: Instant,
        expires: Instant,
    },
    /// A fetch under way; later callers wait for it.
    Pending {
        fetch: SharedFetch,
        started: Instant,
    },
}

impl Slot {
    fn since(&self) -> Instant {
        match self {
            Slot::Done { stored, .. } => *stored,
            Slot::Pending { started, .. } => *started,
        }
    }
}

/// The bounded cache of fetched documents and failures, by `client_id`.
struct Cache {
    slots: HashMap<String, Slot>,
    max_entries: usize,
}

impl Cache {
    /// Inserts or replaces a slot; when the cache is full, expired slots go first, then
    /// the oldest one.
    fn insert(&mut self, key: String, slot: Slot, now: Instant) {
        let max = self.max_entries.max(1);

        if !self.slots.contains_key(&key) && self.slots.len() >= max {
            self.slots.retain(|_, s| match s {
                Slot::Done { expires, .. } => *expires > now,
                Slot::Pending { .. } => true,
            });

            if self.slots.len() >= max {
                let oldest = self
                    .slots
                    .iter()
                    .min_by_key(|(_, s)| s.since())
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.slots.remove(&oldest);
                }
            }
        }

        self.slots.insert(key, slot);
    }
}

fn lock(cache: &Mutex<Cache>) -> MutexGuard<'_, Cache> {
    // A panic while holding the lock leaves a map that is still consistent.
    cache.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Fetches, validates and caches Client ID Metadata Documents. Cheap to clone.
#[derive(Clone)]
pub struct CimdFetcher {
    /// The guarded HTTP client, or why it could not be built (every fetch then fails).
    client: Result<reqwest::Client, CimdError>,
    cfg: Arc<FetcherConfig>,
    cache: Arc<Mutex<Cache>>,
    permits: Arc<Semaphore>,
}

impl fmt::Debug for CimdFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CimdFetcher")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl CimdFetcher {
    /// Builds the fetcher and its HTTP client: no proxy, no redirects, the guarded
    /// resolver, the configured deadline.
    ///
    /// Should the TLS stack fail to set up (it does not with the bundled provider), the
    /// error is logged and every fetch fails closed with [`CimdError::Setup`]; use
    /// [`CimdFetcher::try_new`] to fail at start-up instead.
    pub fn new(cfg: FetcherConfig) -> CimdFetcher {
        let client = build_client(&cfg);

        CimdFetcher::with_client(cfg, client)
    }

    /// Like [`CimdFetcher::new`], but returns [`CimdError::Setup`] when the HTTP client
    /// cannot be built.
    pub fn try_new(cfg: FetcherConfig) -> Result<CimdFetcher, CimdError> {
        let client = build_client(&cfg)?;

        Ok(CimdFetcher::with_client(cfg, Ok(client)))
    }

    fn with_client(cfg: FetcherConfig, client: Result<reqwest::Client, CimdError>) -> Self {
        let cache = Cache {
            slots: HashMap::new(),
            max_entries: cfg.max_cache_entries,
        };
        let permits = Semaphore::new(cfg.max_concurrent_fetches.max(1));

        CimdFetcher {
            client,
            cfg: Arc::new(cfg),
            cache: Arc::new(Mutex::new(cache)),
            permits: Arc::new(permits),
        }
    }

    /// Whether `client_id` names a metadata document for this fetcher: an https URL, or
    /// (with `allow_private`, for tests on loopback only) an http URL on a loopback host.
    pub fn names_document(&self, client_id: &str) -> bool {
        let loopback_http = self.cfg.allow_private
            && client_id
                .get(..7)
                .is_some_and(|p| p.eq_ignore_ascii_case("http://"))
            && validate_client_id(client_id, true).is_ok();
        is_cimd_client_id(client_id) || loopback_http
    }

    /// Fetches (or serves from cache) and validates the document named by `client_id`.
    pub async fn fetch(&self, client_id: &str) -> Result<Arc<ClientMetadataDocument>, CimdError> {
        self.fetch_at(client_id, Instant::now()).await
    }

    /// [`CimdFetcher::fetch`] with the clock passed in, so expiry is testable.
    async fn fetch_at(&self, client_id: &str, now: Instant) -> FetchResult {
        let url = validate_client_id(client_id, self.cfg.allow_private)?;

        let fetch = {
            let mut cache = lock(&self.cache);
            match cache.slots.get(client_id) {
                Some(Slot::Done {
                    result, expires, ..
                }) if *expires > now => {
                    tracing::debug!(client_id, ok = result.is_ok(), "client metadata cache hit");
                    return result.clone();
                }
                Some(Slot::Pending { fetch, .. }) => fetch.clone(),
                _ => {
                    let fetch = self.start_fetch(url, client_id, now);
                    let slot = Slot::Pending {
                        fetch: fetch.clone(),
                        started: now,
                    };
                    cache.insert(client_id.to_owned(), slot, now);
                    fetch
                }
            }
        };

        fetch.await
    }

    /// Starts one fetch, which stores its own result in the cache, and returns the future
    /// every caller for this URL awaits.
    ///
    /// The fetch runs as its own task, so a caller that goes away (a client hanging up)
    /// neither cancels it for the others nor leaves it parked past its deadline.
    fn start_fetch(&self, url: Url, client_id: &str, started: Instant) -> SharedFetch {
        let client = self.client.clone();
        let cfg = Arc::clone(&self.cfg);
        let permits = Arc::clone(&self.permits);
        let cache: Weak<Mutex<Cache>> = Arc::downgrade(&self.cache);
        let key = client_id.to_owned();

        let work = async move {
            let deadline = tokio::time::Instant::now() + cfg.timeout;

            // Why: waiting for our own fetch slots says nothing about this URL, so running
            // out of time there is `Busy`, which is not cached.
            let permit = tokio::time::timeout_at(deadline, permits.acquire()).await;
            let outcome = match (client, permit) {
                (Err(e), _) => Err(e),
                (Ok(_), Err(_)) => Err(CimdError::Busy),
                (Ok(_), Ok(Err(_))) => Err(CimdError::Fetch),
                (Ok(client), Ok(Ok(_permit))) => {
                    let fetch = fetch_document(&client, url, &key, cfg.max_bytes);
                    tokio::time::timeout_at(deadline, fetch)
                        .await
                        .unwrap_or(Err(CimdError::Timeout))
                }
            };

            let (result, ttl) = match outcome {
                Ok((doc, max_age)) => (Ok(Arc::new(doc)), success_ttl(cfg.cache_ttl, max_age)),
                Err(e) => {
                    tracing::warn!(client_id = %key, error = %e, "client metadata refused");
                    (Err(e), cfg.failure_ttl.max(MIN_CACHE_TTL))
                }
            };

            if let Some(cache) = cache.upgrade() {
                let mut cache = lock(&cache);
                if matches!(result, Err(CimdError::Busy)) {
                    cache.slots.remove(&key);
                } else {
                    let slot = Slot::Done {
                        result: result.clone(),
                        stored: started,
                        expires: started + ttl.min(MAX_CACHE_TTL),
                    };
                    cache.insert(key, slot, started);
                }
            }

            result
        };

        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let task = runtime.spawn(work);
                async move { task.await.unwrap_or(Err(CimdError::Fetch)) }
                    .boxed()
                    .shared()
            }
            Err(_) => work.boxed().shared(),
        }
    }
}

/// The HTTP client every fetch goes through.
fn build_client(cfg: &FetcherConfig) -> Result<reqwest::Client, CimdError> {
    let resolver = GuardedResolver {
        inner: cfg.resolver.clone(),
        allow_private: cfg.allow_private,
    };

    // Why: CIMD draft, Client Information Discovery: redirects MUST NOT be followed; and
    // a proxy would resolve the name itself, out of reach of the address check.
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(resolver)
        .https_only(!cfg.allow_private)
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        .user_agent(concat!("mcp-connector/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            tracing::error!(error = %e, "cannot build the client metadata document client");
            CimdError::Setup
        })
}

/// How long a good document is cached: the configured TTL, or a smaller `max-age`, but
/// never less than [`MIN_CACHE_TTL`].
fn success_ttl(configured: Duration, max_age: Option<Duration>) -> Duration {
    let ttl = max_age.map_or(configured, |m| m.min(configured));

    ttl.max(MIN_CACHE_TTL)
}

/// Checks the `client_id` URL (CIMD draft, Client Identifier URL) and a
/// literal IP host, before anything touches the network.
fn validate_client_id(raw: &str, allow_private: bool) -> Result<Url, CimdError> {
    let invalid = CimdError::InvalidUrl;

    if raw.is_empty() {
        return Err(invalid("it is empty"));
    }
    if raw.len() > MAX_CLIENT_ID_LEN {
        return Err(invalid("it is too long"));
    }
    // Why: `url` drops tabs and newlines silently, and reads `\` as `/`: what is checked
    // must be what is fetched and compared.
    if raw.contains('\\') || !raw.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid(
            "it contains whitespace, control, non-ASCII or `\\` characters",
        ));
    }
    // Why: CIMD draft, Client Identifier URL: it MUST NOT contain a fragment.
    if raw.contains('#') {
        return Err(invalid("it has a fragment"));
    }

    let url = Url::parse(raw).map_err(|_| invalid("it is not a URL"))?;
    let host = url.host().ok_or(invalid("it has no host"))?;

    let scheme_ok = match url.scheme() {
        "https" => true,
        // Why: tests serve documents over plain http from loopback only.
        "http" => allow_private && is_loopback(&host),
        _ => false,
    };
    // Why: CIMD draft, Client Identifier URL: it MUST use the https scheme.
    if !scheme_ok {
        return Err(invalid("it must use https"));
    }

    let after_scheme = raw.get(url.scheme().len()..).unwrap_or("");
    let Some(rest) = after_scheme.strip_prefix("://") else {
        return Err(invalid("it must start with https://"));
    };
    let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let path = path.split('?').next().unwrap_or("");

    // Why: CIMD draft, Client Identifier URL: it MUST NOT contain a username or password.
    if authority.contains('@') || !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("it has userinfo"));
    }

    // Why: CIMD draft, Client Identifier URL: no dot segments (`url` resolves them away,
    // so the raw text is checked), and a path that is more than `/`.
    if has_dot_segment(path) {
        return Err(invalid("its path has `.` or `..` segments"));
    }
    if matches!(url.path(), "" | "/") {
        return Err(invalid("its path is empty or /"));
    }

    // Why: a literal IP is connected to without the resolver, so it is checked here.
    let literal = match host {
        Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        Host::Domain(_) => None,
    };
    if let Some(ip) = literal
        && let Some(reason) = refusal(ip, allow_private)
    {
        tracing::warn!(%ip, reason, "client metadata URL names a non-public address");
        return Err(CimdError::ForbiddenAddress);
    }

    Ok(url)
}

/// Whether a host is loopback by its text: `localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Whether a path has a `.` or `..` segment, plain or percent-encoded.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// GETs the document and validates it; returns it with the answer's `max-age`.
async fn fetch_document(
    client: &reqwest::Client,
    url: Url,
    client_id: &str,
    max_bytes: usize,
) -> Result<(ClientMetadataDocument, Option<Duration>), CimdError> {
    let mut resp = client
        .get(url)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| classify(&e))?;

    // Why: CIMD draft, Client Information Discovery: no redirects, only 200 is a document.
    let status = resp.status();
    if status.is_redirection() {
        return Err(CimdError::Redirect);
    }
    if status != reqwest::StatusCode::OK {
        return Err(CimdError::Status(status.as_u16()));
    }

    // Why: CIMD draft, Client Information Discovery: other content types are an error.
    if !is_json_content_type(resp.headers()) {
        return Err(CimdError::ContentType);
    }

    // Why: refuse a declared oversize body before reading any of it.
    if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
        return Err(CimdError::TooLarge(max_bytes));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e))? {
        // Why: a body without (or lying about) Content-Length is capped while it streams.
        if body.len() + chunk.len() > max_bytes {
            return Err(CimdError::TooLarge(max_bytes));
        }
        body.extend_from_slice(&chunk);
    }

    let doc = parse_document(&body, client_id)?;

    Ok((doc, max_age(resp.headers())))
}

/// Parses and validates a document body fetched for `client_id`.
fn parse_document(body: &[u8], client_id: &str) -> Result<ClientMetadataDocument, CimdError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| CimdError::NotJsonObject)?;
    let Some(object) = value.as_object() else {
        return Err(CimdError::NotJsonObject);
    };

    // Why: CIMD draft, Client Metadata Document: no shared secret can exist for it.
    if object.contains_key("client_secret") || object.contains_key("client_secret_expires_at") {
        return Err(CimdError::InvalidDocument(
            "it must not contain client_secret",
        ));
    }

    let doc: ClientMetadataDocument = serde_json::from_value(value).map_err(|e| {
        tracing::debug!(error = %e, "client metadata document has ill-typed fields");
        CimdError::InvalidDocument("client_id is missing or a field has the wrong type")
    })?;

    validate_document(&doc, client_id)?;

    Ok(doc)
}

/// The rules on a parsed document's contents.
fn validate_document(doc: &ClientMetadataDocument, client_id: &str) -> Result<(), CimdError> {
    // Why: CIMD draft, Client Metadata Document: client_id MUST equal the URL by simple string
    // comparison (RFC 3986 6.2.1).
    if doc.client_id != client_id {
        return Err(CimdError::ClientIdMismatch);
    }

    if doc.redirect_uris.is_empty() {
        return Err(CimdError::InvalidDocument(
            "redirect_uris is missing or empty",
        ));
    }

    // Why: CIMD draft, Client Metadata Document: no shared-secret methods; private_key_jwt
    // needs a JWKS this server does not fetch.
    match doc.token_endpoint_auth_method.as_deref() {
        None | Some("none") => {}
        Some("private_key_jwt") => return Err(CimdError::PrivateKeyJwtUnsupported),
        Some("client_secret_basic" | "client_secret_post" | "client_secret_jwt") => {
            return Err(CimdError::InvalidDocument(
                "token_endpoint_auth_method must not be a client_secret method",
            ));
        }
        Some(_) => {
            return Err(CimdError::InvalidDocument(
                "token_endpoint_auth_method is not supported; use none",
            ));
        }
    }

    let lacks = |list: &Option<Vec<String>>, item: &str| {
        list.as_ref().is_some_and(|l| !l.iter().any(|x| x == item))
    };
    if lacks(&doc.grant_types, "authorization_code") {
        return Err(CimdError::InvalidDocument(
            "grant_types does not include authorization_code",
        ));
    }
    if lacks(&doc.response_types, "code") {
        return Err(CimdError::InvalidDocument(
            "response_types does not include code",
        ));
    }

    Ok(())
}

/// Whether the answer is `application/json` or `application/<something>+json`.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();

    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// The smallest `max-age` of the answer's `Cache-Control`; `no-store` and `no-cache` count
/// as zero (raised to the minimum TTL by the caller).
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|directive| {
            let directive = directive.trim().to_ascii_lowercase();
            if directive == "no-store" || directive == "no-cache" {
                return Some(Duration::ZERO);
            }
            let secs = directive
                .strip_prefix("max-age=")?
                .trim_matches('"')
                .parse()
                .ok()?;
            Some(Duration::from_secs(secs))
        })
        .min()
}

/// Turns a reqwest error into the variant to show, finding the guard's own errors in
/// its source chain.
fn classify(err: &reqwest::Error) -> CimdError {
    if err.is_timeout() {
        return CimdError::Timeout;
    }

    let mut source = err.source();
    while let Some(e) = source {
        if e.is::<AddressRefused>() {
            return CimdError::ForbiddenAddress;
        }
        if e.is::<ResolveFailed>() {
            return CimdError::Unresolvable;
        }
        source = e.source();
    }

    tracing::debug!(error = %err, "client metadata fetch failed");
    CimdError::Fetch
}

/// The resolver reqwest connects through: it resolves, then refuses the name unless
/// every address is public, and hands reqwest only the addresses it checked.
struct GuardedResolver {
    inner: Option<Arc<dyn Resolve>>,
    allow_private: bool,
}

/// A name resolved to at least one non-public address.
#[derive(Debug)]
struct AddressRefused;

impl fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("host resolves to a non-public address")
    }
}

impl StdError for AddressRefused {}

/// A name that did not resolve, or resolved to nothing.
#[derive(Debug)]
struct ResolveFailed;

impl fmt::Display for ResolveFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("host does not resolve")
    }
}

impl StdError for ResolveFailed {}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let inner = self.inner.clone();
        let allow_private = self.allow_private;

        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = match inner {
                Some(resolver) => match resolver.resolve(name).await {
                    Ok(addrs) => addrs.collect(),
                    Err(_) => Vec::new(),
                },
                None => match tokio::net::lookup_host((host.as_str(), 0)).await {
                    Ok(addrs) => addrs.collect(),
                    Err(_) => Vec::new(),
                },
            };

            if addrs.is_empty() {
                tracing::debug!(host, "client metadata host does not resolve");
                return Err(Box::new(ResolveFailed) as Box<dyn StdError + Send + Sync>);
            }

            // Why: every address is checked, since the connector may try any of them
            // (and an attacker's DNS can mix a public and a private one).
            for addr in &addrs {
                if let Some(reason) = refusal(addr.ip(), allow_private) {
                    let ip = addr.ip();
                    tracing::warn!(host, %ip, reason, "client metadata host is not public");
                    return Err(Box::new(AddressRefused) as Box<dyn StdError + Send + Sync>);
                }
            }

            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Why an address must not be fetched from, or `None` when it may be.
///
/// With `allow_private` (tests) only the addresses that cannot be a server are refused.
fn refusal(ip: IpAddr, allow_private: bool) -> Option<&'static str> {
    let reason = match ip {
        IpAddr::V4(v4) => v4_refusal(v4),
        IpAddr::V6(v6) => v6_refusal(v6),
    }?;

    let broadcast = ip == IpAddr::V4(Ipv4Addr::BROADCAST);
    let never_a_server = ip.is_unspecified() || ip.is_multicast() || broadcast;
    (!allow_private || never_a_server).then_some(reason)
}

/// IPv4 ranges that are not public unicast (IANA special-purpose registry, RFC 6890).
const V4_REFUSED: &[(Ipv4Addr, u32, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "this network (RFC 791)"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private (RFC 1918)"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "shared address space (RFC 6598)",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local and cloud metadata (RFC 3927)",
    ),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private (RFC 1918)"),
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        "IETF protocol assignments (RFC 6890)",
    ),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation (RFC 5737)"),
    (
        Ipv4Addr::new(192, 88, 99, 0),
        24,
        "6to4 relay anycast (RFC 7526)",
    ),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private (RFC 1918)"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking (RFC 2544)"),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        "documentation (RFC 5737)",
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        "documentation (RFC 5737)",
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "broadcast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved (RFC 1112)"),
];

/// IPv6 ranges that are not public unicast, inside or outside 2000::/3.
const V6_REFUSED: &[(Ipv6Addr, u32, &str)] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 128, "unspecified"),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1), 128, "loopback"),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        96,
        "IPv4-compatible (deprecated)",
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "local-use NAT64 (RFC 8215)",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "discard-only (RFC 6666)",
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF protocol assignments, Teredo",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation (RFC 3849)",
    ),
    (
        Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0),
        16,
        "6to4 (RFC 3056)",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation (RFC 9637)",
    ),
    (
        Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0),
        16,
        "segment routing (RFC 9602)",
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "unique local (RFC 4193)",
    ),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        "site-local (deprecated)",
    ),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
];

fn v4_refusal(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);

    V4_REFUSED.iter().find_map(|(net, len, reason)| {
        let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
        (bits & mask == u32::from(*net) & mask).then_some(*reason)
    })
}

fn v6_refusal(ip: Ipv6Addr) -> Option<&'static str> {
    // Why: an IPv4-mapped or NAT64 address reaches the IPv4 address inside it.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_refusal(v4);
    }
    let seg = ip.segments();
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::from((u32::from(seg[6]) << 16) | u32::from(seg[7]));
        return v4_refusal(v4);
    }

    let bits = u128::from(ip);
    let listed = V6_REFUSED.iter().find_map(|(net, len, reason)| {
        let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
        (bits & mask == u128::from(*net) & mask).then_some(*reason)
    });

    // Why: only 2000::/3 is global unicast (RFC 4291 2.4); the rest is special-purpose.
    let global_unicast = seg[0] & 0xe000 == 0x2000;
    listed.or((!global_unicast).then_some("not global unicast"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    type TestResult = Result<(), Box<dyn StdError>>;

    /// What the test server answers on one path.
    #[derive(Clone)]
    enum Reply {
        /// A complete answer.
        Body {
            status: u16,
            content_type: &'static str,
            headers: &'static str,
            body: String,
        },
        /// A 302 to another path of the server.
        Redirect(&'static str),
        /// A body without Content-Length that never ends.
        Endless,
        /// A Content-Length far over the cap, then silence.
        DeclaredHuge,
        /// Headers never come.
        Hang,
        /// Headers at once, then a byte every 100 ms.
        SlowBody,
        /// A valid answer after a delay, to make concurrent fetches overlap.
        Delayed(Duration, String),
    }

    type Routes = Arc<Mutex<HashMap<String, Reply>>>;
    type Hits = Arc<Mutex<HashMap<String, usize>>>;

    /// A minimal HTTP/1.1 server on 127.0.0.1 that counts connections and requests.
    struct TestServer {
        base: String,
        port: u16,
        routes: Routes,
        connections: Arc<AtomicUsize>,
        hits: Hits,
    }

    impl TestServer {
        async fn start() -> Result<TestServer, std::io::Error> {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let port = listener.local_addr()?.port();
            let routes: Routes = Arc::default();
            let hits: Hits = Arc::default();
            let connections = Arc::new(AtomicUsize::new(0));

            let (r, h, c) = (
                Arc::clone(&routes),
                Arc::clone(&hits),
                Arc::clone(&connections),
            );
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    c.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(stream, Arc::clone(&r), Arc::clone(&h)));
                }
            });

            Ok(TestServer {
                base: format!("http://127.0.0.1:{port}"),
                port,
                routes,
                connections,
                hits,
            })
        }

        /// Serves `reply` on `path`; `{base}` in a body becomes the server's base URL.
        fn route(&self, path: &str, reply: Reply) {
            let reply = match reply {
                Reply::Body {
                    status,
                    content_type,
                    headers,
                    body,
                } => Reply::Body {
                    status,
                    content_type,
                    headers,
                    body: body.replace("{base}", &self.base),
                },
                Reply::Delayed(delay, body) => {
                    Reply::Delayed(delay, body.replace("{base}", &self.base))
                }
                other => other,
            };
            guard(&self.routes).insert(path.to_owned(), reply);
        }

        fn url(&self, path: &str) -> String {
            format!("{}{path}", self.base)
        }

        fn hits(&self, path: &str) -> usize {
            guard(&self.hits).get(path).copied().unwrap_or(0)
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }
    }

    fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn serve(mut stream: TcpStream, routes: Routes, hits: Hits) -> std::io::Result<()> {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || request.len() > 16 * 1024 {
                return Ok(());
            }
            request.extend_from_slice(&buf[..n]);
        }

        let text = String::from_utf8_lossy(&request);
        let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
        *guard(&hits).entry(path.clone()).or_default() += 1;
        let reply = guard(&routes).get(&path).cloned();

        let head = |status: u16, content_type: &str, headers: &str, len: usize| {
            format!(
                "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\
                 Connection: close\r\n{headers}\r\n"
            )
        };
        match reply.unwrap_or(Reply::Body {
            status: 404,
            content_type: "application/json",
            headers: "",
            body: "{}".to_owned(),
        }) {
            Reply::Body {
                status,
                content_type,
                headers,
                body,
            } => {
                let head = head(status, content_type, headers, body.len());
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(body.as_bytes()).await?;
            }
            Reply::Delayed(delay, body) => {
                tokio::time::sleep(delay).await;
                let head = head(200, "application/json", "", body.len());
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(body.as_bytes()).await?;
            }
            Reply::Redirect(to) => {
                let head = head(302, "application/json", &format!("Location: {to}\r\n"), 0);
                stream.write_all(head.as_bytes()).await?;
            }
            Reply::Endless => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                            Connection: close\r\n\r\n[";
                stream.write_all(head.as_bytes()).await?;
                let chunk = [b' '; 4096];
                loop {
                    stream.write_all(&chunk).await?;
                }
            }
            Reply::DeclaredHuge => {
                let head = head(200, "application/json", "", 100_000_000);
                stream.write_all(head.as_bytes()).await?;
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Reply::Hang => tokio::time::sleep(Duration::from_secs(30)).await,
            Reply::SlowBody => {
                let head = head(200, "application/json", "", 100);
                stream.write_all(head.as_bytes()).await?;
                for _ in 0..100 {
                    stream.write_all(b" ").await?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }

        stream.shutdown().await
    }

    fn json(body: String) -> Reply {
        Reply::Body {
            status: 200,
            content_type: "application/json",
            headers: "",
            body,
        }
    }

    fn json_with(headers: &'static str, body: String) -> Reply {
        Reply::Body {
            status: 200,
            content_type: "application/json",
            headers,
            body,
        }
    }

    /// A valid document whose `client_id` is `{base}` followed by `path`.
    fn doc(path: &str) -> String {
        serde_json::json!({
            "client_id": format!("{{base}}{path}"),
            "client_name": "Test client",
            "redirect_uris": ["http://localhost/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "scope": "mcp",
            "logo_uri": "https://example.com/logo.png"
        })
        .to_string()
    }

    /// A fetcher allowed to reach the loopback test server.
    fn loopback_fetcher(tweak: impl FnOnce(&mut FetcherConfig)) -> Result<CimdFetcher, CimdError> {
        let mut cfg = FetcherConfig {
            allow_private: true,
            timeout: Duration::from_secs(3),
            ..FetcherConfig::default()
        };
        tweak(&mut cfg);

        CimdFetcher::try_new(cfg)
    }

    /// Resolves names from a fixed table, and counts the look-ups.
    #[derive(Default)]
    struct StaticResolver {
        table: HashMap<&'static str, Vec<IpAddr>>,
        lookups: AtomicUsize,
    }

    impl StaticResolver {
        fn new(table: HashMap<&'static str, Vec<IpAddr>>) -> Arc<StaticResolver> {
            Arc::new(StaticResolver {
                table,
                lookups: AtomicUsize::new(0),
            })
        }
    }

    impl Resolve for StaticResolver {
        fn resolve(&self, name: Name) -> Resolving {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            let addrs: Vec<SocketAddr> = self
                .table
                .get(name.as_str())
                .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect())
                .unwrap_or_default();

            Box::pin(async move { Ok(Box::new(addrs.into_iter()) as Addrs) })
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn client_id_url_table() {
        // Pure: literal addresses and URL shapes are refused before any network use.
        let forbidden = CimdError::ForbiddenAddress;
        let invalid = CimdError::InvalidUrl;
        let dots = invalid("its path has `.` or `..` segments");
        let chars = invalid("it contains whitespace, control, non-ASCII or `\\` characters");
        let long = format!("https://example.com/{}", "a".repeat(MAX_CLIENT_ID_LEN));

        #[rustfmt::skip]
        let rows: Vec<(&str, Result<(), CimdError>, &str)> = vec![
            ("https://example.com/client.json", Ok(()), "a document URL"),
            ("https://example.com:8443/a/b.json?v=1", Ok(()), "port and query are allowed"),
            ("https://localhost/client.json", Ok(()), "names are left to the resolver"),
            ("https://127.0.0.1/client.json", Err(forbidden.clone()), "IPv4 loopback"),
            ("https://127.8.9.10/c", Err(forbidden.clone()), "all of 127/8"),
            ("https://[::1]/client.json", Err(forbidden.clone()), "IPv6 loopback"),
            ("https://169.254.169.254/latest/meta-data/", Err(forbidden.clone()), "metadata"),
            ("https://10.0.0.1/x", Err(forbidden.clone()), "RFC 1918 10/8"),
            ("https://172.16.5.4/x", Err(forbidden.clone()), "RFC 1918 172.16/12"),
            ("https://172.31.255.255/x", Err(forbidden.clone()), "end of 172.16/12"),
            ("https://192.168.1.1/x", Err(forbidden.clone()), "RFC 1918 192.168/16"),
            ("https://100.64.0.1/x", Err(forbidden.clone()), "CGNAT"),
            ("https://0.0.0.0/x", Err(forbidden.clone()), "unspecified"),
            ("https://[::]/x", Err(forbidden.clone()), "IPv6 unspecified"),
            ("https://224.0.0.1/x", Err(forbidden.clone()), "multicast"),
            ("https://255.255.255.255/x", Err(forbidden.clone()), "broadcast"),
            ("https://192.0.2.1/x", Err(forbidden.clone()), "documentation"),
            ("https://[fe80::1]/x", Err(forbidden.clone()), "IPv6 link-local"),
            ("https://[fd00::1]/x", Err(forbidden.clone()), "unique local"),
            ("https://[2001:db8::1]/x", Err(forbidden.clone()), "IPv6 documentation"),
            ("https://[ff02::1]/x", Err(forbidden.clone()), "IPv6 multicast"),
            ("https://[::ffff:127.0.0.1]/x", Err(forbidden.clone()), "mapped loopback"),
            ("https://[::ffff:169.254.169.254]/x", Err(forbidden.clone()), "mapped metadata"),
            ("https://[::ffff:10.0.0.1]/x", Err(forbidden.clone()), "mapped private"),
            ("https://[64:ff9b::a9fe:a9fe]/x", Err(forbidden.clone()), "NAT64 of metadata"),
            ("https://[::127.0.0.1]/x", Err(forbidden.clone()), "IPv4-compatible"),
            ("https://0x7f.1/x", Err(forbidden.clone()), "hex loopback, normalised by url"),
            ("https://2130706433/x", Err(forbidden.clone()), "decimal loopback"),
            ("https://0177.0.0.1/x", Err(forbidden.clone()), "octal loopback"),
            ("http://example.com/x", Err(invalid("it must use https")), "cleartext"),
            ("http://127.0.0.1/x", Err(invalid("it must use https")), "cleartext loopback"),
            ("ftp://example.com/x", Err(invalid("it must use https")), "other scheme"),
            ("https://example.com/", Err(invalid("its path is empty or /")), "root path"),
            ("https://example.com", Err(invalid("its path is empty or /")), "no path"),
            ("https://example.com?x=1", Err(invalid("its path is empty or /")), "query only"),
            ("https://user@example.com/x", Err(invalid("it has userinfo")), "username"),
            ("https://u:p@example.com/x", Err(invalid("it has userinfo")), "password"),
            ("https://@example.com/x", Err(invalid("it has userinfo")), "empty userinfo"),
            ("https://example.com/x#f", Err(invalid("it has a fragment")), "fragment"),
            ("https://example.com/x#", Err(invalid("it has a fragment")), "empty fragment"),
            ("https://evil.com#@example.com/x", Err(invalid("it has a fragment")), "#@"),
            ("https://example.com/a/../x", Err(dots.clone()), "dot-dot segment"),
            ("https://example.com/./x", Err(dots.clone()), "dot segment"),
            ("https://example.com/%2e%2E/x", Err(dots.clone()), "encoded dot-dot"),
            ("https://example.com/x/..", Err(dots.clone()), "trailing dot-dot"),
            ("https:example.com/x", Err(invalid("it must start with https://")), "no //"),
            ("https:/example.com/x", Err(invalid("it must start with https://")), "one /"),
            ("", Err(invalid("it is empty")), "empty"),
            ("client-12345", Err(invalid("it is not a URL")), "a DCR-style id"),
            (" https://example.com/x", Err(chars.clone()), "leading space"),
            ("https://example.com/x\n", Err(chars.clone()), "newline"),
            ("https://exa\tmple.com/x", Err(chars.clone()), "tab, dropped by url"),
            ("https://exa\\mple.com/x", Err(chars.clone()), "backslash"),
            ("https://ex\u{0430}mple.com/x", Err(chars.clone()), "non-ASCII host"),
            (long.as_str(), Err(invalid("it is too long")), "too long"),
        ];

        let failures: Vec<String> = rows
            .iter()
            .filter_map(|(client_id, want, reason)| {
                let got = validate_client_id(client_id, false).map(|_| ());
                (got != *want)
                    .then(|| format!("{client_id:?}: want {want:?}, got {got:?} ({reason})"))
            })
            .collect();

        assert!(
            failures.is_empty(),
            "failing rows:\n{}",
            failures.join("\n")
        );
    }

    #[tokio::test]
    async fn resolver_refuses_unless_every_address_is_public() -> TestResult {
        // The resolver alone: it hands addresses back and never connects anywhere.
        let inner = StaticResolver::new(HashMap::from([
            (
                "public.example",
                vec![ip("93.184.216.34"), ip("2606:2800:220:1::1")],
            ),
            ("localhost", vec![ip("127.0.0.1"), ip("::1")]),
            ("internal.example", vec![ip("10.0.0.5")]),
            ("metadata.example", vec![ip("169.254.169.254")]),
            ("mixed.example", vec![ip("93.184.216.34"), ip("10.0.0.5")]),
            (
                "mixed6.example",
                vec![ip("2606:2800:220:1::1"), ip("fd00::1")],
            ),
            ("mapped.example", vec![ip("::ffff:127.0.0.1")]),
            ("nat64.example", vec![ip("64:ff9b::a9fe:a9fe")]),
            ("cgnat.example", vec![ip("100.100.100.100")]),
            ("empty.example", vec![]),
        ]));
        let guarded = GuardedResolver {
            inner: Some(inner),
            allow_private: false,
        };

        #[rustfmt::skip]
        let rows: &[(&str, &str, &str)] = &[
            ("public.example", "ok", "every address public"),
            ("localhost", "refused", "loopback"),
            ("internal.example", "refused", "RFC 1918"),
            ("metadata.example", "refused", "cloud metadata"),
            ("mixed.example", "refused", "one private address of two"),
            ("mixed6.example", "refused", "one unique-local address of two"),
            ("mapped.example", "refused", "IPv4-mapped loopback"),
            ("nat64.example", "refused", "NAT64 of the metadata address"),
            ("cgnat.example", "refused", "CGNAT"),
            ("empty.example", "unresolved", "no address"),
            ("unknown.example", "unresolved", "unknown name"),
        ];

        for (host, want, reason) in rows {
            let name: Name = host.parse().map_err(|_| "invalid test name")?;
            let got = match guarded.resolve(name).await {
                Ok(addrs) => format!("ok:{}", addrs.count()),
                Err(e) if e.is::<AddressRefused>() => "refused".to_owned(),
                Err(e) if e.is::<ResolveFailed>() => "unresolved".to_owned(),
                Err(e) => format!("other: {e}"),
            };
            let matched = got == *want || (*want == "ok" && got == "ok:2");
            assert!(matched, "{host}: want {want}, got {got} ({reason})");
        }
        Ok(())
    }

    #[tokio::test]
    async fn fetch_reports_guard_refusals() -> TestResult {
        // Only loopback names and addresses: even a broken guard would stay on this host.
        let resolver = StaticResolver::new(HashMap::from([(
            "localhost",
            vec![ip("127.0.0.1"), ip("::1")],
        )]));
        let fetcher = CimdFetcher::try_new(FetcherConfig {
            resolver: Some(resolver.clone()),
            ..FetcherConfig::default()
        })?;

        #[rustfmt::skip]
        let rows: &[(&str, CimdError, &str)] = &[
            ("https://127.0.0.1/client.json", CimdError::ForbiddenAddress, "literal"),
            ("https://[::1]/client.json", CimdError::ForbiddenAddress, "IPv6 literal"),
            ("https://localhost/client.json", CimdError::ForbiddenAddress, "resolved"),
            ("https://LOCALHOST/client.json", CimdError::ForbiddenAddress, "name case"),
            ("https://unknown.example/x", CimdError::Unresolvable, "unknown name"),
            ("http://localhost/x", CimdError::InvalidUrl("it must use https"), "cleartext"),
        ];

        for (client_id, want, reason) in rows {
            let got = fetcher.fetch(client_id).await.err();
            assert_eq!(got.as_ref(), Some(want), "{client_id}: {reason}");
        }
        assert_eq!(
            resolver.lookups.load(Ordering::SeqCst),
            3,
            "literals skip the resolver"
        );
        Ok(())
    }

    #[tokio::test]
    async fn guards_refuse_before_connecting_to_a_listening_server() -> TestResult {
        let server = TestServer::start().await?;
        server.route("/client.json", json(doc("/client.json")));
        // The system resolver: `localhost` comes from the hosts file, no DNS traffic.
        let fetcher = CimdFetcher::new(FetcherConfig::default());
        let port = server.port;

        let literal = fetcher
            .fetch(&format!("https://127.0.0.1:{port}/client.json"))
            .await;
        let named = fetcher
            .fetch(&format!("https://localhost:{port}/client.json"))
            .await;
        let cleartext = fetcher.fetch(&server.url("/client.json")).await;

        assert_eq!(literal.err(), Some(CimdError::ForbiddenAddress));
        assert_eq!(named.err(), Some(CimdError::ForbiddenAddress));
        assert_eq!(
            cleartext.err(),
            Some(CimdError::InvalidUrl("it must use https"))
        );
        assert_eq!(
            server.connections(),
            0,
            "the guard must refuse before connecting"
        );
        Ok(())
    }

    #[test]
    fn address_table() {
        #[rustfmt::skip]
        let rows: &[(&str, bool, &str)] = &[
            ("8.8.8.8", true, "public"),
            ("1.1.1.1", true, "public"),
            ("172.15.255.255", true, "just below 172.16/12"),
            ("172.32.0.0", true, "just above 172.16/12"),
            ("100.63.255.255", true, "just below CGNAT"),
            ("100.128.0.0", true, "just above CGNAT"),
            ("169.253.255.255", true, "just below link-local"),
            ("198.17.255.255", true, "just below benchmarking"),
            ("198.20.0.0", true, "just above benchmarking"),
            ("192.0.3.1", true, "just above 192.0.2/24"),
            ("223.255.255.255", true, "just below multicast"),
            ("2606:4700::1111", true, "public IPv6"),
            ("2001:4860:4860::8888", true, "public IPv6 outside 2001::/23"),
            ("::ffff:8.8.8.8", true, "mapped public"),
            ("64:ff9b::808:808", true, "NAT64 of public"),
            ("0.1.2.3", false, "this network"),
            ("10.255.255.255", false, "private"),
            ("100.64.0.0", false, "CGNAT"),
            ("100.127.255.255", false, "CGNAT end"),
            ("127.255.255.255", false, "loopback"),
            ("169.254.169.254", false, "metadata"),
            ("172.16.0.0", false, "private"),
            ("192.0.0.170", false, "IETF assignment"),
            ("192.88.99.1", false, "6to4 relay"),
            ("192.168.255.255", false, "private"),
            ("198.18.0.1", false, "benchmarking"),
            ("198.51.100.7", false, "documentation"),
            ("203.0.113.9", false, "documentation"),
            ("239.255.255.250", false, "multicast"),
            ("240.0.0.1", false, "reserved"),
            ("255.255.255.255", false, "broadcast"),
            ("::", false, "unspecified"),
            ("::1", false, "loopback"),
            ("::10.0.0.1", false, "IPv4-compatible"),
            ("::ffff:192.168.0.1", false, "mapped private"),
            ("::ffff:0:127.0.0.1", false, "IPv4-translated"),
            ("64:ff9b::7f00:1", false, "NAT64 of loopback"),
            ("64:ff9b:1::1", false, "local-use NAT64"),
            ("100::1", false, "discard-only"),
            ("2001::1", false, "Teredo"),
            ("2001:db8:1::1", false, "documentation"),
            ("2002:a00:1::1", false, "6to4"),
            ("3fff::1", false, "documentation"),
            ("5f00::1", false, "SRv6"),
            ("fc00::1", false, "unique local"),
            ("fdff:ffff::1", false, "unique local"),
            ("fe80::1", false, "link-local"),
            ("febf::1", false, "link-local end"),
            ("fec0::1", false, "site-local"),
            ("ff02::1", false, "multicast"),
            ("4000::1", false, "outside 2000::/3"),
        ];

        for (text, public, reason) in rows {
            let parsed: Result<IpAddr, _> = text.parse();
            let got = parsed.as_ref().map(|ip| refusal(*ip, false).is_none());
            assert_eq!(got.ok(), Some(*public), "{text}: {reason}");
        }
    }

    #[test]
    fn allow_private_still_refuses_non_servers() {
        let rows = [
            ("127.0.0.1", true),
            ("10.0.0.1", true),
            ("::1", true),
            ("0.0.0.0", false),
            ("::", false),
            ("224.0.0.1", false),
            ("ff02::1", false),
            ("255.255.255.255", false),
        ];

        for (text, allowed) in rows {
            assert_eq!(refusal(ip(text), true).is_none(), allowed, "{text}");
        }
    }

    #[test]
    fn cimd_client_ids_are_recognised() {
        let rows = [
            ("https://example.com/client.json", true),
            ("https://example.com/a/b?c=d", true),
            ("HTTPS://example.com/x", true),
            ("https://example.com/", false),
            ("https://example.com", false),
            ("http://example.com/x", false),
            ("dcr-4f1c9e", false),
            ("", false),
            ("https://", false),
        ];

        for (client_id, want) in rows {
            assert_eq!(is_cimd_client_id(client_id), want, "{client_id:?}");
        }
    }

    #[test]
    fn document_table() {
        let id = "https://app.example.com/client.json";
        let with = |extra: serde_json::Value| {
            let mut doc = serde_json::json!({
                "client_id": id,
                "redirect_uris": ["http://127.0.0.1/cb"],
            });
            if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
                d.extend(e.clone());
            }
            doc.to_string()
        };
        let bad = CimdError::InvalidDocument;
        let secret = bad("token_endpoint_auth_method must not be a client_secret method");
        let types = bad("client_id is missing or a field has the wrong type");
        let mismatch = Some(CimdError::ClientIdMismatch);
        let no_uris = Some(bad("redirect_uris is missing or empty"));
        let not_object = Some(CimdError::NotJsonObject);
        use serde_json::json;

        #[rustfmt::skip]
        let rows: Vec<(String, Option<CimdError>, &str)> = vec![
            (with(json!({})), None, "minimal document"),
            (with(json!({"token_endpoint_auth_method": "none"})), None, "public client"),
            (with(json!({"unknown_member": [1, 2]})), None, "other members are ignored"),
            (with(json!({"client_id": "https://app.example.com/other.json"})),
                mismatch.clone(), "another URL"),
            (with(json!({"client_id": "https://APP.example.com/client.json"})),
                mismatch.clone(), "simple string comparison, no case folding"),
            (with(json!({"client_id": "https://app.example.com/client.json/"})),
                mismatch.clone(), "trailing slash"),
            (with(json!({"redirect_uris": []})), no_uris.clone(), "empty redirect_uris"),
            (json!({"client_id": id}).to_string(), no_uris.clone(), "no redirect_uris"),
            (with(json!({"redirect_uris": "http://127.0.0.1/cb"})),
                Some(types.clone()), "redirect_uris is a string"),
            (json!({"redirect_uris": ["http://127.0.0.1/cb"]}).to_string(),
                Some(types.clone()), "no client_id"),
            (with(json!({"client_id": 7})), Some(types.clone()), "client_id is a number"),
            (with(json!({"token_endpoint_auth_method": "private_key_jwt"})),
                Some(CimdError::PrivateKeyJwtUnsupported), "private_key_jwt"),
            (with(json!({"token_endpoint_auth_method": "client_secret_basic"})),
                Some(secret.clone()), "shared secret"),
            (with(json!({"token_endpoint_auth_method": "client_secret_post"})),
                Some(secret.clone()), "shared secret"),
            (with(json!({"token_endpoint_auth_method": "client_secret_jwt"})),
                Some(secret.clone()), "shared secret"),
            (with(json!({"token_endpoint_auth_method": "tls_client_auth"})),
                Some(bad("token_endpoint_auth_method is not supported; use none")), "mTLS"),
            (with(json!({"client_secret": "s3cret"})),
                Some(bad("it must not contain client_secret")), "client_secret"),
            (with(json!({"grant_types": ["client_credentials"]})),
                Some(bad("grant_types does not include authorization_code")), "grants"),
            (with(json!({"response_types": ["token"]})),
                Some(bad("response_types does not include code")), "implicit"),
            ("[1, 2]".to_owned(), not_object.clone(), "array"),
            ("\"text\"".to_owned(), not_object.clone(), "string"),
            ("<html></html>".to_owned(), not_object.clone(), "HTML"),
            ("{\"client_id\": ".to_owned(), not_object.clone(), "truncated"),
            (String::new(), not_object.clone(), "empty body"),
        ];

        for (body, want, reason) in rows {
            let got = parse_document(body.as_bytes(), id).err();
            assert_eq!(got, want, "{body}: {reason}");
        }
    }

    #[test]
    fn cache_ttl_rules() {
        let five_min = Duration::from_secs(300);
        let rows = [
            (None, 300, "the configured TTL"),
            (Some(60), 60, "a smaller max-age wins"),
            (Some(3600), 300, "a larger max-age does not"),
            (Some(0), 30, "never below 30 s"),
            (Some(10), 30, "never below 30 s"),
        ];

        for (max_age, want, reason) in rows {
            let got = success_ttl(five_min, max_age.map(Duration::from_secs));
            assert_eq!(got, Duration::from_secs(want), "{reason}");
        }
    }

    #[tokio::test]
    async fn fetches_a_valid_document() -> TestResult {
        let server = TestServer::start().await?;
        server.route("/client.json", json(doc("/client.json")));
        let fetcher = loopback_fetcher(|_| {})?;
        let client_id = server.url("/client.json");

        let got = fetcher.fetch(&client_id).await?;

        assert_eq!(got.client_id, client_id);
        assert_eq!(got.client_name.as_deref(), Some("Test client"));
        assert_eq!(got.redirect_uris, ["http://localhost/callback"]);
        assert_eq!(got.token_endpoint_auth_method.as_deref(), Some("none"));
        assert_eq!(got.scope.as_deref(), Some("mcp"));
        Ok(())
    }

    #[tokio::test]
    async fn connects_to_the_address_the_resolver_checked() -> TestResult {
        let server = TestServer::start().await?;
        let client_id = format!("http://localhost:{}/client.json", server.port);
        let body =
            doc("/client.json").replace("{base}", &format!("http://localhost:{}", server.port));
        server.route("/client.json", json(body));
        let resolver = StaticResolver::new(HashMap::from([("localhost", vec![ip("127.0.0.1")])]));
        let fetcher = loopback_fetcher(|cfg| cfg.resolver = Some(resolver.clone()))?;

        let got = fetcher.fetch(&client_id).await?;

        assert_eq!(got.client_id, client_id);
        assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1);
        assert_eq!(server.hits("/client.json"), 1);
        Ok(())
    }

    #[tokio::test]
    async fn content_types() -> TestResult {
        let server = TestServer::start().await?;
        let typed = |content_type: &'static str| Reply::Body {
            status: 200,
            content_type,
            headers: "",
            body: doc("/vendor"),
        };
        server.route("/plain", typed("text/plain"));
        server.route("/html", typed("text/html"));
        server.route("/charset", typed("application/json; charset=utf-8"));
        server.route("/vendor", typed("application/vnd.example+json"));
        let fetcher = loopback_fetcher(|_| {})?;

        let plain = fetcher.fetch(&server.url("/plain")).await;
        let html = fetcher.fetch(&server.url("/html")).await;
        let charset = fetcher.fetch(&server.url("/charset")).await;
        let vendor = fetcher.fetch(&server.url("/vendor")).await;

        assert_eq!(plain.err(), Some(CimdError::ContentType));
        assert_eq!(html.err(), Some(CimdError::ContentType));
        assert_eq!(
            charset.err(),
            Some(CimdError::ClientIdMismatch),
            "parsed, then compared"
        );
        assert!(vendor.is_ok(), "{vendor:?}");
        Ok(())
    }

    #[tokio::test]
    async fn refuses_redirects_without_following() -> TestResult {
        let server = TestServer::start().await?;
        server.route("/moved", Reply::Redirect("/client.json"));
        server.route("/client.json", json(doc("/moved")));
        let fetcher = loopback_fetcher(|_| {})?;

        let got = fetcher.fetch(&server.url("/moved")).await;

        assert_eq!(got.err(), Some(CimdError::Redirect));
        assert_eq!(
            server.hits("/client.json"),
            0,
            "the redirect must not be followed"
        );
        Ok(())
    }

    #[tokio::test]
    async fn refuses_other_statuses() -> TestResult {
        let server = TestServer::start().await?;
        let error = Reply::Body {
            status: 500,
            content_type: "application/json",
            headers: "",
            body: doc("/broken"),
        };
        server.route("/broken", error);
        let fetcher = loopback_fetcher(|_| {})?;

        let broken = fetcher.fetch(&server.url("/broken")).await;
        let missing = fetcher.fetch(&server.url("/missing")).await;

        assert_eq!(broken.err(), Some(CimdError::Status(500)));
        assert_eq!(missing.err(), Some(CimdError::Status(404)));
        Ok(())
    }

    #[tokio::test]
    async fn refuses_a_client_id_mismatch() -> TestResult {
        let server = TestServer::start().await?;
        server.route("/client.json", json(doc("/other.json")));
        let fetcher = loopback_fetcher(|_| {})?;

        let got = fetcher.fetch(&server.url("/client.json")).await;

        assert_eq!(got.err(), Some(CimdError::ClientIdMismatch));
        Ok(())
    }

    #[tokio::test]
    async fn caps_the_body_size() -> TestResult {
        let max = 1024;
        let server = TestServer::start().await?;
        let mut exact = doc("/exact").replace("{base}", &server.base);
        exact.push_str(&" ".repeat(max - exact.len()));
        let over = format!("{exact} ");
        server.route("/exact", json(exact));
        server.route("/over", json(over));
        server.route("/endless", Reply::Endless);
        server.route("/declared", Reply::DeclaredHuge);
        let fetcher = loopback_fetcher(|cfg| cfg.max_bytes = max)?;

        let started = Instant::now();
        let exact = fetcher.fetch(&server.url("/exact")).await;
        let over = fetcher.fetch(&server.url("/over")).await;
        let endless = fetcher.fetch(&server.url("/endless")).await;
        let declared = fetcher.fetch(&server.url("/declared")).await;

        assert!(
            exact.is_ok(),
            "a body of exactly the cap is accepted: {exact:?}"
        );
        assert_eq!(over.err(), Some(CimdError::TooLarge(max)), "one byte over");
        assert_eq!(
            endless.err(),
            Some(CimdError::TooLarge(max)),
            "capped while streaming"
        );
        assert_eq!(
            declared.err(),
            Some(CimdError::TooLarge(max)),
            "Content-Length refused"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "refused early, not timed out"
        );
        Ok(())
    }

    #[tokio::test]
    async fn times_out_slow_servers() -> TestResult {
        let server = TestServer::start().await?;
        server.route("/hang", Reply::Hang);
        server.route("/slow", Reply::SlowBody);
        let fetcher = loopback_fetcher(|cfg| cfg.timeout = Duration::from_millis(400))?;

        let started = Instant::now();
        let hang = fetcher.fetch(&server.url("/hang")).await;
        let slow = fetcher.fetch(&server.url("/slow")).await;

        assert_eq!(hang.err(), Some(CimdError::Timeout));
        assert_eq!(
            slow.err(),
            Some(CimdError::Timeout),
            "the deadline covers the body"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        Ok(())
    }

    #[tokio::test]
    async fn caches_documents_until_their_ttl() -> TestResult {
        let server = TestServer::start().await?;
        server.route("/default", json(doc("/default")));
        server.route(
            "/short",
            json_with("Cache-Control: public, max-age=60\r\n", doc("/short")),
        );
        server.route(
            "/nostore",
            json_with("Cache-Control: no-store\r\n", doc("/nostore")),
        );
        let fetcher = loopback_fetcher(|_| {})?;
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);

        let first = fetcher.fetch_at(&server.url("/default"), t0).await?;
        let again = fetcher.fetch_at(&server.url("/default"), at(299)).await?;
        assert!(Arc::ptr_eq(&first, &again), "served from the cache");
        assert_eq!(server.hits("/default"), 1);
        fetcher.fetch_at(&server.url("/default"), at(301)).await?;
        assert_eq!(server.hits("/default"), 2, "fetched again after 5 minutes");

        fetcher.fetch_at(&server.url("/short"), t0).await?;
        fetcher.fetch_at(&server.url("/short"), at(59)).await?;
        assert_eq!(server.hits("/short"), 1);
        fetcher.fetch_at(&server.url("/short"), at(61)).await?;
        assert_eq!(server.hits("/short"), 2, "max-age=60 shortens the TTL");

        fetcher.fetch_at(&server.url("/nostore"), t0).await?;
        fetcher.fetch_at(&server.url("/nostore"), at(29)).await?;
        assert_eq!(
            server.hits("/nostore"),
            1,
            "cached for the 30 s minimum anyway"
        );
        fetcher.fetch_at(&server.url("/nostore"), at(31)).await?;
        assert_eq!(server.hits("/nostore"), 2);
        Ok(())
    }

    #[tokio::test]
    async fn caches_failures_briefly() -> TestResult {
        let server = TestServer::start().await?;
        server.route("/moved", Reply::Redirect("/elsewhere"));
        let fetcher = loopback_fetcher(|_| {})?;
        let t0 = Instant::now();
        let url = server.url("/moved");

        let first = fetcher.fetch_at(&url, t0).await.err();
        let second = fetcher
            .fetch_at(&url, t0 + Duration::from_secs(29))
            .await
            .err();
        assert_eq!(first, Some(CimdError::Redirect));
        assert_eq!(second, first, "the cached failure is the same error");
        assert_eq!(server.hits("/moved"), 1);

        fetcher
            .fetch_at(&url, t0 + Duration::from_secs(31))
            .await
            .ok();
        assert_eq!(server.hits("/moved"), 2, "tried again after 30 s");
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_fetch() -> TestResult {
        let server = TestServer::start().await?;
        server.route(
            "/slow.json",
            Reply::Delayed(Duration::from_millis(300), doc("/slow.json")),
        );
        let fetcher = loopback_fetcher(|_| {})?;
        let url = server.url("/slow.json");

        let fetches = (0..10).map(|_| fetcher.fetch(&url));
        let results = futures::future::join_all(fetches).await;

        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(server.hits("/slow.json"), 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_cancel_the_fetch() -> TestResult {
        let server = TestServer::start().await?;
        server.route(
            "/slow.json",
            Reply::Delayed(Duration::from_millis(300), doc("/slow.json")),
        );
        let fetcher = loopback_fetcher(|_| {})?;
        let url = server.url("/slow.json");

        let impatient = tokio::time::timeout(Duration::from_millis(50), fetcher.fetch(&url)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let later = fetcher.fetch(&url).await;

        assert!(impatient.is_err(), "the first caller gave up");
        assert!(later.is_ok(), "{later:?}");
        assert_eq!(
            server.hits("/slow.json"),
            1,
            "the fetch finished and was cached"
        );
        Ok(())
    }

    #[tokio::test]
    async fn waiting_for_a_fetch_slot_is_busy_and_not_cached() -> TestResult {
        let server = TestServer::start().await?;
        server.route("/client.json", json(doc("/client.json")));
        let fetcher = loopback_fetcher(|cfg| {
            cfg.max_concurrent_fetches = 1;
            cfg.timeout = Duration::from_millis(200);
        })?;
        let url = server.url("/client.json");

        let held = Arc::clone(&fetcher.permits).acquire_owned().await?;
        let busy = fetcher.fetch(&url).await;
        drop(held);
        let later = fetcher.fetch(&url).await;

        assert_eq!(busy.err(), Some(CimdError::Busy));
        assert!(later.is_ok(), "{later:?}");
        assert_eq!(
            server.hits("/client.json"),
            1,
            "the busy attempt sent nothing"
        );
        Ok(())
    }

    #[tokio::test]
    async fn the_cache_is_bounded() -> TestResult {
        let server = TestServer::start().await?;
        for path in ["/a", "/b", "/c"] {
            server.route(path, json(doc(path)));
        }
        let fetcher = loopback_fetcher(|cfg| cfg.max_cache_entries = 2)?;
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);

        fetcher.fetch_at(&server.url("/a"), at(0)).await?;
        fetcher.fetch_at(&server.url("/b"), at(1)).await?;
        fetcher.fetch_at(&server.url("/c"), at(2)).await?;
        fetcher.fetch_at(&server.url("/b"), at(3)).await?;
        fetcher.fetch_at(&server.url("/a"), at(4)).await?;

        assert_eq!(guard(&fetcher.cache).slots.len(), 2);
        assert_eq!(server.hits("/b"), 1, "kept: not the oldest");
        assert_eq!(
            server.hits("/a"),
            2,
            "the oldest was evicted and fetched again"
        );
        Ok(())
    }
}
