//! Relaying a pass-through tunnel's bytes both ways, with an end: a tunnel closes when
//! both sides have closed, when nothing moved either way for `[upstream]
//! tunnel_idle_timeout`, or when shutdown's grace period is over ([`Drain::cut_signal`]).
//!
//! [`Drain::cut_signal`]: crate::shutdown::Drain::cut_signal

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// Bytes read from one side before they are written to the other.
const CHUNK: usize = 8 * 1024;
/// How long closing a side (TCP FIN, TLS close_notify) may take.
const CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// Why a tunnel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Both sides closed their sending half.
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// Shutdown's grace period is over.
    Shutdown,
    /// A read or write failed (a reset, a broken pipe).
    Error,
}

impl End {
    /// The `reason` label of the metric.
    pub fn label(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Idle => "idle_timeout",
            End::Shutdown => "shutdown",
            End::Error => "error",
        }
    }
}

/// What a tunnel moved, and why it ended.
#[derive(Debug)]
pub struct Relayed {
    pub up: u64,
    pub down: u64,
    pub end: End,
}

/// Relays between `client` and `upstream` until [`End`]; then shuts both sockets down.
pub async fn relay<C, U>(
    client: &mut C,
    upstream: &mut U,
    idle: Duration,
    mut cut: watch::Receiver<bool>,
) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(&mut *client);
    let (mut ur, mut uw) = tokio::io::split(&mut *upstream);
    let (mut cbuf, mut ubuf) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let (mut c_open, mut u_open) = (true, true);
    // Without a sender the cut can never come: stop polling it (it would resolve at once).
    let mut cut_live = true;
    let mut r = Relayed {
        up: 0,
        down: 0,
        end: End::Closed,
    };
    r.end = loop {
        if !c_open && !u_open {
            break End::Closed;
        }
        if *cut.borrow_and_update() {
            break End::Shutdown;
        }
        // A write that makes no progress for the idle timeout counts as idle too.
        let step = tokio::time::timeout(idle, async {
            tokio::select! {
                n = cr.read(&mut cbuf), if c_open => match n {
                    Ok(0) => { c_open = false; uw.shutdown().await.map(|_| ()) }
                    Ok(n) => { r.up += n as u64; send(&mut uw, &cbuf[..n]).await }
                    Err(e) => Err(e),
                },
                n = ur.read(&mut ubuf), if u_open => match n {
                    Ok(0) => { u_open = false; cw.shutdown().await.map(|_| ()) }
                    Ok(n) => { r.down += n as u64; send(&mut cw, &ubuf[..n]).await }
                    Err(e) => Err(e),
                },
                changed = cut.changed(), if cut_live => {
                    cut_live = changed.is_ok();
                    Ok(())
                }
            }
        });
        match step.await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break End::Error,
            Err(_) => break End::Idle,
        }
    };
    if r.end != End::Closed {
        let _ = tokio::time::timeout(CLOSE_LIMIT, async {
            let _ = cw.shutdown().await;
            let _ = uw.shutdown().await;
        })
        .await;
    }
    r
}

/// Writes `bytes` and flushes: the client side may be a buffered stream (Pingora's), and
/// a tunnel must not hold bytes back until more arrive.
async fn send<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relays_both_ways_until_both_close() {
        let (mut c, mut c_peer) = tokio::io::duplex(64);
        let (mut u, mut u_peer) = tokio::io::duplex(64);
        let (_tx, rx) = watch::channel(false);
        let t =
            tokio::spawn(async move { relay(&mut c, &mut u, Duration::from_secs(60), rx).await });
        c_peer.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        u_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        u_peer.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        c_peer.read_exact(&mut buf).await.unwrap();
        drop(c_peer);
        drop(u_peer);
        let r = t.await.unwrap();
        assert_eq!((r.up, r.down, r.end), (5, 2, End::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_ends() {
        let (mut c, _c_peer) = tokio::io::duplex(64);
        let (mut u, _u_peer) = tokio::io::duplex(64);
        let (_tx, rx) = watch::channel(false);
        let r = relay(&mut c, &mut u, Duration::from_secs(30), rx).await;
        assert_eq!(r.end, End::Idle);
    }

    #[tokio::test]
    async fn the_cut_ends_a_busy_or_quiet_tunnel() {
        let (mut c, _c_peer) = tokio::io::duplex(64);
        let (mut u, _u_peer) = tokio::io::duplex(64);
        let (tx, rx) = watch::channel(false);
        let t =
            tokio::spawn(async move { relay(&mut c, &mut u, Duration::from_secs(3600), rx).await });
        tx.send(true).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.end, End::Shutdown);
    }
}
