//! The pool of upstream WSGI servers: round robin over the healthy ones, active health
//! checks in the background, and the connection settings every request to them uses.

pub mod client;
pub mod config;
pub mod signing;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;
use pingora::lb::discovery::Static;
use pingora::lb::health_check::{HealthObserve, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::prelude::{background_service, HttpPeer, RequestHeader};
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::services::background::GenBackgroundService;

pub use config::{HealthCheckConfig, HealthCheckKind, UpstreamConfig};

use crate::config::values::Address;
use crate::metrics::Metrics;

/// The upstream servers and how to reach them.
pub struct Upstreams {
    lb: Arc<LoadBalancer<RoundRobin>>,
    config: UpstreamConfig,
    /// For channelgate's own requests to the app (see [`client`]).
    connector: pingora::connectors::http::Connector,
}

/// Converts a configured address into a load-balancer backend.
fn backend(addr: &Address) -> std::io::Result<Backend> {
    let addr = match addr {
        Address::Tcp(a) => PingoraAddr::Inet(*a),
        Address::Unix(p) => PingoraAddr::Unix(std::os::unix::net::SocketAddr::from_pathname(p)?),
    };
    Ok(Backend {
        addr,
        weight: 1,
        ext: Default::default(),
    })
}

/// How a backend is named in logs and metric labels: as it is written in the config.
pub fn backend_name(b: &Backend) -> String {
    match &b.addr {
        PingoraAddr::Inet(a) => a.to_string(),
        PingoraAddr::Unix(a) => match a.as_pathname() {
            Some(p) => format!("unix:{}", p.display()),
            None => "unix:(unnamed)".into(),
        },
    }
}

impl Upstreams {
    /// Builds the pool and the background service that runs its health checks.
    pub fn new(
        config: &UpstreamConfig,
        metrics: &Arc<Metrics>,
    ) -> std::io::Result<(
        Arc<Upstreams>,
        GenBackgroundService<LoadBalancer<RoundRobin>>,
    )> {
        let set = config
            .servers
            .iter()
            .map(backend)
            .collect::<std::io::Result<BTreeSet<_>>>()?;
        for b in &set {
            metrics
                .upstream
                .healthy
                .with_label_values(&[&backend_name(b)])
                .set(1);
        }
        let mut lb = LoadBalancer::<RoundRobin>::from_backends(Backends::new(Static::new(set)));
        // Static discovery answers at once and cannot fail.
        let _ = lb.update().now_or_never();
        lb.set_health_check(health_check(&config.health_check, metrics));
        lb.health_check_frequency = Some(config.health_check.interval);
        lb.parallel_health_check = true;
        let service = background_service("upstream health check", lb);
        let lb = service.task();
        Ok((
            Arc::new(Upstreams {
                lb,
                config: config.clone(),
                connector: client::connector(),
            }),
            service,
        ))
    }

    /// A healthy server, round robin, other than `avoid` (the server that just failed).
    pub fn select(&self, avoid: Option<&Backend>) -> Option<Backend> {
        let n = self.config.servers.len().max(1) * 2;
        self.lb
            .select_with(b"", n, |b, healthy| healthy && Some(b) != avoid)
    }

    /// The peer to connect to for `backend`, with the configured timeouts and pooling.
    pub fn peer(&self, backend: &Backend) -> HttpPeer {
        // The same construction Pingora's own health checks use: a template whose address
        // is replaced, which covers unix-socket backends too.
        let mut peer = HttpPeer::new(
            std::net::SocketAddr::from(([0, 0, 0, 0], 1)),
            false,
            String::new(),
        );
        peer._address = backend.addr.clone();
        let o = &mut peer.options;
        o.connection_timeout = Some(self.config.connect_timeout);
        o.read_timeout = Some(self.config.read_timeout);
        o.write_timeout = Some(self.config.write_timeout);
        o.idle_timeout = Some(self.config.keepalive_timeout);
        peer
    }

    /// How many servers pass their health check now.
    pub fn healthy_count(&self) -> usize {
        let backends = self.lb.backends();
        backends
            .get_backend()
            .iter()
            .filter(|b| backends.ready(b))
            .count()
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }
}

/// Keeps the `channelgate_upstream_healthy` gauge and the log in step with health changes.
struct HealthGauge {
    metrics: Arc<Metrics>,
}

#[async_trait]
impl HealthObserve for HealthGauge {
    async fn observe(&self, target: &Backend, healthy: bool) {
        let name = backend_name(target);
        self.metrics
            .upstream
            .healthy
            .with_label_values(&[&name])
            .set(healthy as i64);
        if healthy {
            tracing::info!(upstream = %name, "upstream passes its health check again; back in rotation");
        } else {
            tracing::warn!(upstream = %name, "upstream failed its health check; taken out of rotation");
        }
    }
}

fn health_check(
    config: &HealthCheckConfig,
    metrics: &Arc<Metrics>,
) -> Box<dyn pingora::lb::health_check::HealthCheck + Send + Sync> {
    let observer = Box::new(HealthGauge {
        metrics: metrics.clone(),
    });
    match &config.kind {
        HealthCheckKind::Tcp => {
            let mut hc = TcpHealthCheck::new();
            hc.peer_template.options.connection_timeout = Some(config.timeout);
            hc.consecutive_success = config.rise;
            hc.consecutive_failure = config.fall;
            hc.health_changed_callback = Some(observer);
            hc
        }
        HealthCheckKind::Http { path, host } => {
            let mut hc = HttpHealthCheck::new(host, false);
            // The path was validated to start with '/', and the method is constant.
            if let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) {
                let _ = req.insert_header("Host", host.as_str());
                let _ = req.insert_header("User-Agent", "channelgate-health-check");
                hc.req = req;
            }
            hc.peer_template.options.connection_timeout = Some(config.timeout);
            hc.peer_template.options.read_timeout = Some(config.timeout);
            hc.peer_template.options.total_connection_timeout = Some(config.timeout);
            hc.consecutive_success = config.rise;
            hc.consecutive_failure = config.fall;
            hc.validator = Some(Box::new(|resp| {
                if resp.status.is_success() || resp.status.is_redirection() {
                    Ok(())
                } else {
                    pingora::Error::e_explain(
                        pingora::ErrorType::CustomCode("health check status", resp.status.as_u16()),
                        "health check answered with a non-2xx/3xx status",
                    )
                }
            }));
            hc.health_changed_callback = Some(observer);
            Box::new(hc)
        }
    }
}
