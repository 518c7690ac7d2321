//! The connector's public base URL: which spec field wins, what a valid one is, and the
//! host key requests are routed by.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use url::{Host, Url};

/// A validated public base URL: absolute, `https` (or `http` on loopback), with a host and no
/// path, query or fragment. Its string form has no trailing slash, so the issuer and
/// `authorization_servers[0]` are byte-identical.
///
/// Every request is routed to one, so a clone shares it rather than copying its strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrl(Arc<Parts>);

#[derive(Debug, PartialEq, Eq)]
struct Parts {
    origin: String,
    resource: String,
    host_key: String,
    loopback: bool,
}

/// Why no base URL could be resolved, with the condition reason and what to set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Unresolved {
    /// Condition reason, CamelCase.
    pub reason: &'static str,
    /// What is wrong and which field to set.
    pub message: String,
}

impl BaseUrl {
    /// Parses and validates a base URL; `field` names where it came from, for the message.
    pub fn parse(raw: &str, field: &str) -> Result<BaseUrl, Unresolved> {
        let invalid = |why: &str| Unresolved {
            reason: "InvalidBaseURL",
            message: format!("{field} `{raw}` is not a valid base URL: {why}"),
        };

        let url = Url::parse(raw.trim()).map_err(|e| invalid(&e.to_string()))?;
        let host = url.host().ok_or_else(|| invalid("it has no host"))?;
        let loopback = is_loopback(&host);

        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => return Err(invalid("it must be https (http only for a loopback host)")),
            _ => return Err(invalid("it must be an https URL")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("it must not carry user information"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("it must have no query or fragment"));
        }
        if url.path() != "/" {
            return Err(invalid("it must have no path"));
        }

        let host_key = host_key(&host.to_string(), url.port());
        let origin = url.origin().ascii_serialization();
        Ok(BaseUrl(Arc::new(Parts {
            resource: format!("{origin}/mcp"),
            origin,
            host_key,
            loopback,
        })))
    }

    /// The base URL with no trailing slash: the issuer.
    pub fn as_str(&self) -> &str {
        &self.0.origin
    }

    /// The key this base URL is served under: lowercase host, and the port unless it is the
    /// scheme's default.
    pub fn host_key(&self) -> &str {
        &self.0.host_key
    }

    /// Whether the host is a loopback name or address.
    pub fn is_loopback(&self) -> bool {
        self.0.loopback
    }

    /// The canonical protected resource: the base URL and `/mcp`.
    pub fn resource(&self) -> &str {
        &self.0.resource
    }

    /// A URL of one of the connector's routes.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0.origin)
    }

    /// The same connector as reached on another loopback name with the same scheme and port,
    /// as `dev` serves it.
    pub fn with_loopback_host(&self, request_host: &str) -> Option<BaseUrl> {
        let scheme = self.0.origin.split("://").next()?;
        let candidate = BaseUrl::parse(&format!("{scheme}://{request_host}"), "Host").ok()?;
        let same_port = candidate.port() == self.port();

        (candidate.0.loopback && self.0.loopback && same_port).then_some(candidate)
    }

    fn port(&self) -> Option<u16> {
        Url::parse(&self.0.origin).ok()?.port_or_known_default()
    }
}

/// Resolves the base URL from the spec: `baseURL` wins over `https://` + `tls.host`.
pub fn resolve(base_url: Option<&str>, tls_host: Option<&str>) -> Result<BaseUrl, Unresolved> {
    let base_url = base_url.map(str::trim).filter(|s| !s.is_empty());
    let tls_host = tls_host.map(str::trim).filter(|s| !s.is_empty());

    match (base_url, tls_host) {
        (Some(url), _) => BaseUrl::parse(url, "spec.baseURL"),
        (None, Some(host)) if host.contains(['/', '?', '#', '@', ' ']) => Err(Unresolved {
            reason: "InvalidBaseURL",
            message: format!(
                "spec.tls.host `{host}` must be a bare hostname such as kloudfuse.example.com"
            ),
        }),
        (None, Some(host)) => BaseUrl::parse(&format!("https://{host}"), "spec.tls.host"),
        (None, None) => Err(Unresolved {
            reason: "NoBaseURL",
            message: "neither spec.baseURL nor spec.tls.host is set; set spec.tls.host to the \
                      hostname users reach the cluster on, or spec.baseURL to the full https URL"
                .into(),
        }),
    }
}

/// Normalises the host a request names (its target's authority, or its `Host` header) into
/// a key comparable with [`BaseUrl::host_key`].
/// Asked on every request, and most `Host` headers are already in that form, so it copies
/// only one that has an upper-case letter.
pub fn request_host_key(host_header: &str, https: bool) -> Cow<'_, str> {
    let host = host_header.trim().trim_end_matches('.');
    let default_port = if https { ":443" } else { ":80" };
    let host = host.strip_suffix(default_port).unwrap_or(host);

    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

fn host_key(host: &str, port: Option<u16>) -> String {
    let host = host.to_ascii_lowercase();
    match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

/// Whether a host is `localhost` or a loopback address.
pub fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_host_gives_https() {
        let base = resolve(None, Some("kloudfuse.example.com")).unwrap();

        assert_eq!(base.as_str(), "https://kloudfuse.example.com");
        assert_eq!(base.resource(), "https://kloudfuse.example.com/mcp");
        assert_eq!(base.host_key(), "kloudfuse.example.com");
    }

    #[test]
    fn the_override_wins() {
        let base = resolve(Some("https://mcp.example.com/"), Some("kf.example.com")).unwrap();

        assert_eq!(base.as_str(), "https://mcp.example.com");
    }

    #[test]
    fn neither_names_the_fields_to_set() {
        let err = resolve(None, Some(" ")).unwrap_err();

        assert_eq!(err.reason, "NoBaseURL");
        assert!(err.message.contains("spec.tls.host") && err.message.contains("spec.baseURL"));
    }

    #[test]
    fn invalid_values_are_refused_with_the_field_named() {
        let cases = [
            ("http://mcp.example.com", "plain http off loopback"),
            ("https://mcp.example.com/base", "a path"),
            ("https://mcp.example.com/?a=b", "a query"),
            ("https://mcp.example.com/#x", "a fragment"),
            ("https://user@mcp.example.com", "userinfo"),
            ("ftp://mcp.example.com", "another scheme"),
            ("mcp.example.com", "not absolute"),
            ("https://", "no host"),
        ];
        for (raw, why) in cases {
            let err = resolve(Some(raw), None).unwrap_err();
            assert_eq!(err.reason, "InvalidBaseURL", "{why}");
            assert!(
                err.message.contains("spec.baseURL"),
                "{why}: {}",
                err.message
            );
        }
        assert!(resolve(None, Some("evil.com/path")).is_err());
    }

    #[test]
    fn http_is_accepted_on_loopback_only() {
        let base = resolve(Some("http://127.0.0.1:8080"), None).unwrap();

        assert!(base.is_loopback());
        assert_eq!(base.host_key(), "127.0.0.1:8080");
        assert!(resolve(Some("http://[::1]:9"), None).unwrap().is_loopback());
    }

    #[test]
    fn request_hosts_normalise_like_base_urls() {
        assert_eq!(
            request_host_key("KF.Example.com:443", true),
            "kf.example.com"
        );
        assert_eq!(request_host_key("kf.example.com.", true), "kf.example.com");
        assert_eq!(request_host_key("127.0.0.1:8080", false), "127.0.0.1:8080");
    }

    #[test]
    fn loopback_aliases_keep_the_port() {
        let base = resolve(Some("http://127.0.0.1:8080"), None).unwrap();

        let alias = base.with_loopback_host("localhost:8080").unwrap();
        assert_eq!(alias.as_str(), "http://localhost:8080");
        assert!(base.with_loopback_host("localhost:9090").is_none());
        assert!(base.with_loopback_host("evil.com:8080").is_none());
    }
}
