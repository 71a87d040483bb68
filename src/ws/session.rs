//! One WebSocket connection's life after the 101: a single loop over shutdown, the kick
//! (slow client), inbound frames, outbound messages and the ping timer. Read it top to
//! bottom to know every way a connection ends; it leaves its groups on every one of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use pingora::protocols::Stream;
use tokio::time::{interval_at, sleep_until, Instant as TokioInstant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::config::Protocol;
use super::{inbound, Conn, Endpoint};
use crate::hub::{Hub, Kick, Member, Outbound};
use crate::protocols::{self, Subscriptions};
use tokio::sync::mpsc;

pub(crate) type Ws = WebSocketStream<Stream>;

/// How a connection ended: the close code (1006 when no close frame was exchanged) and who
/// ended it.
struct Ending {
    code: u16,
    by: &'static str,
    reason: String,
}

impl Ending {
    fn server(code: u16, reason: &str) -> Ending {
        Ending {
            code,
            by: "server",
            reason: reason.into(),
        }
    }
}

/// Counts frames and bytes sent.
pub(crate) async fn send(
    ep: &Endpoint,
    ws: &mut Ws,
    msg: Message,
    limit: Duration,
) -> Result<(), &'static str> {
    let len = msg.len() as u64;
    match tokio::time::timeout(limit, ws.send(msg)).await {
        Ok(Ok(())) => {
            ep.metrics.ws.frames_out.inc();
            ep.metrics.ws.bytes_out.inc_by(len);
            Ok(())
        }
        Ok(Err(_)) => Err("write failed"),
        Err(_) => Err("write timed out"),
    }
}

/// Most queued messages written before one flush.
const BATCH: usize = 64;

/// Writes `first` and whatever else is already queued (up to [`BATCH`]) with one flush:
/// during a burst a client's frames leave in few writes instead of one each. Returns the
/// frames written and, when the queue held a close, that close.
async fn send_queued(
    ep: &Endpoint,
    ws: &mut Ws,
    rx: &mut mpsc::Receiver<Outbound>,
    first: Message,
    limit: Duration,
) -> Result<(u64, Option<(u16, String)>), &'static str> {
    let write = async {
        let (mut frames, mut bytes, mut close) = (0u64, 0u64, None);
        let mut next = Some(first);
        while let Some(m) = next.take() {
            bytes += m.len() as u64;
            ws.feed(m).await?;
            frames += 1;
            if frames as usize >= BATCH {
                break;
            }
            match rx.try_recv() {
                Ok(Outbound::Frame(m)) => next = Some(m),
                Ok(Outbound::Close(code, reason)) => close = Some((code, reason)),
                Err(_) => {}
            }
        }
        ws.flush().await?;
        Ok::<_, WsError>((frames, bytes, close))
    };
    match tokio::time::timeout(limit, write).await {
        Ok(Ok((frames, bytes, close))) => {
            ep.metrics.ws.frames_out.inc_by(frames);
            ep.metrics.ws.bytes_out.inc_by(bytes);
            Ok((frames, close))
        }
        Ok(Err(_)) => Err("write failed"),
        Err(_) => Err("write timed out"),
    }
}

/// Maps a read error to the close code the RFC asks for.
fn read_error(e: &WsError) -> Ending {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            Ending::server(1009, "message too big")
        }
        WsError::Utf8(_) => Ending::server(1007, "invalid UTF-8 in a text message"),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        | WsError::ConnectionClosed
        | WsError::AlreadyClosed => Ending {
            code: 1006,
            by: "client",
            reason: "connection dropped".into(),
        },
        WsError::Protocol(_) => Ending::server(1002, "protocol error"),
        WsError::Io(_) => Ending {
            code: 1006,
            by: "client",
            reason: "connection dropped".into(),
        },
        _ => Ending::server(1011, "internal error"),
    }
}

/// Resolves when the server starts shutting down.
async fn shutting_down(rx: &mut tokio::sync::watch::Receiver<bool>) {
    if rx.wait_for(|down| *down).await.is_err() {
        // The sender lives as long as the server; without it, no shutdown can come.
        std::future::pending::<()>().await;
    }
}

/// A connection's place in the hub: registered under its channel name and joined to its
/// route's groups, with the queue and kick its session reads.
pub(super) struct Membership {
    member: Member,
    rx: mpsc::Receiver<Outbound>,
    kick: Arc<Kick>,
}

impl Membership {
    pub(super) fn join(hub: &Hub, conn: &Conn) -> Membership {
        let (member, rx, kick) = hub.member(conn.route.send_queue, conn.route.slow_client);
        hub.register_channel(&conn.channel, &member);
        for g in &conn.groups {
            hub.join(g, &member);
        }
        Membership { member, rx, kick }
    }

    /// Undoes [`Membership::join`].
    pub(super) fn leave(self, hub: &Hub, conn: &Conn) {
        for g in &conn.groups {
            hub.leave(g, self.member.id);
        }
        hub.unregister_channel(&conn.channel);
    }
}

pub(super) async fn run(ep: Arc<Endpoint>, conn: Conn, mut ws: Ws, membership: Membership) {
    let route = conn.route.clone();
    let route_label = route.path.to_string();
    let Membership {
        member,
        mut rx,
        kick,
    } = membership;
    let open = ep.metrics.ws.open.with_label_values(&[&route_label]);
    open.inc();
    let started = Instant::now();
    let (mut frames_in, mut frames_out) = (0u64, 0u64);
    let mut shutdown = ep.shutdown.clone();
    let ping_every = route
        .ping_interval
        .unwrap_or(Duration::from_secs(3600 * 24 * 365));
    let mut ping = interval_at(TokioInstant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    // Timers are created once and reset, not per message: a busy connection loops often.
    let far = TokioInstant::now() + Duration::from_secs(3600 * 24 * 365 * 10);
    let lifetime = sleep_until(route.max_lifetime.map_or(far, |d| TokioInstant::now() + d));
    tokio::pin!(lifetime);
    let idle = sleep_until(route.idle_timeout.map_or(far, |d| TokioInstant::now() + d));
    tokio::pin!(idle);
    let mut subs = Subscriptions::default();
    let opened = match route.protocol {
        Protocol::Awx => protocols::awx::on_open(&ep, &conn, &mut ws).await,
        _ => Ok(()),
    };

    let ending: Ending = if let Err(e) = opened {
        Ending {
            code: 1006,
            by: "server",
            reason: e.into(),
        }
    } else {
        loop {
            tokio::select! {
                _ = shutting_down(&mut shutdown) => break Ending::server(1001, "server shutting down"),
                code = kick.kicked() => break Ending::server(code, "too slow: messages queued faster than the client reads"),
                _ = &mut lifetime, if route.max_lifetime.is_some() => break Ending::server(1001, "connection lifetime reached"),
                _ = &mut idle, if route.idle_timeout.is_some() => break Ending::server(1001, "idle timeout"),
                _ = ping.tick(), if route.ping_interval.is_some() => {
                    if last_heard.elapsed() > ping_every * 2 {
                        break Ending { code: 1006, by: "server", reason: "no answer to pings".into() };
                    }
                    if let Err(e) = send(&ep, &mut ws, Message::Ping(Default::default()), route.send_timeout).await {
                        break Ending { code: 1006, by: "server", reason: e.into() };
                    }
                }
                out = rx.recv() => match out {
                    Some(Outbound::Frame(m)) => match send_queued(&ep, &mut ws, &mut rx, m, route.send_timeout).await {
                        Ok((n, close)) => {
                            frames_out += n;
                            if let Some((code, reason)) = close {
                                break Ending::server(code, &reason);
                            }
                        }
                        Err(e) => break Ending { code: 1006, by: "server", reason: e.into() },
                    },
                    Some(Outbound::Close(code, reason)) => break Ending::server(code, &reason),
                    None => break Ending::server(1011, "hub closed"),
                },
                frame = ws.next() => {
                    last_heard = Instant::now();
                    if let Some(d) = route.idle_timeout {
                        idle.as_mut().reset(TokioInstant::from_std(last_heard + d));
                    }
                    match frame {
                        None => break Ending { code: 1006, by: "client", reason: "connection dropped".into() },
                        Some(Err(e)) => break read_error(&e),
                        Some(Ok(Message::Close(f))) => {
                            ep.metrics.ws.frames_in.with_label_values(&["close"]).inc();
                            let code = f.as_ref().map_or(1005, |f| u16::from(f.code));
                            // tungstenite answers the close itself; flush that answer.
                            let _ = tokio::time::timeout(Duration::from_secs(1), ws.flush()).await;
                            break Ending { code, by: "client", reason: f.map(|f| f.reason.to_string()).unwrap_or_default() };
                        }
                        Some(Ok(Message::Ping(_))) => ep.metrics.ws.frames_in.with_label_values(&["ping"]).inc(),
                        Some(Ok(Message::Pong(_))) => ep.metrics.ws.frames_in.with_label_values(&["pong"]).inc(),
                        Some(Ok(Message::Frame(_))) => {}
                        Some(Ok(m)) => {
                            frames_in += 1;
                            let kind = if m.is_text() { "text" } else { "binary" };
                            ep.metrics.ws.frames_in.with_label_values(&[kind]).inc();
                            // Boxed: these futures (an HTTP call to the app, an AMQP publish) are
                        // large and rare; inline they would sit in every idle connection's task.
                        let handled = match &route.protocol {
                                Protocol::Channels => Box::pin(inbound::handle(&ep, &conn, &mut ws, m)).await,
                                Protocol::Awx => Box::pin(protocols::awx::handle(&ep, &conn, &mut ws, &member, &mut subs, m)).await,
                                Protocol::AmqpBridge(_) => {
                                    Box::pin(protocols::bridge::handle(&ep, &conn, m)).await;
                                    Ok(())
                                }
                            };
                            if let Err(e) = handled {
                                break Ending { code: 1006, by: "server", reason: e.into() };
                            }
                        }
                    }
                }
            }
        }
    };

    if ending.by == "server" && ending.code != 1006 {
        let frame = CloseFrame {
            code: CloseCode::from(ending.code),
            reason: ending.reason.clone().into(),
        };
        // Send our close and give the client a moment to answer it.
        let closing = async {
            ws.close(Some(frame)).await.ok()?;
            while let Some(Ok(_)) = ws.next().await {}
            Some(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    }

    subs.leave_all(&ep, &member);
    Membership { member, rx, kick }.leave(&ep.hub, &conn);
    open.dec();
    ep.metrics
        .ws
        .closes
        .with_label_values(&[&ending.code.to_string()])
        .inc();
    tracing::info!(
        target: "access",
        route = %route_label,
        channel = %conn.channel,
        user = %conn.user.as_deref().unwrap_or("-"),
        client = %conn.client,
        request_id = %conn.request_id,
        duration_s = started.elapsed().as_secs_f64(),
        frames_in,
        frames_out,
        close_code = ending.code,
        closed_by = %ending.by,
        reason = %ending.reason,
        "websocket closed"
    );
}
