//! Prometheus figures, all named `channelgate_*`, in one registry that the admin listener
//! serves. Each part has its own struct of metrics, built once at start and shared by `Arc`.
//! Registration goes through the `prometheus` that `pingora-prometheus` re-exports, so one
//! version of the crate is linked.
//!
//! Every metric is built by the helpers below from constant, well-formed names, help texts
//! and labels, the only way these constructors fail; their one `expect` is in `valid`, and
//! the unit test `registers_and_renders` builds the whole set, so a bad name fails the
//! test suite, never a running server.

use pingora_prometheus::prometheus::{
    self, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// The `code` label of `channelgate_ws_closes_total`: a close code registered by RFC 6455
/// (or 1012-1015 from the IANA registry), else `other`, so no client picks label values.
pub fn close_code_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1003 => "1003",
        1005 => "1005",
        1006 => "1006",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1010 => "1010",
        1011 => "1011",
        1012 => "1012",
        1013 => "1013",
        1014 => "1014",
        1015 => "1015",
        _ => "other",
    }
}

/// Every metric channelgate exports.
pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    pub upstream: UpstreamMetrics,
    pub ws: WsMetrics,
    pub hub: HubMetrics,
    pub broker: BrokerMetrics,
    pub edge: EdgeMetrics,
    pub tls: std::sync::Arc<crate::tls::TlsMetrics>,
    pub acme: crate::tls::acme::metrics::AcmeMetrics,
    pub files: FilesMetrics,
    pub compression: CompressionMetrics,
}

/// `[[static]]` locations and X-Accel-Redirect.
pub struct FilesMetrics {
    /// Answers by location (its configured prefix) and status.
    pub responses: IntCounterVec,
    /// File body bytes sent, by location.
    pub bytes: IntCounterVec,
    /// Request paths refused, by reason (bad_path, hidden).
    pub refused: IntCounterVec,
    /// X-Accel-Redirect answers from the app, by outcome (served, missing, refused,
    /// no_location).
    pub accel: IntCounterVec,
}

/// Compression of proxied responses; the ratio is `out / in` per encoding.
pub struct CompressionMetrics {
    /// Responses compressed, by encoding.
    pub responses: IntCounterVec,
    /// Body bytes before compression, by encoding.
    pub bytes_in: IntCounterVec,
    /// Body bytes after compression, by encoding.
    pub bytes_out: IntCounterVec,
}

/// Client connections, timeouts and buffering ([`crate::proxy::limits`],
/// [`crate::proxy::buffer`]).
#[derive(Clone)]
pub struct EdgeMetrics {
    /// Connections refused at accept, by reason (max_connections, max_connections_per_ip).
    pub connections_refused: IntCounterVec,
    /// Client connections open now (admitted, WebSockets included).
    pub connections_open: IntGauge,
    /// Clients cut by a timeout, by kind (header, body, keepalive, send).
    pub timeouts: IntCounterVec,
    /// Bodies buffered, by direction (request, response) and where (memory, file).
    pub buffered: IntCounterVec,
    /// Temp files holding bodies now.
    pub buffer_files: IntGauge,
    /// Temp files that could not be written.
    pub temp_file_errors: IntCounter,
    /// Clients that closed while their body was being buffered.
    pub aborted_uploads: IntCounter,
}

/// The group broker (RabbitMQ).
pub struct BrokerMetrics {
    /// 1 while connected to RabbitMQ (always 1 for the memory broker).
    pub up: IntGauge,
    /// Successful reconnections after a lost or failed connection.
    pub reconnects: IntCounter,
    /// Messages consumed from our queue.
    pub consumed: IntCounter,
    /// Messages published, by outcome (ok, refused, error).
    pub published: IntCounterVec,
    /// Consumed messages that could not be decoded, by kind; acked and dropped.
    pub decode_failures: IntCounterVec,
    /// Queue bind/unbind operations, by op and outcome.
    pub bindings: IntCounterVec,
}

/// WebSocket connections served in-process.
pub struct WsMetrics {
    /// Open connections by route.
    pub open: IntGaugeVec,
    /// Connection attempts by outcome: accepted, bad_handshake, origin, auth_denied,
    /// auth_error, bad_group, overloaded, http2.
    pub connects: IntCounterVec,
    /// Frames received from clients, by kind (text, binary, ping, pong, close).
    pub frames_in: IntCounterVec,
    /// Frames sent to clients.
    pub frames_out: IntCounter,
    /// Bytes written to clients (whole frames, as sent).
    pub bytes_out: IntCounter,
    /// Accepted connections that agreed permessage-deflate.
    pub deflate: IntCounter,
    /// Inbound frames handled, by the route's inbound mode and outcome.
    pub inbound: IntCounterVec,
    /// Connections closed, by close code.
    pub closes: IntCounterVec,
    /// Time the app took to answer an auth subrequest.
    pub auth_seconds: HistogramVec,
    /// Messages published, by source (admin, inbound, cli) and outcome.
    pub published: IntCounterVec,
}

/// The group hub.
pub struct HubMetrics {
    /// Groups with at least one local member.
    pub groups: IntGauge,
    /// (group, connection) memberships.
    pub memberships: IntGauge,
    /// Messages queued to local connections.
    pub delivered: IntCounter,
    /// Messages not delivered, by reason.
    pub drops: IntCounterVec,
}

/// Client-facing HTTP traffic.
pub struct HttpMetrics {
    /// Requests by method and status class ("2xx", ..., "err" when no status was sent).
    pub requests: IntCounterVec,
    /// Time from request header to the end of the response, by status class.
    pub duration: HistogramVec,
    /// Requests being served now.
    pub in_flight: IntGauge,
    /// Open client connections that have sent at least one request.
    pub connections: IntGauge,
    /// Upgrade requests passed through to the upstream, by outcome.
    pub upgrades: IntCounterVec,
    /// Passed-through upgraded connections open now.
    pub upgrades_open: IntGauge,
    /// Passed-through upgraded connections that ended, by reason (closed, idle_timeout,
    /// shutdown, error).
    pub upgrades_ended: IntCounterVec,
    /// Requests refused before routing, by reason (uri_too_long, header_line_too_large,
    /// headers_too_large, bad_content_length).
    pub refused: IntCounterVec,
    /// Client headers removed before a request reached the app, by kind (reserved:
    /// `X-Channelgate-*`; configured: `[server] strip_headers`; underscore: names with `_`;
    /// x_real_ip: replaced).
    pub stripped_headers: IntCounterVec,
}

/// The upstream pool.
pub struct UpstreamMetrics {
    /// Failures talking to an upstream, by kind (connect_refused, connect_timeout,
    /// read_timeout, no_healthy_upstream, ...).
    pub errors: IntCounterVec,
    /// 1 when the server passes its health check, by server.
    pub healthy: IntGaugeVec,
    /// Requests sent again to another server after a connect failure.
    pub retries: IntCounter,
}

/// Registration can only fail on a duplicate or malformed name, which these constant names
/// exclude; a failure is a programming error caught by the unit test below.
fn register<C: prometheus::core::Collector + Clone + 'static>(reg: &Registry, c: C) -> C {
    if let Err(e) = reg.register(Box::new(c.clone())) {
        panic!("metric registration failed (a bug): {e}");
    }
    c
}

/// Metric constructors fail only on a malformed name, help text or label, which the
/// constant arguments below exclude; `registers_and_renders` builds every one of them.
fn valid<T>(r: prometheus::Result<T>) -> T {
    r.expect("constant metric name, help and labels are well formed")
}

pub(crate) fn counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    register(reg, valid(IntCounter::new(name, help)))
}

pub(crate) fn counter_vec(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntCounterVec {
    register(
        reg,
        valid(IntCounterVec::new(Opts::new(name, help), labels)),
    )
}

pub(crate) fn gauge(reg: &Registry, name: &str, help: &str) -> IntGauge {
    register(reg, valid(IntGauge::new(name, help)))
}

pub(crate) fn gauge_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(reg, valid(IntGaugeVec::new(Opts::new(name, help), labels)))
}

fn histogram_vec(
    reg: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
    labels: &[&str],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    register(reg, valid(HistogramVec::new(opts, labels)))
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = &registry;
        // process_open_fds / process_max_fds, process_resident_memory_bytes,
        // process_cpu_seconds_total, process_threads: each WebSocket is an open file, and
        // at the limit new connections wait unaccepted (Pingora logs "Too many open files").
        #[cfg(target_os = "linux")]
        if let Err(e) = reg.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::warn!(error = %e, "process metrics unavailable");
        }
        let http = HttpMetrics {
            requests: counter_vec(
                reg,
                "channelgate_http_requests_total",
                "HTTP requests by method and status class.",
                &["method", "status_class"],
            ),
            duration: histogram_vec(
                reg,
                "channelgate_http_request_duration_seconds",
                "Time from request header to the end of the response.",
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ],
                &["status_class"],
            ),
            in_flight: gauge(
                reg,
                "channelgate_http_requests_in_flight",
                "HTTP requests being served.",
            ),
            connections: gauge(
                reg,
                "channelgate_downstream_connections",
                "Open client connections (counted from their first request).",
            ),
            refused: counter_vec(
                reg,
                "channelgate_http_refused_total",
                "Requests refused before routing, by reason.",
                &["reason"],
            ),
            stripped_headers: counter_vec(
                reg,
                "channelgate_http_stripped_headers_total",
                "Client headers removed before reaching the app, by kind.",
                &["kind"],
            ),
            upgrades: counter_vec(
                reg,
                "channelgate_upgrade_passthrough_total",
                "Upgrade requests passed through to the upstream, by outcome.",
                &["outcome"],
            ),
            upgrades_open: gauge(
                reg,
                "channelgate_upgrade_passthrough_open",
                "Upgraded connections passed through to the upstream, open now.",
            ),
            upgrades_ended: counter_vec(
                reg,
                "channelgate_upgrade_passthrough_ended_total",
                "Upgraded connections passed through to the upstream that ended, by reason.",
                &["reason"],
            ),
        };
        let upstream = UpstreamMetrics {
            errors: counter_vec(
                reg,
                "channelgate_upstream_errors_total",
                "Failures talking to upstream servers, by kind.",
                &["kind"],
            ),
            healthy: gauge_vec(
                reg,
                "channelgate_upstream_healthy",
                "1 when the upstream server passes its health check.",
                &["server"],
            ),
            retries: counter(
                reg,
                "channelgate_upstream_retries_total",
                "Requests retried on another server after a connect failure.",
            ),
        };
        let ws = WsMetrics {
            open: gauge_vec(
                reg,
                "channelgate_ws_connections",
                "Open WebSocket connections by route.",
                &["route"],
            ),
            connects: counter_vec(
                reg,
                "channelgate_ws_connects_total",
                "WebSocket connection attempts by outcome.",
                &["outcome"],
            ),
            frames_in: counter_vec(
                reg,
                "channelgate_ws_frames_received_total",
                "Frames received from WebSocket clients, by kind.",
                &["kind"],
            ),
            frames_out: counter(
                reg,
                "channelgate_ws_frames_sent_total",
                "Frames sent to WebSocket clients.",
            ),
            bytes_out: counter(
                reg,
                "channelgate_ws_sent_bytes_total",
                "Bytes written to WebSocket clients: whole frames, headers included, compressed as sent.",
            ),
            deflate: counter(
                reg,
                "channelgate_ws_deflate_connections_total",
                "Accepted WebSocket connections that agreed permessage-deflate.",
            ),
            inbound: counter_vec(
                reg,
                "channelgate_ws_inbound_total",
                "Client frames handled, by inbound mode and outcome.",
                &["mode", "outcome"],
            ),
            closes: counter_vec(
                reg,
                "channelgate_ws_closes_total",
                "WebSocket connections closed, by close code.",
                &["code"],
            ),
            auth_seconds: histogram_vec(
                reg,
                "channelgate_ws_auth_duration_seconds",
                "Time the app took to answer WebSocket auth.",
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
                &["outcome"],
            ),
            published: counter_vec(
                reg,
                "channelgate_messages_published_total",
                "Messages published to groups, by source and outcome.",
                &["source", "outcome"],
            ),
        };
        let hub = HubMetrics {
            groups: gauge(
                reg,
                "channelgate_hub_groups",
                "Groups with at least one local member.",
            ),
            memberships: gauge(
                reg,
                "channelgate_hub_memberships",
                "Group memberships of local connections.",
            ),
            delivered: counter(
                reg,
                "channelgate_hub_delivered_total",
                "Messages queued to local WebSocket connections.",
            ),
            drops: counter_vec(
                reg,
                "channelgate_hub_dropped_total",
                "Messages not delivered to a connection, by reason.",
                &["reason"],
            ),
        };
        let broker = BrokerMetrics {
            up: gauge(
                reg,
                "channelgate_broker_up",
                "1 while the group broker is connected.",
            ),
            reconnects: counter(
                reg,
                "channelgate_broker_reconnects_total",
                "Reconnections to the broker.",
            ),
            consumed: counter(
                reg,
                "channelgate_broker_consumed_total",
                "Messages consumed from the broker queue.",
            ),
            published: counter_vec(
                reg,
                "channelgate_broker_published_total",
                "Messages published to the broker, by outcome.",
                &["outcome"],
            ),
            decode_failures: counter_vec(
                reg,
                "channelgate_broker_decode_failures_total",
                "Undecodable broker messages, by kind.",
                &["kind"],
            ),
            bindings: counter_vec(
                reg,
                "channelgate_broker_bindings_total",
                "Queue bind and unbind operations, by op and outcome.",
                &["op", "outcome"],
            ),
        };
        let tls = std::sync::Arc::new(crate::tls::TlsMetrics::new(reg));
        let acme = crate::tls::acme::metrics::AcmeMetrics::new(reg);
        let files = FilesMetrics {
            responses: counter_vec(
                reg,
                "channelgate_static_responses_total",
                "Answers from [[static]] locations, by location prefix and status.",
                &["location", "status"],
            ),
            bytes: counter_vec(
                reg,
                "channelgate_static_sent_bytes_total",
                "File body bytes sent from [[static]] locations, by location prefix.",
                &["location"],
            ),
            refused: counter_vec(
                reg,
                "channelgate_static_refused_total",
                "Static file paths refused (traversal, escaped separators, dotfiles, symlink escapes), by reason.",
                &["reason"],
            ),
            accel: counter_vec(
                reg,
                "channelgate_accel_redirects_total",
                "X-Accel-Redirect answers from the app, by outcome.",
                &["outcome"],
            ),
        };
        let compression = CompressionMetrics {
            responses: counter_vec(
                reg,
                "channelgate_compressed_responses_total",
                "Proxied responses compressed, by encoding.",
                &["encoding"],
            ),
            bytes_in: counter_vec(
                reg,
                "channelgate_compression_in_bytes_total",
                "Proxied body bytes before compression, by encoding.",
                &["encoding"],
            ),
            bytes_out: counter_vec(
                reg,
                "channelgate_compression_out_bytes_total",
                "Proxied body bytes after compression, by encoding (ratio: out / in).",
                &["encoding"],
            ),
        };
        let edge = EdgeMetrics {
            connections_refused: counter_vec(
                reg,
                "channelgate_connections_refused_total",
                "Client connections refused at accept, by reason.",
                &["reason"],
            ),
            connections_open: gauge(
                reg,
                "channelgate_client_connections",
                "Client connections open now (admitted, WebSockets included).",
            ),
            timeouts: counter_vec(
                reg,
                "channelgate_client_timeouts_total",
                "Client connections cut by a timeout, by kind (header, body, keepalive, send).",
                &["kind"],
            ),
            buffered: counter_vec(
                reg,
                "channelgate_buffered_total",
                "Bodies buffered, by direction (request, response) and where (memory, file).",
                &["direction", "to"],
            ),
            buffer_files: gauge(
                reg,
                "channelgate_buffer_temp_files",
                "Temp files holding request or response bodies now.",
            ),
            temp_file_errors: counter(
                reg,
                "channelgate_buffer_temp_file_errors_total",
                "Temp files that could not be created or written.",
            ),
            aborted_uploads: counter(
                reg,
                "channelgate_aborted_uploads_total",
                "Clients that closed while their request body was being buffered.",
            ),
        };
        Metrics {
            registry,
            edge,
            tls,
            http,
            upstream,
            ws,
            hub,
            broker,
            acme,
            files,
            compression,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on malformed metric families, which
        // `Registry::gather` never produces.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// "2xx" for 204, "err" for 0 (no response sent).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "err",
    }
}

/// Bounds the method label to the standard methods.
pub fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_renders() {
        let m = Metrics::new();
        m.http.requests.with_label_values(&["GET", "2xx"]).inc();
        m.upstream
            .errors
            .with_label_values(&["connect_refused"])
            .inc();
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains("channelgate_http_requests_total{method=\"GET\",status_class=\"2xx\"} 1")
        );
        assert!(text.contains("channelgate_upstream_errors_total{kind=\"connect_refused\"} 1"));
        #[cfg(target_os = "linux")]
        for series in [
            "process_open_fds ",
            "process_max_fds ",
            "process_resident_memory_bytes ",
        ] {
            assert!(text.contains(series), "{series} missing");
        }
    }

    #[test]
    fn close_codes_are_a_bounded_set() {
        assert_eq!(close_code_label(1000), "1000");
        assert_eq!(close_code_label(1011), "1011");
        assert_eq!(close_code_label(4321), "other");
        assert_eq!(close_code_label(1004), "other");
        assert_eq!(close_code_label(0), "other");
    }

    #[test]
    fn classes() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(0), "err");
        assert_eq!(
            method_label(&http::Method::from_bytes(b"PROPFIND").unwrap()),
            "OTHER"
        );
    }
}
