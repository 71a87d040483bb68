//! Request and response buffering in front of gunicorn sync workers (issue 10): slow
//! clients do not starve the app, bodies arrive intact, spill to temp files that are
//! removed, 413 over max_body_size, and event streams are not held. No timing
//! assertions: outcomes only, with generous limits.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn connect(cg: &Channelgate) -> TcpStream {
    let s = TcpStream::connect(cg.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// Reads one HTTP/1.1 response with a Content-Length body: (status, body).
fn read_response(r: &mut BufReader<TcpStream>) -> (u16, Vec<u8>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).expect("header");
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).expect("body");
    (status, body)
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| {
                    n.starts_with("channelgate-request-") || n.starts_with("channelgate-response-")
                })
                .collect()
        })
        .unwrap_or_default()
}

fn body_of(i: usize, n: usize) -> Vec<u8> {
    (0..n).map(|k| ((k * 31 + i * 7) % 251) as u8).collect()
}

/// Sends a POST /upload/ of `body` in `pieces` writes, `pause` apart; returns the JSON.
fn trickle_upload(cg: &Channelgate, body: &[u8], pieces: usize, pause: Duration) -> Value {
    let mut s = connect(cg);
    write!(
        s,
        "POST /upload/ HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    for piece in body.chunks(body.len().div_ceil(pieces)) {
        s.write_all(piece).unwrap();
        thread::sleep(pause);
    }
    let (status, resp) = read_response(&mut BufReader::new(s));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    serde_json::from_slice(&resp).expect("upload json")
}

#[test]
fn slow_clients_do_not_starve_gunicorn_sync_workers() {
    const UPLOAD: usize = 48 << 10;
    const DOWNLOAD: usize = 5 << 20;
    let dir = tempdir();
    let spool_dir = dir.path().join("spool");
    std::fs::create_dir(&spool_dir).unwrap();
    let app = Gunicorn::start_sync(dir.path(), "sync", Bind::Tcp(free_port()), 2);
    let cg = Channelgate::start(
        dir.path(),
        &format!("temp_dir = \"{}\"", spool_dir.display()),
        &format!(
            "[upstream]\nservers = [\"{}\"]\nrequest_buffer_memory = \"16KiB\"\n",
            app.bind.config_addr()
        ),
    );
    let cg = Arc::new(cg);
    let stop = Arc::new(AtomicBool::new(false));

    // 20 clients trickle their uploads: 48 KiB in 24 pieces, 250 ms apart (6 s each).
    let uploads: Vec<_> = (0..20)
        .map(|i| {
            let cg = cg.clone();
            thread::spawn(move || {
                let body = body_of(i, UPLOAD);
                let j = trickle_upload(&cg, &body, 24, Duration::from_millis(250));
                assert_eq!(j["bytes"], UPLOAD as u64);
                assert_eq!(j["sha256"], sha256_hex(&body), "upload {i} arrived changed");
            })
        })
        .collect();
    // 20 clients ask for 5 MiB and read it at ~10 KB/s until told to hurry up.
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let cg = cg.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut s = connect(&cg);
                write!(
                    s,
                    "GET /download/?bytes={DOWNLOAD} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut total = 0usize;
                let mut buf = vec![0u8; 1 << 16];
                while !stop.load(Ordering::Acquire) {
                    let n = s.read(&mut buf[..1000]).unwrap();
                    assert!(n > 0, "response ended early");
                    total += n;
                    thread::sleep(Duration::from_millis(100));
                }
                loop {
                    match s.read(&mut buf).unwrap() {
                        0 => break,
                        n => total += n,
                    }
                }
                total
            })
        })
        .collect();
    // Both kinds are under way: the uploads have spilled to temp files and the
    // downloads are held for their slow readers.
    wait_for(
        "request bodies spilled to temp files",
        Duration::from_secs(60),
        || {
            temp_files(&spool_dir)
                .iter()
                .any(|n| n.starts_with("channelgate-request-"))
        },
    );
    wait_for(
        "responses held for slow readers",
        Duration::from_secs(60),
        || cg.metric("channelgate_buffered_total{direction=\"response\",to=\"file\"}") >= 1.0,
    );
    // Meanwhile ordinary GETs are answered (each within a generous 30 s limit: without
    // buffering they wait until a slow client lets its worker go, which these never do).
    let quick = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for _ in 0..10 {
        let r = quick
            .get(cg.url("/whoami/"))
            .send()
            .expect("GET while slow clients run");
        assert_eq!(r.status(), 200);
    }
    for u in uploads {
        u.join().expect("upload thread");
    }
    stop.store(true, Ordering::Release);
    for r in readers {
        let total = r.join().expect("reader thread");
        assert!(total > DOWNLOAD, "got {total} bytes");
    }
    // Every temp file is gone once its body was sent.
    wait_for("temp files removed", Duration::from_secs(30), || {
        temp_files(&spool_dir).is_empty()
    });
    assert!(cg.metric("channelgate_buffered_total{direction=\"request\",to=\"file\"}") >= 20.0);
    assert_eq!(cg.metric("channelgate_buffer_temp_files"), 0.0);
}

#[test]
fn bodies_over_the_limit_get_413_and_aborted_uploads_leave_no_file() {
    let dir = tempdir();
    let spool_dir = dir.path().join("spool");
    std::fs::create_dir(&spool_dir).unwrap();
    let app = Gunicorn::start(dir.path(), "limits", Bind::Tcp(free_port()));
    let cg = Channelgate::start(
        dir.path(),
        &format!(
            "temp_dir = \"{}\"\nmax_body_size = \"1MiB\"",
            spool_dir.display()
        ),
        &format!(
            "[upstream]\nservers = [\"{}\"]\nrequest_buffer_memory = \"8KiB\"\nstream_uploads = [\"/upload/streamed/\"]\n",
            app.bind.config_addr()
        ),
    );
    // A declared length over the limit: 413 before any body byte is sent.
    let mut s = connect(&cg);
    write!(
        s,
        "POST /upload/ HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        2 << 20
    )
    .unwrap();
    let (status, _) = read_response(&mut BufReader::new(s));
    assert_eq!(status, 413);
    // A chunked body that passes the limit: 413 once it does.
    let c = client();
    let big = vec![7u8; (1 << 20) + 10];
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(big));
    let r = c.post(cg.url("/upload/")).body(body).send().unwrap();
    assert_eq!(r.status(), 413);
    // Just under the limit, chunked: arrives whole.
    let ok = body_of(3, 1 << 20);
    let r = c
        .post(cg.url("/upload/"))
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(
            ok.clone(),
        )))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let j: Value = r.json().unwrap();
    assert_eq!(j["sha256"], sha256_hex(&ok));
    assert_eq!(j["chunked"], true);
    assert_eq!(
        cg.metric("channelgate_http_refused_total{reason=\"body_too_large\"}"),
        2.0
    );
    // An upload that spilled to a file, then the client leaves: the file goes too.
    let mut s = connect(&cg);
    write!(
        s,
        "POST /upload/ HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        200 << 10
    )
    .unwrap();
    s.write_all(&vec![1u8; 100 << 10]).unwrap();
    wait_for(
        "the upload spilled to a file",
        Duration::from_secs(30),
        || !temp_files(&spool_dir).is_empty(),
    );
    drop(s);
    wait_for(
        "the aborted upload's file removed",
        Duration::from_secs(30),
        || temp_files(&spool_dir).is_empty(),
    );
    wait_for("the abort counted", Duration::from_secs(10), || {
        cg.metric("channelgate_aborted_uploads_total") == 1.0
    });
    // Under a stream_uploads prefix the body goes to the app as it comes: no temp file.
    let spilled = cg.metric("channelgate_buffered_total{direction=\"request\",to=\"file\"}");
    let streamed = body_of(5, 200 << 10);
    let r = c
        .post(cg.url("/upload/streamed/x"))
        .body(streamed.clone())
        .send()
        .unwrap();
    let j: Value = r.json().unwrap();
    assert_eq!(j["sha256"], sha256_hex(&streamed));
    assert_eq!(
        cg.metric("channelgate_buffered_total{direction=\"request\",to=\"file\"}"),
        spilled
    );
    // Expect: 100-continue is answered by channelgate, and the body still arrives.
    let mut s = connect(&cg);
    write!(
        s,
        "POST /upload/ HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line:?}");
    r.read_line(&mut line).unwrap();
    s.write_all(b"hello").unwrap();
    let (status, body) = read_response(&mut r);
    assert_eq!(status, 200);
    let j: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j["sha256"], sha256_hex(b"hello"));
}

/// Reads the first event of /events/ in `mode`, then lets the app finish.
fn first_event_arrives_before_the_end(cg: &Channelgate, dir: &Path, mode: &str) {
    let release = dir.join(format!("release-{mode}"));
    let mut s = connect(cg);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /events/?mode={mode}&release={} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        release.display()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut seen = String::new();
    let mut line = String::new();
    while !seen.contains("data: first") {
        line.clear();
        let n = r
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{mode}: first event not delivered before the end: {e}"));
        assert!(n > 0, "{mode}: stream ended before its first event");
        seen.push_str(&line);
    }
    assert!(
        !seen.to_ascii_lowercase().contains("x-accel-buffering"),
        "the instruction header reached the client"
    );
    std::fs::write(&release, b"go").unwrap();
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("data: second"), "{mode}: {rest:?}");
}

#[test]
fn event_streams_are_not_buffered() {
    let dir = tempdir();
    let app = Gunicorn::start_sync(dir.path(), "events", Bind::Tcp(free_port()), 2);
    let cg = Channelgate::start(
        dir.path(),
        "",
        &format!("[upstream]\nservers = [\"{}\"]\n", app.bind.config_addr()),
    );
    first_event_arrives_before_the_end(&cg, dir.path(), "sse");
    first_event_arrives_before_the_end(&cg, dir.path(), "accel");
}
