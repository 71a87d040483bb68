//! App calls beside the connection's loop: an `inbound = { http }` POST, a publish of a
//! client frame (an AMQP confirm), AWX authorizations and amqp-bridge commands run in one
//! task per connection, in the order the frames came, while the loop keeps draining the
//! connection's queue, answering pings and hearing shutdown. Replies go back through the
//! connection's own queue. At most [`PENDING`] frames wait; when they do, the loop stops
//! reading the client (TCP pushes back) rather than queueing more.
//!
//! Started at the first frame that needs it, so idle connections pay nothing. When the
//! connection ends, the call in flight finishes (within its own timeout; shutdown waits
//! for it through a drain guard) and frames still waiting are dropped, counted as
//! `abandoned`.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::config::Protocol;
use super::{inbound, Conn, Endpoint};
use crate::hub::Membership;
use crate::protocols::{self, Subscriptions};
use crate::shutdown::DrainGuard;

/// Client frames that may wait for the app, per connection.
pub const PENDING: usize = 16;

pub(super) struct Calls {
    tx: mpsc::Sender<Message>,
}

impl Calls {
    pub(super) fn start(
        ep: &Arc<Endpoint>,
        conn: &Arc<Conn>,
        membership: &Arc<Membership>,
    ) -> Calls {
        let (tx, rx) = mpsc::channel(PENDING);
        let guard = ep.drain.enter();
        tokio::spawn(work(
            ep.clone(),
            conn.clone(),
            membership.clone(),
            rx,
            guard,
        ));
        Calls { tx }
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
        Protocol::Channels => inbound::mode(&conn.route.inbound),
    }
}

async fn work(
    ep: Arc<Endpoint>,
    conn: Arc<Conn>,
    membership: Arc<Membership>,
    mut rx: mpsc::Receiver<Message>,
    guard: DrainGuard,
) {
    let mut subs = Subscriptions::default();
    while let Some(m) = rx.recv().await {
        if membership.is_closed() {
            ep.metrics
                .ws
                .inbound
                .with_label_values(&[mode(&conn), "abandoned"])
                .inc();
            continue;
        }
        match &conn.route.protocol {
            Protocol::Channels => inbound::call(&ep, &conn, &membership, m).await,
            Protocol::Awx => protocols::awx::handle(&ep, &conn, &membership, &mut subs, m).await,
            Protocol::AmqpBridge(_) => protocols::bridge::handle(&ep, &conn, m).await,
        }
    }
    drop(guard);
}
