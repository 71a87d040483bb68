//! The client-facing HTTP proxy: Pingora's `ProxyHttp` phases, in the order a request
//! meets them. `request_filter` asks the [`crate::router`] where a request goes: requests
//! on a WebSocket route go to [`crate::ws`]; other `Upgrade: websocket` requests are passed
//! through to the upstream by [`tunnel`]; everything else is proxied to the upstream pool.

mod access;
pub mod buffer;
pub mod compress;
pub mod errors;
pub mod headers;
pub mod limits;
pub mod takeover;
mod tunnel;
// The crate's only unsafe code: one `BorrowedFd`, reasoned about in the module.
#[allow(unsafe_code)]
pub mod unbuffered;

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::lb::Backend;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession as HttpSession;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use crate::files::{accel, Files, Location, Served};
use crate::metrics::Metrics;
use crate::router::Route;
use crate::shutdown::{Drain, DrainGuard};
use crate::upstream::{backend_name, Upstreams};

pub struct Proxy {
    pub upstreams: Arc<Upstreams>,
    /// The in-process WebSocket routes.
    pub ws: Arc<crate::ws::Endpoint>,
    /// Decides where each request goes.
    pub router: crate::router::Router,
    /// `[[static]]` locations, also the targets of X-Accel-Redirect.
    pub files: Arc<Files>,
    /// `[compression]` of proxied responses.
    pub compression: compress::CompressionConfig,
    pub metrics: Arc<Metrics>,
    pub drain: Arc<Drain>,
    pub access_log: bool,
    pub forwarding: headers::Forwarding,
    pub header_limits: headers::HeaderLimits,
    /// The client limits and request buffering applied here to HTTP/2 requests (the edge
    /// applies them to HTTP/1.1 ones); see [`limits::h2`].
    pub h2: limits::h2::H2Limits,
    /// HSTS on HTTPS answers (the router has the challenge and redirect part); None
    /// without `[tls]`.
    pub tls: Option<Arc<crate::tls::Edge>>,
}

/// Per-request state.
pub struct Ctx {
    start: Instant,
    request_id: String,
    /// The server the request went (or is going) to.
    backend: Option<Backend>,
    /// Connect attempts so far.
    attempts: usize,
    /// The server whose connect just failed, skipped by the retry.
    avoid: Option<Backend>,
    /// The failure the request ended with, classified once.
    failure: Option<errors::Classified>,
    /// Held for the life of the client connection (see `persist_connection_context`).
    connection: Option<Arc<ConnectionGuard>>,
    in_flight: Option<InFlight>,
    /// The static location that served the request (directly or by X-Accel-Redirect).
    location: Option<Arc<Location>>,
    /// The client session while a stand-in takes Pingora's writes of an app answer that
    /// X-Accel-Redirect replaced (see `files::accel`); put back in `logging`.
    parked: Option<Box<HttpSession>>,
    /// The encoder of a compressed response.
    compressor: Option<compress::Compressor>,
    /// Bytes of an HTTP/2 request body passed on so far (for `max_body_size`).
    h2_body: u64,
}

/// Counts a request in the in-flight gauge and in the shutdown drain.
struct InFlight {
    _drain: DrainGuard,
    gauge: pingora_prometheus::prometheus::IntGauge,
}

impl InFlight {
    fn new(drain: &Arc<Drain>, gauge: &pingora_prometheus::prometheus::IntGauge) -> InFlight {
        gauge.inc();
        InFlight {
            _drain: drain.enter(),
            gauge: gauge.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Counts an open client connection; dropped with the connection's last context.
struct ConnectionGuard(pingora_prometheus::prometheus::IntGauge);

impl ConnectionGuard {
    fn new(gauge: &pingora_prometheus::prometheus::IntGauge) -> ConnectionGuard {
        gauge.inc();
        ConnectionGuard(gauge.clone())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Proxy {
    fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
        session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
    }

    fn upstream_failed(&self, ctx: &mut Ctx, e: &Error) -> errors::Classified {
        let c = errors::classify(e);
        if let Some(kind) = c.upstream_kind {
            self.metrics
                .upstream
                .errors
                .with_label_values(&[kind])
                .inc();
        }
        ctx.failure = Some(c);
        c
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            request_id: String::new(),
            backend: None,
            attempts: 0,
            avoid: None,
            failure: None,
            connection: None,
            in_flight: None,
            location: None,
            parked: None,
            compressor: None,
            h2_body: 0,
        }
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
        prev: Box<dyn Any + Send + Sync>,
    ) {
        if let Ok(guard) = prev.downcast::<Arc<ConnectionGuard>>() {
            ctx.connection = Some(*guard);
        }
    }

    async fn early_request_filter(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.start = Instant::now();
        if ctx.connection.is_none() {
            ctx.connection = Some(Arc::new(ConnectionGuard::new(
                &self.metrics.http.connections,
            )));
        }
        ctx.in_flight = Some(InFlight::new(&self.drain, &self.metrics.http.in_flight));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.request_id = headers::request_id(session.req_header());
        let refusal = self
            .header_limits
            .check(session.req_header())
            .or_else(|| headers::ambiguous_length(session.req_header()))
            .or_else(|| limits::h2::too_large(session, self.h2.max_body_size));
        if let Some(refused) = refusal {
            self.metrics
                .http
                .refused
                .with_label_values(&[refused.reason])
                .inc();
            let (resp, body) = errors::error_response(refused.status, &ctx.request_id)?;
            // As nginx does: the rest of the connection is not worth reading.
            session.set_keepalive(None);
            session.write_response_header(Box::new(resp), false).await?;
            session.write_response_body(Some(body), true).await?;
            return Ok(true);
        }
        let https = crate::tls::edge::is_tls(session);
        match self.router.route(session.req_header(), https) {
            Route::Edge(answer) => {
                crate::tls::Edge::reply(session, answer).await?;
                Ok(true)
            }
            Route::WebSocket(route, params) => {
                let route = route.clone();
                buffer::unbuffered_from_now(session);
                self.ws
                    .serve(session, &ctx.request_id, route, params)
                    .await?;
                Ok(true)
            }
            Route::Static(loc) => {
                let loc = loc.clone();
                // A local file needs no worker released: it is sent at the client's pace.
                buffer::unbuffered_from_now(session);
                match self.files.serve(session, &loc, &ctx.request_id).await? {
                    Served::Answered(_) => {
                        ctx.location = Some(loc);
                        Ok(true)
                    }
                    // No such file; `fallback = "upstream"`.
                    Served::Upstream => Ok(false),
                }
            }
            Route::Upstream => {
                if session.is_upgrade_req() && tunnel::is_websocket(session.req_header()) {
                    buffer::unbuffered_from_now(session);
                    tunnel::pass_through(self, session, ctx).await?;
                    return Ok(true);
                }
                limits::h2::read_small_body(session, &self.h2, &self.metrics, &ctx.request_id).await
            }
        }
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        limits::h2::count_body(
            session,
            body.as_ref(),
            &mut ctx.h2_body,
            &self.h2,
            &self.metrics,
        )
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // A retry after a connect failure goes elsewhere; a retry after a stale pooled
        // connection may go to the same server on a fresh connection.
        let avoid = ctx.avoid.take();
        let Some(backend) = self.upstreams.select(avoid.as_ref()) else {
            return Error::e_explain(
                errors::NO_HEALTHY_UPSTREAM,
                "every upstream server is out of rotation",
            );
        };
        if ctx.attempts > 0 {
            self.metrics.upstream.retries.inc();
        }
        ctx.attempts += 1;
        let peer = self.upstreams.peer(&backend);
        ctx.backend = Some(backend);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.forwarding.apply(
            upstream_request,
            Self::client_ip(session),
            &ctx.request_id,
            crate::tls::edge::is_tls(session),
        );
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        // A 101 to a request that did not ask to upgrade would hand the client raw bytes
        // of an unknown protocol: a bad answer from the upstream (nginx: 502).
        if upstream_response.status.as_u16() == 101 && !session.is_upgrade_req() {
            return Err(Error::create(
                ErrorType::InvalidHTTPHeader,
                pingora::ErrorSource::Upstream,
                Some("101 Switching Protocols to a request that did not ask to upgrade".into()),
                None,
            ));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if upstream_response.headers.contains_key(accel::HEADER) {
            let (_, loc) = self
                .files
                .accel_redirect(session, upstream_response, &ctx.request_id)
                .await?;
            ctx.location = Some(loc);
            if !accel::app_body_is_empty(upstream_response) {
                // The app announced a body it does not mean to send (django-sendfile2 sets
                // the file's length): like nginx, drop that upstream connection unread.
                return Error::e_explain(accel::SERVED, "the app's body is not read");
            }
            let stand_in = takeover::stand_in(session.req_header()).await?;
            ctx.parked = Some(std::mem::replace(
                &mut session.downstream_session,
                Box::new(stand_in),
            ));
            return Ok(());
        }
        if let Some(edge) = &self.tls {
            edge.response_headers(session, upstream_response)?;
        }
        upstream_response.insert_header(headers::REQUEST_ID, ctx.request_id.as_str())?;
        // Before the X-Accel-* instructions are removed below: it reads X-Accel-Buffering.
        buffer::response_filter(session, upstream_response);
        let http2 = session.is_http2();
        ctx.compressor = self
            .compression
            .start(session.req_header(), upstream_response, http2)?;
        if let Some(c) = &ctx.compressor {
            self.metrics
                .compression
                .responses
                .with_label_values(&[c.coding])
                .inc();
        }
        // As nginx does, the app's instructions to the proxy stay with the proxy.
        for h in accel::INSTRUCTIONS {
            upstream_response.remove_header(*h);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if ctx.parked.is_some() {
            // The app's body of an X-Accel-Redirect answer: replaced by the file.
            *body = None;
        } else if let Some(c) = ctx.compressor.as_mut() {
            *body = c
                .chunk(body.take(), end_of_stream)
                .or_err(ErrorType::InternalError, "compressing a response body")?;
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.upstream_failed(ctx, &e);
        let retry = session.req_header().method.is_idempotent()
            && ctx.attempts <= self.upstreams.config().retries
            && self.upstreams.select(ctx.backend.as_ref()).is_some();
        e.set_retry(retry);
        if retry {
            ctx.avoid = ctx.backend.clone();
            tracing::warn!(
                request_id = %ctx.request_id,
                upstream = %ctx.backend.as_ref().map(backend_name).unwrap_or_default(),
                error = %e,
                "connect failed; retrying on another server"
            );
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("upstream: {peer}"));
        let idempotent = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if !idempotent {
            e.set_retry(false);
            return e;
        }
        // A stale pooled connection: Pingora retries it on a fresh one (same server allowed).
        e.retry.decide_reuse(client_reused);
        if e.retry() {
            return e;
        }
        // Like nginx's proxy_next_upstream: an idempotent request whose server failed
        // before any answer reached the client goes once to another healthy server.
        let retry = session.response_written().is_none()
            && ctx.attempts <= self.upstreams.config().retries
            && self.upstreams.select(ctx.backend.as_ref()).is_some();
        if retry {
            self.upstream_failed(ctx, &e);
            ctx.avoid = ctx.backend.clone();
            e.set_retry(true);
            tracing::warn!(
                request_id = %ctx.request_id,
                upstream = %ctx.backend.as_ref().map(backend_name).unwrap_or_default(),
                error = %e,
                "upstream failed before answering; retrying on another server"
            );
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if e.etype() == &accel::SERVED {
            // Not a failure: the file answer is complete; only the connection is not reused.
            return FailToProxy {
                error_code: session.response_written().map_or(0, |r| r.status.as_u16()),
                can_reuse_downstream: false,
            };
        }
        // A connect failure that ends the request was already counted in fail_to_connect.
        let c = match ctx.failure {
            Some(c) if c == errors::classify(e) => c,
            _ => self.upstream_failed(ctx, e),
        };
        if let Some(sent) = session.response_written() {
            // Headers already went out: the client sees a cut body, nothing else can be said.
            return FailToProxy {
                error_code: sent.status.as_u16(),
                can_reuse_downstream: false,
            };
        }
        if c.status > 0 {
            match errors::error_response(c.status, &ctx.request_id) {
                Ok((resp, body)) => {
                    let sent = async {
                        session.write_response_header(Box::new(resp), false).await?;
                        session.write_response_body(Some(body), true).await
                    };
                    if let Err(we) = sent.await {
                        tracing::debug!(error = %we, "could not send the error response; client gone");
                    }
                }
                Err(be) => tracing::error!(error = %be, "could not build an error response"),
            }
        }
        FailToProxy {
            error_code: c.status,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, _error: &Error) -> bool {
        // Failures are logged once, in the access log line, with their classification.
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if let Some(real) = ctx.parked.take() {
            // Back before Pingora decides whether the client connection is reused.
            session.downstream_session = real;
        }
        if let Some(c) = &ctx.compressor {
            let m = &self.metrics.compression;
            m.bytes_in.with_label_values(&[c.coding]).inc_by(c.bytes_in);
            m.bytes_out
                .with_label_values(&[c.coding])
                .inc_by(c.bytes_out);
        }
        access::record(self, session, e, ctx);
        ctx.in_flight = None;
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        ctx: &Ctx,
    ) -> Option<Box<dyn Any + Send + Sync>> {
        ctx.connection
            .clone()
            .map(|c| Box::new(c) as Box<dyn Any + Send + Sync>)
    }
}
