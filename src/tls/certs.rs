//! Reading a certificate and its key from PEM files into what rustls serves, with the facts
//! `check`, the metrics and the logs need (names, expiry). Pingora's own loader panics on a
//! bad file; everything here returns a [`CertError`] naming the file instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate that can be served, with what we learned from it.
#[derive(Clone, Debug)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// Facts about a leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names of the subjectAltName extension (lowercase), else the subject CN.
    pub names: Vec<String>,
    /// Not valid before / after, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// Issuer, as an RFC 4514 string.
    pub issuer: String,
}

impl CertInfo {
    /// Seconds until expiry (negative once expired).
    pub fn remaining(&self) -> i64 {
        self.not_after - now()
    }

    /// The name used in metric labels and logs: the first name, or "(unnamed)".
    pub fn label(&self) -> &str {
        self.names.first().map_or("(unnamed)", String::as_str)
    }
}

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{} does not fit {}: {reason}", key.display(), cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Loads a PEM chain and key from files and checks that they belong together.
pub fn load_files(cert: &Path, key: &Path) -> Result<LoadedCert, CertError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| CertError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::BadCertificate {
            path: cert.to_path_buf(),
            reason: format!("bad PEM: {e}"),
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| CertError::NoKey {
        path: key.to_path_buf(),
    })?;
    certified(chain, private).map_err(|e| match e {
        KeyError::Cert(reason) => CertError::BadCertificate {
            path: cert.to_path_buf(),
            reason,
        },
        KeyError::Key(reason) => CertError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason,
        },
    })
}

/// Why a chain and key do not make a servable certificate.
#[derive(Debug)]
pub enum KeyError {
    /// The leaf certificate cannot be parsed.
    Cert(String),
    /// The key is unsupported or does not match the leaf.
    Key(String),
}

/// Builds a servable certificate from DER (for ACME, which holds its certificates in memory).
pub fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<LoadedCert, KeyError> {
    let leaf = chain
        .first()
        .ok_or_else(|| KeyError::Cert("empty chain".into()))?;
    let info = inspect(leaf).map_err(KeyError::Cert)?;
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        KeyError::Key(match e {
            rustls::Error::InconsistentKeys(_) => {
                "the private key does not belong to the certificate".to_string()
            }
            other => format!("unusable private key: {other}"),
        })
    })?;
    Ok(LoadedCert {
        key: Arc::new(key),
        info,
    })
}

/// Reads names, validity and issuer from a DER certificate.
pub fn inspect(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                let d = d.to_ascii_lowercase();
                if !names.contains(&d) {
                    names.push(d);
                }
            }
        }
    }
    if names.is_empty() {
        if let Some(cn) = cert.subject().iter_common_name().next() {
            if let Ok(cn) = cn.as_str() {
                names.push(cn.to_ascii_lowercase());
            }
        }
    }
    let v = cert.validity();
    Ok(CertInfo {
        names,
        not_before: v.not_before.timestamp(),
        not_after: v.not_after.timestamp(),
        issuer: cert.issuer().to_string(),
    })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Certificates made on the fly for unit tests.
    use rcgen::{CertificateParams, KeyPair};

    /// A self-signed certificate for `names`, as (cert PEM, key PEM).
    pub fn self_signed(names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("rcgen makes ECDSA keys");
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("valid names");
        let cert = params.self_signed(&key).expect("self-signing works");
        (cert.pem(), key.serialize_pem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn loads_and_reports_mismatch_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, k1) = testing::self_signed(&["a.example", "B.example"]);
        let (_, k2) = testing::self_signed(&["c.example"]);
        let cert = write(dir.path(), "c1.pem", &c1);
        let key = write(dir.path(), "k1.pem", &k1);
        let other = write(dir.path(), "k2.pem", &k2);
        let junk = write(dir.path(), "junk.pem", "hello");
        let ok = load_files(&cert, &key).unwrap();
        assert_eq!(ok.info.names, ["a.example", "b.example"]);
        assert!(ok.info.remaining() > 0);
        let e = load_files(&cert, &other).unwrap_err();
        assert!(matches!(e, CertError::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains("does not belong"), "{e}");
        assert!(matches!(
            load_files(&junk, &key),
            Err(CertError::NoCertificate { .. })
        ));
        assert!(matches!(
            load_files(&cert, &junk),
            Err(CertError::NoKey { .. })
        ));
        let e = load_files(&dir.path().join("missing"), &key).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
