//! One WebSocket connection's life after the 101: a single loop over shutdown, the
//! timers, what the connection's [`Link`] reports (bytes read, writes stalled or drained,
//! a kick, a close the app asked for) and the client's frames. Read it top to bottom to
//! know every way a connection ends; its [`Membership`] guard leaves its groups on every
//! one of them. Messages to the client do not pass through here: the hub writes them to the
//! socket through the link, and this task only finishes what the socket did not take. The
//! loop never waits for the app: the protocol runs beside it ([`super::calls`]). Every
//! client is bounded: one pending pong, `send_queue`/`send_queue_bytes` queued,
//! `inbound_rate` messages read, `max_message` per message (inflated), nothing read while
//! our writes wait for it.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::time::{sleep_until, Instant as TokioInstant};

use super::calls::{self, Calls};
use super::config::{InboundLimit, RouteConfig};
use super::frame::{self, Event as Frame, Reader, ReaderLimits, OP_CLOSE, OP_PING, OP_PONG};
use super::link::{Event, Io, Link};
use super::ratelimit::Bucket;
use super::{Conn, Endpoint};
use crate::hub::Membership;
use crate::protocols::{self, Ctx};
use crate::shutdown::DrainGuard;

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

    fn dropped(by: &'static str, reason: &str) -> Ending {
        Ending {
            code: 1006,
            by,
            reason: reason.into(),
        }
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

/// Longest the protocol may take to answer a client's last messages before its close.
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// A connection just taken over: who it is, its socket and what was read past the
/// handshake, how its frames are read, and its place in the hub.
pub(crate) struct Start {
    pub ep: Arc<Endpoint>,
    pub conn: Arc<Conn>,
    pub io: Box<dyn Io>,
    pub pre_read: Bytes,
    pub reader: ReaderLimits,
    pub membership: Arc<Membership>,
}

/// Writes our close frame, then reads until the client's close (or its end), within
/// `limit` in all, and shuts the socket down.
async fn close_handshake(
    link: &Link,
    reader: &mut Reader,
    buf: &mut BytesMut,
    frame: Bytes,
    keep_queued: bool,
    wait_reply: bool,
    limit: Duration,
) {
    link.begin_close(frame, keep_queued);
    let closing = async {
        poll_fn(|cx| link.poll_flush(cx)).await.ok()?;
        // Until the client's close (or its end, or a frame that makes no sense).
        if wait_reply {
            loop {
                match reader.next(buf) {
                    Ok(Some(Frame::Close(_))) | Err(_) => break,
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                }
                let want = reader.wants();
                if poll_fn(|cx| link.poll_read(cx, buf, want)).await.ok()? == 0 {
                    break;
                }
            }
        }
        poll_fn(|cx| link.poll_shutdown(cx)).await.ok()
    };
    let _ = tokio::time::timeout(limit, closing).await;
}

/// Serves one connection until it ends. Not an `async fn`: its arguments are used in
/// place by the returned future instead of being moved into a second copy of themselves,
/// which would sit in every connection's task.
pub(super) fn run(start: Start, guard: DrainGuard) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let Start {
            ep,
            conn,
            io,
            pre_read,
            reader,
            membership,
        } = start;
        let route = conn.route.clone();
        let route_label = route.path.to_string();
        let open = ep.metrics.ws.open.with_label_values(&[&route_label]);
        open.inc();
        let started = Instant::now();
        let mut frames_in = 0u64;
        let link = membership.link();
        link.attach(io);
        let mut reader = Reader::new(reader);
        let mut buf = BytesMut::from(&pre_read[..]);
        drop(pre_read);
        let mut shutdown = ep.shutdown.clone();
        let mut timers = Timers::new(&route, TokioInstant::now());
        let armed = timers.armed();
        let timer = sleep_until(timers.next(TokioInstant::now()));
        tokio::pin!(timer);
        let mut bucket = Bucket::new(route.inbound_rate, route.inbound_burst, TokioInstant::now());
        let cx = Ctx {
            ep: ep.clone(),
            conn: conn.clone(),
            membership: membership.clone(),
        };
        // The protocol stays here until the first message, then moves beside the loop.
        let mut protocol = Some(protocols::for_route(&route));
        if let Some(p) = protocol.as_mut() {
            p.open(&cx);
        }
        let mut calls: Option<Calls> = None;
        // Our writes wait for the client to read.
        let mut stalled = false;
        // The connection ends because of what the client sent (a close, a bad frame): its
        // earlier messages are answered before the close.
        let mut answer_first = false;

        let ending: Ending = 'conn: loop {
            // What was read, frame by frame, while the protocol has room for messages.
            while calls.as_ref().is_none_or(|c| c.has_room()) {
                let event = match reader.next(&mut buf) {
                    Ok(Some(e)) => e,
                    Ok(None) => break,
                    Err(fail) => {
                        // What the client sent before the bad frame is still answered.
                        answer_first = true;
                        break 'conn Ending::server(fail.code(), fail.reason());
                    }
                };
                let now = TokioInstant::now();
                timers.heard(now);
                match event {
                    Frame::Close(f) => {
                        ep.metrics.ws.frames_in.with_label_values(&["close"]).inc();
                        let (code, reason) = f.unwrap_or((1005, String::new()));
                        answer_first = true;
                        break 'conn Ending {
                            code,
                            by: "client",
                            reason,
                        };
                    }
                    Frame::Ping(payload) => {
                        ep.metrics.ws.frames_in.with_label_values(&["ping"]).inc();
                        // A newer pong replaces one still waiting; the client must take it
                        // within send_timeout (the link reports the stall).
                        link.send_control(frame::encode(OP_PONG, false, &payload));
                    }
                    Frame::Pong(_) => ep.metrics.ws.frames_in.with_label_values(&["pong"]).inc(),
                    Frame::Message(m) => {
                        frames_in += 1;
                        let kind = if m.is_text() { "text" } else { "binary" };
                        ep.metrics.ws.frames_in.with_label_values(&[kind]).inc();
                        if !bucket.take(now) {
                            let mode = calls::mode(&conn);
                            ep.metrics
                                .ws
                                .inbound
                                .with_label_values(&[mode, "rate_limited"])
                                .inc();
                            match route.inbound_limit {
                                InboundLimit::Close => {
                                    break 'conn Ending::server(1008, "rate limit")
                                }
                                InboundLimit::Drop => continue,
                            }
                        }
                        let c = calls.get_or_insert_with(|| {
                            let p = protocol
                                .take()
                                .unwrap_or_else(|| protocols::for_route(&route));
                            Calls::start(&cx, p)
                        });
                        if !c.submit(m) {
                            ep.metrics
                                .ws
                                .inbound
                                .with_label_values(&[calls::mode(&conn), "error"])
                                .inc();
                        }
                    }
                }
            }
            if buf.is_empty() {
                // Everything read was taken: an idle connection keeps no read buffer.
                buf = BytesMut::new();
            }
            // While the app is behind on this connection's messages, the client is not
            // read (TCP pushes back); everything else goes on.
            let calls_full = calls.as_ref().is_some_and(|c| !c.has_room());
            let want = reader.wants();
            tokio::select! {
                _ = shutting_down(&mut shutdown) => break Ending::server(1001, "server shutting down"),
                _ = &mut timer, if armed || stalled => {
                    let now = TokioInstant::now();
                    match timers.due(now, !calls_full && !stalled) {
                        Due::WriteStuck => break Ending::dropped("server", "write timed out"),
                        Due::Lifetime => break Ending::server(1001, "connection lifetime reached"),
                        Due::Idle => break Ending::server(1001, "idle timeout"),
                        Due::Silent => break Ending::dropped("server", "no answer to pings"),
                        Due::Ping => link.send_control(frame::encode(OP_PING, false, &[])),
                        Due::Nothing => {}
                    }
                    timer.as_mut().reset(timers.next(TokioInstant::now()));
                }
                // Boxed: polled only while the app is behind; inline, its ~180 bytes
                // would sit in every idle connection's task.
                _ = async { if let Some(c) = &calls { Box::pin(c.room()).await } }, if calls_full => {}
                event = poll_fn(|cx| link.poll(cx, (!calls_full).then_some((&mut buf, want)))) => match event {
                    Event::Read(_) => {}
                    Event::Eof | Event::ReadFailed => break Ending::dropped("client", "connection dropped"),
                    Event::WriteFailed => break Ending::dropped("server", "write failed"),
                    Event::Kicked(code) => break Ending::server(code, "too slow: messages queued faster than the client reads"),
                    Event::Close(code, reason) => break Ending::server(code, &reason),
                    Event::Stalled => {
                        stalled = true;
                        let now = TokioInstant::now();
                        timers.writing(now, route.send_timeout);
                        timer.as_mut().reset(timers.next(now));
                    }
                    Event::Drained => {
                        stalled = false;
                        timers.written();
                    }
                },
            }
        };

        if ending.code != 1006 {
            // Our close, or the answer to the client's (the same code; none for 1005).
            let answer = match ending.by {
                "server" => frame::close_payload(ending.code, &ending.reason),
                _ => frame::close_payload(ending.code, ""),
            };
            let wait_reply = ending.by == "server";
            let limit = Duration::from_secs(if wait_reply { 2 } else { 1 });
            if answer_first {
                if let Some(c) = calls.take() {
                    c.finish(ANSWER_WAIT).await;
                }
            }
            close_handshake(
                link,
                &mut reader,
                &mut buf,
                frame::encode(OP_CLOSE, false, &answer),
                answer_first,
                wait_reply,
                limit,
            )
            .await;
        }

        // Leave every group now; an app call in flight may still hold the guard.
        let frames_out = link.written();
        membership.close();
        match calls {
            Some(c) => drop(c),
            None => {
                if let Some(mut p) = protocol {
                    p.close(&cx);
                }
            }
        }
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
