//! Sealed values: client registrations, pending logins, codes and refresh tokens, encrypted
//! and authenticated with the DCR Secret's keys, so no replica stores them and any replica
//! can open what another sealed.
//!
//! Wire form: base64url of `version (1) | key tag (4) | nonce (12) | ciphertext | tag (16)`.
//! The additional data binds a value to its purpose and connector, so a sealed code can
//! never be replayed as a client id, nor a value of one connector on another.

use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde::{Serialize, de::DeserializeOwned};

use crate::keys::{KeyError, Keys, SealKey, random_bytes};

const VERSION: u8 = 1;
const HEADER: usize = 1 + 4 + NONCE_LEN;

/// The longest sealed value accepted; anything longer is refused before decoding.
pub const MAX_SEALED_LEN: usize = 8 * 1024;

/// What a sealed value is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A dynamic client registration (the `client_id`).
    Client,
    /// A login in progress at the upstream (its `state`).
    Pending,
    /// An authorization code.
    Code,
    /// A refresh token.
    Refresh,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Client => "client",
            Purpose::Pending => "pending",
            Purpose::Code => "code",
            Purpose::Refresh => "refresh",
        }
    }
}

fn aad(purpose: Purpose, connector: &str) -> Vec<u8> {
    format!("mcp-connector/v1/{}/{connector}", purpose.label()).into_bytes()
}

/// Seals `value` with the connector's current key.
pub fn seal<T: Serialize>(
    keys: &Keys,
    purpose: Purpose,
    connector: &str,
    value: &T,
) -> Result<String, KeyError> {
    let key = keys.current_seal();
    let mut data =
        serde_json::to_vec(value).map_err(|e| KeyError::Generate(format!("encode: {e}")))?;
    let nonce_bytes = random_bytes::<NONCE_LEN>()?;

    key.aead()
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(aad(purpose, connector)),
            &mut data,
        )
        .map_err(|_| KeyError::Generate("sealing failed".into()))?;

    let mut out = Vec::with_capacity(HEADER + data.len());
    out.push(VERSION);
    out.extend_from_slice(&key.tag);
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&data);
    Ok(B64.encode(out))
}

/// Opens a sealed value with whichever of the connector's keys sealed it. `None` for
/// anything that does not open: tampered, truncated, sealed by a deleted key, meant for
/// another purpose or connector, or not JSON of the expected shape.
pub fn open<'k, T: DeserializeOwned>(
    keys: &'k Keys,
    purpose: Purpose,
    connector: &str,
    sealed: &str,
) -> Option<(T, &'k SealKey)> {
    if sealed.len() > MAX_SEALED_LEN {
        return None;
    }
    let mut bytes = B64.decode(sealed).ok()?;
    if bytes.len() < HEADER + 16 || bytes[0] != VERSION {
        return None;
    }

    let key = keys.seal_by_tag(&bytes[1..5])?;
    let nonce = Nonce::try_assume_unique_for_key(&bytes[5..HEADER]).ok()?;
    let plain = key
        .aead()
        .open_in_place(
            nonce,
            Aad::from(aad(purpose, connector)),
            &mut bytes[HEADER..],
        )
        .ok()?;

    let value = serde_json::from_slice(plain).ok()?;
    Some((value, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Keyset, generate_seal_key, generate_signing_key};

    fn keys() -> Keys {
        let now = jiff::Timestamp::now();
        let dcr = Keyset {
            keys: vec![generate_seal_key(now).unwrap()],
        };
        let signing = Keyset {
            keys: vec![generate_signing_key(now).unwrap()],
        };
        Keys::from_keysets(&dcr, &signing).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_for_its_purpose_and_connector() {
        let keys = keys();
        let sealed = seal(&keys, Purpose::Code, "ns/a", &"hello").unwrap();

        let opened: Option<(String, _)> = open(&keys, Purpose::Code, "ns/a", &sealed);
        assert_eq!(opened.map(|(v, _)| v).as_deref(), Some("hello"));
        assert!(open::<String>(&keys, Purpose::Client, "ns/a", &sealed).is_none());
        assert!(open::<String>(&keys, Purpose::Code, "ns/b", &sealed).is_none());
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let keys = keys();
        let sealed = seal(&keys, Purpose::Client, "c", &vec![1, 2, 3]).unwrap();
        let raw = B64.decode(&sealed).unwrap();

        for i in 0..raw.len() {
            let mut tampered = raw.clone();
            tampered[i] ^= 0x01;
            let text = B64.encode(&tampered);
            assert!(
                open::<Vec<u8>>(&keys, Purpose::Client, "c", &text).is_none(),
                "byte {i}"
            );
        }
    }

    #[test]
    fn another_keyset_cannot_open_it() {
        let sealed = seal(&keys(), Purpose::Refresh, "c", &1u32).unwrap();

        assert!(open::<u32>(&keys(), Purpose::Refresh, "c", &sealed).is_none());
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let keys = keys();
        let long = "A".repeat(MAX_SEALED_LEN + 1);
        for input in ["", "!", "AAAA", "AQAAAAAAAAAAAAAAAAAAAA", long.as_str()] {
            assert!(
                open::<u32>(&keys, Purpose::Code, "c", input).is_none(),
                "{input}"
            );
        }
    }
}
