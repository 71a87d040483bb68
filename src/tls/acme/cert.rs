//! Certificates as ACME hands them over (PEM chain + PEM key) turned into what the TLS
//! listeners serve (`rustls` [`CertifiedKey`]), with the facts the renewal schedule needs;
//! and the self-signed tls-alpn-01 validation certificate (RFC 8737).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::tls::certs::{self, KeyError};

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("no certificate in the PEM chain")]
    NoCertificate,
    #[error("unreadable PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("unusable certificate: {0}")]
    Certificate(String),
    #[error("{0}")]
    Key(String),
    #[error("cannot make the tls-alpn-01 certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

#[derive(Clone)]
pub struct Issued {
    pub key: Arc<CertifiedKey>,
    /// The DNS names in the leaf's subjectAltName.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Hex serial number of the leaf, for logs and `channelgate check`.
    pub serial: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .field("serial", &self.serial)
            .finish()
    }
}

impl Issued {
    /// Parses a PEM chain (leaf first) and a PEM private key, and checks that they match.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Issued, CertError> {
        let chain =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        let serial = match chain.first() {
            Some(leaf) => x509_parser::parse_x509_certificate(leaf.as_ref())
                .map(|(_, c)| c.raw_serial_as_string())
                .map_err(|e| CertError::Certificate(e.to_string()))?,
            None => return Err(CertError::NoCertificate),
        };
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
        let loaded = certs::certified(chain, key).map_err(|e| match e {
            KeyError::Cert(reason) => CertError::Certificate(reason),
            KeyError::Key(reason) => CertError::Key(reason),
        })?;
        let time = |secs: i64| UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
        Ok(Issued {
            key: loaded.key,
            names: loaded.info.names,
            not_before: time(loaded.info.not_before),
            not_after: time(loaded.info.not_after),
            serial,
        })
    }

    /// Whether every name in `domains` is in the certificate.
    pub fn covers(&self, domains: &[String]) -> bool {
        domains
            .iter()
            .all(|d| self.names.iter().any(|n| n.eq_ignore_ascii_case(d)))
    }

    /// The leaf certificate (DER), to tell two certificates apart.
    pub fn leaf(&self) -> &[u8] {
        // CertifiedKey::new was given a non-empty chain in from_pem (NoCertificate otherwise).
        self.key
            .cert
            .first()
            .map(|c| c.as_ref())
            .unwrap_or_default()
    }
}

/// The tls-alpn-01 validation certificate for `domain` (RFC 8737 section 3): self-signed,
/// with the domain as its only subjectAltName and the critical acmeIdentifier extension
/// holding the SHA-256 digest of the key authorization. Served only to ClientHellos whose
/// ALPN is exactly `acme-tls/1`.
pub fn alpn_challenge_key(
    domain: &str,
    key_auth_digest: &[u8],
) -> Result<Arc<CertifiedKey>, CertError> {
    let mut params = CertificateParams::new(vec![domain.to_string()])?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(key_auth_digest)];
    let key_pair = KeyPair::generate()?;
    let cert = params.self_signed(&key_pair)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let signer = any_supported_type(&key).map_err(|e| CertError::Key(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn parses_names_validity_and_checks_the_key() {
        let (chain, key) = self_signed(&["a.example", "b.example"]);
        let issued = Issued::from_pem(&chain, &key).expect("parses");
        assert_eq!(issued.names, ["a.example", "b.example"]);
        assert!(issued.not_after > issued.not_before);
        assert!(issued.covers(&["B.example".into()]));
        assert!(!issued.covers(&["c.example".into()]));

        let (_, other_key) = self_signed(&["a.example"]);
        assert!(matches!(
            Issued::from_pem(&chain, &other_key),
            Err(CertError::Key(_))
        ));
        assert!(matches!(
            Issued::from_pem("", &key),
            Err(CertError::NoCertificate)
        ));
    }

    #[test]
    fn alpn_certificate_carries_the_critical_acme_identifier() {
        let digest = [7u8; 32];
        let key = alpn_challenge_key("a.example", &digest).expect("builds");
        let (_, cert) = x509_parser::parse_x509_certificate(key.cert[0].as_ref()).expect("x509");
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // An OCTET STRING of 32 bytes: tag 0x04, length 0x20, the digest.
        assert_eq!(&ext.value[..2], &[0x04, 0x20]);
        assert_eq!(&ext.value[2..], &digest);
    }
}
