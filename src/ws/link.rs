//! A connection's way out: the frames waiting for it and its socket, shared by whoever
//! delivers to it (the hub, on the publishing thread) and its own task (the session).
//!
//! Delivering to a connection with nothing pending writes the frame's shared bytes
//! straight to its socket from the delivering thread, without waiting and without waking
//! the connection's task: a steady stream costs one `write` per delivery. Only what the
//! socket does not take at once (a partial write, a full socket buffer, a TLS record still
//! to flush) is queued, and then the task is woken to finish it with vectored writes, up to
//! [`MAX_IOV`] frames at a time.
//!
//! Whoever writes holds the lock, so frames never interleave. Wakers: a write from a
//! delivering thread polls the socket with a no-op waker, which may replace the task's
//! write-readiness waker; that only happens when nothing was pending (so the task was not
//! waiting to write), and whenever such a write leaves something pending the task is woken
//! to poll again with its own waker. The queue is bounded in frames and bytes; a full one
//! is the slow-client policy's decision ([`crate::hub`]).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use futures::task::AtomicWaker;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::prepared::DeflateOut;
use crate::hub::Outbound;

/// What a connection's socket must be: pingora's stream, a TLS stream, or an in-memory
/// one in tests.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + ?Sized> Io for T {}

/// Most frames handed to one vectored write.
pub const MAX_IOV: usize = 64;

/// Largest single read into the connection's read buffer.
const MAX_READ: usize = 64 * 1024;

/// Smallest read: a read buffer exists only while there are bytes to read into it.
const MIN_READ: usize = 2048;

enum Item {
    /// A data frame (counted by the queue's bounds).
    Frame(Bytes),
    /// A frame the connection itself sends (a pong, a ping, its close); not counted.
    Control(Bytes),
    /// Close with this code once what was queued before it is written (a
    /// `websocket.close` group message).
    Close(u16, String),
}

impl Item {
    fn bytes(&self) -> &[u8] {
        match self {
            Item::Frame(b) | Item::Control(b) => b,
            Item::Close(..) => &[],
        }
    }
}

#[derive(Default)]
struct State {
    io: Option<Box<dyn Io>>,
    items: VecDeque<Item>,
    /// Bytes of the first item already written.
    sent: usize,
    /// Data frames queued, and their wire bytes (the queue's bounds).
    frames: usize,
    bytes: usize,
    /// Written into the stream, not yet flushed (a TLS record the socket did not take).
    unflushed: bool,
    /// The task was told that writes are stuck and not yet that they drained.
    stalled: bool,
    /// Close code the connection was kicked with; 0 when not kicked (or the kick was
    /// taken: the connection is closing).
    kick: u16,
    /// It was kicked (for being slow).
    kicked: bool,
    /// The connection is closing: only its close frame is still written.
    closing: bool,
    /// The connection is gone: nothing is taken any more.
    closed: bool,
    /// A write failed: the connection is ending.
    failed: bool,
    /// Frames written to the socket so far.
    written: u64,
}

/// Why [`Link::offer`] did not take a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Full,
    Closed,
}

/// What the connection's task must act on ([`Link::poll`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// This many bytes were appended to the read buffer.
    Read(usize),
    /// The client closed its side.
    Eof,
    ReadFailed,
    WriteFailed,
    /// Close now with this code, whatever is queued (slow client).
    Kicked(u16),
    /// Close with this code and reason: everything queued before it was written.
    Close(u16, String),
    /// Writes are waiting for the client to read (its write deadline starts).
    Stalled,
    /// Everything is written again.
    Drained,
}

pub struct Link {
    state: Mutex<State>,
    waker: AtomicWaker,
    capacity: usize,
    max_bytes: usize,
    deflate: Option<DeflateOut>,
    frames_out: IntCounter,
    bytes_out: IntCounter,
}

impl Link {
    /// A link that queues up to `capacity` frames (at least one) and `max_bytes` of them
    /// (an empty queue takes one frame of any size), and sends compressed frames per
    /// `deflate`. Frames and bytes written are counted in the two counters.
    pub fn new(
        capacity: usize,
        max_bytes: usize,
        deflate: Option<DeflateOut>,
        frames_out: IntCounter,
        bytes_out: IntCounter,
    ) -> Link {
        Link {
            state: Mutex::new(State::default()),
            waker: AtomicWaker::new(),
            capacity: capacity.max(1),
            max_bytes,
            deflate,
            frames_out,
            bytes_out,
        }
    }

    // A poisoned lock means a panic while holding it, in code that does not panic (socket
    // polls return errors, they do not panic); the state stays consistent.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The socket, once the 101 is written; frames queued before start going out.
    pub fn attach(&self, io: Box<dyn Io>) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        s.io = Some(io);
        if !s.items.is_empty() {
            self.waker.wake();
        }
    }

    /// Takes `out` for this connection: with `direct`, written at once when nothing is
    /// pending; else queued for the connection's task. Never waits.
    pub fn offer(&self, out: &Outbound, direct: bool) -> Result<(), Refused> {
        let mut s = self.lock();
        if s.kicked && !s.closed {
            // Kicked for being slow and not gone yet: a message it did not get, counted.
            return Err(Refused::Full);
        }
        if s.closed || s.closing || s.failed {
            return Err(Refused::Closed);
        }
        let item = match out {
            Outbound::Frame(p) => {
                let wire = p.wire(self.deflate.as_ref());
                if s.frames >= self.capacity
                    || (s.frames > 0 && s.bytes + wire.len() > self.max_bytes)
                {
                    return Err(Refused::Full);
                }
                s.frames += 1;
                s.bytes += wire.len();
                Item::Frame(wire)
            }
            // One close is enough: a second one (an app repeating websocket.close) would
            // only sit in the queue outside its bounds.
            Outbound::Close(..) if s.items.iter().any(|i| matches!(i, Item::Close(..))) => {
                return Err(Refused::Closed);
            }
            Outbound::Close(code, reason) => Item::Close(*code, reason.clone()),
        };
        if direct {
            self.push(&mut s, item);
        } else {
            let first = s.items.is_empty();
            s.items.push_back(item);
            if first {
                drop(s);
                self.waker.wake();
            }
        }
        Ok(())
    }

    /// Sends a frame of the connection's own (a pong, a ping): ahead of nothing, behind
    /// what is queued, outside the queue's bounds. A pong still waiting replaces the one
    /// queued before it, so a client that pings without reading holds one.
    pub fn send_control(&self, frame: Bytes) {
        let mut s = self.lock();
        if s.closed || s.closing || s.failed {
            return;
        }
        let started = s.sent > 0 && s.items.len() == 1;
        let is_pong = |f: &[u8]| f.first() == Some(&(0x80 | super::frame::OP_PONG));
        if let Some(Item::Control(last)) = s.items.back_mut() {
            // Only a pong replaces a pong: our ping does not drop the client's answer.
            if !started && is_pong(last) && is_pong(&frame) {
                *last = frame;
                return;
            }
        }
        self.push(&mut s, Item::Control(frame));
    }

    /// Queues `item`; writes it at once when it is the only thing pending.
    fn push(&self, s: &mut State, item: Item) {
        let idle = s.items.is_empty() && !s.unflushed;
        s.items.push_back(item);
        if !idle || s.io.is_none() {
            // The task is writing (it was woken, or waits for the socket), or the socket
            // is not attached yet (attach wakes it).
            return;
        }
        // Nothing was pending, so the task is not waiting to write: a no-op waker may take
        // the socket's write-readiness slot, as long as the task is woken if anything is
        // left (see the module comment).
        let mut cx = Context::from_waker(Waker::noop());
        match self.write(s, &mut cx) {
            Poll::Ready(Ok(())) if s.items.is_empty() => {}
            Poll::Ready(Ok(())) => self.waker.wake(), // a Close item waits for the task
            Poll::Ready(Err(_)) => {
                s.failed = true;
                self.waker.wake();
            }
            Poll::Pending => self.waker.wake(),
        }
    }

    /// Writes queued frames (vectored, up to [`MAX_IOV`] at once) until everything before
    /// a Close item is written and flushed, or the socket would block.
    fn write(&self, s: &mut State, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let State {
            io,
            items,
            sent,
            frames,
            bytes,
            unflushed,
            written,
            ..
        } = s;
        let Some(io) = io.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        loop {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, item) in items.iter().enumerate() {
                if n == MAX_IOV || matches!(item, Item::Close(..)) {
                    break;
                }
                let b = item.bytes();
                iov[n] = IoSlice::new(if i == 0 { &b[*sent..] } else { b });
                n += 1;
            }
            if n == 0 {
                break;
            }
            let r = if n > 1 && io.is_write_vectored() {
                Pin::new(&mut **io).poll_write_vectored(cx, &iov[..n])
            } else {
                Pin::new(&mut **io).poll_write(cx, &iov[0])
            };
            let mut w = match r {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(w)) => w,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            *unflushed = true;
            self.bytes_out.inc_by(w as u64);
            // Drop what was written from the front.
            while w > 0 {
                let Some(front) = items.front() else { break };
                let rest = front.bytes().len() - *sent;
                if w < rest {
                    *sent += w;
                    break;
                }
                w -= rest;
                *sent = 0;
                if let Some(Item::Frame(b)) = items.pop_front() {
                    *frames -= 1;
                    *bytes -= b.len();
                }
                *written += 1;
                self.frames_out.inc();
            }
        }
        if *unflushed {
            match Pin::new(&mut **io).poll_flush(cx) {
                Poll::Ready(Ok(())) => *unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if items.is_empty() && items.capacity() > 16 {
            // A burst grew the queue; an idle connection gives the buffer back.
            *items = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    /// The connection's task: writes what is pending, then reports what it must act on.
    /// With `read = Some(buf)`, and nothing pending to write (a client that does not take
    /// what it is sent is not read either, so it cannot queue more pongs or echoes), also
    /// reads from the client into `buf`, at least `want` bytes of room.
    pub fn poll(&self, cx: &mut Context<'_>, read: Option<(&mut BytesMut, usize)>) -> Poll<Event> {
        self.waker.register(cx.waker());
        let mut s = self.lock();
        if s.kick != 0 {
            return Poll::Ready(Event::Kicked(s.kick));
        }
        if s.failed {
            return Poll::Ready(Event::WriteFailed);
        }
        if let Poll::Ready(Err(_)) = self.write(&mut s, cx) {
            s.failed = true;
            return Poll::Ready(Event::WriteFailed);
        }
        if s.sent == 0 {
            if let Some(Item::Close(..)) = s.items.front() {
                if let Some(Item::Close(code, reason)) = s.items.pop_front() {
                    return Poll::Ready(Event::Close(code, reason));
                }
            }
        }
        let pending = !s.items.is_empty() || s.unflushed;
        if pending != s.stalled {
            s.stalled = pending;
            return Poll::Ready(if pending {
                Event::Stalled
            } else {
                Event::Drained
            });
        }
        match read {
            Some((buf, want)) if !pending => match Self::read(&mut s, cx, buf, want) {
                Poll::Ready(Ok(0)) => Poll::Ready(Event::Eof),
                Poll::Ready(Ok(n)) => Poll::Ready(Event::Read(n)),
                Poll::Ready(Err(_)) => Poll::Ready(Event::ReadFailed),
                Poll::Pending => Poll::Pending,
            },
            _ => Poll::Pending,
        }
    }

    fn read(
        s: &mut State,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<std::io::Result<usize>> {
        let Some(io) = s.io.as_mut() else {
            return Poll::Pending;
        };
        let len = buf.len();
        buf.resize(len + want.clamp(MIN_READ, MAX_READ), 0);
        let mut rb = ReadBuf::new(&mut buf[len..]);
        let r = Pin::new(&mut **io).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        buf.truncate(len + n);
        if buf.is_empty() {
            // Nothing came: an idle connection keeps no read buffer.
            *buf = BytesMut::new();
        }
        r.map_ok(|()| n)
    }

    /// Reads what the client sends while the connection closes (its close frame).
    pub fn poll_read(
        &self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
    ) -> Poll<std::io::Result<usize>> {
        Self::read(&mut self.lock(), cx, buf, want)
    }

    /// Starts closing: `frame` (a close frame) is the last thing written; what was queued
    /// and not started is dropped (`keep_queued` keeps it in front of the close, for a
    /// close the app asked for).
    pub fn begin_close(&self, frame: Bytes, keep_queued: bool) {
        let mut s = self.lock();
        if s.closed || s.closing {
            return;
        }
        s.closing = true;
        s.kick = 0;
        if !keep_queued {
            let keep = usize::from(s.sent > 0);
            while s.items.len() > keep {
                if let Some(Item::Frame(b)) = s.items.pop_back() {
                    s.frames -= 1;
                    s.bytes -= b.len();
                }
            }
        }
        s.items.retain(|i| !matches!(i, Item::Close(..)));
        self.push(&mut s, Item::Control(frame));
    }

    /// Writes what is pending (the close frame) and flushes; ready when done.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut s = self.lock();
        match self.write(&mut s, cx) {
            Poll::Ready(Ok(())) if s.items.is_empty() => Poll::Ready(Ok(())),
            Poll::Ready(Ok(())) => Poll::Pending,
            other => other,
        }
    }

    /// Shuts the socket down (a TLS close_notify, then FIN).
    pub fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut s = self.lock();
        match s.io.as_mut() {
            Some(io) => Pin::new(&mut **io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Tells the connection to close with `code` ahead of what is queued; the first kick
    /// wins.
    pub fn kick(&self, code: u16) {
        let mut s = self.lock();
        if s.kicked || s.closed || s.closing {
            return;
        }
        s.kick = code;
        s.kicked = true;
        drop(s);
        self.waker.wake();
    }

    /// The connection is gone: refuses everything, drops what is queued and the socket.
    pub fn close(&self) {
        let (io, items) = {
            let mut s = self.lock();
            s.closed = true;
            s.frames = 0;
            s.bytes = 0;
            (s.io.take(), std::mem::take(&mut s.items))
        };
        drop((io, items));
    }

    /// Frames written to this connection's socket so far.
    pub fn written(&self) -> u64 {
        self.lock().written
    }

    /// Data frames queued now.
    pub fn len(&self) -> usize {
        self.lock().frames
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wire bytes of the data frames queued now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::prepared::Prepared;
    use std::future::poll_fn;
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;

    fn link(capacity: usize, max_bytes: usize) -> Link {
        Link::new(
            capacity,
            max_bytes,
            None,
            IntCounter::new("f", "f").unwrap(),
            IntCounter::new("b", "b").unwrap(),
        )
    }

    fn text(s: &str) -> Outbound {
        Outbound::Frame(Arc::new(Prepared::text(s)))
    }

    #[tokio::test]
    async fn writes_at_once_when_nothing_is_pending() {
        let l = link(8, 1 << 20);
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        l.attach(Box::new(ours));
        l.offer(&text("hello"), true).unwrap();
        // Written by offer itself: nothing queued, no task involved.
        assert!(l.is_empty());
        let mut got = [0u8; 7];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x81\x05hello");
        assert_eq!(l.frames_out.get(), 1);
        assert_eq!(l.bytes_out.get(), 7);
    }

    #[tokio::test]
    async fn queues_what_the_socket_does_not_take_and_the_task_finishes_it() {
        let l = Arc::new(link(100, 1 << 20));
        // A 64-byte pipe: the first frame is written in part, the rest queued.
        let (ours, mut theirs) = tokio::io::duplex(64);
        l.attach(Box::new(ours));
        let msg = "x".repeat(100);
        for _ in 0..10 {
            l.offer(&text(&msg), true).unwrap();
        }
        assert!(l.len() >= 9, "queued: {}", l.len());
        let task = {
            let l = l.clone();
            tokio::spawn(async move {
                loop {
                    match poll_fn(|cx| l.poll(cx, None)).await {
                        Event::Stalled => {}
                        Event::Drained => return,
                        other => panic!("{other:?}"),
                    }
                }
            })
        };
        let mut got = vec![0u8; 10 * 102];
        theirs.read_exact(&mut got).await.unwrap();
        task.await.unwrap();
        for chunk in got.chunks(102) {
            assert_eq!(&chunk[..2], b"\x81\x64");
            assert_eq!(&chunk[2..], msg.as_bytes());
        }
        assert_eq!(l.frames_out.get(), 10);
    }

    #[tokio::test]
    async fn a_burst_is_queued_and_written_by_the_task_in_order() {
        let l = link(100, 1 << 20);
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        l.attach(Box::new(ours));
        for i in 0..50 {
            l.offer(&text(&format!("m{i:02}")), false).unwrap();
        }
        // Nothing written by the deliverer: all queued for the task.
        assert_eq!(l.len(), 50);
        assert!(l
            .poll(&mut Context::from_waker(Waker::noop()), None)
            .is_pending());
        assert!(l.is_empty());
        let mut got = vec![0u8; 50 * 5];
        theirs.read_exact(&mut got).await.unwrap();
        for (i, f) in got.chunks(5).enumerate() {
            let mut want = vec![0x81, 3];
            want.extend_from_slice(format!("m{i:02}").as_bytes());
            assert_eq!(f, &want[..]);
        }
        assert_eq!(l.written(), 50);
    }

    #[tokio::test]
    async fn bounded_in_frames_and_bytes() {
        let l = link(2, 1 << 20);
        // Not attached: everything queues.
        l.offer(&text("a"), true).unwrap();
        l.offer(&text("b"), true).unwrap();
        assert_eq!(l.offer(&text("c"), true), Err(Refused::Full));
        let l = link(100, 10);
        let big = "x".repeat(25);
        assert_eq!(
            l.offer(&text(&big), true),
            Ok(()),
            "an empty queue takes one of any size"
        );
        assert_eq!(l.offer(&text("a"), true), Err(Refused::Full));
        assert_eq!(l.bytes(), 27);
        l.kick(1013);
        assert_eq!(l.offer(&text("a"), true), Err(Refused::Full));
        l.close();
        assert_eq!(l.bytes(), 0);
        assert_eq!(l.offer(&text("a"), true), Err(Refused::Closed));
    }

    #[tokio::test]
    async fn a_kick_overtakes_the_queue_and_close_comes_in_order() {
        let l = link(8, 1 << 20);
        l.offer(&text("a"), true).unwrap();
        l.offer(&Outbound::Close(4000, "bye".into()), true).unwrap();
        assert_eq!(
            l.offer(&Outbound::Close(4001, "again".into()), true),
            Err(Refused::Closed),
            "one close queued at most"
        );
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        l.attach(Box::new(ours));
        // "a" is written first, then the close is reported.
        let mut seen = Vec::new();
        loop {
            let e = poll_fn(|cx| l.poll(cx, None)).await;
            let done = matches!(e, Event::Close(..));
            seen.push(e);
            if done {
                break;
            }
        }
        assert_eq!(seen.last(), Some(&Event::Close(4000, "bye".into())));
        let mut got = [0u8; 3];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x81\x01a");
        let l = link(8, 1 << 20);
        l.offer(&text("a"), true).unwrap();
        l.kick(1013);
        l.kick(1001);
        assert_eq!(poll_fn(|cx| l.poll(cx, None)).await, Event::Kicked(1013));
    }

    #[tokio::test]
    async fn pongs_do_not_pile_up() {
        let l = link(8, 1 << 20);
        for i in 0..100u8 {
            l.send_control(Bytes::from(vec![0x8a, 1, i]));
        }
        assert_eq!(l.lock().items.len(), 1);
        // Our own ping does not take the pong's place.
        l.send_control(Bytes::from_static(&[0x89, 0]));
        assert_eq!(l.lock().items.len(), 2);
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        l.attach(Box::new(ours));
        // The task's first poll writes them; nothing stalled, so nothing to report.
        assert!(l
            .poll(&mut Context::from_waker(Waker::noop()), None)
            .is_pending());
        let mut got = [0u8; 5];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0x8a, 1, 99, 0x89, 0]);
    }

    #[tokio::test]
    async fn reads_only_when_nothing_waits_to_be_written() {
        let l = link(8, 1 << 20);
        let (ours, mut theirs) = tokio::io::duplex(8);
        l.attach(Box::new(ours));
        tokio::io::AsyncWriteExt::write_all(&mut theirs, b"hi")
            .await
            .unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(
            poll_fn(|cx| l.poll(cx, Some((&mut buf, 0)))).await,
            Event::Read(2)
        );
        assert_eq!(&buf[..], b"hi");
        // A frame larger than the pipe: writes stall, reads wait.
        l.offer(&text(&"y".repeat(20)), true).unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut theirs, b"more")
            .await
            .unwrap();
        assert_eq!(
            poll_fn(|cx| l.poll(cx, Some((&mut buf, 0)))).await,
            Event::Stalled
        );
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            poll_fn(|cx| l.poll(cx, Some((&mut buf, 0)))),
        )
        .await;
        assert!(waiting.is_err(), "{waiting:?}");
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 22];
            theirs.read_exact(&mut got).await.unwrap();
            got
        });
        assert_eq!(
            poll_fn(|cx| l.poll(cx, Some((&mut buf, 0)))).await,
            Event::Drained
        );
        assert_eq!(reader.await.unwrap()[..2], [0x81, 20]);
        assert_eq!(
            poll_fn(|cx| l.poll(cx, Some((&mut buf, 0)))).await,
            Event::Read(4)
        );
    }
}
