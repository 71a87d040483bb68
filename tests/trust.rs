//! End-to-end: trust at the edge, against gunicorn serving the Django test app, whose
//! /hook/ views verify channelgate's calls with the repository's Python package
//! (`@channelgate_hook`). No client header of channelgate's reserved set, nor X-Real-IP,
//! reaches the app on any path; only channelgate's signed calls pass the decorator.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use channelgate::upstream::signing::{signature, HookSecret, SIGNATURE};
use common::ws::*;
use common::*;
use futures::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "trust-test-secret-0123456789abcdef";

/// What a hostile client adds to every request.
const FORGED: &[(&str, &str)] = &[
    ("X-Channelgate-User", "admin"),
    ("X-Channelgate-Channel", "forged.channel!x"),
    ("X-Channelgate-Param-Room", "forged-room"),
    ("X-Channelgate-Signature", "t=1,v1=forged"),
    ("X_Channelgate_User", "smuggled-admin"),
    ("X-Real-IP", "6.6.6.6"),
    ("X-Internal-Token", "forged-token"),
];

struct Setup {
    dir: tempfile::TempDir,
    app: Gunicorn,
    cg: Channelgate,
    log: PathBuf,
}

fn secret_file(dir: &Path, mode: u32) -> PathBuf {
    let f = dir.join("hook.secret");
    std::fs::write(&f, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    f
}

/// gunicorn knowing the hook secret, and channelgate signing with it.
fn setup() -> Setup {
    setup_with("")
}

/// The same, with more `[[ws]]` routes.
fn setup_with(routes: &str) -> Setup {
    let dir = tempdir();
    let log = dir.path().join("hooks.jsonl");
    let app = Gunicorn::start_with_env(
        dir.path(),
        "app",
        Bind::Tcp(free_port()),
        &[
            ("CHANNELGATE_HOOK_SECRET", SECRET.to_string()),
            ("TESTAPP_HOOK_LOG", log.display().to_string()),
        ],
    );
    let body = format!(
        "[upstream]\nservers = [\"{}\"]\nhook_secret_file = \"{}\"\n\n\
         [[ws]]\npath = \"/ws/hook/{{room}}/\"\ngroups = [\"hook-{{room}}\"]\n\
         auth = {{ path = \"/hook/ws-auth/\" }}\ninbound = {{ http = \"/hook/receive/\" }}\n{routes}",
        app.bind.config_addr(),
        secret_file(dir.path(), 0o600).display()
    );
    let cg = Channelgate::start(dir.path(), "strip_headers = [\"X-Internal-Token\"]", &body);
    Setup { dir, app, cg, log }
}

/// The calls the app's hook views accepted, oldest first.
fn hook_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("hook log line"))
        .collect()
}

/// Fails unless the headers the app saw hold nothing the client forged.
fn assert_clean(headers: &Value, what: &str) {
    let h = headers.as_object().expect("headers object");
    for (name, value) in h {
        let v = value.as_str().unwrap_or_default();
        for (_, forged) in FORGED {
            assert!(
                !v.contains(forged),
                "{what}: the app saw the forged value {forged:?} in {name}: {h:?}"
            );
        }
        assert!(
            name != "x-internal-token",
            "{what}: strip_headers not applied: {h:?}"
        );
    }
}

/// The forged headers a WebSocket client library can send (no `_` in names), and `extra`.
fn ws_headers<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    FORGED
        .iter()
        .copied()
        .filter(|(k, _)| !k.contains('_'))
        .chain(extra.iter().copied())
        .collect()
}

/// Sends a raw request, returns everything the server sent until it closed.
fn raw(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn json_body(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").expect("a head").1;
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {response}"))
}

#[test]
fn forged_identity_and_real_ip_never_reach_the_app_on_any_path() {
    let s = setup();
    let forged_lines: String = FORGED
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();

    // 1. A proxied request.
    let mut req = client().get(s.cg.url("/headers/"));
    for (k, v) in FORGED {
        req = req.header(*k, *v);
    }
    let seen: Value = req.send().unwrap().json().unwrap();
    assert_clean(&seen["headers"], "proxied");
    assert_eq!(seen["headers"]["x-real-ip"], "127.0.0.1", "{seen}");

    // 2. An upgrade that no route claims, passed through (the WSGI app answers it 200).
    let resp = raw(
        &s.cg.addr(),
        &format!(
            "GET /headers/up/ HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{forged_lines}\r\n"
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = json_body(&resp);
    assert_clean(&seen["headers"], "pass-through upgrade");
    assert_eq!(seen["headers"]["x-real-ip"], "127.0.0.1", "{seen}");

    // 3. The auth call and 4. the inbound webhook, for a client with a real token.
    let headers = ws_headers(&[("Authorization", "Bearer alice-token")]);
    let reply = rt().block_on(async {
        let mut ws = connect_with(&s.cg.addr(), "/ws/hook/lobby/", &headers)
            .await
            .expect("handshake accepted: the signed auth call passed @channelgate_hook");
        ws.send(Message::Text("hello".into())).await.unwrap();
        next_text(&mut ws).await
    });
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_clean(&reply["headers"], "inbound webhook");
    assert_eq!(reply["body"], "hello");
    let hook = &reply["hook"];
    assert_eq!(hook["route"], "/ws/hook/{room}/", "{reply}");
    assert_eq!(hook["params"]["room"], "lobby", "{reply}");
    let alice = hook["user"].as_str().expect("a user").to_string();
    assert_ne!(alice, "admin");
    let calls = hook_log(&s.log);
    let auth = calls
        .iter()
        .find(|c| c["view"] == "ws-auth")
        .expect("auth call");
    assert_clean(&auth["headers"], "auth call");
    assert_eq!(auth["headers"]["x-real-ip"], "127.0.0.1", "{auth}");
    assert_eq!(
        auth["hook"]["user"],
        Value::Null,
        "the auth call names no user"
    );
    assert_eq!(auth["hook"]["channel"], hook["channel"], "one channel name");

    let stripped = |kind: &str| {
        s.cg.metric(&format!(
            "channelgate_http_stripped_headers_total{{kind=\"{kind}\"}}"
        ))
    };
    assert!(stripped("reserved") >= 8.0, "{}", stripped("reserved"));
    assert!(stripped("configured") >= 2.0);
    // Proxied and passed through; the auth call copies only credentials from the client.
    assert!(stripped("x_real_ip") >= 2.0);
}

/// A request straight to gunicorn, as a client that can reach the app would send it.
fn direct(app: &Gunicorn, path: &str, headers: &[(String, String)]) -> u16 {
    let mut req = client()
        .post(format!("http://{}{path}", app.bind.config_addr()))
        .header("content-type", "text/plain")
        .body("direct");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req.send().unwrap().status().as_u16()
}

/// The X-Channelgate-* headers of a call the app accepted.
fn own_headers(call: &Value) -> Vec<(String, String)> {
    call["headers"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("x-channelgate-"))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

fn signed(secret: &str, t: u64, path: &str, headers: &[(String, String)]) -> String {
    let mut req = pingora::http::RequestHeader::build("POST", path.as_bytes(), None).unwrap();
    for (k, v) in headers.iter().filter(|(k, _)| k != SIGNATURE) {
        req.insert_header(k.clone(), v.as_str()).unwrap();
    }
    signature(&HookSecret::new(secret).unwrap(), t, &req)
}

fn with(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = headers.iter().filter(|(k, _)| k != name).cloned().collect();
    h.push((name.to_string(), value.to_string()));
    h
}

#[test]
fn the_hook_decorator_accepts_channelgate_and_refuses_unsigned_forged_tampered_and_stale_calls() {
    let s = setup();
    rt().block_on(async {
        let mut ws = connect_with(
            &s.cg.addr(),
            "/ws/hook/room1/",
            &[("Authorization", "Bearer bob-token")],
        )
        .await
        .expect("channelgate's signed auth call is accepted");
        ws.send(Message::Text("x".into())).await.unwrap();
        let reply: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        assert_eq!(
            reply["view"], "receive",
            "channelgate's signed inbound call is accepted"
        );
    });
    let calls = hook_log(&s.log);
    let call = calls.iter().find(|c| c["view"] == "receive").unwrap();
    let path = "/hook/receive/";
    assert_eq!(call["raw_uri"], path);
    let genuine = own_headers(call);
    assert!(genuine.iter().any(|(k, _)| k == SIGNATURE), "{genuine:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    // Controls: the captured call replayed at once, and a call the test signs itself.
    assert_eq!(direct(&s.app, path, &genuine), 200);
    assert_eq!(
        direct(
            &s.app,
            path,
            &with(&genuine, SIGNATURE, &signed(SECRET, now, path, &genuine))
        ),
        200
    );
    // Unsigned: channelgate's headers without the signature, or nothing at all.
    let unsigned: Vec<_> = genuine
        .iter()
        .filter(|(k, _)| k != SIGNATURE)
        .cloned()
        .collect();
    assert_eq!(direct(&s.app, path, &unsigned), 403);
    assert_eq!(direct(&s.app, path, &[]), 403);
    // Tampered: another user, an added header, another path, under the genuine signature.
    assert_eq!(
        direct(&s.app, path, &with(&genuine, "x-channelgate-user", "admin")),
        403
    );
    assert_eq!(
        direct(
            &s.app,
            path,
            &with(&genuine, "x-channelgate-group", "admins")
        ),
        403
    );
    assert_eq!(direct(&s.app, "/hook/receive/?x=1", &genuine), 403);
    // Forged: signed with another secret.
    let forged = signed("not-the-secret-0123456789", now, path, &genuine);
    assert_eq!(
        direct(&s.app, path, &with(&genuine, SIGNATURE, &forged)),
        403
    );
    // Stale: the right secret, ten minutes ago (max_age is 300 s).
    let stale = signed(SECRET, now - 600, path, &genuine);
    assert_eq!(
        direct(&s.app, path, &with(&genuine, SIGNATURE, &stale)),
        403
    );
    // Only the accepted calls were recorded: channelgate's two and the two controls.
    assert_eq!(hook_log(&s.log).len(), 4);
    drop(s.dir);
}

#[test]
fn authorize_calls_are_signed_and_name_the_group_and_user() {
    let s = setup_with(
        "\n[[ws]]\npath = \"/ws/awx/\"\nprotocol = \"awx\"\nauth = { path = \"/hook/ws-auth/\" }\n\
         authorize = { path = \"/hook/authorize/\" }\n",
    );
    let headers = ws_headers(&[
        ("Authorization", "Bearer alice-token"),
        ("Cookie", "csrftoken=tok"),
    ]);
    let reply = rt().block_on(async {
        let mut ws = connect_with(&s.cg.addr(), "/ws/awx/", &headers)
            .await
            .unwrap();
        let hello = next_json(&mut ws).await;
        assert_eq!(hello["accept"], true, "{hello}");
        let sub = serde_json::json!({"groups": {"jobs": ["a"]}, "xrftoken": "tok"});
        ws.send(Message::Text(sub.to_string().into()))
            .await
            .unwrap();
        next_json(&mut ws).await
    });
    // The decorated view answered 204 only because the call was signed.
    assert_eq!(
        reply["groups_joined"],
        serde_json::json!(["jobs-a"]),
        "{reply}"
    );
    let calls = hook_log(&s.log);
    let call = calls
        .iter()
        .find(|c| c["view"] == "authorize")
        .expect("an authorize call");
    assert_eq!(call["raw_uri"], "/hook/authorize/?group=jobs-a");
    assert_eq!(call["hook"]["group"], "jobs-a");
    let auth = calls.iter().find(|c| c["view"] == "ws-auth").unwrap();
    assert_eq!(call["hook"]["channel"], auth["hook"]["channel"]);
    assert!(call["hook"]["user"].as_str().is_some_and(|u| u != "admin"));
    assert_clean(&call["headers"], "authorize call");
}

#[test]
fn an_upstream_101_to_a_plain_get_is_a_502() {
    let s = setup();
    let r = client().get(s.cg.url("/status/101/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 502);
    assert_eq!(
        s.cg.metric("channelgate_upstream_errors_total{kind=\"bad_response\"}"),
        1.0
    );
}

#[test]
fn a_repeated_or_conflicting_content_length_is_a_400() {
    let s = setup();
    let addr = s.cg.addr();
    for lengths in [
        "Content-Length: 5, 5\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
    ] {
        let resp = raw(
            &addr,
            &format!(
                "POST /upload/ HTTP/1.1\r\nHost: app\r\n{lengths}Connection: close\r\n\r\nhello"
            ),
        );
        assert!(resp.starts_with("HTTP/1.1 400"), "{lengths:?}: {resp}");
    }
    let ok = raw(
        &addr,
        "POST /upload/ HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_eq!(
        s.cg.metric("channelgate_http_refused_total{reason=\"bad_content_length\"}"),
        2.0
    );
}

fn check(config: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_channelgate"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn check_refuses_a_readable_secret_file_and_warns_about_unsigned_calls() {
    let dir = tempdir();
    let secret = secret_file(dir.path(), 0o644);
    let route = "[[ws]]\npath = \"/ws/x/\"\nauth = { path = \"/ws-auth/\" }\n";
    let config = dir.path().join("c.toml");
    let write = |upstream_extra: &str| {
        std::fs::write(
            &config,
            format!("[upstream]\nservers = [\"127.0.0.1:1\"]\n{upstream_extra}\n{route}"),
        )
        .unwrap()
    };
    write(&format!("hook_secret_file = \"{}\"", secret.display()));
    let (ok, text) = check(&config);
    assert!(!ok, "{text}");
    assert!(
        text.contains("upstream.hook_secret_file") && text.contains("chmod 600"),
        "{text}"
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, text) = check(&config);
    assert!(ok, "{text}");
    assert!(text.contains("hook calls: signed"), "{text}");
    assert!(!text.contains("warning"), "{text}");
    write("");
    let (ok, text) = check(&config);
    assert!(ok, "{text}");
    assert!(text.contains("warning: route(s) /ws/x/"), "{text}");
}

#[test]
fn a_malformed_head_gets_one_access_line_and_a_client_gone_mid_head_is_no_error() {
    let s = setup();
    let addr = s.cg.addr();
    let resp = raw(
        &addr,
        "GET /headers/ HTTP/1.1\r\nHost: app\r\nContent-Length: abc\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.write_all(b"GET /headers/ HTTP/1.1\r\nHo").unwrap();
    }
    wait_for("both counted", Duration::from_secs(20), || {
        s.cg.metric("channelgate_http_refused_total{reason=\"malformed\"}") == 1.0
            && s.cg
                .metric("channelgate_http_refused_total{reason=\"incomplete_head\"}")
                == 1.0
    });
    let log = s.cg.proc.output();
    let access_400: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("access") && l.contains("status=400"))
        .collect();
    assert_eq!(access_400.len(), 1, "{log}");
    assert!(access_400[0].contains("malformed_request"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}
