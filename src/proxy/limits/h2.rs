//! The `[server]` client limits on HTTP/2 connections (TLS + ALPN h2), which Pingora's
//! own HTTP/2 server reads: the [`edge::Edge`](super::edge::Edge) only admits and counts
//! them. What Pingora 0.9.1 allows, and what it does not:
//!
//! - `keepalive_timeout` → `HttpServerOptions::h2_idle_timeout`: a connection with no
//!   open stream for that long gets GOAWAY and is closed (nginx `keepalive_timeout`,
//!   which nginx also applies to idle HTTP/2 connections).
//! - `max_body_size` → a request whose `content-length` is over it gets 413 before any
//!   upstream is chosen (h2 itself refuses DATA beyond a declared length).
//! - Not applied, because Pingora 0.9.1 cannot: `body_timeout` (its
//!   `HttpSession::set_read_timeout` is a no-op for h2 and `read_body_bytes` has no
//!   timeout), `header_timeout` (the h2 accept loop hands over a stream only once its
//!   HEADERS arrived, with no per-stream timer), and request buffering: a body read in
//!   `request_filter` can only be replayed to the upstream through Pingora's retry
//!   buffer, which holds 64 KiB and is dropped when truncated (`proxy_h1.rs`
//!   `proxy_handle_downstream`: `get_retry_buffer()`), so larger bodies would be lost.

use pingora::apps::HttpServerOptions;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use crate::proxy::headers::TooLarge;

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
    use std::time::Duration;

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
