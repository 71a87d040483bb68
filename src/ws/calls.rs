//! The connection's protocol, beside its loop: every client message goes to the
//! protocol's `message` ([`crate::protocols::ClientProtocol`]) in one task per connection,
//! in the order the messages came, so an `inbound = { http }` POST, a publish (an AMQP
//! confirm), AWX authorizations and amqp-bridge commands take their time while the loop
//! keeps writing, answering pings and hearing shutdown. Replies go back through the
//! connection's own queue. At most [`PENDING`] messages wait; when they do, the loop stops
//! reading the client (TCP pushes back) rather than queueing more.
//!
//! Started at the first message, so idle connections pay nothing. When the connection
//! ends, the call in flight finishes (within its own timeout; shutdown waits for it
//! through a drain guard), messages still waiting are dropped, counted as `abandoned`, and
//! the protocol's `close` runs.

use tokio::sync::mpsc;

use super::config::Protocol;
use super::frame::Message;
use super::Conn;
use crate::protocols::{channels, ClientProtocol, Ctx};
use crate::shutdown::DrainGuard;

/// Client frames that may wait for the app, per connection.
pub const PENDING: usize = 16;

pub(super) struct Calls {
    tx: mpsc::Sender<Message>,
    worker: tokio::task::JoinHandle<()>,
}

impl Calls {
    /// Hands the connection's protocol to its own task.
    pub(super) fn start(cx: &Ctx, protocol: Box<dyn ClientProtocol>) -> Calls {
        let (tx, rx) = mpsc::channel(PENDING);
        let guard = cx.ep.drain.enter();
        let worker = tokio::spawn(work(cx.clone(), protocol, rx, guard));
        Calls { tx, worker }
    }

    /// Whether another frame may be handed over now.
    pub(super) fn has_room(&self) -> bool {
        self.tx.capacity() > 0
    }

    /// Hands `msg` over; false (the frame is lost, counted by the caller) only when the
    /// worker is gone or [`Calls::has_room`] was not checked.
    pub(super) fn submit(&self, msg: Message) -> bool {
        self.tx.try_send(msg).is_ok()
    }

    /// Lets the protocol finish the messages handed over so far (their replies are queued
    /// before the connection's close), for at most `limit`; then it goes on alone.
    pub(super) async fn finish(self, limit: std::time::Duration) {
        let Calls { tx, worker } = self;
        drop(tx);
        let _ = tokio::time::timeout(limit, worker).await;
    }

    /// Resolves once a frame may be handed over again.
    pub(super) async fn room(&self) {
        match self.tx.reserve().await {
            Ok(permit) => drop(permit),
            // The worker is gone (it does not end before its sender): nothing to wait for.
            Err(_) => std::future::pending().await,
        }
    }
}

/// The label of the route's inbound handling in `channelgate_ws_inbound_total{mode}`.
pub(super) fn mode(conn: &Conn) -> &'static str {
    match &conn.route.protocol {
        Protocol::Awx => "awx",
        Protocol::AmqpBridge(_) => "amqp-bridge",
        Protocol::Channels => channels::mode(&conn.route.inbound),
    }
}

async fn work(
    cx: Ctx,
    mut protocol: Box<dyn ClientProtocol>,
    mut rx: mpsc::Receiver<Message>,
    guard: DrainGuard,
) {
    while let Some(m) = rx.recv().await {
        if cx.membership.is_closed() {
            cx.ep
                .metrics
                .ws
                .inbound
                .with_label_values(&[mode(&cx.conn), "abandoned"])
                .inc();
            continue;
        }
        protocol.message(&cx, m).await;
    }
    protocol.close(&cx);
    drop(guard);
}
