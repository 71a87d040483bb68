//! Client protocols: what the frames on a route mean. `channels` (the default) is the
//! route's `inbound` mode over fixed groups ([`channels`]); `awx` is AWX's subscription
//! protocol ([`awx`]); `amqp-bridge` is the CLU pass-through ([`bridge`]). Each implements
//! [`ClientProtocol`] over the shared connection ([`Ctx`]): the WebSocket engine under them
//! (codec, socket, queue) can change without touching them, and a new protocol is one
//! module here plus a line in [`for_route`].

pub mod awx;
pub mod bridge;
pub mod channels;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use pingora::http::RequestHeader;

use crate::hub::{Delivery, Membership, Outbound};
use crate::ws::config::{Protocol, RouteConfig};
use crate::ws::frame::Message;
use crate::ws::prepared::Prepared;
use crate::ws::{Conn, Endpoint};

/// What a protocol sees of its connection: the shared endpoint, who the client is, and its
/// place in the hub (groups, and the way out for replies).
#[derive(Clone)]
pub struct Ctx {
    pub ep: Arc<Endpoint>,
    pub conn: Arc<Conn>,
    pub membership: Arc<Membership>,
}

impl Ctx {
    /// Sends `msg` to this client alone, through its queue (same bounds and slow-client
    /// policy as group messages).
    pub fn send(&self, msg: &Message) -> Delivery {
        self.membership
            .send(Outbound::Frame(Arc::new(Prepared::message(msg))))
    }

    /// Sends `v` as one text frame.
    pub fn send_json(&self, v: &serde_json::Value) -> Delivery {
        self.send(&Message::Text(v.to_string()))
    }
}

/// One connection's protocol, holding that connection's state. The engine calls `open`
/// once after the 101 (before any client frame is read), `message` for every text or
/// binary message the client sends, in order, beside the connection's loop (so it may call
/// the app and take its time; at most [`crate::ws::calls::PENDING`] messages wait), and
/// `close` once when the connection has ended. Replies go through [`Ctx::send`].
#[async_trait]
pub trait ClientProtocol: Send {
    fn open(&mut self, _cx: &Ctx) {}
    async fn message(&mut self, cx: &Ctx, msg: Message);
    fn close(&mut self, _cx: &Ctx) {}
}

/// The protocol a new connection on `route` speaks.
pub fn for_route(route: &RouteConfig) -> Box<dyn ClientProtocol> {
    match route.protocol {
        Protocol::Channels => Box::new(channels::Channels),
        Protocol::Awx => Box::new(awx::Awx::default()),
        Protocol::AmqpBridge(_) => Box::new(bridge::BridgeClient),
    }
}

/// Per-group decisions cached per connection, at most this many.
const MAX_CACHED: usize = 4096;

/// Authorize calls one connection has in flight at once.
pub const AUTHORIZE_CONCURRENCY: usize = 4;

/// The authorization answers a connection has seen so far (AWX). Its subscriptions
/// themselves live in its [`crate::hub::Membership`], which leaves them on every path.
#[derive(Default)]
pub struct Subscriptions {
    cache: HashMap<String, bool>,
}

/// `*` matches any run of characters.
pub fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first)
        || !name[first.len()..].ends_with(last)
        || name.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl Subscriptions {
    /// May this connection join `group`, without asking the app? The auth answer's
    /// `subscribe` patterns allow; an earlier answer is reused; with neither patterns nor an
    /// `authorize` path every group is allowed. None: the app must be asked.
    pub fn decided(&self, conn: &Conn, group: &str) -> Option<bool> {
        if let Some(v) = self.cache.get(group) {
            return Some(*v);
        }
        let by_pattern = conn
            .subscribe
            .as_ref()
            .map(|ps| ps.iter().any(|p| glob(p, group)));
        match (by_pattern, &conn.route.authorize) {
            (Some(true), _) => Some(true),
            (_, Some(_)) => None,
            (Some(false), None) => Some(false),
            (None, None) => Some(true),
        }
    }

    /// Asks the app about each of `groups` (the route's `authorize` path), at most
    /// [`AUTHORIZE_CONCURRENCY`] at a time; the answers come back in order and are cached.
    pub async fn ask_all(&mut self, ep: &Endpoint, conn: &Conn, groups: &[String]) -> Vec<bool> {
        let Some(cfg) = &conn.route.authorize else {
            return vec![true; groups.len()];
        };
        // The calls as a list first: a closure inside the stream would make this future's
        // Send-ness depend on a higher-ranked lifetime the compiler cannot prove.
        let calls: Vec<_> = groups
            .iter()
            .map(|g| ask(ep, conn, &cfg.path, cfg.timeout, g))
            .collect();
        let answers: Vec<bool> = futures::stream::iter(calls)
            .buffered(AUTHORIZE_CONCURRENCY)
            .collect()
            .await;
        for (g, allowed) in groups.iter().zip(&answers) {
            if self.cache.len() < MAX_CACHED {
                self.cache.insert(g.clone(), *allowed);
            }
        }
        answers
    }
}

/// `GET path?group=<group>` with the client's credentials; 2xx allows.
async fn ask(
    ep: &Endpoint,
    conn: &Conn,
    path: &str,
    timeout: std::time::Duration,
    group: &str,
) -> bool {
    let target = format!(
        "{path}{}group={group}",
        if path.contains('?') { '&' } else { '?' }
    );
    let build = || -> pingora::Result<RequestHeader> {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None)?;
        for (name, v) in &conn.credentials {
            req.insert_header(*name, v.clone())?;
        }
        if !req.headers.contains_key("host") {
            req.insert_header("host", "localhost")?;
        }
        req.insert_header("x-channelgate-channel", conn.channel.as_str())?;
        req.insert_header("x-channelgate-group", group)?;
        if let Some(u) = &conn.user {
            req.insert_header("x-channelgate-user", u.as_str())?;
        }
        Ok(req)
    };
    let outcome = match build() {
        Ok(req) => ep.upstreams.call(req, Bytes::new(), timeout).await,
        Err(e) => {
            crate::client_warn!("authorize_unbuildable", error = %e, "cannot build the authorize request");
            return false;
        }
    };
    let count = |outcome: &str| {
        ep.metrics
            .ws
            .inbound
            .with_label_values(&["authorize", outcome])
            .inc()
    };
    match outcome {
        Ok(a) if (200..300).contains(&a.status) => {
            count("allowed");
            true
        }
        Ok(_) => {
            count("denied");
            false
        }
        Err(e) => {
            count("error");
            crate::client_warn!("authorize_failed", channel = %conn.channel, group, error = %e, "authorize request failed; denying");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("jobs-*", "jobs-status_changed"));
        assert!(glob("job_events-12", "job_events-12"));
        assert!(!glob("job_events-12", "job_events-13"));
        assert!(glob("*", "x"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxc"));
        assert!(!glob("ab*ba", "aba"));
    }
}
