//! The in-process WebSocket endpoint. An upgrade on a configured route is answered here:
//! origin check, handshake, auth by the app, groups, then the connection is taken over
//! from Pingora and served by its own task ([`session`]) until it closes.

pub mod auth;
pub(crate) mod calls;
pub mod config;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod link;
pub mod prepared;
pub mod ratelimit;
pub mod route;
pub(crate) mod session;
#[cfg(test)]
pub(crate) mod testing;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;
use tokio::sync::watch;

pub use config::RouteConfig;
use handshake::Refusal;
use route::Vars;

use crate::broker::{new_channel_name, Broker};
use crate::hub::{Hub, Membership, QueueLimits};
use crate::metrics::Metrics;
use crate::shutdown::Drain;
use crate::upstream::Upstreams;

/// Everything a WebSocket connection needs, shared by all of them.
pub struct Endpoint {
    pub routes: Vec<Arc<RouteConfig>>,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub upstreams: Arc<Upstreams>,
    pub metrics: Arc<Metrics>,
    pub drain: Arc<Drain>,
    /// Turns true when the server starts shutting down: connections close with 1001.
    pub shutdown: watch::Receiver<bool>,
    /// How forwarding headers are written on auth subrequests.
    pub forwarding: crate::proxy::headers::Forwarding,
    /// Whether accepted connections leave Pingora's per-connection buffers behind
    /// ([`crate::proxy::unbuffered::unbuffered`]); only without `[server] read_buffer`.
    pub unbuffer_streams: bool,
    /// The AMQP side of each `amqp-bridge` route, by route path.
    pub bridges: std::collections::HashMap<String, Arc<crate::protocols::bridge::Bridge>>,
}

/// One accepted connection's identity and context.
pub struct Conn {
    pub route: Arc<RouteConfig>,
    pub channel: String,
    pub user: Option<String>,
    pub groups: Vec<String>,
    /// The group inbound frames go to, for `inbound = { group = ... }`.
    pub inbound_group: Option<String>,
    /// The route's path parameters, for `inbound = { http = ... }`.
    pub params: Vec<(String, String)>,
    /// The client's Cookie, Authorization and Host, kept only when the route calls the app
    /// later ([`RouteConfig::keeps_credentials`]).
    pub credentials: Vec<(&'static str, http::HeaderValue)>,
    pub client: String,
    pub request_id: String,
    /// The `csrftoken` cookie the connection was opened with (AWX's xrftoken check).
    pub csrftoken: Option<String>,
    /// Group patterns the auth answer allows (`"subscribe": ["jobs-*"]`), for `awx`.
    pub subscribe: Option<Vec<String>>,
}

/// The value of cookie `name` in the request's Cookie headers.
fn cookie(req: &RequestHeader, name: &str) -> Option<String> {
    req.headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

fn query_params(req: &RequestHeader) -> BTreeMap<String, String> {
    req.uri
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Endpoint {
    /// Answers a request on a WebSocket route: a refusal, or a 101 and a served connection.
    pub async fn serve(
        self: &Arc<Self>,
        session: &mut Session,
        request_id: &str,
        route: Arc<RouteConfig>,
        params: BTreeMap<String, String>,
    ) -> Result<()> {
        match self.accept(session, request_id, route, params).await {
            Ok(()) => Ok(()),
            Err(r) => {
                self.metrics
                    .ws
                    .connects
                    .with_label_values(&[r.outcome])
                    .inc();
                refuse(session, &r, request_id).await
            }
        }
    }

    async fn accept(
        self: &Arc<Self>,
        session: &mut Session,
        request_id: &str,
        route: Arc<RouteConfig>,
        params: BTreeMap<String, String>,
    ) -> Result<(), Refusal> {
        let req = session.req_header().clone();
        let https = crate::tls::edge::is_tls(session);
        if !handshake::origin_allowed(&req, &route.origins, https) {
            return Err(Refusal::new(403, "origin not allowed", "origin"));
        }
        if session.is_http2() {
            // Pingora never offers RFC 8441 (WebSockets over HTTP/2), so a browser opens its
            // WebSocket on an HTTP/1.1 connection; anything else asking here over h2 gets a
            // clear answer instead of being proxied as a plain request.
            return Err(Refusal::new(
                400,
                "WebSockets are served over HTTP/1.1 only (no RFC 8441); connect with HTTP/1.1",
                "http2",
            ));
        }
        if !session.is_upgrade_req() {
            return Err(Refusal::new(
                426,
                "this path only speaks WebSocket (Upgrade: websocket over HTTP/1.1)",
                "bad_handshake",
            ));
        }
        let (mut resp, _subprotocol) = handshake::accept(&req, &route)?;
        let deflate = handshake::deflate(&req, &route);
        if let Some((_, answer)) = &deflate {
            resp.insert_header("sec-websocket-extensions", answer.as_str())
                .map_err(|e| {
                    Refusal::new(
                        500,
                        format!("cannot build the handshake answer: {e}"),
                        "bad_handshake",
                    )
                })?;
        }
        let channel = new_channel_name(self.broker.instance());
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let identity = match &route.auth {
            None => auth::Identity::default(),
            Some(cfg) => {
                let sub = auth::subrequest(
                    &self.forwarding,
                    &cfg.path,
                    &req,
                    client_ip,
                    request_id,
                    &channel,
                    https,
                )
                .map_err(|e| {
                    Refusal::new(
                        400,
                        format!("cannot forward this request for auth: {e}"),
                        "bad_handshake",
                    )
                })?;
                auth::authenticate(&self.upstreams, &self.metrics, cfg, sub).await?
            }
        };
        let vars = Vars {
            params: params.clone(),
            user: identity.user.clone(),
            query: query_params(&req),
        };
        let render = |t: &route::GroupTemplate| {
            t.render(&vars)
                .map_err(|e| Refusal::new(400, e, "bad_group"))
        };
        let mut groups = route
            .groups
            .iter()
            .map(render)
            .collect::<Result<Vec<_>, _>>()?;
        for g in identity.groups {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        if let Some(b) = self.bridges.get(&route.path.to_string()) {
            groups.push(b.group.clone());
        }
        let inbound_group = match &route.inbound {
            config::Inbound::Group { group, .. } => Some(render(group)?),
            _ => None,
        };
        let mut credentials = Vec::new();
        if route.keeps_credentials() {
            for name in ["cookie", "authorization", "host"] {
                // A copy: Pingora's header values share the 4 KiB buffer the request head
                // was read into, which a clone would keep alive as long as the connection.
                if let Some(Ok(v)) = req
                    .headers
                    .get(name)
                    .map(|v| http::HeaderValue::from_bytes(v.as_bytes()))
                {
                    credentials.push((name, v));
                }
            }
        }
        let conn = Conn {
            route: route.clone(),
            channel,
            user: identity.user,
            groups,
            inbound_group,
            params: params.into_iter().collect(),
            credentials,
            client: session
                .client_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            request_id: request_id.to_string(),
            csrftoken: cookie(&req, "csrftoken"),
            subscribe: identity.subscribe,
        };
        // Join before the 101 reaches the client: a message published once the client is
        // connected must find it in its groups (it waits in the member's queue until the
        // session task runs). A guard: a failed or dropped takeover leaves again.
        let limits = QueueLimits {
            messages: route.send_queue,
            bytes: route.send_queue_bytes,
            slow: route.slow_client,
            deflate: deflate.as_ref().map(|(agreed, _)| prepared::DeflateOut {
                window_bits: agreed.server_window_bits,
                level: route.compression.level,
                min_size: route.compression.min_size,
            }),
        };
        let membership = Arc::new(Membership::join(
            &self.hub,
            &conn.channel,
            &conn.groups,
            limits,
        ));
        let detached = match crate::proxy::takeover::detach(session, resp).await {
            Ok(d) => d,
            Err(e) => {
                return Err(Refusal::new(
                    500,
                    format!("cannot take the connection over: {e}"),
                    "bad_handshake",
                ));
            }
        };
        self.metrics
            .ws
            .connects
            .with_label_values(&["accepted"])
            .inc();
        if deflate.is_some() {
            self.metrics.ws.deflate.inc();
        }
        let stream = if self.unbuffer_streams {
            crate::proxy::unbuffered::unbuffered(detached.stream)
        } else {
            detached.stream
        };
        let reader = frame::ReaderLimits {
            max_message: route.max_message,
            deflate: deflate.map(|(agreed, _)| agreed.inflate),
        };
        let guard = self.drain.enter();
        let ep = self.clone();
        // Reachable by shutdown: the session watches `shutdown` and closes with 1001, and
        // the drain waits for it through `guard`.
        tokio::spawn(session::run(
            session::Start {
                ep,
                conn: Arc::new(conn),
                io: Box::new(stream),
                pre_read: detached.pre_read,
                reader,
                membership,
            },
            guard,
        ));
        Ok(())
    }
}

/// Writes a refusal as a small plain-text answer.
async fn refuse(session: &mut Session, r: &Refusal, request_id: &str) -> Result<()> {
    let body = Bytes::from(format!("{} {}\n", r.status, r.reason));
    let mut resp = ResponseHeader::build(r.status, Some(6))?;
    resp.insert_header("content-type", "text/plain; charset=utf-8")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header(crate::proxy::headers::REQUEST_ID, request_id)?;
    if r.status == 426 {
        resp.insert_header("upgrade", "websocket")?;
        resp.insert_header("sec-websocket-version", "13")?;
    }
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}
