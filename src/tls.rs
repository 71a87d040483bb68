//! TLS at the edge: the `[tls]` section ([`config`]), certificate files ([`certs`]), the
//! SNI certificate store that rustls asks on every handshake ([`store`]), ACME http-01 tokens
//! served by the plain listeners ([`http01`]), the TLS figures ([`metrics`]) and the ACME client
//! that obtains and renews certificates ([`acme`]).
//!
//! The proxy learns only "this listener is TLS" (from the session's TLS digest); redirects,
//! HSTS and challenge answers are decided from [`TlsConfig`].

pub mod acme;
pub mod certs;
pub mod config;
pub mod http01;
pub mod metrics;
pub mod store;

pub use config::{AcmeConfig, CertFiles, Challenge, MinVersion, TlsConfig};
pub use http01::Http01Tokens;
pub use metrics::TlsMetrics;
pub use store::CertStore;
