//! One WebSocket connection's life after the 101: a single loop over shutdown, the kick
//! (slow client), inbound frames, outbound messages and the timers. Read it top to bottom
//! to know every way a connection ends; its [`Membership`] guard leaves its groups on
//! every one of them. The loop never waits for the app: calls run beside it
//! ([`super::calls`]). Every client is bounded: one pending pong, one frame in the write
//! buffer, `send_queue`/`send_queue_bytes` queued, `inbound_rate` frames read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::future::poll_fn;
use std::task::{Context, Poll};

use futures::{SinkExt, StreamExt};
use pingora::protocols::Stream;
use tokio::time::{sleep_until, Instant as TokioInstant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::calls::{self, Calls};
use super::config::{InboundLimit, Protocol, RouteConfig};
use super::ratelimit::Bucket;
use super::{inbound, Conn, Endpoint};
use crate::hub::{Membership, Outbound, Queue, Recv};
use crate::protocols;
use crate::shutdown::DrainGuard;

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
///
/// Written against the `Sink` poll functions: `feed` futures would each hold another copy
/// of a message, and this future's size is paid by every idle connection's task.
async fn send_queued(
    ep: &Endpoint,
    ws: &mut Ws,
    queue: &Queue,
    first: Message,
    limit: Duration,
) -> Result<(u64, Option<(u16, String)>), &'static str> {
    let write = async {
        let (mut frames, mut bytes, mut close) = (0u64, 0u64, None);
        let mut next = Some(first);
        while let Some(m) = next.take() {
            bytes += m.len() as u64;
            poll_fn(|cx| ws.poll_ready_unpin(cx)).await?;
            ws.start_send_unpin(m)?;
            frames += 1;
            if frames as usize >= BATCH {
                break;
            }
            match queue.try_recv() {
                Some(Outbound::Frame(m)) => next = Some(m),
                Some(Outbound::Close(code, reason)) => close = Some((code, reason)),
                None => {}
            }
        }
        poll_fn(|cx| ws.poll_flush_unpin(cx)).await?;
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

/// The connection's timers (next ping, idle deadline, lifetime deadline, pending-write
/// deadline) folded into one: a tokio timer sits in every connection's task.
#[derive(Debug)]
struct Timers {
    /// A write (a pong) is waiting for the client to read; it must be done by then.
    write_at: Option<TokioInstant>,
    /// When the client was last heard from (any frame).
    last_heard: TokioInstant,
    ping_every: Option<Duration>,
    next_ping: Option<TokioInstant>,
    idle: Option<Duration>,
    idle_at: Option<TokioInstant>,
    lifetime_at: Option<TokioInstant>,
}

/// What a timer wake-up found due, the most final first.
#[derive(Debug, PartialEq)]
enum Due {
    /// A pending write did not finish within `send_timeout`: the client does not read.
    WriteStuck,
    Lifetime,
    Idle,
    /// Two ping intervals passed without a frame from the client.
    Silent,
    Ping,
    Nothing,
}

impl Timers {
    fn new(route: &RouteConfig, now: TokioInstant) -> Timers {
        Timers {
            write_at: None,
            last_heard: now,
            ping_every: route.ping_interval,
            next_ping: route.ping_interval.map(|d| now + d),
            idle: route.idle_timeout,
            idle_at: route.idle_timeout.map(|d| now + d),
            lifetime_at: route.max_lifetime.map(|d| now + d),
        }
    }

    /// Whether any timer is configured at all.
    fn armed(&self) -> bool {
        self.next_ping.is_some() || self.idle_at.is_some() || self.lifetime_at.is_some()
    }

    /// When the timer must wake next (far away when nothing is configured).
    fn next(&self, now: TokioInstant) -> TokioInstant {
        [
            self.write_at,
            self.next_ping,
            self.idle_at,
            self.lifetime_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_secs(3600 * 24 * 365))
    }

    /// What is due at `now`; a due ping is scheduled again `ping_every` from now, unless
    /// the client has been silent for two intervals. When the loop is not `listening` (the
    /// app is behind on this client's frames), the client's silence says nothing: it counts
    /// as heard.
    fn due(&mut self, now: TokioInstant, listening: bool) -> Due {
        if !listening {
            self.heard(now);
        }
        if self.write_at.is_some_and(|t| t <= now) {
            Due::WriteStuck
        } else if self.lifetime_at.is_some_and(|t| t <= now) {
            Due::Lifetime
        } else if self.idle_at.is_some_and(|t| t <= now) {
            Due::Idle
        } else if let (Some(t), Some(every)) = (self.next_ping, self.ping_every) {
            if t > now {
                Due::Nothing
            } else if now.duration_since(self.last_heard) > every * 2 {
                Due::Silent
            } else {
                self.next_ping = Some(now + every);
                Due::Ping
            }
        } else {
            Due::Nothing
        }
    }

    /// A write started that the client must read within `limit`; an earlier deadline stays.
    fn writing(&mut self, now: TokioInstant, limit: Duration) {
        self.write_at.get_or_insert(now + limit);
    }

    /// The pending write is done.
    fn written(&mut self) {
        self.write_at = None;
    }

    /// The client was heard from: the idle deadline moves. It only ever moves later, so
    /// the timer needs no reset: an early wake-up finds nothing due and sleeps again.
    fn heard(&mut self, now: TokioInstant) {
        self.last_heard = now;
        if let Some(d) = self.idle {
            self.idle_at = Some(now + d);
        }
    }
}

/// What the connection's socket did: a frame (or the end) from the client, or the pending
/// write finished.
enum Io {
    Read(Option<Result<Message, WsError>>),
    Written(Result<(), WsError>),
}

/// Polls the socket: while a write is pending (a pong the client has not taken), only
/// that write, so a client that sends without reading is not read from either (its TCP
/// window fills) and holds at most one pending pong; otherwise the next frame.
fn poll_io(ws: &mut Ws, writing: bool, cx: &mut Context<'_>) -> Poll<Io> {
    if writing {
        ws.poll_flush_unpin(cx).map(Io::Written)
    } else {
        ws.poll_next_unpin(cx).map(Io::Read)
    }
}

/// Serves one connection until it ends. Not an `async fn`: its arguments are used in
/// place by the returned future instead of being moved into a second copy of themselves,
/// which would sit in every connection's task (about 600 bytes).
pub(super) fn run(
    ep: Arc<Endpoint>,
    conn: Arc<Conn>,
    mut ws: Ws,
    membership: Arc<Membership>,
    guard: DrainGuard,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let route = conn.route.clone();
        let route_label = route.path.to_string();
        let open = ep.metrics.ws.open.with_label_values(&[&route_label]);
        open.inc();
        let started = Instant::now();
        let (mut frames_in, mut frames_out) = (0u64, 0u64);
        let mut shutdown = ep.shutdown.clone();
        let mut timers = Timers::new(&route, TokioInstant::now());
        let armed = timers.armed();
        let timer = sleep_until(timers.next(TokioInstant::now()));
        tokio::pin!(timer);
        let mut bucket = Bucket::new(route.inbound_rate, route.inbound_burst, TokioInstant::now());
        // Started at the first frame that calls the app.
        let mut calls: Option<Calls> = None;
        let opened = match route.protocol {
            // Boxed: only AWX routes greet, and the future would sit in every task.
            Protocol::Awx => Box::pin(protocols::awx::on_open(&ep, &conn, &mut ws)).await,
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
                let writing = timers.write_at.is_some();
                // While the app is behind on this connection's frames, the client is not
                // read (TCP pushes back); everything else goes on.
                let calls_full = calls.as_ref().is_some_and(|c| !c.has_room());
                tokio::select! {
                    _ = shutting_down(&mut shutdown) => break Ending::server(1001, "server shutting down"),
                    _ = &mut timer, if armed || writing => {
                        let now = TokioInstant::now();
                        match timers.due(now, !calls_full) {
                            Due::WriteStuck => break Ending { code: 1006, by: "server", reason: "write timed out".into() },
                            Due::Lifetime => break Ending::server(1001, "connection lifetime reached"),
                            Due::Idle => break Ending::server(1001, "idle timeout"),
                            Due::Silent => break Ending { code: 1006, by: "server", reason: "no answer to pings".into() },
                            Due::Ping => {
                                if let Err(e) = send(&ep, &mut ws, Message::Ping(Default::default()), route.send_timeout).await {
                                    break Ending { code: 1006, by: "server", reason: e.into() };
                                }
                            }
                            Due::Nothing => {}
                        }
                        timer.as_mut().reset(timers.next(TokioInstant::now()));
                    }
                    out = membership.queue().recv() => match out {
                        Recv::Kicked(code) => break Ending::server(code, "too slow: messages queued faster than the client reads"),
                        Recv::Item(Outbound::Frame(m)) => match send_queued(&ep, &mut ws, membership.queue(), m, route.send_timeout).await {
                            Ok((n, close)) => {
                                frames_out += n;
                                if let Some((code, reason)) = close {
                                    break Ending::server(code, &reason);
                                }
                            }
                            Err(e) => break Ending { code: 1006, by: "server", reason: e.into() },
                        },
                        Recv::Item(Outbound::Close(code, reason)) => break Ending::server(code, &reason),
                    },
                    // Boxed: polled only while the app is behind; inline, its ~180 bytes
                    // would sit in every idle connection's task.
                    _ = async { if let Some(c) = &calls { Box::pin(c.room()).await } }, if calls_full => {}
                    io = poll_fn(|cx| poll_io(&mut ws, writing, cx)), if writing || !calls_full => {
                        let frame = match io {
                            Io::Written(Ok(())) => {
                                timers.written();
                                continue;
                            }
                            Io::Written(Err(_)) => break Ending { code: 1006, by: "server", reason: "write failed".into() },
                            Io::Read(frame) => frame,
                        };
                        let now = TokioInstant::now();
                        timers.heard(now);
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
                            Some(Ok(Message::Ping(_))) => {
                                ep.metrics.ws.frames_in.with_label_values(&["ping"]).inc();
                                // tungstenite queued the pong (replacing any older one); the
                                // client must take it within send_timeout.
                                timers.writing(now, route.send_timeout);
                                timer.as_mut().reset(timers.next(now));
                            }
                            Some(Ok(Message::Pong(_))) => ep.metrics.ws.frames_in.with_label_values(&["pong"]).inc(),
                            Some(Ok(Message::Frame(_))) => {}
                            Some(Ok(m)) => {
                                frames_in += 1;
                                let kind = if m.is_text() { "text" } else { "binary" };
                                ep.metrics.ws.frames_in.with_label_values(&[kind]).inc();
                                if !bucket.take(now) {
                                    let mode = calls::mode(&conn);
                                    ep.metrics.ws.inbound.with_label_values(&[mode, "rate_limited"]).inc();
                                    match route.inbound_limit {
                                        InboundLimit::Close => break Ending::server(1008, "rate limit"),
                                        InboundLimit::Drop => continue,
                                    }
                                }
                                let m = match route.protocol {
                                    Protocol::Channels => match inbound::at_once(&ep, &conn, &membership, m) {
                                        None => continue,
                                        Some(m) => m,
                                    },
                                    _ => m,
                                };
                                let c = calls.get_or_insert_with(|| Calls::start(&ep, &conn, &membership));
                                if !c.submit(m) {
                                    ep.metrics.ws.inbound.with_label_values(&[calls::mode(&conn), "error"]).inc();
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

        // Leave every group now; an app call in flight may still hold the guard.
        membership.close();
        drop(calls);
        open.dec();
        ep.metrics
            .ws
            .closes
            .with_label_values(&[crate::metrics::close_code_label(ending.code)])
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
        drop(guard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(extra: &str) -> RouteConfig {
        let text =
            format!("[upstream]\nservers=[\"127.0.0.1:1\"]\n[[ws]]\npath=\"/ws/\"\n{extra}\n");
        crate::config::Config::parse(&text, std::path::Path::new("t"))
            .unwrap()
            .ws
            .remove(0)
    }

    #[test]
    fn timers_ping_until_idle_then_lifetime_wins() {
        let t0 = TokioInstant::now();
        let s = Duration::from_secs(1);
        let mut t = Timers::new(
            &route("ping_interval = \"2s\"\nidle_timeout = \"5s\"\nmax_lifetime = \"7s\""),
            t0,
        );
        assert!(t.armed());
        assert_eq!(t.next(t0), t0 + 2 * s);
        assert_eq!(t.due(t0 + s, true), Due::Nothing);
        assert_eq!(t.due(t0 + 2 * s, true), Due::Ping);
        assert_eq!(t.next(t0), t0 + 4 * s, "the next ping is an interval later");
        t.heard(t0 + 3 * s);
        assert_eq!(t.due(t0 + 4 * s, true), Due::Ping);
        assert_eq!(t.next(t0), t0 + 6 * s);
        // Heard at 3 s: idle at 8 s, but the lifetime (7 s) comes first and wins.
        assert_eq!(t.due(t0 + 7 * s, true), Due::Lifetime);
    }

    #[test]
    fn timers_give_up_on_a_silent_client() {
        let t0 = TokioInstant::now();
        let s = Duration::from_secs(1);
        let mut t = Timers::new(&route("ping_interval = \"1s\""), t0);
        assert_eq!(t.due(t0 + s, true), Due::Ping);
        assert_eq!(t.due(t0 + 2 * s, true), Due::Ping, "two intervals: not yet");
        assert_eq!(t.due(t0 + 3 * s, true), Due::Silent);
        t.heard(t0 + 3 * s);
        assert_eq!(
            t.due(t0 + 3 * s, true),
            Due::Ping,
            "heard again: pings go on"
        );
    }

    #[test]
    fn timers_close_a_client_that_does_not_take_its_pong() {
        let t0 = TokioInstant::now();
        let s = Duration::from_secs(1);
        let mut t = Timers::new(&route("ping_interval = \"0s\""), t0);
        assert!(!t.armed());
        t.writing(t0, 10 * s);
        // More pings while the pong waits do not move the deadline.
        t.writing(t0 + 5 * s, 10 * s);
        assert_eq!(t.next(t0), t0 + 10 * s);
        assert_eq!(t.due(t0 + 9 * s, true), Due::Nothing);
        assert_eq!(t.due(t0 + 10 * s, true), Due::WriteStuck);
        t.written();
        assert_eq!(t.due(t0 + 11 * s, true), Due::Nothing);
        // Not listening (the app is behind): silence is not held against the client.
        let mut t = Timers::new(&route("ping_interval = \"1s\"\nidle_timeout = \"2s\""), t0);
        assert_eq!(t.due(t0 + 3 * s, false), Due::Ping);
        assert_eq!(t.due(t0 + 4 * s, false), Due::Ping);
        assert_eq!(t.due(t0 + 6 * s, true), Due::Idle);
    }

    #[test]
    fn timers_idle_and_none() {
        let t0 = TokioInstant::now();
        let s = Duration::from_secs(1);
        let mut t = Timers::new(&route("ping_interval = \"0s\"\nidle_timeout = \"3s\""), t0);
        assert_eq!(t.next(t0), t0 + 3 * s);
        t.heard(t0 + 2 * s);
        // An early wake-up (the timer was set for 3 s) finds nothing due.
        assert_eq!(t.due(t0 + 3 * s, true), Due::Nothing);
        assert_eq!(t.next(t0), t0 + 5 * s);
        assert_eq!(t.due(t0 + 5 * s, true), Due::Idle);

        let quiet = Timers::new(&route("ping_interval = \"0s\""), t0);
        assert!(!quiet.armed());
        assert!(quiet.next(t0) > t0 + Duration::from_secs(3600 * 24 * 300));
    }
}
