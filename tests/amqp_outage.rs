//! RabbitMQ goes away and comes back while 200 WebSocket clients are connected: with
//! `rabbitmqctl stop_app` / `start_app`, and with the node killed (SIGKILL) and started
//! again. Each test runs its own dedicated RabbitMQ node (tests/common/rabbit.rs); the
//! shared node on 5672 is never touched.
//!
//! What must hold (issue 12): every message RabbitMQ confirmed after channelgate's
//! `/readyz` returned to 200 reaches every client exactly once and in order; `/publish`
//! answers 503 while the broker is down, and a 200 from it is never lost; the clients stay
//! connected throughout.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fleet::{amqp_publisher, confirmed_after, http_publisher, Fleet, ReadyWatch};
use common::rabbit::{rabbitmq_installed, RabbitNode};
use common::*;

const CLIENTS: usize = 200;

enum Outage {
    /// `rabbitmqctl stop_app`, 5 s, `start_app`.
    StopApp,
    /// The node's VM killed with SIGKILL, 5 s, started again.
    Kill,
}

fn outage(kind: Outage) {
    if !rabbitmq_installed() {
        return;
    }
    let dir = tempdir();
    let node = RabbitNode::start(dir.path());
    let app = Gunicorn::start(dir.path(), "a", Bind::Tcp(free_port()));
    let body = format!(
        "[upstream]\nservers = [\"{}\"]\n[broker]\nkind = \"amqp\"\nurl = \"{}\"\n\n[[ws]]\npath = \"/ws/{{g}}/\"\ngroups = [\"{{g}}\"]\nping_interval = \"1s\"\n",
        app.bind.config_addr(),
        node.url()
    );
    let cg = Channelgate::start(dir.path(), "", &body);
    wait_for("broker up", Duration::from_secs(30), || {
        cg.metric("channelgate_broker_up") == 1.0
    });
    let g = unique("outage");
    let rt = common::ws::rt();
    let fleet = rt.block_on(Fleet::connect(&cg.addr(), &format!("/ws/{g}/"), CLIENTS));
    wait_for("bound", Duration::from_secs(20), || {
        cg.metric("channelgate_broker_bindings_total{op=\"bind\",outcome=\"ok\"}") >= 1.0
    });

    let watch = ReadyWatch::start(cg.admin_port);
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = rt.spawn(amqp_publisher(
        vec![node.url()],
        g.clone(),
        100,
        stop.clone(),
    ));
    let http = http_publisher(cg.admin_port, g.clone(), stop.clone());
    fleet.wait_for('a', 50, Duration::from_secs(30));

    let down_at = Instant::now();
    match kind {
        Outage::StopApp => node.stop_app(),
        Outage::Kill => node.kill9(),
    }
    wait_for("readyz 503", Duration::from_secs(30), || {
        cg.admin("/readyz").0 == 503
    });
    std::thread::sleep(Duration::from_secs(5));
    match kind {
        Outage::StopApp => node.start_app(),
        Outage::Kill => node.boot(),
    }
    wait_for("readyz 200 again", Duration::from_secs(60), || {
        watch.ready_again(down_at).is_some()
    });
    let ready_at = watch.ready_again(down_at).expect("ready again");
    // Publish for a while after readiness returned, then let delivery finish.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let sent = rt.block_on(publisher).expect("publisher task");
    let posted = http.join().expect("http publisher");

    let required = confirmed_after(&sent, ready_at, 50);
    let last = *required.last().expect("some");
    fleet.wait_for('a', last, Duration::from_secs(60));
    fleet.assert_received('a', &required);

    // /publish: 503 while down, and a 200 once the outage was seen is never lost (what
    // RabbitMQ held in the queue when the node went away is lost: transient, at-most-once).
    let seen_down = watch.down(down_at).expect("seen down");
    assert!(
        posted.iter().all(|(_, _, s)| *s == 200 || *s == 503),
        "/publish answered neither 200 nor 503: {:?}",
        posted
            .iter()
            .filter(|(_, _, s)| *s != 200 && *s != 503)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        posted.iter().any(|(_, _, s)| *s == 503),
        "/publish never said 503 while the broker was down"
    );
    let ok: Vec<u64> = posted
        .iter()
        .filter(|(_, at, s)| *s == 200 && *at > seen_down)
        .map(|(n, _, _)| *n)
        .collect();
    assert!(!ok.is_empty(), "no /publish succeeded after the outage");
    fleet.wait_for('h', *ok.last().expect("some"), Duration::from_secs(30));
    fleet.assert_received('h', &ok);

    assert_eq!(
        fleet.lost.load(Ordering::SeqCst),
        0,
        "clients lost their connection"
    );
    assert!(cg.metric("channelgate_broker_reconnects_total") >= 1.0);
    assert_eq!(cg.metric("channelgate_broker_up"), 1.0);
}

#[test]
fn no_confirmed_message_lost_after_readiness_returns_stop_app() {
    outage(Outage::StopApp);
}

#[test]
fn no_confirmed_message_lost_after_readiness_returns_kill_9() {
    outage(Outage::Kill);
}
