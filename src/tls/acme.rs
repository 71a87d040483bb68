//! Certificates that obtain and renew themselves: an ACME (RFC 8555) client run as a
//! background service beside the listeners.
//!
//! - [`service`]: the loop. On start it serves what state_dir holds, orders when there is
//!   nothing (or it does not cover the configured names) and renews `renew_before` ahead of
//!   expiry; a failure keeps the current certificate and backs off ([`schedule`]).
//! - [`order`]: one ACME conversation through instant-acme (JWS, nonces and polling are
//!   the crate's); the challenge is answered by channelgate itself: tls-alpn-01 (RFC 8737)
//!   on the TLS listeners, or http-01 on the plain listeners, through [`Challenges`].
//! - [`state`]: state_dir (0700; keys and account 0600), and the lock that lets several
//!   instances share it: one orders, the others pick the result up from disk.
//! - [`cert`]: PEM to rustls, validity, the tls-alpn-01 certificate.

pub mod cert;
pub mod metrics;
pub mod order;
pub mod schedule;
pub mod service;
pub mod state;
pub mod summary;

use std::sync::Arc;

use rustls::sign::CertifiedKey;

use super::{CertStore, Http01Tokens};

pub use service::AcmeService;

/// `[tls] acme`, as validated by [`crate::tls::config`].
pub use super::config::{AcmeConfig, Challenge};

/// Where the client publishes challenge answers and installs certificates: the TLS
/// certificate store (the listeners read it on every handshake or request).
pub trait Challenges: Send + Sync {
    /// Serve `key` to ClientHellos for `domain` whose ALPN is exactly `acme-tls/1`;
    /// `None` withdraws it.
    fn set_alpn_challenge(&self, domain: &str, key: Option<Arc<CertifiedKey>>);
    /// Answer GET `/.well-known/acme-challenge/{token}` with `key_authorization`; `None`
    /// withdraws it.
    fn set_http01(&self, token: &str, key_authorization: Option<String>);
    /// Serve `key` for these names from now on.
    fn set_certificate(&self, names: &[String], key: Arc<CertifiedKey>);
}

/// The listeners' side: the certificate store (SNI and `acme-tls/1` handshakes) and the
/// http-01 tokens the plain listeners answer.
pub struct Listeners {
    pub store: CertStore,
    pub tokens: Http01Tokens,
}

impl Challenges for Listeners {
    fn set_alpn_challenge(&self, domain: &str, key: Option<Arc<CertifiedKey>>) {
        self.store.set_alpn_challenge(domain, key);
    }
    fn set_http01(&self, token: &str, key_authorization: Option<String>) {
        match key_authorization {
            Some(k) => {
                if !self.tokens.insert(token, &k) {
                    // The CA's validation then fails and is counted as such.
                    tracing::warn!(token, "acme: http-01 token refused by the token store");
                }
            }
            None => self.tokens.remove(token),
        }
    }
    fn set_certificate(&self, names: &[String], key: Arc<CertifiedKey>) {
        self.store.set_certificate(names, key);
    }
}

/// Why a renewal step failed. Each has a fixed [`reason`](AcmeError::reason) for metrics.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("state_dir: {0}")]
    State(#[from] state::StateError),
    #[error("directory_ca: {0}")]
    DirectoryCa(String),
    #[error("ACME account: {0}")]
    Account(#[source] instant_acme::Error),
    #[error("ACME order: {0}")]
    Order(#[source] instant_acme::Error),
    #[error("the CA offers no {} challenge", .0.as_str())]
    NoChallenge(Challenge),
    #[error("validation failed: {0}")]
    Invalid(String),
    #[error("finalizing the order: {0}")]
    Finalize(#[source] instant_acme::Error),
    #[error("certificate: {0}")]
    Certificate(#[source] cert::CertError),
}

impl AcmeError {
    /// The `reason` label: one of state_dir, directory_ca, rate_limited, unreachable, timeout,
    /// account_unknown, account, order, no_challenge, validation, finalize, certificate.
    pub fn reason(&self) -> &'static str {
        let acme = match self {
            AcmeError::State(_) => return "state_dir",
            AcmeError::DirectoryCa(_) => return "directory_ca",
            AcmeError::NoChallenge(_) => return "no_challenge",
            AcmeError::Invalid(_) => return "validation",
            AcmeError::Certificate(_) => return "certificate",
            AcmeError::Account(e) | AcmeError::Order(e) | AcmeError::Finalize(e) => e,
        };
        match acme {
            instant_acme::Error::Api(p) if problem_is(p, "rateLimited") => "rate_limited",
            instant_acme::Error::Api(p) if problem_is(p, "accountDoesNotExist") => {
                "account_unknown"
            }
            instant_acme::Error::Hyper(_) | instant_acme::Error::Http(_) => "unreachable",
            instant_acme::Error::Other(_) if matches!(self, AcmeError::Account(_)) => "unreachable",
            instant_acme::Error::Timeout(_) => "timeout",
            _ => match self {
                AcmeError::Account(_) => "account",
                AcmeError::Finalize(_) => "finalize",
                _ => "order",
            },
        }
    }
}

/// `directory_ca`, when set, must hold a PEM certificate: checked by `channelgate check`
/// (an error) and before each account set-up (a failure with reason `directory_ca`).
pub fn check_directory_ca(acme: &AcmeConfig) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    let Some(ca) = &acme.directory_ca else {
        return Ok(());
    };
    let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
    match rustls::pki_types::CertificateDer::pem_slice_iter(&pem).next() {
        Some(Ok(_)) => Ok(()),
        _ => Err(format!("{} holds no PEM certificate", ca.display())),
    }
}

fn problem_is(p: &instant_acme::Problem, kind: &str) -> bool {
    p.r#type
        .as_deref()
        .and_then(|t| t.strip_prefix("urn:ietf:params:acme:error:"))
        == Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(kind: &str) -> instant_acme::Error {
        let problem: instant_acme::Problem = serde_json::from_value(serde_json::json!({
            "type": format!("urn:ietf:params:acme:error:{kind}"),
            "detail": "from the CA",
            "status": 400,
        }))
        .expect("problem document");
        instant_acme::Error::Api(problem)
    }

    #[test]
    fn reasons_are_a_fixed_set() {
        assert_eq!(
            AcmeError::Order(api("rateLimited")).reason(),
            "rate_limited"
        );
        assert_eq!(
            AcmeError::Order(api("accountDoesNotExist")).reason(),
            "account_unknown"
        );
        assert_eq!(AcmeError::Order(api("malformed")).reason(), "order");
        assert_eq!(AcmeError::Account(api("malformed")).reason(), "account");
        assert_eq!(AcmeError::Finalize(api("badCSR")).reason(), "finalize");
        assert_eq!(
            AcmeError::Finalize(instant_acme::Error::Timeout(None)).reason(),
            "timeout"
        );
        assert_eq!(AcmeError::Invalid("x".into()).reason(), "validation");
        assert_eq!(
            AcmeError::NoChallenge(Challenge::Http01).to_string(),
            "the CA offers no http-01 challenge"
        );
    }
}
