//! Two channelgate instances over a two-node RabbitMQ cluster (dedicated nodes started by
//! tests/common/rabbit.rs, joined with `rabbitmqctl join_cluster`). The node holding one
//! instance's queue stops: that instance redeclares its queue on the other node and
//! replays its bindings; its clients stay connected, and every message published after
//! its `/readyz` returned to 200 reaches every client of both instances once, in order.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fleet::{amqp_publisher, confirmed_after, Fleet, ReadyWatch};
use common::rabbit::{rabbitmq_installed, RabbitNode};
use common::*;

const CLIENTS_EACH: usize = 25;

fn start(dir: &std::path::Path, app: &Gunicorn, urls: [&str; 2]) -> Channelgate {
    let body = format!(
        "[upstream]\nservers = [\"{}\"]\n[broker]\nkind = \"amqp\"\nurl = [\"{}\", \"{}\"]\n\n[[ws]]\npath = \"/ws/{{g}}/\"\ngroups = [\"{{g}}\"]\nping_interval = \"1s\"\n",
        app.bind.config_addr(),
        urls[0],
        urls[1]
    );
    let cg = Channelgate::start(dir, "", &body);
    wait_for("broker up", Duration::from_secs(30), || {
        cg.metric("channelgate_broker_up") == 1.0
    });
    cg
}

#[test]
fn a_node_failure_moves_the_queue_and_delivery_resumes() {
    if !rabbitmq_installed() {
        return;
    }
    let dir = tempdir();
    let n1 = RabbitNode::start(dir.path());
    let n2 = RabbitNode::start(dir.path());
    n2.join(&n1);
    let app = Gunicorn::start(dir.path(), "a", Bind::Tcp(free_port()));
    // cg1's queue lives on n1 (its first node), cg2's on n2.
    let cg1 = start(dir.path(), &app, [&n1.url(), &n2.url()]);
    let cg2 = start(dir.path(), &app, [&n2.url(), &n1.url()]);
    let g = unique("cluster");
    let rt = common::ws::rt();
    let path = format!("/ws/{g}/");
    let fleet1 = rt.block_on(Fleet::connect(&cg1.addr(), &path, CLIENTS_EACH));
    let fleet2 = rt.block_on(Fleet::connect(&cg2.addr(), &path, CLIENTS_EACH));
    for cg in [&cg1, &cg2] {
        wait_for("bound", Duration::from_secs(20), || {
            cg.metric("channelgate_broker_bindings_total{op=\"bind\",outcome=\"ok\"}") >= 1.0
        });
    }

    let watch = ReadyWatch::start(cg1.admin_port);
    let stop = Arc::new(AtomicBool::new(false));
    // The publisher talks to the node that stays up.
    let publisher = rt.spawn(amqp_publisher(
        vec![n2.url(), n1.url()],
        g.clone(),
        50,
        stop.clone(),
    ));
    fleet1.wait_for('a', 20, Duration::from_secs(30));
    fleet2.wait_for('a', 20, Duration::from_secs(30));

    let down_at = Instant::now();
    n1.stop_app();
    wait_for("cg1 ready again on n2", Duration::from_secs(60), || {
        watch.ready_again(down_at).is_some()
    });
    let ready_at = watch.ready_again(down_at).expect("ready again");
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let sent = rt.block_on(publisher).expect("publisher task");

    let required = confirmed_after(&sent, ready_at, 20);
    let last = *required.last().expect("some");
    for fleet in [&fleet1, &fleet2] {
        fleet.wait_for('a', last, Duration::from_secs(60));
        fleet.assert_received('a', &required);
        assert_eq!(
            fleet.lost.load(Ordering::SeqCst),
            0,
            "clients lost their connection"
        );
    }
    assert!(cg1.metric("channelgate_broker_reconnects_total") >= 1.0);
    assert_eq!(
        cg2.metric("channelgate_broker_reconnects_total"),
        0.0,
        "cg2's node stayed up: it should not have reconnected"
    );
    assert_eq!(cg1.admin("/readyz").0, 200);
}
