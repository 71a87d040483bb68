//! Graceful shutdown. SIGTERM and SIGINT stop the listeners, let what is in flight finish
//! for up to `grace_period`, then exit 0 — as soon as the last request ends, not after a
//! fixed sleep. SIGQUIT hands the listening sockets to a new process first (`run --upgrade`).
//! A second SIGTERM/SIGINT during the drain exits at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

/// Counts the work that shutdown waits for (requests, tunnels, later WebSockets).
#[derive(Default)]
pub struct Drain {
    active: AtomicUsize,
    idle: Notify,
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
        if cut {
            tracing::warn!(
                cut = self.drain.active(),
                "drain ended early or grace period over; closing what is left"
            );
        } else {
            tracing::info!("drained; exiting");
        }
        std::process::exit(0);
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
}
