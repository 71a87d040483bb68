//! Request and response buffering, so that a slow client never holds a WSGI worker
//! (what nginx's `proxy_request_buffering` and `proxy_buffering` do in front of gunicorn).
//!
//! - Requests: [`read_request_body`] reads the whole body off the client before Pingora
//!   sees the request, into memory up to `request_buffer_memory` and a temp file beyond,
//!   up to `[server] max_body_size` (413 beyond, before the rest is read); the head and
//!   body are then replayed to Pingora from the [`stream::ClientStream`] at local speed.
//! - Responses: the same stream takes what the client's socket does not into memory
//!   (`response_buffer_memory`) and a temp file (up to `response_buffer_max`), so Pingora
//!   reads the upstream as fast as it answers. `X-Accel-Buffering: no` and
//!   `text/event-stream` responses stream unbuffered ([`response_filter`]).

pub mod body;
mod config;
pub mod spool;
pub mod stream;

use std::time::Duration;

use bytes::BytesMut;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use body::{ChunkScanner, Framing};
use spool::{Spool, TempFile};
use stream::ClientStream;

pub(crate) use config::RawBuffering;
pub use config::{BodyLimits, RequestBuffering, ResponseBuffering, DEFAULT_MAX_BODY_SIZE};

use crate::metrics::EdgeMetrics;

/// Why a buffered request body was not read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than max_body_size ({0} bytes)")]
    TooLarge(u64),
    #[error("no request body bytes for {0:?}")]
    Timeout(Duration),
    #[error("bad chunked framing")]
    BadChunk,
    #[error("client closed the connection mid-body")]
    Closed,
    #[error("cannot write the request body to a temp file: {0}")]
    TempFile(#[source] std::io::Error),
}

impl BodyError {
    /// The status to answer with, or `None` to close without an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            BodyError::TooLarge(_) => Some(413),
            BodyError::Timeout(_) => Some(408),
            BodyError::BadChunk => Some(400),
            BodyError::Closed => None,
            BodyError::TempFile(_) => Some(500),
        }
    }
}

/// What to do with the body of a request whose head is complete.
pub struct BodyPlan {
    pub framing: Framing,
    /// Read the body before Pingora sees the request (else it streams).
    pub buffer: bool,
    /// `Expect: 100-continue` was sent (channelgate answers it when it buffers).
    pub expect_continue: bool,
}

/// How a head's body is framed and whether it is buffered, or `None` when the request is
/// left to Pingora as is.
pub fn plan(head: &[u8], cfg: &RequestBuffering) -> Option<BodyPlan> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let framing = body::framing(&req)?;
    let expect_continue = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("expect") && h.value.eq_ignore_ascii_case(b"100-continue")
    });
    let path = req.path.unwrap_or("/");
    let buffer = cfg.applies_to(path);
    Some(BodyPlan {
        framing,
        buffer,
        expect_continue,
    })
}

/// The head without its `Expect` lines (channelgate already answered 100 Continue).
pub fn without_expect(head: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(head.len());
    for line in head.split_inclusive(|b| *b == b'\n') {
        let is_expect = line.len() > 7 && line[..7].eq_ignore_ascii_case(b"expect:");
        if !is_expect {
            out.extend_from_slice(line);
        }
    }
    out
}

/// Reads the rest of a body framed by `framing` from `stream`, after `rest` (bytes already
/// read past the head), into `spool`. Returns the bytes read past the body's end.
pub async fn read_request_body(
    stream: &mut ClientStream,
    framing: Framing,
    mut rest: BytesMut,
    spool: &mut Spool,
    settings: (&RequestBuffering, &BodyLimits, Duration),
    metrics: &EdgeMetrics,
) -> Result<BytesMut, BodyError> {
    let (cfg, limits, body_timeout) = settings;
    let max = match limits.max_body_size {
        0 => u64::MAX,
        n => n,
    };
    let memory = spool.len() as usize + cfg.memory;
    let push = |spool: &mut Spool, data: &[u8]| {
        spool
            .push(data, memory, || {
                metrics
                    .buffered
                    .with_label_values(&["request", "file"])
                    .inc();
                TempFile::create(&limits.temp_dir, "request", &metrics.buffer_files)
            })
            .map_err(BodyError::TempFile)
    };
    let mut scanner = ChunkScanner::default();
    let mut left = match framing {
        Framing::None => return Ok(rest),
        Framing::Length(n) if n > max => return Err(BodyError::TooLarge(max)),
        Framing::Length(n) => n,
        Framing::Chunked => u64::MAX,
    };
    let mut buf = BytesMut::new();
    loop {
        let data = if rest.is_empty() {
            buf.clear();
            buf.reserve(64 << 10);
            match tokio::time::timeout(body_timeout, stream.read_buf(&mut buf)).await {
                Err(_) => return Err(BodyError::Timeout(body_timeout)),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(BodyError::Closed),
                Ok(Ok(_)) => std::mem::take(&mut buf),
            }
        } else {
            std::mem::take(&mut rest)
        };
        let mut data = data;
        let end = match framing {
            Framing::Chunked => {
                let end = scanner.feed(&data).map_err(|_| BodyError::BadChunk)?;
                if scanner.body > max {
                    return Err(BodyError::TooLarge(max));
                }
                end
            }
            _ => ((data.len() as u64) >= left).then_some(left as usize),
        };
        if let Some(end) = end {
            let after = data.split_off(end);
            push(spool, &data)?;
            return Ok(after);
        }
        left -= data.len() as u64;
        push(spool, &data)?;
    }
}

/// Writes a small error response and closes the connection (lingering briefly so that the
/// client reads the answer rather than a reset).
pub async fn answer_and_close(stream: &mut ClientStream, status: u16, reason: &str) {
    let text = format!("{status} {reason}\n");
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let linger = async {
        stream.write_all(resp.as_bytes()).await?;
        stream.flush().await?;
        stream.drain().await?;
        let mut sink = vec![0u8; 16 << 10];
        let mut total = 0usize;
        // Read what the client still sends, for a moment, so that closing does not reset
        // the connection before the answer is read.
        while total < (1 << 20) {
            match stream.read(&mut sink).await? {
                0 => break,
                n => total += n,
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
    pingora::protocols::Shutdown::shutdown(stream).await;
}

/// `response_filter` hook: responses that must not be held (server-sent events, and
/// those the app marks `X-Accel-Buffering: no`) stream to the client as they come.
pub fn response_filter(session: &Session, resp: &mut ResponseHeader) {
    let unbuffered = resp
        .headers
        .get("x-accel-buffering")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no"))
        || resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
            });
    // Like nginx: the header is an instruction to the proxy, not for the client.
    resp.remove_header("x-accel-buffering");
    if unbuffered {
        unbuffered_from_now(session);
    }
}

/// What is written to this client from now on is not spooled: for event streams, and for
/// a connection that is upgraded (a WebSocket's own backpressure decides what to do with
/// a client that stops reading).
pub fn unbuffered_from_now(session: &Session) {
    if let Some(s) = session.downstream_session.stream().and_then(stream::of) {
        s.set_streaming();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_lines_are_removed() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nX: y\r\n\r\n";
        assert_eq!(
            &without_expect(head)[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n"
        );
    }

    #[test]
    fn plans_bodies() {
        let cfg = RequestBuffering {
            enabled: true,
            memory: 10,
            stream_uploads: vec!["/stream/".into()],
        };
        let p = plan(
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
            &cfg,
        )
        .unwrap();
        assert!(p.buffer);
        let s = plan(
            b"POST /stream/x HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            &cfg,
        )
        .unwrap();
        assert!(!s.buffer);
        assert_eq!(p.framing, Framing::Length(5));
        assert!(p.expect_continue);
        assert!(plan(b"garbage\r\n\r\n", &cfg).is_none());
    }
}
