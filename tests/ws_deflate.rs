//! permessage-deflate (RFC 7692) against real peers: Python `websockets` (which offers it
//! by default, as browsers do) and a hand-written hostile client.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn start(dir: &std::path::Path) -> Channelgate {
    Channelgate::start(
        dir,
        "",
        &format!(
            "[upstream]\nservers = [\"127.0.0.1:{}\"]\n\n\
             [[ws]]\npath = \"/ws/feed/\"\ngroups = [\"feed\"]\nallowed_origins = [\"*\"]\n\n\
             [[ws]]\npath = \"/ws/echo/\"\ninbound = \"echo\"\nallowed_origins = [\"*\"]\n\n\
             [[ws]]\npath = \"/ws/plain/\"\ninbound = \"echo\"\ncompression = \"off\"\nallowed_origins = [\"*\"]\n",
            free_port()
        ),
    )
}

/// An AWX-like job event of about `n` bytes: repetitive JSON.
fn job_event(n: usize) -> String {
    let mut lines = String::new();
    let mut i = 0;
    while lines.len() < n {
        lines.push_str(&format!(
            "TASK [deploy : copy files] ok: [host-{i}] => {{\"changed\": false, \"path\": \"/srv/app\"}}\\n"
        ));
        i += 1;
    }
    format!("{{\"type\": \"job_event\", \"event\": \"runner_on_ok\", \"counter\": 1, \"stdout\": \"{lines}\"}}")
}

/// Runs tests/peers/ws_client.py; returns its JSON lines.
fn ws_client(args: &[&str]) -> std::process::Child {
    Command::new(venv_bin("python"))
        .arg(repo().join("tests/peers/ws_client.py"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run ws_client.py")
}

fn lines(child: std::process::Child) -> Vec<Value> {
    let out = child.wait_with_output().expect("ws_client.py output");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn python_websockets_gets_one_shared_compressed_frame_per_group_message() {
    let dir = tempdir();
    let cg = start(dir.path());
    let url = cg.url("/ws/feed/").replace("http://", "ws://");
    let clients: Vec<_> = (0..3)
        .map(|_| ws_client(&[&url, "--show-handshake", "--expect", "1", "--timeout", "20"]))
        .collect();
    wait_for("3 members", Duration::from_secs(15), || {
        cg.metric("channelgate_hub_memberships") == 3.0
    });
    let event = job_event(20_000);
    let before = cg.metric("channelgate_ws_sent_bytes_total");
    let (status, _) = publish_with(&client(), &cg, "feed", &event, "text/plain");
    assert_eq!(status, 200);
    for c in clients {
        let out = lines(c);
        let ext = out[0]["headers"]["sec-websocket-extensions"]
            .as_str()
            .unwrap_or_else(|| panic!("no extension answered: {}", out[0]));
        assert!(
            ext.starts_with("permessage-deflate")
                && ext.contains("server_no_context_takeover")
                && ext.contains("client_no_context_takeover"),
            "{ext}"
        );
        assert_eq!(out[1]["type"], "text");
        assert_eq!(
            out[1]["data"].as_str(),
            Some(event.as_str()),
            "inflated intact"
        );
    }
    assert_eq!(cg.metric("channelgate_ws_deflate_connections_total"), 3.0);
    // On the wire: three compressed copies of one frame, far less than the text.
    let sent = cg.metric("channelgate_ws_sent_bytes_total") - before;
    assert!(
        sent > 0.0 && sent < 3.0 * event.len() as f64 / 5.0,
        "{sent} bytes written for 3 x {} bytes of text",
        event.len()
    );
}

#[test]
fn compressed_client_messages_are_inflated_and_compression_off_declines() {
    let dir = tempdir();
    let cg = start(dir.path());
    let big = job_event(30_000);
    for path in ["/ws/echo/", "/ws/plain/"] {
        let url = cg.url(path).replace("http://", "ws://");
        let out = lines(ws_client(&[
            &url,
            "--show-handshake",
            "--send",
            &big,
            "--send",
            "short",
        ]));
        let ext = out[0]["headers"]["sec-websocket-extensions"].as_str();
        match path {
            "/ws/echo/" => assert!(ext.is_some_and(|e| e.starts_with("permessage-deflate"))),
            _ => assert_eq!(ext, None, "compression = \"off\" answers no extension"),
        }
        assert_eq!(out[1]["data"].as_str(), Some(big.as_str()), "{path}");
        assert_eq!(out[2]["data"], "short", "{path}");
        assert_eq!(out[3]["close"], 1000, "{path}");
    }
}

/// The handshake of a client that offers deflate, by hand.
fn raw_deflate_connect(addr: &str, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    .expect("write handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("read handshake answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("permessage-deflate"), "{head}");
    s
}

/// One masked client frame with RSV1 (compressed) set.
fn compressed_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | 0x40 | 0x1];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Raw deflate of `data`, flushed, without the trailing 00 00 FF FF (RFC 7692 7.2.1).
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::best(), false);
    let mut out = Vec::with_capacity(data.len() / 100 + 64);
    loop {
        let before = c.total_in() as usize;
        out.reserve(64 * 1024);
        c.compress_vec(&data[before..], &mut out, flate2::FlushCompress::Sync)
            .expect("deflate");
        if c.total_in() as usize == data.len() && out.ends_with(&[0, 0, 0xff, 0xff]) {
            break;
        }
    }
    out.truncate(out.len() - 4);
    out
}

#[test]
fn a_decompression_bomb_is_closed_with_1009_and_bad_deflate_with_1007() {
    let dir = tempdir();
    let cg = start(dir.path());
    let rss = || cg.metric("process_resident_memory_bytes");
    let before = rss();
    // 16 MiB of zeros, about 16 KiB compressed: the frame is within the route's
    // max_message (64 KiB), what it inflates to is not.
    let bomb = deflate(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 32 * 1024, "{}", bomb.len());
    let expect_close = |frame: Vec<u8>, code: u16| {
        let mut s = raw_deflate_connect(&cg.addr(), "/ws/echo/");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The server may close before it read all of it.
        let _ = s.write_all(&frame);
        let mut head = [0u8; 4];
        s.read_exact(&mut head).expect("a close frame");
        assert_eq!(head[0], 0x88, "a close frame: {head:?}");
        assert_eq!(u16::from_be_bytes([head[2], head[3]]), code);
    };
    for _ in 0..5 {
        expect_close(compressed_frame(&bomb), 1009);
    }
    expect_close(compressed_frame(&[0xff, 0xff, 0xff, 0xff, 0x00]), 1007);
    wait_for("closes counted", Duration::from_secs(10), || {
        cg.metric("channelgate_ws_closes_total{code=\"1009\"}") == 5.0
            && cg.metric("channelgate_ws_closes_total{code=\"1007\"}") == 1.0
    });
    let after = rss();
    assert!(
        after - before < 16.0 * 1024.0 * 1024.0,
        "RSS grew from {before} to {after} for five 16 MiB bombs"
    );
    // Still serving.
    let url = cg.url("/ws/echo/").replace("http://", "ws://");
    let out = lines(ws_client(&[&url, "--send", "still here"]));
    assert_eq!(out[0]["data"], "still here");
}
