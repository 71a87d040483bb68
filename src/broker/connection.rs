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
/// The first wait after a failure; each further failure doubles it, up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between two attempts (before jitter, which takes up to half off): a
/// node that accepts connections again is tried within a second. A refused connection
/// costs RabbitMQ nothing, so there is no point waiting longer.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

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
        let delay = self.delay(rand::thread_rng().gen_range(0.5..=1.0));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
    }

    /// The wait after the current number of failures, scaled by `jitter` (0.5 to 1).
    fn delay(&self, jitter: f64) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(16);
        BACKOFF_MIN
            .saturating_mul(1 << doublings)
            .min(BACKOFF_MAX)
            .mul_f64(jitter)
    }
}

/// Something that keeps one RabbitMQ connection: the broker, an amqp-bridge route.
#[async_trait]
pub trait Link: Send + Sync {
    /// What one connected session holds (the connection and its channels).
    type Session: Send;
    /// How the link is named in logs.
    fn name(&self) -> &'static str;
    /// The URL, for logs (redacted there).
    fn url(&self) -> &str;
    /// Connects and declares what the link needs.
    async fn open(&self) -> lapin::Result<Self::Session>;
    /// Serves a session until shutdown (`Ok`) or until the connection fails (`Err`).
    async fn serve(
        &self,
        session: Self::Session,
        shutdown: &mut ShutdownWatch,
    ) -> lapin::Result<()>;
    /// Called when a connection succeeds after failures.
    fn reconnected(&self) {}
}

/// Keeps `link` connected until shutdown: connect, serve, and after a failure wait with
/// backoff and connect again. A failure to connect is logged once per outage.
pub async fn keep_connected<L: Link>(link: &L, mut shutdown: ShutdownWatch) {
    let target = || super::amqp::redact(link.url());
    let mut backoff = Backoff::default();
    while !*shutdown.borrow() {
        match link.open().await {
            Ok(session) => {
                if backoff.reset() {
                    link.reconnected();
                }
                match link.serve(session, &mut shutdown).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(link = link.name(), broker = %target(), error = %e, "lost the RabbitMQ connection; reconnecting")
                    }
                }
            }
            Err(e) if backoff.first() => {
                tracing::warn!(link = link.name(), broker = %target(), error = %e, "cannot connect to RabbitMQ; retrying with backoff")
            }
            Err(_) => {}
        }
        backoff.wait(&mut shutdown).await;
    }
}

/// Runs a [`Link`] as a Pingora background service, so that it sees shutdown.
pub struct Supervised<T>(pub Arc<T>);

#[async_trait]
impl<T: Link + 'static> BackgroundService for Supervised<T> {
    async fn start(&self, shutdown: ShutdownWatch) {
        keep_connected(&*self.0, shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_documented_cap() {
        let mut b = Backoff::default();
        let mut waits = vec![];
        for _ in 0..20 {
            b.failures += 1;
            waits.push(b.delay(1.0));
        }
        assert_eq!(waits[0], BACKOFF_MIN);
        assert_eq!(waits[1], BACKOFF_MIN * 2);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*waits.last().unwrap(), BACKOFF_MAX);
        assert!(b.delay(0.5) >= BACKOFF_MAX / 2);
        assert!(b.reset());
        assert!(b.first());
    }
}
