//! `[tls]`: the HTTPS listeners, their certificates (files and ACME), and what the plain
//! listeners do once HTTPS exists (redirect, HSTS). Validated in one step like the rest of the
//! configuration; every error names its key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::values::{self, Address, Resolve};
use crate::config::{Errors, KeyPath};

/// Default `acme.renew_before`: renew a certificate 30 days before it expires.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Let's Encrypt's production directory, the default `acme.directory`.
pub const LETSENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Default `acme.state_dir` (the packaged systemd unit's StateDirectory).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/channelgate/acme";

/// `[tls]`, validated.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// TCP addresses that accept HTTPS (nginx `listen 443 ssl`).
    pub listen: Vec<SocketAddr>,
    /// Certificate files; the first one without `names` is the default for clients that send
    /// no or an unknown SNI name.
    pub certificates: Vec<CertFiles>,
    /// Certificates obtained and renewed by channelgate itself (RFC 8555).
    pub acme: Option<AcmeConfig>,
    /// The oldest TLS version accepted ("1.2" or "1.3"; default "1.2").
    pub min_version: MinVersion,
    /// Offer HTTP/2 by ALPN (h2, then http/1.1). Default true.
    pub http2: bool,
    /// Plain listeners answer 308 to https:// (except ACME http-01 challenges). Default false.
    pub redirect_http: bool,
    /// The Strict-Transport-Security value sent on HTTPS responses; none by default.
    pub hsts: Option<String>,
}

/// One `certificates` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first (nginx `ssl_certificate`).
    pub cert: PathBuf,
    /// PEM private key (nginx `ssl_certificate_key`).
    pub key: PathBuf,
    /// SNI names this certificate serves (lowercase; `*.example.org` wildcards). Empty: the
    /// names in the certificate itself, and this entry may be the default.
    pub names: Vec<String>,
}

/// `acme = { ... }`.
#[derive(Clone, Debug)]
pub struct AcmeConfig {
    /// Names to obtain one certificate for (lowercase, no wildcards: they need dns-01).
    pub domains: Vec<String>,
    /// Contact address given to the CA (optional).
    pub email: Option<String>,
    /// The ACME directory URL (default Let's Encrypt production).
    pub directory: String,
    /// Where the account key and certificates are kept (created 0700).
    pub state_dir: PathBuf,
    /// How the CA checks that we control the names.
    pub challenge: Challenge,
    /// Renew this long before expiry (default 30 days).
    pub renew_before: Duration,
    /// PEM file of the CA that serves `directory` over HTTPS, for a private ACME server such
    /// as pebble; None trusts the system roots.
    pub directory_ca: Option<PathBuf>,
}

/// ACME challenge type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// RFC 8737: a special certificate on the TLS listener, chosen by ALPN `acme-tls/1`.
    TlsAlpn01,
    /// A token under `/.well-known/acme-challenge/` on a plain listener (port 80).
    Http01,
}

impl Challenge {
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::TlsAlpn01 => "tls-alpn-01",
            Challenge::Http01 => "http-01",
        }
    }
}

/// `min_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

impl MinVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            MinVersion::Tls12 => "1.2",
            MinVersion::Tls13 => "1.3",
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawTls {
    listen: Option<Vec<String>>,
    certificates: Vec<RawCertFiles>,
    acme: Option<RawAcme>,
    min_version: Option<String>,
    http2: Option<bool>,
    redirect_http: Option<bool>,
    hsts: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawCertFiles {
    cert: Option<String>,
    key: Option<String>,
    names: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawAcme {
    domains: Vec<String>,
    email: Option<String>,
    directory: Option<String>,
    state_dir: Option<String>,
    challenge: Option<String>,
    renew_before: Option<String>,
    directory_ca: Option<String>,
}

impl RawTls {
    pub(crate) fn validate(self, path: &KeyPath, errs: &mut Errors) -> TlsConfig {
        let raw_listen = self.listen.unwrap_or_default();
        if raw_listen.is_empty() {
            errs.add(
                &path.key("listen"),
                "needs at least one address, e.g. \"0.0.0.0:443\"",
            );
        }
        let mut listen = Vec::new();
        for (i, raw) in raw_listen.iter().enumerate() {
            let p = path.key("listen").index(i);
            match values::address(raw, Resolve::IpOnly, &p, errs) {
                Some(Address::Tcp(a)) if listen.contains(&a) => {
                    errs.add(&p, format!("{a} is listed twice"))
                }
                Some(Address::Tcp(a)) => listen.push(a),
                Some(Address::Unix(_)) => errs.add(&p, "TLS listeners must be TCP addresses"),
                None => {}
            }
        }
        let mut certificates = Vec::new();
        for (i, c) in self.certificates.into_iter().enumerate() {
            let p = path.key("certificates").index(i);
            let cert = c.cert.filter(|s| !s.is_empty());
            let key = c.key.filter(|s| !s.is_empty());
            if cert.is_none() {
                errs.add(&p.key("cert"), "is required (the PEM certificate chain)");
            }
            if key.is_none() {
                errs.add(&p.key("key"), "is required (the PEM private key)");
            }
            let names = names(&c.names, true, &p.key("names"), errs);
            if let (Some(cert), Some(key)) = (cert, key) {
                certificates.push(CertFiles {
                    cert: cert.into(),
                    key: key.into(),
                    names,
                });
            }
        }
        let acme = self.acme.map(|a| a.validate(&path.key("acme"), errs));
        if certificates.is_empty() && acme.is_none() {
            errs.add(
                &path.key("certificates"),
                "[tls] needs certificate files or acme = { domains = [...] }",
            );
        }
        let min_version = match self.min_version.as_deref() {
            None | Some("1.2") => MinVersion::Tls12,
            Some("1.3") => MinVersion::Tls13,
            Some(other) => {
                errs.add(
                    &path.key("min_version"),
                    format!("`{other}` is not supported; use \"1.2\" or \"1.3\" (older versions are insecure)"),
                );
                MinVersion::Tls12
            }
        };
        if let Some(h) = &self.hsts {
            if h.is_empty() || http::HeaderValue::from_str(h).is_err() || !h.contains("max-age=") {
                errs.add(
                    &path.key("hsts"),
                    "must be a Strict-Transport-Security value such as \"max-age=63072000\"",
                );
            }
        }
        TlsConfig {
            listen,
            certificates,
            acme,
            min_version,
            // Off unless asked for, as in nginx: HTTP/2 requests do not get every [server]
            // limit yet (README "HTTP/2 connections"), HTTP/1.1 ones do.
            http2: self.http2.unwrap_or(false),
            redirect_http: self.redirect_http.unwrap_or(false),
            hsts: self.hsts,
        }
    }
}

impl RawAcme {
    fn validate(self, path: &KeyPath, errs: &mut Errors) -> AcmeConfig {
        if self.domains.is_empty() {
            errs.add(&path.key("domains"), "needs at least one name");
        }
        let domains = names(&self.domains, false, &path.key("domains"), errs);
        if let Some(e) = &self.email {
            if !e.contains('@') || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
                errs.add(&path.key("email"), format!("`{e}` is not an email address"));
            }
        }
        let directory = self
            .directory
            .unwrap_or_else(|| LETSENCRYPT_DIRECTORY.to_string());
        if !directory.starts_with("https://") {
            errs.add(
                &path.key("directory"),
                "must be an https:// URL (RFC 8555 requires HTTPS)",
            );
        }
        let challenge = match self.challenge.as_deref() {
            None | Some("tls-alpn-01") => Challenge::TlsAlpn01,
            Some("http-01") => Challenge::Http01,
            Some(other) => {
                errs.add(
                    &path.key("challenge"),
                    format!("`{other}` is not supported; use \"tls-alpn-01\" or \"http-01\""),
                );
                Challenge::TlsAlpn01
            }
        };
        let renew_before = values::duration(
            self.renew_before.as_deref(),
            DEFAULT_RENEW_BEFORE,
            false,
            &path.key("renew_before"),
            errs,
        );
        let state_dir = self.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into());
        if !state_dir.starts_with('/') {
            errs.add(&path.key("state_dir"), "must be an absolute path");
        }
        AcmeConfig {
            domains,
            email: self.email,
            directory,
            state_dir: state_dir.into(),
            challenge,
            renew_before,
            directory_ca: self.directory_ca.map(PathBuf::from),
        }
    }
}

/// Validates DNS names (lowercased); `*.` wildcards only when `wildcards`.
fn names(raw: &[String], wildcards: bool, path: &KeyPath, errs: &mut Errors) -> Vec<String> {
    let mut out = Vec::new();
    for (i, n) in raw.iter().enumerate() {
        let name = n.trim().trim_end_matches('.').to_ascii_lowercase();
        let bare = name
            .strip_prefix("*.")
            .filter(|_| wildcards)
            .unwrap_or(&name);
        if !is_dns_name(bare) {
            let hint = if wildcards {
                " (a wildcard is written \"*.example.org\")"
            } else {
                ""
            };
            errs.add(&path.index(i), format!("`{n}` is not a DNS name{hint}"));
        } else if out.contains(&name) {
            errs.add(&path.index(i), format!("`{n}` is listed twice"));
        } else {
            out.push(name);
        }
    }
    out
}

/// A host name: dot-separated labels of letters, digits and inner hyphens.
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(tls: &str) -> Result<Config, crate::config::ConfigErrors> {
        let text = format!("[upstream]\nservers = [\"127.0.0.1:8050\"]\n[tls]\n{tls}");
        Config::parse(&text, Path::new("t.toml"))
    }

    #[test]
    fn full_section_parses() {
        let c = parse(
            r#"listen = ["127.0.0.1:8443", "[::1]:8443"]
certificates = [{ cert = "/c.pem", key = "/k.pem" }, { cert = "/a.pem", key = "/ak.pem", names = ["API.example.org", "*.x.org"] }]
acme = { domains = ["app.example.org"], email = "ops@example.org", directory = "https://localhost:14000/dir", state_dir = "/var/lib/cg", challenge = "http-01", renew_before = "10d", directory_ca = "/pebble.pem" }
min_version = "1.3"
http2 = false
redirect_http = true
hsts = "max-age=63072000"
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let t = c.tls.unwrap();
        assert_eq!(t.listen.len(), 2);
        assert_eq!(t.certificates[1].names, ["api.example.org", "*.x.org"]);
        let a = t.acme.unwrap();
        assert_eq!(a.challenge, super::Challenge::Http01);
        assert_eq!(a.renew_before.as_secs(), 10 * 86400);
        assert_eq!(a.directory_ca.unwrap(), Path::new("/pebble.pem"));
        assert_eq!(t.min_version, super::MinVersion::Tls13);
        assert!(!t.http2 && t.redirect_http);
    }

    #[test]
    fn defaults_and_absence() {
        let c = Config::parse(
            "[upstream]\nservers = [\"127.0.0.1:1\"]\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert!(c.tls.is_none());
        let t = parse("listen = [\"127.0.0.1:8443\"]\nacme = { domains = [\"a.example\"] }\n")
            .unwrap()
            .tls
            .unwrap();
        assert!(!t.http2 && !t.redirect_http && t.hsts.is_none());
        let a = t.acme.unwrap();
        assert_eq!(a.challenge, super::Challenge::TlsAlpn01);
        assert_eq!(a.renew_before, super::DEFAULT_RENEW_BEFORE);
        assert_eq!(a.directory, super::LETSENCRYPT_DIRECTORY);
    }

    #[test]
    fn shipped_example_tls_block_is_valid_when_uncommented() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/channelgate.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let (_, tail) = text
            .split_once("# [tls]\n")
            .expect("the example documents [tls]");
        let (block, _) = tail.split_once("# # (end of [tls])").expect("end marker");
        let block: String = block
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let t = parse(&block).unwrap_or_else(|e| panic!("{e}")).tls.unwrap();
        assert_eq!(t.certificates.len(), 2);
        assert!(t.acme.is_some() && t.redirect_http && t.hsts.is_some());
    }

    #[test]
    fn errors_name_their_keys() {
        let e = parse(
            r#"listen = ["unix:/x", "127.0.0.1:1"]
certificates = [{ cert = "/c.pem" , names = ["bad name"] }]
acme = { domains = ["*.wild.org"], directory = "http://x", challenge = "dns-01", state_dir = "rel" }
min_version = "1.0"
hsts = "preload"
"#,
        )
        .unwrap_err();
        let keys: Vec<&str> = e.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "tls.listen[0]",
                "tls.certificates[0].key",
                "tls.certificates[0].names[0]",
                "tls.acme.domains[0]",
                "tls.acme.directory",
                "tls.acme.challenge",
                "tls.acme.state_dir",
                "tls.min_version",
                "tls.hsts",
            ],
            "{e}"
        );
        assert!(e.errors.iter().all(|e| e.position.is_some()), "{e}");
        let e = parse("listen = [\"127.0.0.1:1\"]\n").unwrap_err();
        assert_eq!(e.errors[0].key, "tls.certificates");
    }
}
