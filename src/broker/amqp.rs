//! The RabbitMQ broker, wire-compatible with channels_rabbitmq (shared/wire.md §1): one
//! connection per process, exchange `groups` (direct), one exclusive queue
//! `channels_<12 letters>` bound to the groups that have local members. Python code that
//! publishes with channels_rabbitmq (or its msgpack body by hand) reaches channelgate's
//! clients, and channelgate's publishes reach daphne consumers.
//!
//! One supervisor task owns the connection: it connects with capped, jittered backoff
//! (trying the nodes of `[broker] url` in turn), declares the queue, replays every
//! binding, and only then reports itself up (`channelgate_broker_up`, `/readyz`,
//! `/publish`): a message RabbitMQ accepts while we are up is routed to our queue. It then
//! consumes and keeps the bindings reconciled with the hub's groups ([`bindings`]).
//! WebSocket clients stay connected while RabbitMQ is away.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use pingora::server::ShutdownWatch;

use super::bindings::{self, Pending, Work};
use super::codec::{self, Target};
use super::connection::{self, Link};
use super::{AmqpConfig, Broker, PublishError, Published};
use crate::hub::{Event, GroupListener, Hub};
use crate::metrics::Metrics;

/// How long a publish waits for RabbitMQ's confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest one step of the consuming session (an ack; a round of bind/unbind gets six)
/// may take
/// before the connection is taken as lost: lapin may leave a call on a dead connection
/// waiting forever, and the session loop (and its status watchdog) with it.
const STEP: Duration = Duration::from_secs(10);

pub struct AmqpBroker {
    cfg: AmqpConfig,
    /// Our queue's name, also the prefix of our channel names.
    queue: String,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    up: AtomicBool,
    /// The channel publishes go through (confirm mode), while connected.
    publisher: Mutex<Option<Channel>>,
    /// Groups whose binding may have changed while connected (bounded).
    pending: Pending,
    /// Index in `cfg.urls` of the node connected to (or tried first next time).
    node: AtomicUsize,
    /// The last session ended by losing its connection.
    lost: AtomicBool,
    /// Decode failure kinds already logged (each kind is logged once, with a sample).
    logged: Mutex<HashSet<&'static str>>,
}

/// `amqp://user:***@host/vhost`: the URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

impl AmqpBroker {
    pub fn new(cfg: AmqpConfig, hub: Arc<Hub>, metrics: Arc<Metrics>) -> Arc<AmqpBroker> {
        let b = Arc::new(AmqpBroker {
            cfg,
            queue: super::new_instance_name(),
            hub: hub.clone(),
            metrics,
            up: AtomicBool::new(false),
            publisher: Mutex::new(None),
            pending: Pending::default(),
            node: AtomicUsize::new(0),
            lost: AtomicBool::new(false),
            logged: Mutex::new(HashSet::new()),
        });
        hub.set_listener(b.clone());
        b
    }

    fn set_up(&self, up: bool, publisher: Option<Channel>) {
        *self.publisher.lock().unwrap_or_else(|e| e.into_inner()) = publisher;
        self.up.store(up, Ordering::SeqCst);
        self.metrics.broker.up.set(up as i64);
    }

    fn publisher(&self) -> Option<Channel> {
        self.publisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(self.cfg.capacity as i64),
        );
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString(LongString::from("reject-publish")),
        );
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(self.cfg.expiry.as_millis() as i64),
        );
        args
    }

    /// Tries every node of `[broker] url` once, starting with the one after the node whose
    /// connection was lost last, and declares on the first that answers.
    async fn connect(&self) -> lapin::Result<(Connection, Channel, Channel)> {
        let n = self.cfg.urls.len();
        let mut start = self.node.load(Ordering::SeqCst);
        if self.lost.swap(false, Ordering::SeqCst) {
            start = (start + 1) % n;
        }
        let mut last = connection::closed();
        for k in 0..n {
            let i = (start + k) % n;
            match self.connect_to(&self.cfg.urls[i]).await {
                Ok(s) => {
                    self.node.store(i, Ordering::SeqCst);
                    return Ok(s);
                }
                Err(e) => {
                    tracing::debug!(broker = %redact(&self.cfg.urls[i]), error = %e, "RabbitMQ node did not take the connection");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Connects to one node and declares what channels_rabbitmq declares.
    async fn connect_to(&self, url: &str) -> lapin::Result<(Connection, Channel, Channel)> {
        let name = format!(
            "channelgate {} {}",
            hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "-".into()),
            std::process::id()
        );
        let conn = connection::open(url, name).await?;
        let consume = conn.create_channel().await?;
        let exchange_opts = ExchangeDeclareOptions {
            durable: false,
            auto_delete: false,
            ..Default::default()
        };
        consume
            .exchange_declare(
                self.cfg.groups_exchange.as_str().into(),
                ExchangeKind::Direct,
                exchange_opts,
                FieldTable::default(),
            )
            .await?;
        let queue_opts = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        consume
            .queue_declare(self.queue.as_str().into(), queue_opts, self.queue_args())
            .await?;
        consume
            .basic_qos(self.cfg.prefetch, BasicQosOptions::default())
            .await?;
        let publish = conn.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok((conn, consume, publish))
    }

    async fn bind(&self, ch: &Channel, group: &str, bind: bool) -> lapin::Result<()> {
        let (q, x, k): (ShortString, ShortString, ShortString) = (
            self.queue.as_str().into(),
            self.cfg.groups_exchange.as_str().into(),
            group.into(),
        );
        let r = if bind {
            ch.queue_bind(q, x, k, QueueBindOptions::default(), FieldTable::default())
                .await
        } else {
            ch.queue_unbind(q, x, k, FieldTable::default()).await
        };
        let op = if bind { "bind" } else { "unbind" };
        let outcome = if r.is_ok() { "ok" } else { "error" };
        self.metrics
            .broker
            .bindings
            .with_label_values(&[op, outcome])
            .inc();
        r
    }

    /// Brings the queue's bindings (`bound`) in line with the hub's groups, for the groups
    /// `work` names. Each group is checked against the hub when its turn comes, so a join
    /// and a leave that race leave no binding behind.
    async fn reconcile(
        &self,
        ch: &Channel,
        bound: &mut HashSet<String>,
        work: Work,
    ) -> lapin::Result<()> {
        let groups = match work {
            Work::Nothing => return Ok(()),
            Work::Groups(g) => g,
            Work::Everything => {
                let desired: HashSet<String> = self.hub.groups().into_iter().collect();
                let (mut bind, unbind) = bindings::diff(&desired, bound);
                bind.extend(unbind);
                bind
            }
        };
        for g in groups {
            match (self.hub.has_group(&g), bound.contains(&g)) {
                (true, false) => {
                    self.bind(ch, &g, true).await?;
                    bound.insert(g);
                }
                (false, true) => {
                    self.bind(ch, &g, false).await?;
                    bound.remove(&g);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn decode_failed(&self, e: &codec::DecodeError, body: &[u8]) {
        self.metrics
            .broker
            .decode_failures
            .with_label_values(&[e.kind])
            .inc();
        let first = self
            .logged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(e.kind);
        if first {
            let sample = String::from_utf8_lossy(&body[..body.len().min(64)]).into_owned();
            tracing::warn!(
                kind = %e.kind,
                detail = %e.detail,
                bytes = body.len(),
                sample = ?sample,
                "undecodable message on the broker queue: acked and dropped (logged once per kind)"
            );
        }
    }

    fn deliver(&self, data: &[u8], content_type: Option<&str>) {
        self.metrics.broker.consumed.inc();
        if data.len() > crate::publish::MAX_BODY * 16 {
            let e = codec::DecodeError {
                kind: "too_large",
                detail: format!("{} bytes", data.len()),
            };
            return self.decode_failed(&e, data);
        }
        let (target, event) = match codec::decode(data, content_type) {
            Ok(v) => v,
            Err(e) => return self.decode_failed(&e, data),
        };
        let res = match &target {
            Target::Group(g) => self.hub.deliver_group(g, &event),
            Target::Channel(c) => self.hub.deliver_channel(c, &event),
        };
        if let Err(e) = res {
            self.decode_failed(
                &codec::DecodeError {
                    kind: "bad_event",
                    detail: e,
                },
                data,
            );
        }
    }

    /// One connected session: replay every binding, start consuming, report up, then
    /// consume and reconcile bindings until the connection fails (Err) or shutdown (Ok).
    async fn session(
        &self,
        conn: &Connection,
        ch: &Channel,
        publish: Channel,
        shutdown: &mut ShutdownWatch,
    ) -> lapin::Result<()> {
        let mut bound = HashSet::new();
        self.pending.connected();
        self.reconcile(ch, &mut bound, Work::Everything).await?;
        let mut consumer = ch
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.set_up(true, Some(publish));
        tracing::info!(
            broker = %redact(self.url()),
            queue = %self.queue,
            groups = bound.len(),
            "connected to RabbitMQ, queue declared and bindings replayed: up"
        );
        // lapin reports a lost connection through the consumer stream, but not always (a
        // reset seen by its I/O loop left the stream open in one test run): the status is
        // also checked twice a second, so readiness drops within that.
        let mut watchdog = tokio::time::interval(std::time::Duration::from_millis(500));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        let _ = conn.close(200, "channelgate shutting down".into()).await;
                        return Ok(());
                    }
                }
                _ = watchdog.tick() => {
                    if !conn.status().connected() || !ch.status().connected() {
                        return Err(connection::closed());
                    }
                }
                _ = self.pending.wait() => {
                    let work = self.pending.take();
                    tokio::time::timeout(STEP * 6, self.reconcile(ch, &mut bound, work))
                        .await
                        .map_err(|_| connection::closed())??;
                }
                d = consumer.next() => match d {
                    Some(Ok(d)) => {
                        let ct = d.properties.content_type().as_ref().map(|c| c.to_string());
                        self.deliver(&d.data, ct.as_deref());
                        // Bounded: an ack on a connection that just died may never resolve.
                        tokio::time::timeout(STEP, d.acker.ack(BasicAckOptions::default()))
                            .await
                            .map_err(|_| connection::closed())??;
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Err(connection::closed()),
                },
            }
        }
    }

    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: Vec<u8>,
    ) -> Result<(), PublishError> {
        let ch = self
            .publisher()
            .ok_or_else(|| PublishError::Unavailable("not connected to RabbitMQ".into()))?;
        let outcome = async {
            let confirm = ch
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default(),
                )
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            match confirm.await {
                Ok(Confirmation::Ack(_)) | Ok(Confirmation::NotRequested) => Ok(()),
                Ok(Confirmation::Nack(_)) => Err(PublishError::Refused(
                    "RabbitMQ nacked the message (a full queue rejects publishes)".into(),
                )),
                Err(e) => Err(PublishError::Unavailable(e.to_string())),
            }
        };
        let result = match tokio::time::timeout(CONFIRM_TIMEOUT, outcome).await {
            Ok(r) => r,
            Err(_) => Err(PublishError::Unavailable(format!(
                "no confirm from RabbitMQ within {CONFIRM_TIMEOUT:?}"
            ))),
        };
        let label = match &result {
            Ok(()) => "ok",
            Err(PublishError::Refused(_)) => "refused",
            Err(_) => "error",
        };
        self.metrics
            .broker
            .published
            .with_label_values(&[label])
            .inc();
        result
    }
}

impl GroupListener for AmqpBroker {
    fn first_joined(&self, group: &str) {
        self.pending.mark(group);
    }

    fn last_left(&self, group: &str) {
        self.pending.mark(group);
    }
}

#[async_trait]
impl Broker for AmqpBroker {
    async fn group_send(&self, group: &str, event: Event) -> Result<Published, PublishError> {
        event.to_outbound().map_err(PublishError::Invalid)?;
        let body = codec::encode(&event, &Target::Group(group.to_string()));
        let local = self.hub.member_count(group);
        self.publish(&self.cfg.groups_exchange, group, body).await?;
        Ok(Published { local })
    }

    async fn send(&self, channel: &str, event: Event) -> Result<Published, PublishError> {
        event.to_outbound().map_err(PublishError::Invalid)?;
        let queue = channel.split('!').next().unwrap_or(channel);
        let body = codec::encode(&event, &Target::Channel(channel.to_string()));
        self.publish("", queue, body).await?;
        Ok(Published {
            local: self.hub.has_channel(channel) as usize,
        })
    }

    fn is_ready(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    fn instance(&self) -> &str {
        &self.queue
    }
}

#[async_trait]
impl Link for AmqpBroker {
    type Session = (Connection, Channel, Channel);

    fn name(&self) -> &'static str {
        "broker"
    }

    /// The node connected to, or the one tried first next time.
    fn url(&self) -> &str {
        let i = self.node.load(Ordering::SeqCst);
        self.cfg
            .urls
            .get(i)
            .or(self.cfg.urls.first())
            .map_or(super::DEFAULT_AMQP_URL, String::as_str)
    }

    async fn open(&self) -> lapin::Result<Self::Session> {
        self.connect().await
    }

    async fn serve(
        &self,
        (conn, consume, publish): Self::Session,
        shutdown: &mut ShutdownWatch,
    ) -> lapin::Result<()> {
        let ended = self.session(&conn, &consume, publish, shutdown).await;
        self.set_up(false, None);
        self.pending.disconnected();
        // After a failure the node may be gone: the next attempt starts with the next one.
        self.lost.store(ended.is_err(), Ordering::SeqCst);
        ended
    }

    fn reconnected(&self) {
        self.metrics.broker.reconnects.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
