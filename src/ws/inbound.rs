//! What happens to a frame a client sends, per the route's `inbound` mode: dropped
//! (counted), echoed, published to a group, or POSTed to the app (whose answer goes back to
//! the sender). The last two run beside the connection's loop ([`super::calls`]).
//! Failures are counted and logged; they never end the connection.

use bytes::Bytes;
use pingora::http::RequestHeader;
use tokio_tungstenite::tungstenite::Message;

use super::config::Inbound;
use super::{Conn, Endpoint};
use crate::hub::{Event, Membership, Outbound};

/// The `mode` label of `channelgate_ws_inbound_total` for a route's inbound handling.
pub(super) fn mode(inbound: &Inbound) -> &'static str {
    match inbound {
        Inbound::Drop => "drop",
        Inbound::Echo => "echo",
        Inbound::Group { .. } => "group",
        Inbound::Http { .. } => "http",
    }
}

fn count(ep: &Endpoint, mode: &str, outcome: &str) {
    ep.metrics
        .ws
        .inbound
        .with_label_values(&[mode, outcome])
        .inc()
}

/// Handles a message that needs no call (`drop`, `echo`) at once; gives back the ones
/// that do, for [`call`] beside the loop.
pub(super) fn at_once(
    ep: &Endpoint,
    conn: &Conn,
    membership: &Membership,
    msg: Message,
) -> Option<Message> {
    match &conn.route.inbound {
        Inbound::Drop => count(ep, "drop", "dropped"),
        // Through the connection's queue, under its bounds: a client that sends without
        // reading fills it and meets the slow-client policy.
        Inbound::Echo => {
            membership.send(Outbound::Frame(msg));
            count(ep, "echo", "ok");
        }
        Inbound::Group { .. } | Inbound::Http { .. } => return Some(msg),
    }
    None
}

/// Publishes a message to the route's group or POSTs it to the app (a non-empty answer
/// goes back to the sender through its queue). Failures are counted and logged.
pub(super) async fn call(ep: &Endpoint, conn: &Conn, membership: &Membership, msg: Message) {
    let route = &conn.route;
    let count = |mode: &str, outcome: &str| count(ep, mode, outcome);
    match &route.inbound {
        Inbound::Drop | Inbound::Echo => {}
        Inbound::Group { event_type, .. } => {
            let Some(group) = &conn.inbound_group else {
                return;
            };
            let mut event = match msg {
                Message::Text(t) => Event::text(event_type, t.to_string()),
                Message::Binary(b) => Event::binary(event_type, b),
                _ => return,
            };
            event
                .fields
                .insert("channel".into(), conn.channel.clone().into());
            if let Some(u) = &conn.user {
                event.fields.insert("user".into(), u.clone().into());
            }
            match ep.broker.group_send(group, event).await {
                Ok(_) => {
                    count("group", "ok");
                    ep.metrics
                        .ws
                        .published
                        .with_label_values(&["inbound", "ok"])
                        .inc();
                }
                Err(e) => {
                    count("group", "error");
                    ep.metrics
                        .ws
                        .published
                        .with_label_values(&["inbound", "error"])
                        .inc();
                    crate::client_warn!("inbound_not_published", channel = %conn.channel, group = %group, error = %e, "inbound frame not published");
                }
            }
        }
        Inbound::Http { path, timeout } => {
            let (body, content_type) = match msg {
                Message::Text(t) => (Bytes::from(t), "text/plain; charset=utf-8"),
                Message::Binary(b) => (b, "application/octet-stream"),
                _ => return,
            };
            let req = match http_request(conn, path, content_type, body.len()) {
                Ok(r) => r,
                Err(e) => {
                    count("http", "error");
                    crate::client_warn!("inbound_unbuildable", channel = %conn.channel, error = %e, "cannot build the inbound request");
                    return;
                }
            };
            match ep.upstreams.call(req, body, *timeout).await {
                Ok(a) if (200..300).contains(&a.status) => {
                    count("http", "ok");
                    if !a.body.is_empty() {
                        let is_text = a
                            .headers
                            .get(http::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v.starts_with("text/") || v.contains("json"));
                        let reply = match (is_text, String::from_utf8(a.body.to_vec())) {
                            (true, Ok(s)) => Message::Text(s.into()),
                            _ => Message::Binary(a.body),
                        };
                        membership.send(Outbound::Frame(reply));
                    }
                }
                Ok(a) => {
                    count("http", "error");
                    crate::client_warn!("inbound_refused", channel = %conn.channel, status = a.status, path = %path, "the app refused an inbound frame");
                }
                Err(e) => {
                    count("http", "error");
                    crate::client_warn!("inbound_undelivered", channel = %conn.channel, error = %e, path = %path, "inbound frame not delivered to the app");
                }
            }
        }
    }
}

fn http_request(
    conn: &Conn,
    path: &str,
    content_type: &str,
    len: usize,
) -> pingora::Result<RequestHeader> {
    let mut req = RequestHeader::build("POST", path.as_bytes(), None)?;
    req.insert_header("content-type", content_type)?;
    req.insert_header("content-length", len.to_string())?;
    req.insert_header("x-channelgate-channel", conn.channel.as_str())?;
    req.insert_header("x-channelgate-route", conn.route.path.to_string())?;
    req.insert_header("x-request-id", conn.request_id.as_str())?;
    if let Some(u) = &conn.user {
        req.insert_header("x-channelgate-user", u.as_str())?;
    }
    for (k, v) in &conn.params {
        req.insert_header(format!("x-channelgate-param-{k}"), v.as_str())?;
    }
    for (name, v) in &conn.credentials {
        req.insert_header(*name, v.clone())?;
    }
    if !req.headers.contains_key("host") {
        req.insert_header("host", "localhost")?;
    }
    Ok(req)
}
