//! The ACME client's figures, registered with the others in [`crate::metrics::Metrics`].

use pingora_prometheus::prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use crate::metrics::{counter, counter_vec, gauge};

/// `channelgate_acme_*`.
pub struct AcmeMetrics {
    /// Certificate orders by outcome: issued, failed.
    pub orders: IntCounterVec,
    /// Failed steps by reason (a fixed set, see [`super::AcmeError::reason`]).
    pub failures: IntCounterVec,
    /// Unix time of the next renewal attempt (a retry after a failure included); 0 before
    /// the first look at state_dir.
    pub next_renewal: IntGauge,
    /// Unix time the served ACME certificate expires; 0 while there is none.
    pub expiry: IntGauge,
    /// Certificates installed from state_dir (at start, or obtained by another instance).
    pub loaded: IntCounter,
    /// Renewals left to another instance holding state_dir's lock.
    pub lock_busy: IntCounter,
}

impl AcmeMetrics {
    pub fn new(reg: &Registry) -> AcmeMetrics {
        AcmeMetrics {
            orders: counter_vec(
                reg,
                "channelgate_acme_orders_total",
                "ACME certificate orders by outcome (issued, failed).",
                &["outcome"],
            ),
            failures: counter_vec(
                reg,
                "channelgate_acme_failures_total",
                "ACME failures by reason.",
                &["reason"],
            ),
            next_renewal: gauge(
                reg,
                "channelgate_acme_next_renewal_timestamp_seconds",
                "Unix time of the next ACME renewal attempt.",
            ),
            expiry: gauge(
                reg,
                "channelgate_acme_certificate_expiry_timestamp_seconds",
                "Unix time the ACME certificate in use expires (0: none yet).",
            ),
            loaded: counter(
                reg,
                "channelgate_acme_certificates_loaded_total",
                "ACME certificates installed from state_dir.",
            ),
            lock_busy: counter(
                reg,
                "channelgate_acme_lock_busy_total",
                "Renewals left to another instance that holds the state_dir lock.",
            ),
        }
    }
}
