//! Key material: the sealing keys of the DCR Secret, the access-token signing keys, how both
//! are stored in a Secret, and how they are generated.
//!
//! Both Secrets hold one data entry, [`KEYSET_KEY`], a JSON [`Keyset`]: the current key
//! first, then keys retired by a rotation that still verify what they signed. Nothing in
//! this module prints key material: every type holding some has a redacting `Debug`.

pub mod rotation;
pub mod store;

use std::fmt;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use aws_lc_rs::{aead, digest, hmac, rand::SecureRandom};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use jiff::Timestamp;
use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};

pub use store::{Connector, KeyStore, Keys};

/// The Secret data entry holding a [`Keyset`].
pub const KEYSET_KEY: &str = "keys.json";

/// Why key material could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The Secret has no [`KEYSET_KEY`] entry.
    #[error("the Secret has no `{KEYSET_KEY}` entry")]
    MissingKeyset,

    /// The keyset is not the JSON the operator writes.
    #[error("`{KEYSET_KEY}` is not a valid keyset: {0}")]
    MalformedKeyset(String),

    /// The keyset holds no key.
    #[error("`{KEYSET_KEY}` holds no key")]
    EmptyKeyset,

    /// One key could not be decoded.
    #[error("key `{kid}` is not usable: {why}")]
    BadKey { kid: String, why: String },

    /// The system random source or key generator failed.
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// A string of secret material whose `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

/// One key as stored in a Secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredKey {
    /// Key id, unique within the keyset.
    pub kid: String,

    /// When the key was made.
    pub created: Timestamp,

    /// When a newer key replaced it; `None` for the current key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<Timestamp>,

    /// The key: base64url of 32 random bytes (sealing) or a PKCS#8 PEM (signing).
    pub material: SecretString,
}

/// The keys of one Secret, current first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Keyset {
    /// Current key first, then retired keys, newest first.
    pub keys: Vec<StoredKey>,
}

impl Keyset {
    /// Reads a keyset from a Secret's data entry.
    pub fn from_bytes(bytes: Option<&[u8]>) -> Result<Keyset, KeyError> {
        let bytes = bytes.ok_or(KeyError::MissingKeyset)?;
        let set: Keyset =
            serde_json::from_slice(bytes).map_err(|e| KeyError::MalformedKeyset(e.to_string()))?;

        if set.keys.is_empty() {
            return Err(KeyError::EmptyKeyset);
        }
        Ok(set)
    }

    /// The JSON written into the Secret.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The current key.
    pub fn current(&self) -> Option<&StoredKey> {
        self.keys.first()
    }
}

/// Which of the two Secrets a key belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// The DCR Secret: sealing and MAC keys.
    Seal,
    /// The signing-key Secret: ES256 private keys.
    Signing,
}

impl KeyKind {
    /// Makes a fresh key of this kind.
    pub fn generate(self, now: Timestamp) -> Result<StoredKey, KeyError> {
        match self {
            KeyKind::Seal => generate_seal_key(now),
            KeyKind::Signing => generate_signing_key(now),
        }
    }

    /// Checks that every key of a keyset decodes as this kind.
    pub fn validate(self, set: &Keyset) -> Result<(), KeyError> {
        for key in &set.keys {
            match self {
                KeyKind::Seal => SealKey::from_stored(key).map(drop)?,
                KeyKind::Signing => SigningKey::from_stored(key).map(drop)?,
            }
        }
        Ok(())
    }
}

/// Fills `n` bytes from the system's secure random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut out = [0u8; N];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| KeyError::Generate("the random source failed".into()))?;
    Ok(out)
}

/// Random bytes as base64url, for ids and nonces.
pub fn random_token<const N: usize>() -> Result<String, KeyError> {
    Ok(B64.encode(random_bytes::<N>()?))
}

/// Makes a 256-bit sealing key.
pub fn generate_seal_key(now: Timestamp) -> Result<StoredKey, KeyError> {
    let bytes = random_bytes::<32>()?;
    let kid = short_id(&bytes);

    Ok(StoredKey {
        kid,
        created: now,
        retired: None,
        material: SecretString(B64.encode(bytes)),
    })
}

/// Makes an ES256 (P-256) signing key with rcgen.
pub fn generate_signing_key(now: Timestamp) -> Result<StoredKey, KeyError> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let kid = jwk_thumbprint(pair.public_key_raw())
        .ok_or_else(|| KeyError::Generate("rcgen gave an unexpected public key".into()))?;

    Ok(StoredKey {
        kid,
        created: now,
        retired: None,
        material: SecretString(pair.serialize_pem()),
    })
}

/// A key id that names key bytes without revealing them.
fn short_id(bytes: &[u8]) -> String {
    let hash = digest::digest(&digest::SHA256, bytes);
    B64.encode(&hash.as_ref()[..12])
}

/// The JWK coordinates of an uncompressed P-256 point.
fn ec_coordinates(raw: &[u8]) -> Option<(String, String)> {
    if raw.len() != 65 || raw[0] != 4 {
        return None;
    }
    Some((B64.encode(&raw[1..33]), B64.encode(&raw[33..65])))
}

/// RFC 7638 thumbprint of a P-256 public key, used as its `kid`.
fn jwk_thumbprint(raw: &[u8]) -> Option<String> {
    let (x, y) = ec_coordinates(raw)?;
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let hash = digest::digest(&digest::SHA256, canonical.as_bytes());
    Some(B64.encode(hash.as_ref()))
}

/// A sealing key ready for use: AES-256-GCM for sealed values, HMAC-SHA256 for derived
/// client secrets. Both are derived from the stored 256-bit key with distinct labels.
pub struct SealKey {
    /// Key id of the stored key.
    pub kid: String,
    /// Short tag written into sealed values, so that opening tries one key only.
    pub tag: [u8; 4],
    aead: aead::LessSafeKey,
    mac: hmac::Key,
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SealKey {
    /// Decodes a stored sealing key.
    pub fn from_stored(key: &StoredKey) -> Result<SealKey, KeyError> {
        let bad = |why: &str| KeyError::BadKey {
            kid: key.kid.clone(),
            why: why.into(),
        };
        let bytes = B64
            .decode(key.material.expose())
            .map_err(|_| bad("not base64url"))?;
        if bytes.len() != 32 {
            return Err(bad("not 32 bytes"));
        }

        let root = hmac::Key::new(hmac::HMAC_SHA256, &bytes);
        let aead_bytes = hmac::sign(&root, b"mcp-connector seal v1");
        let mac_bytes = hmac::sign(&root, b"mcp-connector mac v1");
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, aead_bytes.as_ref())
            .map_err(|_| bad("rejected by AES-256-GCM"))?;

        let hash = digest::digest(&digest::SHA256, key.kid.as_bytes());
        let mut tag = [0u8; 4];
        tag.copy_from_slice(&hash.as_ref()[..4]);

        Ok(SealKey {
            kid: key.kid.clone(),
            tag,
            aead: aead::LessSafeKey::new(unbound),
            mac: hmac::Key::new(hmac::HMAC_SHA256, mac_bytes.as_ref()),
        })
    }

    /// The AEAD key.
    pub fn aead(&self) -> &aead::LessSafeKey {
        &self.aead
    }

    /// HMAC-SHA256 of `data` under the MAC key.
    pub fn mac(&self, data: &[u8]) -> hmac::Tag {
        hmac::sign(&self.mac, data)
    }

    /// Checks an HMAC-SHA256 in constant time.
    pub fn verify_mac(&self, data: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.mac, data, tag).is_ok()
    }
}

/// An ES256 signing key ready for use, with its public JWK.
pub struct SigningKey {
    /// Key id, the RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// The public key as a JWK, for the JWKS document.
    pub jwk: serde_json::Value,
    /// Verifies access tokens.
    pub decoding: DecodingKey,
    /// Signs access tokens: parsed once, since parsing checks the pair with a scalar
    /// multiplication that costs half as much as the signature itself.
    pair: EcdsaKeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Decodes a stored signing key.
    pub fn from_stored(key: &StoredKey) -> Result<SigningKey, KeyError> {
        let bad = |why: &str| KeyError::BadKey {
            kid: key.kid.clone(),
            why: why.into(),
        };
        let pem = key.material.expose();

        let pair = rcgen::KeyPair::from_pem(pem).map_err(|_| bad("not a PKCS#8 PEM key"))?;
        if !pair.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err(bad("not a P-256 key"));
        }
        let (x, y) = ec_coordinates(pair.public_key_raw()).ok_or_else(|| bad("bad point"))?;
        let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|_| bad("bad point"))?;
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pair.serialize_der())
                .map_err(|_| bad("not a P-256 key"))?;

        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": x, "y": y,
            "use": "sig", "alg": "ES256", "kid": key.kid,
        });
        Ok(SigningKey {
            kid: key.kid.clone(),
            jwk,
            decoding,
            pair,
        })
    }

    /// The ES256 signature of `message`: `r || s`, 64 bytes (RFC 7518 3.4).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let signature = self
            .pair
            .sign(&rng, message)
            .map_err(|_| KeyError::Generate("signing failed".into()))?;
        Ok(signature.as_ref().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn generated_keys_decode_and_debug_prints_no_material() {
        let seal = generate_seal_key(now()).unwrap();
        let signing = generate_signing_key(now()).unwrap();

        let seal_key = SealKey::from_stored(&seal).unwrap();
        let signing_key = SigningKey::from_stored(&signing).unwrap();

        for text in [
            format!("{seal:?}"),
            format!("{signing:?}"),
            format!("{seal_key:?}"),
        ] {
            assert!(!text.contains(seal.material.expose()), "{text}");
            assert!(!text.contains("PRIVATE KEY"), "{text}");
        }
        assert!(!format!("{signing_key:?}").contains("PRIVATE"));
        assert_eq!(signing_key.jwk["kid"], signing.kid);
    }

    #[test]
    fn two_generated_keys_differ() {
        let a = generate_seal_key(now()).unwrap();
        let b = generate_seal_key(now()).unwrap();

        assert_ne!(a.material, b.material);
        assert_ne!(a.kid, b.kid);
    }

    #[test]
    fn broken_keysets_are_errors_not_panics() {
        let cases: [(&[u8], &str); 4] = [
            (b"not json", "garbage"),
            (br#"{"keys":[]}"#, "empty"),
            (
                br#"{"keys":[{"kid":"a","created":"2026-01-01T00:00:00Z","material":"!!"}]}"#,
                "b64",
            ),
            (
                br#"{"keys":[{"kid":"a","created":"2026-01-01T00:00:00Z","material":"AAAA"}]}"#,
                "len",
            ),
        ];
        for (bytes, why) in cases {
            let parsed = Keyset::from_bytes(Some(bytes));
            let valid = parsed.and_then(|set| KeyKind::Seal.validate(&set));
            assert!(valid.is_err(), "{why}");
        }
        assert!(matches!(
            Keyset::from_bytes(None),
            Err(KeyError::MissingKeyset)
        ));
    }

    #[test]
    fn a_seal_key_is_not_a_signing_key() {
        let set = Keyset {
            keys: vec![generate_seal_key(now()).unwrap()],
        };

        assert!(KeyKind::Signing.validate(&set).is_err());
        assert!(KeyKind::Seal.validate(&set).is_ok());
    }
}
