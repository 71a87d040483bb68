//! The admin listener: `GET /metrics` (Prometheus text), `GET /healthz` (the process is
//! alive), `GET /readyz` (at least one upstream server is healthy). Keep it on a private
//! address: it is for Prometheus, load balancers and operators, not for clients.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;

use crate::config::values::{self, Address, Resolve};
use crate::config::{Errors, KeyPath};
use crate::metrics::Metrics;
use crate::upstream::Upstreams;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9100";

/// `[admin]`.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// Where the admin endpoints listen; None when `enabled = false`. Default 127.0.0.1:9100.
    pub listen: Option<Address>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawAdmin {
    listen: Option<String>,
    enabled: Option<bool>,
}

impl RawAdmin {
    pub(crate) fn validate(self, path: &KeyPath, errs: &mut Errors) -> AdminConfig {
        if self.enabled == Some(false) {
            return AdminConfig { listen: None };
        }
        let raw = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        AdminConfig {
            listen: values::address(&raw, Resolve::IpOnly, &path.key("listen"), errs),
        }
    }
}

/// Serves the admin endpoints.
pub struct AdminApp {
    pub metrics: Arc<Metrics>,
    pub upstreams: Arc<Upstreams>,
}

fn text(status: StatusCode, body: impl Into<Vec<u8>>) -> Response<Vec<u8>> {
    let body = body.into();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    let len = resp.body().len();
    resp.headers_mut().insert(http::header::CONTENT_LENGTH, len.into());
    resp
}

impl AdminApp {
    fn readyz(&self) -> Response<Vec<u8>> {
        let healthy = self.upstreams.healthy_count();
        if healthy > 0 {
            text(StatusCode::OK, format!("ready: {healthy} healthy upstream server(s)\n"))
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, "not ready: no healthy upstream server\n")
        }
    }

    fn route(&self, method: &Method, path: &str) -> Response<Vec<u8>> {
        let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
        if known && method != Method::GET && method != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
            r.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match path {
            "/metrics" => {
                let mut r = text(StatusCode::OK, self.metrics.render());
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => self.readyz(),
            _ => text(StatusCode::NOT_FOUND, "404 Not Found: try /metrics, /healthz or /readyz\n"),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (method, path) = (req.method.clone(), req.uri.path().to_string());
        // Bodies are not used by these endpoints; drain so the connection can be reused.
        if let Err(e) = session.drain_request_body().await {
            tracing::debug!(error = %e, "admin: could not drain request body");
        }
        self.route(&method, &path)
    }
}
