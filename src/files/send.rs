//! Writing a file answer to the client: the header, then the body in fixed-size reads, each
//! written (and so waited on by a slow client) before the next is read, so memory stays at
//! one chunk whatever the file's size. Pingora writes through its own stream abstraction,
//! so there is no sendfile(2); a chunk costs one read and one write.

use std::io::SeekFrom;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pingora::prelude::*;
use pingora::proxy::Session;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Bytes read from disk per write to the client.
pub const CHUNK: usize = 64 * 1024;

/// Streams `len` bytes of `file` from `start`, at most `rate` bytes per second when given.
/// Returns the bytes written.
pub async fn body(
    session: &mut Session,
    file: std::fs::File,
    start: u64,
    len: u64,
    rate: Option<u64>,
) -> Result<u64> {
    let mut file = tokio::fs::File::from_std(file);
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .or_err(ErrorType::FileReadError, "seeking in a static file")?;
    }
    let began = Instant::now();
    let mut sent = 0u64;
    let mut buf = BytesMut::with_capacity(CHUNK);
    while sent < len {
        let want = (len - sent).min(CHUNK as u64) as usize;
        buf.reserve(want);
        // Read into spare capacity; `take` bounds the read to `want` bytes.
        let n = (&mut file)
            .take(want as u64)
            .read_buf(&mut buf)
            .await
            .or_err(ErrorType::FileReadError, "reading a static file")?;
        if n == 0 {
            // The file shrank under us: the client sees a cut body, as with nginx.
            return Error::e_explain(ErrorType::FileReadError, "static file ended early");
        }
        sent += n as u64;
        let chunk = buf.split().freeze();
        session
            .write_response_body(Some(chunk), sent >= len)
            .await?;
        if let Some(rate) = rate.filter(|r| *r > 0) {
            // Ahead of the allowed rate: wait until the bytes sent so far are due.
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(began.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    if len == 0 {
        session.write_response_body(None, true).await?;
    }
    Ok(sent)
}
