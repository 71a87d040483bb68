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
pub mod spool;
pub mod stream;

use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use body::{ChunkScanner, Framing};
use spool::{Spool, TempFile};
use stream::ClientStream;

use crate::config::{Errors, KeyPath};
use crate::metrics::EdgeMetrics;

/// `[upstream] request_buffering`, `request_buffer_memory`, `stream_uploads`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestBuffering {
    /// Read the whole body before connecting upstream. Default true (nginx
    /// `proxy_request_buffering on`).
    pub enabled: bool,
    /// Bytes of a body kept in memory; the rest goes to a temp file. Default 64KiB (nginx
    /// `client_body_buffer_size`).
    pub memory: usize,
    /// Path prefixes whose request bodies stream to the upstream as they arrive (uploads
    /// the app reads progressively). Default none (nginx `proxy_request_buffering off` in
    /// those locations).
    pub stream_uploads: Vec<String>,
}

/// `[upstream] response_buffering`, `response_buffer_memory`, `response_buffer_max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseBuffering {
    /// Read the response as fast as the upstream sends it. Default true (nginx
    /// `proxy_buffering on`).
    pub enabled: bool,
    /// Bytes per response kept in memory while the client is slower than the upstream.
    /// Default 256KiB (nginx `proxy_buffers`).
    pub memory: usize,
    /// Bytes per response held (memory and temp file); beyond, the rest streams at the
    /// client's pace. Default 1GiB (nginx `proxy_max_temp_file_size`).
    pub max: u64,
}

/// Where bodies go and how large a request body may be (`[server]` keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    /// Directory of the temp files. Default the system temp dir (nginx
    /// `client_body_temp_path` / `proxy_temp_path`).
    pub temp_dir: PathBuf,
    /// Largest request body; 0 is unlimited. Default 100MiB (nginx
    /// `client_max_body_size`).
    pub max_body_size: u64,
}

pub const DEFAULT_MAX_BODY_SIZE: u64 = 100 << 20;

#[derive(Default)]
pub(crate) struct RawBuffering {
    pub request_buffering: Option<bool>,
    pub request_buffer_memory: Option<String>,
    pub stream_uploads: Option<Vec<String>>,
    pub response_buffering: Option<bool>,
    pub response_buffer_memory: Option<String>,
    pub response_buffer_max: Option<String>,
}

fn size(raw: Option<String>, default: u64, path: &KeyPath, key: &str, errs: &mut Errors) -> u64 {
    match raw.as_deref().map(crate::ws::config::parse_size) {
        None => default,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            errs.add(&path.key(key), e);
            default
        }
    }
}

impl RawBuffering {
    pub(crate) fn validate(
        self,
        path: &KeyPath,
        errs: &mut Errors,
    ) -> (RequestBuffering, ResponseBuffering) {
        let req_mem = size(
            self.request_buffer_memory,
            64 << 10,
            path,
            "request_buffer_memory",
            errs,
        );
        let resp_mem = size(
            self.response_buffer_memory,
            256 << 10,
            path,
            "response_buffer_memory",
            errs,
        );
        let resp_max = size(
            self.response_buffer_max,
            1 << 30,
            path,
            "response_buffer_max",
            errs,
        );
        if resp_max < resp_mem {
            errs.add(
                &path.key("response_buffer_max"),
                format!("must be at least response_buffer_memory ({resp_mem} bytes)"),
            );
        }
        let cap = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let stream_uploads = self.stream_uploads.unwrap_or_default();
        for (i, p) in stream_uploads.iter().enumerate() {
            if !p.starts_with('/') {
                errs.add(
                    &path.key("stream_uploads").index(i),
                    format!("`{p}` must be a path prefix starting with /"),
                );
            }
        }
        (
            RequestBuffering {
                enabled: self.request_buffering.unwrap_or(true),
                memory: cap(req_mem),
                stream_uploads,
            },
            ResponseBuffering {
                enabled: self.response_buffering.unwrap_or(true),
                memory: cap(resp_mem),
                max: resp_max,
            },
        )
    }
}

impl BodyLimits {
    pub(crate) fn validate(
        temp_dir: Option<String>,
        max_body_size: Option<String>,
        path: &KeyPath,
        errs: &mut Errors,
    ) -> BodyLimits {
        let temp_dir = temp_dir
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        if !temp_dir.is_dir() {
            errs.add(
                &path.key("temp_dir"),
                format!("{} is not a directory", temp_dir.display()),
            );
        }
        BodyLimits {
            temp_dir,
            max_body_size: size(
                max_body_size,
                DEFAULT_MAX_BODY_SIZE,
                path,
                "max_body_size",
                errs,
            ),
        }
    }
}

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
    let buffer = cfg.enabled
        && !cfg
            .stream_uploads
            .iter()
            .any(|p| path.starts_with(p.as_str()));
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
    fn buffering_keys_validate_with_their_names() {
        let mut errs = Errors::new("");
        let (rq, rs) = RawBuffering {
            request_buffer_memory: Some("8KiB".into()),
            response_buffer_memory: Some("2MiB".into()),
            response_buffer_max: Some("1MiB".into()),
            response_buffering: Some(false),
            ..RawBuffering::default()
        }
        .validate(&KeyPath::root().key("upstream"), &mut errs);
        assert!(rq.enabled && !rs.enabled);
        assert_eq!(rq.memory, 8 << 10);
        let all: Vec<String> = errs
            .into_errors("t")
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(all[0].contains("upstream.response_buffer_max"), "{all:?}");
        let mut errs = Errors::new("");
        let b = BodyLimits::validate(
            Some("/nonexistent-dir".into()),
            Some("lots".into()),
            &KeyPath::root().key("server"),
            &mut errs,
        );
        assert_eq!(b.max_body_size, DEFAULT_MAX_BODY_SIZE);
        assert_eq!(errs.into_errors("t").errors.len(), 2);
    }

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
