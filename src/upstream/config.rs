//! `[upstream]`: the WSGI servers (gunicorn, uwsgi) that ordinary HTTP goes to.

use std::time::Duration;

use serde::Deserialize;

use crate::config::values::{self, Address, Resolve};
use crate::config::{Errors, KeyPath};

#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// Servers, tried in round robin among the healthy ones.
    pub servers: Vec<Address>,
    /// Time to establish a connection to a server. Default 2s.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response (first byte included). Default 60s.
    pub read_timeout: Duration,
    /// Longest wait while sending the request to a server. Default 60s.
    pub write_timeout: Duration,
    /// A WebSocket pass-through tunnel with no bytes either way for this long is closed.
    /// Default 1h.
    pub tunnel_idle_timeout: Duration,
    /// Idle connections kept open per process for reuse. Default 128; 0 disables reuse.
    pub keepalive: usize,
    /// How long an idle pooled connection is kept. Default 1s: below gunicorn's own
    /// keep-alive (2s), so a pooled connection is never one the server is about to close.
    pub keepalive_timeout: Duration,
    /// Extra attempts on another server after a connect failure, for idempotent requests. Default 1.
    pub retries: usize,
    pub health_check: HealthCheckConfig,
}

/// Active health checks, run in the background against every server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub kind: HealthCheckKind,
    /// Time between two checks of one server. Default 5s.
    pub interval: Duration,
    /// Longest a check may take. Default 2s.
    pub timeout: Duration,
    /// Consecutive successes that bring an ejected server back. Default 1.
    pub rise: usize,
    /// Consecutive failures that eject a server. Default 1.
    pub fall: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// A TCP connect succeeds.
    Tcp,
    /// `GET path` answers 2xx or 3xx.
    Http { path: String, host: String },
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawUpstream {
    servers: Option<Vec<String>>,
    connect_timeout: Option<String>,
    read_timeout: Option<String>,
    write_timeout: Option<String>,
    tunnel_idle_timeout: Option<String>,
    keepalive: Option<usize>,
    keepalive_timeout: Option<String>,
    retries: Option<usize>,
    health_check: Option<RawHealthCheck>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawHealthCheck {
    kind: Option<String>,
    path: Option<String>,
    host: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    rise: Option<usize>,
    fall: Option<usize>,
}

impl RawUpstream {
    pub(crate) fn validate(self, path: &KeyPath, errs: &mut Errors) -> UpstreamConfig {
        let mut servers = Vec::new();
        match self.servers {
            None => errs.add(
                &path.key("servers"),
                "is required: the WSGI servers to proxy to, e.g. servers = [\"127.0.0.1:8050\"]",
            ),
            Some(list) if list.is_empty() => {
                errs.add(&path.key("servers"), "needs at least one server")
            }
            Some(list) => {
                for (i, raw) in list.iter().enumerate() {
                    let p = path.key("servers").index(i);
                    if let Some(a) = values::address(raw, Resolve::Names, &p, errs) {
                        if servers.contains(&a) {
                            errs.add(&p, format!("{a} is listed twice"));
                        }
                        servers.push(a);
                    }
                }
            }
        }
        let dur = |raw: Option<String>, key: &str, default: u64, errs: &mut Errors| {
            values::duration(
                raw.as_deref(),
                Duration::from_secs(default),
                false,
                &path.key(key),
                errs,
            )
        };
        UpstreamConfig {
            servers,
            connect_timeout: dur(self.connect_timeout, "connect_timeout", 2, errs),
            read_timeout: dur(self.read_timeout, "read_timeout", 60, errs),
            write_timeout: dur(self.write_timeout, "write_timeout", 60, errs),
            tunnel_idle_timeout: dur(self.tunnel_idle_timeout, "tunnel_idle_timeout", 3600, errs),
            keepalive: self.keepalive.unwrap_or(128),
            keepalive_timeout: values::duration(
                self.keepalive_timeout.as_deref(),
                Duration::from_secs(1),
                false,
                &path.key("keepalive_timeout"),
                errs,
            ),
            retries: self.retries.unwrap_or(1),
            health_check: self
                .health_check
                .unwrap_or_default()
                .validate(&path.key("health_check"), errs),
        }
    }
}

impl RawHealthCheck {
    fn validate(self, path: &KeyPath, errs: &mut Errors) -> HealthCheckConfig {
        // A `path` makes it an HTTP check; without one it is a TCP connect check.
        let kind = match (self.kind.as_deref(), self.path) {
            (None | Some("http"), Some(p)) => {
                if !p.starts_with('/') {
                    errs.add(&path.key("path"), format!("`{p}` must start with /"));
                }
                HealthCheckKind::Http {
                    path: p,
                    host: self.host.unwrap_or_else(|| "localhost".into()),
                }
            }
            (Some("http"), None) => {
                errs.add(
                    &path.key("path"),
                    "an http health check needs a path, e.g. path = \"/healthz\"",
                );
                HealthCheckKind::Tcp
            }
            (None | Some("tcp"), None) => HealthCheckKind::Tcp,
            (Some("tcp"), Some(_)) => {
                errs.add(
                    &path.key("path"),
                    "a tcp health check takes no path; remove it or use kind = \"http\"",
                );
                HealthCheckKind::Tcp
            }
            (Some(other), _) => {
                errs.add(
                    &path.key("kind"),
                    format!("`{other}` is not a health check kind; use \"http\" or \"tcp\""),
                );
                HealthCheckKind::Tcp
            }
        };
        let mut count = |v: Option<usize>, key: &str| match v {
            Some(0) => {
                errs.add(&path.key(key), "must be at least 1");
                1
            }
            v => v.unwrap_or(1),
        };
        let rise = count(self.rise, "rise");
        let fall = count(self.fall, "fall");
        HealthCheckConfig {
            kind,
            interval: values::duration(
                self.interval.as_deref(),
                Duration::from_secs(5),
                false,
                &path.key("interval"),
                errs,
            ),
            timeout: values::duration(
                self.timeout.as_deref(),
                Duration::from_secs(2),
                false,
                &path.key("timeout"),
                errs,
            ),
            rise,
            fall,
        }
    }
}
