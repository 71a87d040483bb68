//! `publish`: sends M messages (each to every --group) at a fixed rate or as fast as
//! possible, to channelgate's admin listener (POST /publish/<group>, keep-alive), to
//! RabbitMQ (the channels_rabbitmq group body, msgpack, on exchange "groups"), as a
//! bare text POST to a URL template (nchan's publisher location), or as one
//! `ws-message` item per POST to Pushpin's HTTP publish endpoint. Each text
//! is "<ns since the epoch> <seq> " padded with 'x' to --size bytes; the timestamp is
//! taken just before the message is written.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::{self, now_ns, parse_duration, round3};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum PublishTarget {
    /// POST /publish/<group> on channelgate's admin listener.
    HttpAdmin,
    /// msgpack {"type", "text", "__asgi_group__"} to a RabbitMQ exchange, key = group.
    Amqp,
    /// POST the bare text (text/plain) to --post-url with {group} filled in, e.g. an
    /// nchan publisher location.
    HttpPost,
    /// POST {"items": [{"channel": <group>, "formats": {"ws-message": {"content":
    /// <text>}}}]} to Pushpin's publish endpoint (--pushpin-url), one item per request.
    Pushpin,
}

/// What each message's text is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum PayloadKind {
    /// "<ns> <seq> " padded with 'x' to --size bytes.
    Text,
    /// An AWX-like job event: JSON of 300–2,000 bytes ({"t": <ns>, "seq": <n>, "type":
    /// "job_event", "event": ..., "stdout": ..., "event_data": {...}}); --size is ignored.
    Awx,
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    #[arg(long, value_enum)]
    pub target: PublishTarget,

    /// channelgate's admin listener (http-admin).
    #[arg(long, default_value = "http://127.0.0.1:9100")]
    pub admin: String,

    /// URL template for http-post, e.g. http://127.0.0.1:8080/pub/{group}.
    #[arg(long)]
    pub post_url: Option<String>,

    /// Pushpin's HTTP publish endpoint (pushpin): the handler's push_in_http_port.
    #[arg(long, default_value = "http://127.0.0.1:5561/publish/")]
    pub pushpin_url: String,

    /// Bearer token for the admin listener (http-admin).
    #[arg(long)]
    pub token: Option<String>,

    /// RabbitMQ URL (amqp).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,

    /// Exchange the group messages go to (amqp).
    #[arg(long, default_value = "groups")]
    pub exchange: String,

    /// Group to publish to (repeatable: every message goes to every group).
    #[arg(long = "group", required = true)]
    pub groups: Vec<String>,

    /// Messages (M), each sent to every group.
    #[arg(short = 'm', long, default_value_t = 100)]
    pub messages: u64,

    /// Messages per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,

    /// Text size in bytes (at least the timestamp and sequence number).
    #[arg(long, default_value_t = 250)]
    pub size: usize,

    /// Message texts: `text` (padded to --size) or `awx` (job events of 300–2,000 bytes).
    #[arg(long, value_enum, default_value = "text")]
    pub payload: PayloadKind,

    /// The event's "type".
    #[arg(long = "type", default_value = "bench.message")]
    pub event_type: String,

    /// Keep-alive connections for the HTTP targets (http-admin, http-post, pushpin);
    /// requests on one connection are sequential.
    #[arg(long, default_value_t = 1)]
    pub http_connections: usize,

    /// Publishes awaiting their confirm at most (amqp).
    #[arg(long, default_value_t = 1000)]
    pub window: usize,

    /// Do not enable publisher confirms (amqp): nothing tells a rejected message then.
    #[arg(long)]
    pub no_confirm: bool,

    /// Longest one publish (request or confirm) may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Stop publishing after this long even if messages remain.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub max_time: Duration,

    /// Free-form label copied into the JSON line.
    #[arg(long)]
    pub label: Option<String>,
}

/// The text of message `seq` of the chosen kind.
fn text(kind: PayloadKind, seq: u64, size: usize) -> String {
    match kind {
        PayloadKind::Text => payload(seq, size),
        PayloadKind::Awx => crate::awx::event(seq),
    }
}

/// The text of message `seq`: "<ns> <seq> xxx…" of exactly `size` bytes (or longer when
/// the numbers need it).
pub fn payload(seq: u64, size: usize) -> String {
    let mut s = format!("{} {} ", now_ns(), seq);
    if s.len() < size {
        s.extend(std::iter::repeat_n('x', size - s.len()));
    }
    s
}

#[derive(Default)]
struct Tally {
    sent: u64,
    ok: u64,
    failed: u64,
    statuses: BTreeMap<String, u64>,
    /// Bytes of message text sent (before any framing or compression).
    text_bytes: u64,
    delivered_reported: u64,
    latency_ns: Vec<u64>,
    lag_ns: Vec<u64>,
}

impl Tally {
    fn outcome(&mut self, k: &str) {
        *self.statuses.entry(k.to_string()).or_default() += 1;
    }
}

/// When message `i` is due (None: now).
fn due(start: Instant, rate: f64, i: u64) -> Option<Instant> {
    (rate > 0.0).then(|| start + Duration::from_secs_f64(i as f64 / rate))
}

// ------------------------------------------------------------------ http-admin ---

/// A minimal HTTP/1.1 keep-alive client for the admin listener: enough for
/// Content-Length and chunked answers.
struct HttpConn {
    addr: SocketAddr,
    host: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl HttpConn {
    async fn stream(&mut self) -> std::io::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            let _ = s.set_nodelay(true);
            self.stream = Some(s);
            self.buf.clear();
        }
        Ok(self.stream.as_mut().unwrap())
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let s = self.stream.as_mut().ok_or(std::io::ErrorKind::NotConnected)?;
        let mut tmp = [0u8; 8192];
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    /// POSTs and returns (status, body).
    async fn post(
        &mut self,
        path: &str,
        ctype: &str,
        body: &[u8],
        token: Option<&str>,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("\r\n");
        let mut out = req.into_bytes();
        out.extend_from_slice(body);
        self.stream().await?.write_all(&out).await?;

        // Head.
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > 64 * 1024 {
                return Err(std::io::Error::other("response head too large"));
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad status line"))?;
        let (mut len, mut chunked, mut close) = (None, false, false);
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
                match k.as_str() {
                    "content-length" => len = v.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = v.contains("chunked"),
                    "connection" => close = v.contains("close"),
                    _ => {}
                }
            }
        }
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    self.fill().await?;
                };
                let size_s = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_s.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| std::io::Error::other("bad chunk size"))?;
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    self.fill().await?;
                }
                body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
                if size == 0 {
                    break;
                }
            }
            body
        } else {
            let n = len.unwrap_or(0);
            while self.buf.len() < n {
                self.fill().await?;
            }
            self.buf.drain(..n).collect()
        };
        if close {
            self.stream = None;
        }
        Ok((status, body))
    }
}

/// The body and content type of one HTTP publish of `text` to `group`.
fn http_body(target: PublishTarget, ty: &str, group: &str, text: String) -> (Vec<u8>, &'static str) {
    match target {
        PublishTarget::HttpPost => (text.into_bytes(), "text/plain"),
        PublishTarget::Pushpin => (
            serde_json::to_vec(&json!({"items": [{"channel": group, "formats": {"ws-message": {"content": text}}}]}))
                .unwrap(),
            "application/json",
        ),
        _ => (
            serde_json::to_vec(&json!({"type": ty, "text": text})).unwrap(),
            "application/json",
        ),
    }
}

async fn run_http(a: &PublishArgs, tally: Arc<Mutex<Tally>>) -> Result<(), String> {
    let target = a.target;
    let url = match target {
        PublishTarget::HttpPost => a
            .post_url
            .clone()
            .filter(|u| u.contains("{group}"))
            .ok_or("--target http-post needs --post-url with {group}, e.g. http://127.0.0.1:8080/pub/{group}")?,
        PublishTarget::Pushpin => a.pushpin_url.clone(),
        _ => a.admin.clone(),
    };
    let (scheme, host, port, base) = util::split_url(&url, 80)?;
    if scheme != "http" {
        return Err(format!("`{url}` must be http://"));
    }
    let addr = util::loopback_addr(&host, port)?;
    // http-admin: <base>/publish/<group>; http-post: the template's path; pushpin: the
    // URL's path as it is (the channel is in the body).
    let base = match target {
        PublishTarget::HttpAdmin => base.trim_end_matches('/').to_string() + "/publish/{group}",
        _ => base,
    };
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + a.max_time;
    let mut tasks = Vec::new();
    for _ in 0..a.http_connections.max(1) {
        let (next, tally) = (next.clone(), tally.clone());
        let groups = a.groups.clone();
        let kind = a.payload;
        let (m, rate, size, ty, token, limit, base) = (
            a.messages,
            a.rate,
            a.size,
            a.event_type.clone(),
            a.token.clone(),
            a.timeout,
            base.clone(),
        );
        let mut conn = HttpConn {
            addr,
            host: format!("{host}:{port}"),
            stream: None,
            buf: Vec::new(),
        };
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= m || Instant::now() >= end {
                    break;
                }
                if let Some(t) = due(start, rate, i) {
                    tokio::time::sleep_until(t.into()).await;
                    let lag = Instant::now().saturating_duration_since(t).as_nanos() as u64;
                    tally.lock().unwrap().lag_ns.push(lag);
                }
                for g in &groups {
                    let txt = text(kind, i, size);
                    let txt_len = txt.len() as u64;
                    let (body, ctype) = http_body(target, &ty, g, txt);
                    let t0 = Instant::now();
                    let path = base.replace("{group}", g);
                    let res = tokio::time::timeout(limit, conn.post(&path, ctype, &body, token.as_deref())).await;
                    let took = t0.elapsed().as_nanos() as u64;
                    let mut t = tally.lock().unwrap();
                    t.sent += 1;
                    t.text_bytes += txt_len;
                    match res {
                        Ok(Ok((status, rbody))) => {
                            t.latency_ns.push(took);
                            t.outcome(&status.to_string());
                            if (200..300).contains(&status) {
                                t.ok += 1;
                                if let Ok(v) = serde_json::from_slice::<Value>(&rbody) {
                                    t.delivered_reported += v.get("delivered").and_then(|d| d.as_u64()).unwrap_or(0);
                                }
                            } else {
                                t.failed += 1;
                            }
                        }
                        Ok(Err(e)) => {
                            t.failed += 1;
                            t.outcome(&format!("io {:?}", e.kind()));
                            conn.stream = None;
                        }
                        Err(_) => {
                            t.failed += 1;
                            t.outcome("timeout");
                            conn.stream = None;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

// ------------------------------------------------------------------------ amqp ---

fn msgpack_body(ty: &str, text: &str, group: &str) -> Vec<u8> {
    use rmpv::Value as V;
    let v = V::Map(vec![
        (V::from("type"), V::from(ty)),
        (V::from("text"), V::from(text)),
        (V::from("__asgi_group__"), V::from(group)),
    ]);
    let mut out = Vec::with_capacity(text.len() + 64);
    rmpv::encode::write_value(&mut out, &v).expect("writing to a Vec cannot fail");
    out
}

async fn run_amqp(a: &PublishArgs, tally: Arc<Mutex<Tally>>) -> Result<(), String> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, ExchangeKind};

    let (scheme, host, port, _) = util::split_url(&a.amqp_url, 5672)?;
    if scheme != "amqp" {
        return Err(format!("--amqp-url `{}` must be amqp://", a.amqp_url));
    }
    util::loopback_addr(&host, port)?;
    let props = ConnectionProperties::default().with_connection_name(lapin::types::LongString::from(format!(
        "cg-load publish {}",
        std::process::id()
    )));
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect_with_runtime(&a.amqp_url, props, async_rs::Runtime::tokio_current()),
    )
    .await
    .map_err(|_| "RabbitMQ: connect timed out".to_string())?
    .map_err(|e| format!("RabbitMQ: {e}"))?;
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| format!("RabbitMQ channel: {e}"))?;
    // Passive: the exchange belongs to the layer (direct, non-durable); never redeclare it.
    ch.exchange_declare(
        a.exchange.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| {
        format!(
            "exchange `{}` does not exist (is the consumer running?): {e}",
            a.exchange
        )
    })?;
    let confirm = !a.no_confirm;
    if confirm {
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("confirm_select: {e}"))?;
    }
    let start = Instant::now();
    let end = start + a.max_time;
    let mut pending = FuturesUnordered::new();
    let limit = a.timeout;
    let settle = |t: &mut Tally, r: Result<Result<(Confirmation, u64), String>, tokio::time::error::Elapsed>| match r {
        Ok(Ok((c, took))) => match c {
            Confirmation::Ack(_) | Confirmation::NotRequested => {
                t.ok += 1;
                t.latency_ns.push(took);
                t.outcome(if confirm { "ack" } else { "sent" });
            }
            Confirmation::Nack(_) => {
                t.failed += 1;
                t.latency_ns.push(took);
                t.outcome("nack");
            }
        },
        Ok(Err(e)) => {
            t.failed += 1;
            t.outcome(&e);
        }
        Err(_) => {
            t.failed += 1;
            t.outcome("confirm timeout");
        }
    };
    'outer: for i in 0..a.messages {
        if Instant::now() >= end {
            break;
        }
        if let Some(t) = due(start, a.rate, i) {
            // Collect confirms while waiting for the slot.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(t.into()) => break,
                    Some(r) = pending.next(), if !pending.is_empty() => settle(&mut tally.lock().unwrap(), r),
                }
            }
            let lag = Instant::now().saturating_duration_since(t).as_nanos() as u64;
            tally.lock().unwrap().lag_ns.push(lag);
        }
        for g in &a.groups {
            while pending.len() >= a.window.max(1) {
                if let Some(r) = pending.next().await {
                    settle(&mut tally.lock().unwrap(), r);
                }
            }
            let txt = text(a.payload, i, a.size);
            tally.lock().unwrap().text_bytes += txt.len() as u64;
            let body = msgpack_body(&a.event_type, &txt, g);
            let t0 = Instant::now();
            let published = ch
                .basic_publish(
                    a.exchange.as_str().into(),
                    g.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default(),
                )
                .await;
            tally.lock().unwrap().sent += 1;
            match published {
                Ok(pc) => pending.push(tokio::time::timeout(limit, async move {
                    pc.await
                        .map(|c| (c, t0.elapsed().as_nanos() as u64))
                        .map_err(|e| format!("error: {e}"))
                })),
                Err(e) => {
                    let mut t = tally.lock().unwrap();
                    t.failed += 1;
                    t.outcome(&format!("publish error: {e}"));
                    break 'outer;
                }
            }
        }
    }
    while let Some(r) = pending.next().await {
        settle(&mut tally.lock().unwrap(), r);
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(())
}

pub async fn run(a: &PublishArgs) -> Result<(), String> {
    if a.messages == 0 || a.messages > 100_000_000 {
        return Err("--messages must be 1..=100000000".into());
    }
    if !(a.rate >= 0.0 && a.rate <= 10_000_000.0) {
        return Err("--rate must be 0 (as fast as possible) or a positive number".into());
    }
    for g in &a.groups {
        if g.is_empty() || g.len() >= 100 || !g.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(format!("`{g}` is not a valid group name (letters, digits, - _ .)"));
        }
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let t0 = Instant::now();
    let started_ns = now_ns();
    match a.target {
        PublishTarget::HttpAdmin | PublishTarget::HttpPost | PublishTarget::Pushpin => {
            run_http(a, tally.clone()).await?
        }
        PublishTarget::Amqp => run_amqp(a, tally.clone()).await?,
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let mut t = tally.lock().unwrap();
    let latency = util::summary_ms(&mut t.latency_ns);
    let lag = util::summary_ms(&mut t.lag_ns);
    util::emit(&json!({
        "tool": "cg-load",
        "mode": "publish",
        "label": a.label,
        "timestamp_ns": now_ns(),
        "params": {
            "target": format!("{:?}", a.target),
            "admin": if a.target == PublishTarget::HttpAdmin { Some(&a.admin) } else { None },
            "post_url": if a.target == PublishTarget::HttpPost { a.post_url.as_ref() } else { None },
            "pushpin_url": if a.target == PublishTarget::Pushpin { Some(&a.pushpin_url) } else { None },
            "exchange": if a.target == PublishTarget::Amqp { Some(&a.exchange) } else { None },
            "groups": a.groups,
            "messages": a.messages,
            "rate": a.rate,
            "size": if a.payload == PayloadKind::Text { Some(a.size) } else { None },
            "payload": format!("{:?}", a.payload).to_lowercase(),
            "payload_size_range": if a.payload == PayloadKind::Awx { Some([crate::awx::MIN_SIZE, crate::awx::MAX_SIZE]) } else { None },
            "type": a.event_type,
            "http_connections": if a.target != PublishTarget::Amqp { Some(a.http_connections) } else { None },
            "window": if a.target == PublishTarget::Amqp { Some(a.window) } else { None },
            "confirm": if a.target == PublishTarget::Amqp { Some(!a.no_confirm) } else { None },
        },
        "results": {
            "started_ns": started_ns,
            "elapsed_s": round3(elapsed),
            "sent": t.sent,
            "ok": t.ok,
            "failed": t.failed,
            "outcomes": t.statuses,
            "achieved_per_s": if elapsed > 0.0 { round3(t.sent as f64 / elapsed) } else { 0.0 },
            "delivered_reported": t.delivered_reported,
            "text_bytes": t.text_bytes,
            "text_bytes_per_message": if t.sent > 0 { round3(t.text_bytes as f64 / t.sent as f64) } else { 0.0 },
            "latency_ms": latency,
            "schedule_lag_ms": lag,
        },
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_shape() {
        let p = payload(42, 250);
        assert_eq!(p.len(), 250);
        let (ts, seq) = crate::fanout::parse_payload(&p).unwrap();
        assert!(ts > 1_600_000_000_000_000_000);
        assert_eq!(seq, Some(42));
    }

    #[test]
    fn pushpin_body_is_one_ws_message_item() {
        let (b, ctype) = http_body(PublishTarget::Pushpin, "bench.message", "g1", "hi".into());
        assert_eq!(ctype, "application/json");
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            json!({"items": [{"channel": "g1", "formats": {"ws-message": {"content": "hi"}}}]})
        );
        let (b, ctype) = http_body(PublishTarget::HttpPost, "bench.message", "g1", "hi".into());
        assert_eq!((b.as_slice(), ctype), (&b"hi"[..], "text/plain"));
    }

    #[test]
    fn msgpack_is_channels_rabbitmq_shape() {
        let b = msgpack_body("bench.message", "hi", "g1");
        let v = rmpv::decode::read_value(&mut &b[..]).unwrap();
        let m = v.as_map().unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[2].0.as_str(), Some("__asgi_group__"));
        assert_eq!(m[2].1.as_str(), Some("g1"));
    }
}
