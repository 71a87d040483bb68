//! For unit tests: an [`Endpoint`] from a TOML snippet (memory broker, no listeners) and
//! connections served by the real session over an in-memory stream
//! (`tokio::io::duplex`), with tokio-tungstenite as the client.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::DuplexStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::frame::ReaderLimits;
use super::prepared::DeflateOut;
use super::session::{self, Start};
use super::{Conn, Endpoint};
use crate::broker::MemoryBroker;
use crate::hub::{Hub, Membership, QueueLimits};
use crate::metrics::Metrics;
use crate::upstream::Upstreams;

/// An endpoint for `[[ws]]` routes in `routes` (TOML), upstream at `upstream`.
pub fn endpoint(upstream: &str, routes: &str) -> Arc<Endpoint> {
    let text = format!("[upstream]\nservers = [\"{upstream}\"]\n{routes}\n");
    let config = crate::config::Config::parse(&text, std::path::Path::new("test.toml"))
        .unwrap_or_else(|e| panic!("bad test config: {e}"));
    let metrics = Arc::new(Metrics::new());
    let (upstreams, _health) = Upstreams::new(&config.upstream, &metrics).expect("upstreams");
    let hub = Hub::new(metrics.clone());
    let (tx, rx) = tokio::sync::watch::channel(false);
    // The sender must outlive the endpoint: a dropped one reads as "never shutting down".
    std::mem::forget(tx);
    Arc::new(Endpoint {
        routes: config.ws.iter().cloned().map(Arc::new).collect(),
        broker: Arc::new(MemoryBroker::new(hub.clone())),
        hub,
        upstreams,
        metrics,
        drain: crate::shutdown::Drain::new(),
        shutdown: rx,
        forwarding: config.server.forwarding.clone(),
        unbuffer_streams: false,
        bridges: Default::default(),
    })
}

/// Who the test client is.
#[derive(Default)]
pub struct Who {
    pub user: Option<String>,
    pub groups: Vec<String>,
    pub csrftoken: Option<String>,
    pub subscribe: Option<Vec<String>>,
    pub deflate: Option<DeflateOut>,
    pub inflate: Option<super::deflate::InflateParams>,
}

/// A connection on route `route` (its index), served by the session; returns the server's
/// membership and the raw client end of the stream (speak WebSocket over it yourself).
pub fn serve_raw(ep: &Arc<Endpoint>, route: usize, who: Who) -> (Arc<Membership>, DuplexStream) {
    let route = ep.routes[route].clone();
    let conn = Conn {
        route: route.clone(),
        channel: crate::broker::new_channel_name(ep.broker.instance()),
        user: who.user,
        groups: who.groups,
        inbound_group: match &route.inbound {
            super::config::Inbound::Group { group, .. } => {
                group.render(&super::route::Vars::default()).ok()
            }
            _ => None,
        },
        params: Vec::new(),
        credentials: Vec::new(),
        client: "127.0.0.1:1".into(),
        request_id: "test".into(),
        csrftoken: who.csrftoken,
        subscribe: who.subscribe,
    };
    let limits = QueueLimits {
        messages: route.send_queue,
        bytes: route.send_queue_bytes,
        slow: route.slow_client,
        deflate: who.deflate,
    };
    let membership = Arc::new(Membership::join(
        &ep.hub,
        &conn.channel,
        &conn.groups,
        limits,
    ));
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let start = Start {
        ep: ep.clone(),
        conn: Arc::new(conn),
        io: Box::new(ours),
        pre_read: Bytes::new(),
        reader: ReaderLimits {
            max_message: route.max_message,
            deflate: who.inflate,
        },
        membership: membership.clone(),
    };
    tokio::spawn(session::run(start, ep.drain.enter()));
    (membership, theirs)
}

/// Like [`serve_raw`], with a tokio-tungstenite client on the other end.
pub async fn serve(
    ep: &Arc<Endpoint>,
    route: usize,
    who: Who,
) -> (Arc<Membership>, WebSocketStream<DuplexStream>) {
    let (m, theirs) = serve_raw(ep, route, who);
    (
        m,
        WebSocketStream::from_raw_socket(theirs, Role::Client, None).await,
    )
}
