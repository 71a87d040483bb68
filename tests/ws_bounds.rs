//! End-to-end: every WebSocket client is bounded, and a slow app never makes a healthy
//! client look slow. Real gunicorn + the Django test app, real WebSocket clients (tokio-
//! tungstenite, and a raw TCP one for the client that never reads).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::time::{Duration, Instant};

use common::ws::*;
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn setup(server_extra: &str, routes: &str) -> WithApp {
    with_app(server_extra, routes)
}

fn publish(cg: &Channelgate, http: &reqwest::blocking::Client, group: &str, text: &str) {
    let (status, _) = publish_with(http, cg, group, text, "text/plain");
    assert_eq!(status, 200, "publish {text}");
}

/// Sends a ping with `payload` and waits for its pong (other frames are skipped).
async fn assert_answers_pings(ws: &mut Ws, payload: &[u8]) {
    ws.send(Message::Ping(payload.to_vec().into()))
        .await
        .expect("send a ping");
    loop {
        match tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("a pong within 15s")
        {
            Some(Ok(Message::Pong(p))) => break assert_eq!(&p[..], payload),
            Some(Ok(_)) => {}
            other => panic!("no pong, the connection ended: {other:?}"),
        }
    }
}

/// Opens a WebSocket over a plain blocking socket, so the test decides when (never) to
/// read.
fn raw_connect(addr: &str, path: &str) -> StdTcpStream {
    let mut s = StdTcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .expect("write handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("read handshake answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// A masked ping frame with a 125-byte payload (the largest a control frame may carry).
fn ping_frame() -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut f = vec![0x89, 0x80 | 125];
    f.extend_from_slice(&mask);
    f.extend((0..125).map(|i| b'p' ^ mask[i % 4]));
    f
}

#[test]
fn a_pinging_client_that_never_reads_is_closed_and_memory_stays_flat() {
    let s = setup(
        "",
        "[[ws]]\npath = \"/ws/p/\"\nping_interval = \"0s\"\nsend_timeout = \"2s\"\n",
    );
    let before = s.cg.metric("process_resident_memory_bytes");
    assert!(before > 0.0, "process_resident_memory_bytes is exported");
    let mut sock = raw_connect(&s.cg.addr(), "/ws/p/");
    sock.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Whole frames back to back; a partial write continues where it stopped.
    let buf: Vec<u8> = std::iter::repeat_n(ping_frame(), 1000).flatten().collect();
    let (mut off, mut sent) = (0usize, 0u64);
    let start = Instant::now();
    let ended = loop {
        match sock.write(&buf[off..]) {
            Ok(0) => break "eof",
            Ok(n) => {
                sent += n as u64;
                off = (off + n) % buf.len();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break "closed",
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "a client that pings without reading was never closed ({sent} bytes sent)"
        );
    };
    assert_eq!(ended, "closed");
    wait_for("the close counted", Duration::from_secs(10), || {
        s.cg.metric("channelgate_ws_closes_total{code=\"1006\"}") >= 1.0
    });
    assert!(
        s.cg.proc.output().contains("write timed out"),
        "closed for not taking its pong"
    );
    let after = s.cg.metric("process_resident_memory_bytes");
    assert!(
        after - before < 32.0 * 1024.0 * 1024.0,
        "RSS grew from {before} to {after} bytes while a client pinged ({sent} bytes) without reading"
    );
    // Still serving.
    let rt = rt();
    rt.block_on(async {
        let mut ws = connect(&s.cg.addr(), "/ws/p/").await;
        assert_answers_pings(&mut ws, b"x").await;
    });
}

#[test]
fn never_reading_clients_of_large_messages_are_bounded_by_send_queue_bytes() {
    // The default send_queue (256 messages) would let each client hold 30 of these; the
    // default send_queue_bytes ("1MiB") holds one, and the next is refused.
    let s = setup(
        "",
        "[[ws]]\npath = \"/ws/big/\"\ngroups = [\"big\"]\nsend_timeout = \"2s\"\n",
    );
    let before = s.cg.metric("process_resident_memory_bytes");
    let stalled: Vec<StdTcpStream> = (0..10)
        .map(|_| raw_connect(&s.cg.addr(), "/ws/big/"))
        .collect();
    let http = client();
    let payload = "b".repeat(1_000_000);
    for _ in 0..30 {
        publish(&s.cg, &http, "big", &payload);
    }
    // Each is closed: kicked (1013) when the loop sees its full queue, or dropped (1006)
    // when the write in progress outlives send_timeout, whichever comes first.
    let closed = || {
        s.cg.metric("channelgate_ws_closes_total{code=\"1013\"}")
            + s.cg.metric("channelgate_ws_closes_total{code=\"1006\"}")
    };
    wait_for("all ten closed", Duration::from_secs(30), || {
        closed() == 10.0
    });
    let refused =
        s.cg.metric("channelgate_hub_dropped_total{reason=\"slow_client_closed\"}");
    assert!(
        refused >= 10.0 * 10.0,
        "each client's queue refused many of the 30 messages (socket buffers took a few): {refused}"
    );
    let after = s.cg.metric("process_resident_memory_bytes");
    assert!(
        after - before < 96.0 * 1024.0 * 1024.0,
        "RSS grew from {before} to {after} bytes for ten clients that never read"
    );
    drop(stalled);
}

/// Sends `n` text frames `{prefix}{i}` in one go, ignoring failures (the server may close
/// the connection midway, which is the point).
async fn flood(ws: &mut Ws, prefix: &str, n: usize) {
    for i in 0..n {
        if ws
            .feed(Message::Text(format!("{prefix}{i}").into()))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = ws.flush().await;
}

#[test]
fn an_inbound_flood_is_closed_or_dropped_at_the_rate_while_others_receive_everything() {
    let s = setup(
        "",
        "[[ws]]\npath = \"/ws/chat/\"\ngroups = [\"chat\"]\ninbound = { group = \"chat\" }\ninbound_rate = \"20/s\"\ninbound_burst = 40\n\n\
         [[ws]]\npath = \"/ws/lenient/\"\ngroups = [\"lenient\"]\ninbound = { group = \"lenient\" }\ninbound_limit = \"drop\"\n",
    );
    let rt = rt();
    let addr = s.cg.addr();
    let m = |series: &str| s.cg.metric(series);

    // "close": one member sends 5,000 messages in one write.
    let mut members = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..20 {
            v.push(connect(&addr, "/ws/chat/").await);
        }
        v
    });
    let mut flooder = rt.block_on(connect(&addr, "/ws/chat/"));
    rt.block_on(flood(&mut flooder, "m", 5000));
    wait_for(
        "the flooder closed with 1008",
        Duration::from_secs(30),
        || m("channelgate_ws_closes_total{code=\"1008\"}") == 1.0,
    );
    // Every frame the bucket let through is published or (queued behind the close)
    // abandoned; wait until all are accounted for.
    let passed = || {
        m("channelgate_ws_frames_received_total{kind=\"text\"}")
            - m("channelgate_ws_inbound_total{mode=\"group\",outcome=\"rate_limited\"}")
    };
    let settled = || {
        m("channelgate_ws_inbound_total{mode=\"group\",outcome=\"ok\"}")
            + m("channelgate_ws_inbound_total{mode=\"group\",outcome=\"abandoned\"}")
    };
    wait_for(
        "the flooder's frames settled",
        Duration::from_secs(30),
        || settled() == passed(),
    );
    let published = m("channelgate_ws_inbound_total{mode=\"group\",outcome=\"ok\"}") as usize;
    assert!(
        (40..1000).contains(&published),
        "the burst (40) and little more got through, not 5,000: {published}"
    );
    assert_eq!(
        m("channelgate_ws_inbound_total{mode=\"group\",outcome=\"rate_limited\"}"),
        1.0,
        "closed at the first frame over the rate"
    );
    rt.block_on(async {
        for ws in members.iter_mut() {
            for i in 0..published {
                assert_eq!(next_text(ws).await, format!("m{i}"));
            }
            quiet(ws).await;
        }
    });
    assert_eq!(
        m("channelgate_hub_dropped_total{reason=\"slow_client_closed\"}"),
        0.0,
        "no member was kicked as too slow"
    );
    drop(flooder);

    // "drop": the flood is cut to the rate and the flooder stays connected.
    let mut listener = rt.block_on(connect(&addr, "/ws/lenient/"));
    let mut flooder = rt.block_on(connect(&addr, "/ws/lenient/"));
    let limited_before = m("channelgate_ws_inbound_total{mode=\"group\",outcome=\"rate_limited\"}");
    let ok_before = m("channelgate_ws_inbound_total{mode=\"group\",outcome=\"ok\"}");
    rt.block_on(flood(&mut flooder, "d", 2000));
    wait_for(
        "the lenient flood accounted for",
        Duration::from_secs(30),
        || {
            let limited =
                m("channelgate_ws_inbound_total{mode=\"group\",outcome=\"rate_limited\"}")
                    - limited_before;
            let ok = m("channelgate_ws_inbound_total{mode=\"group\",outcome=\"ok\"}") - ok_before;
            limited + ok == 2000.0
        },
    );
    let ok =
        (m("channelgate_ws_inbound_total{mode=\"group\",outcome=\"ok\"}") - ok_before) as usize;
    assert!((40..1000).contains(&ok), "{ok} of 2,000 got through");
    rt.block_on(async {
        // The listener gets exactly what got through, in order (numbers may skip).
        let mut last = -1i64;
        for _ in 0..ok {
            let t = next_text(&mut listener).await;
            let n: i64 = t
                .strip_prefix('d')
                .and_then(|n| n.parse().ok())
                .expect("dN");
            assert!(n > last, "{n} after {last}");
            last = n;
        }
        quiet(&mut listener).await;
        // The flooder is still connected: it answers a ping.
        assert_answers_pings(&mut flooder, b"alive").await;
    });
    assert_eq!(m("channelgate_ws_closes_total{code=\"1008\"}"), 1.0);
}

/// The `csrftoken` value in a Cookie header value.
fn csrftoken(cookie: &str) -> String {
    cookie
        .split("; ")
        .find_map(|c| c.strip_prefix("csrftoken="))
        .expect("a csrftoken cookie")
        .to_string()
}

#[test]
fn awx_ten_thousand_ids_in_one_frame_make_at_most_max_groups_authorize_calls() {
    let s = setup(
        "",
        "[[ws]]\npath = \"/websocket/\"\nprotocol = \"awx\"\nmax_message = \"1MiB\"\n\
         auth = { path = \"/api/channelgate/ws-auth/\" }\n\
         authorize = { path = \"/api/channelgate/ws-authorize/\" }\nmax_groups = 100\n",
    );
    let cookie = login(&s.cg, "/awx/login/", "alice");
    let xrf = csrftoken(&cookie);
    let calls = || {
        ["allowed", "denied", "error"]
            .iter()
            .map(|o| {
                s.cg.metric(&format!(
                    "channelgate_ws_inbound_total{{mode=\"authorize\",outcome=\"{o}\"}}"
                ))
            })
            .sum::<f64>()
    };
    let rt = rt();
    let mut ws = rt
        .block_on(connect_with(
            &s.cg.addr(),
            "/websocket/",
            &[("cookie", &cookie)],
        ))
        .unwrap();
    assert_eq!(rt.block_on(next_json(&mut ws))["accept"], json!(true));

    let ids: Vec<u32> = (0..10_000).collect();
    let frame = json!({"groups": {"job_events": ids}, "xrftoken": xrf}).to_string();
    rt.block_on(ws.send(Message::Text(frame.into()))).unwrap();
    assert_eq!(
        rt.block_on(next_json(&mut ws))["error"],
        json!("access denied to channel: at most 100 groups per connection")
    );
    assert_eq!(calls(), 0.0, "refused before asking the app anything");

    // 60 ids the app must decide: 60 calls (4 at a time), only 12 allowed; jobs-* is
    // allowed by the auth answer's patterns without a call.
    let ids: Vec<u32> = (1..=60).collect();
    let frame = json!({"groups": {"job_events": ids, "jobs": ["status_changed"]}, "xrftoken": xrf})
        .to_string();
    // The answers up to the subscription summary: (denials, summary).
    let subscribe = |ws: &mut Ws, frame: &str| {
        rt.block_on(async {
            ws.send(Message::Text(frame.to_string().into()))
                .await
                .unwrap();
            let mut denied = 0;
            loop {
                let v = next_json(ws).await;
                if v.get("groups_current").is_some() {
                    return (denied, v);
                }
                assert!(
                    v["error"].as_str().unwrap().starts_with("access denied"),
                    "{v}"
                );
                denied += 1;
            }
        })
    };
    let (denied, answer) = subscribe(&mut ws, &frame);
    assert_eq!(denied, 59);
    assert_eq!(
        answer["groups_current"],
        json!(["job_events-12", "jobs-status_changed"])
    );
    assert_eq!(calls(), 60.0);
    assert_eq!(
        s.cg.metric("channelgate_ws_inbound_total{mode=\"authorize\",outcome=\"allowed\"}"),
        1.0
    );
    // The same again: every answer is cached, no call.
    let (denied, _) = subscribe(&mut ws, &frame);
    assert_eq!(denied, 59);
    assert_eq!(calls(), 60.0);
}

#[test]
fn a_slow_webhook_never_gets_a_healthy_client_kicked() {
    let s = setup(
        "",
        "[[ws]]\npath = \"/ws/rpc/\"\ngroups = [\"feed\"]\ninbound = { http = \"/ws/slow-receive/\", timeout = \"20s\" }\n",
    );
    let rt = rt();
    let mut ws = rt.block_on(connect(&s.cg.addr(), "/ws/rpc/"));
    rt.block_on(ws.send(Message::Text("hello".into()))).unwrap();
    wait_for("the app got the frame", Duration::from_secs(20), || {
        s.app.proc.output().contains("slow-receive started: hello")
    });
    // 3,000 messages at up to 1,000/s while the app sleeps 3 s on the frame (the default
    // send_queue is 256: a loop waiting for the app would have been kicked long before).
    const N: usize = 3000;
    let reader = rt.spawn(async move {
        let (mut next, mut replied) = (0usize, false);
        while next < N || !replied {
            let t = next_text(&mut ws).await;
            if t == "slow reply: hello" {
                replied = true;
            } else {
                assert_eq!(t, format!("n{next}"), "in order, none lost");
                next += 1;
            }
        }
        quiet(&mut ws).await;
        ws
    });
    let http = client();
    let start = Instant::now();
    for i in 0..N {
        // Paced to about 1,000/s (pacing only; nothing is asserted about time).
        let due = start + Duration::from_millis(i as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        publish(&s.cg, &http, "feed", &format!("n{i}"));
    }
    let mut ws = rt.block_on(reader).expect("the client received everything");
    assert_eq!(
        s.cg.metric("channelgate_hub_dropped_total{reason=\"slow_client_closed\"}"),
        0.0
    );
    assert_eq!(
        s.cg.metric("channelgate_ws_inbound_total{mode=\"http\",outcome=\"ok\"}"),
        1.0
    );
    rt.block_on(ws.close(None)).unwrap();
}

#[test]
fn sigterm_during_a_slow_webhook_closes_at_once_and_drains_within_the_grace_period() {
    let mut s = setup(
        "grace_period = \"20s\"",
        "[[ws]]\npath = \"/ws/rpc/\"\ninbound = { http = \"/ws/slow-receive/\", timeout = \"20s\" }\n",
    );
    let rt = rt();
    let mut ws = rt.block_on(connect(&s.cg.addr(), "/ws/rpc/"));
    rt.block_on(ws.send(Message::Text("last words".into())))
        .unwrap();
    wait_for("the app got the frame", Duration::from_secs(20), || {
        s.app
            .proc
            .output()
            .contains("slow-receive started: last words")
    });
    s.cg.proc.signal("TERM");
    assert_eq!(rt.block_on(close_code(&mut ws)), 1001);
    assert!(
        !s.app.proc.output().contains("slow-receive done"),
        "the client heard the shutdown while the app was still busy"
    );
    let status = s.cg.proc.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{}", s.cg.proc.output());
    let log = s.cg.proc.output();
    assert!(
        !log.contains("inbound frame not delivered"),
        "the call in flight was allowed to finish:\n{log}"
    );
}
