//! The certificate store: which certificate a handshake gets, by SNI name. rustls asks it
//! through [`ResolvesServerCert`] on every handshake; files (`[tls] certificates`) and ACME
//! ([`CertStore::set_certificate`]) fill it, and replacing an entry affects only new
//! handshakes: open connections keep the certificate they were made with.
//!
//! Lookup order for a name: exact name, then a `*.` wildcard one label up, then the default
//! (the first file entry without `names`, else the first file entry, else the first
//! certificate set by ACME). ACME-set names win over file names on an exact tie.
//! A ClientHello whose ALPN list is exactly `acme-tls/1` gets only a tls-alpn-01 challenge
//! certificate (RFC 8737), never a real one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::CipherSuite;

use super::certs::{self, CertError, CertInfo};
use super::config::{CertFiles, MinVersion};
use super::metrics::TlsMetrics;

/// The ALPN protocol of RFC 8737 challenge handshakes.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Challenge certificates held at once: a bound against a runaway ACME loop.
const MAX_CHALLENGES: usize = 256;

/// Shared handle to the store (cheap to clone).
#[derive(Clone)]
pub struct CertStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: RwLock<State>,
    metrics: Arc<TlsMetrics>,
    min_version: MinVersion,
}

#[derive(Default)]
struct State {
    /// Entries loaded from `[tls] certificates`, in config order.
    files: Vec<FileEntry>,
    /// Names set by ACME (or another in-process source).
    managed: Names,
    /// First certificate ever set by ACME: the default when there are no files.
    managed_default: Option<Arc<CertifiedKey>>,
    /// tls-alpn-01 challenge certificates by name.
    challenges: HashMap<String, Arc<CertifiedKey>>,
}

struct FileEntry {
    files: CertFiles,
    key: Arc<CertifiedKey>,
    info: CertInfo,
}

/// Name → certificate, exact and wildcard (`*.example.org` stored as `example.org`).
#[derive(Default)]
struct Names {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl Names {
    fn insert(&mut self, name: &str, key: Arc<CertifiedKey>) {
        match name.strip_prefix("*.") {
            Some(parent) => self.wildcard.insert(parent.to_string(), key),
            None => self.exact.insert(name.to_string(), key),
        };
    }
}

/// One certificate entry's (re)load result.
#[derive(Debug)]
pub struct LoadReport {
    pub files: CertFiles,
    pub result: Result<CertInfo, CertError>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.read();
        f.debug_struct("CertStore")
            .field("files", &st.files.len())
            .field("managed", &st.managed.exact.len())
            .finish()
    }
}

impl Default for CertStore {
    fn default() -> Self {
        CertStore::new(Arc::new(TlsMetrics::unregistered()), MinVersion::Tls12)
    }
}

impl CertStore {
    pub fn new(metrics: Arc<TlsMetrics>, min_version: MinVersion) -> Self {
        CertStore {
            inner: Arc::new(Inner {
                state: RwLock::new(State::default()),
                metrics,
                min_version,
            }),
        }
    }

    pub fn metrics(&self) -> &Arc<TlsMetrics> {
        &self.inner.metrics
    }

    // A poisoned lock only means a panic elsewhere while holding it; the maps stay usable.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves `key` for `names` (exact or `*.` wildcard, lowercase) from the next handshake on.
    pub fn set_certificate(&self, names: &[String], key: Arc<CertifiedKey>) {
        if let Some(info) = key
            .end_entity_cert()
            .ok()
            .and_then(|c| certs::inspect(c).ok())
        {
            for n in names {
                self.inner
                    .metrics
                    .expiry
                    .with_label_values(&[n])
                    .set(info.not_after);
            }
        }
        let mut st = self.write();
        for n in names {
            st.managed.insert(&normalize(n), key.clone());
        }
        if st.managed_default.is_none() {
            st.managed_default = Some(key);
        }
    }

    /// Sets (Some) or removes (None) the tls-alpn-01 challenge certificate for `domain`.
    pub fn set_alpn_challenge(&self, domain: &str, key: Option<Arc<CertifiedKey>>) {
        let mut st = self.write();
        let domain = normalize(domain);
        match key {
            Some(k)
                if st.challenges.len() < MAX_CHALLENGES || st.challenges.contains_key(&domain) =>
            {
                st.challenges.insert(domain, k);
            }
            Some(_) => tracing::warn!(%domain, "too many pending tls-alpn-01 challenges; ignored"),
            None => {
                st.challenges.remove(&domain);
            }
        }
    }

    /// (Re)reads every certificate file. An entry that fails keeps its previous certificate
    /// (if it had one); the reports say what happened to each entry, in config order.
    pub fn load_files(&self, entries: &[CertFiles]) -> Vec<LoadReport> {
        let loaded: Vec<_> = entries
            .iter()
            .map(|f| (f, certs::load_files(&f.cert, &f.key)))
            .collect();
        let mut reports = Vec::new();
        let mut st = self.write();
        let mut old: HashMap<(PathBuf, PathBuf), FileEntry> = st
            .files
            .drain(..)
            .map(|e| ((e.files.cert.clone(), e.files.key.clone()), e))
            .collect();
        let old_names: Vec<String> = old.values().flat_map(|e| file_names(e).cloned()).collect();
        for (files, result) in loaded {
            let previous = old.remove(&(files.cert.clone(), files.key.clone()));
            let result = match result {
                Ok(c) => {
                    self.inner.metrics.reloads.with_label_values(&["ok"]).inc();
                    st.files.push(FileEntry {
                        files: files.clone(),
                        key: c.key,
                        info: c.info.clone(),
                    });
                    Ok(c.info)
                }
                Err(e) => {
                    self.inner
                        .metrics
                        .reloads
                        .with_label_values(&["error"])
                        .inc();
                    if let Some(p) = previous {
                        st.files.push(p);
                    }
                    Err(e)
                }
            };
            reports.push(LoadReport {
                files: files.clone(),
                result,
            });
        }
        // A name no longer served stops being reported.
        for n in &old_names {
            let served = st.managed.exact.contains_key(n)
                || st.files.iter().any(|e| file_names(e).any(|m| m == n));
            if !served {
                let _ = self.inner.metrics.expiry.remove_label_values(&[n]);
            }
        }
        for e in &st.files {
            for n in file_names(e) {
                self.inner
                    .metrics
                    .expiry
                    .with_label_values(&[n])
                    .set(e.info.not_after);
            }
        }
        reports
    }

    /// The certificate a handshake for `sni` would get (None: no SNI).
    pub fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let st = self.read();
        if let Some(name) = sni.map(normalize) {
            if let Some(k) = st.managed.exact.get(&name) {
                return Some(k.clone());
            }
            for e in &st.files {
                if file_names(e).any(|n| *n == name) {
                    return Some(e.key.clone());
                }
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(k) = st.managed.wildcard.get(parent) {
                    return Some(k.clone());
                }
                let wild = format!("*.{parent}");
                for e in &st.files {
                    if file_names(e).any(|n| *n == wild) {
                        return Some(e.key.clone());
                    }
                }
            }
        }
        st.files
            .iter()
            .find(|e| e.files.names.is_empty())
            .or(st.files.first())
            .map(|e| e.key.clone())
            .or_else(|| st.managed_default.clone())
    }

    /// Facts about the file certificates being served, in config order.
    pub fn file_infos(&self) -> Vec<(CertFiles, CertInfo)> {
        self.read()
            .files
            .iter()
            .map(|e| (e.files.clone(), e.info.clone()))
            .collect()
    }
}

/// The names a file entry serves: its `names`, else the names in the certificate.
fn file_names(e: &FileEntry) -> impl Iterator<Item = &String> {
    let names = if e.files.names.is_empty() {
        &e.info.names
    } else {
        &e.files.names
    };
    names.iter()
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Is the client's ALPN list exactly `acme-tls/1`?
fn is_acme_challenge(hello: &ClientHello<'_>) -> bool {
    let Some(mut alpn) = hello.alpn() else {
        return false;
    };
    alpn.next() == Some(ACME_TLS_ALPN) && alpn.next().is_none()
}

/// TLS 1.3 cipher suites: a client offering none of them will negotiate TLS 1.2.
fn offers_tls13(hello: &ClientHello<'_>) -> bool {
    hello.cipher_suites().iter().any(|s| {
        matches!(
            s,
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS13_AES_256_GCM_SHA384
                | CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        )
    })
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let metrics = &self.inner.metrics;
        if is_acme_challenge(&hello) {
            let key = hello
                .server_name()
                .and_then(|n| self.read().challenges.get(&normalize(n)).cloned());
            let outcome = if key.is_some() {
                "served"
            } else {
                "unknown_name"
            };
            metrics.alpn_challenges.with_label_values(&[outcome]).inc();
            return key;
        }
        // Pingora fixes the versions to 1.2 + 1.3; `min_version = "1.3"` is enforced here.
        // rustls picks 1.3 whenever the client can, so no 1.3 suite means a 1.2 handshake.
        if self.inner.min_version == MinVersion::Tls13 && !offers_tls13(&hello) {
            metrics.failure("protocol_version");
            return None;
        }
        let key = self.lookup(hello.server_name());
        if key.is_none() {
            metrics.failure("no_certificate");
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::super::certs::testing::self_signed;
    use super::*;

    fn entry(
        dir: &std::path::Path,
        tag: &str,
        names_in_cert: &[&str],
        names: &[&str],
    ) -> CertFiles {
        let (c, k) = self_signed(names_in_cert);
        let cert = dir.join(format!("{tag}.crt"));
        let key = dir.join(format!("{tag}.key"));
        std::fs::write(&cert, c).unwrap();
        std::fs::write(&key, k).unwrap();
        CertFiles {
            cert,
            key,
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn leaf(k: &Arc<CertifiedKey>) -> Vec<String> {
        certs::inspect(k.end_entity_cert().unwrap()).unwrap().names
    }

    #[test]
    fn sni_exact_wildcard_default_and_managed() {
        let dir = tempfile::tempdir().unwrap();
        let store = CertStore::default();
        let files = vec![
            entry(dir.path(), "default", &["app.example"], &[]),
            entry(
                dir.path(),
                "api",
                &["api.example"],
                &["api.example", "*.wild.example"],
            ),
        ];
        assert!(store.load_files(&files).iter().all(|r| r.result.is_ok()));
        let name = |sni| leaf(&store.lookup(sni).unwrap());
        assert_eq!(name(Some("APP.example.")), ["app.example"]);
        assert_eq!(name(Some("api.example")), ["api.example"]);
        assert_eq!(name(Some("x.wild.example")), ["api.example"]);
        assert_eq!(
            name(Some("a.b.wild.example")),
            ["app.example"],
            "one label only"
        );
        assert_eq!(name(None), ["app.example"]);
        let (c, k) = self_signed(&["acme.example"]);
        let dir2 = tempfile::tempdir().unwrap();
        std::fs::write(dir2.path().join("c"), c).unwrap();
        std::fs::write(dir2.path().join("k"), k).unwrap();
        let acme = certs::load_files(&dir2.path().join("c"), &dir2.path().join("k")).unwrap();
        store.set_certificate(&["acme.example".into()], acme.key);
        assert_eq!(name(Some("acme.example")), ["acme.example"]);
        assert_eq!(name(Some("app.example")), ["app.example"]);
    }

    #[test]
    fn failed_reload_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let store = CertStore::default();
        let files = vec![entry(dir.path(), "a", &["a.example"], &[])];
        store.load_files(&files);
        std::fs::write(&files[0].cert, "garbage").unwrap();
        let r = store.load_files(&files);
        assert!(r[0].result.is_err());
        assert_eq!(
            leaf(&store.lookup(Some("a.example")).unwrap()),
            ["a.example"]
        );
        let m = store.metrics();
        assert_eq!(m.reloads.with_label_values(&["error"]).get(), 1);
        assert_eq!(m.reloads.with_label_values(&["ok"]).get(), 1);
        // a good new file replaces it
        let fresh = entry(dir.path(), "a", &["b.example"], &[]);
        assert_eq!(fresh, files[0]);
        store.load_files(&files);
        assert_eq!(leaf(&store.lookup(None).unwrap()), ["b.example"]);
    }

    #[test]
    fn no_files_and_no_acme_yet_resolves_nothing() {
        let store = CertStore::default();
        assert!(store.lookup(Some("x.example")).is_none());
    }
}
