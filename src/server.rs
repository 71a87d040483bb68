//! Assembles the Pingora server from a validated [`Config`]: the proxy service on the
//! client listeners, the admin service, the upstream health checks and the drain.

use std::sync::Arc;

use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::broker::amqp::AmqpBroker;
use crate::broker::connection::Supervised;
use crate::broker::{Broker, BrokerConfig, MemoryBroker};
use crate::config::values::Address;
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::protocols::bridge::Bridge;
use crate::proxy::buffer::stream::SpoolSettings;
use crate::proxy::limits::edge::{Edge, EdgeLogs};
use crate::proxy::limits::Admission;
use crate::proxy::Proxy;
use crate::publish::PublishApi;
use crate::shutdown::{Drain, DrainService, Signals};
use crate::upstream::Upstreams;
use crate::ws::config::Protocol;
use crate::ws::Endpoint;

/// How the process starts.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Take the listening sockets over from a running instance (zero-downtime upgrade).
    pub upgrade: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("upstream server address: {0}")]
    Upstream(#[source] std::io::Error),
    #[error("{0}")]
    Tls(#[from] crate::tls::StartError),
    #[error("TLS listener settings: {0}")]
    TlsSettings(#[source] Box<pingora::Error>),
}

fn pingora_conf(config: &Config) -> ServerConf {
    let mut conf = ServerConf::default();
    let s = &config.server;
    conf.threads = s.threads;
    conf.upgrade_sock = s.upgrade_sock.display().to_string();
    conf.pid_file = s.pid_file.display().to_string();
    conf.upstream_keepalive_pool_size = config.upstream.keepalive;
    // channelgate's DrainService ends the process as soon as the drain is over; Pingora's own
    // grace period is only a backstop a little longer than ours.
    conf.grace_period_seconds = Some(s.grace_period.as_secs() + 2);
    conf.graceful_shutdown_timeout_seconds = Some(1);
    conf
}

/// Adds a listener whose connections get `read_buffer` bytes of extra read buffering
/// (`[server] read_buffer`; 0 by default: Pingora's HTTP layer buffers by itself, and a
/// taken-over WebSocket would keep the buffer's touched page all its life).
fn add_address<A>(service: &mut Service<A>, addr: &Address, read_buffer: usize) {
    let config = match addr {
        Address::Tcp(a) => ListenerConfig::tcp(a.to_string()),
        Address::Unix(p) => ListenerConfig::uds(p.display().to_string()),
    };
    service.add_listener(config.l4_buffer(L4BufferSettings::default().read(read_buffer)));
}

/// The client listeners' application: connection limits, client timeouts and request
/// buffering in front of the proxy (see [`crate::proxy::limits::edge`]).
fn client_edge(
    config: &Config,
    proxy: pingora::proxy::HttpProxy<Proxy>,
    metrics: &Arc<Metrics>,
) -> Edge {
    let s = &config.server;
    let mut proxy = proxy;
    // HTTP/2 connections go to Pingora's h2 server: what of the limits applies there.
    proxy.server_options = Some(crate::proxy::limits::h2::server_options(&s.limits));
    Edge {
        proxy: Arc::new(proxy),
        limits: s.limits.clone(),
        request: config.upstream.request_buffering.clone(),
        body: s.body.clone(),
        // The head limit plus room for line ends and a little slack.
        max_head: s.header_limits.total + (8 << 10),
        spool: Arc::new(SpoolSettings {
            response: config.upstream.response_buffering,
            temp_dir: s.body.temp_dir.clone(),
            send_timeout: s.limits.send_timeout,
            metrics: metrics.edge.clone(),
        }),
        admission: Admission::new(&s.limits, metrics.edge.clone()),
        metrics: metrics.clone(),
        logs: EdgeLogs::default(),
    }
}

/// Adds the `[tls] listen` addresses, sharing one certificate store (SNI, reload).
fn add_tls_listeners<A>(
    service: &mut Service<A>,
    t: &crate::tls::TlsConfig,
    store: &crate::tls::CertStore,
    read_buffer: usize,
) -> Result<(), StartError> {
    use crate::tls::listener;
    for addr in &t.listen {
        let settings = listener::settings(t, store).map_err(StartError::TlsSettings)?;
        service.add_listener(
            ListenerConfig::tcp(addr.to_string())
                .tls(settings)
                .l4_buffer(L4BufferSettings::default().read(read_buffer)),
        );
    }
    if t.acme
        .as_ref()
        .is_some_and(|a| a.challenge == crate::tls::Challenge::TlsAlpn01)
    {
        service
            .endpoints()
            .set_pre_tls_callback(Arc::new(listener::AlpnChallenge::new(store)));
    } else {
        service
            .endpoints()
            .set_pre_tls_callback(Arc::new(listener::NoDelay));
    }
    Ok(())
}

/// Builds the server; `run` then blocks until shutdown.
pub fn build(config: &Config, opts: &RunOptions) -> Result<Server, StartError> {
    let opt = Opt {
        upgrade: opts.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, pingora_conf(config));
    server.bootstrap();
    let metrics = Arc::new(Metrics::new());
    let drain = Drain::new();

    // Certificate files are checked before anything listens: Pingora panics on a bad one.
    let tls = match &config.tls {
        Some(t) => Some((t, crate::tls::prepare(t, metrics.tls.clone())?)),
        None => None,
    };
    crate::tls::handshake_log::install(metrics.tls.clone());
    // Filled by the ACME client (http-01), served by the plain listeners.
    let http01 = crate::tls::Http01Tokens::default();

    let (upstreams, health) =
        Upstreams::new(&config.upstream, &metrics).map_err(StartError::Upstream)?;
    server.add_service(health);

    let hub = Hub::new(metrics.clone());
    let broker: Arc<dyn Broker> = match &config.broker {
        BrokerConfig::Memory => {
            metrics.broker.up.set(1);
            Arc::new(MemoryBroker::new(hub.clone()))
        }
        BrokerConfig::Amqp(cfg) => {
            let amqp = AmqpBroker::new(cfg.clone(), hub.clone(), metrics.clone());
            server.add_service(background_service("amqp broker", Supervised(amqp.clone())));
            amqp
        }
    };
    let (ws_shutdown, ws_shutdown_rx) = tokio::sync::watch::channel(false);
    let mut bridges = std::collections::HashMap::new();
    for (i, route) in config.ws.iter().enumerate() {
        if let Protocol::AmqpBridge(b) = &route.protocol {
            let url = b.url.clone().unwrap_or_else(|| match &config.broker {
                BrokerConfig::Amqp(a) => a.urls[0].clone(), // never empty (validated)
                BrokerConfig::Memory => crate::broker::DEFAULT_AMQP_URL.to_string(),
            });
            let bridge = Bridge::new(b.clone(), url, i, hub.clone(), metrics.clone());
            server.add_service(background_service(
                "amqp bridge",
                Supervised(bridge.clone()),
            ));
            bridges.insert(route.path.to_string(), bridge);
        }
    }
    let ws_routes: Vec<_> = config.ws.iter().cloned().map(Arc::new).collect();
    let ws = Arc::new(Endpoint {
        routes: ws_routes.clone(),
        hub,
        broker: broker.clone(),
        upstreams: upstreams.clone(),
        metrics: metrics.clone(),
        drain: drain.clone(),
        shutdown: ws_shutdown_rx,
        forwarding: config
            .server
            .forwarding
            .counted(&metrics.http.stripped_headers),
        unbuffer_streams: config.server.read_buffer == 0,
        bridges,
    });
    crate::logging::head_errors::observe(&metrics.http.refused, config.log.access_log);
    let files = Arc::new(crate::files::Files {
        locations: config.statics.iter().cloned().map(Arc::new).collect(),
        metrics: metrics.clone(),
    });
    let edge = config
        .tls
        .as_ref()
        .map(|t| Arc::new(crate::tls::Edge::new(t, http01.clone())));
    let proxy = Proxy {
        upstreams: upstreams.clone(),
        ws,
        router: crate::router::Router::new(ws_routes, files.clone()).with_edge(edge.clone()),
        files,
        compression: config.compression.clone(),
        metrics: metrics.clone(),
        drain: drain.clone(),
        access_log: config.log.access_log,
        forwarding: config
            .server
            .forwarding
            .counted(&metrics.http.stripped_headers),
        header_limits: config.server.header_limits,
        h2: crate::proxy::limits::h2::H2Limits {
            max_body_size: config.server.body.max_body_size,
            body_timeout: config.server.limits.body_timeout,
            request: config.upstream.request_buffering.clone(),
        },
        tls: edge,
    };
    let mut proxy_service = Service::new(
        "channelgate proxy".to_string(),
        client_edge(
            config,
            pingora::proxy::http_proxy(&server.configuration, proxy),
            &metrics,
        ),
    );
    for addr in &config.server.listen {
        add_address(&mut proxy_service, addr, config.server.read_buffer);
    }
    if let Some((t, store)) = &tls {
        add_tls_listeners(&mut proxy_service, t, store, config.server.read_buffer)?;
        if let Some(acme) = &t.acme {
            // In the background: the listeners start without waiting for a certificate.
            let listeners = crate::tls::acme::Listeners {
                store: store.clone(),
                tokens: http01.clone(),
            };
            server.add_service(background_service(
                "acme",
                crate::tls::acme::AcmeService::new(
                    acme.clone(),
                    Arc::new(listeners),
                    metrics.clone(),
                ),
            ));
        }
    }
    server.add_service(proxy_service);
    server.add_service(background_service(
        "tls reload",
        crate::tls::reload::ReloadService {
            store: tls.map(|(t, s)| (s, t.certificates.clone())),
        },
    ));

    if let Some(addr) = &config.admin.listen {
        let mut admin = Service::new(
            "channelgate admin".to_string(),
            AdminApp {
                metrics: metrics.clone(),
                upstreams,
                publish: PublishApi {
                    broker,
                    metrics: metrics.clone(),
                    token: config.admin.publish_token.clone(),
                },
            },
        );
        add_address(&mut admin, addr, 0);
        server.add_service(admin);
    }

    server.add_service(background_service(
        "drain",
        DrainService {
            drain,
            grace_period: config.server.grace_period,
            ws_shutdown,
        },
    ));
    Ok(server)
}

/// Writes this process's id to `[server] pid_file` (Pingora writes it only when it
/// daemonizes), so that `channelgate reload` can find a foreground (systemd) instance.
pub fn write_pid_file(path: &std::path::Path) {
    if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
        tracing::warn!(pid_file = %path.display(), error = %e, "cannot write the pid file; `channelgate reload` will not find this instance");
    }
}

/// Serves until SIGTERM/SIGINT and the drain are over.
pub fn run(server: Server) {
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals),
    });
}
