//! Access tokens already verified on `/mcp`. An MCP client sends the same token on every
//! call for the token's lifetime, and the ES256 verification is nearly all of the proxy's
//! own work, so each token is verified once and remembered, with what the caller made of
//! its claims (for `/mcp`, the identity headers as well).
//!
//! What a remembered token still has to pass on every request:
//! - the same `Keys` it was verified with: a rotated or deleted Secret builds new `Keys`
//!   for the connector, so every token is verified again (and one whose key is gone fails);
//! - the issuer and audience of the base URL the request came in on;
//! - its expiry, against the clock of the request;
//! - the revocation lookup, which the caller makes on every request either way.
//!
//! The cache is keyed by a SHA-256 of the token, so it holds no usable token. It is bounded:
//! two generations of at most `capacity / 2` entries each; a full current generation
//! becomes the previous one and the old previous is dropped, and a hit in the previous
//! generation moves the entry into the current one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use aws_lc_rs::digest::{SHA256, digest};

use crate::keys::Keys;
use crate::oauth::access_token::{AccessClaims, LEEWAY_SECS};

/// Entries kept by default: a little over 100 bytes each plus the claims.
pub const DEFAULT_CAPACITY: usize = 16_384;

type Digest = [u8; 32];

struct Verified<V> {
    value: Arc<V>,
    keys: Weak<Keys>,
}

struct Generations<V> {
    current: HashMap<Digest, Verified<V>>,
    previous: HashMap<Digest, Verified<V>>,
}

/// Tokens verified recently, each with `V`: its claims, or what was made of them.
pub struct VerifiedTokens<V = AccessClaims> {
    generations: Mutex<Generations<V>>,
    generation_size: usize,
}

impl<V: AsRef<AccessClaims>> VerifiedTokens<V> {
    /// An empty cache holding at most `capacity` tokens (at least 2).
    pub fn new(capacity: usize) -> VerifiedTokens<V> {
        let generations = Generations {
            current: HashMap::new(),
            previous: HashMap::new(),
        };
        VerifiedTokens {
            generations: Mutex::new(generations),
            generation_size: (capacity / 2).max(1),
        }
    }

    /// What was remembered of `token` if it was verified with `keys` and, at `now`, has
    /// not expired and names this `issuer` and `audience`.
    pub fn get(
        &self,
        token: &str,
        keys: &Arc<Keys>,
        issuer: &str,
        audience: &str,
        now: i64,
    ) -> Option<Arc<V>> {
        let key = digest_of(token);
        let mut generations = self.lock();

        let found = match generations.current.get(&key) {
            Some(entry) => usable(entry, keys, issuer, audience, now),
            None => {
                let entry = generations.previous.remove(&key)?;
                let claims = usable(&entry, keys, issuer, audience, now);
                if claims.is_some() {
                    self.insert_locked(&mut generations, key, entry);
                }
                claims
            }
        };

        if found.is_none() {
            generations.current.remove(&key);
        }
        found
    }

    /// Remembers `value`, made of the claims just verified for `token` with `keys`.
    pub fn insert(&self, token: &str, keys: &Arc<Keys>, value: Arc<V>) {
        let entry = Verified {
            value,
            keys: Arc::downgrade(keys),
        };
        let mut generations = self.lock();
        self.insert_locked(&mut generations, digest_of(token), entry);
    }

    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        let generations = self.lock();
        generations.current.len() + generations.previous.len()
    }

    /// Whether no token is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert_locked(&self, generations: &mut Generations<V>, key: Digest, entry: Verified<V>) {
        if generations.current.len() >= self.generation_size {
            generations.previous = std::mem::take(&mut generations.current);
        }
        generations.current.insert(key, entry);
    }

    /// The lock; a panic while it was held leaves nothing half-done (each change is one
    /// map operation), so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, Generations<V>> {
        self.generations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn digest_of(token: &str) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

fn usable<V: AsRef<AccessClaims>>(
    entry: &Verified<V>,
    keys: &Arc<Keys>,
    issuer: &str,
    audience: &str,
    now: i64,
) -> Option<Arc<V>> {
    let claims = entry.value.as_ref().as_ref();
    let same_keys = std::ptr::eq(entry.keys.as_ptr(), Arc::as_ptr(keys));
    let fresh = claims.exp + LEEWAY_SECS > now;

    let good = same_keys && fresh && claims.iss == issuer && claims.aud == audience;
    good.then(|| entry.value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyKind, Keyset};

    fn keys() -> Arc<Keys> {
        let now = jiff::Timestamp::now();
        let set = |kind: KeyKind| Keyset {
            keys: vec![kind.generate(now).unwrap()],
        };
        Arc::new(Keys::from_keysets(&set(KeyKind::Seal), &set(KeyKind::Signing)).unwrap())
    }

    fn claims(exp: i64) -> Arc<AccessClaims> {
        Arc::new(AccessClaims {
            iss: "https://mcp.example.com".into(),
            aud: "https://mcp.example.com/mcp".into(),
            sub: "alice".into(),
            exp,
            iat: exp - 3600,
            jti: "j".into(),
            client_id: "c".into(),
            scope: "openid".into(),
            preferred_username: "alice".into(),
            groups: vec![],
            gid: "g".into(),
        })
    }

    const ISS: &str = "https://mcp.example.com";
    const AUD: &str = "https://mcp.example.com/mcp";

    #[test]
    fn a_remembered_token_is_found_with_its_keys_issuer_and_audience() {
        let cache = VerifiedTokens::new(8);
        let keys = keys();
        cache.insert("token", &keys, claims(1_000));

        let hit = cache.get("token", &keys, ISS, AUD, 900).unwrap();
        assert_eq!(hit.sub, "alice");
        assert!(cache.get("other", &keys, ISS, AUD, 900).is_none());
        assert!(
            cache
                .get("token", &keys, "https://evil.example", AUD, 900)
                .is_none()
        );
    }

    #[test]
    fn new_keys_miss_and_drop_the_entry() {
        let cache = VerifiedTokens::new(8);
        let (old, new) = (keys(), keys());
        cache.insert("token", &old, claims(1_000));

        assert!(cache.get("token", &new, ISS, AUD, 900).is_none());
        assert!(cache.get("token", &old, ISS, AUD, 900).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn an_expired_token_misses_after_the_leeway() {
        let cache = VerifiedTokens::new(8);
        let keys = keys();
        cache.insert("token", &keys, claims(1_000));

        assert!(
            cache
                .get("token", &keys, ISS, AUD, 1_000 + LEEWAY_SECS - 1)
                .is_some()
        );
        assert!(
            cache
                .get("token", &keys, ISS, AUD, 1_000 + LEEWAY_SECS)
                .is_none()
        );
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_what_is_used() {
        let cache = VerifiedTokens::new(100);
        let keys = keys();
        cache.insert("hot", &keys, claims(1_000));

        for i in 0..1_000 {
            cache.insert(&format!("cold-{i}"), &keys, claims(1_000));
            assert!(
                cache.get("hot", &keys, ISS, AUD, 900).is_some(),
                "after {i}"
            );
            assert!(cache.len() <= 100, "{} entries", cache.len());
        }
        assert!(cache.get("cold-0", &keys, ISS, AUD, 900).is_none());
        assert!(cache.get("cold-999", &keys, ISS, AUD, 900).is_some());
    }
}
