//! Failed TLS handshakes: counted by reason, logged at a bounded rate.
//!
//! Pingora performs the handshake and reports a failure only by logging
//! "Downstream handshake error from {addr}: {e}" at error level, once per failed connection,
//! so any client could decide our log volume. This tracing layer recognises those events
//! (they arrive from the `log` crate through tracing-log), counts them in
//! `channelgate_tls_handshake_failures_total{reason}` and lets at most one through per
//! [`LOG_EVERY`]. The metrics exist once the server is built ([`install`]); until then
//! failures are only rate-limited.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::listener::CHALLENGE_DONE;
use super::metrics::TlsMetrics;

/// At most one handshake failure is logged per this interval.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
const SOURCE: &str = "pingora_core::services::listening";

// Pingora logs through the process-wide logger, so the layer can only reach the metrics
// through a process-wide slot: set once by `server::build`.
static METRICS: OnceLock<Arc<TlsMetrics>> = OnceLock::new();
static LAST_LOGGED: AtomicI64 = AtomicI64::new(i64::MIN);

/// Connects the layer to the metrics of the running server.
pub fn install(metrics: Arc<TlsMetrics>) {
    let _ = METRICS.set(metrics);
}

/// The layer; add it to the subscriber.
pub struct HandshakeLog;

#[derive(Default)]
struct Fields {
    target: String,
    message: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "log.target" => self.target = value.to_string(),
            "message" => self.message = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        }
    }
}

/// The bounded reason of a handshake error message; None for a served ACME challenge or a
/// failure the certificate resolver has already counted.
pub fn reason(message: &str) -> Option<&'static str> {
    let m = message;
    if m.contains(CHALLENGE_DONE) || m.contains("no server certificate chain resolved") {
        return None;
    }
    Some(
        if m.contains("handshake timeout") || m.contains("no ClientHello") {
            "timeout"
        } else if m.contains("NoCipherSuitesInCommon")
            || m.contains("NoKxGroupsInCommon")
            || m.contains("NoSignatureSchemesInCommon")
        {
            "no_shared_cipher"
        } else if m.contains("peer is incompatible") {
            "protocol_version"
        } else if m.contains("peer doesn't support any known protocol") {
            "no_application_protocol"
        } else if m.contains("received fatal alert") {
            "client_alert"
        } else if m.contains("corrupt message")
            || m.contains("unexpected message")
            || m.contains("unexpected handshake message")
            || m.contains("peer misbehaved")
        {
            "bad_client_hello"
        } else if m.contains("eof")
            || m.contains("reset by peer")
            || m.contains("Broken pipe")
            || m.contains("close_notify")
        {
            "closed"
        } else {
            "other"
        },
    )
}

impl<S: Subscriber> Layer<S> for HandshakeLog {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != tracing::Level::ERROR {
            return true;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let from_listener = meta.target() == SOURCE || f.target == SOURCE;
        if !from_listener || !f.message.starts_with("Downstream handshake") {
            return true;
        }
        let Some(reason) = reason(&f.message) else {
            return false;
        };
        if let Some(m) = METRICS.get() {
            m.failure(reason);
        }
        let now = super::certs::now();
        let last = LAST_LOGGED.load(Ordering::Relaxed);
        now.saturating_sub(last) >= LOG_EVERY.as_secs() as i64
            && LAST_LOGGED
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::reason;

    #[test]
    fn reasons_are_bounded() {
        let r = |m: &str| reason(m);
        assert_eq!(r("Downstream handshake error from 1.2.3.4:5: TLSHandshakeFailure context: TLS accept() failed: peer is incompatible: NoCipherSuitesInCommon"), Some("no_shared_cipher"));
        assert_eq!(
            r("... peer is incompatible: Tls12NotOffered"),
            Some("protocol_version")
        );
        assert_eq!(
            r("... received fatal alert: UnknownCA"),
            Some("client_alert")
        );
        assert_eq!(
            r("... received corrupt message of type InvalidContentType"),
            Some("bad_client_hello")
        );
        assert_eq!(r("Downstream handshake timeout"), Some("timeout"));
        assert_eq!(r("... tls handshake eof"), Some("closed"));
        assert_eq!(r("... something new"), Some("other"));
        assert_eq!(r("... acme-tls/1 challenge answered"), None);
        assert_eq!(
            r("... unexpected error: no server certificate chain resolved"),
            None
        );
    }
}
