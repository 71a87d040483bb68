//! The one place where a failure to proxy becomes an HTTP status, a metric kind and a
//! short, plain body that reveals nothing of the upstream.

use bytes::Bytes;
use pingora::prelude::*;
use pingora::ErrorSource;

/// The error `upstream_peer` raises when every server is out of rotation.
pub const NO_HEALTHY_UPSTREAM: ErrorType = ErrorType::Custom("no healthy upstream");

/// What a failure means for the client and for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    /// The status to answer with; 0 when the client is gone and nothing can be sent.
    pub status: u16,
    /// The `kind` label of `channelgate_upstream_errors_total`, or None when the upstream
    /// is not at fault.
    pub upstream_kind: Option<&'static str>,
}

pub fn classify(e: &Error) -> Classified {
    use ErrorType::*;
    let up = |status, kind| Classified {
        status,
        upstream_kind: Some(kind),
    };
    let client = |status| Classified {
        status,
        upstream_kind: None,
    };
    if e.etype() == &NO_HEALTHY_UPSTREAM {
        return up(503, "no_healthy_upstream");
    }
    match (e.esource(), e.etype()) {
        (_, HTTPStatus(code)) => client(*code),
        (_, ConnectTimedout) => up(504, "connect_timeout"),
        (_, ConnectRefused) => up(502, "connect_refused"),
        (_, ConnectNoRoute | ConnectError | SocketError | BindError | ConnectProxyFailure) => {
            up(502, "connect_error")
        }
        (ErrorSource::Upstream, ReadTimedout) => up(504, "read_timeout"),
        (ErrorSource::Upstream, WriteTimedout) => up(504, "write_timeout"),
        (ErrorSource::Upstream, ConnectionClosed | ReadError | WriteError) => {
            up(502, "upstream_closed")
        }
        (ErrorSource::Upstream, _) => up(502, "bad_response"),
        (ErrorSource::Downstream, ReadTimedout) => client(408),
        (ErrorSource::Downstream, ConnectionClosed | ReadError | WriteError | WriteTimedout) => {
            client(0)
        }
        (ErrorSource::Downstream, _) => client(400),
        (ErrorSource::Internal | ErrorSource::Unset, _) => client(500),
    }
}

/// The small plain-text answer for `status`, tagged with the request id.
pub fn error_response(status: u16, request_id: &str) -> Result<(ResponseHeader, Bytes)> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = Bytes::from(format!("{status} {reason}\n"));
    let mut resp = ResponseHeader::build(status, Some(5))?;
    resp.insert_header("content-type", "text/plain; charset=utf-8")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header(super::headers::REQUEST_ID, request_id)?;
    Ok((resp, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(source: ErrorSource, etype: ErrorType) -> Box<Error> {
        Error::create(etype, source, None, None)
    }

    #[test]
    fn maps_failures_to_statuses() {
        use ErrorType::*;
        assert_eq!(
            classify(&err(ErrorSource::Upstream, ConnectRefused)).status,
            502
        );
        assert_eq!(
            classify(&err(ErrorSource::Upstream, ConnectTimedout)).status,
            504
        );
        assert_eq!(
            classify(&err(ErrorSource::Upstream, ReadTimedout)).upstream_kind,
            Some("read_timeout")
        );
        assert_eq!(
            classify(&err(ErrorSource::Internal, NO_HEALTHY_UPSTREAM)).status,
            503
        );
        assert_eq!(
            classify(&err(ErrorSource::Downstream, ConnectionClosed)).status,
            0
        );
        assert_eq!(
            classify(&err(ErrorSource::Downstream, InvalidHTTPHeader)).status,
            400
        );
    }

    #[test]
    fn body_is_short_and_plain() {
        let (resp, body) = error_response(502, "rid").unwrap();
        assert_eq!(&body[..], b"502 Bad Gateway\n");
        assert_eq!(resp.headers["x-request-id"], "rid");
    }
}
