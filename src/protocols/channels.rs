//! The `channels` protocol (the default): the route's fixed groups deliver to the client,
//! and what the client sends is handled per the route's `inbound` mode: dropped (counted),
//! echoed, published to a group, or POSTed to the app (whose answer goes back to the
//! sender). Failures are counted and logged; they never end the connection.

use bytes::Bytes;
use pingora::http::RequestHeader;

use super::{ClientProtocol, Ctx};
use crate::hub::Event;
use crate::ws::config::Inbound;
use crate::ws::frame::Message;
use crate::ws::{Conn, Endpoint};

/// A `channels` connection: no state of its own.
pub struct Channels;

#[async_trait::async_trait]
impl ClientProtocol for Channels {
    async fn message(&mut self, cx: &Ctx, msg: Message) {
        match &cx.conn.route.inbound {
            Inbound::Drop => count(&cx.ep, "drop", "dropped"),
            // Through the connection's queue, under its bounds: a client that sends
            // without reading fills it and meets the slow-client policy.
            Inbound::Echo => {
                cx.send(&msg);
                count(&cx.ep, "echo", "ok");
            }
            Inbound::Group { .. } | Inbound::Http { .. } => call(cx, msg).await,
        }
    }
}

/// The `mode` label of `channelgate_ws_inbound_total` for a route's inbound handling.
pub fn mode(inbound: &Inbound) -> &'static str {
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

/// Publishes a message to the route's group or POSTs it to the app (a non-empty answer
/// goes back to the sender through its queue). Failures are counted and logged.
async fn call(cx: &Ctx, msg: Message) {
    let (ep, conn) = (&*cx.ep, &*cx.conn);
    let route = &conn.route;
    let count = |mode: &str, outcome: &str| count(ep, mode, outcome);
    match &route.inbound {
        Inbound::Drop | Inbound::Echo => {}
        Inbound::Group { event_type, .. } => {
            let Some(group) = &conn.inbound_group else {
                return;
            };
            let mut event = match msg {
                Message::Text(t) => Event::text(event_type, t),
                Message::Binary(b) => Event::binary(event_type, b),
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
                            (true, Ok(s)) => Message::Text(s),
                            _ => Message::Binary(a.body),
                        };
                        cx.send(&reply);
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

#[cfg(test)]
mod tests {
    //! Over an in-memory stream: the real session, a tokio-tungstenite client.
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;

    use crate::hub::Event;
    use crate::ws::testing::{endpoint, serve, Who};

    async fn next_text(
        client: &mut tokio_tungstenite::WebSocketStream<tokio::io::DuplexStream>,
    ) -> String {
        loop {
            match client.next().await {
                Some(Ok(Ws::Text(t))) => return t.to_string(),
                Some(Ok(Ws::Ping(_) | Ws::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn echo_answers_the_sender_and_groups_reach_it() {
        let ep = endpoint(
            "127.0.0.1:1",
            "[[ws]]\npath = \"/e/\"\ninbound = \"echo\"\ngroups = [\"lobby\"]\n",
        );
        let who = Who {
            groups: vec!["lobby".into()],
            ..Who::default()
        };
        let (_m, mut client) = serve(&ep, 0, who).await;
        client.send(Ws::Text("hello".into())).await.unwrap();
        assert_eq!(next_text(&mut client).await, "hello");
        client
            .send(Ws::Binary(vec![0u8, 1, 2].into()))
            .await
            .unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Ws::Binary(vec![0u8, 1, 2].into())
        );
        let d = ep
            .hub
            .deliver_group("lobby", &Event::text("chat.message", "to all".into()))
            .unwrap();
        assert_eq!(d.delivered, 1);
        assert_eq!(next_text(&mut client).await, "to all");
        let echoed = ep
            .metrics
            .ws
            .inbound
            .with_label_values(&["echo", "ok"])
            .get();
        assert_eq!(echoed, 2);
        client.close(None).await.unwrap();
        // The server answers the close and ends the connection.
        while let Some(Ok(_)) = client.next().await {}
        assert!(!ep.hub.has_group("lobby"));
    }

    #[tokio::test]
    async fn drop_counts_and_answers_nothing() {
        let ep = endpoint("127.0.0.1:1", "[[ws]]\npath = \"/d/\"\n");
        let (_m, mut client) = serve(&ep, 0, Who::default()).await;
        client.send(Ws::Text("into the void".into())).await.unwrap();
        let quiet =
            tokio::time::timeout(std::time::Duration::from_millis(100), client.next()).await;
        assert!(quiet.is_err(), "nothing comes back: {quiet:?}");
        let dropped = ep
            .metrics
            .ws
            .inbound
            .with_label_values(&["drop", "dropped"])
            .get();
        assert_eq!(dropped, 1);
    }

    #[tokio::test]
    async fn inbound_group_publishes_to_the_room() {
        let ep = endpoint(
            "127.0.0.1:1",
            "[[ws]]\npath = \"/g/\"\ngroups = [\"room\"]\ninbound = { group = \"room\", type = \"chat.message\" }\n",
        );
        let room = || Who {
            groups: vec!["room".into()],
            ..Who::default()
        };
        let (_a, mut alice) = serve(&ep, 0, room()).await;
        let (_b, mut bob) = serve(&ep, 0, room()).await;
        alice.send(Ws::Text("hi bob".into())).await.unwrap();
        // The event (no `text` field mapping: it has `text`) reaches both members.
        assert_eq!(next_text(&mut bob).await, "hi bob");
        assert_eq!(next_text(&mut alice).await, "hi bob");
    }
}
