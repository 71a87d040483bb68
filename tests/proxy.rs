//! End-to-end: channelgate in front of gunicorn serving the Django test app.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn upstream_block(servers: &[&Bind], extra: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|b| format!("\"{}\"", b.config_addr()))
        .collect();
    format!("[upstream]\nservers = [{}]\n{extra}\n", list.join(", "))
}

#[test]
fn forwards_headers_and_request_id() {
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "a", Bind::Tcp(free_port()));
    let cg = Channelgate::start(dir.path(), "", &upstream_block(&[&app.bind], ""));
    let c = client();

    let r = c
        .get(cg.url("/headers/some/path?x=1&y=2"))
        .header("X-Forwarded-For", "10.1.2.3")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let j: Value = r.json().unwrap();
    let h = &j["headers"];
    assert_eq!(j["path"], "/headers/some/path");
    assert_eq!(j["query"], "x=1&y=2");
    assert_eq!(h["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(
        h["host"],
        format!("127.0.0.1:{}", cg.port),
        "Host is preserved"
    );
    assert_eq!(h["x-forwarded-host"], format!("127.0.0.1:{}", cg.port));
    assert_eq!(h["x-request-id"], rid.as_str());
    assert_eq!(rid.len(), 32);

    let r = c
        .post(cg.url("/headers/"))
        .header("X-Request-Id", "trace-me-42")
        .body("abc")
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
    let j: Value = r.json().unwrap();
    assert_eq!(j["method"], "POST");
    assert_eq!(j["headers"]["x-request-id"], "trace-me-42");

    for method in ["PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = c
            .request(method.parse().unwrap(), cg.url("/headers/"))
            .send()
            .unwrap();
        assert_eq!(r.json::<Value>().unwrap()["method"], method);
    }
    let r = c.head(cg.url("/headers/")).send().unwrap();
    assert_eq!(r.status(), 200);

    assert!(
        cg.metric("channelgate_http_requests_total{method=\"GET\",status_class=\"2xx\"}") >= 1.0
    );
    assert!(
        cg.metric("channelgate_http_requests_total{method=\"PUT\",status_class=\"2xx\"}") >= 1.0
    );
    let out = cg.proc.output();
    assert!(
        out.contains("request_id=trace-me-42"),
        "access log line carries the request id:\n{out}"
    );
}

#[test]
fn unix_socket_upstream() {
    let dir = tempdir();
    let sock = dir.path().join("gunicorn.sock");
    let app = Gunicorn::start(dir.path(), "unixapp", Bind::Unix(sock));
    let cg = Channelgate::start(dir.path(), "", &upstream_block(&[&app.bind], ""));
    let c = client();
    for _ in 0..5 {
        let j: Value = c.get(cg.url("/whoami/")).send().unwrap().json().unwrap();
        assert_eq!(j["name"], "unixapp");
    }
    let r = c
        .put(cg.url("/upload/"))
        .body(vec![7u8; 3 * 1024 * 1024])
        .send()
        .unwrap();
    assert_eq!(r.json::<Value>().unwrap()["bytes"], 3 * 1024 * 1024);
    assert_eq!(cg.admin("/readyz").0, 200);
    assert!(
        cg.metric(&format!(
            "channelgate_upstream_healthy{{server=\"{}\"}}",
            app.bind.config_addr()
        )) == 1.0
    );
}

/// The test app's download pattern: a 64 KiB block of 0..=255 repeated.
fn pattern_block() -> Vec<u8> {
    (0..65536).map(|i| (i % 256) as u8).collect()
}

/// A request body that is generated as it is sent, never held whole.
struct Generated {
    left: u64,
    block: Vec<u8>,
    pos: usize,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = buf
            .len()
            .min(self.block.len() - self.pos)
            .min(self.left as usize);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos = (self.pos + n) % self.block.len();
        self.left -= n as u64;
        Ok(n)
    }
}

#[test]
fn streams_one_gibibyte_each_way_without_buffering() {
    const SIZE: u64 = 1 << 30;
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "big", Bind::Tcp(free_port()));
    let cg = Channelgate::start(
        dir.path(),
        "",
        &upstream_block(&[&app.bind], "read_timeout = \"120s\""),
    );
    let c = client();

    // Upload: the app hashes what it receives.
    let body = reqwest::blocking::Body::sized(
        Generated {
            left: SIZE,
            block: pattern_block(),
            pos: 0,
        },
        SIZE,
    );
    let r = c.post(cg.url("/upload/")).body(body).send().unwrap();
    let j: Value = r.json().unwrap();
    assert_eq!(j["bytes"], SIZE);

    // Download: compare with the pattern as it arrives.
    let mut r = c
        .get(cg.url(&format!("/download/?bytes={SIZE}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let block = pattern_block();
    let (mut got, mut buf) = (0u64, vec![0u8; 256 * 1024]);
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        for (i, b) in buf[..n].iter().enumerate() {
            assert_eq!(
                *b,
                block[((got + i as u64) % 65536) as usize],
                "byte {} differs",
                got + i as u64
            );
        }
        got += n as u64;
    }
    assert_eq!(got, SIZE);

    let peak = cg.proc.peak_rss_kib();
    assert!(
        peak < 128 * 1024,
        "channelgate peaked at {peak} KiB while moving 2 GiB: it buffers bodies"
    );
}

#[test]
fn upstream_refusing_gives_502_and_slow_gives_504() {
    let dir = tempdir();
    let mut app = Gunicorn::start(dir.path(), "dies", Bind::Tcp(free_port()));
    // Checks rarely, so the server stays "healthy" after it dies: the proxy meets the refusal.
    let cg = Channelgate::start(
        dir.path(),
        "",
        &upstream_block(
            &[&app.bind],
            "read_timeout = \"1s\"\nhealth_check = { interval = \"1h\" }",
        ),
    );
    let c = client();
    let r = c.get(cg.url("/slow/?seconds=3")).send().unwrap();
    assert_eq!(r.status(), 504);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.text().unwrap(), "504 Gateway Timeout\n");
    assert_eq!(
        cg.metric("channelgate_upstream_errors_total{kind=\"read_timeout\"}"),
        1.0
    );

    app.proc.signal_group("KILL");
    app.proc.wait_exit(Duration::from_secs(10));
    let r = c.get(cg.url("/whoami/")).send().unwrap();
    assert_eq!(r.status(), 502);
    let body = r.text().unwrap();
    assert_eq!(body, "502 Bad Gateway\n", "no internals leak");
    // A pooled connection to the dead server may be met first (upstream_closed), then the
    // fresh connect is refused.
    let refused = cg.metric("channelgate_upstream_errors_total{kind=\"connect_refused\"}");
    let closed = cg.metric("channelgate_upstream_errors_total{kind=\"upstream_closed\"}");
    assert!(
        refused + closed >= 1.0,
        "refused {refused}, closed {closed}"
    );
}

#[test]
fn no_healthy_upstream_gives_503_and_readyz_fails() {
    let dir = tempdir();
    let dead = Bind::Tcp(free_port());
    let cg = Channelgate::start(
        dir.path(),
        "",
        &upstream_block(&[&dead], "health_check = { interval = \"200ms\" }"),
    );
    wait_for("ejection", Duration::from_secs(10), || {
        cg.metric(&format!(
            "channelgate_upstream_healthy{{server=\"{}\"}}",
            dead.config_addr()
        )) == 0.0
    });
    let r = client().get(cg.url("/")).send().unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().unwrap(), "503 Service Unavailable\n");
    let (status, body) = cg.admin("/readyz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(cg.admin("/healthz").0, 200, "the process itself is alive");
    assert_eq!(
        cg.metric("channelgate_upstream_errors_total{kind=\"no_healthy_upstream\"}"),
        1.0
    );
}

#[test]
fn connect_failure_retried_once_for_idempotent_requests_only() {
    let dir = tempdir();
    let alive = Gunicorn::start(dir.path(), "alive", Bind::Tcp(free_port()));
    let mut dead = Gunicorn::start(dir.path(), "dead", Bind::Tcp(free_port()));
    let cg = Channelgate::start(
        dir.path(),
        "",
        &upstream_block(
            &[&alive.bind, &dead.bind],
            "health_check = { interval = \"1h\" }",
        ),
    );
    dead.proc.signal_group("KILL");
    dead.proc.wait_exit(Duration::from_secs(10));
    let c = client();
    for _ in 0..6 {
        let r = c.get(cg.url("/whoami/")).send().unwrap();
        assert_eq!(r.status(), 200, "GET is retried on the live server");
        assert_eq!(r.json::<Value>().unwrap()["name"], "alive");
    }
    assert!(cg.metric("channelgate_upstream_retries_total") >= 1.0);
    let statuses: Vec<u16> = (0..6)
        .map(|_| {
            c.post(cg.url("/headers/"))
                .body("x")
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect();
    assert!(
        statuses.contains(&502),
        "a POST that met the dead server is not retried: {statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
}

#[test]
fn health_checks_eject_and_restore_servers() {
    let dir = tempdir();
    let a = Gunicorn::start(dir.path(), "a", Bind::Tcp(free_port()));
    let b = Gunicorn::start(dir.path(), "b", Bind::Tcp(free_port()));
    let cg = Channelgate::start(
        dir.path(),
        "",
        &upstream_block(
            &[&a.bind, &b.bind],
            "health_check = { path = \"/healthz\", interval = \"200ms\", timeout = \"1s\" }",
        ),
    );
    let c = client();
    let names = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                c.get(cg.url("/whoami/"))
                    .send()
                    .unwrap()
                    .json::<Value>()
                    .unwrap()["name"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let seen = names(6);
    assert!(
        seen.contains(&"a".into()) && seen.contains(&"b".into()),
        "round robin: {seen:?}"
    );

    let a_gauge = format!(
        "channelgate_upstream_healthy{{server=\"{}\"}}",
        a.bind.config_addr()
    );
    a.set_healthy(false);
    wait_for("a ejected", Duration::from_secs(10), || {
        cg.metric(&a_gauge) == 0.0
    });
    assert!(
        names(6).iter().all(|n| n == "b"),
        "ejected server gets no traffic"
    );
    assert_eq!(cg.admin("/readyz").0, 200);

    a.set_healthy(true);
    wait_for("a restored", Duration::from_secs(10), || {
        cg.metric(&a_gauge) == 1.0
    });
    assert!(
        names(6).contains(&"a".into()),
        "restored server is back in rotation"
    );
}

#[test]
fn check_reports_errors_with_key_and_line() {
    let dir = tempdir();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = [\"127.0.0.1:8000\"]\nlisen = \"x\"\ngrace_period = \"soon\"\n\n[upstream]\nservers = [\"127.0.0.1:8050\"]\nconect_timeout = \"1s\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_channelgate"))
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 errors"), "{err}");
    assert!(
        err.contains("line 3, column 1: server.lisen: unknown key; did you mean `listen`?"),
        "{err}"
    );
    assert!(
        err.contains("line 4, column 1: server.grace_period: `soon` is not a duration"),
        "{err}"
    );
    assert!(err.contains("line 8, column 1: upstream.conect_timeout: unknown key; did you mean `connect_timeout`?"), "{err}");

    let good = repo().join("conf/channelgate.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_channelgate"))
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("listeners:   127.0.0.1:8000"), "{text}");
    assert!(text.contains("- 127.0.0.1:8050"), "{text}");
    assert!(
        text.contains("header lines up to 8192 bytes, request heads up to 32768 bytes"),
        "{text}"
    );
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_zero() {
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "slow", Bind::Tcp(free_port()));
    let mut cg = Channelgate::start(
        dir.path(),
        "grace_period = \"20s\"",
        &upstream_block(&[&app.bind], ""),
    );
    let url = cg.url("/slow/?seconds=2");
    let inflight = std::thread::spawn(move || {
        let r = client().get(url).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    wait_for("request in flight", Duration::from_secs(10), || {
        cg.metric("channelgate_http_requests_in_flight") == 1.0
    });
    cg.proc.signal("TERM");
    let (status, body) = inflight.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let exit = cg.proc.wait_exit(Duration::from_secs(15));
    assert!(exit.success(), "exit status {exit:?}");
    assert!(cg.proc.output().contains("drained; exiting"));
}

#[test]
fn sigint_drains_too() {
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "x", Bind::Tcp(free_port()));
    let mut cg = Channelgate::start(dir.path(), "", &upstream_block(&[&app.bind], ""));
    cg.proc.signal("INT");
    assert!(cg.proc.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn zero_downtime_upgrade_hands_over_the_listener() {
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "up", Bind::Tcp(free_port()));
    let mut old = Channelgate::start(dir.path(), "", &upstream_block(&[&app.bind], ""));
    assert_eq!(
        client().get(old.url("/whoami/")).send().unwrap().status(),
        200
    );

    // The new instance waits on the upgrade socket for the old one's listeners.
    let mut new = Channelgate::start_with(
        dir.path(),
        old.config.clone(),
        old.port,
        old.admin_port,
        true,
    );
    wait_for(
        "new instance waiting on the upgrade socket",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&old.config)
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find(|l| l.starts_with("upgrade_sock"))
                        .map(|l| l.split('"').nth(1).unwrap_or("").to_string())
                })
                .is_some_and(|p| std::path::Path::new(&p).exists())
        },
    );
    old.proc.signal("QUIT");
    new.wait_ready();
    let exit = old.proc.wait_exit(Duration::from_secs(30));
    assert!(exit.success(), "old instance exits 0: {exit:?}");
    assert!(new.proc.is_running());
    for _ in 0..5 {
        assert_eq!(
            client().get(old.url("/whoami/")).send().unwrap().status(),
            200,
            "served by the new instance"
        );
    }
}

// ---- WebSocket pass-through to an upstream that runs its own WebSocket server ----

fn masked_text(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads one unmasked server text frame (short payloads only).
fn read_text(s: &mut TcpStream) -> String {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).unwrap();
    assert_eq!(h[0], 0x81, "a final text frame");
    let mut p = vec![0u8; (h[1] & 0x7f) as usize];
    s.read_exact(&mut p).unwrap();
    String::from_utf8(p).unwrap()
}

fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn websocket_upgrades_pass_through_to_the_upstream() {
    let dir = tempdir();
    let (_echo, port) = echo_server(dir.path());
    let cg = Channelgate::start(dir.path(), "", &upstream_block(&[&Bind::Tcp(port)], ""));

    // Many short connections: a fast upstream answering 101 at once is the case that
    // tears Pingora's own upgrade proxying down (pingora#946).
    for i in 0..60 {
        let mut s = TcpStream::connect(cg.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = format!(
            "GET /ws/echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes();
        // Every other connection sends its first frame in the same write as the request.
        let early = i % 2 == 0;
        if early {
            req.extend(masked_text(format!("early {i}").as_bytes()));
        }
        s.write_all(&req).unwrap();
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        if early {
            assert_eq!(read_text(&mut s), format!("early {i}"));
        }
        s.write_all(&masked_text(format!("hello {i}").as_bytes()))
            .unwrap();
        assert_eq!(read_text(&mut s), format!("hello {i}"));
    }
    assert_eq!(
        cg.metric("channelgate_upgrade_passthrough_total{outcome=\"upgraded\"}"),
        60.0
    );

    // A real client library on top.
    let out = std::process::Command::new(venv_bin("python"))
        .arg(repo().join("tests/peers/ws_client.py"))
        .arg(format!("ws://{}/chat", cg.addr()))
        .args(["--send", "one", "--send", "two"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("\"one\"") && text.contains("\"two\""),
        "{text}"
    );

    // Plain requests to the same upstream still work on the same listener.
    let r = http_get_raw(&cg.addr(), "/plain").unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

#[test]
fn refused_upgrade_is_relayed_as_a_normal_response() {
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "noupgrade", Bind::Tcp(free_port()));
    let cg = Channelgate::start(dir.path(), "", &upstream_block(&[&app.bind], ""));
    let mut s = TcpStream::connect(cg.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /status/403/ HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(
        cg.metric("channelgate_upgrade_passthrough_total{outcome=\"refused\"}"),
        1.0
    );
}

#[test]
fn oversized_request_heads_are_refused_and_counted() {
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "a", Bind::Tcp(free_port()));
    let routes = "[[ws]]\npath = \"/ws/\"\n";
    let cg = Channelgate::start(
        dir.path(),
        "max_header_line = \"4KiB\"",
        &format!("{}\n{routes}", upstream_block(&[&app.bind], "")),
    );
    let c = client();
    // Under the limits: proxied as usual.
    let r = c
        .get(cg.url("/headers/"))
        .header("cookie", "a".repeat(3000))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // One header line over max_header_line: 431, also on a WebSocket route (which never
    // reaches gunicorn's own limits), and the connection is closed.
    for path in ["/headers/", "/ws/"] {
        let r = c
            .get(cg.url(path))
            .header("cookie", "a".repeat(5000))
            .send()
            .unwrap();
        assert_eq!(r.status(), 431, "{path}");
        assert_eq!(r.headers()["connection"], "close");
        assert!(r.headers().contains_key("x-request-id"));
    }
    // A request line over it: 414.
    let r = c
        .get(cg.url(&format!("/headers/?q={}", "x".repeat(5000))))
        .send()
        .unwrap();
    assert_eq!(r.status(), 414);
    // Many lines, each under the limit, over max_header_size (32KiB): 431.
    let mut req = c.get(cg.url("/headers/"));
    for i in 0..12 {
        req = req.header(format!("x-filler-{i}"), "f".repeat(3000));
    }
    assert_eq!(req.send().unwrap().status(), 431);
    assert_eq!(
        cg.metric("channelgate_http_refused_total{reason=\"header_line_too_large\"}"),
        2.0
    );
    assert_eq!(
        cg.metric("channelgate_http_refused_total{reason=\"uri_too_long\"}"),
        1.0
    );
    assert_eq!(
        cg.metric("channelgate_http_refused_total{reason=\"headers_too_large\"}"),
        1.0
    );
}
