//! What `channelgate check` prints: the configuration as channelgate understood it.

use std::fmt::Write;

use super::values::show_duration;
use super::Config;
use crate::upstream::HealthCheckKind;

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
    let u = &c.upstream;
    line(format!("upstream:    {} server(s), round robin over healthy servers", u.servers.len()));
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
        "  timeouts:  connect {}, read {}, write {}; {} retr{} on connect failure (idempotent requests)",
        show_duration(u.connect_timeout),
        show_duration(u.read_timeout),
        show_duration(u.write_timeout),
        u.retries,
        if u.retries == 1 { "y" } else { "ies" }
    ));
    line(format!(
        "  keepalive: {} idle connection(s), kept {}",
        u.keepalive,
        show_duration(u.keepalive_timeout)
    ));
    line("routes:      no WebSocket routes; upgrades are passed through to the upstream".into());
    line(format!(
        "log:         level \"{}\", access log {}, {:?} format",
        c.log.level,
        if c.log.access_log { "on" } else { "off" },
        c.log.format
    ));
    out
}
