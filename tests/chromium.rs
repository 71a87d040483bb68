//! End-to-end in a real browser: headless Debian `chromium` loads the chat demo
//! (examples/chat under gunicorn) over https through channelgate's `[tls]` listener with
//! `http2 = true`, trusting a test CA (made here with rcgen) through an NSS database
//! (`certutil`, libnss3-tools) — no `--ignore-certificate-errors`. A message published to
//! the page's group through the admin `POST /publish/{group}` must appear on the page via
//! its wss:// WebSocket. The page must have come over h2 (CDP's response protocol) and
//! the WebSocket must be wss://.
//!
//! The browser is driven by tests/peers/chromium_push.py (CDP over Python `websockets`).
//! The screenshot it takes is the README's image for "TLS and HTTP/2"; set
//! `CHANNELGATE_UPDATE_SCREENSHOT=1` to write it to examples/chat/screenshot-tls.png.
//!
//! scripts/install-chromium installs chromium and certutil from Debian; if that fails the
//! test fails under CI=true and is skipped (with a banner) elsewhere.

#[path = "common/ca.rs"]
mod ca;
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ca::TestCa;
use common::*;

/// Where the README's TLS section takes its image from.
const README_IMAGE: &str = "examples/chat/screenshot-tls.png";
/// PNG signature.
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// chromium and certutil are there (installing them if needed); false means skip.
fn chromium_available() -> bool {
    let ok = Command::new(repo().join("scripts/install-chromium"))
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "scripts/install-chromium could not install chromium/certutil and CI is set"
        );
        eprintln!("\n********\n*** SKIPPED: chromium or certutil is missing (scripts/install-chromium failed) ***\n********\n");
    }
    ok
}

/// `$HOME/.pki/nssdb` trusting the test CA for TLS servers: where Chromium on Linux
/// reads its trust anchors from.
fn trust_ca_in_nss(home: &Path, ca_pem: &Path) {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).expect("mkdir nssdb");
    let db_arg = format!("sql:{}", db.display());
    let run = |args: &[&str]| {
        let out = Command::new("certutil")
            .arg("-d")
            .arg(&db_arg)
            .args(args)
            .output()
            .expect("certutil (scripts/install-chromium installs it)");
        assert!(
            out.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["-N", "--empty-password"]);
    let ca = ca_pem.to_str().expect("utf-8 temp path");
    run(&["-A", "-t", "C,,", "-n", "channelgate test CA", "-i", ca]);
}

/// gunicorn serving examples/chat (the demo), publishing to `admin`.
fn start_chat_app(dir: &Path, port: u16, admin: &str) -> Proc {
    let mut cmd = Command::new(venv_bin("gunicorn"));
    cmd.arg("--chdir")
        .arg(repo().join("examples/chat"))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args([
            "--worker-class",
            "gthread",
            "--threads",
            "4",
            "--workers",
            "1",
        ])
        .args(["--graceful-timeout", "1", "--no-control-socket"])
        .arg("chatdemo.wsgi:application")
        .env("CHANNELGATE_ADMIN", admin)
        .env("CHATDEMO_DB", dir.join("chat.sqlite3"));
    let app = Proc::spawn("gunicorn-chat", &mut cmd, dir);
    let addr = format!("127.0.0.1:{port}");
    wait_for("gunicorn (examples/chat)", Duration::from_secs(30), || {
        http_get_raw(&addr, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    app
}

/// Headless chromium with remote debugging on an ephemeral port; its DevTools WebSocket
/// URL once it has written `DevToolsActivePort`.
fn start_chromium(dir: &Path, home: &Path) -> (Proc, String) {
    let profile = dir.join("profile");
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox", // CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--no-proxy-server",
        "--hide-scrollbars",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg("about:blank")
    .env("HOME", home)
    .stdin(Stdio::null());
    let mut browser = Proc::spawn("chromium", &mut cmd, dir);
    let port_file = profile.join("DevToolsActivePort");
    let mut url = String::new();
    wait_for(
        "chromium's DevToolsActivePort",
        Duration::from_secs(60),
        || {
            assert!(
                browser.is_running(),
                "chromium exited:\n{}",
                browser.output()
            );
            let text = std::fs::read_to_string(&port_file).unwrap_or_default();
            let mut lines = text.lines();
            match (lines.next(), lines.next()) {
                (Some(port), Some(path)) if !port.is_empty() && path.starts_with('/') => {
                    url = format!("ws://127.0.0.1:{port}{path}");
                    true
                }
                _ => false,
            }
        },
    );
    (browser, url)
}

#[test]
fn chromium_loads_the_demo_over_h2_and_receives_a_push_over_wss() {
    if !chromium_available() {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let ca = TestCa::new(d);
    let (cert, key) = ca.issue(d, "server", &["localhost", "127.0.0.1"], (-1, 30));
    let home = d.join("home");
    trust_ca_in_nss(&home, &ca.pem);

    let ports = (free_port(), free_port());
    let (app_port, tls_port) = (free_port(), free_port());
    let admin = format!("http://127.0.0.1:{}", ports.1);
    let _app = start_chat_app(d, app_port, &admin);
    // The demo's config (conf/demo.toml) with a [tls] listener added.
    let body = format!(
        r#"[upstream]
servers = ["127.0.0.1:{app_port}"]

[[ws]]
path = "/ws/chat/{{room}}/"
groups = ["chat-{{room}}"]
inbound = {{ group = "chat-{{room}}", type = "chat.message" }}
max_message = "16KiB"

[tls]
listen = ["127.0.0.1:{tls_port}"]
certificates = [{{ cert = "{}", key = "{}" }}]
http2 = true
"#,
        cert.display(),
        key.display()
    );
    let cg = Channelgate::start_on(d, ports, "", &body);
    wait_for("the TLS listener", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok()
    });

    let (browser, devtools) = start_chromium(d, &home);
    let png = d.join("page.png");
    let text = "pushed by POST /publish/chat-lobby to this page over wss:// (page over https, h2)";
    let out = Command::new(venv_bin("python"))
        .arg(repo().join("tests/peers/chromium_push.py"))
        .args([
            devtools.as_str(),
            &format!("https://localhost:{tls_port}/"),
            &admin,
            "chat-lobby",
            text,
        ])
        .arg(&png)
        .output()
        .expect("run tests/peers/chromium_push.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium_push.py failed: {}\n{stdout}\nchromium:\n{}\nchannelgate:\n{}",
        String::from_utf8_lossy(&out.stderr),
        browser.output(),
        cg.proc.output()
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");

    assert_eq!(r["document_status"], 200, "{r}");
    assert_eq!(
        r["document_protocol"], "h2",
        "page not served over HTTP/2: {r}"
    );
    // The CA is trusted (no certificate error was ignored): Chromium calls the page secure.
    assert_eq!(r["security_state"], "secure", "{r}");
    let ws_url = format!("wss://localhost:{tls_port}/ws/chat/lobby/");
    assert_eq!(r["websocket_urls"][0], ws_url.as_str(), "{r}");
    assert_eq!(r["websocket_status"][0], 101, "{r}");
    assert_eq!(r["delivered"], 1, "one browser in the group: {r}");
    assert_eq!(r["shown"], true, "{r}");

    // channelgate's side: TLS handshakes completed and the WebSocket was accepted.
    let handshakes: f64 = ["1.2", "1.3"]
        .iter()
        .map(|v| {
            cg.metric(&format!(
                "channelgate_tls_handshakes_total{{version=\"{v}\"}}"
            ))
        })
        .sum();
    assert!(handshakes >= 2.0, "h2 page + wss: {handshakes} handshakes");
    assert!(cg.metric("channelgate_ws_connects_total{outcome=\"accepted\"}") >= 1.0);

    let shot = std::fs::read(&png).expect("screenshot");
    assert!(shot.starts_with(PNG_MAGIC), "not a PNG");
    assert!(
        shot.len() < 200 * 1024,
        "screenshot is {} bytes",
        shot.len()
    );
    if std::env::var_os("CHANNELGATE_UPDATE_SCREENSHOT").is_some() {
        std::fs::write(repo().join(README_IMAGE), &shot).expect("write README image");
    }
    // Dropping the fixtures kills chromium (its process group), channelgate and gunicorn.
}
