//! A connection's place in the hub, as a guard: registered under its channel name, joined
//! to its fixed groups and to the groups it subscribed to later (AWX). Dropping it undoes
//! all of that on every path: a normal close, an error, a panic, or an accept future that
//! was dropped between the join and the 101.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use super::{Delivery, Hub, Member, Outbound};
use crate::ws::config::SlowClient;
use crate::ws::link::Link;
use crate::ws::prepared::DeflateOut;

/// How a member's queue is bounded and what happens when it is full.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    pub messages: usize,
    pub bytes: usize,
    pub slow: SlowClient,
    /// Compressed frames for a client that agreed permessage-deflate.
    pub deflate: Option<DeflateOut>,
}

pub struct Membership {
    hub: Arc<Hub>,
    member: Member,
    link: Arc<Link>,
    channel: String,
    groups: Vec<String>,
    /// Groups joined after connecting; changed only through [`Membership::replace`].
    dynamic: Mutex<Dynamic>,
}

#[derive(Default)]
struct Dynamic {
    groups: BTreeSet<String>,
    /// [`Membership::close`] ran: nothing is joined any more.
    closed: bool,
}

impl Membership {
    /// Registers `channel` and joins `groups` (before the 101, so that a message published
    /// once the client is connected finds it; it waits in the queue until the session runs).
    pub fn join(hub: &Arc<Hub>, channel: &str, groups: &[String], limits: QueueLimits) -> Self {
        let (member, link) = hub.member(limits);
        hub.register_channel(channel, &member);
        for g in groups {
            hub.join(g, &member);
        }
        Membership {
            hub: hub.clone(),
            member,
            link,
            channel: channel.to_string(),
            groups: groups.to_vec(),
            dynamic: Mutex::new(Dynamic::default()),
        }
    }

    pub fn member(&self) -> &Member {
        &self.member
    }

    /// The connection's way out, which its session attaches the socket to.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Queues `out` for this connection alone (a reply to its own frame), under the same
    /// bounds and slow-client policy as group messages.
    pub fn send(&self, out: Outbound) -> Delivery {
        let mut d = Delivery::default();
        self.hub.offer(&self.member, &out, true, &mut d);
        d
    }

    // The set is only touched by `replace` and `close`, which do not panic holding it.
    fn dynamic(&self) -> std::sync::MutexGuard<'_, Dynamic> {
        self.dynamic.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `wanted` the set of groups joined after connecting; returns (left, joined).
    /// After [`Membership::close`] it joins nothing.
    pub fn replace(&self, wanted: BTreeSet<String>) -> (Vec<String>, Vec<String>) {
        let mut guard = self.dynamic();
        if guard.closed {
            return (Vec::new(), Vec::new());
        }
        let dynamic = &mut guard.groups;
        let left: Vec<String> = dynamic.difference(&wanted).cloned().collect();
        let joined: Vec<String> = wanted.difference(dynamic).cloned().collect();
        for g in &left {
            self.hub.leave(g, self.member.id);
        }
        for g in &joined {
            self.hub.join(g, &self.member);
        }
        *dynamic = wanted;
        (left, joined)
    }

    /// The groups joined after connecting.
    pub fn subscribed(&self) -> Vec<String> {
        self.dynamic().groups.iter().cloned().collect()
    }

    /// Whether the connection has ended ([`Membership::close`]).
    pub fn is_closed(&self) -> bool {
        self.dynamic().closed
    }

    /// Leaves every group, frees the channel name and closes the queue, now (the session
    /// calls it when the connection ends, while work it started may still hold the
    /// guard). Idempotent; dropping the guard does it too.
    pub fn close(&self) {
        let dynamic = {
            let mut d = self.dynamic();
            if d.closed {
                return;
            }
            d.closed = true;
            std::mem::take(&mut d.groups)
        };
        for g in self.groups.iter().chain(dynamic.iter()) {
            self.hub.leave(g, self.member.id);
        }
        self.hub.unregister_channel(&self.channel, self.member.id);
        self.link.close();
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Event;
    use crate::metrics::Metrics;

    const LIMITS: QueueLimits = QueueLimits {
        messages: 8,
        bytes: 1 << 20,
        slow: SlowClient::Close,
        deflate: None,
    };

    #[test]
    fn dropping_the_guard_leaves_everything() {
        let hub = Hub::new(Arc::new(Metrics::new()));
        let m = Membership::join(&hub, "chan-a", &["g1".into()], LIMITS);
        let (left, joined) = m.replace(["d1".into(), "d2".into()].into());
        assert!(left.is_empty());
        assert_eq!(joined, vec!["d1", "d2"]);
        let (left, joined) = m.replace(["d2".into(), "d3".into()].into());
        assert_eq!((left, joined), (vec!["d1".into()], vec!["d3".into()]));
        assert!(hub.has_group("g1") && hub.has_group("d3") && !hub.has_group("d1"));
        assert!(hub.has_channel("chan-a"));
        assert_eq!(
            m.send(Event::text("t", "me".into()).to_outbound().unwrap())
                .delivered,
            1
        );
        assert_eq!(m.link().len(), 1);
        m.close();
        assert!(hub.groups().is_empty() && m.is_closed());
        assert!(m.replace(["late".into()].into()).1.is_empty());
        assert!(!hub.has_group("late"));
        drop(m);
        assert!(hub.groups().is_empty());
        assert!(!hub.has_channel("chan-a"));
    }

    #[tokio::test]
    async fn a_dropped_accept_future_leaves_too() {
        let hub = Hub::new(Arc::new(Metrics::new()));
        let accept = {
            let hub = hub.clone();
            async move {
                let _m = Membership::join(&hub, "chan-b", &["g".into()], LIMITS);
                // The takeover that never completes.
                std::future::pending::<()>().await;
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_millis(10), accept).await;
        assert!(!hub.has_group("g"));
        assert!(!hub.has_channel("chan-b"));
    }
}
