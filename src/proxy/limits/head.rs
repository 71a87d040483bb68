//! Reading one request head off a client connection under the idle and head deadlines,
//! before Pingora sees it (Pingora's own timeout applies per read, so a head sent a byte
//! at a time is never closed).

use bytes::BytesMut;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;
use tokio::time::{timeout_at, Instant};

use super::ClientLimits;
use crate::proxy::buffer::stream::ClientStream;

/// How waiting for a request head ended.
#[derive(Debug)]
pub enum Head {
    /// `head` is the complete request head; `rest` what was read past it.
    Complete { head: BytesMut, rest: BytesMut },
    /// The client closed (or reset) the connection; `partial`: in the middle of a head.
    Closed { partial: bool },
    /// Nothing arrived within `keepalive_timeout` after the previous request.
    Idle,
    /// The head was not complete within `header_timeout`; `partial`: some of it came.
    Timeout { partial: bool },
    /// The head grew past the size limit without ending.
    TooLarge,
    /// The server is shutting down and the connection was idle.
    Shutdown,
}

/// Reads until the end of a request head. `carry` holds bytes already read (a pipelined
/// request); `first`: the connection's first request, whose head deadline runs from accept.
pub async fn read(
    stream: &mut ClientStream,
    carry: BytesMut,
    first: bool,
    limits: &ClientLimits,
    max_size: usize,
    shutdown: &ShutdownWatch,
) -> Head {
    let mut shutdown = shutdown.clone();
    let mut buf = carry;
    let now = Instant::now();
    let idle_deadline = now + limits.keepalive_timeout;
    let mut head_deadline = (first || !buf.is_empty()).then(|| now + limits.header_timeout);
    loop {
        skip_leading_newlines(&mut buf);
        if let Some(end) = find_end(&buf) {
            let rest = buf.split_off(end);
            return Head::Complete { head: buf, rest };
        }
        if buf.len() > max_size {
            return Head::TooLarge;
        }
        let deadline = head_deadline.unwrap_or(idle_deadline);
        let idle = buf.is_empty();
        if idle && *shutdown.borrow() {
            return Head::Shutdown;
        }
        buf.reserve(4096);
        let read = tokio::select! {
            r = timeout_at(deadline, stream.read_buf(&mut buf)) => r,
            _ = shutdown.changed(), if idle => return Head::Shutdown,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Head::Closed {
                    partial: !buf.is_empty(),
                }
            }
            Ok(Ok(_)) => {
                head_deadline.get_or_insert_with(|| Instant::now() + limits.header_timeout);
            }
            Err(_) if head_deadline.is_none() => return Head::Idle,
            Err(_) => {
                return Head::Timeout {
                    partial: !buf.is_empty(),
                }
            }
        }
    }
}

/// RFC 9112 2.2: a server should ignore empty lines received before the request line.
fn skip_leading_newlines(buf: &mut BytesMut) {
    let n = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if n > 0 {
        let _ = buf.split_to(n);
    }
}

/// The offset just past the empty line that ends a head (CRLF CRLF, or the bare LF LF
/// that httparse also accepts).
pub fn find_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|b| *b == b'\n') {
        let nl = i + p;
        let next = nl + 1;
        if buf.get(next) == Some(&b'\n') {
            return Some(next + 1);
        }
        if buf.get(next) == Some(&b'\r') && buf.get(next + 1) == Some(&b'\n') {
            return Some(next + 2);
        }
        i = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"), Some(27));
        assert_eq!(find_end(b"GET / HTTP/1.1\nHost: a\n\nbody"), Some(24));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(find_end(b""), None);
    }

    #[test]
    fn leading_empty_lines_are_dropped() {
        let mut b = BytesMut::from(&b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"[..]);
        skip_leading_newlines(&mut b);
        assert!(b.starts_with(b"GET"));
    }
}
