//! The `[server]` client limits on HTTP/2 connections (TLS + ALPN h2), which Pingora's
//! own HTTP/2 server reads: the [`edge::Edge`](super::edge::Edge) only admits and counts
//! them. What Pingora 0.9.1 allows, and what it does not:
//!
//! - `keepalive_timeout` → `HttpServerOptions::h2_idle_timeout`: a connection with no
//!   open stream for that long gets GOAWAY and is closed (nginx `keepalive_timeout`,
//!   which nginx also applies to idle HTTP/2 connections).
//!   Pingora drops the socket without a GOAWAY and counts nothing.
//! - `max_body_size` → a request whose `content-length` is over it gets 413 before any
//!   upstream is chosen (h2 itself refuses DATA beyond a declared length); one without
//!   gets 413 when the bytes passed on exceed it ([`count_body`]).
//! - `request_buffering` and `body_timeout`, for bodies of a declared length up to
//!   [`REPLAYABLE`]: [`read_small_body`] reads the whole body in `request_filter`, before
//!   the upstream is connected, each read under `body_timeout` (408), and Pingora
//!   replays it from its retry buffer at local speed.
//! - Not applied, because Pingora 0.9.1 cannot: buffering (and so `body_timeout`) for
//!   larger bodies or ones without `content-length`. A body read in `request_filter`
//!   reaches the upstream only through Pingora's retry buffer, which holds 64 KiB and is
//!   dropped when truncated (`proxy_h1.rs` `proxy_handle_downstream`:
//!   `get_retry_buffer()`), so a larger body would be lost; and once the upstream is
//!   connected (`request_body_filter`) the request head is already sent, the worker
//!   held. Reads Pingora does itself have no timeout on h2
//!   (`HttpSession::set_read_timeout` is a no-op there). `header_timeout`: the h2 accept
//!   loop hands over a stream only once its HEADERS arrived, with no per-stream timer.
//!   Responses are not buffered on h2 either (the edge's wrapper stream is h1-only).

use std::time::Duration;

use pingora::apps::HttpServerOptions;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use crate::metrics::Metrics;
use crate::proxy::buffer::RequestBuffering;
use crate::proxy::errors;
use crate::proxy::headers::TooLarge;

/// The largest body Pingora 0.9.1 can replay after `request_filter` read it: its retry
/// buffer (`BODY_BUF_LIMIT` in pingora-core's `v2/server.rs`).
pub const REPLAYABLE: u64 = 64 << 10;

/// What of `[server]` and `[upstream] request_buffering` the proxy applies to HTTP/2
/// requests itself.
#[derive(Clone, Debug)]
pub struct H2Limits {
    /// `[server] max_body_size`; 0 is unlimited.
    pub max_body_size: u64,
    /// `[server] body_timeout`.
    pub body_timeout: Duration,
    pub request: RequestBuffering,
}

use super::ClientLimits;

/// Pingora's server options for the proxy: the h2 idle timeout from `keepalive_timeout`
/// (0 turns keep-alive off; for h2 that means closing once no stream is open).
pub fn server_options(limits: &ClientLimits) -> HttpServerOptions {
    // `HttpServerOptions` is non-exhaustive: built from its default.
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(limits.keepalive_timeout);
    options
}

/// 413 for an HTTP/2 request whose declared body length is over `max_body_size`,
/// counted as `channelgate_http_refused_total{reason="body_too_large"}` as the edge counts
/// HTTP/1.1 ones (which it checks itself, reading their bodies). `max_body_size` 0 is
/// unlimited.
pub fn too_large(session: &Session, max_body_size: u64) -> Option<TooLarge> {
    // 0 is unlimited.
    if max_body_size == 0 || !session.as_downstream().is_http2() {
        return None;
    }
    let declared = declared_length(session.req_header())?;
    (declared > max_body_size).then_some(TooLarge {
        status: 413,
        reason: "body_too_large",
    })
}

/// Reads the whole body of an HTTP/2 request bound upstream when its declared length is
/// at most [`REPLAYABLE`] and request buffering applies to its path, each read under
/// `body_timeout`, so the upstream is connected only once the body is here (Pingora
/// replays it from the retry buffer). `Ok(true)` when the request was answered (408).
pub async fn read_small_body(
    session: &mut Session,
    limits: &H2Limits,
    metrics: &Metrics,
    request_id: &str,
) -> Result<bool> {
    if !session.as_downstream().is_http2() || !buffers(&limits.request, session.req_header()) {
        return Ok(false);
    }
    match declared_length(session.req_header()) {
        Some(n) if n > 0 && n <= REPLAYABLE => {}
        _ => return Ok(false),
    }
    if session.as_downstream_mut().is_body_done() {
        return Ok(false);
    }
    let downstream = session.as_downstream_mut();
    downstream.enable_retry_buffering();
    loop {
        let read = downstream.read_request_body();
        let read = if limits.body_timeout.is_zero() {
            Ok(read.await)
        } else {
            tokio::time::timeout(limits.body_timeout, read).await
        };
        match read {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return Ok(false),
            Ok(Err(e)) => {
                metrics.edge.aborted_uploads.inc();
                return Err(e);
            }
            Err(_) => break,
        }
    }
    metrics.edge.timeouts.with_label_values(&["body"]).inc();
    let (resp, body) = errors::error_response(408, request_id)?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

fn buffers(cfg: &RequestBuffering, req: &RequestHeader) -> bool {
    cfg.applies_to(req.uri.path())
}

/// Counts an HTTP/2 request body as Pingora passes it on (bodies without a declared
/// length, or ones too large to buffer): past `max_body_size` the request fails with 413
/// (`http_refused_total{reason="body_too_large"}`), or the stream is cut if the
/// upstream already answered.
pub fn count_body(
    session: &Session,
    data: Option<&bytes::Bytes>,
    seen: &mut u64,
    limits: &H2Limits,
    metrics: &Metrics,
) -> Result<()> {
    if limits.max_body_size == 0 || !session.as_downstream().is_http2() {
        return Ok(());
    }
    *seen += data.map_or(0, |d| d.len() as u64);
    if *seen <= limits.max_body_size {
        return Ok(());
    }
    metrics
        .http
        .refused
        .with_label_values(&["body_too_large"])
        .inc();
    Error::e_explain(
        ErrorType::HTTPStatus(413),
        "HTTP/2 request body over max_body_size",
    )
}

fn declared_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_h2_connections_close_after_keepalive_timeout() {
        let limits = ClientLimits {
            keepalive_timeout: Duration::from_secs(7),
            ..ClientLimits::default()
        };
        let o = server_options(&limits);
        assert_eq!(o.h2_idle_timeout, Some(Duration::from_secs(7)));
        assert!(!o.h2c);
    }

    #[test]
    fn declared_length_parses_one_decimal_value() {
        let mut req = RequestHeader::build("POST", b"/", None).unwrap();
        assert_eq!(declared_length(&req), None);
        req.insert_header("content-length", "2048").unwrap();
        assert_eq!(declared_length(&req), Some(2048));
        req.insert_header("content-length", "lots").unwrap();
        assert_eq!(declared_length(&req), None);
    }
}
