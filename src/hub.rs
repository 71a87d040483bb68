//! The group hub: local fan-out from a group (or one channel) to the connections in it.
//! A message becomes a frame once ([`crate::ws::prepared`]); every member's [`Link`] gets
//! the same bytes, written to its socket at once when nothing is pending for it, else
//! queued. A full queue is the slow-client policy's decision, counted; nobody waits for it.

pub mod membership;
pub mod message;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

pub use membership::{Membership, QueueLimits};
pub use message::{Event, Outbound};

use crate::metrics::Metrics;
use crate::ws::config::SlowClient;
use crate::ws::link::{Link, Refused};

/// Channels' group-name rule (channels.layers): `^[a-zA-Z\d\-_.]+$`, shorter than 100.
pub fn check_group_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() >= 100 {
        return Err("a group name has 1 to 99 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "a group name may only hold ASCII letters, digits, - _ and . (found {c:?})"
        ));
    }
    Ok(())
}

/// One connection, as the hub sees it.
#[derive(Clone)]
pub struct Member {
    pub id: u64,
    link: Arc<Link>,
    slow: SlowClient,
}

/// Told when a group gains its first local member or loses its last one (the AMQP broker
/// binds and unbinds its queue then).
pub trait GroupListener: Send + Sync {
    fn first_joined(&self, group: &str);
    fn last_left(&self, group: &str);
}

/// Direct writes one fan-out may spend on its publishing thread; the members after that
/// get the message queued, written by their own tasks on every core, so a large group's
/// last member does not wait for a thousand sends in a row.
const DIRECT_BUDGET: Duration = Duration::from_millis(2);

/// A message arriving within this long after the group's previous fan-out ended is part of
/// a burst: it is queued for every member, and each member's task writes what piled up in
/// one vectored write, instead of a send per message from one thread.
const BURST_GAP: Duration = Duration::from_millis(2);

#[derive(Default)]
struct Group {
    members: HashMap<u64, Member>,
    /// When the last fan-out to this group ended, in ns since the hub started.
    last_end: AtomicU64,
}

#[derive(Default)]
struct Inner {
    groups: HashMap<String, Group>,
    channels: HashMap<String, Member>,
}

pub struct Hub {
    inner: RwLock<Inner>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
    listener: OnceLock<Arc<dyn GroupListener>>,
    /// What [`Group::last_end`] counts from.
    epoch: Instant,
}

/// What one publish did locally.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    pub delivered: usize,
    pub dropped: usize,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Hub> {
        Arc::new(Hub {
            inner: RwLock::new(Inner::default()),
            next_id: AtomicU64::new(1),
            metrics,
            listener: OnceLock::new(),
            epoch: Instant::now(),
        })
    }

    pub fn set_listener(&self, l: Arc<dyn GroupListener>) {
        let _ = self.listener.set(l);
    }

    /// A new member whose link is bounded by `limits`; the link also goes to the
    /// connection's task, which attaches the socket and closes it when the connection ends.
    pub fn member(&self, limits: QueueLimits) -> (Member, Arc<Link>) {
        let link = Arc::new(Link::new(
            limits.messages,
            limits.bytes,
            limits.deflate,
            self.metrics.ws.frames_out.clone(),
            self.metrics.ws.bytes_out.clone(),
        ));
        let m = Member {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            link: link.clone(),
            slow: limits.slow,
        };
        (m, link)
    }

    // A poisoned lock means a panic while holding it, in code that does not panic; the data
    // (maps of queues) stays consistent, so go on with it.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register_channel(&self, channel: &str, m: &Member) {
        self.write().channels.insert(channel.to_string(), m.clone());
    }

    /// Removes `channel` if member `id` still holds it.
    pub fn unregister_channel(&self, channel: &str, id: u64) {
        let mut inner = self.write();
        if inner.channels.get(channel).is_some_and(|m| m.id == id) {
            inner.channels.remove(channel);
        }
    }

    pub fn join(&self, group: &str, m: &Member) {
        let first = {
            let mut inner = self.write();
            let members = &mut inner.groups.entry(group.to_string()).or_default().members;
            let first = members.is_empty();
            if members.insert(m.id, m.clone()).is_none() {
                self.metrics.hub.memberships.inc();
            }
            first
        };
        if first {
            self.metrics.hub.groups.inc();
            if let Some(l) = self.listener.get() {
                l.first_joined(group);
            }
        }
    }

    pub fn leave(&self, group: &str, id: u64) {
        let last = {
            let mut inner = self.write();
            let Some(members) = inner.groups.get_mut(group).map(|g| &mut g.members) else {
                return;
            };
            if members.remove(&id).is_some() {
                self.metrics.hub.memberships.dec();
            }
            let last = members.is_empty();
            if last {
                inner.groups.remove(group);
            }
            last
        };
        if last {
            self.metrics.hub.groups.dec();
            if let Some(l) = self.listener.get() {
                l.last_left(group);
            }
        }
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.read().groups.contains_key(group)
    }

    pub fn member_count(&self, group: &str) -> usize {
        self.read().groups.get(group).map_or(0, |g| g.members.len())
    }

    pub fn has_channel(&self, channel: &str) -> bool {
        self.read().channels.contains_key(channel)
    }

    pub fn groups(&self) -> Vec<String> {
        self.read().groups.keys().cloned().collect()
    }

    fn offer(&self, m: &Member, out: &Outbound, direct: bool, d: &mut Delivery) {
        match m.link.offer(out, direct) {
            Ok(()) => d.delivered += 1,
            Err(Refused::Closed) => {}
            Err(Refused::Full) => {
                d.dropped += 1;
                match (m.slow, out) {
                    (SlowClient::Drop, Outbound::Frame(_)) => {
                        self.metrics
                            .hub
                            .drops
                            .with_label_values(&["slow_client_message"])
                            .inc();
                    }
                    _ => {
                        self.metrics
                            .hub
                            .drops
                            .with_label_values(&["slow_client_closed"])
                            .inc();
                        m.link.kick(1013);
                    }
                }
            }
        }
    }

    /// Fans `event` out to the local members of `group`.
    pub fn deliver_group(&self, group: &str, event: &Event) -> Result<Delivery, String> {
        let out = event.to_outbound()?;
        let mut d = Delivery::default();
        if let Some(g) = self.read().groups.get(group) {
            let start = Instant::now();
            let since = |t: Instant| t.duration_since(self.epoch).as_nanos() as u64;
            let burst =
                since(start) < g.last_end.load(Ordering::Relaxed) + BURST_GAP.as_nanos() as u64;
            let mut direct = !burst;
            for (i, m) in g.members.values().enumerate() {
                if direct && i % 16 == 15 && start.elapsed() > DIRECT_BUDGET {
                    direct = false;
                }
                self.offer(m, &out, direct, &mut d);
            }
            g.last_end.store(since(Instant::now()), Ordering::Relaxed);
        }
        self.metrics.hub.delivered.inc_by(d.delivered as u64);
        Ok(d)
    }

    /// Sends `event` to the one connection named `channel`, if it is here.
    pub fn deliver_channel(&self, channel: &str, event: &Event) -> Result<Delivery, String> {
        let out = event.to_outbound()?;
        let mut d = Delivery::default();
        if let Some(m) = self.read().channels.get(channel) {
            self.offer(m, &out, true, &mut d);
        }
        self.metrics.hub.delivered.inc_by(d.delivered as u64);
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::link::Event as LinkEvent;
    use crate::ws::prepared::Prepared;
    use std::future::poll_fn;

    #[test]
    fn group_names() {
        assert!(check_group_name("chat-lobby_1.x").is_ok());
        assert!(check_group_name("bad name").is_err());
        assert!(check_group_name(&"a".repeat(100)).is_err());
        assert!(check_group_name("").is_err());
    }

    #[tokio::test]
    async fn fans_out_once_and_kicks_slow_members() {
        let hub = Hub::new(Arc::new(Metrics::new()));
        let limits = |messages| QueueLimits {
            messages,
            bytes: 1 << 20,
            slow: SlowClient::Close,
            deflate: None,
        };
        // Not attached to sockets: deliveries queue.
        let (a, link_a) = hub.member(limits(8));
        let (b, link_b) = hub.member(limits(1));
        hub.join("g", &a);
        hub.join("g", &b);
        let ev = Event::text("t", "hi".into());
        assert_eq!(
            hub.deliver_group("g", &ev).unwrap(),
            Delivery {
                delivered: 2,
                dropped: 0
            }
        );
        // b's queue (1) is full now: the next message kicks it, a still gets it.
        assert_eq!(
            hub.deliver_group("g", &ev).unwrap(),
            Delivery {
                delivered: 1,
                dropped: 1
            }
        );
        assert_eq!(
            poll_fn(|cx| link_b.poll(cx, None)).await,
            LinkEvent::Kicked(1013)
        );
        assert_eq!(link_a.len(), 2);
        let (ours, mut theirs) = tokio::io::duplex(1024);
        link_a.attach(Box::new(ours));
        // The task's first poll writes what was queued before the socket came.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(link_a.poll(&mut cx, None).is_pending());
        let mut got = [0u8; 8];
        tokio::io::AsyncReadExt::read_exact(&mut theirs, &mut got)
            .await
            .unwrap();
        assert_eq!(&got, b"\x81\x02hi\x81\x02hi");
        // Both got the very same frame bytes.
        let Outbound::Frame(p) = ev.to_outbound().unwrap() else {
            panic!()
        };
        assert_eq!(*p, Prepared::text("hi"));
        hub.leave("g", a.id);
        hub.leave("g", b.id);
        assert!(!hub.has_group("g"));
        assert_eq!(hub.deliver_group("g", &ev).unwrap().delivered, 0);
    }
}
