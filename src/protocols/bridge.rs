//! The CLU pass-through (`protocol = "amqp-bridge"`), as sdss-clu's `clu.websocket`
//! server does it: one exclusive queue per process on the route's topic exchange (bound
//! with `reply.#` by default); every valid reply goes to every client of the route as
//! `{"headers", "exchange", "message_id", "routing_key", "timestamp", "body"}`; a client
//! frame `{"consumer", "command_string", "command_id"?}` is published the way CLU's
//! `AMQPClient.send_command` does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ws::frame::Message;
use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use pingora::server::ShutdownWatch;
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::broker::amqp::redact;
use crate::broker::connection::{self, Link};
use crate::hub::{Event, Hub};
use crate::metrics::Metrics;
use crate::ws::{Conn, Endpoint};

/// A route's bridge settings (`bridge = { ... }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    /// RabbitMQ URL. Default: `[broker] url` when the broker is amqp, else guest on localhost
    /// (resolved when the server starts).
    pub url: Option<String>,
    /// CLU's exchange (topic, auto-delete, not durable). Default "sdss_exchange".
    pub exchange: String,
    /// Routing keys our queue is bound with. Default ["reply.#"].
    pub bindings: Vec<String>,
    /// Our commander name: commands carry `commander_id = "<commander>.<consumer>"`.
    /// Default "channelgate".
    pub commander: String,
    /// When set, only these actors may be commanded.
    pub consumers: Option<Vec<String>>,
}

/// One route's AMQP side: consumes replies into the route's hub group, publishes commands.
pub struct Bridge {
    cfg: BridgeConfig,
    url: String,
    /// The hub group every client of the route is in.
    pub group: String,
    queue: String,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    publisher: Mutex<Option<Channel>>,
    up: AtomicBool,
}

fn letters(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n).map(|_| rng.gen_range(b'a'..=b'z') as char).collect()
}

impl Bridge {
    pub fn new(
        cfg: BridgeConfig,
        url: String,
        route_index: usize,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Arc<Bridge> {
        Arc::new(Bridge {
            url,
            queue: format!("{}_replies_{}", cfg.commander, letters(8)),
            group: format!("amqp-bridge.{route_index}"),
            cfg,
            hub,
            metrics,
            publisher: Mutex::new(None),
            up: AtomicBool::new(false),
        })
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    async fn connect(&self) -> lapin::Result<(Connection, Channel)> {
        let name = format!("channelgate amqp-bridge {}", std::process::id());
        let conn = connection::open(&self.url, name).await?;
        let ch = conn.create_channel().await?;
        let xopts = ExchangeDeclareOptions {
            durable: false,
            auto_delete: true,
            ..Default::default()
        };
        ch.exchange_declare(
            self.cfg.exchange.as_str().into(),
            ExchangeKind::Topic,
            xopts,
            FieldTable::default(),
        )
        .await?;
        let qopts = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        ch.queue_declare(self.queue.as_str().into(), qopts, FieldTable::default())
            .await?;
        for b in &self.cfg.bindings {
            ch.queue_bind(
                self.queue.as_str().into(),
                self.cfg.exchange.as_str().into(),
                b.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        Ok((conn, ch))
    }

    async fn consume(
        &self,
        conn: &Connection,
        ch: &Channel,
        shutdown: &mut ShutdownWatch,
    ) -> lapin::Result<()> {
        let mut consumer = ch
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        loop {
            tokio::select! {
                _ = shutdown.changed() => if *shutdown.borrow() {
                    let _ = conn.close(200, "channelgate shutting down".into()).await;
                    return Ok(());
                },
                d = consumer.next() => match d {
                    Some(Ok(d)) => {
                        match envelope(&d) {
                            Some(text) => {
                                let _ = self.hub.deliver_group(&self.group, &Event::text("amqp.reply", text));
                                self.metrics.ws.inbound.with_label_values(&["amqp-bridge", "reply"]).inc();
                            }
                            None => self.metrics.ws.inbound.with_label_values(&["amqp-bridge", "invalid_reply"]).inc(),
                        }
                        d.acker.ack(BasicAckOptions::default()).await?;
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Err(connection::closed()),
                },
            }
        }
    }

    /// Publishes a command as CLU's client does.
    async fn command(
        &self,
        consumer: &str,
        command_string: &str,
        command_id: String,
    ) -> Result<(), String> {
        let ch = self
            .publisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or("not connected to RabbitMQ")?;
        let mut headers = FieldTable::default();
        headers.insert(
            "command_id".into(),
            AMQPValue::LongString(command_id.as_str().into()),
        );
        headers.insert(
            "commander_id".into(),
            AMQPValue::LongString(format!("{}.{consumer}", self.cfg.commander).as_str().into()),
        );
        headers.insert("internal".into(), AMQPValue::Boolean(false));
        headers.insert("write_to_log".into(), AMQPValue::Boolean(true));
        let props = BasicProperties::default()
            .with_content_type(ShortString::from("text/json"))
            .with_headers(headers)
            .with_correlation_id(command_id.as_str().into())
            .with_reply_to(self.queue.as_str().into());
        let body = json!({ "command_string": command_string }).to_string();
        ch.basic_publish(
            self.cfg.exchange.as_str().into(),
            format!("command.{consumer}").as_str().into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The JSON CLU's websocket server sends for one reply, or None when CLU would not
/// forward it (no `message_code` header, a command_id mismatch, a body that is not JSON).
fn envelope(d: &lapin::message::Delivery) -> Option<String> {
    let p = &d.properties;
    let headers = p.headers().as_ref().map(table_to_json).unwrap_or_default();
    let code_ok = headers
        .get("message_code")
        .is_some_and(|c| !matches!(c, Value::Null) && c != "");
    let correlation = p.correlation_id().as_ref().map(|c| c.to_string());
    let header_id = headers.get("command_id").and_then(Value::as_str);
    if !code_ok
        || matches!((header_id, &correlation), (Some(h), Some(c)) if h != c)
        || matches!((header_id, &correlation), (Some(_), None))
    {
        return None;
    }
    let body: Value = serde_json::from_slice(&d.data).ok()?;
    let timestamp = p.timestamp().map(|ts| {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(ts);
        humantime::format_rfc3339_seconds(t)
            .to_string()
            .replace('Z', "+00:00")
    });
    Some(
        json!({
            "headers": headers,
            "exchange": d.exchange.to_string(),
            "message_id": p.message_id().as_ref().map(|m| m.to_string()),
            "routing_key": d.routing_key.to_string(),
            "timestamp": timestamp,
            "body": body,
        })
        .to_string(),
    )
}

fn table_to_json(t: &FieldTable) -> Map<String, Value> {
    t.inner()
        .iter()
        .map(|(k, v)| (k.to_string(), amqp_to_json(v)))
        .collect()
}

fn amqp_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(f) => Value::from(*f),
        AMQPValue::Double(f) => Value::from(*f),
        AMQPValue::DecimalValue(d) => Value::from(d.value),
        AMQPValue::ShortString(s) => Value::String(s.to_string()),
        AMQPValue::LongString(s) => {
            Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_to_json).collect()),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(t) => Value::Object(table_to_json(t)),
        AMQPValue::ByteArray(b) => {
            Value::String(String::from_utf8_lossy(b.as_slice()).into_owned())
        }
        AMQPValue::Void => Value::Null,
    }
}

/// The `amqp-bridge` protocol of one connection: the exchange's messages reach it through
/// the route's group; what it sends is a command.
pub struct BridgeClient;

#[async_trait::async_trait]
impl super::ClientProtocol for BridgeClient {
    async fn message(&mut self, cx: &super::Ctx, msg: Message) {
        handle(&cx.ep, &cx.conn, msg).await
    }
}

/// A client frame: `{"consumer", "command_string", "command_id"?}`; anything else is
/// ignored (and counted), as CLU's server does.
pub async fn handle(ep: &Endpoint, conn: &Conn, msg: Message) {
    let count = |outcome: &str| {
        ep.metrics
            .ws
            .inbound
            .with_label_values(&["amqp-bridge", outcome])
            .inc()
    };
    let Some(bridge) = ep.bridges.get(&conn.route.path.to_string()) else {
        return;
    };
    let parsed: Option<Map<String, Value>> = match &msg {
        Message::Text(t) => serde_json::from_str(t).ok(),
        Message::Binary(b) => serde_json::from_slice(b).ok(),
    };
    let Some(m) = parsed else {
        return count("ignored");
    };
    let (Some(consumer), Some(command)) = (
        m.get("consumer").and_then(Value::as_str),
        m.get("command_string").and_then(Value::as_str),
    ) else {
        return count("ignored");
    };
    if let Some(allowed) = &bridge.cfg.consumers {
        if !allowed.iter().any(|a| a == consumer) {
            crate::client_warn!("bridge_forbidden_consumer", channel = %conn.channel, consumer, "amqp-bridge: this actor may not be commanded from here");
            return count("refused_consumer");
        }
    }
    let command_id = match m.get("command_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => uuid_v4(),
    };
    match bridge.command(consumer, command, command_id).await {
        Ok(()) => count("command"),
        Err(e) => {
            count("error");
            crate::client_warn!("bridge_not_published", channel = %conn.channel, consumer, error = %e, "amqp-bridge: command not published");
        }
    }
}

/// A random (version 4) UUID, as Python's `str(uuid.uuid4())`.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[async_trait]
impl Link for Bridge {
    type Session = (Connection, Channel);

    fn name(&self) -> &'static str {
        "amqp-bridge"
    }

    fn url(&self) -> &str {
        &self.url
    }

    async fn open(&self) -> lapin::Result<Self::Session> {
        self.connect().await
    }

    async fn serve(
        &self,
        (conn, ch): Self::Session,
        shutdown: &mut ShutdownWatch,
    ) -> lapin::Result<()> {
        tracing::info!(broker = %redact(&self.url), exchange = %self.cfg.exchange, queue = %self.queue, "amqp-bridge connected");
        *self.publisher.lock().unwrap_or_else(|e| e.into_inner()) = Some(ch.clone());
        self.up.store(true, Ordering::SeqCst);
        let ended = self.consume(&conn, &ch, shutdown).await;
        self.up.store(false, Ordering::SeqCst);
        *self.publisher.lock().unwrap_or_else(|e| e.into_inner()) = None;
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_look_like_python_uuid4() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn headers_become_json() {
        let mut t = FieldTable::default();
        t.insert("message_code".into(), AMQPValue::LongString(">".into()));
        t.insert("internal".into(), AMQPValue::Boolean(false));
        t.insert("n".into(), AMQPValue::LongInt(3));
        assert_eq!(
            Value::Object(table_to_json(&t)),
            json!({"message_code": ">", "internal": false, "n": 3})
        );
    }
}
