//! A test certificate authority made with rcgen, for the TLS end-to-end tests
//! (tests/tls.rs, tests/chromium.rs). Included by each with `#[path = "common/ca.rs"]`.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A certificate authority that the test clients trust (its PEM is `ca.pem`).
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "channelgate test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ECDSA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        let pem = dir.join("ca.pem");
        std::fs::write(&pem, cert.pem()).expect("write ca.pem");
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// Issues a certificate for `names` (the first is the CN) valid for `days` around now,
    /// and writes it and its key as `{tag}.crt` / `{tag}.key`.
    pub fn issue(
        &self,
        dir: &Path,
        tag: &str,
        names: &[&str],
        days: (i64, i64),
    ) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("names");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(days.0);
        params.not_after = now + time::Duration::days(days.1);
        let key = KeyPair::generate().expect("ECDSA key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        let (c, k) = (
            dir.join(format!("{tag}.crt")),
            dir.join(format!("{tag}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (c, k)
    }
}
