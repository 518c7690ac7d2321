//! Redirect URI checks: the allowlist a registration must pass, and the comparison of an
//! authorization request's `redirect_uri` with the URIs a client registered.
//!
//! Both checks go through one strict reader of the URI text before anything is compared.
//! It refuses what RFC 6749 3.1.2 forbids (fragments, relative URIs) and anything that
//! a browser and `url::Url` could read differently from the way it looks: userinfo,
//! whitespace and control characters (which `url` silently drops), backslashes (read as
//! `/`), non-ASCII text, percent-encoded or numeric host spellings, trailing dots and
//! dot segments. What passes is in canonical form, so comparing its parts is sound.
//!
//! Contract: the URIs handed to [`match_registered`] are those that passed
//! [`Allowlist::check`] at registration (or came from a Client ID Metadata Document and
//! passed it too), stored as the client sent them. The redirect itself goes to the
//! *requested* URI: for a loopback URI it carries the port the client listens on now.

use std::fmt;

use url::{Host, Url};

/// The allowlist used when a connector names none (SPEC 2, `allowedRedirectURIs`).
pub const DEFAULT_ALLOWED_REDIRECT_URIS: [&str; 4] = [
    "http://localhost:*",
    "http://127.0.0.1:*",
    "https://claude.ai/api/mcp/auth_callback",
    "https://claude.com/api/mcp/auth_callback",
];

/// Longest redirect URI accepted; real ones are far shorter.
const MAX_URI_LEN: usize = 2048;

/// Schemes that can run code or read local files when navigated to: never an allowed
/// redirect, not even when an entry names them.
const FORBIDDEN_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "file",
    "vbscript",
    "blob",
    "filesystem",
    "about",
];

/// Why a redirect URI or an allowlist entry was refused.
///
/// The messages never repeat the refused URI: it is client input and ends up on an
/// error page. An invalid allowlist entry is named, since it is the operator's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    /// An allowlist entry in `spec.allowedRedirectURIs` cannot be used.
    #[error("allowlist entry `{entry}` is invalid: {reason}")]
    InvalidEntry {
        /// The entry as written in the spec.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The redirect URI is an empty string.
    #[error("redirect URI is empty")]
    Empty,

    /// The redirect URI is longer than any real one.
    #[error("redirect URI is longer than {MAX_URI_LEN} characters")]
    TooLong,

    /// Whitespace, a control character or a non-ASCII character.
    #[error(
        "redirect URI contains whitespace, a control character or a non-ASCII character \
         (send internationalised hosts in punycode)"
    )]
    ForbiddenCharacter,

    /// A backslash, which browsers read as `/`.
    #[error("redirect URI contains a backslash")]
    Backslash,

    /// A fragment (`#`), which RFC 6749 3.1.2 forbids.
    #[error("redirect URI must not contain a fragment")]
    Fragment,

    /// No scheme: a relative or scheme-relative reference.
    #[error("redirect URI must be an absolute URI")]
    NotAbsolute,

    /// The text does not parse as a URI at all.
    #[error("redirect URI is not a valid URI")]
    Malformed,

    /// A URI without a hierarchical part, such as `mailto:x`.
    #[error("redirect URI has no hierarchical path")]
    Opaque,

    /// A username or password before the host.
    #[error("redirect URI must not contain userinfo")]
    Userinfo,

    /// A scheme that is never an allowed redirect (`javascript:`, `data:`, `file:` ...).
    #[error("redirect URI uses a scheme that is never allowed")]
    ForbiddenScheme,

    /// `http` to a host that is not loopback.
    #[error("redirect URI uses http to a host that is not loopback; use https")]
    InsecureHttp,

    /// The host is spelled in a form that normalises to another host text.
    #[error(
        "redirect URI host is not in canonical form (percent-encoded, numeric or \
         otherwise unusual spelling)"
    )]
    NonCanonicalHost,

    /// The host ends with a dot.
    #[error("redirect URI host must not end with a dot")]
    TrailingDot,

    /// A `.` or `..` path segment, plain or percent-encoded.
    #[error("redirect URI path must not contain `.` or `..` segments")]
    DotSegment,

    /// A port, path or query that is not in canonical form.
    #[error(
        "redirect URI has a port, path or query that is not in canonical form \
         (characters that must be percent-encoded, or leading zeros in the port)"
    )]
    NonCanonical,

    /// The URI is well formed but no allowlist entry matches it.
    #[error("redirect URI is not allowed by this connector's allowedRedirectURIs")]
    NotAllowed,
}

/// What an allowlist entry says about the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortRule {
    /// `:*`: any port, or none.
    Any,
    /// An explicit port; the scheme's default port matches it when it is that port.
    Exact(u16),
    /// No port written: only the scheme's default port.
    Default,
}

/// One allowlist entry, parsed once from the connector's `spec.allowedRedirectURIs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    /// Lower-case scheme.
    scheme: String,
    /// Normalised (lower-case, punycode) host; `None` only for a private-use scheme
    /// entry without a host, which matches any host of that scheme.
    host: Option<String>,
    /// The port rule.
    port: PortRule,
    /// An exact path, or `None` when the entry has no path (or `/`): any path matches.
    path: Option<String>,
}

impl AllowEntry {
    /// Parses one entry: `scheme://host[:port|:*][/path]`, or `scheme:` / `scheme://`
    /// for a private-use scheme (RFC 8252 7.1) whose every URI is allowed.
    pub fn parse(s: &str) -> Result<AllowEntry, RedirectError> {
        let invalid = |reason| RedirectError::InvalidEntry {
            entry: s.to_owned(),
            reason,
        };

        if s.is_empty() {
            return Err(invalid("it is empty"));
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("it contains whitespace or control characters"));
        }
        if s.contains('\\') {
            return Err(invalid("it contains a backslash"));
        }
        // Why: RFC 6749 3.1.2 forbids fragments in redirect URIs.
        if s.contains('#') {
            return Err(invalid("it has a fragment"));
        }
        if s.contains('?') {
            return Err(invalid("it has a query, which entries do not support"));
        }

        let Some((scheme, rest)) = split_scheme(s) else {
            return Err(invalid("it is not an absolute URI (scheme://host)"));
        };
        let scheme = scheme.to_ascii_lowercase();
        // Why: navigating to these runs script or reads local files (RFC 9700 4.1).
        if FORBIDDEN_SCHEMES.contains(&scheme.as_str()) {
            return Err(invalid("its scheme can never be a redirect target"));
        }
        let web = scheme == "http" || scheme == "https";

        if !web && (rest.is_empty() || rest == "//") {
            return Ok(AllowEntry {
                scheme,
                host: None,
                port: PortRule::Any,
                path: None,
            });
        }

        let (authority, path_text) = match rest.strip_prefix("//") {
            Some(after) => {
                let end = after.find('/').unwrap_or(after.len());
                (Some(&after[..end]), &after[end..])
            }
            None => (None, rest),
        };
        if web && authority.is_none() {
            return Err(invalid("it has no host (write scheme://host)"));
        }

        let (authority, any_port) = match authority {
            Some(a) => match a.strip_suffix(":*") {
                Some(host) => (Some(host), true),
                None => (Some(a), false),
            },
            None => (None, false),
        };
        if let Some(a) = authority {
            // Why: userinfo hides the real host from a reader (RFC 3986 7.6).
            if a.contains('@') {
                return Err(invalid("it has userinfo"));
            }
            if a.contains('*') {
                return Err(invalid(
                    "only the port may be `*`; wildcard hosts are not supported",
                ));
            }
        }

        let rebuilt = match authority {
            Some(a) => format!("{scheme}://{a}{path_text}"),
            None => format!("{scheme}:{path_text}"),
        };
        let url = Url::parse(&rebuilt).map_err(|_| invalid("it is not a valid URI"))?;
        if url.cannot_be_a_base() {
            return Err(invalid("it has no hierarchical path"));
        }

        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .map(str::to_ascii_lowercase);
        if web && host.is_none() {
            return Err(invalid("it has no host"));
        }
        if host.as_deref().is_some_and(|h| h.ends_with('.')) {
            return Err(invalid("its host ends with a dot"));
        }
        // Why: RFC 8252 8.3 allows http only for loopback; OAuth 2.1 requires TLS otherwise.
        if scheme == "http" && !url.host().is_some_and(|h| is_loopback_host(&h)) {
            return Err(invalid(
                "http is allowed only for a loopback host; use https",
            ));
        }

        let port = if any_port {
            PortRule::Any
        } else {
            match url.port() {
                Some(p) => PortRule::Exact(p),
                None => PortRule::Default,
            }
        };

        if has_dot_segment(path_text) {
            return Err(invalid("its path has `.` or `..` segments"));
        }
        let path = match url.path() {
            "" | "/" => None,
            p => Some(p.to_owned()),
        };

        Ok(AllowEntry {
            scheme,
            host,
            port,
            path,
        })
    }

    /// Whether a URI that passed [`parse_strict`] matches this entry.
    fn matches(&self, url: &Url) -> bool {
        if url.scheme() != self.scheme {
            return false;
        }

        let host_ok = match (&self.host, url.host_str()) {
            (None, _) => true,
            (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
            (Some(_), None) => false,
        };
        if !host_ok {
            return false;
        }

        let port_ok = match self.port {
            PortRule::Any => true,
            PortRule::Exact(p) => url.port_or_known_default() == Some(p),
            PortRule::Default => url.port().is_none(),
        };
        if !port_ok {
            return false;
        }

        match &self.path {
            None => true,
            Some(p) => url.path() == p,
        }
    }
}

/// The parsed `spec.allowedRedirectURIs` of one connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    /// Entries in spec order; a URI is allowed when any matches.
    entries: Vec<AllowEntry>,
}

impl Default for Allowlist {
    /// The allowlist of [`DEFAULT_ALLOWED_REDIRECT_URIS`].
    fn default() -> Self {
        let loopback = |host: &str| AllowEntry {
            scheme: "http".to_owned(),
            host: Some(host.to_owned()),
            port: PortRule::Any,
            path: None,
        };
        let callback = |host: &str| AllowEntry {
            scheme: "https".to_owned(),
            host: Some(host.to_owned()),
            port: PortRule::Default,
            path: Some("/api/mcp/auth_callback".to_owned()),
        };

        Allowlist {
            entries: vec![
                loopback("localhost"),
                loopback("127.0.0.1"),
                callback("claude.ai"),
                callback("claude.com"),
            ],
        }
    }
}

impl Allowlist {
    /// Parses every entry; the first invalid one is the error, naming it.
    ///
    /// An empty list is valid and allows nothing: a list given replaces the default.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Allowlist, RedirectError> {
        let entries = entries
            .iter()
            .map(|e| AllowEntry::parse(e.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Allowlist { entries })
    }

    /// Registration-time check (SPEC 5): the URI must match an entry.
    ///
    /// Returns the parsed URI. Store the string the client sent, not this value's
    /// serialisation (which adds a `/` to an empty path): the authorization request
    /// repeats the client's string.
    pub fn check(&self, uri: &str) -> Result<Url, RedirectError> {
        let url = parse_strict(uri)?;

        // Why: RFC 8252 8.3 and OAuth 2.1 allow cleartext http only to loopback.
        if url.scheme() == "http" && !url.host().is_some_and(|h| is_loopback_host(&h)) {
            return Err(RedirectError::InsecureHttp);
        }

        if self.entries.iter().any(|e| e.matches(&url)) {
            Ok(url)
        } else {
            Err(RedirectError::NotAllowed)
        }
    }
}

/// Authorize-time check: `requested` must equal one of `registered` exactly, except that a
/// loopback registered URI (`localhost`, 127.0.0.0/8, `[::1]`) matches the same scheme,
/// host, path and query on any port (RFC 8252 7.3); one registered with no port matches
/// any port too.
///
/// Returns the registered URI that matched. Redirect to `requested`: for loopback it
/// carries the port the client is listening on now.
pub fn match_registered<'a>(registered: &'a [String], requested: &str) -> Option<&'a str> {
    let req = parse_strict(requested).ok()?;

    let req_loopback = req.host().is_some_and(|h| is_loopback_host(&h));
    // Why: OAuth 2.1 and RFC 8252 8.3 allow cleartext http only to loopback, whatever
    // was registered.
    if req.scheme() == "http" && !req_loopback {
        return None;
    }

    // Why: RFC 6749 3.1.2.3 and OAuth 2.1 compare redirect URIs as exact strings.
    if let Some(exact) = registered.iter().find(|r| r.as_str() == requested) {
        return Some(exact.as_str());
    }

    // Why: RFC 8252 7.3, a native client binds an ephemeral loopback port per login.
    if !req_loopback || !matches!(req.scheme(), "http" | "https") {
        return None;
    }
    registered
        .iter()
        .find(|r| parse_strict(r).is_ok_and(|reg| same_but_port(&reg, &req)))
        .map(String::as_str)
}

/// Whether two strictly parsed loopback URIs differ at most in their port.
fn same_but_port(registered: &Url, requested: &Url) -> bool {
    registered.scheme() == requested.scheme()
        && registered.host().is_some_and(|h| is_loopback_host(&h))
        && registered.host_str() == requested.host_str()
        && registered.path() == requested.path()
        && registered.query() == requested.query()
}

/// Whether a host is a loopback host of RFC 8252 7.3 and 8.3: `localhost`, an address in
/// 127.0.0.0/8, or `::1`.
///
/// IPv4-mapped forms (`::ffff:127.0.0.1`) and names under `localhost.` are not: clients
/// do not use them, and a wider test only adds ways to be surprised.
pub fn is_loopback_host(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Splits `scheme:rest`, requiring an RFC 3986 3.1 scheme (a letter, then letters,
/// digits, `+`, `-` or `.`).
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;

    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));

    (first_ok && rest_ok).then_some((scheme, rest))
}

/// Whether a path has a `.` or `..` segment, also percent-encoded (`%2e`), which
/// `url` resolves away and browsers too (RFC 3986 5.2.4).
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// Whether a raw host is made of the characters a canonical host can have: unreserved
/// characters for a name (RFC 3986 3.2.2), hex digits, `:` and `.` in brackets for IPv6.
fn host_chars_ok(host: &str) -> bool {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.'),
        None => host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')),
    }
}

/// Reads a redirect URI strictly: it must be absolute, ASCII, without fragment or
/// userinfo, and already in the canonical form `url` would give it, so that what is
/// compared is what a browser will navigate to.
fn parse_strict(raw: &str) -> Result<Url, RedirectError> {
    if raw.is_empty() {
        return Err(RedirectError::Empty);
    }
    if raw.len() > MAX_URI_LEN {
        return Err(RedirectError::TooLong);
    }

    // Why: `url` drops tabs and newlines and trims spaces, so the text checked would not
    // be the text sent; CR/LF also splits headers (RFC 9110 5.5).
    if raw.contains('\\') {
        return Err(RedirectError::Backslash);
    }
    if !raw.chars().all(|c| c.is_ascii_graphic()) {
        return Err(RedirectError::ForbiddenCharacter);
    }
    // Why: RFC 6749 3.1.2, the endpoint URI must not include a fragment component.
    if raw.contains('#') {
        return Err(RedirectError::Fragment);
    }

    let Some((scheme, rest)) = split_scheme(raw) else {
        return Err(RedirectError::NotAbsolute);
    };
    // Why: navigating to these runs script or reads local files (RFC 9700 4.1).
    if FORBIDDEN_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
        return Err(RedirectError::ForbiddenScheme);
    }

    let url = Url::parse(raw).map_err(|_| RedirectError::Malformed)?;
    if url.cannot_be_a_base() {
        return Err(RedirectError::Opaque);
    }
    let web = matches!(url.scheme(), "http" | "https");

    let (authority, after) = match rest.strip_prefix("//") {
        Some(a) => {
            let end = a.find(['/', '?']).unwrap_or(a.len());
            (Some(&a[..end]), &a[end..])
        }
        None => (None, rest),
    };
    // Why: `url` accepts `https:host` and `https:/host`; browsers read those differently.
    if web && authority.is_none() {
        return Err(RedirectError::Malformed);
    }

    if let Some(authority) = authority {
        check_authority(authority, &url)?;
    }

    let (path, query) = match after.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (after, None),
    };
    // Why: RFC 3986 5.2.4, dot segments make the matched path differ from the one shown.
    if has_dot_segment(path) {
        return Err(RedirectError::DotSegment);
    }
    let path_ok = url.path() == path || (path.is_empty() && url.path() == "/");
    if !path_ok || url.query() != query {
        return Err(RedirectError::NonCanonical);
    }

    Ok(url)
}

/// Checks the raw authority of a redirect URI against what `url` made of it.
fn check_authority(authority: &str, url: &Url) -> Result<(), RedirectError> {
    // Why: RFC 3986 7.6, userinfo makes `https://good@evil` look like it names `good`.
    if authority.contains('@') || !url.username().is_empty() || url.password().is_some() {
        return Err(RedirectError::Userinfo);
    }

    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => (&authority[..=end], &authority[end + 1..]),
            None => return Err(RedirectError::Malformed),
        }
    } else {
        match authority.find(':') {
            Some(colon) => (&authority[..colon], &authority[colon..]),
            None => (authority, ""),
        }
    };

    if host.ends_with('.') {
        return Err(RedirectError::TrailingDot);
    }
    // Why: a host spelled `%6cocalhost`, `127.1` or `0x7f000001` passes a naive look at
    // the text but resolves elsewhere than it reads (RFC 3986 7.4 and 7.6).
    let canonical = url.host_str().unwrap_or("");
    if !host_chars_ok(host) || !host.eq_ignore_ascii_case(canonical) {
        return Err(RedirectError::NonCanonicalHost);
    }

    if let Some(digits) = port.strip_prefix(':') {
        let plain = !digits.is_empty()
            && digits.len() <= 5
            && digits.chars().all(|c| c.is_ascii_digit())
            && !(digits.len() > 1 && digits.starts_with('0'));
        let same = digits.parse::<u16>().ok() == url.port_or_known_default();
        if !plain || !same {
            return Err(RedirectError::NonCanonical);
        }
    } else if !port.is_empty() {
        return Err(RedirectError::Malformed);
    }

    Ok(())
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}",
            self.scheme,
            self.host.as_deref().unwrap_or("")
        )?;

        match self.port {
            PortRule::Any if self.host.is_some() => write!(f, ":*")?,
            PortRule::Exact(p) => write!(f, ":{p}")?,
            PortRule::Any | PortRule::Default => {}
        }

        write!(f, "{}", self.path.as_deref().unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RedirectError as E;

    /// What a case expects: accepted, or refused with this error.
    type Expect = Result<(), RedirectError>;

    const OK: Expect = Ok(());

    fn refused(e: RedirectError) -> Expect {
        Err(e)
    }

    fn bad_char() -> Expect {
        Err(RedirectError::ForbiddenCharacter)
    }

    /// Runs a table of `(uri, expected, reason)` rows against an allowlist and reports
    /// every row that fails, not only the first.
    fn run_check_table(list: &Allowlist, rows: &[(&str, Expect, &str)]) {
        let failures: Vec<String> = rows
            .iter()
            .filter_map(|(uri, want, reason)| {
                let got = list.check(uri).map(|_| ());
                (got != *want).then(|| format!("{uri:?}: want {want:?}, got {got:?} ({reason})"))
            })
            .collect();

        assert!(
            failures.is_empty(),
            "failing rows:\n{}",
            failures.join("\n")
        );
    }

    #[test]
    fn default_allowlist_attack_table() {
        let long = format!("http://localhost:5000/{}", "a".repeat(MAX_URI_LEN));
        #[rustfmt::skip]
        let rows: Vec<(&str, Expect, &str)> = vec![
            // Accepted.
            ("http://127.0.0.1:33418", OK, "C7: loopback with no path"),
            ("http://127.0.0.1:33418/", OK, "C7 with the root path"),
            ("http://localhost:51353/oauth/callback", OK, "C16: Gemini CLI"),
            ("http://127.0.0.1:5000/callback", OK, "C5: loopback CLI callback"),
            ("http://localhost/callback", OK, "C6: loopback without a port, `*` port"),
            ("http://127.0.0.1:5000/callback?x=1", OK, "a query is allowed (RFC 6749 3.1.2)"),
            ("HTTP://LOCALHOST:8080/cb", OK, "scheme and host are case-insensitive"),
            ("https://claude.ai/api/mcp/auth_callback", OK, "claude.ai callback"),
            ("https://claude.com/api/mcp/auth_callback", OK, "claude.com callback"),
            ("https://claude.ai:443/api/mcp/auth_callback", OK, "explicit default port"),
            // Not listed.
            ("http://[::1]:8000/cb", refused(E::NotAllowed), "[::1] is not in the default list"),
            ("http://127.0.0.2:5000/cb", refused(E::NotAllowed), "only 127.0.0.1 is listed"),
            ("https://localhost/cb", refused(E::NotAllowed), "https://localhost is not listed"),
            ("https://claude.ai:8443/api/mcp/auth_callback", refused(E::NotAllowed), "port"),
            ("https://claude.ai/api/mcp/auth_callback/", refused(E::NotAllowed), "exact path"),
            ("https://claude.ai/api/mcp/auth_callback2", refused(E::NotAllowed), "prefix only"),
            ("https://claude.ai/API/mcp/auth_callback", refused(E::NotAllowed), "path case"),
            ("https://claude.ai/api/mcp/auth_callback;x", refused(E::NotAllowed), "path params"),
            ("https://claude.ai/api/mcp/auth_callback%00", refused(E::NotAllowed), "NUL suffix"),
            ("https://claude.ai/api%2Fmcp%2Fauth_callback", refused(E::NotAllowed), "%2F"),
            ("https://claude.ai/other", refused(E::NotAllowed), "another path on the host"),
            ("https://claude.ai", refused(E::NotAllowed), "no path against a path entry"),
            ("https://claude.ai.evil.com/api/mcp/auth_callback", refused(E::NotAllowed), "suffix"),
            ("https://evilclaude.ai/api/mcp/auth_callback", refused(E::NotAllowed), "prefix"),
            ("https://www.claude.ai/api/mcp/auth_callback", refused(E::NotAllowed), "subdomain"),
            ("https://localhost.evil.com/cb", refused(E::NotAllowed), "localhost lookalike"),
            ("cursor://anysphere.cursor-retrieval/cb", refused(E::NotAllowed), "unlisted scheme"),
            ("localhost:5000/cb", refused(E::Opaque), "`localhost` read as a scheme"),
            // Fragments and userinfo.
            ("https://claude.ai/api/mcp/auth_callback#x", refused(E::Fragment), "fragment"),
            ("https://claude.ai/api/mcp/auth_callback#", refused(E::Fragment), "empty fragment"),
            ("https://evil.com#@claude.ai/api/mcp/auth_callback", refused(E::Fragment), "#@"),
            ("https://claude.ai@evil.com/api/mcp/auth_callback", refused(E::Userinfo), "user@"),
            ("https://evil.com@claude.ai/api/mcp/auth_callback", refused(E::Userinfo), "even ok"),
            ("https://a:b@claude.ai/api/mcp/auth_callback", refused(E::Userinfo), "password"),
            ("https://@claude.ai/api/mcp/auth_callback", refused(E::Userinfo), "empty userinfo"),
            ("http://localhost:5000@evil.com/cb", refused(E::Userinfo), "port-like userinfo"),
            // Cleartext http.
            ("http://claude.ai/api/mcp/auth_callback", refused(E::InsecureHttp), "http claude"),
            ("http://example.com/cb", refused(E::InsecureHttp), "non-loopback http"),
            ("http://localhost.evil.com:5000/cb", refused(E::InsecureHttp), "lookalike"),
            ("http://127.0.0.1.nip.io:5000/cb", refused(E::InsecureHttp), "wildcard DNS"),
            ("http://[::ffff:127.0.0.1]:5000/cb", refused(E::NonCanonicalHost), "mapped v6"),
            // Host spellings.
            ("https://claude.ai./api/mcp/auth_callback", refused(E::TrailingDot), "FQDN dot"),
            ("http://localhost.:5000/cb", refused(E::TrailingDot), "localhost dot"),
            ("https://claude%2Eai/api/mcp/auth_callback", refused(E::NonCanonicalHost), "%2E"),
            ("http://%6cocalhost:5000/cb", refused(E::NonCanonicalHost), "encoded host"),
            ("http://0x7f000001:5000/cb", refused(E::NonCanonicalHost), "hex IPv4"),
            ("http://2130706433:5000/cb", refused(E::NonCanonicalHost), "decimal IPv4"),
            ("http://127.1:5000/cb", refused(E::NonCanonicalHost), "short IPv4"),
            ("http://0177.0.0.1:5000/cb", refused(E::NonCanonicalHost), "octal IPv4"),
            ("http://[0:0::1]:5000/cb", refused(E::NonCanonicalHost), "long IPv6"),
            ("https:///claude.ai/api/mcp/auth_callback", refused(E::NonCanonicalHost), "///"),
            ("https://claude\u{3002}ai/api/mcp/auth_callback", bad_char(), "ideographic dot"),
            ("https://claude\u{ff0e}ai/api/mcp/auth_callback", bad_char(), "fullwidth dot"),
            ("http://\u{ff4c}ocalhost:5000/cb", bad_char(), "fullwidth l"),
            ("https://cl\u{0430}ude.ai/api/mcp/auth_callback", bad_char(), "Cyrillic a"),
            ("https:claude.ai/api/mcp/auth_callback", refused(E::Malformed), "no //"),
            ("https:/claude.ai/api/mcp/auth_callback", refused(E::Malformed), "one /"),
            // Paths.
            ("https://claude.ai/api/mcp/auth_callback/../x", refused(E::DotSegment), "../ out"),
            ("https://claude.ai/api/x/../mcp/auth_callback", refused(E::DotSegment), "../ in"),
            ("https://claude.ai/api/mcp/./auth_callback", refused(E::DotSegment), "./"),
            ("https://claude.ai/api/mcp/%2e%2e/mcp/auth_callback", refused(E::DotSegment), "%2e"),
            ("https://claude.ai/api/mcp/.%2E/mcp/auth_callback", refused(E::DotSegment), ".%2E"),
            ("http://localhost:5000/a/..", refused(E::DotSegment), "dot segment, any path"),
            ("https://claude.ai/api/mcp/auth_callback?a=\"x", refused(E::NonCanonical), "quote"),
            ("https://claude.ai/api/mcp/{x}", refused(E::NonCanonical), "unencoded braces"),
            // Ports.
            ("http://localhost:05000/cb", refused(E::NonCanonical), "leading zero"),
            ("http://localhost:/cb", refused(E::NonCanonical), "empty port"),
            ("http://localhost:99999/cb", refused(E::Malformed), "port out of range"),
            // Characters.
            (" http://localhost:5000/cb", refused(E::ForbiddenCharacter), "leading space"),
            ("http://localhost:5000/cb\n", refused(E::ForbiddenCharacter), "trailing LF"),
            ("http://localhost:5000/c\tb", refused(E::ForbiddenCharacter), "tab, url drops"),
            ("http://localhost:5000/cb\r\nSet-Cookie: a=b", refused(E::ForbiddenCharacter), "CRLF"),
            ("http://localhost:5000/c b", refused(E::ForbiddenCharacter), "space"),
            ("http://localhost:5000/cb\u{0}", refused(E::ForbiddenCharacter), "NUL"),
            ("http://localhost:5000/cb\u{7f}", refused(E::ForbiddenCharacter), "DEL"),
            ("http://localhost:5000/cb\u{a0}", refused(E::ForbiddenCharacter), "NBSP"),
            ("http://localhost:5000\\@evil.com/", refused(E::Backslash), "backslash"),
            ("https:\\\\evil.com/cb", refused(E::Backslash), "backslashes as slashes"),
            // Schemes and shapes.
            ("javascript:alert(1)", refused(E::ForbiddenScheme), "javascript:"),
            ("JavaScript:alert(1)//http://localhost:5000/", refused(E::ForbiddenScheme), "case"),
            ("data:text/html,<script>alert(1)</script>", refused(E::ForbiddenScheme), "data:"),
            ("file:///etc/passwd", refused(E::ForbiddenScheme), "file:"),
            ("vbscript:msgbox", refused(E::ForbiddenScheme), "vbscript:"),
            ("mailto:a@example.com", refused(E::Opaque), "no hierarchical path"),
            ("/callback", refused(E::NotAbsolute), "relative"),
            ("//evil.com/cb", refused(E::NotAbsolute), "scheme-relative"),
            ("127.0.0.1:5000/cb", refused(E::NotAbsolute), "no scheme"),
            ("", refused(E::Empty), "empty"),
            (long.as_str(), refused(E::TooLong), "too long"),
        ];

        run_check_table(&Allowlist::default(), &rows);
    }

    #[test]
    fn default_allowlist_equals_parsed_default_entries() {
        let parsed = Allowlist::parse(&DEFAULT_ALLOWED_REDIRECT_URIS);

        assert_eq!(parsed, Ok(Allowlist::default()));
    }

    #[test]
    fn custom_allowlist_table() -> Result<(), RedirectError> {
        let list = Allowlist::parse(&[
            "cursor://",
            "com.example.app:/oauth2redirect",
            "https://app.example.com",
            "https://b\u{fc}cher.example/cb",
            "http://localhost",
            "http://127.0.0.1:8080/cb",
            "https://port.example.com:8443/",
            "http://[::1]:*/cb",
        ])?;

        #[rustfmt::skip]
        let rows: Vec<(&str, Expect, &str)> = vec![
            ("cursor://anysphere.cursor-retrieval/oauth/callback", OK, "listed scheme"),
            ("cursor://x/y?z=1", OK, "any URI of a listed private-use scheme"),
            ("com.example.app:/oauth2redirect", OK, "RFC 8252 7.1 form"),
            ("com.example.app:/other", refused(E::NotAllowed), "exact path on the entry"),
            ("https://app.example.com/any/path", OK, "entry without path: any path"),
            ("https://app.example.com", OK, "entry without path: no path"),
            ("https://app.example.com:8443/x", refused(E::NotAllowed), "only the default port"),
            ("https://sub.app.example.com/x", refused(E::NotAllowed), "no subdomains"),
            ("https://xn--bcher-kva.example/cb", OK, "IDN entry matches punycode"),
            ("https://b\u{fc}cher.example/cb", refused(E::ForbiddenCharacter), "URIs are ASCII"),
            ("http://localhost/cb", OK, "no port on entry: default port"),
            ("http://localhost:80/cb", OK, "the default port written out"),
            ("http://localhost:5000/cb", refused(E::NotAllowed), "entry has no `*` port"),
            ("http://127.0.0.1:8080/cb", OK, "exact port and path"),
            ("http://127.0.0.1:8081/cb", refused(E::NotAllowed), "exact port"),
            ("http://127.0.0.1:8080/cb2", refused(E::NotAllowed), "exact path"),
            ("https://port.example.com:8443/x", OK, "exact port, any path"),
            ("https://port.example.com/x", refused(E::NotAllowed), "default port is not 8443"),
            ("http://[::1]:8000/cb", OK, "listed IPv6 loopback"),
            ("https://claude.ai/api/mcp/auth_callback", refused(E::NotAllowed), "replaced"),
            ("javascript://cursor/x", refused(E::ForbiddenScheme), "javascript never"),
        ];

        run_check_table(&list, &rows);
        Ok(())
    }

    #[test]
    fn invalid_entries_are_named() {
        let rows = [
            ("", "empty"),
            ("javascript:*", "forbidden scheme, even listed"),
            ("data:", "forbidden scheme"),
            ("file:///", "forbidden scheme"),
            ("https://*.example.com", "wildcard host"),
            ("https://*", "wildcard host"),
            ("http://example.com", "non-loopback http"),
            ("http://localhost.evil.com:*", "non-loopback http lookalike"),
            ("https://example.com/cb#x", "fragment"),
            ("https://example.com/cb?x=1", "query"),
            ("https://user@example.com", "userinfo"),
            ("https://example.com:*x", "bad port"),
            ("https://example.com:99999", "port out of range"),
            ("https://example.com./cb", "trailing dot"),
            ("https://example.com/a/../cb", "dot segment"),
            ("https:", "no host"),
            ("https:example.com", "no //"),
            ("not a uri", "whitespace"),
            ("example.com/cb", "no scheme"),
            ("https://exa\\mple.com", "backslash"),
            ("mailto:x", "opaque"),
        ];

        for (entry, reason) in rows {
            let got = AllowEntry::parse(entry);
            let named = matches!(&got, Err(E::InvalidEntry { entry: e, .. }) if e == entry);
            assert!(
                named,
                "{entry:?} must be refused and named ({reason}), got {got:?}"
            );
        }
    }

    #[test]
    fn allowlist_parse_names_the_first_bad_entry() {
        let got = Allowlist::parse(&["http://localhost:*", "https://*.evil.com", "http://x.com"]);

        let message = got.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("`https://*.evil.com`"), "{message:?}");
    }

    #[test]
    fn empty_allowlist_allows_nothing() {
        let list = Allowlist::parse::<&str>(&[]);

        assert_eq!(
            list.map(|l| l.check("http://127.0.0.1:5000/cb").map(|_| ())),
            Ok(Err(E::NotAllowed))
        );
    }

    #[test]
    fn entries_display_normalised() {
        let shown: Vec<String> = ["HTTP://LocalHost:*", "https://Claude.AI/api/x", "cursor://"]
            .iter()
            .filter_map(|e| AllowEntry::parse(e).ok())
            .map(|e| e.to_string())
            .collect();

        assert_eq!(
            shown,
            ["http://localhost:*", "https://claude.ai/api/x", "cursor://"]
        );
    }

    #[test]
    fn match_registered_attack_table() {
        let cli = &["http://127.0.0.1:5000/callback"][..];
        let cimd = &["http://localhost/callback"][..];
        let claude = &["https://claude.ai/api/mcp/auth_callback"][..];
        let v6 = &["http://[::1]/cb"][..];
        let root = &["http://127.0.0.1:33418"][..];
        let query = &["http://127.0.0.1:5000/callback?a=1"][..];
        let cleartext = &["http://example.com/cb"][..];
        let custom = &["cursor://anysphere.cursor-retrieval/cb"][..];
        let secure_loop = &["https://localhost:8443/cb"][..];
        let none: &[&str] = &[];

        // (registered, requested, expected match, reason)
        #[rustfmt::skip]
        let rows: Vec<(&[&str], &str, Option<&str>, &str)> = vec![
            (cli, "http://127.0.0.1:5000/callback", Some(cli[0]), "exact"),
            (cli, "http://127.0.0.1:5001/callback", Some(cli[0]), "C5: another loopback port"),
            (cli, "http://127.0.0.1/callback", Some(cli[0]), "loopback without port"),
            (cli, "http://127.0.0.1:5001/other", None, "C5: another path"),
            (cli, "http://127.0.0.2:5001/callback", None, "C5: another host"),
            (cli, "http://localhost:5001/callback", None, "RFC 8252 8.3: no name/IP mix"),
            (cli, "http://[::1]:5001/callback", None, "IPv4 and IPv6 do not mix"),
            (cli, "https://127.0.0.1:5001/callback", None, "another scheme"),
            (cli, "http://127.0.0.1:5001/callback/", None, "trailing slash"),
            (cli, "http://127.0.0.1:5001/Callback", None, "path case"),
            (cli, "http://127.0.0.1:5001/callback?x=1", None, "added query"),
            (cli, "http://127.0.0.1:5001/callback#x", None, "fragment"),
            (cli, "http://127.0.0.1:5000/callback#", None, "empty fragment"),
            (cli, "http://u@127.0.0.1:5001/callback", None, "userinfo"),
            (cli, "http://127.0.0.1:5001/x/../callback", None, "dot segments"),
            (cli, "http://127.0.0.1:5001/%63allback", None, "encoded path"),
            (cli, "http://127.1:5001/callback", None, "short IPv4"),
            (cli, "http://0x7f.0.0.1:5001/callback", None, "hex IPv4"),
            (cli, "http://127.0.0.1.nip.io:5001/callback", None, "wildcard DNS"),
            (cli, "http://127.0.0.1:5001/callback\r\n", None, "CRLF"),
            (cli, "http://127.0.0.1:5001\\@evil.com/callback", None, "backslash"),
            (cli, "http://127.0.0.1:05000/callback", None, "leading zero port"),
            (cimd, "http://localhost:51353/callback", Some(cimd[0]), "C6"),
            (cimd, "http://LOCALHOST:51353/callback", Some(cimd[0]), "host case"),
            (cimd, "http://localhost/callback", Some(cimd[0]), "exact, no port"),
            (cimd, "http://localhost:51353/callback/", None, "C6 with another path"),
            (cimd, "http://127.0.0.1:51353/callback", None, "RFC 8252 8.3: no name/IP mix"),
            (cimd, "http://localhost.evil.com:51353/callback", None, "lookalike"),
            (cimd, "http://localhost.:51353/callback", None, "trailing dot"),
            (cimd, "http://\u{ff4c}ocalhost:51353/callback", None, "fullwidth"),
            (v6, "http://[::1]:8000/cb", Some(v6[0]), "IPv6 loopback any port"),
            (v6, "http://[0:0::1]:8000/cb", None, "non-canonical IPv6"),
            (v6, "http://[::ffff:127.0.0.1]:8000/cb", None, "mapped IPv4"),
            (root, "http://127.0.0.1:40000", Some(root[0]), "C7: root, another port"),
            (root, "http://127.0.0.1:40000/", Some(root[0]), "empty path equals /"),
            (root, "http://127.0.0.1:40000/x", None, "root registered, path requested"),
            (query, "http://127.0.0.1:5001/callback?a=1", Some(query[0]), "same query"),
            (query, "http://127.0.0.1:5001/callback?a=2", None, "another query"),
            (query, "http://127.0.0.1:5001/callback", None, "query dropped"),
            (claude, "https://claude.ai/api/mcp/auth_callback", Some(claude[0]), "exact"),
            (claude, "https://claude.ai:8443/api/mcp/auth_callback", None, "port fixed"),
            (claude, "https://claude.ai:443/api/mcp/auth_callback", None, "exact string"),
            (claude, "https://CLAUDE.ai/api/mcp/auth_callback", None, "exact string"),
            (claude, "https://claude.ai/api/mcp/auth_callback?x", None, "added query"),
            (claude, "https://claude.ai/api/mcp/auth_callback#x", None, "fragment"),
            (claude, "https://claude.ai.evil.com/api/mcp/auth_callback", None, "suffix"),
            (claude, "https://claude.ai@evil.com/api/mcp/auth_callback", None, "userinfo"),
            (claude, "https://evil.com#@claude.ai/api/mcp/auth_callback", None, "#@"),
            (claude, "https://claude.ai/api/mcp/x/../auth_callback", None, "dot segments"),
            (cleartext, "http://example.com/cb", None, "non-loopback http never"),
            (custom, custom[0], Some(custom[0]), "custom scheme, exact"),
            (custom, "cursor://anysphere.cursor-retrieval:1/cb", None, "no port freedom"),
            (secure_loop, "https://localhost:9443/cb", Some(secure_loop[0]), "https loopback"),
            (none, "http://127.0.0.1:5000/callback", None, "nothing registered"),
        ];

        let mut failures = Vec::new();
        for (registered, requested, want, reason) in rows {
            let registered: Vec<String> = registered.iter().map(|s| s.to_string()).collect();
            let got = match_registered(&registered, requested);
            if got != want {
                failures.push(format!(
                    "{requested:?}: want {want:?}, got {got:?} ({reason})"
                ));
            }
        }

        assert!(
            failures.is_empty(),
            "failing rows:\n{}",
            failures.join("\n")
        );
    }

    #[test]
    fn match_registered_returns_the_matching_entry() {
        let registered = vec![
            "https://claude.ai/api/mcp/auth_callback".to_owned(),
            "http://127.0.0.1:5000/a".to_owned(),
            "http://127.0.0.1:5000/b".to_owned(),
        ];

        let got = match_registered(&registered, "http://127.0.0.1:6000/b");

        assert_eq!(got, Some("http://127.0.0.1:5000/b"));
    }

    #[test]
    fn invalid_registered_entries_never_match_by_port() {
        let registered = vec!["http://127.1:5000/cb".to_owned()];

        assert_eq!(
            match_registered(&registered, "http://127.0.0.1:5000/cb"),
            None
        );
    }

    #[test]
    fn loopback_hosts() {
        let yes = [
            "localhost",
            "LocalHost",
            "127.0.0.1",
            "127.255.255.254",
            "[::1]",
        ];
        let no = [
            "localhost.",
            "localhost.evil.com",
            "evil-localhost",
            "128.0.0.1",
            "0.0.0.0",
            "[::]",
            "[::ffff:127.0.0.1]",
            "127.0.0.1.nip.io",
        ];

        for (hosts, want) in [(&yes[..], true), (&no[..], false)] {
            for h in hosts {
                let parsed = Host::parse(h);
                let got = parsed.as_ref().map(|p| is_loopback_host(&p.to_owned_ref()));
                assert_eq!(got.ok(), Some(want), "{h}");
            }
        }
    }

    /// Borrows an owned host the way `Url::host` hands it out.
    trait ToOwnedRef {
        fn to_owned_ref(&self) -> Host<&str>;
    }

    impl ToOwnedRef for Host<String> {
        fn to_owned_ref(&self) -> Host<&str> {
            match self {
                Host::Domain(d) => Host::Domain(d.as_str()),
                Host::Ipv4(ip) => Host::Ipv4(*ip),
                Host::Ipv6(ip) => Host::Ipv6(*ip),
            }
        }
    }
}
