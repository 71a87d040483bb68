//! The admin listener: `GET /metrics` (Prometheus text), `GET /healthz` (the process is
//! alive), `GET /readyz` (at least one upstream server is healthy and the broker is up),
//! and `POST /publish/{group}` ([`crate::publish`]). Keep it on a private address: it is
//! for Prometheus, load balancers, operators and the app, not for clients.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;

use crate::config::values::{self, Address, Resolve};
use crate::config::{Errors, KeyPath};
use crate::metrics::Metrics;
use crate::publish::PublishApi;
use crate::upstream::Upstreams;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9100";

/// `[admin]`.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// Where the admin endpoints listen; None when `enabled = false`. Default 127.0.0.1:9100.
    pub listen: Option<Address>,
    /// Bearer token `POST /publish/...` must carry. Default: none (keep the listener private).
    pub publish_token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawAdmin {
    listen: Option<String>,
    enabled: Option<bool>,
    publish_token: Option<String>,
}

impl RawAdmin {
    pub(crate) fn validate(self, path: &KeyPath, errs: &mut Errors) -> AdminConfig {
        if let Some(t) = &self.publish_token {
            if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                errs.add(
                    &path.key("publish_token"),
                    "must be at least 16 characters, without spaces",
                );
            }
        }
        if self.enabled == Some(false) {
            return AdminConfig {
                listen: None,
                publish_token: self.publish_token,
            };
        }
        let raw = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        AdminConfig {
            listen: values::address(&raw, Resolve::IpOnly, &path.key("listen"), errs),
            publish_token: self.publish_token,
        }
    }
}

/// Serves the admin endpoints.
pub struct AdminApp {
    pub metrics: Arc<Metrics>,
    pub upstreams: Arc<Upstreams>,
    pub publish: PublishApi,
}

fn text(status: StatusCode, body: impl Into<Vec<u8>>) -> Response<Vec<u8>> {
    let body = body.into();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, len.into());
    resp
}

impl AdminApp {
    fn readyz(&self) -> Response<Vec<u8>> {
        let healthy = self.upstreams.healthy_count();
        if !self.publish.broker.is_ready() {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the broker is down\n",
            )
        } else if healthy > 0 {
            text(
                StatusCode::OK,
                format!("ready: {healthy} healthy upstream server(s)\n"),
            )
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: no healthy upstream server\n",
            )
        }
    }

    fn route(&self, method: &Method, path: &str) -> Response<Vec<u8>> {
        let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
        if known && method != Method::GET && method != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
            r.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD"),
            );
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
            _ => text(
                StatusCode::NOT_FOUND,
                "404 Not Found: try /metrics, /healthz, /readyz or POST /publish/{group}\n",
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (method, path) = (req.method.clone(), req.uri.path().to_string());
        if let Some(resp) = self.publish.route(session, &path).await {
            return resp;
        }
        // Bodies are not used by these endpoints; drain so the connection can be reused.
        if let Err(e) = session.drain_request_body().await {
            tracing::debug!(error = %e, "admin: could not drain request body");
        }
        self.route(&method, &path)
    }
}
