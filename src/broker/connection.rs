//! What the RabbitMQ broker and the amqp-bridge share: opening a named connection with a
//! deadline, the reconnect backoff, and running a supervisor as a Pingora background
//! service so that it sees shutdown.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::types::LongString;
use lapin::{Connection, ConnectionProperties};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rand::Rng;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The error a connection that ended (or never opened in time) reports.
pub fn closed() -> lapin::Error {
    lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
        lapin::ConnectionState::Closed,
    ))
}

/// Opens a connection that shows as `name` in RabbitMQ's management view.
pub async fn open(url: &str, name: String) -> lapin::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
    let connecting =
        Connection::connect_with_runtime(url, props, async_rs::Runtime::tokio_current());
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| closed())?
}

/// Capped exponential backoff with jitter, between reconnection attempts.
#[derive(Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// True for the first failure of a run (log it once, not at every retry).
    pub fn first(&self) -> bool {
        self.failures == 0
    }

    /// A connection succeeded; returns whether it was a reconnection.
    pub fn reset(&mut self) -> bool {
        std::mem::take(&mut self.failures) > 0
    }

    /// Waits before the next attempt, or until shutdown.
    pub async fn wait(&mut self, shutdown: &mut ShutdownWatch) {
        self.failures += 1;
        let base = BACKOFF_MIN
            .saturating_mul(1 << self.failures.min(6))
            .min(BACKOFF_MAX);
        let jittered = base.mul_f64(rand::thread_rng().gen_range(0.5..1.0));
        tokio::select! {
            _ = tokio::time::sleep(jittered) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// A long-lived task that owns a connection until shutdown.
#[async_trait]
pub trait Supervise: Send + Sync {
    async fn supervise(&self, shutdown: ShutdownWatch);
}

/// Runs a [`Supervise`] as a Pingora background service.
pub struct Supervised<T>(pub Arc<T>);

#[async_trait]
impl<T: Supervise + 'static> BackgroundService for Supervised<T> {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.supervise(shutdown).await;
    }
}
