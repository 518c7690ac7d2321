//! Access tokens: ES256 JWTs signed with the connector's current signing key and verified
//! against the current and retired keys by `kid`.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use jsonwebtoken::{Algorithm, Header, Validation, decode, decode_header};
use serde::{Deserialize, Serialize};

use crate::keys::{KeyError, Keys};

/// The claims of an access token (SPEC 5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The issuer: the base URL.
    pub iss: String,
    /// The audience: the protected resource.
    pub aud: String,
    /// The user.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issue time, Unix seconds.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// The client it was issued to.
    pub client_id: String,
    /// Granted scopes, space separated.
    pub scope: String,
    /// The user name.
    pub preferred_username: String,
    /// The user's groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The grant it belongs to, so that revoking the grant revokes it.
    pub gid: String,
}

impl AsRef<AccessClaims> for AccessClaims {
    fn as_ref(&self) -> &AccessClaims {
        self
    }
}

/// Why a bearer token was not accepted. The variants are for logs and metrics; the client
/// sees `invalid_token` for all of them (RFC 6750 3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    /// Not a JWT of ours.
    #[error("the token is malformed")]
    Malformed,
    /// Its `kid` is none of the connector's keys (another connector, or a deleted key).
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token signature is invalid")]
    BadSignature,
    /// Another issuer or audience.
    #[error("the token was issued for another resource")]
    WrongAudience,
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Its grant was revoked.
    #[error("the token was revoked")]
    Revoked,
}

/// Leeway for clock skew between replicas when checking `exp`.
pub const LEEWAY_SECS: i64 = 30;

/// Longest bearer token parsed.
const MAX_TOKEN_LEN: usize = 4096;

/// Signs an access token with the current key. The JWS is put together here rather than
/// by `jsonwebtoken::encode`, which parses the private key again for every token.
pub fn mint(keys: &Keys, claims: &AccessClaims) -> Result<String, KeyError> {
    let key = keys.current_signing();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    header.typ = Some("at+jwt".into());

    let message = format!("{}.{}", b64_json(&header)?, b64_json(claims)?);
    let signature = key.sign(message.as_bytes())?;
    Ok(format!("{message}.{}", B64.encode(signature)))
}

fn b64_json<T: Serialize>(value: &T) -> Result<String, KeyError> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| KeyError::Generate(format!("encode: {e}")))?;
    Ok(B64.encode(bytes))
}

/// Verifies a token's signature, issuer and audience, and its expiry against `now`
/// (skipped when `now` is `None`, as revocation does).
pub fn verify(
    keys: &Keys,
    token: &str,
    issuer: &str,
    audience: &str,
    now: Option<i64>,
) -> Result<AccessClaims, TokenProblem> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenProblem::Malformed);
    }
    let header = decode_header(token).map_err(|_| TokenProblem::Malformed)?;
    if header.alg != Algorithm::ES256 {
        return Err(TokenProblem::Malformed);
    }
    let kid = header.kid.ok_or(TokenProblem::Malformed)?;
    let key = keys.signing_by_kid(&kid).ok_or(TokenProblem::UnknownKey)?;

    // Expiry is checked against the injected clock below, not the library's system time.
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = decode::<AccessClaims>(token, &key.decoding, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenProblem::BadSignature,
            _ => TokenProblem::Malformed,
        })?
        .claims;

    if claims.iss != issuer || claims.aud != audience {
        return Err(TokenProblem::WrongAudience);
    }
    if let Some(now) = now
        && claims.exp + LEEWAY_SECS <= now
    {
        return Err(TokenProblem::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyKind, Keyset};

    fn keys() -> Keys {
        let now = jiff::Timestamp::now();
        let set = |kind: KeyKind| Keyset {
            keys: vec![kind.generate(now).unwrap()],
        };
        Keys::from_keysets(&set(KeyKind::Seal), &set(KeyKind::Signing)).unwrap()
    }

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: "https://mcp.example".into(),
            aud: "https://mcp.example/mcp".into(),
            sub: "alice".into(),
            exp: 2_000_000_000,
            iat: 1_999_996_400,
            jti: "j".into(),
            client_id: "c".into(),
            scope: "mcp".into(),
            preferred_username: "alice".into(),
            groups: vec!["sre".into()],
            gid: "g".into(),
        }
    }

    #[test]
    fn a_minted_token_is_a_jws_that_verifies_and_names_its_key() {
        let keys = keys();
        let token = mint(&keys, &claims()).unwrap();

        let header = decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(
            header.kid.as_deref(),
            Some(keys.current_signing().kid.as_str())
        );
        let verified = verify(
            &keys,
            &token,
            "https://mcp.example",
            "https://mcp.example/mcp",
            None,
        );
        assert_eq!(verified.unwrap(), claims());
    }

    #[test]
    fn a_signature_over_other_claims_or_by_another_key_is_refused() {
        let (ours, theirs) = (keys(), keys());
        let (iss, aud) = ("https://mcp.example", "https://mcp.example/mcp");

        let foreign = mint(&theirs, &claims()).unwrap();
        assert_eq!(
            verify(&ours, &foreign, iss, aud, None),
            Err(TokenProblem::UnknownKey)
        );

        let token = mint(&ours, &claims()).unwrap();
        let mallory = AccessClaims {
            sub: "mallory".into(),
            ..claims()
        };
        let other = mint(&ours, &mallory).unwrap();
        let (signed, _) = token.rsplit_once('.').unwrap();
        let (_, other_signature) = other.rsplit_once('.').unwrap();
        let spliced = format!("{signed}.{other_signature}");
        assert_eq!(
            verify(&ours, &spliced, iss, aud, None),
            Err(TokenProblem::BadSignature)
        );
    }
}
