//! The client connection as Pingora sees it: reads first replay what channelgate already
//! read (the request head and a buffered body), writes go straight to the socket while it
//! takes them and into a spool (memory, then a temp file) when it does not, so the
//! upstream's response is read as fast as the upstream sends it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, Bytes};
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest, TimingDigest,
};
use pingora::protocols::{Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType, ALPN};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::spool::{Spool, TempFile};
use super::ResponseBuffering;
use crate::metrics::EdgeMetrics;
use crate::proxy::limits::Permit;

/// Largest piece read back from a spool file at once.
const CHUNK: usize = 64 << 10;

/// What response spooling needs: its limits, where files go, what to count.
#[derive(Clone)]
pub struct SpoolSettings {
    pub response: ResponseBuffering,
    pub temp_dir: std::path::PathBuf,
    pub send_timeout: Duration,
    pub metrics: EdgeMetrics,
}

pub struct ClientStream {
    inner: Stream,
    _permit: Option<Permit>,
    /// Read before the socket: the request head and a buffered body.
    replay: Spool,
    out: Spool,
    /// The front of `out`, taken from it and partly written.
    pending: Bytes,
    /// The current response must reach the client unbuffered (set by `response_filter`).
    streaming: AtomicBool,
    /// Already counted as buffered in memory / to a file, for the current response.
    counted: (bool, bool),
    /// No progress writing to the client since this started: `send_timeout`.
    stalled: Option<Pin<Box<Sleep>>>,
    settings: Arc<SpoolSettings>,
}

impl fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStream")
            .field("inner", &self.inner)
            .field("spooled", &self.spooled())
            .finish()
    }
}

impl ClientStream {
    pub fn new(inner: Stream, permit: Option<Permit>, settings: Arc<SpoolSettings>) -> Self {
        ClientStream {
            inner,
            _permit: permit,
            replay: Spool::new(),
            out: Spool::new(),
            pending: Bytes::new(),
            streaming: AtomicBool::new(false),
            counted: (false, false),
            stalled: None,
            settings,
        }
    }

    /// Sets what the next reads return before the socket, and resets per-request state.
    pub fn begin_request(&mut self, replay: Spool) {
        self.replay = replay;
        self.streaming.store(false, Ordering::Release);
        self.counted = (false, false);
    }

    /// The response now being written goes to the client unbuffered.
    pub fn set_streaming(&self) {
        self.streaming.store(true, Ordering::Release);
    }

    /// Replaces the socket under this layer (for a WebSocket taken over in-process, after
    /// its 101 is flushed: see [`crate::proxy::unbuffered`]). The spool is empty then.
    pub fn map_inner(&mut self, f: impl FnOnce(Stream) -> Stream) {
        let inner = std::mem::replace(
            &mut self.inner,
            Box::new(std::io::Cursor::new(Vec::<u8>::new())),
        );
        self.inner = f(inner);
        self.set_streaming();
    }

    fn may_spool(&self) -> bool {
        self.settings.response.enabled && !self.streaming.load(Ordering::Acquire)
    }

    /// Bytes accepted from the writer and not yet sent to the client.
    pub fn spooled(&self) -> u64 {
        self.pending.len() as u64 + self.out.len()
    }

    /// Writes spooled bytes to the client until none are left (Ready) or it stops taking
    /// them (Pending). No progress for `send_timeout` is an error.
    pub fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut progressed = false;
        let result = loop {
            if self.pending.is_empty() {
                match self.out.next_chunk(CHUNK) {
                    Ok(c) if c.is_empty() => break Poll::Ready(Ok(())),
                    Ok(c) => self.pending = c,
                    Err(e) => break Poll::Ready(Err(e)),
                }
            }
            match Pin::new(&mut self.inner).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    progressed = true;
                    self.pending.advance(n);
                }
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        if progressed || result.is_ready() {
            self.stalled = None;
            return result;
        }
        let timeout = self.settings.send_timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            self.settings
                .metrics
                .timeouts
                .with_label_values(&["send"])
                .inc();
            self.out = Spool::new();
            self.pending = Bytes::new();
            return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
        }
        Poll::Pending
    }

    fn spool(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let s = self.settings.clone();
        let memory = s.response.memory;
        let was_on_disk = self.out.on_disk();
        self.out.push(buf, memory, || {
            TempFile::create(&s.temp_dir, "response", &s.metrics.buffer_files)
        })?;
        let to = if self.out.on_disk() { "file" } else { "memory" };
        let counted = if self.out.on_disk() {
            &mut self.counted.1
        } else {
            &mut self.counted.0
        };
        if !*counted && !(was_on_disk && to == "memory") {
            *counted = true;
            s.metrics
                .buffered
                .with_label_values(&["response", to])
                .inc();
        }
        Ok(())
    }

    pub async fn drain(&mut self) -> std::io::Result<()> {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.replay.is_empty() && buf.remaining() > 0 {
            let chunk = self.replay.next_chunk(buf.remaining())?;
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.spooled() > 0 {
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        if this.spooled() == 0 {
            match Pin::new(&mut this.inner).poll_write(cx, buf) {
                Poll::Ready(r) => return Poll::Ready(r),
                Poll::Pending if !this.may_spool() => return Poll::Pending,
                Poll::Pending => {}
            }
        } else if !this.may_spool() {
            return Poll::Pending;
        }
        // The socket is full: keep the bytes, up to `response_buffer_max`; beyond it the
        // writer waits for the client (the rest streams).
        if this.spooled() + buf.len() as u64 > this.settings.response.max {
            return Poll::Pending;
        }
        match this.spool(buf) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(e) => {
                tracing::warn!(error = %e, "cannot buffer a response; streaming it instead");
                this.set_streaming();
                Poll::Pending
            }
        }
    }

    /// Vectored when nothing is spooled and nothing may be (a WebSocket's frames, a
    /// streamed response): straight to the socket, several buffers in one call.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.spooled() == 0 && !this.may_spool() {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.spooled() > 0 {
            match this.poll_drain(cx) {
                Poll::Ready(r) => r?,
                // Spooled bytes count as written: the connection's loop drains them
                // before the next request, and shutdown waits for them.
                Poll::Pending if this.may_spool() => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for ClientStream {
    async fn shutdown(&mut self) {
        if let Err(e) = self.drain().await {
            tracing::debug!(error = %e, "client gone before its response was sent");
        }
        self.inner.shutdown().await
    }
}

impl UniqueID for ClientStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ClientStream {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for ClientStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for ClientStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for ClientStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for ClientStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        if !self.replay.is_empty() {
            return Ok(false);
        }
        self.inner.try_peek(buf).await
    }
}

/// The `ClientStream` under a Pingora stream, if it is one.
pub fn of(stream: &Stream) -> Option<&ClientStream> {
    stream.as_any().downcast_ref::<ClientStream>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn settings(dir: &std::path::Path, enabled: bool) -> Arc<SpoolSettings> {
        Arc::new(SpoolSettings {
            response: ResponseBuffering {
                enabled,
                memory: 16 << 10,
                max: 1 << 20,
            },
            temp_dir: dir.to_path_buf(),
            send_timeout: Duration::from_secs(30),
            metrics: crate::metrics::Metrics::new().edge,
        })
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    /// A reader that does not read: the writer still finishes (memory, then a file),
    /// and the client later gets every byte in order.
    #[tokio::test]
    async fn a_slow_reader_does_not_hold_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, mut peer) = tokio::io::duplex(4096);
        let mut s = ClientStream::new(Box::new(ours), None, settings(dir.path(), true));
        let data = pattern(200 << 10);
        tokio::time::timeout(Duration::from_secs(10), async {
            s.write_all(&data).await.unwrap();
            s.flush().await.unwrap();
        })
        .await
        .expect("the writer was held by the reader");
        assert!(s.spooled() > 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 200 << 10];
            peer.read_exact(&mut got).await.unwrap();
            got
        });
        s.drain().await.unwrap();
        assert_eq!(reader.await.unwrap(), data);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Streaming (or buffering off): the writer waits for the reader.
    #[tokio::test]
    async fn a_streamed_response_waits_for_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, _peer) = tokio::io::duplex(4096);
        let mut s = ClientStream::new(Box::new(ours), None, settings(dir.path(), true));
        s.set_streaming();
        let data = pattern(64 << 10);
        let r = tokio::time::timeout(Duration::from_millis(200), s.write_all(&data)).await;
        assert!(r.is_err(), "a streamed write completed without a reader");
        assert_eq!(s.spooled(), 0);
    }

    /// Replayed bytes come before the socket's.
    #[tokio::test]
    async fn replay_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, mut peer) = tokio::io::duplex(4096);
        let mut s = ClientStream::new(Box::new(ours), None, settings(dir.path(), false));
        let mut replay = Spool::new();
        replay
            .push(b"head;", usize::MAX, || unreachable!())
            .unwrap();
        s.begin_request(replay);
        peer.write_all(b"socket").await.unwrap();
        let mut got = vec![0u8; 11];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"head;socket");
    }
}
