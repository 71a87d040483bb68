//! Client timeouts and connection limits (issue 10), against real gunicorn: partial heads
//! are closed at header_timeout with 408, idle keep-alives at keepalive_timeout, a
//! connection serves keepalive_requests requests, and connection limits refuse with 503,
//! counted. Outcomes only; every wait has a generous limit.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn connect(cg: &Channelgate) -> TcpStream {
    let s = TcpStream::connect(cg.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Reads until the server closes; what it sent.
fn read_until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One keep-alive GET on `s`; the response head (the body is read and dropped).
fn keepalive_get(r: &mut BufReader<TcpStream>, path: &str) -> String {
    write!(r.get_mut(), "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut head = String::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "closed mid-response");
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    head
}

#[test]
fn slow_heads_and_idle_connections_are_closed() {
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "timeouts", Bind::Tcp(free_port()));
    let cg = Channelgate::start(
        dir.path(),
        "header_timeout = \"1s\"\nkeepalive_timeout = \"1s\"\nkeepalive_requests = 3\nbody_timeout = \"1s\"",
        &format!("[upstream]\nservers = [\"{}\"]\n", app.bind.config_addr()),
    );

    // A head sent a byte every 100 ms never completes: 408, then the connection closes,
    // although the client never stops sending.
    let mut s = connect(&cg);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let mut w = s.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if w.write_all(b"X").is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    });
    let answer = read_until_closed(&mut s);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(trickler.join().unwrap(), "the connection stayed open");
    assert_eq!(
        cg.metric("channelgate_client_timeouts_total{kind=\"header\"}"),
        1.0
    );

    // An idle keep-alive connection is closed after keepalive_timeout, silently.
    let s = connect(&cg);
    let mut r = BufReader::new(s);
    assert!(keepalive_get(&mut r, "/healthz").starts_with("HTTP/1.1 200"));
    let rest = read_until_closed(r.get_mut());
    assert!(rest.is_empty(), "{rest:?}");
    wait_for(
        "the keep-alive close counted",
        Duration::from_secs(10),
        || cg.metric("channelgate_client_timeouts_total{kind=\"keepalive\"}") >= 1.0,
    );

    // keepalive_requests = 3: the third response ends the connection.
    let s = connect(&cg);
    let mut r = BufReader::new(s);
    for _ in 0..3 {
        assert!(keepalive_get(&mut r, "/healthz").starts_with("HTTP/1.1 200"));
    }
    let rest = read_until_closed(r.get_mut());
    assert!(rest.is_empty(), "{rest:?}");

    // A body that stops midway: 408 at body_timeout, and the app never saw the request.
    let mut s = connect(&cg);
    s.write_all(b"POST /upload/ HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let answer = read_until_closed(&mut s);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert_eq!(
        cg.metric("channelgate_client_timeouts_total{kind=\"body\"}"),
        1.0
    );
    assert_eq!(
        cg.metric("channelgate_http_requests_total{method=\"POST\",status_class=\"2xx\"}"),
        0.0
    );

    // A connection that sends nothing at all is closed at header_timeout too.
    let mut s = connect(&cg);
    let silent = read_until_closed(&mut s);
    assert!(silent.is_empty(), "{silent:?}");
}

#[test]
fn connection_limits_refuse_and_count() {
    let dir = tempdir();
    // No upstream is needed: refused connections never reach it.
    let cg = Channelgate::start(
        dir.path(),
        "max_connections = 4\nmax_connections_per_ip = 2",
        &format!(
            "[upstream]\nservers = [\"127.0.0.1:{}\"]\n[[ws]]\npath = \"/ws/{{g}}/\"\ngroups = [\"{{g}}\"]\n",
            free_port()
        ),
    );
    // Two connections from 127.0.0.1 are the per-address limit (the fixture's readiness
    // check may still hold one of them).
    let base = cg.metric("channelgate_client_connections") as usize;
    let held: Vec<TcpStream> = (base..2).map(|_| connect(&cg)).collect();
    wait_for("two connections admitted", Duration::from_secs(30), || {
        cg.metric("channelgate_client_connections") == 2.0
    });
    let mut s = connect(&cg);
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let answer = read_until_closed(&mut s);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert_eq!(
        cg.metric("channelgate_connections_refused_total{reason=\"max_connections_per_ip\"}"),
        1.0
    );
    // A refused WebSocket is counted as `overloaded`.
    let mut s = connect(&cg);
    s.write_all(
        b"GET /ws/a/ HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    assert!(read_until_closed(&mut s).starts_with("HTTP/1.1 503"));
    assert_eq!(
        cg.metric("channelgate_ws_connects_total{outcome=\"overloaded\"}"),
        1.0
    );
    // Closing one frees its place.
    drop(held);
    wait_for("places freed", Duration::from_secs(10), || {
        cg.metric("channelgate_client_connections") == base as f64
    });
    let (status, _) = cg.admin("/metrics");
    assert_eq!(status, 200);
    let mut r = BufReader::new(connect(&cg));
    // The upstream is down: 502 or 503, but answered by the proxy, not refused.
    let head = keepalive_get(&mut r, "/");
    assert!(
        head.starts_with("HTTP/1.1 502") || head.starts_with("HTTP/1.1 503"),
        "{head}"
    );
    assert_eq!(
        cg.metric("channelgate_connections_refused_total{reason=\"max_connections_per_ip\"}"),
        2.0
    );
}

#[test]
fn the_total_connection_limit_refuses_and_counts() {
    let dir = tempdir();
    let cg = Channelgate::start(
        dir.path(),
        "max_connections = 3",
        &format!("[upstream]\nservers = [\"127.0.0.1:{}\"]\n", free_port()),
    );
    let base = cg.metric("channelgate_client_connections") as usize;
    let held: Vec<TcpStream> = (base..3).map(|_| connect(&cg)).collect();
    wait_for(
        "three connections admitted",
        Duration::from_secs(10),
        || cg.metric("channelgate_client_connections") == 3.0,
    );
    let mut s = connect(&cg);
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let answer = read_until_closed(&mut s);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert_eq!(
        cg.metric("channelgate_connections_refused_total{reason=\"max_connections\"}"),
        1.0
    );
    drop(held);
    wait_for("places freed", Duration::from_secs(10), || {
        cg.metric("channelgate_client_connections") == base as f64
    });
}
