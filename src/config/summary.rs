//! What `channelgate check` prints: the configuration as channelgate understood it.

use std::fmt::Write;

use super::values::show_duration;
use super::Config;
use crate::upstream::HealthCheckKind;
use crate::ws::config::{Inbound, Origins, Protocol};

pub fn render(c: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let mut line = |s: String| {
        let _ = writeln!(out, "{s}");
    };
    line(format!("configuration {} is valid", c.source.display()));
    let listen: Vec<String> = c.server.listen.iter().map(|a| a.to_string()).collect();
    line(format!("listeners:   {}", listen.join(", ")));
    line(format!(
        "admin:       {}",
        c.admin
            .listen
            .as_ref()
            .map(|a| format!("{a} (/metrics /healthz /readyz)"))
            .unwrap_or_else(|| "disabled".into())
    ));
    line(format!(
        "process:     {} threads, grace period {}, upgrade socket {}",
        c.server.threads,
        show_duration(c.server.grace_period),
        c.server.upgrade_sock.display()
    ));
    line(format!(
        "requests:    header lines up to {} bytes, request heads up to {} bytes (414/431 beyond)",
        c.server.header_limits.line, c.server.header_limits.total
    ));
    let l = &c.server.limits;
    line(format!(
        "clients:     head within {}, body reads {} apart (408 beyond), writes {} apart; keep-alive {} for up to {} requests",
        show_duration(l.header_timeout),
        show_duration(l.body_timeout),
        show_duration(l.send_timeout),
        if l.keepalive_timeout.is_zero() { "off".to_string() } else { show_duration(l.keepalive_timeout).to_string() },
        l.keepalive_requests
    ));
    line(format!(
        "connections: at most {} open, {} per IP address (503 and close beyond)",
        l.max_connections,
        l.max_connections_per_ip
            .map_or_else(|| "unlimited".to_string(), |n| n.to_string())
    ));
    let (rq, rs, b) = (
        &c.upstream.request_buffering,
        &c.upstream.response_buffering,
        &c.server.body,
    );
    line(format!(
        "bodies:      up to {} (413 beyond); temp files in {}",
        if b.max_body_size == 0 {
            "unlimited".to_string()
        } else {
            format!("{} bytes", b.max_body_size)
        },
        b.temp_dir.display()
    ));
    line(format!(
        "buffering:   requests {}; responses {}",
        if rq.enabled {
            let streamed = if rq.stream_uploads.is_empty() {
                String::new()
            } else {
                format!("; streamed under {}", rq.stream_uploads.join(", "))
            };
            format!(
                "on ({} bytes in memory, then a temp file{streamed})",
                rq.memory
            )
        } else {
            "off (streamed)".into()
        },
        if rs.enabled {
            format!("on ({} bytes in memory, then a temp file up to {} bytes; SSE and X-Accel-Buffering: no stream)", rs.memory, rs.max)
        } else {
            "off (streamed)".into()
        },
    ));
    let u = &c.upstream;
    line(format!(
        "upstream:    {} server(s), round robin over healthy servers",
        u.servers.len()
    ));
    for s in &u.servers {
        line(format!("  - {s}"));
    }
    let hc = &u.health_check;
    let kind = match &hc.kind {
        HealthCheckKind::Tcp => "tcp connect".to_string(),
        HealthCheckKind::Http { path, host } => format!("http GET {path} (Host: {host})"),
    };
    line(format!(
        "  health:    {kind} every {}, timeout {}, rise {}, fall {}",
        show_duration(hc.interval),
        show_duration(hc.timeout),
        hc.rise,
        hc.fall
    ));
    line(format!(
        "  timeouts:  connect {}, read {}, write {}, tunnel idle {}; {} retr{} on connect failure (idempotent requests)",
        show_duration(u.connect_timeout),
        show_duration(u.read_timeout),
        show_duration(u.write_timeout),
        show_duration(u.tunnel_idle_timeout),
        u.retries,
        if u.retries == 1 { "y" } else { "ies" }
    ));
    line(format!(
        "  keepalive: {} idle connection(s), kept {}",
        u.keepalive,
        show_duration(u.keepalive_timeout)
    ));
    for l in trust_lines(c) {
        line(l);
    }
    if c.ws.is_empty() {
        line(
            "routes:      no WebSocket routes; every upgrade is passed through to the upstream"
                .into(),
        );
    } else {
        line(format!(
            "routes:      {} WebSocket route(s) served in-process; other upgrades pass through",
            c.ws.len()
        ));
    }
    for r in &c.ws {
        let groups: Vec<String> = r.groups.iter().map(|g| g.to_string()).collect();
        let protocol = match &r.protocol {
            Protocol::Channels => "channels".to_string(),
            Protocol::Awx => format!("awx (max {} groups)", r.max_groups),
            Protocol::AmqpBridge(b) => format!(
                "amqp-bridge to {} {:?} as {}",
                b.exchange, b.bindings, b.commander
            ),
        };
        line(format!(
            "  - {}  protocol {protocol}, groups [{}]",
            r.path,
            groups.join(", ")
        ));
        let auth = r
            .auth
            .as_ref()
            .map(|a| format!("GET {} (timeout {})", a.path, show_duration(a.timeout)))
            .unwrap_or_else(|| "none".into());
        let inbound = match &r.inbound {
            _ if r.protocol != Protocol::Channels => "per the protocol".to_string(),
            Inbound::Drop => "drop".to_string(),
            Inbound::Echo => "echo".to_string(),
            Inbound::Group { group, event_type } => format!("to group {group} as {event_type}"),
            Inbound::Http { path, timeout } => {
                format!("POST {path} (timeout {})", show_duration(*timeout))
            }
        };
        let origins = match &r.origins {
            Origins::SameHost => "same host".to_string(),
            Origins::Any => "any".to_string(),
            Origins::List(l) => l.join(", "),
        };
        line(format!(
            "      auth {auth}; inbound {inbound}; origins {origins}"
        ));
        line(format!(
            "      max message {} bytes, ping {}, send queue {} messages / {} bytes ({:?} when full)",
            r.max_message,
            r.ping_interval
                .map(show_duration)
                .map(|d| d.to_string())
                .unwrap_or_else(|| "off".into()),
            r.send_queue,
            r.send_queue_bytes,
            r.slow_client
        ));
        line(format!(
            "      inbound rate {} burst {} ({:?} when over), send timeout {}",
            r.inbound_rate,
            r.inbound_burst,
            r.inbound_limit,
            show_duration(r.send_timeout)
        ));
    }
    if c.statics.is_empty() {
        line("static:      no [[static]] locations; X-Accel-Redirect answers get 502".into());
    } else {
        line(format!(
            "static:      {} location(s) served from disk",
            c.statics.len()
        ));
    }
    for s in &c.statics {
        let mut notes = Vec::new();
        if s.internal {
            notes.push("internal (X-Accel-Redirect only)".to_string());
        }
        if let Some(e) = s.expires {
            notes.push(format!("expires {}", show_duration(e)));
        }
        if !s.precompressed.is_empty() {
            let p: Vec<&str> = s.precompressed.iter().map(|e| e.token()).collect();
            notes.push(format!("precompressed {}", p.join(", ")));
        }
        if let Some(i) = &s.index {
            notes.push(format!("index {i}"));
        }
        if s.fallback == crate::files::Fallback::Upstream {
            notes.push("missing files go to the upstream".into());
        }
        if s.follow_symlinks {
            notes.push("follows symlinks out of the root".into());
        }
        line(format!(
            "  - {} -> {}  {}",
            s.prefix,
            s.root.display(),
            notes.join("; ")
        ));
    }
    let z = &c.compression;
    line(if z.enabled {
        format!(
            "compression: zstd, br, gzip at level {} for {} type(s) from {} bytes",
            z.level,
            z.types.len(),
            z.min_size
        )
    } else {
        "compression: off".to_string()
    });
    match &c.broker {
        crate::broker::BrokerConfig::Memory => {
            line("broker:      memory (this process only)".into())
        }
        crate::broker::BrokerConfig::Amqp(a) => line(format!(
            "broker:      amqp {} exchange \"{}\" (capacity {}, expiry {}, prefetch {})",
            a.urls
                .iter()
                .map(|u| crate::broker::amqp::redact(u))
                .collect::<Vec<_>>()
                .join(", "),
            a.groups_exchange,
            a.capacity,
            show_duration(a.expiry),
            a.prefetch
        )),
    }
    if let Some(t) = &c.tls {
        line(crate::tls::summary(t).trim_end().to_string());
    }
    line(format!(
        "log:         level \"{}\", access log {}, {:?} format",
        c.log.level,
        if c.log.access_log { "on" } else { "off" },
        c.log.format
    ));
    if let Some(acme) = c.tls.as_ref().and_then(|t| t.acme.as_ref()) {
        out.push_str(&crate::tls::acme::summary::render(acme));
    }
    out
}

/// What the app can trust: stripped headers, X-Real-IP, signed calls; a warning when
/// routes call the app unsigned.
fn trust_lines(c: &Config) -> Vec<String> {
    let f = &c.server.forwarding;
    let mut out = Vec::new();
    let mut stripped = vec!["X-Channelgate-*".to_string()];
    stripped.extend(f.strip.iter().map(|h| h.to_string()));
    if !f.underscores {
        stripped.push("names with _".into());
    }
    out.push(format!(
        "trust:       client headers never passed to the app: {}; X-Real-IP set from the client address",
        stripped.join(", ")
    ));
    if !f.trusted.is_empty() {
        out.push(format!(
            "  trusted proxies: {} (their X-Forwarded-Proto/-Host and X-Real-IP are kept)",
            f.trusted.len()
        ));
    }
    let calling: Vec<String> = c
        .ws
        .iter()
        .filter(|r| {
            r.auth.is_some() || r.authorize.is_some() || matches!(r.inbound, Inbound::Http { .. })
        })
        .map(|r| r.path.to_string())
        .collect();
    match (&c.upstream.hook_secret, calling.is_empty()) {
        (Some(_), _) => out.push(
            "  hook calls: signed (X-Channelgate-Signature: t=...,v1=HMAC-SHA256), verify with channelgate.verify / @channelgate_hook".into(),
        ),
        (None, true) => {}
        (None, false) => out.push(format!(
            "warning: route(s) {} call the app (auth/authorize/inbound http) unsigned: without [upstream] hook_secret_file the app can trust their X-Channelgate-* headers only if no client can reach it directly (network isolation)",
            calling.join(", ")
        )),
    }
    out
}
