//! What the broker outage and cluster tests measure delivery with: many WebSocket clients
//! recording what they receive, a numbered publisher straight to RabbitMQ with publisher
//! confirms, a numbered publisher through channelgate's `POST /publish`, and a watcher
//! that records when `/readyz` changes.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation};
use tokio_tungstenite::tungstenite::Message;

use channelgate::broker::codec::{self, Target};
use channelgate::hub::Event;

/// WebSocket clients that record every text frame they receive.
pub struct Fleet {
    inboxes: Vec<Arc<Mutex<Vec<String>>>>,
    /// Clients whose connection ended (they should all stay connected).
    pub lost: Arc<AtomicUsize>,
}

impl Fleet {
    /// Opens `n` clients to `ws://addr/path` on the current runtime.
    pub async fn connect(addr: &str, path: &str, n: usize) -> Fleet {
        let lost = Arc::new(AtomicUsize::new(0));
        let mut inboxes = vec![];
        for _ in 0..n {
            let mut ws = super::ws::connect(addr, path).await;
            let inbox = Arc::new(Mutex::new(vec![]));
            inboxes.push(inbox.clone());
            let lost = lost.clone();
            tokio::spawn(async move {
                while let Some(m) = ws.next().await {
                    match m {
                        Ok(Message::Text(t)) => inbox.lock().unwrap().push(t.to_string()),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                lost.fetch_add(1, Ordering::SeqCst);
            });
        }
        Fleet { inboxes, lost }
    }

    pub fn len(&self) -> usize {
        self.inboxes.len()
    }

    /// The numbers client `i` received with `prefix` (`a17` -> 17), in arrival order.
    pub fn numbers(&self, i: usize, prefix: char) -> Vec<u64> {
        self.inboxes[i]
            .lock()
            .unwrap()
            .iter()
            .filter_map(|t| t.strip_prefix(prefix)?.parse().ok())
            .collect()
    }

    /// Asserts that every client received each of `required` exactly once, and all the
    /// `prefix` numbers it got in increasing order (no duplicate, no reordering).
    pub fn assert_received(&self, prefix: char, required: &[u64]) {
        for i in 0..self.len() {
            let got = self.numbers(i, prefix);
            if let Some(w) = got.windows(2).find(|w| w[0] >= w[1]) {
                panic!(
                    "client {i}: {prefix}{} then {prefix}{} (duplicate or out of order)",
                    w[0], w[1]
                );
            }
            let set: std::collections::HashSet<u64> = got.iter().copied().collect();
            let missing: Vec<u64> = required
                .iter()
                .copied()
                .filter(|n| !set.contains(n))
                .collect();
            assert!(
                missing.is_empty(),
                "client {i} missed {} of {} required '{prefix}' messages, first {:?}",
                missing.len(),
                required.len(),
                &missing[..missing.len().min(10)]
            );
        }
    }

    /// Waits until every client has `prefix` message `n` (or `limit` passes).
    pub fn wait_for(&self, prefix: char, n: u64, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if (0..self.len()).all(|i| self.numbers(i, prefix).contains(&n)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The numbers of the messages RabbitMQ confirmed whose publish started after `after`
/// (when `/readyz` returned to 200): the ones that must be delivered. At least `min`.
pub fn confirmed_after(sent: &[Sent], after: Instant, min: usize) -> Vec<u64> {
    let required: Vec<u64> = sent
        .iter()
        .filter(|s| s.confirmed && s.at > after)
        .map(|s| s.n)
        .collect();
    assert!(
        required.len() >= min,
        "too few messages confirmed after readiness returned ({}) to test anything",
        required.len()
    );
    required
}

/// One message of the numbered AMQP publisher.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub n: u64,
    /// When its basic.publish started.
    pub at: Instant,
    /// Whether RabbitMQ confirmed (acked) it.
    pub confirmed: bool,
}

/// Publishes `a0`, `a1`, ... to `group` at `per_second`, each awaited with a publisher
/// confirm, straight to RabbitMQ in channels_rabbitmq's format (as a Django app using
/// channels_rabbitmq would); reconnects (to the nodes of `urls` in turn) when RabbitMQ
/// goes away. Runs until `stop`.
/// Longest one step of the test publisher (channel, confirm mode, publish, close) may take.
const STEP: Duration = Duration::from_secs(5);

pub async fn amqp_publisher(
    urls: Vec<String>,
    group: String,
    per_second: u32,
    stop: Arc<AtomicBool>,
) -> Vec<Sent> {
    let mut sent = vec![];
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut node = 0;
    'connect: while !stop.load(Ordering::SeqCst) {
        let url = &urls[node % urls.len()];
        node += 1;
        let conn = match channelgate::broker::connection::open(url, "test publisher".into()).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Every call to a node that is going away is bounded: lapin may leave one
        // waiting forever (seen once: the whole test hung after a stop_app).
        let Ok(Ok(ch)) = tokio::time::timeout(STEP, conn.create_channel()).await else {
            let _ = tokio::time::timeout(STEP, conn.close(200, "reconnecting".into())).await;
            continue;
        };
        if !matches!(
            tokio::time::timeout(STEP, ch.confirm_select(ConfirmSelectOptions::default())).await,
            Ok(Ok(_))
        ) {
            let _ = tokio::time::timeout(STEP, conn.close(200, "reconnecting".into())).await;
            continue;
        }
        while !stop.load(Ordering::SeqCst) {
            tick.tick().await;
            let n = sent.len() as u64;
            let event = Event::from_json(serde_json::json!({
                "type": "channelgate.message",
                "text": format!("a{n}"),
            }))
            .expect("an object");
            let body = codec::encode(&event, &Target::Group(group.clone()));
            let at = Instant::now();
            let publishing = ch.basic_publish(
                "groups".into(),
                group.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            );
            let confirmed = match tokio::time::timeout(STEP, publishing)
                .await
                .unwrap_or(Err(channelgate::broker::connection::closed()))
            {
                Ok(c) => matches!(
                    tokio::time::timeout(Duration::from_secs(10), c).await,
                    Ok(Ok(Confirmation::Ack(_)))
                ),
                Err(_) => false,
            };
            sent.push(Sent { n, at, confirmed });
            if !confirmed {
                let _ = tokio::time::timeout(STEP, conn.close(200, "reconnecting".into())).await;
                continue 'connect;
            }
        }
        let _ = tokio::time::timeout(STEP, conn.close(200, "done".into())).await;
    }
    sent
}

/// Posts `h0`, `h1`, ... to `POST /publish/{group}` on the admin port at about 20/s until
/// `stop`; returns each number with when it was sent and the status it got.
pub fn http_publisher(
    admin_port: u16,
    group: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(u64, Instant, u16)>> {
    std::thread::spawn(move || {
        let client = super::client();
        let mut out = vec![];
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let at = Instant::now();
            let status = client
                .post(format!("http://127.0.0.1:{admin_port}/publish/{group}"))
                .header("content-type", "text/plain")
                .body(format!("h{n}"))
                .send()
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            out.push((n, at, status));
            n += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        out
    })
}

/// Polls `/readyz` on an admin port every 20 ms and records each status change with the
/// moment its answer arrived.
pub struct ReadyWatch {
    changes: Arc<Mutex<Vec<(Instant, bool)>>>,
    stop: Arc<AtomicBool>,
}

impl ReadyWatch {
    pub fn start(admin_port: u16) -> ReadyWatch {
        let changes = Arc::new(Mutex::new(vec![]));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (changes.clone(), stop.clone());
        std::thread::spawn(move || {
            let admin = format!("127.0.0.1:{admin_port}");
            let mut last = None;
            while !s.load(Ordering::SeqCst) {
                let ready = super::http_get_raw(&admin, "/readyz")
                    .is_some_and(|r| r.starts_with("HTTP/1.1 200"));
                if last != Some(ready) {
                    c.lock().unwrap().push((Instant::now(), ready));
                    last = Some(ready);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        ReadyWatch { changes, stop }
    }

    /// When `/readyz` first answered 503 after `since`.
    pub fn down(&self, since: Instant) -> Option<Instant> {
        let changes = self.changes.lock().unwrap();
        changes.iter().find(|(t, r)| *t >= since && !r).map(|c| c.0)
    }

    /// When `/readyz` first answered 200 after having answered 503 after `since`.
    pub fn ready_again(&self, since: Instant) -> Option<Instant> {
        let down = self.down(since)?;
        let changes = self.changes.lock().unwrap();
        changes.iter().find(|(t, r)| *t > down && *r).map(|c| c.0)
    }
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
