//! The three seed deployments, each run from its example config in conf/examples with
//! only the addresses changed: CATMAID (session login, updates-<user>), AWX (the
//! subscription protocol over RabbitMQ) and CLU (a real sdss-clu actor behind the
//! amqp-bridge).

mod common;

use std::time::Duration;

use common::ws::*;
use common::*;
use futures::SinkExt;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Starts channelgate from conf/examples/<name>.toml, changing only where it listens,
/// where the app is and where the [[static]] roots are (`dir`/root0, root1, ..., created),
/// and leaving out the [tls] section (HTTPS is tested in tests/tls.rs).
fn from_example(dir: &std::path::Path, name: &str, app: &Bind) -> Channelgate {
    let text = std::fs::read_to_string(repo().join(format!("conf/examples/{name}.toml"))).unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let mut out = String::new();
    let mut section = String::new();
    let mut roots = 0;
    for line in text.lines() {
        if line.starts_with('[') {
            section = line.to_string();
        }
        if section == "[tls]" {
            continue;
        }
        if section == "[[static]]" && line.starts_with("root = ") {
            let root = dir.join(format!("root{roots}"));
            std::fs::create_dir_all(&root).unwrap();
            roots += 1;
            out.push_str(&format!("root = \"{}\"\n", root.display()));
            continue;
        }
        let replaced = match (section.as_str(), line.split('=').next().unwrap_or("").trim()) {
            ("[server]", "listen") => format!(
                "listen = [\"127.0.0.1:{port}\"]\npid_file = \"{d}/cg.pid\"\nupgrade_sock = \"{d}/cg.sock\"",
                d = dir.display()
            ),
            ("[upstream]", "servers") => format!("servers = [\"{}\"]", app.config_addr()),
            ("[admin]", "listen") => format!("listen = \"127.0.0.1:{admin_port}\""),
            _ => line.to_string(),
        };
        out.push_str(&replaced);
        out.push('\n');
    }
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, out).unwrap();
    Channelgate::start_with(dir, config, port, admin_port, false)
}

fn cookie_value(cookies: &str, name: &str) -> String {
    cookies
        .split("; ")
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {cookies}"))
        .to_string()
}

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn catmaid_example_session_login_and_updates() {
    let dir = tempdir();
    // The example's [[static]] roots become dir/root0 (/static/), root1 (/files/) and
    // root2 (/protected/, which django-sendfile2 hands out).
    let protected = dir.path().join("root2");
    let app = Gunicorn::start_with_env(
        dir.path(),
        "catmaid",
        Bind::Tcp(free_port()),
        &[("TESTAPP_PROTECTED_ROOT", protected.display().to_string())],
    );
    let cg = from_example(dir.path(), "catmaid", &app.bind);
    std::fs::write(dir.path().join("root0/catmaid.css"), b"body{}\n").unwrap();
    std::fs::write(protected.join("export.swc"), b"1 0 0 0 0 1 -1\n").unwrap();
    // No nginx: static files, protected files through the app, the app itself.
    let r = client().get(cg.url("/static/catmaid.css")).send().unwrap();
    assert_eq!(r.headers()["cache-control"], "public, max-age=604800");
    assert_eq!(r.text().unwrap(), "body{}\n");
    let r = client().get(cg.url("/sendfile/export.swc")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "1 0 0 0 0 1 -1\n");
    let r = client()
        .get(cg.url("/protected/export.swc"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client().get(cg.url("/files/not-on-disk/")).send().unwrap();
    assert_eq!(r.status(), 404);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        ct.starts_with("text/html"),
        "a missing file goes to the app (Django's 404): {ct}"
    );
    let cookie = login(&cg, "/accounts/login/", "alice");
    let rt = rt();
    let mut ws = rt
        .block_on(connect_with(
            &cg.addr(),
            "/channels/updates/",
            &[("cookie", &cookie)],
        ))
        .unwrap();
    let payload = json!({"event": "node-moved", "payload": {"id": 7}}).to_string();
    let r = client()
        .post(format!(
            "http://127.0.0.1:{}/publish/updates-1",
            cg.admin_port
        ))
        .json(&json!({"type": "update.message", "text": payload}))
        .send()
        .unwrap();
    assert_eq!(r.json::<Value>().unwrap()["delivered"], 1);
    assert_eq!(
        rt.block_on(next_json(&mut ws)),
        json!({"event": "node-moved", "payload": {"id": 7}})
    );
    // Anonymous: refused before any 101.
    let anon = rt.block_on(async {
        let req = format!("ws://{}/channels/updates/", cg.addr())
            .into_client_request()
            .unwrap();
        tokio_tungstenite::client_async(req, TcpStream::connect(cg.addr()).await.unwrap()).await
    });
    match anon {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("anonymous client not refused: {:?}", other.map(|_| ())),
    }
}

#[test]
fn awx_example_subscriptions_authorization_and_delivery() {
    if !rabbitmq_available() {
        return;
    }
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "awx", Bind::Tcp(free_port()));
    let cg = from_example(dir.path(), "awx", &app.bind);
    wait_for("broker connected", Duration::from_secs(20), || {
        cg.metric("channelgate_broker_up") == 1.0
    });
    let cookie = login(&cg, "/awx/login/", "alice");
    let csrf = cookie_value(&cookie, "csrftoken");
    let rt = rt();
    let mut ws = rt
        .block_on(connect_with(
            &cg.addr(),
            "/websocket/",
            &[("cookie", &cookie)],
        ))
        .unwrap();
    let send = |ws: &mut Ws, v: Value| {
        rt.block_on(ws.send(Message::Text(v.to_string().into())))
            .unwrap()
    };
    assert_eq!(
        rt.block_on(next_json(&mut ws)),
        json!({"accept": true, "user": 1})
    );

    send(
        &mut ws,
        json!({"groups": {"jobs": ["status_changed"], "job_events": [12, 13]}, "xrftoken": csrf}),
    );
    assert_eq!(
        rt.block_on(next_json(&mut ws)),
        json!({"error": "access denied to channel job_events for resource id 13"})
    );
    let reply = rt.block_on(next_json(&mut ws));
    assert_eq!(
        sorted(&reply["groups_current"]),
        ["job_events-12", "jobs-status_changed"]
    );
    assert_eq!(
        sorted(&reply["groups_joined"]),
        ["job_events-12", "jobs-status_changed"]
    );
    assert_eq!(sorted(&reply["groups_left"]), Vec::<String>::new());

    // AWX's publishing side, unchanged: internal.message through channels_rabbitmq's format.
    wait_for("bindings", Duration::from_secs(10), || {
        cg.metric("channelgate_broker_bindings_total{op=\"bind\",outcome=\"ok\"}") >= 2.0
    });
    let event = json!({"type": "job_event", "job": 12, "counter": 1}).to_string();
    amqp_publish(&[
        "--group",
        "job_events-13",
        "--type",
        "internal.message",
        "--text",
        "not for alice",
    ]);
    amqp_publish(&[
        "--group",
        "job_events-12",
        "--type",
        "internal.message",
        "--text",
        &event,
    ]);
    assert_eq!(
        rt.block_on(next_json(&mut ws)),
        json!({"type": "job_event", "job": 12, "counter": 1})
    );

    // A new dict replaces the subscriptions.
    send(
        &mut ws,
        json!({"groups": {"jobs": ["status_changed"]}, "xrftoken": csrf}),
    );
    let reply = rt.block_on(next_json(&mut ws));
    assert_eq!(sorted(&reply["groups_left"]), ["job_events-12"]);
    assert_eq!(sorted(&reply["groups_current"]), ["jobs-status_changed"]);
    wait_for("unbound", Duration::from_secs(10), || {
        cg.metric("channelgate_broker_bindings_total{op=\"unbind\",outcome=\"ok\"}") >= 1.0
    });
    amqp_publish(&[
        "--group",
        "job_events-12",
        "--type",
        "internal.message",
        "--text",
        "after leaving",
    ]);
    rt.block_on(quiet(&mut ws));

    // A wrong xrftoken changes nothing.
    send(
        &mut ws,
        json!({"groups": {"jobs": ["summary"]}, "xrftoken": "forged"}),
    );
    assert_eq!(
        rt.block_on(next_json(&mut ws)),
        json!({"error": "access denied to channel"})
    );
    amqp_publish(&[
        "--group",
        "jobs-status_changed",
        "--type",
        "internal.message",
        "--text",
        "{\"status\": \"running\"}",
    ]);
    assert_eq!(
        rt.block_on(next_json(&mut ws)),
        json!({"status": "running"})
    );
}

#[test]
fn clu_example_commands_a_real_actor_and_relays_its_replies() {
    if !rabbitmq_available() {
        return;
    }
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "clu", Bind::Tcp(free_port()));
    let actor_name = unique("actor").replace('-', "_");
    let mut cmd = std::process::Command::new(venv_bin("python"));
    cmd.arg(repo().join("tests/peers/clu_actor.py"))
        .args(["--name", &actor_name]);
    let actor = Proc::spawn("clu-actor", &mut cmd, dir.path());
    wait_for("actor READY", Duration::from_secs(30), || {
        actor.output().contains("READY")
    });
    let cg = from_example(dir.path(), "clu", &app.bind);
    wait_for("bridge connected", Duration::from_secs(20), || {
        cg.proc.output().contains("amqp-bridge connected")
    });
    let rt = rt();
    rt.block_on(async {
        let mut ws = connect(&cg.addr(), "/ws").await;
        let cmd =
            json!({"consumer": actor_name, "command_string": "ping", "command_id": "id-1234"});
        ws.send(Message::Text(cmd.to_string().into()))
            .await
            .unwrap();
        ws.send(Message::Text("not json".into())).await.unwrap();
        let mut codes = Vec::new();
        while !codes.contains(&":".to_string()) {
            let env = next_json(&mut ws).await;
            let h = &env["headers"];
            if h["command_id"] != "id-1234" {
                continue; // replies to other commanders on the shared exchange
            }
            assert_eq!(h["sender"], actor_name.as_str());
            assert_eq!(env["exchange"], "sdss_exchange");
            assert!(
                env["routing_key"].as_str().unwrap().starts_with("reply."),
                "{env}"
            );
            assert!(
                env.get("message_id").is_some() && env.get("timestamp").is_some(),
                "{env}"
            );
            assert!(env["body"].is_object(), "{env}");
            if h["message_code"] == ":" {
                assert_eq!(env["body"]["text"], "Pong.", "{env}");
            }
            codes.push(h["message_code"].as_str().unwrap().to_string());
        }
        assert_eq!(
            codes.first().map(String::as_str),
            Some(">"),
            "running, then done: {codes:?}"
        );
    });
    // Client frames are handled beside the connection's loop: the count may come a moment
    // after the replies to the command sent before it.
    wait_for(
        "the non-JSON frame counted",
        Duration::from_secs(10),
        || {
            cg.metric("channelgate_ws_inbound_total{mode=\"amqp-bridge\",outcome=\"ignored\"}")
                >= 1.0
        },
    );
}
