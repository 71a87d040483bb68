//! Tracing setup: the level comes from `RUST_LOG` when set, else from `[log] level`.
//! [`limited`] bounds the lines a client can cause ([`client_warn!`](crate::client_warn));
//! [`head_errors`] keeps Pingora's lines about unreadable request heads from being ERRORs.

pub mod head_errors;
pub mod limited;

use tracing_subscriber::EnvFilter;

use crate::tls::handshake_log::HandshakeLog;

use crate::config::{LogConfig, LogFormat};

/// Pingora's server lifecycle messages at info (a second grace-period figure among them).
const PINGORA_SERVER_LOGS: &str = "pingora_core::server=warn";

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(config: &LogConfig) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, Registry};

    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::builder().parse(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // Pingora's server module announces its own grace period, a backstop longer than
        // `[server] grace_period` (see server::pingora_conf): channelgate's shutdown log
        // gives the one figure that counts. Its warnings and errors still show.
        .add_directive(
            PINGORA_SERVER_LOGS
                .parse()
                .expect("a constant, valid directive"),
        );
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // The level filter applies to the output only, so that [`head_errors::HeadErrors`] still
    // sees Pingora's DEBUG line about a malformed request head.
    let output: Box<dyn Layer<Registry> + Send + Sync> = match config.format {
        LogFormat::Text => fmt
            .with_filter(filter)
            .with_filter(head_errors::HideHeadErrors)
            .boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_filter(filter)
            .with_filter(head_errors::HideHeadErrors)
            .boxed(),
    };
    let head_errors = head_errors::HeadErrors.with_filter(head_errors::Candidates);
    // Failed TLS handshakes, which Pingora logs once per client, are counted and rate-limited.
    let _ = tracing_subscriber::registry()
        .with(output)
        .with(HandshakeLog)
        .with(head_errors)
        .try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pingora_directive_parses() {
        let _: tracing_subscriber::filter::Directive = super::PINGORA_SERVER_LOGS.parse().unwrap();
    }
}
