//! TLS (temporary stub until the tls branch lands).
pub mod acme;
