//! End-to-end: WebSocket routes served by channelgate itself, with gunicorn serving the
//! Django test app for auth, inbound HTTP and publishing.

mod common;

use std::time::Duration;

use common::ws::*;
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// gunicorn (told channelgate's admin URL) and channelgate with `routes`.
fn setup(routes: &str) -> WithApp {
    with_app("", routes)
}

fn publish(cg: &Channelgate, group: &str, body: &str, content_type: &str) -> (u16, Value) {
    publish_with(&client(), cg, group, body, content_type)
}

#[test]
fn catmaid_updates_reach_the_logged_in_user_and_anonymous_is_refused() {
    let s = setup("[[ws]]\npath = \"/channels/updates/\"\ngroups = [\"updates-{user}\"]\nauth = { path = \"/ws-auth/\" }\n");
    let cookie = login(&s.cg, "/accounts/login/", "alice");

    // A real Python client (websockets) with the Django session cookie.
    let mut cmd = std::process::Command::new(venv_bin("python"));
    cmd.arg(repo().join("tests/peers/ws_client.py"))
        .arg(format!("ws://{}/channels/updates/", s.cg.addr()))
        .args([
            "--header",
            &format!("Cookie:{cookie}"),
            "--expect",
            "1",
            "--timeout",
            "20",
        ]);
    let client_proc = Proc::spawn("ws-client-alice", &mut cmd, s.dir.path());
    wait_for("alice connected", Duration::from_secs(10), || {
        s.cg.metric("channelgate_ws_connections{route=\"/channels/updates/\"}") == 1.0
    });
    assert_eq!(s.cg.metric("channelgate_hub_groups"), 1.0);

    // A Django view publishes to updates-<user id> with one requests.post.
    let r = client()
        .post(s.cg.url("/notify-me/"))
        .header("Cookie", &cookie)
        .form(&[("text", "{\"event\": \"x\"}")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text());
    let mut client_proc = client_proc;
    let status = client_proc.wait_exit(Duration::from_secs(20));
    let out = client_proc.output();
    assert!(status.success(), "{out}");
    assert!(
        out.contains(r#"{"type": "text", "data": "{\"event\": \"x\"}"}"#),
        "{out}"
    );

    let rt = rt();
    assert_eq!(
        refused_status(rt.block_on(connect_with(&s.cg.addr(), "/channels/updates/", &[]))),
        403
    );
    assert_eq!(
        s.cg.metric("channelgate_ws_connects_total{outcome=\"auth_denied\"}"),
        1.0
    );
    let out = s.cg.proc.output();
    assert!(
        out.contains("websocket closed") && out.contains("user=1"),
        "one line per closed connection:\n{out}"
    );
}

#[test]
fn chat_room_members_see_each_other_and_other_rooms_do_not() {
    let s = setup("[[ws]]\npath = \"/ws/chat/{room}/\"\ngroups = [\"chat-{room}\"]\ninbound = { group = \"chat-{room}\", type = \"chat.message\" }\n");
    let rt = rt();
    rt.block_on(async {
        let addr = s.cg.addr();
        let mut a = connect_with(&addr, "/ws/chat/lobby/", &[]).await.unwrap();
        let mut b = connect_with(&addr, "/ws/chat/lobby/", &[]).await.unwrap();
        let mut c = connect_with(&addr, "/ws/chat/other/", &[]).await.unwrap();
        a.send(Message::Text("hello from a".into())).await.unwrap();
        assert_eq!(next_text(&mut a).await, "hello from a");
        assert_eq!(next_text(&mut b).await, "hello from a");
        b.send(Message::Text("hi a".into())).await.unwrap();
        assert_eq!(next_text(&mut a).await, "hi a");
        quiet(&mut c).await;
    });
    // The sender counts its publish after the hub delivered it, so the count may trail.
    wait_for("inbound counted", Duration::from_secs(10), || {
        s.cg.metric("channelgate_ws_inbound_total{mode=\"group\",outcome=\"ok\"}") == 2.0
    });
}

#[test]
fn inbound_http_reply_reaches_the_sender_only() {
    let s = setup("[[ws]]\npath = \"/ws/rpc/{room}/\"\ngroups = [\"rpc-{room}\"]\ninbound = { http = \"/ws/receive/\" }\n");
    rt().block_on(async {
        let addr = s.cg.addr();
        let mut a = connect_with(&addr, "/ws/rpc/lobby/", &[]).await.unwrap();
        let mut b = connect_with(&addr, "/ws/rpc/lobby/", &[]).await.unwrap();
        a.send(Message::Text("ping".into())).await.unwrap();
        assert_eq!(next_text(&mut a).await, "reply to anonymous in lobby: ping");
        // An empty answer sends nothing; an app error is counted and the socket lives.
        a.send(Message::Text("silent".into())).await.unwrap();
        a.send(Message::Text("fail".into())).await.unwrap();
        a.send(Message::Text("again".into())).await.unwrap();
        assert_eq!(
            next_text(&mut a).await,
            "reply to anonymous in lobby: again"
        );
        quiet(&mut b).await;
    });
    assert_eq!(
        s.cg.metric("channelgate_ws_inbound_total{mode=\"http\",outcome=\"error\"}"),
        1.0
    );
}

#[test]
fn refusals_origin_handshake_auth_and_plain_get() {
    let s = setup(concat!(
        "[[ws]]\npath = \"/ws/open/\"\nallowed_origins = [\"https://app.example.org\"]\n",
        "[[ws]]\npath = \"/ws/slow/\"\nauth = { path = \"/ws-auth-slow/\", timeout = \"500ms\" }\n",
        "[[ws]]\npath = \"/ws/broken/\"\nauth = { path = \"/ws-auth-error/\" }\n",
    ));
    let addr = s.cg.addr();
    let rt = rt();
    rt.block_on(async {
        assert_eq!(
            refused_status(
                connect_with(&addr, "/ws/open/", &[("origin", "https://evil.example")]).await
            ),
            403
        );
        connect_with(&addr, "/ws/open/", &[("origin", "https://app.example.org")])
            .await
            .unwrap();
        assert_eq!(
            refused_status(connect_with(&addr, "/ws/slow/", &[]).await),
            503
        );
        assert_eq!(
            refused_status(connect_with(&addr, "/ws/broken/", &[]).await),
            503
        );
        assert_eq!(
            refused_status(
                connect_with(&addr, "/ws/open/", &[("sec-websocket-version", "8")]).await
            ),
            426
        );
    });
    let r = client().get(s.cg.url("/ws/open/")).send().unwrap();
    assert_eq!(r.status(), 426, "a plain GET on a WebSocket route");
    assert_eq!(
        s.cg.metric("channelgate_ws_connects_total{outcome=\"origin\"}"),
        1.0
    );
    assert_eq!(
        s.cg.metric("channelgate_ws_connects_total{outcome=\"auth_error\"}"),
        2.0
    );
    assert_eq!(
        s.cg.metric("channelgate_ws_connects_total{outcome=\"accepted\"}"),
        1.0
    );
}

#[test]
fn oversized_and_invalid_utf8_frames_close_with_1009_and_1007() {
    let s = setup("[[ws]]\npath = \"/ws/echo/\"\ninbound = \"echo\"\nmax_message = \"1KiB\"\n");
    rt().block_on(async {
        let addr = s.cg.addr();
        let mut ws = connect_with(&addr, "/ws/echo/", &[]).await.unwrap();
        ws.send(Message::Text("small".into())).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "small");
        ws.send(Message::Text("x".repeat(2048).into())).await.unwrap();
        assert_eq!(close_code(&mut ws).await, 1009);

        // Invalid UTF-8 in a text frame, written by hand (a client library refuses to).
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut raw = TcpStream::connect(&addr).await.unwrap();
        raw.write_all(b"GET /ws/echo/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = raw.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 101"));
        raw.write_all(&[0x81, 0x82, 0, 0, 0, 0, 0xc3, 0x28]).await.unwrap();
        let n = raw.read(&mut buf).await.unwrap();
        assert!(n >= 4 && buf[0] == 0x88, "a close frame: {:?}", &buf[..n]);
        assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), 1007);
    });
    // Counted once the closing handshake is over, which may trail the client's read.
    wait_for("close counted", Duration::from_secs(10), || {
        s.cg.metric("channelgate_ws_closes_total{code=\"1009\"}") == 1.0
    });
}

#[test]
fn a_client_that_stops_reading_is_closed_without_delaying_others() {
    let s = setup("[[ws]]\npath = \"/ws/feed/\"\ngroups = [\"feed\"]\nsend_queue = 8\n");
    let rt = rt();
    let addr = s.cg.addr();
    let (mut good, stalled) = rt.block_on(async {
        let good = connect_with(&addr, "/ws/feed/", &[]).await.unwrap();
        let stalled = connect_with(&addr, "/ws/feed/", &[]).await.unwrap();
        (good, stalled)
    });
    // The good client reads everything as it comes; the stalled one never reads.
    let payload = "y".repeat(60_000);
    let reader = rt.spawn(async move {
        let mut n = 0;
        while n < 300 {
            match good.next().await {
                Some(Ok(Message::Text(_))) => n += 1,
                Some(Ok(_)) => {}
                other => panic!("good client lost its connection: {other:?}"),
            }
        }
        n
    });
    for _ in 0..300 {
        let (status, _) = publish(&s.cg, "feed", &payload, "text/plain");
        assert_eq!(status, 200);
    }
    assert_eq!(rt.block_on(reader).unwrap(), 300);
    wait_for("the stalled client kicked", Duration::from_secs(10), || {
        s.cg.metric("channelgate_hub_dropped_total{reason=\"slow_client_closed\"}") >= 1.0
    });
    drop(stalled);
}

#[test]
fn publish_api_validates_and_counts() {
    let s = setup("[[ws]]\npath = \"/ws/x/\"\ngroups = [\"x\"]\n");
    let rt = rt();
    let mut ws = rt
        .block_on(connect_with(&s.cg.addr(), "/ws/x/", &[]))
        .unwrap();
    let (status, body) = publish(
        &s.cg,
        "x",
        r#"{"type": "a.b", "text": "json text"}"#,
        "application/json",
    );
    assert_eq!((status, body["delivered"].as_u64()), (200, Some(1)));
    let (status, _) = publish(
        &s.cg,
        "x",
        r#"{"type": "a.b", "n": 1, "__asgi_group__": "x"}"#,
        "application/json",
    );
    assert_eq!(status, 200);
    assert_eq!(rt.block_on(next_text(&mut ws)), "json text");
    let event: Value = serde_json::from_str(&rt.block_on(next_text(&mut ws))).unwrap();
    assert_eq!(
        event,
        serde_json::json!({"type": "a.b", "n": 1}),
        "other events arrive as JSON without __asgi_ keys"
    );

    assert_eq!(publish(&s.cg, "bad%20group", "x", "text/plain").0, 400);
    assert_eq!(publish(&s.cg, "x", "{not json", "application/json").0, 400);
    assert_eq!(publish(&s.cg, "x", "[1, 2]", "application/json").0, 400);
    assert_eq!(
        publish(&s.cg, "nobody-here", "x", "text/plain").1["delivered"],
        0
    );

    // The command-line publisher.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_channelgate"))
        .args([
            "publish",
            "--admin",
            &format!("http://127.0.0.1:{}", s.cg.admin_port),
            "--group",
            "x",
            "--text",
            "from the shell",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rt.block_on(next_text(&mut ws)), "from the shell");

    // websocket.close closes the members with its code.
    publish(
        &s.cg,
        "x",
        r#"{"type": "websocket.close", "code": 4004, "reason": "bye"}"#,
        "application/json",
    );
    assert_eq!(rt.block_on(close_code(&mut ws)), 4004);
}

#[test]
fn publish_token_is_required_when_configured() {
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "t", Bind::Tcp(free_port()));
    let cg = Channelgate::start(
        dir.path(),
        "",
        &format!(
            "[upstream]\nservers = [\"{}\"]\n[[ws]]\npath = \"/ws/\"\n",
            app.bind.config_addr()
        ),
    );
    // The fixture writes [admin] itself; add the token through a second file.
    drop(cg);
    let ports = (free_port(), free_port());
    let config = dir.path().join("token.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{}\"]\npid_file = \"{d}/t.pid\"\nupgrade_sock = \"{d}/t.sock\"\n[admin]\nlisten = \"127.0.0.1:{}\"\npublish_token = \"0123456789abcdef-secret\"\n[upstream]\nservers = [\"{}\"]\n",
            ports.0,
            ports.1,
            app.bind.config_addr(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let cg = Channelgate::start_with(dir.path(), config, ports.0, ports.1, false);
    let url = format!("http://127.0.0.1:{}/publish/g", cg.admin_port);
    assert_eq!(client().post(&url).body("x").send().unwrap().status(), 401);
    let ok = client()
        .post(&url)
        .bearer_auth("0123456789abcdef-secret")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[test]
fn sigterm_closes_every_client_with_1001() {
    let mut s = setup("[[ws]]\npath = \"/ws/{name}/\"\ngroups = [\"all\"]\n");
    let rt = rt();
    let addr = s.cg.addr();
    let mut clients = rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..5 {
            v.push(
                connect_with(&addr, &format!("/ws/c{i}/"), &[])
                    .await
                    .unwrap(),
            );
        }
        v
    });
    s.cg.proc.signal("TERM");
    rt.block_on(async {
        for ws in clients.iter_mut() {
            assert_eq!(close_code(ws).await, 1001);
        }
    });
    assert!(s.cg.proc.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn idle_and_lifetime_limits_close_with_1001() {
    let s = setup(concat!(
        "[[ws]]\npath = \"/ws/idle/\"\nidle_timeout = \"1s\"\nping_interval = \"0s\"\n",
        "[[ws]]\npath = \"/ws/short/\"\nmax_lifetime = \"1s\"\n",
    ));
    let rt = rt();
    let addr = s.cg.addr();
    rt.block_on(async {
        let mut idle = connect(&addr, "/ws/idle/").await;
        let mut short = connect(&addr, "/ws/short/").await;
        assert_eq!(close_code(&mut idle).await, 1001);
        assert_eq!(close_code(&mut short).await, 1001);
    });
    // Counted once the closing handshake is over, which may trail the client's read.
    wait_for("close counted", Duration::from_secs(10), || {
        s.cg.metric("channelgate_ws_closes_total{code=\"1001\"}") == 2.0
    });
}

#[test]
fn pings_are_sent_and_a_client_that_never_answers_is_dropped() {
    let s = setup("[[ws]]\npath = \"/ws/ping/\"\nping_interval = \"1s\"\n");
    let rt = rt();
    let addr = s.cg.addr();
    // A live client sees pings (tungstenite answers them as it reads).
    let mut live = rt.block_on(connect(&addr, "/ws/ping/"));
    let first = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), live.next()).await })
        .expect("no ping within 5 s")
        .expect("stream ended")
        .expect("read failed");
    assert!(matches!(first, Message::Ping(_)), "got {first:?}");
    // A client that never reads never answers: dropped after two silent intervals,
    // while the live one keeps reading (and answering).
    let silent = rt.block_on(connect(&addr, "/ws/ping/"));
    rt.block_on(async {
        let end = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < end {
            let _ = tokio::time::timeout_at(end, live.next()).await;
        }
    });
    assert_eq!(
        s.cg.metric("channelgate_ws_closes_total{code=\"1006\"}"),
        1.0
    );
    assert_eq!(
        s.cg.metric("channelgate_ws_connections{route=\"/ws/ping/\"}"),
        1.0
    );
    assert!(s.cg.metric("channelgate_ws_frames_received_total{kind=\"pong\"}") >= 4.0);
    drop((live, silent));
}

#[test]
fn websockets_work_on_a_unix_listener_too() {
    // channelgate hands an accepted connection's socket to a fresh descriptor without
    // Pingora's buffers (proxy::unbuffered); a Unix socket takes the other branch.
    let dir = tempdir();
    let (port, admin_port) = (free_port(), free_port());
    let sock = dir.path().join("cg.sock");
    let config = dir.path().join("unix.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\", \"unix:{sock}\"]\nupgrade_sock = \"{d}/up.sock\"\npid_file = \"{d}/cg.pid\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n[upstream]\nservers = [\"127.0.0.1:{admin_port}\"]\n\n[[ws]]\npath = \"/ws/{{room}}/\"\ngroups = [\"room-{{room}}\"]\ninbound = \"echo\"\n",
            sock = sock.display(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let cg = Channelgate::start_with(dir.path(), config, port, admin_port, false);
    let rt = rt();
    let (mut unix, mut tcp) = rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(&sock).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async("ws://localhost/ws/lobby/", stream)
            .await
            .expect("handshake over the Unix socket");
        assert_eq!(resp.status().as_u16(), 101);
        ws.send(Message::Text("over unix".into())).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "over unix");
        (ws, connect(&cg.addr(), "/ws/lobby/").await)
    });
    let (status, body) = publish(
        &cg,
        "room-lobby",
        r#"{"type":"m","text":"to both"}"#,
        "application/json",
    );
    assert_eq!((status, body["delivered"].as_u64()), (200, Some(2)));
    rt.block_on(async {
        assert_eq!(next_text(&mut unix).await, "to both");
        assert_eq!(next_text(&mut tcp).await, "to both");
    });
}
