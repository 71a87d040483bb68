//! Taking a client connection away from Pingora after a `101 Switching Protocols`, so that
//! channelgate serves the upgraded protocol itself (the pass-through tunnel here, the
//! in-process WebSocket endpoint later). See shared/pingora.md for how this was verified.
//!
//! Pingora keeps calling `logging()` and `finish()` on the session after `request_filter`
//! returns, so a placeholder session takes the real one's place: it replays the request head
//! and holds the 101, which lets the access log see path, status and client address.

use std::io::Cursor;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use pingora::prelude::*;
use pingora::protocols::http::v1::server::HttpSession as H1Session;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use tokio::io::AsyncWriteExt;

/// A client connection that channelgate now owns.
pub struct Detached {
    /// The raw client socket, with the 101 already written and flushed.
    pub stream: Stream,
    /// Bytes the client sent after its request head, read by Pingora before the takeover.
    pub pre_read: Bytes,
}

/// Writes `resp` (a 101) to the client through Pingora, then detaches the connection.
/// Only HTTP/1.1 sessions can be taken over; the caller checks `is_upgrade_req()` first.
pub async fn detach(session: &mut Session, resp: ResponseHeader) -> Result<Detached> {
    session
        .write_response_header(Box::new(resp.clone()), false)
        .await?;
    let mut pre_read = BytesMut::new();
    // The 101 switched the body reader to "upgraded": it now yields the bytes read past
    // the head. Poll without waiting: with nothing buffered it would wait on the socket.
    while let Some(Ok(Some(b))) = session
        .downstream_session
        .read_request_body()
        .now_or_never()
    {
        pre_read.extend_from_slice(&b);
    }
    let placeholder = placeholder(session, &resp).await?;
    let real = std::mem::replace(&mut session.downstream_session, Box::new(placeholder));
    match *real {
        ServerSession::H1(h1) => {
            let mut stream = h1.into_inner();
            // The 101 may still sit in the stream's write buffer.
            stream
                .flush()
                .await
                .or_err(ErrorType::WriteError, "flushing the 101 to the client")?;
            Ok(Detached {
                stream,
                pre_read: pre_read.freeze(),
            })
        }
        other => {
            // Put it back so Pingora can finish it; the caller answers with an error.
            *session.downstream_session = other;
            Error::e_explain(
                ErrorType::InternalError,
                "only HTTP/1.1 connections can be upgraded",
            )
        }
    }
}

/// A session over an in-memory copy of the request head, with `resp` written to it.
async fn placeholder(session: &Session, resp: &ResponseHeader) -> Result<ServerSession> {
    let Some(real) = session.downstream_session.as_http1() else {
        return Error::e_explain(
            ErrorType::InternalError,
            "only HTTP/1.1 connections can be upgraded",
        );
    };
    let head = real.get_headers_raw_bytes();
    let mut h1 = H1Session::new(Box::new(Cursor::new(head.to_vec())));
    h1.read_request().await?;
    *h1.digest_mut() = real.digest().clone();
    h1.write_response_header(Box::new(resp.clone())).await?;
    Ok(ServerSession::H1(h1))
}

/// A session over an in-memory copy of `req`'s head, for Pingora to write to once the
/// answer has been written to the real client session by other means (the
/// `X-Accel-Redirect` file answer, [`crate::files::accel`]). Works whatever the client's
/// HTTP version: the head is written out as HTTP/1.1.
pub async fn stand_in(req: &RequestHeader) -> Result<ServerSession> {
    let mut head = BytesMut::with_capacity(256);
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    head.extend_from_slice(format!("{} {target} HTTP/1.1\r\n", req.method).as_bytes());
    // Without its body framing: the stand-in has no body to read.
    let framing = |n: &http::HeaderName| {
        n == http::header::CONTENT_LENGTH || n == http::header::TRANSFER_ENCODING
    };
    for (name, value) in req.headers.iter().filter(|(n, _)| !framing(n)) {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let mut h1 = H1Session::new(Box::new(Cursor::new(head.to_vec())));
    h1.read_request().await?;
    Ok(ServerSession::H1(h1))
}
