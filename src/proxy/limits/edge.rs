//! The client listener's application: admits or refuses each connection, then serves its
//! HTTP/1 requests one by one: reads the head under the client timeouts, buffers the body
//! when asked, and hands the request to Pingora's proxy. HTTP/2 connections go to Pingora
//! directly (after admission).

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::head::{self, Head};
use super::{Admission, ClientLimits, RateLog, Refusal};
use crate::metrics::{EdgeMetrics, Metrics};
use crate::proxy::buffer::spool::Spool;
use crate::proxy::buffer::stream::{ClientStream, SpoolSettings};
use crate::proxy::buffer::{self, BodyLimits, RequestBuffering};
use crate::proxy::Proxy;

pub struct Edge {
    pub proxy: Arc<HttpProxy<Proxy>>,
    pub limits: ClientLimits,
    pub request: RequestBuffering,
    pub body: BodyLimits,
    /// Heads larger than this are refused with 431 before they end.
    pub max_head: usize,
    pub spool: Arc<SpoolSettings>,
    pub admission: Arc<Admission>,
    pub metrics: Arc<Metrics>,
    pub logs: EdgeLogs,
}

/// One rate-limited log line per event kind.
#[derive(Default)]
pub struct EdgeLogs {
    refused: RateLog,
    header_timeout: RateLog,
    body_timeout: RateLog,
    too_large: RateLog,
    temp_file: RateLog,
}

impl Edge {
    fn em(&self) -> &EdgeMetrics {
        &self.metrics.edge
    }

    async fn refuse(&self, mut stream: Stream, why: Refusal) {
        self.em()
            .connections_refused
            .with_label_values(&[why.reason()])
            .inc();
        if let Some(missed) = self.logs.refused.ready() {
            tracing::warn!(
                reason = why.reason(),
                open = self.admission.open(),
                not_logged = missed,
                "connection refused: over the connection limit (logged at most once a minute)"
            );
        }
        // Read the head for a moment so the answer is not lost to a reset, and so that a
        // refused WebSocket is counted as one.
        let answer = async {
            let mut buf = vec![0u8; 4096];
            let n = stream.read(&mut buf).await?;
            let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
            if text.contains("upgrade: websocket") {
                self.metrics
                    .ws
                    .connects
                    .with_label_values(&["overloaded"])
                    .inc();
            }
            let body = "503 Service Unavailable: too many connections\n";
            let resp = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(resp.as_bytes()).await?;
            stream.flush().await
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), answer).await;
        let _ = stream.shutdown().await;
    }

    fn timeout(&self, kind: &str) {
        self.em().timeouts.with_label_values(&[kind]).inc();
    }

    /// Serves the HTTP/1 requests of one connection until it closes.
    async fn serve_h1(self: &Arc<Self>, mut stream: Box<ClientStream>, shutdown: &ShutdownWatch) {
        let mut carry = BytesMut::new();
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            // The previous response may still sit in the spool: the client gets all of it
            // before its next request is read.
            if stream.drain().await.is_err() {
                return;
            }
            let head = head::read(
                &mut stream,
                std::mem::take(&mut carry),
                first,
                &self.limits,
                self.max_head,
                shutdown,
            )
            .await;
            let (head, rest) = match head {
                Head::Complete { head, rest } => (head, rest),
                Head::Closed { partial } => {
                    if partial {
                        // Counted as Pingora's own head reader counted it before.
                        self.refused_request("incomplete_head");
                    }
                    return;
                }
                Head::Shutdown => return,
                Head::Idle => return self.timeout("keepalive"),
                Head::Timeout { partial } => {
                    self.timeout("header");
                    if partial {
                        if let Some(missed) = self.logs.header_timeout.ready() {
                            tracing::info!(timeout = ?self.limits.header_timeout, not_logged = missed,
                                "request head incomplete at header_timeout; 408 and close (logged at most once a minute)");
                        }
                        self.refused_request("header_timeout");
                        buffer::answer_and_close(&mut stream, 408, "Request Timeout").await;
                    }
                    return;
                }
                Head::TooLarge => {
                    self.refused_request("headers_too_large");
                    buffer::answer_and_close(&mut stream, 431, "Request Header Fields Too Large")
                        .await;
                    return;
                }
            };
            first = false;
            let Some(replay) = self
                .request_bytes(&mut stream, head, rest, &mut carry)
                .await
            else {
                return;
            };
            stream.begin_request(replay);
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(s) => s.apply_to_session(&mut session),
                None => {
                    session.set_keepalive_reuses_remaining(Some(
                        self.limits.keepalive_requests.saturating_sub(1),
                    ));
                }
            }
            // Pingora counts keep-alive in whole seconds and only decides reuse with it:
            // the idle wait itself is timed in `head::read`.
            let keepalive = &self.limits.keepalive_timeout;
            let closing = *shutdown.borrow();
            session.set_keepalive(
                (!keepalive.is_zero() && !closing).then(|| keepalive.as_secs().max(1)),
            );
            session.set_read_timeout(Some(self.limits.body_timeout));
            let Some(reused) = self.proxy.process_new_http(session, shutdown).await else {
                return;
            };
            let (s, next) = reused.consume();
            settings = next;
            match s.into_any().downcast::<ClientStream>() {
                Ok(s) => stream = s,
                Err(_) => return,
            }
        }
    }

    fn refused_request(&self, reason: &str) {
        self.metrics.http.refused.with_label_values(&[reason]).inc();
    }

    /// The bytes Pingora reads for this request: the head and, when buffered, the whole
    /// body. `None` when the request was answered here (413, 408, 400) or the client left.
    async fn request_bytes(
        &self,
        stream: &mut ClientStream,
        head: BytesMut,
        rest: BytesMut,
        carry: &mut BytesMut,
    ) -> Option<Spool> {
        let mut replay = Spool::new();
        let plan = buffer::plan(&head, &self.request);
        let framing = plan.as_ref().map(|p| p.framing);
        let body = match framing {
            Some(buffer::body::Framing::None) | None => {
                // No body to buffer: Pingora reads the rest (a body it streams, or the
                // next pipelined request) after the head.
                push_mem(&mut replay, &head);
                push_mem(&mut replay, &rest);
                return Some(replay);
            }
            Some(f) => f,
        };
        let max = self.body.max_body_size;
        if let buffer::body::Framing::Length(n) = body {
            if max > 0 && n > max {
                self.too_large(n);
                buffer::answer_and_close(stream, 413, "Content Too Large").await;
                return None;
            }
        }
        if !plan.as_ref().is_some_and(|p| p.buffer) {
            push_mem(&mut replay, &head);
            push_mem(&mut replay, &rest);
            return Some(replay);
        }
        let expect = plan.is_some_and(|p| p.expect_continue);
        if expect {
            push_mem(&mut replay, &buffer::without_expect(&head));
            let sent = async {
                stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                stream.flush().await
            };
            if sent.await.is_err() {
                return None;
            }
        } else {
            push_mem(&mut replay, &head);
        }
        let read = buffer::read_request_body(
            stream,
            body,
            rest,
            &mut replay,
            (&self.request, &self.body, self.limits.body_timeout),
            self.em(),
        )
        .await;
        match read {
            Ok(after) => {
                let to = if replay.on_disk() { "file" } else { "memory" };
                if to == "memory" {
                    self.em().buffered.with_label_values(&["request", to]).inc();
                }
                *carry = after;
                Some(replay)
            }
            Err(e) => {
                // The spool (and its temp file) goes before the answer.
                drop(replay);
                self.body_failed(stream, e).await;
                None
            }
        }
    }

    /// Counts and logs a body that could not be buffered, and answers when there is
    /// someone to answer.
    async fn body_failed(&self, stream: &mut ClientStream, e: buffer::BodyError) {
        use buffer::BodyError;
        match &e {
            BodyError::TooLarge(_) => self.too_large(0),
            BodyError::Timeout(_) => {
                self.timeout("body");
                self.refused_request("body_timeout");
                if let Some(missed) = self.logs.body_timeout.ready() {
                    tracing::info!(timeout = ?self.limits.body_timeout, not_logged = missed,
                        "request body stalled past body_timeout; 408 and close (logged at most once a minute)");
                }
            }
            BodyError::BadChunk => self.refused_request("bad_chunked_body"),
            BodyError::TempFile(err) => {
                self.em().temp_file_errors.inc();
                if let Some(missed) = self.logs.temp_file.ready() {
                    tracing::error!(error = %err, dir = %self.body.temp_dir.display(), not_logged = missed,
                        "cannot write a request body to [server] temp_dir; answering 500");
                }
            }
            BodyError::Closed => self.em().aborted_uploads.inc(),
        }
        if let Some(status) = e.status() {
            let reason = match status {
                413 => "Content Too Large",
                408 => "Request Timeout",
                400 => "Bad Request",
                _ => "Internal Server Error",
            };
            buffer::answer_and_close(stream, status, reason).await;
        }
    }

    fn too_large(&self, declared: u64) {
        self.refused_request("body_too_large");
        if let Some(missed) = self.logs.too_large.ready() {
            tracing::info!(
                max_body_size = self.body.max_body_size,
                declared,
                not_logged = missed,
                "request body over max_body_size; 413 (logged at most once a minute)"
            );
        }
    }
}

fn push_mem(spool: &mut Spool, data: &[u8]) {
    // Memory pushes with an unbounded memory share never make a file, so never fail.
    let _ = spool.push(data, usize::MAX, || {
        Err(std::io::ErrorKind::Unsupported.into())
    });
}

fn peer_ip(stream: &Stream) -> Option<IpAddr> {
    stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().cloned())
        .and_then(|a| a.as_inet().map(|a| a.ip()))
}

/// TCP_NODELAY on a plain client socket (TLS sockets get it before their handshake,
/// [`crate::tls::listener::NoDelay`]), as nginx's `tcp_nodelay on` (its default): without
/// it, Nagle's algorithm holds a small write (a WebSocket frame, the end of a response)
/// until the client acknowledges the previous one, which a delayed ACK puts off by up to
/// 40 ms. Pingora sets it on upstream connections only.
fn nodelay(stream: Stream) -> Stream {
    if !stream.as_any().is::<L4Stream>() {
        return stream;
    }
    match stream.into_any().downcast::<L4Stream>() {
        Ok(mut l4) => {
            // Best effort: a socket that refuses it (a Unix socket) still works.
            let _ = l4.set_nodelay();
            l4
        }
        Err(_) => unreachable!("`is::<L4Stream>` was just checked"),
    }
}

#[async_trait]
impl ServerApp for Edge {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stream = nodelay(stream);
        let permit = match self.admission.admit(peer_ip(&stream)) {
            Ok(p) => p,
            Err(why) => {
                self.refuse(stream, why).await;
                return None;
            }
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // Pingora's h2 server reads these itself: what of the limits applies there is
            // in `super::h2` (idle timeout, max_body_size, small-body buffering).
            let _permit = permit;
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let stream = Box::new(ClientStream::new(stream, Some(permit), self.spool.clone()));
        self.serve_h1(stream, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
