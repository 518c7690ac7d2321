//! How users sign in: an upstream OpenID Connect provider, an authenticating proxy in front,
//! or (on loopback only) development users.

pub mod oidc;

use std::fmt;

use http::HeaderMap;

use crate::crd::DevUserSpec;
use crate::keys::SecretString;

pub use oidc::{Identity, OidcUpstream};

/// A sign-in method with the secrets it needs.
pub enum Upstream {
    /// An OpenID Connect provider; the connector is one confidential client of it.
    Oidc(OidcUpstream),
    /// An authenticating proxy in front of `/authorize`.
    Proxy(ProxyUpstream),
    /// The built-in login form with these users (loopback base URLs only).
    DevUsers(Vec<DevUserSpec>),
    /// Every login signs in this user without a form (`dev --auto-login`).
    AutoLogin(String),
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Oidc(o) => write!(f, "Oidc({})", o.issuer_url),
            Upstream::Proxy(p) => write!(f, "Proxy({})", p.user_header),
            Upstream::DevUsers(users) => write!(f, "DevUsers({} users)", users.len()),
            Upstream::AutoLogin(user) => write!(f, "AutoLogin({user})"),
        }
    }
}

/// An authenticating proxy that sets identity headers and proves itself with a shared
/// secret in another header.
pub struct ProxyUpstream {
    /// Header with the user name.
    pub user_header: String,
    /// Header with the groups, comma separated.
    pub groups_header: Option<String>,
    /// Header carrying the shared secret.
    pub secret_header: String,
    /// The shared secret.
    pub shared_secret: SecretString,
}

/// Why a proxy's headers were not trusted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The shared secret is missing or wrong.
    #[error("the request did not come through the authenticating proxy")]
    Unproven,
    /// The user header is missing or empty.
    #[error("the authenticating proxy sent no user in `{0}`")]
    NoUser(String),
}

impl ProxyUpstream {
    /// The identity in a request's headers, trusted only when the shared secret matches.
    pub fn identity(&self, headers: &HeaderMap) -> Result<Identity, ProxyError> {
        let presented = headers
            .get(self.secret_header.as_str())
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let expected = self.shared_secret.expose().as_bytes();

        // Headers are attacker-controlled unless the proxy proves itself; compare in
        // constant time so the secret cannot be guessed byte by byte.
        let proven = !expected.is_empty()
            && aws_lc_rs::constant_time::verify_slices_are_equal(presented, expected).is_ok();
        if !proven {
            return Err(ProxyError::Unproven);
        }

        let header_text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .unwrap_or_default()
        };
        let username = header_text(&self.user_header).to_string();
        if username.is_empty() {
            return Err(ProxyError::NoUser(self.user_header.clone()));
        }
        let groups = match &self.groups_header {
            Some(h) => split_groups(header_text(h)),
            None => Vec::new(),
        };
        Ok(Identity { username, groups })
    }
}

fn split_groups(raw: &str) -> Vec<String> {
    raw.split([',', ' '])
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(String::from)
        .collect()
}

/// The development user with this name and password, compared in constant time.
pub fn check_dev_user(users: &[DevUserSpec], username: &str, password: &str) -> Option<Identity> {
    let user = users.iter().find(|u| u.username == username)?;
    let ok = aws_lc_rs::constant_time::verify_slices_are_equal(
        user.password.as_bytes(),
        password.as_bytes(),
    )
    .is_ok();

    ok.then(|| Identity {
        username: user.username.clone(),
        groups: user.groups.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy() -> ProxyUpstream {
        ProxyUpstream {
            user_header: "X-Auth-Request-Email".into(),
            groups_header: Some("X-Auth-Request-Groups".into()),
            secret_header: "X-Auth-Proxy-Secret".into(),
            shared_secret: SecretString::new("s3cret"),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_proven_proxy_is_trusted() {
        let h = headers(&[
            ("x-auth-proxy-secret", "s3cret"),
            ("x-auth-request-email", "bob@example.com"),
            ("x-auth-request-groups", "sre, dev"),
        ]);

        let id = proxy().identity(&h).unwrap();

        assert_eq!(id.username, "bob@example.com");
        assert_eq!(id.groups, vec!["sre", "dev"]);
    }

    #[test]
    fn identity_headers_without_the_secret_are_ignored() {
        let forged = headers(&[("x-auth-request-email", "admin@example.com")]);
        let wrong = headers(&[
            ("x-auth-proxy-secret", "guess"),
            ("x-auth-request-email", "admin@example.com"),
        ]);
        let no_user = headers(&[("x-auth-proxy-secret", "s3cret")]);

        assert_eq!(proxy().identity(&forged), Err(ProxyError::Unproven));
        assert_eq!(proxy().identity(&wrong), Err(ProxyError::Unproven));
        assert!(matches!(
            proxy().identity(&no_user),
            Err(ProxyError::NoUser(_))
        ));
    }

    #[test]
    fn dev_users_need_the_right_password() {
        let users = vec![DevUserSpec {
            username: "dev".into(),
            password: "pw".into(),
            groups: vec!["g".into()],
        }];

        assert!(check_dev_user(&users, "dev", "pw").is_some());
        assert!(check_dev_user(&users, "dev", "p").is_none());
        assert!(check_dev_user(&users, "root", "pw").is_none());
    }
}
