//! WebSocket pass-through: an upgrade that no route claims is relayed to an upstream server
//! byte for byte, so an app that runs its own WebSocket server behind channelgate keeps
//! working.
//!
//! Pingora 0.9 can proxy upgrades itself, but tears the tunnel down when a fast upstream's
//! 101 is read before the request's empty body end (pingora#946). So channelgate relays
//! the handshake itself and, on 101, takes the client socket over (see [`super::takeover`]).

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use pingora::lb::Backend;
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::proxy::Session;
use pingora::ErrorSource;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::{headers, takeover, Ctx, Proxy};

mod relay;

/// Largest upstream response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body of a refusal (a non-101 answer) relayed to the client.
const MAX_REFUSAL_BODY: usize = 1024 * 1024;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// `Upgrade: websocket` (the token may sit in a list, in any case).
pub fn is_websocket(req: &RequestHeader) -> bool {
    req.headers.get_all(http::header::UPGRADE).iter().any(|v| {
        v.to_str()
            .map(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
            })
            .unwrap_or(false)
    })
}

fn upstream_error(etype: ErrorType, context: String) -> Box<Error> {
    Error::create(etype, ErrorSource::Upstream, Some(context.into()), None)
}

/// Relays the upgrade to an upstream server; on 101, relays bytes both ways until both
/// sides close, the tunnel is idle for `[upstream] tunnel_idle_timeout`, or shutdown's
/// grace period is over ([`relay`]). Errors before the 101 become the usual 502/503/504 answers.
pub async fn pass_through(proxy: &Proxy, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
    let req = session.req_header();
    if req.headers.contains_key(http::header::CONTENT_LENGTH)
        || req.headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        return Error::e_explain(
            ErrorType::HTTPStatus(400),
            "an upgrade request may not carry a body",
        );
    }
    let mut head = req.clone();
    proxy.forwarding.apply(
        &mut head,
        Proxy::client_ip(session),
        &ctx.request_id,
        crate::tls::edge::is_tls(session),
    );
    let head = serialize_request(&head);
    let cfg = proxy.upstreams.config();
    let mut upstream = connect_with_retry(proxy, ctx).await?;
    timeout(
        cfg.write_timeout,
        upstream.write_all(&head),
        ErrorType::WriteTimedout,
        "sending the upgrade request",
    )
    .await?;
    let (resp, mut rest) = read_response_head(&mut upstream, cfg.read_timeout).await?;
    if resp.status.as_u16() != 101 {
        proxy
            .metrics
            .http
            .upgrades
            .with_label_values(&["refused"])
            .inc();
        return relay_refusal(session, ctx, resp, rest, &mut upstream, cfg.read_timeout).await;
    }
    let mut resp = resp;
    resp.insert_header(headers::REQUEST_ID, ctx.request_id.as_str())?;
    let mut client = takeover::detach(session, resp).await?;
    proxy
        .metrics
        .http
        .upgrades
        .with_label_values(&["upgraded"])
        .inc();
    let open = proxy.metrics.http.upgrades_open.clone();
    open.inc();
    let started = async {
        upstream.write_all(&client.pre_read).await?;
        client.stream.write_all(&rest.split().freeze()).await?;
        client.stream.flush().await
    };
    let ended = match timeout(
        cfg.write_timeout,
        started,
        ErrorType::WriteTimedout,
        "starting the tunnel",
    )
    .await
    {
        Ok(()) => {
            let cut = proxy.drain.cut_signal();
            relay::relay(
                &mut client.stream,
                &mut upstream,
                cfg.tunnel_idle_timeout,
                cut,
            )
            .await
        }
        Err(e) => {
            tracing::debug!(request_id = %ctx.request_id, error = %e, "upgraded connection ended before relaying");
            relay::Relayed {
                up: 0,
                down: 0,
                end: relay::End::Error,
            }
        }
    };
    open.dec();
    proxy
        .metrics
        .http
        .upgrades_ended
        .with_label_values(&[ended.end.label()])
        .inc();
    // One line per tunnel at most, and only at debug: a client decides how many there are.
    tracing::debug!(
        request_id = %ctx.request_id,
        bytes_up = ended.up,
        bytes_down = ended.down,
        reason = ended.end.label(),
        "upgraded connection ended"
    );
    Ok(())
}

async fn timeout<T, F>(limit: Duration, fut: F, etype: ErrorType, what: &str) -> Result<T>
where
    F: std::future::Future<Output = std::io::Result<T>>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(upstream_error(
            ErrorType::WriteError,
            format!("{what}: {e}"),
        )),
        Err(_) => Err(upstream_error(
            etype,
            format!("{what}: no progress in {limit:?}"),
        )),
    }
}

/// Connects to a healthy server; on a connect failure tries once more on another one
/// (an upgrade request is a GET, so it is idempotent).
async fn connect_with_retry(proxy: &Proxy, ctx: &mut Ctx) -> Result<Box<dyn Io>> {
    let cfg = proxy.upstreams.config();
    loop {
        let Some(backend) = proxy.upstreams.select(ctx.backend.as_ref()) else {
            if let (Some(c), true) = (ctx.failure, ctx.attempts > 0) {
                // Nothing else to try: report the connect failure itself.
                return Err(upstream_error(
                    connect_etype(c),
                    "connecting for an upgrade".into(),
                ));
            }
            return Error::e_explain(
                super::errors::NO_HEALTHY_UPSTREAM,
                "every upstream server is out of rotation",
            );
        };
        ctx.attempts += 1;
        ctx.backend = Some(backend.clone());
        match connect(&backend, cfg.connect_timeout).await {
            Ok(s) => return Ok(s),
            Err(e) => {
                proxy.upstream_failed(ctx, &e);
                if ctx.attempts > cfg.retries {
                    return Err(e);
                }
                proxy.metrics.upstream.retries.inc();
            }
        }
    }
}

fn connect_etype(c: super::errors::Classified) -> ErrorType {
    match c.upstream_kind {
        Some("connect_timeout") => ErrorType::ConnectTimedout,
        Some("connect_refused") => ErrorType::ConnectRefused,
        _ => ErrorType::ConnectError,
    }
}

async fn connect(backend: &Backend, limit: Duration) -> Result<Box<dyn Io>> {
    let attempt = async {
        Ok::<Box<dyn Io>, std::io::Error>(match &backend.addr {
            PingoraAddr::Inet(a) => {
                let s = TcpStream::connect(a).await?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            PingoraAddr::Unix(a) => {
                let path = a
                    .as_pathname()
                    .ok_or_else(|| std::io::Error::other("unnamed unix socket"))?;
                Box::new(UnixStream::connect(path).await?)
            }
        })
    };
    let what = format!("connecting to {}", crate::upstream::backend_name(backend));
    match tokio::time::timeout(limit, attempt).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            let etype = match e.kind() {
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => {
                    ErrorType::ConnectRefused
                }
                _ => ErrorType::ConnectError,
            };
            Err(upstream_error(etype, format!("{what}: {e}")))
        }
        Err(_) => Err(upstream_error(
            ErrorType::ConnectTimedout,
            format!("{what}: timed out"),
        )),
    }
}

fn serialize_request(req: &RequestHeader) -> Vec<u8> {
    let target = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers.iter() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Reads the upstream's response head; returns it and the bytes that followed it.
async fn read_response_head(
    upstream: &mut Box<dyn Io>,
    limit: Duration,
) -> Result<(ResponseHeader, BytesMut)> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let n = timeout(
            limit,
            upstream.read_buf(&mut buf),
            ErrorType::ReadTimedout,
            "waiting for the upgrade answer",
        )
        .await?;
        if n == 0 {
            return Err(upstream_error(
                ErrorType::ConnectionClosed,
                "upstream closed before answering the upgrade".into(),
            ));
        }
        let mut slots = [httparse::EMPTY_HEADER; 100];
        let mut parsed = httparse::Response::new(&mut slots);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let code = parsed.code.unwrap_or(502);
                let mut resp = ResponseHeader::build(code, Some(parsed.headers.len()))?;
                for h in parsed.headers.iter() {
                    resp.append_header(h.name.to_string(), h.value)?;
                }
                buf.advance(len);
                return Ok((resp, buf));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Err(upstream_error(
                    ErrorType::InvalidHTTPHeader,
                    "upgrade answer head too large".into(),
                ))
            }
            Err(e) => {
                return Err(upstream_error(
                    ErrorType::InvalidHTTPHeader,
                    format!("bad upgrade answer: {e}"),
                ))
            }
        }
    }
}

/// The upstream answered the upgrade with something else than 101 (a 403, a 404...):
/// relay that answer as an ordinary response.
async fn relay_refusal(
    session: &mut Session,
    ctx: &Ctx,
    mut resp: ResponseHeader,
    rest: BytesMut,
    upstream: &mut Box<dyn Io>,
    limit: Duration,
) -> Result<()> {
    let body = read_refusal_body(&resp, rest, upstream, limit).await?;
    resp.remove_header(&http::header::TRANSFER_ENCODING);
    resp.remove_header(&http::header::CONNECTION);
    resp.remove_header(&http::header::UPGRADE);
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(headers::REQUEST_ID, ctx.request_id.as_str())?;
    session
        .write_response_header(Box::new(resp), body.is_empty())
        .await?;
    if !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

async fn read_refusal_body(
    resp: &ResponseHeader,
    mut buf: BytesMut,
    upstream: &mut Box<dyn Io>,
    limit: Duration,
) -> Result<Bytes> {
    let status = resp.status.as_u16();
    if status < 200 || status == 204 || status == 304 {
        return Ok(Bytes::new());
    }
    let header = |name| {
        resp.headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
    };
    let chunked = header(http::header::TRANSFER_ENCODING)
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = header(http::header::CONTENT_LENGTH).and_then(|v| v.trim().parse::<usize>().ok());
    loop {
        if chunked {
            if let Some(body) =
                dechunk(&buf).map_err(|m| upstream_error(ErrorType::InvalidHTTPHeader, m.into()))?
            {
                return Ok(body.into());
            }
        } else if let Some(n) = length {
            if buf.len() >= n {
                buf.truncate(n);
                return Ok(buf.freeze());
            }
        }
        if buf.len() > MAX_REFUSAL_BODY {
            return Err(upstream_error(
                ErrorType::InvalidHTTPHeader,
                "refusal body too large".into(),
            ));
        }
        let n = timeout(
            limit,
            upstream.read_buf(&mut buf),
            ErrorType::ReadTimedout,
            "reading the refusal body",
        )
        .await?;
        if n == 0 {
            if chunked || length.is_some() {
                return Err(upstream_error(
                    ErrorType::ConnectionClosed,
                    "upstream closed mid-body".into(),
                ));
            }
            return Ok(buf.freeze());
        }
    }
}

/// Decodes a complete chunked body; Ok(None) when more bytes are needed.
fn dechunk(mut buf: &[u8]) -> std::result::Result<Option<Vec<u8>>, &'static str> {
    let mut body = Vec::new();
    loop {
        let (skip, size) = match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete(v)) => v,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err("bad chunk size"),
        };
        buf = &buf[skip..];
        if size == 0 {
            // Trailers (ignored) end with an empty line.
            return Ok(find_blank_line(buf).map(|_| body));
        }
        let size = usize::try_from(size).map_err(|_| "chunk too large")?;
        if buf.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

fn find_blank_line(buf: &[u8]) -> Option<usize> {
    if buf.starts_with(b"\r\n") {
        return Some(2);
    }
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_complete_bodies_only() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n0\r\n\r\n").unwrap(),
            Some(b"hello".to_vec())
        );
        assert_eq!(dechunk(b"5\r\nhel").unwrap(), None);
        assert_eq!(dechunk(b"5\r\nhello\r\n0\r\n").unwrap(), None);
        assert!(dechunk(b"zz\r\n").is_err());
    }

    #[test]
    fn recognises_websocket_upgrades() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("upgrade", "h2c, WebSocket").unwrap();
        assert!(is_websocket(&r));
        r.insert_header("upgrade", "h2c").unwrap();
        assert!(!is_websocket(&r));
    }
}
