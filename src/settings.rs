//! A connector's spec validated into typed values with every default filled in. This is the
//! one place the reference page's defaults live; everything downstream reads [`Settings`].

use std::collections::BTreeMap;

use jiff::SignedDuration;
use url::Url;

use crate::crd::{
    DEFAULT_REDIRECT_URIS, DevUserSpec, ManagedSecretSpec, McpConnectorSpec, SecretKeyRef,
};
use crate::keys::rotation::Policy;
use crate::oauth::redirect::Allowlist;

/// A spec field that cannot be used as written. The connector waits for the spec to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct SpecError {
    /// Path of the field, such as `spec.tokens.accessTTL`.
    pub field: String,
    /// What is wrong with it.
    pub why: String,
}

impl SpecError {
    fn new(field: impl Into<String>, why: impl Into<String>) -> SpecError {
        SpecError {
            field: field.into(),
            why: why.into(),
        }
    }
}

/// Token lifetimes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ttls {
    /// Access token lifetime.
    pub access: SignedDuration,
    /// Refresh token lifetime.
    pub refresh: SignedDuration,
    /// Authorization code lifetime.
    pub code: SignedDuration,
}

impl Default for Ttls {
    fn default() -> Self {
        Ttls {
            access: SignedDuration::from_hours(1),
            refresh: SignedDuration::from_hours(720),
            code: SignedDuration::from_secs(60),
        }
    }
}

/// One managed Secret: its name and how its keys age.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedSecret {
    /// Secret name in the connector's namespace.
    pub name: String,
    /// Rotation policy.
    pub policy: Policy,
}

/// The MCP server workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpServer {
    /// Deployment name.
    pub deployment: String,
    /// Pod labels, all required.
    pub selector: BTreeMap<String, String>,
    /// Where `/mcp` is proxied to.
    pub url: Url,
    /// The same, parsed once for the per-connection upstreams (`proxy::local`).
    pub uri: http::Uri,
    /// HTTP/2 with prior knowledge to `url`.
    pub http2: bool,
}

/// How users sign in, before any Secret is read.
#[derive(Clone, Debug, PartialEq)]
pub enum UpstreamSettings {
    /// An OpenID Connect provider.
    Oidc {
        /// Issuer URL.
        issuer_url: Url,
        /// Our client id there.
        client_id: String,
        /// Where our client secret is.
        secret_ref: SecretKeyRef,
        /// Scopes asked for.
        scopes: Vec<String>,
        /// Claim holding the user name.
        username_claim: String,
        /// Claim holding the groups.
        groups_claim: String,
    },
    /// An authenticating proxy in front.
    Proxy {
        /// Header with the user name.
        user_header: String,
        /// Header with the groups.
        groups_header: Option<String>,
        /// Header in which the proxy presents the shared secret.
        secret_header: String,
        /// Where the shared secret is.
        secret_ref: SecretKeyRef,
    },
    /// Development users (loopback base URLs only).
    DevUsers(Vec<DevUserSpec>),
}

/// A connector's spec, validated, with defaults.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `resource_name` of the protected-resource document.
    pub resource_name: String,
    /// The redirect URI allowlist.
    pub allowlist: Allowlist,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Extra browser origins allowed on `/mcp`.
    pub allowed_origins: Vec<String>,
    /// The MCP server workload.
    pub mcp_server: McpServer,
    /// Dependent Deployments.
    pub dependents: Vec<String>,
    /// How users sign in.
    pub upstream: UpstreamSettings,
    /// The DCR Secret.
    pub dcr: ManagedSecret,
    /// The signing-key Secret.
    pub signing_key: ManagedSecret,
    /// Token lifetimes.
    pub ttl: Ttls,
}

/// The default resource name of the reference page.
pub const DEFAULT_RESOURCE_NAME: &str = "Kloudfuse MCP (OAuth)";

/// A retired sealing key also verifies client registrations, so it is kept a little longer
/// than the longest-lived refresh token.
const SEAL_RETENTION_MARGIN: SignedDuration = SignedDuration::from_hours(1);

impl Settings {
    /// Validates a spec of a connector in `namespace`.
    pub fn from_spec(namespace: &str, spec: &McpConnectorSpec) -> Result<Settings, SpecError> {
        let ttl = ttls(spec)?;
        let allowlist = allowlist(spec)?;
        let scopes = scopes(spec)?;
        let mcp_server = mcp_server(namespace, spec)?;
        let upstream = upstream(spec)?;

        let secrets = spec.secrets.clone().unwrap_or_default();
        let dcr = managed_secret(
            secrets.dcr.as_ref(),
            "spec.secrets.dcr",
            "kfuse-mcp-oauth-dcr-secret",
            ttl.refresh
                .checked_add(SEAL_RETENTION_MARGIN)
                .unwrap_or(ttl.refresh),
        )?;
        let signing_key = managed_secret(
            secrets.signing_key.as_ref(),
            "spec.secrets.signingKey",
            "kfuse-mcp-oauth-signing-key",
            ttl.access,
        )?;
        if dcr.name == signing_key.name {
            return Err(SpecError::new(
                "spec.secrets",
                "the two Secrets must have distinct names",
            ));
        }

        let dependents = match &spec.dependents {
            Some(list) => list.iter().map(|d| d.deployment.clone()).collect(),
            None => vec!["user-mgmt-service".to_string()],
        };

        Ok(Settings {
            resource_name: spec
                .resource_name
                .clone()
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_RESOURCE_NAME.to_string()),
            allowlist,
            scopes,
            allowed_origins: spec.allowed_origins.clone().unwrap_or_default(),
            mcp_server,
            dependents,
            upstream,
            dcr,
            signing_key,
            ttl,
        })
    }
}

fn ttls(spec: &McpConnectorSpec) -> Result<Ttls, SpecError> {
    let defaults = Ttls::default();
    let tokens = spec.tokens.clone().unwrap_or_default();
    let hour = SignedDuration::from_hours(1);

    let access = duration(
        tokens.access_ttl.as_deref(),
        "spec.tokens.accessTTL",
        defaults.access,
    )?;
    let refresh = duration(
        tokens.refresh_ttl.as_deref(),
        "spec.tokens.refreshTTL",
        defaults.refresh,
    )?;
    let code = duration(
        tokens.code_ttl.as_deref(),
        "spec.tokens.codeTTL",
        defaults.code,
    )?;

    if access > SignedDuration::from_hours(24) {
        return Err(SpecError::new(
            "spec.tokens.accessTTL",
            "must be at most 24h",
        ));
    }
    if code > SignedDuration::from_mins(10) {
        return Err(SpecError::new(
            "spec.tokens.codeTTL",
            "must be at most 10m (RFC 6749 4.1.2)",
        ));
    }
    if refresh < hour.min(access) || refresh < access {
        return Err(SpecError::new(
            "spec.tokens.refreshTTL",
            "must be at least accessTTL",
        ));
    }
    Ok(Ttls {
        access,
        refresh,
        code,
    })
}

/// Parses a duration such as `720h` or `1h30m`.
pub fn duration(
    raw: Option<&str>,
    field: &str,
    default: SignedDuration,
) -> Result<SignedDuration, SpecError> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(default);
    };

    let std = humantime::parse_duration(raw)
        .map_err(|e| SpecError::new(field, format!("`{raw}` is not a duration: {e}")))?;
    let d = SignedDuration::try_from(std)
        .map_err(|_| SpecError::new(field, format!("`{raw}` is too long")))?;

    if d < SignedDuration::from_secs(1) {
        return Err(SpecError::new(field, "must be at least 1s"));
    }
    Ok(d)
}

fn allowlist(spec: &McpConnectorSpec) -> Result<Allowlist, SpecError> {
    let field = "spec.allowedRedirectURIs";
    let result = match &spec.allowed_redirect_uris {
        Some(list) if list.is_empty() => return Err(SpecError::new(field, "must not be empty")),
        Some(list) => Allowlist::parse(list),
        None => Allowlist::parse(&DEFAULT_REDIRECT_URIS),
    };
    result.map_err(|e| SpecError::new(field, e.to_string()))
}

fn scopes(spec: &McpConnectorSpec) -> Result<Vec<String>, SpecError> {
    let scopes = spec
        .scopes
        .clone()
        .unwrap_or_else(|| vec!["mcp".to_string()]);

    if scopes.is_empty() {
        return Err(SpecError::new(
            "spec.scopes",
            "must name at least one scope",
        ));
    }
    for scope in &scopes {
        // RFC 6749 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        let valid = !scope.is_empty()
            && scope
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !valid {
            return Err(SpecError::new(
                "spec.scopes",
                format!("`{scope}` is not a scope token"),
            ));
        }
        if scope == "offline_access" {
            return Err(SpecError::new(
                "spec.scopes",
                "offline_access is always accepted and must not be listed",
            ));
        }
    }
    Ok(scopes)
}

fn mcp_server(namespace: &str, spec: &McpConnectorSpec) -> Result<McpServer, SpecError> {
    let server = spec.mcp_server.clone().unwrap_or_default();
    let deployment = server.deployment.unwrap_or_else(|| "kf-mcp".to_string());
    let selector = match server.selector {
        Some(s) if !s.match_labels.is_empty() => s.match_labels,
        Some(_) => {
            return Err(SpecError::new(
                "spec.mcpServer.selector",
                "matchLabels must not be empty",
            ));
        }
        None => BTreeMap::from([("app.kubernetes.io/name".to_string(), deployment.clone())]),
    };

    let raw_url = server
        .url
        .unwrap_or_else(|| format!("http://{deployment}.{namespace}.svc:8080/mcp"));
    let url = Url::parse(&raw_url)
        .map_err(|e| SpecError::new("spec.mcpServer.url", format!("`{raw_url}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(SpecError::new(
            "spec.mcpServer.url",
            "must be an http or https URL",
        ));
    }
    // Why: a user and password in the URL would go out in the `Host` of every request on one
    // path and as Basic credentials on the other; the MCP server trusts the identity headers
    // instead.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SpecError::new(
            "spec.mcpServer.url",
            "must not hold a user or password",
        ));
    }

    let uri = url
        .as_str()
        .parse()
        .map_err(|e| SpecError::new("spec.mcpServer.url", format!("`{raw_url}`: {e}")))?;
    Ok(McpServer {
        deployment,
        selector,
        url,
        uri,
        http2: server.http2.unwrap_or(false),
    })
}

fn upstream(spec: &McpConnectorSpec) -> Result<UpstreamSettings, SpecError> {
    let up = &spec.upstream;
    let set = [
        up.oidc.is_some(),
        up.proxy.is_some(),
        up.dev_users.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(SpecError::new(
            "spec.upstream",
            "set exactly one of oidc, proxy or devUsers",
        ));
    }

    if let Some(oidc) = &up.oidc {
        let issuer_url = Url::parse(&oidc.issuer_url).map_err(|e| {
            SpecError::new(
                "spec.upstream.oidc.issuerURL",
                format!("`{}`: {e}", oidc.issuer_url),
            )
        })?;
        let loopback = issuer_url
            .host()
            .is_some_and(|h| crate::base_url::is_loopback(&h));
        if issuer_url.scheme() != "https" && !(issuer_url.scheme() == "http" && loopback) {
            return Err(SpecError::new(
                "spec.upstream.oidc.issuerURL",
                "must be an https URL",
            ));
        }
        if oidc.client_id.trim().is_empty() {
            return Err(SpecError::new(
                "spec.upstream.oidc.clientID",
                "must not be empty",
            ));
        }
        return Ok(UpstreamSettings::Oidc {
            issuer_url,
            client_id: oidc.client_id.clone(),
            secret_ref: oidc.client_secret_ref.clone(),
            scopes: oidc.scopes.clone().unwrap_or_else(|| {
                ["openid", "email", "profile", "groups"]
                    .map(String::from)
                    .to_vec()
            }),
            username_claim: oidc
                .username_claim
                .clone()
                .unwrap_or_else(|| "email".into()),
            groups_claim: oidc.groups_claim.clone().unwrap_or_else(|| "groups".into()),
        });
    }

    if let Some(proxy) = &up.proxy {
        if http::HeaderName::try_from(proxy.user_header.as_str()).is_err() {
            return Err(SpecError::new(
                "spec.upstream.proxy.userHeader",
                "not a header name",
            ));
        }
        return Ok(UpstreamSettings::Proxy {
            user_header: proxy.user_header.clone(),
            groups_header: proxy.groups_header.clone(),
            secret_header: proxy
                .secret_header
                .clone()
                .unwrap_or_else(|| "X-Auth-Proxy-Secret".to_string()),
            secret_ref: proxy.shared_secret_ref.clone(),
        });
    }

    let users = up.dev_users.clone().unwrap_or_default();
    if users.is_empty() {
        return Err(SpecError::new(
            "spec.upstream.devUsers",
            "must list at least one user",
        ));
    }
    Ok(UpstreamSettings::DevUsers(users))
}

fn managed_secret(
    spec: Option<&ManagedSecretSpec>,
    field: &str,
    default_name: &str,
    retain_for: SignedDuration,
) -> Result<ManagedSecret, SpecError> {
    let name = spec
        .and_then(|s| s.name.clone())
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| default_name.to_string());
    let rotate_every = duration(
        spec.and_then(|s| s.rotate_every.as_deref()),
        &format!("{field}.rotateEvery"),
        SignedDuration::from_hours(720),
    )?;

    if rotate_every < SignedDuration::from_mins(5) {
        return Err(SpecError::new(
            format!("{field}.rotateEvery"),
            "must be at least 5m",
        ));
    }
    Ok(ManagedSecret {
        name,
        policy: Policy {
            rotate_every,
            retain_for,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{McpServerSpec, OidcUpstreamSpec, TokensSpec, UpstreamSpec};

    fn spec() -> McpConnectorSpec {
        serde_json::from_value(serde_json::json!({
            "tls": {"host": "kf.example.com"},
            "upstream": {"oidc": {
                "issuerURL": "https://idp.example.com",
                "clientID": "kfuse-mcp",
                "clientSecretRef": {"name": "idp", "key": "secret"}
            }}
        }))
        .unwrap()
    }

    #[test]
    fn defaults_are_the_reference_pages() {
        let s = Settings::from_spec("kfuse", &spec()).unwrap();

        assert_eq!(s.resource_name, "Kloudfuse MCP (OAuth)");
        assert_eq!(s.scopes, vec!["mcp"]);
        assert_eq!(s.dcr.name, "kfuse-mcp-oauth-dcr-secret");
        assert_eq!(s.signing_key.name, "kfuse-mcp-oauth-signing-key");
        assert_eq!(s.dependents, vec!["user-mgmt-service"]);
        assert_eq!(s.mcp_server.deployment, "kf-mcp");
        assert_eq!(
            s.mcp_server.url.as_str(),
            "http://kf-mcp.kfuse.svc:8080/mcp"
        );
        assert_eq!(s.ttl, Ttls::default());
        assert!(s.allowlist.check("http://127.0.0.1:33418").is_ok());
        assert!(
            s.allowlist
                .check("https://claude.ai/api/mcp/auth_callback")
                .is_ok()
        );
    }

    #[test]
    fn a_given_allowlist_replaces_the_default() {
        let mut spec = spec();
        spec.allowed_redirect_uris = Some(vec!["https://claude.ai/api/mcp/auth_callback".into()]);

        let s = Settings::from_spec("kfuse", &spec).unwrap();

        assert!(s.allowlist.check("http://127.0.0.1:33418/cb").is_err());
    }

    #[test]
    fn bad_fields_are_named() {
        type Edit = fn(&mut McpConnectorSpec);
        let cases: Vec<(Edit, &str)> = vec![
            (
                |s| s.allowed_redirect_uris = Some(vec![]),
                "spec.allowedRedirectURIs",
            ),
            (
                |s| {
                    s.tokens = Some(TokensSpec {
                        access_ttl: Some("soon".into()),
                        ..Default::default()
                    })
                },
                "spec.tokens.accessTTL",
            ),
            (|s| s.scopes = Some(vec!["a b".into()]), "spec.scopes"),
            (
                |s| s.scopes = Some(vec!["offline_access".into()]),
                "spec.scopes",
            ),
            (|s| s.upstream = UpstreamSpec::default(), "spec.upstream"),
            (
                |s| {
                    s.upstream.oidc = Some(OidcUpstreamSpec {
                        issuer_url: "http://idp.example.com".into(),
                        ..Default::default()
                    })
                },
                "spec.upstream.oidc.issuerURL",
            ),
            (
                |s| {
                    s.mcp_server = Some(McpServerSpec {
                        url: Some("http://user:pw@kf-mcp.kfuse.svc:8080/mcp".into()),
                        ..Default::default()
                    })
                },
                "spec.mcpServer.url",
            ),
        ];
        for (edit, field) in cases {
            let mut spec = spec();
            edit(&mut spec);
            let err = Settings::from_spec("kfuse", &spec).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }
}
