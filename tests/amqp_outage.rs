//! RabbitMQ goes away and comes back (`rabbitmqctl stop_app` / `start_app`) while
//! WebSocket clients are connected. In its own test binary: it stops the broker that the
//! other broker tests use, and cargo runs test binaries one at a time.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn rabbitmqctl(arg: &str) {
    let out = Command::new("rabbitmqctl")
        .arg(arg)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {arg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the app again even when the test fails half-way.
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").output();
    }
}

#[test]
fn clients_stay_connected_through_a_broker_outage_and_delivery_resumes() {
    if !rabbitmq_available() {
        return;
    }
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "a", Bind::Tcp(free_port()));
    let cg = start_amqp(dir.path(), &app, "ping_interval = \"1s\"");
    let g = unique("outage");
    let rt = common::ws::rt();
    let mut ws = rt.block_on(async {
        let req = format!("ws://{}/ws/{g}/", cg.addr())
            .into_client_request()
            .unwrap();
        let s = tokio::net::TcpStream::connect(cg.addr()).await.unwrap();
        tokio_tungstenite::client_async(req, s).await.unwrap().0
    });
    wait_for("bound", Duration::from_secs(10), || {
        cg.metric("channelgate_broker_bindings_total{op=\"bind\",outcome=\"ok\"}") >= 1.0
    });
    // The client keeps answering pings in the background while the broker is away.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = rt.spawn(async move {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Text(t)) => {
                    let _ = tx.send(t.to_string());
                }
                Ok(_) => {}
                Err(e) => panic!("the client lost its connection: {e}"),
            }
        }
        panic!("the server closed the client's connection");
    });

    let _restart = Restart;
    rabbitmqctl("stop_app");
    wait_for("readyz 503", Duration::from_secs(30), || {
        cg.admin("/readyz").0 == 503
    });
    assert_eq!(cg.metric("channelgate_broker_up"), 0.0);
    let r = client()
        .post(format!("http://127.0.0.1:{}/publish/{g}", cg.admin_port))
        .body("while down")
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        503,
        "publishing while the broker is down says so"
    );
    std::thread::sleep(Duration::from_secs(3)); // several ping periods: the socket stays up

    rabbitmqctl("start_app");
    wait_for("reconnected", Duration::from_secs(60), || {
        cg.metric("channelgate_broker_up") == 1.0
    });
    wait_for("bindings replayed", Duration::from_secs(20), || {
        cg.metric("channelgate_broker_bindings_total{op=\"bind\",outcome=\"ok\"}") >= 2.0
    });
    assert_eq!(cg.admin("/readyz").0, 200);
    assert!(cg.metric("channelgate_broker_reconnects_total") >= 1.0);
    amqp_publish(&["--group", &g, "--text", "after recovery"]);
    let got = rt.block_on(async { tokio::time::timeout(Duration::from_secs(15), rx.recv()).await });
    assert_eq!(
        got.expect("a message after recovery").as_deref(),
        Some("after recovery")
    );
    assert!(!reader.is_finished(), "the client stayed connected");
    reader.abort();
}
