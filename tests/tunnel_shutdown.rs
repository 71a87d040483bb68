//! WebSocket pass-through tunnels (an upgrade no route claims, relayed to the upstream)
//! have an end: shutdown's grace period closes them, and so does `[upstream]
//! tunnel_idle_timeout`. The exit code tells a clean stop (0) from one that cut work (3).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// Opens a pass-through tunnel through `cg` and returns the client socket after the 101.
fn open_tunnel(cg: &Channelgate) -> TcpStream {
    let mut s = TcpStream::connect(cg.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"GET /tunnel HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).expect("response head");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Reads until the tunnel is closed under the client (EOF or reset); panics on a timeout.
fn read_until_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue, // the echo server's pings
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the tunnel was not closed: {e}"),
        }
    }
}

#[test]
fn sigterm_closes_an_open_tunnel_at_the_end_of_the_grace_period() {
    let dir = tempdir();
    let (_echo, port) = echo_server(dir.path());
    let mut cg = Channelgate::start(
        dir.path(),
        "grace_period = \"2s\"",
        &format!("[upstream]\nservers = [\"127.0.0.1:{port}\"]\n"),
    );
    let mut s = open_tunnel(&cg);
    wait_for("tunnel open", Duration::from_secs(10), || {
        cg.metric("channelgate_upgrade_passthrough_open") == 1.0
    });
    cg.proc.signal("TERM");
    read_until_closed(&mut s);
    let exit = cg.proc.wait_exit(Duration::from_secs(30));
    assert_eq!(
        exit.code(),
        Some(3),
        "work was cut: exit code 3\n{}",
        cg.proc.output()
    );
    let log = cg.proc.output();
    assert!(log.contains("grace period over"), "{log}");
    assert!(!log.contains("drained; exiting"), "{log}");
    // One grace-period figure in the shutdown log (not also Pingora's longer backstop).
    assert!(!log.contains("Graceful shutdown: grace period"), "{log}");
}

#[test]
fn an_idle_tunnel_is_closed_after_tunnel_idle_timeout() {
    let dir = tempdir();
    let (_echo, port) = echo_server(dir.path());
    let cg = Channelgate::start(
        dir.path(),
        "",
        &format!("[upstream]\nservers = [\"127.0.0.1:{port}\"]\ntunnel_idle_timeout = \"1s\"\n"),
    );
    let mut s = open_tunnel(&cg);
    read_until_closed(&mut s);
    wait_for("counted as idle", Duration::from_secs(10), || {
        cg.metric("channelgate_upgrade_passthrough_ended_total{reason=\"idle_timeout\"}") == 1.0
    });
    assert_eq!(cg.metric("channelgate_upgrade_passthrough_open"), 0.0);
}
