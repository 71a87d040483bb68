//! Tracing setup: the level comes from `RUST_LOG` when set, else from `[log] level`.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::tls::handshake_log::HandshakeLog;

use crate::config::{LogConfig, LogFormat};

/// Pingora's server lifecycle messages at info (a second grace-period figure among them).
const PINGORA_SERVER_LOGS: &str = "pingora_core::server=warn";

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(config: &LogConfig) {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // Failed TLS handshakes, which Pingora logs once per client, are counted and rate-limited.
    let _ = match config.format {
        LogFormat::Text => builder.finish().with(HandshakeLog).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(HandshakeLog)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pingora_directive_parses() {
        let _: tracing_subscriber::filter::Directive = super::PINGORA_SERVER_LOGS.parse().unwrap();
    }
}
