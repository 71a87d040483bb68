//! TLS at the edge: the `[tls]` section ([`config`]), certificate files ([`certs`]), the
//! SNI certificate store that rustls asks on every handshake ([`store`]), the listeners'
//! settings and the ACME tls-alpn-01 answer ([`listener`]), reload on SIGHUP ([`reload`]),
//! what HTTPS changes for requests: http-01 tokens, redirect, HSTS ([`http01`], [`edge`]),
//! the TLS figures ([`metrics`], [`handshake_log`]), and the ACME client that obtains and
//! renews certificates ([`acme`]).
//!
//! The proxy learns only "this listener is TLS" (from the session's TLS digest).

pub mod acme;
pub mod certs;
pub mod config;
pub mod edge;
pub mod handshake_log;
pub mod http01;
pub mod listener;
pub mod metrics;
pub mod reload;
pub mod store;

use std::fmt::Write;
use std::sync::Arc;

pub use config::{AcmeConfig, CertFiles, Challenge, MinVersion, TlsConfig};
pub use edge::Edge;
pub use http01::Http01Tokens;
pub use metrics::TlsMetrics;
pub use store::CertStore;

/// A certificate file that keeps the server from starting.
#[derive(Debug, thiserror::Error)]
#[error("[tls] certificates[{index}]: {reason}")]
pub struct StartError {
    pub index: usize,
    pub reason: String,
}

/// Loads every certificate file into a new store. Any unreadable, mismatched or expired
/// file is an error: Pingora would panic on it, and serving it would fail every client.
pub fn prepare(cfg: &TlsConfig, metrics: Arc<TlsMetrics>) -> Result<CertStore, StartError> {
    let store = CertStore::new(metrics, cfg.min_version);
    let reports = store.load_files(&cfg.certificates);
    for (index, r) in reports.iter().enumerate() {
        let (line, severity) = reload::check_line(&r.files, &r.result);
        if severity == reload::Severity::Error {
            return Err(StartError {
                index,
                reason: line.trim_start_matches("error: ").to_string(),
            });
        }
    }
    reload::log_reports(&reports, "loaded");
    Ok(store)
}

/// `channelgate check`'s certificate lines, and whether all of them can be served.
pub fn check_certificates(cfg: &TlsConfig) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    if !cfg.certificates.is_empty() {
        let _ = writeln!(
            out,
            "tls files:   (read now; warned under 14 days, refused when expired)"
        );
    }
    for f in &cfg.certificates {
        let result = certs::load_files(&f.cert, &f.key).map(|c| c.info);
        let (line, severity) = reload::check_line(f, &result);
        ok &= severity != reload::Severity::Error;
        let _ = writeln!(out, "  - {line}");
    }
    if let Some(Err(e)) = cfg.acme.as_ref().map(acme::check_directory_ca) {
        ok = false;
        let _ = writeln!(out, "error: tls.acme.directory_ca: {e}");
    }
    (out, ok)
}

/// `channelgate check`'s [tls] lines.
pub fn summary(t: &TlsConfig) -> String {
    let mut out = String::new();
    let listen: Vec<String> = t.listen.iter().map(|a| a.to_string()).collect();
    let alpn = if t.http2 { "h2, http/1.1" } else { "http/1.1" };
    let _ = writeln!(
        out,
        "tls:         {} (TLS {}+, ALPN {alpn}); plain listeners {}",
        listen.join(", "),
        t.min_version.as_str(),
        if t.redirect_http {
            "redirect to https (308)"
        } else {
            "serve as usual"
        }
    );
    if let Some(h) = &t.hsts {
        let _ = writeln!(out, "  hsts:      {h}");
    }
    let _ = writeln!(out, "  certificates: {} file(s)", t.certificates.len());
    if let Some(a) = &t.acme {
        let _ = writeln!(
            out,
            "  acme:      {} from {} by {}, renewed {} before expiry, state in {}",
            a.domains.join(", "),
            a.directory,
            a.challenge.as_str(),
            crate::config::values::show_duration(a.renew_before),
            a.state_dir.display()
        );
    }
    out
}
