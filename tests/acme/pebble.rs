//! Debian's pebble (Let's Encrypt's test ACME server) and pebble-challtestsrv (its mock
//! DNS, answering 127.0.0.1 for every name) on loopback ports, with a throw-away CA for
//! pebble's own HTTPS made here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{free_port, repo, wait_for, Proc};
use crate::tls_client;

/// Installs pebble through tests/acme/install-pebble. Outside CI a machine without it
/// skips the ACME tests (false); under CI=true that is a failure.
pub fn available() -> bool {
    let installed = Command::new(repo().join("tests/acme/install-pebble"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        && Path::new("/usr/bin/pebble").exists()
        && Path::new("/usr/bin/pebble-challtestsrv").exists();
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "pebble is required under CI but could not be installed (tests/acme/install-pebble)"
        );
        eprintln!("skipped: pebble is not installed and could not be (not under CI)");
    }
    installed
}

pub struct Pebble {
    pebble: Option<Proc>,
    _dns: Proc,
    pub port: u16,
    pub management_port: u16,
    /// The CA of pebble's own HTTPS certificate (channelgate's `directory_ca`).
    pub directory_ca: PathBuf,
}

impl Pebble {
    /// Validates http-01 on `http_port` and tls-alpn-01 on `tls_port`, and issues
    /// certificates valid for `validity` seconds.
    pub fn start(dir: &Path, http_port: u16, tls_port: u16, validity: u64) -> Pebble {
        let (port, management_port, dns_port, dns_mgmt) =
            (free_port(), free_port(), free_port(), free_port());
        let directory_ca = dir.join("pebble-directory-ca.pem");
        let (cert, key) = (dir.join("pebble-cert.pem"), dir.join("pebble-key.pem"));
        write_listener_cert(&directory_ca, &cert, &key);
        let config = dir.join("pebble.json");
        let text = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": cert, "privateKey": key,
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity,
        }});
        std::fs::write(&config, text.to_string()).expect("write pebble config");

        let dns = Proc::spawn(
            &format!("challtestsrv-{dns_port}"),
            Command::new("/usr/bin/pebble-challtestsrv").args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-management",
                &format!("127.0.0.1:{dns_mgmt}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ]),
            dir,
        );
        wait_for("pebble-challtestsrv", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", dns_mgmt)).is_ok()
        });
        let pebble = Proc::spawn(
            &format!("pebble-{port}"),
            Command::new("/usr/bin/pebble")
                .arg("-config")
                .arg(&config)
                .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                // Deterministic: no fake bad nonces, and every order validates afresh (a
                // renewal proves that the challenge is still answered).
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0"),
            dir,
        );
        wait_for("pebble", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", management_port)).is_ok()
        });
        Pebble {
            pebble: Some(pebble),
            _dns: dns,
            port,
            management_port,
            directory_ca,
        }
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The root that signs the certificates pebble issues (new at every pebble start).
    pub fn root_pem(&self) -> String {
        let pem = std::fs::read_to_string(&self.directory_ca).expect("directory ca");
        let (_, body) = tls_client::get(self.management_port, "127.0.0.1", &pem, "/roots/0")
            .expect("GET pebble /roots/0");
        body
    }

    pub fn log(&self) -> String {
        self.pebble.as_ref().map(|p| p.output()).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.pebble.take() {
            p.signal("TERM");
            p.wait_exit(Duration::from_secs(30));
        }
    }
}

/// A CA and, signed by it, pebble's HTTPS certificate for 127.0.0.1 and localhost.
fn write_listener_cert(ca_path: &Path, cert_path: &Path, key_path: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
        .expect("ca cert");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("leaf params");
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, &ca).expect("leaf cert");
    std::fs::write(ca_path, ca.pem()).expect("write ca");
    std::fs::write(cert_path, cert.pem()).expect("write cert");
    std::fs::write(key_path, key.serialize_pem()).expect("write key");
}
