//! `X-Channelgate-Signature` on every request channelgate itself makes to the app (auth,
//! authorize, inbound frames), so the app can tell them from a client that reached it
//! directly: the Stripe/Slack webhook pattern.
//!
//! `X-Channelgate-Signature: t=<unix seconds>,v1=<64 lowercase hex digits>`, the HMAC-SHA256
//! with the hook secret as key of the canonical form, the bytes
//!
//! ```text
//! <t> "\n" <METHOD> "\n" <request target> "\n"
//! then, for every X-Channelgate-* header other than the signature, sorted by its
//! lowercase name: <lowercase name> ":" <value> "\n"
//! ```
//!
//! where the request target is the path and query exactly as sent on the request line, a
//! header sent more than once contributes its values joined by "," (as a WSGI server joins
//! them), and values are the raw header bytes. The body is not covered: it is what the
//! WebSocket client sent, untrusted input either way. Because no client can send an
//! `X-Channelgate-*` header through channelgate, every such header the app sees is covered.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use pingora::http::RequestHeader;
use sha2::Sha256;

use crate::proxy::headers::reserved::RESERVED_PREFIX;

pub const SIGNATURE: &str = "x-channelgate-signature";
/// The shortest secret accepted, in bytes.
pub const MIN_SECRET: usize = 16;

/// The hook secret; its bytes never appear in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct HookSecret(Vec<u8>);

impl HookSecret {
    /// A secret of at least [`MIN_SECRET`] bytes, surrounding whitespace removed.
    pub fn new(raw: &str) -> Result<HookSecret, String> {
        let s = raw.trim();
        if s.len() < MIN_SECRET {
            return Err(format!(
                "is {} bytes long; use at least {MIN_SECRET} random bytes, e.g. `openssl rand -hex 32`",
                s.len()
            ));
        }
        Ok(HookSecret(s.as_bytes().to_vec()))
    }
}

impl fmt::Debug for HookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HookSecret(..)")
    }
}

/// The bytes that are signed (see the module documentation).
pub fn canonical(t: u64, req: &RequestHeader) -> Vec<u8> {
    let mut out = format!("{t}\n{}\n", req.method.as_str()).into_bytes();
    out.extend_from_slice(req.raw_path());
    out.push(b'\n');
    let mut own: BTreeMap<&str, Vec<&[u8]>> = BTreeMap::new();
    for (name, value) in req.headers.iter() {
        let n = name.as_str();
        if n.starts_with(RESERVED_PREFIX) && n != SIGNATURE {
            own.entry(n).or_default().push(value.as_bytes());
        }
    }
    for (name, values) in own {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&values.join(&b","[..]));
        out.push(b'\n');
    }
    out
}

/// The signature header value for `req` at time `t`.
pub fn signature(secret: &HookSecret, t: u64, req: &RequestHeader) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes any key length");
    mac.update(&canonical(t, req));
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Signs `req` now, replacing any signature it carries.
pub fn sign(secret: &HookSecret, req: &mut RequestHeader) -> pingora::Result<()> {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let value = signature(secret, t, req);
    req.insert_header(SIGNATURE, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/ws/receive/?a=1&b=%20", None).unwrap();
        r.insert_header("X-Channelgate-User", "alice").unwrap();
        r.insert_header("x-channelgate-channel", "specific.abc!def")
            .unwrap();
        r.insert_header("x-channelgate-param-room", "lobby")
            .unwrap();
        r.insert_header("cookie", "sessionid=x").unwrap();
        r
    }

    #[test]
    fn canonical_form_is_as_documented() {
        let text = String::from_utf8(canonical(1700000000, &req())).unwrap();
        assert_eq!(
            text,
            "1700000000\nPOST\n/ws/receive/?a=1&b=%20\n\
             x-channelgate-channel:specific.abc!def\n\
             x-channelgate-param-room:lobby\n\
             x-channelgate-user:alice\n"
        );
    }

    #[test]
    fn known_answer_shared_with_the_python_package() {
        // The same vector is checked by python/tests/test_verify.py.
        let secret = HookSecret::new("0123456789abcdef-test-secret").unwrap();
        assert_eq!(
            signature(&secret, 1700000000, &req()),
            "t=1700000000,v1=".to_string() + KNOWN
        );
    }
    const KNOWN: &str = "408c74ccd05db7b7e24432aeb70dd1dd2e913dd9b6a70d28ba9f8d54c57f90d2";

    #[test]
    fn short_secrets_are_refused_and_never_printed() {
        assert!(HookSecret::new("short").is_err());
        let s = HookSecret::new("  0123456789abcdef \n").unwrap();
        assert_eq!(format!("{s:?}"), "HookSecret(..)");
    }
}
