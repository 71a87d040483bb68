//! ACME http-01 tokens (RFC 8555 §8.3): the ACME client puts token → key authorization here,
//! and the plain listeners answer `GET /.well-known/acme-challenge/{token}` from it (before
//! any redirect to https).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The path prefix the CA fetches.
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// Tokens held at once: a bound against a runaway ACME loop.
const MAX_TOKENS: usize = 256;

/// Shared token store (cheap to clone).
#[derive(Clone, Default, Debug)]
pub struct Http01Tokens {
    tokens: Arc<RwLock<HashMap<String, String>>>,
}

/// A token is base64url without padding (RFC 8555 §8.3), at least 128 bits.
pub fn valid_token(t: &str) -> bool {
    (22..=256).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Http01Tokens {
    /// Serves `key_authorization` for `token`; false when the token is malformed or too many
    /// are pending.
    pub fn insert(&self, token: &str, key_authorization: &str) -> bool {
        if !valid_token(token) {
            return false;
        }
        let mut t = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        if t.len() >= MAX_TOKENS && !t.contains_key(token) {
            return false;
        }
        t.insert(token.to_string(), key_authorization.to_string());
        true
    }

    pub fn remove(&self, token: &str) {
        let mut t = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        t.remove(token);
    }

    pub fn get(&self, token: &str) -> Option<String> {
        let t = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        t.get(token).cloned()
    }

    /// The answer for a request path, if it is a challenge path: Some(None) for an unknown token.
    pub fn answer(&self, path: &str) -> Option<Option<String>> {
        let token = path.strip_prefix(CHALLENGE_PREFIX)?;
        Some(self.get(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_checked() {
        let t = Http01Tokens::default();
        let tok = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
        assert!(t.insert(tok, "ka"));
        assert!(!t.insert("short", "ka"));
        assert!(!t.insert("../../etc/passwd/aaaaaaaaaaaaaaaaaaaa", "ka"));
        assert_eq!(
            t.answer(&format!("{CHALLENGE_PREFIX}{tok}")),
            Some(Some("ka".into()))
        );
        assert_eq!(t.answer(&format!("{CHALLENGE_PREFIX}nope")), Some(None));
        assert_eq!(t.answer("/other"), None);
        t.remove(tok);
        assert_eq!(t.get(tok), None);
    }
}
