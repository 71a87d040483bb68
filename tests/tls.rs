//! End-to-end: HTTPS and wss:// on channelgate's own TLS listeners, with a test CA made
//! here (rcgen), real clients (curl with HTTP/1.1 and HTTP/2, Python `websockets`) and the
//! Django test app under gunicorn behind it.

#[path = "common/ca.rs"]
mod ca;
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ca::TestCa;
use common::*;

struct Tls {
    dir: tempfile::TempDir,
    _app: Gunicorn,
    cg: Channelgate,
    ca: TestCa,
    tls_port: u16,
    cert: PathBuf,
    key: PathBuf,
}

/// gunicorn + channelgate with a `[tls]` section: a default certificate for app.test and
/// 127.0.0.1, and one for api.test chosen by SNI.
fn setup(tls_extra: &str, routes: &str) -> Tls {
    setup_with("", tls_extra, routes, false)
}

/// [`setup`] with `[server]` keys added, and gunicorn's 2 sync workers when `sync`.
fn setup_with(server_extra: &str, tls_extra: &str, routes: &str, sync: bool) -> Tls {
    let dir = tempdir();
    let ca = TestCa::new(dir.path());
    let (cert, key) = ca.issue(dir.path(), "app", &["app.test", "127.0.0.1"], (-1, 90));
    let (api_cert, api_key) = ca.issue(dir.path(), "api", &["api.test"], (-1, 90));
    let ports = (free_port(), free_port());
    let tls_port = free_port();
    let app = if sync {
        Gunicorn::start_sync(dir.path(), "app", Bind::Tcp(free_port()), 2)
    } else {
        Gunicorn::start_with_env(
            dir.path(),
            "app",
            Bind::Tcp(free_port()),
            &[("CHANNELGATE_ADMIN", format!("http://127.0.0.1:{}", ports.1))],
        )
    };
    let body = format!(
        "[upstream]\nservers = [\"{}\"]\n\n{routes}\n[tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\nhttp2 = true\ncertificates = [\n  {{ cert = \"{}\", key = \"{}\" }},\n  {{ cert = \"{}\", key = \"{}\", names = [\"api.test\"] }},\n]\n{tls_extra}\n",
        app.bind.config_addr(),
        cert.display(),
        key.display(),
        api_cert.display(),
        api_key.display(),
    );
    let cg = Channelgate::start_on(dir.path(), ports, server_extra, &body);
    wait_for("the TLS listener", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
    });
    Tls {
        dir,
        _app: app,
        cg,
        ca,
        tls_port,
        cert,
        key,
    }
}

impl Tls {
    fn https(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.tls_port)
    }

    /// curl trusting the test CA; (exit success, stdout, stderr).
    fn curl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", "--cacert"])
            .arg(&self.ca.pem)
            .args(args)
            .output()
            .expect("curl (scripts/setup installs it)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The serial number and subject of the certificate a new handshake for `name` gets.
    fn served(&self, name: &str) -> String {
        let resolve = format!("{name}:{}:127.0.0.1", self.tls_port);
        let url = format!("https://{name}:{}/healthz", self.tls_port);
        let (_, out, err) = self.curl(&[
            "-k",
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{certs}",
            &url,
        ]);
        let leaf: Vec<&str> = out
            .lines()
            .take_while(|l| !l.starts_with("-----END"))
            .filter(|l| l.starts_with("Subject:") || l.starts_with("Serial Number:"))
            .collect();
        assert!(!leaf.is_empty(), "no certificate seen: {out} {err}");
        leaf.join(" ")
    }

    /// Runs tests/peers/ws_client.py trusting the test CA.
    fn ws_client(&self, name: &str, url: &str, args: &[&str]) -> Proc {
        let mut cmd = Command::new(venv_bin("python"));
        cmd.arg(repo().join("tests/peers/ws_client.py"))
            .arg(url)
            .args(args)
            .env("SSL_CERT_FILE", &self.ca.pem);
        Proc::spawn(name, &mut cmd, self.dir.path())
    }
}

#[test]
fn https_over_http1_and_h2_with_hsts_forwarded_proto_and_redirect() {
    let t = setup("redirect_http = true\nhsts = \"max-age=63072000\"\n", "");
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (ok, out, err) = t.curl(&[
            flag,
            "-D",
            "-",
            "-w",
            "\n%{http_version}",
            &t.https("/headers"),
        ]);
        assert!(ok, "curl {flag}: {err}");
        assert!(out.ends_with(&format!("\n{version}")), "{flag}: {out}");
        assert!(
            out.to_ascii_lowercase()
                .contains("strict-transport-security: max-age=63072000"),
            "{out}"
        );
        assert!(
            out.contains(r#""x-forwarded-proto": "https""#),
            "the app learns the scheme: {out}"
        );
    }
    // The plain listener redirects (308 keeps the method) to the TLS port.
    let (ok, out, err) = t.curl(&["-D", "-", "-o", "/dev/null", &t.cg.url("/a/b?c=1")]);
    assert!(ok, "{err}");
    assert!(out.starts_with("HTTP/1.1 308"), "{out}");
    let location = format!("https://127.0.0.1:{}/a/b?c=1", t.tls_port);
    assert!(
        out.to_ascii_lowercase()
            .contains(&format!("location: {location}")),
        "{out}"
    );
    // TLS 1.1 is refused and counted.
    let (ok, _, _) = t.curl(&["--tls-max", "1.1", "--tlsv1.0", &t.https("/healthz")]);
    assert!(!ok, "TLS 1.1 must be refused");
    wait_for(
        "the refused handshake counted",
        Duration::from_secs(10),
        || {
            t.cg.metric("channelgate_tls_handshake_failures_total{reason=\"protocol_version\"}")
                >= 1.0
        },
    );
    assert!(t.cg.metric("channelgate_tls_handshakes_total{version=\"1.3\"}") >= 2.0);
    assert!(
        t.cg.metric("channelgate_tls_certificate_expiry_timestamp_seconds{name=\"api.test\"}")
            > 1e9
    );
}

#[test]
fn min_version_1_3_refuses_tls_1_2() {
    let t = setup("min_version = \"1.3\"\n", "");
    let (ok, _, err) = t.curl(&["--tls-max", "1.2", "-o", "/dev/null", &t.https("/healthz")]);
    assert!(!ok, "TLS 1.2 must be refused: {err}");
    let (ok, _, err) = t.curl(&["--tlsv1.3", "-o", "/dev/null", &t.https("/healthz")]);
    assert!(ok, "{err}");
    wait_for("the refusal counted", Duration::from_secs(10), || {
        t.cg.metric("channelgate_tls_handshake_failures_total{reason=\"protocol_version\"}") >= 1.0
    });
}

#[test]
fn sni_picks_the_right_certificate() {
    let t = setup("", "");
    assert!(
        t.served("api.test").contains("CN = api.test"),
        "{}",
        t.served("api.test")
    );
    assert!(t.served("app.test").contains("CN = app.test"));
    assert!(
        t.served("other.test").contains("CN = app.test"),
        "unknown names get the default"
    );
    // Verified end to end: each name validates against the CA only with its own certificate.
    for name in ["api.test", "app.test"] {
        let resolve = format!("{name}:{}:127.0.0.1", t.tls_port);
        let url = format!("https://{name}:{}/healthz", t.tls_port);
        let (ok, _, err) = t.curl(&["--resolve", &resolve, "-o", "/dev/null", &url]);
        assert!(ok, "{name}: {err}");
    }
}

#[test]
fn wss_with_a_session_cookie_and_no_websocket_over_h2() {
    let t = setup(
        "",
        "[[ws]]\npath = \"/channels/updates/\"\ngroups = [\"updates-{user}\"]\nauth = { path = \"/ws-auth/\" }\n",
    );
    let cookie = login(&t.cg, "/accounts/login/", "alice");
    let origin = format!("https://127.0.0.1:{}", t.tls_port);
    let mut alice = t.ws_client(
        "wss-alice",
        &format!("wss://127.0.0.1:{}/channels/updates/", t.tls_port),
        &[
            "--header",
            &format!("Cookie:{cookie}"),
            "--origin",
            &origin,
            "--expect",
            "1",
            "--timeout",
            "30",
        ],
    );
    wait_for("alice connected over wss", Duration::from_secs(20), || {
        t.cg.metric("channelgate_ws_connections{route=\"/channels/updates/\"}") == 1.0
    });
    let r = client()
        .post(t.cg.url("/notify-me/"))
        .header("Cookie", &cookie)
        .form(&[("text", "over tls")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let status = alice.wait_exit(Duration::from_secs(30));
    let out = alice.output();
    assert!(status.success(), "{out}");
    assert!(out.contains(r#""data": "over tls""#), "{out}");

    // A page served over plain http may not open this user's wss session.
    let mut mixed = t.ws_client(
        "wss-http-origin",
        &format!("wss://127.0.0.1:{}/channels/updates/", t.tls_port),
        &[
            "--header",
            &format!("Cookie:{cookie}"),
            "--origin",
            &format!("http://127.0.0.1:{}", t.tls_port),
            "--timeout",
            "30",
        ],
    );
    assert_eq!(mixed.wait_exit(Duration::from_secs(30)).code(), Some(3));
    assert!(
        mixed.output().contains(r#""status": 403"#),
        "{}",
        mixed.output()
    );

    // A WebSocket route asked over HTTP/2 gets a clear refusal, not the app.
    let (ok, out, err) = t.curl(&[
        "--http2",
        "-w",
        "\n%{http_code} %{http_version}",
        &t.https("/channels/updates/"),
    ]);
    assert!(ok, "{err}");
    assert!(out.ends_with("\n400 2"), "{out}");
    assert!(out.contains("HTTP/1.1"), "{out}");
    assert_eq!(
        t.cg.metric("channelgate_ws_connects_total{outcome=\"http2\"}"),
        1.0
    );
}

#[test]
fn sighup_swaps_the_certificate_while_a_wss_client_keeps_receiving() {
    let t = setup(
        "",
        "[[ws]]\npath = \"/ws/chat/{room}/\"\ngroups = [\"chat-{room}\"]\n",
    );
    let mut chat = t.ws_client(
        "wss-chat",
        &format!("wss://127.0.0.1:{}/ws/chat/lobby/", t.tls_port),
        &["--expect", "2", "--timeout", "60"],
    );
    wait_for("client connected", Duration::from_secs(20), || {
        t.cg.metric("channelgate_ws_connections{route=\"/ws/chat/{room}/\"}") == 1.0
    });
    let publish = |text: &str| {
        let r = client()
            .post(format!(
                "http://127.0.0.1:{}/publish/chat-lobby",
                t.cg.admin_port
            ))
            .header("content-type", "text/plain")
            .body(text.to_string())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    publish("before");
    wait_for("first message", Duration::from_secs(20), || {
        chat.output().contains("\"before\"")
    });
    let before = t.served("app.test");
    let ok_reloads = "channelgate_tls_certificate_reloads_total{outcome=\"ok\"}";
    let loaded = t.cg.metric(ok_reloads);

    // New files in place, then `channelgate reload` (SIGHUP through pid_file).
    let (c, k) = t.ca.issue(
        t.dir.path(),
        "app-next",
        &["app.test", "127.0.0.1"],
        (-1, 120),
    );
    std::fs::rename(&k, &t.key).unwrap();
    std::fs::rename(&c, &t.cert).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_channelgate"))
        .args(["reload", "--config"])
        .arg(&t.cg.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("reload", Duration::from_secs(20), || {
        t.cg.metric(ok_reloads) >= loaded + 2.0
    });
    let after = t.served("app.test");
    assert_ne!(before, after, "new handshakes get the new certificate");

    // The open wss connection was not touched.
    publish("after");
    let status = chat.wait_exit(Duration::from_secs(30));
    let out = chat.output();
    assert!(status.success() && out.contains("\"after\""), "{out}");

    // A broken file keeps the current certificate, and is counted.
    std::fs::write(&t.cert, "not a certificate").unwrap();
    t.cg.proc.signal("HUP");
    wait_for("failed reload counted", Duration::from_secs(20), || {
        t.cg.metric("channelgate_tls_certificate_reloads_total{outcome=\"error\"}") >= 1.0
    });
    assert_eq!(t.served("app.test"), after);
    assert!(t.cg.proc.output().contains("the previous one stays in use"));
}

#[test]
fn check_reads_certificates_and_run_refuses_bad_ones() {
    let dir = tempdir();
    let ca = TestCa::new(dir.path());
    let good = ca.issue(dir.path(), "good", &["good.test"], (-1, 90));
    let soon = ca.issue(dir.path(), "soon", &["soon.test"], (-1, 5));
    let expired = ca.issue(dir.path(), "expired", &["old.test"], (-30, -1));
    let other = ca.issue(dir.path(), "other", &["other.test"], (-1, 90));
    let check = |pairs: &[(&PathBuf, &PathBuf)]| {
        let entries: Vec<String> = pairs
            .iter()
            .map(|(c, k)| {
                format!(
                    "{{ cert = \"{}\", key = \"{}\" }}",
                    c.display(),
                    k.display()
                )
            })
            .collect();
        let port = free_port();
        let config = dir.path().join(format!("check-{port}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[admin]\nlisten = \"127.0.0.1:{}\"\n[upstream]\nservers = [\"127.0.0.1:1\"]\n[tls]\nlisten = [\"127.0.0.1:{}\"]\ncertificates = [{}]\n",
                free_port(),
                free_port(),
                entries.join(", ")
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_channelgate"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text, config)
    };
    let (ok, out, _) = check(&[(&good.0, &good.1), (&soon.0, &soon.1)]);
    assert!(ok, "{out}");
    assert!(out.contains("names good.test; expires"), "{out}");
    assert!(
        out.contains("warning:") && out.contains("soon.test") && out.contains(" days)"),
        "{out}"
    );
    let (ok, out, _) = check(&[(&expired.0, &expired.1)]);
    assert!(!ok && out.contains("EXPIRED"), "{out}");
    let (ok, out, _) = check(&[(&good.0, &other.1)]);
    assert!(
        !ok && out.contains("does not belong to the certificate"),
        "{out}"
    );
    let missing = dir.path().join("missing.crt");
    let (ok, out, config) = check(&[(&missing, &good.1)]);
    assert!(!ok && out.contains("missing.crt"), "{out}");

    // `run` refuses the same file with a message, not a panic.
    let out = Command::new(env!("CARGO_BIN_EXE_channelgate"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("certificates[0]") && err.contains("missing.crt"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// HTTP/2 connections go to Pingora's h2 server, not the HTTP/1.1 edge: `max_body_size`
/// still gives 413, and `keepalive_timeout` still closes an idle connection.
#[test]
fn h2_413_over_max_body_size_and_idle_connection_closed_after_keepalive_timeout() {
    let t = setup_with(
        "keepalive_timeout = \"2s\"\nmax_body_size = \"1KiB\"\n",
        "",
        "",
        false,
    );
    let big = t.dir.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; 4096]).expect("write body");
    let data = format!("@{}", big.display());
    let (ok, out, err) = t.curl(&[
        "--http2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        "--data-binary",
        &data,
        &t.https("/upload"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, "413 2", "{err}");
    assert!(t.cg.metric("channelgate_http_refused_total{reason=\"body_too_large\"}") >= 1.0);
    // Without a content-length (curl -T - reads stdin): 413 once the bytes exceed it.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--http2", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{http_version}", "-T", "-", "--cacert"])
        .arg(&t.ca.pem)
        .arg(t.https("/upload"))
        .stdin(std::fs::File::open(&big).expect("open body"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, "413 2", "{}", String::from_utf8_lossy(&out.stderr));
    // A small body still passes over h2.
    let (ok, out, err) = t.curl(&[
        "--http2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        "--data-binary",
        "small",
        &t.https("/headers"),
    ]);
    assert!(ok && out == "2", "{out} {err}");

    // An h2 client that opens a connection and then says nothing more.
    let mut client = h2_over_openssl(t.tls_port, std::process::Stdio::piped());
    let mut stdin = client.stdin.take().expect("piped stdin");
    use std::io::{Read, Write};
    // The connection preface and an empty SETTINGS frame.
    stdin
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .expect("write preface");
    stdin.flush().expect("flush preface");
    // Read until the server closes; stdin stays open, so only the server ends it.
    let mut stdout = client.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = stdout.read_to_end(&mut got);
        got
    });
    wait_for(
        "the idle h2 connection closed",
        Duration::from_secs(60),
        || reader.is_finished(),
    );
    let got = reader.join().expect("reader thread");
    let _ = client.kill();
    let _ = client.wait();
    drop(stdin);
    // It was an h2 connection (the server's SETTINGS came). Pingora 0.9.1 drops an idle
    // h2 connection without a GOAWAY, so none is expected.
    assert_eq!(
        frame_types(&got).first(),
        Some(&4),
        "server SETTINGS first: {got:?}"
    );
}

/// The types of the HTTP/2 frames in `bytes` (server to client: no preface).
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

/// An HTTP/2 client trickling a small upload (its declared length within what Pingora can
/// replay) does not hold one of gunicorn's 2 sync workers: channelgate reads the body
/// before it connects upstream. The body arrives intact; one that stalls gets 408.
#[test]
fn h2_small_uploads_are_buffered_before_gunicorn_sync_workers_see_them() {
    let t = setup_with("body_timeout = \"3s\"\n", "", "", true);
    // A whole body sent at once is replayed intact from the buffer.
    let (ok, out, err) = t.curl(&["--http2", "--data-binary", "hello h2", &t.https("/upload")]);
    assert!(ok, "{err}");
    assert!(out.contains(r#""bytes": 8"#), "{out}");
    assert!(out.contains(&sha256_hex(b"hello h2")), "{out}");

    // Three clients (more than the workers) each declare 1000 bytes and send 20 of them,
    // one every 300 ms, then nothing: the GETs among them still get answers.
    let clients: Vec<_> = (0..3)
        .map(|_| H2Trickler::start(t.tls_port, 1000, 20))
        .collect();
    for _ in 0..3 {
        let (ok, out, err) = t.curl(&["--http2", "-w", " %{http_code}", &t.https("/healthz")]);
        assert!(
            ok && out.ends_with(" 200"),
            "a GET among trickling h2 uploads: {out} {err}"
        );
    }
    // Once they stop sending, body_timeout answers each 408.
    wait_for(
        "body timeouts on the stalled h2 uploads",
        Duration::from_secs(60),
        || {
            t.cg.metric("channelgate_client_timeouts_total{kind=\"body\"}") >= 3.0
        },
    );
    drop(clients);
}

/// A raw HTTP/2 client over `openssl s_client`: a POST /upload declaring `len` bytes,
/// then `sent` of them one per 300 ms, and no more (the stream stays open).
struct H2Trickler {
    child: std::process::Child,
}

impl H2Trickler {
    fn start(port: u16, len: usize, sent: usize) -> H2Trickler {
        use std::io::Write;
        let mut child = h2_over_openssl(port, std::process::Stdio::null());
        let mut stdin = child.stdin.take().expect("piped stdin");
        let authority = format!("127.0.0.1:{port}");
        let length = len.to_string();
        let mut block = Vec::new();
        for (name, value) in [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", "/upload"),
            (":authority", authority.as_str()),
            ("content-length", length.as_str()),
        ] {
            // HPACK: a literal field without indexing, new name, no Huffman coding.
            block.push(0);
            block.push(name.len() as u8);
            block.extend_from_slice(name.as_bytes());
            block.push(value.len() as u8);
            block.extend_from_slice(value.as_bytes());
        }
        let mut start = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        start.extend(frame(4, 0, 0, &[]));
        start.extend(frame(1, 0x4, 1, &block)); // HEADERS, END_HEADERS, stream 1
        std::thread::spawn(move || {
            if stdin.write_all(&start).and_then(|_| stdin.flush()).is_err() {
                return;
            }
            for _ in 0..sent {
                std::thread::sleep(Duration::from_millis(300));
                let data = frame(0, 0, 1, b"x");
                if stdin.write_all(&data).and_then(|_| stdin.flush()).is_err() {
                    return;
                }
            }
            // Hold the connection open, sending nothing, until the test ends.
            std::thread::sleep(Duration::from_secs(120));
        });
        H2Trickler { child }
    }
}

impl Drop for H2Trickler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl s_client` offering only h2 by ALPN to channelgate's TLS port: the test
/// writes raw HTTP/2 frames to its stdin.
fn h2_over_openssl(port: u16, stdout: std::process::Stdio) -> std::process::Child {
    Command::new("openssl")
        .args(["s_client", "-quiet", "-alpn", "h2", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(std::process::Stdio::piped())
        .stdout(stdout)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl (scripts/setup installs it)")
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}
