//! Graceful shutdown. SIGTERM and SIGINT stop the listeners, let what is in flight finish
//! for up to `grace_period` — as soon as the last request ends, not after a fixed sleep —
//! and exit 0 when everything finished ([`EXIT_DRAINED`]). When the grace period runs out
//! (or a second SIGTERM/SIGINT arrives during the drain), what is left is closed: requests
//! are cut, WebSocket pass-through tunnels get their sockets shut down
//! ([`Drain::cut_signal`]), and the exit code is [`EXIT_CUT`], so that a supervisor or a
//! deploy script can tell a clean stop from one that cut work. SIGQUIT hands the listening
//! sockets to a new process first (`run --upgrade`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};

/// The exit code when every request, tunnel and WebSocket finished within the grace period.
pub const EXIT_DRAINED: i32 = 0;
/// The exit code when the grace period ran out (or a second signal came) and work was cut.
pub const EXIT_CUT: i32 = 3;
/// How long cut work gets to close its sockets before the process exits.
const CLOSE_TIME: Duration = Duration::from_secs(1);

/// Counts the work that shutdown waits for (requests, tunnels, WebSockets), and tells the
/// work that has no end of its own (tunnels) when the grace period is over.
pub struct Drain {
    active: AtomicUsize,
    idle: Notify,
    cut: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Drain {
        Drain {
            active: AtomicUsize::new(0),
            idle: Notify::new(),
            cut: watch::channel(false).0,
        }
    }
}

/// Held while one piece of work is in flight.
pub struct DrainGuard(Arc<Drain>);

impl Drain {
    pub fn new() -> Arc<Drain> {
        Arc::new(Drain::default())
    }

    pub fn enter(self: &Arc<Self>) -> DrainGuard {
        self.active.fetch_add(1, Ordering::SeqCst);
        DrainGuard(self.clone())
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Becomes true when the grace period is over and what is left must close now.
    pub fn cut_signal(&self) -> watch::Receiver<bool> {
        self.cut.subscribe()
    }

    /// Tells every holder of [`cut_signal`](Self::cut_signal) to close.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Resolves once nothing is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The signals channelgate answers, as Pingora shutdown kinds.
pub struct Signals;

async fn next(kind: SignalKind) {
    match signal(kind) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(e) => {
            tracing::error!(error = %e, signal = ?kind, "cannot watch signal");
            std::future::pending::<()>().await
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        tokio::select! {
            _ = next(SignalKind::quit()) => {
                tracing::info!("SIGQUIT: handing the listeners to the new process, then draining");
                ShutdownSignal::GracefulUpgrade
            }
            _ = next(SignalKind::terminate()) => {
                tracing::info!("SIGTERM: draining");
                ShutdownSignal::GracefulTerminate
            }
            _ = next(SignalKind::interrupt()) => {
                tracing::info!("SIGINT: draining");
                ShutdownSignal::GracefulTerminate
            }
        }
    }
}

/// Waits for Pingora's shutdown broadcast, then for the drain, then ends the process.
pub struct DrainService {
    pub drain: Arc<Drain>,
    pub grace_period: Duration,
    /// Tells the WebSocket connections (which Pingora does not know) to close with 1001.
    pub ws_shutdown: tokio::sync::watch::Sender<bool>,
}

#[async_trait]
impl BackgroundService for DrainService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        let _ = self.ws_shutdown.send(true);
        let active = self.drain.active();
        tracing::info!(
            in_flight = active,
            grace_period = ?self.grace_period,
            "listeners closed; waiting for in-flight work"
        );
        let cut = tokio::select! {
            r = tokio::time::timeout(self.grace_period, self.drain.wait_idle()) => r.is_err(),
            _ = next(SignalKind::terminate()) => true,
            _ = next(SignalKind::interrupt()) => true,
        };
        if !cut {
            tracing::info!(exit_code = EXIT_DRAINED, "drained; exiting");
            std::process::exit(EXIT_DRAINED);
        }
        let left = self.drain.active();
        tracing::warn!(
            cut = left,
            exit_code = EXIT_CUT,
            "grace period over or second signal: closing what is left"
        );
        self.drain.cut();
        // Tunnels shut their sockets down; whatever does not finish in time ends with the
        // process.
        let _ = tokio::time::timeout(CLOSE_TIME, self.drain.wait_idle()).await;
        std::process::exit(EXIT_CUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_idle_resolves_when_last_guard_drops() {
        let d = Drain::new();
        let g1 = d.enter();
        let g2 = d.enter();
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.wait_idle().await }
        });
        drop(g1);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(g2);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.active(), 0);
    }

    #[tokio::test]
    async fn cut_reaches_every_holder() {
        let d = Drain::new();
        let mut a = d.cut_signal();
        let b = d.cut_signal();
        assert!(!*a.borrow());
        d.cut();
        tokio::time::timeout(Duration::from_secs(5), a.wait_for(|c| *c))
            .await
            .unwrap()
            .unwrap();
        assert!(*b.borrow());
        // A holder that subscribes after the cut sees it at once.
        assert!(*d.cut_signal().borrow());
    }
}
