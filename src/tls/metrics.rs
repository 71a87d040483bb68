//! TLS figures: certificate expiry, handshakes, failures and reloads. Every label value comes
//! from the configuration or a fixed list, never from what a client sends.

use pingora_prometheus::prometheus::{IntCounterVec, IntGaugeVec, Registry};

use crate::metrics::{counter_vec, gauge_vec};

/// Handshake failure reasons; anything else is counted as "other".
pub const FAILURE_REASONS: &[&str] = &[
    "no_certificate",
    "protocol_version",
    "no_shared_cipher",
    "no_application_protocol",
    "bad_client_hello",
    "client_alert",
    "closed",
    "timeout",
    "other",
];

pub struct TlsMetrics {
    /// When each served certificate expires, by name.
    pub expiry: IntGaugeVec,
    /// Completed handshakes, by TLS version ("1.2", "1.3"). Pingora's rustls callback does
    /// not expose the negotiated ALPN protocol; HTTP/2 use shows in the access log.
    pub handshakes: IntCounterVec,
    /// Failed handshakes, by reason (one of [`FAILURE_REASONS`]).
    pub handshake_failures: IntCounterVec,
    /// Certificate file reloads, by outcome (ok, error).
    pub reloads: IntCounterVec,
    /// ACME challenge handshakes answered (tls-alpn-01), by outcome.
    pub alpn_challenges: IntCounterVec,
}

impl TlsMetrics {
    pub fn new(reg: &Registry) -> Self {
        TlsMetrics {
            expiry: gauge_vec(
                reg,
                "channelgate_tls_certificate_expiry_timestamp_seconds",
                "When the certificate served for a name expires (Unix time).",
                &["name"],
            ),
            handshakes: counter_vec(
                reg,
                "channelgate_tls_handshakes_total",
                "Completed TLS handshakes, by TLS version.",
                &["version"],
            ),
            handshake_failures: counter_vec(
                reg,
                "channelgate_tls_handshake_failures_total",
                "Failed TLS handshakes, by reason.",
                &["reason"],
            ),
            reloads: counter_vec(
                reg,
                "channelgate_tls_certificate_reloads_total",
                "Certificate file (re)loads, by outcome; on error the previous certificate stays.",
                &["outcome"],
            ),
            alpn_challenges: counter_vec(
                reg,
                "channelgate_tls_alpn_challenges_total",
                "ACME tls-alpn-01 handshakes, by outcome (served, unknown_name).",
                &["outcome"],
            ),
        }
    }

    /// Metrics not exported anywhere (tests, tools).
    pub fn unregistered() -> Self {
        TlsMetrics::new(&Registry::new())
    }

    /// Counts a failed handshake; an unknown reason becomes "other".
    pub fn failure(&self, reason: &str) {
        let reason = FAILURE_REASONS
            .iter()
            .find(|r| **r == reason)
            .copied()
            .unwrap_or("other");
        self.handshake_failures.with_label_values(&[reason]).inc();
    }
}
