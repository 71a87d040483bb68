//! End-to-end with a real RabbitMQ: channelgate's `amqp` broker against the
//! channels_rabbitmq wire format, pika publishers, daphne consumers and a second instance.

mod common;

use std::time::Duration;

use common::ws::*;
use common::*;
use futures::SinkExt;
use tokio_tungstenite::tungstenite::Message;

fn start(dir: &std::path::Path, app: &Gunicorn) -> Channelgate {
    start_amqp(dir, app, "")
}

fn wait_bound(cg: &Channelgate, n: f64) {
    wait_for("queue bindings", Duration::from_secs(10), || {
        cg.metric("channelgate_broker_bindings_total{op=\"bind\",outcome=\"ok\"}") >= n
    });
}

fn publish_admin(cg: &Channelgate, group: &str, text: &str) -> u16 {
    client()
        .post(format!(
            "http://127.0.0.1:{}/publish/{group}",
            cg.admin_port
        ))
        .header("content-type", "application/json")
        .body(serde_json::json!({"type": "chat.message", "text": text}).to_string())
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn pika_publisher_reaches_group_members_only() {
    if !rabbitmq_available() {
        return;
    }
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "a", Bind::Tcp(free_port()));
    let cg = start(dir.path(), &app);
    let (g1, g2) = (unique("jobs"), unique("other"));
    let rt = rt();
    let (mut a, mut b, mut c) = rt.block_on(async {
        let a = connect(&cg.addr(), &format!("/ws/{g1}/")).await;
        let b = connect(&cg.addr(), &format!("/ws/{g1}/")).await;
        let c = connect(&cg.addr(), &format!("/ws/{g2}/")).await;
        (a, b, c)
    });
    wait_bound(&cg, 2.0);
    amqp_publish(&["--group", &g1, "--text", "from celery"]);
    amqp_publish(&[
        "--group",
        &g1,
        "--json",
        r#"{"type": "x.y", "text": "from json"}"#,
    ]);
    rt.block_on(async {
        assert_eq!(next_text(&mut a).await, "from celery");
        assert_eq!(next_text(&mut b).await, "from celery");
        assert_eq!(next_text(&mut a).await, "from json");
        quiet(&mut c).await;
    });
    assert_eq!(cg.metric("channelgate_broker_consumed_total"), 2.0);

    // The last member leaving unbinds the queue.
    drop(a);
    drop(b);
    wait_for("unbind", Duration::from_secs(10), || {
        cg.metric("channelgate_broker_bindings_total{op=\"unbind\",outcome=\"ok\"}") >= 1.0
    });
    let (status, body) = cg.admin("/readyz");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn two_instances_share_groups_exactly_once() {
    if !rabbitmq_available() {
        return;
    }
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "a", Bind::Tcp(free_port()));
    let one = start(dir.path(), &app);
    let two = start(dir.path(), &app);
    let g = unique("shared");
    let rt = rt();
    let (mut a, mut b) = rt.block_on(async {
        (
            connect(&one.addr(), &format!("/ws/{g}/")).await,
            connect(&two.addr(), &format!("/ws/{g}/")).await,
        )
    });
    wait_bound(&one, 1.0);
    wait_bound(&two, 1.0);
    assert_eq!(publish_admin(&one, &g, "via one"), 200);
    assert_eq!(publish_admin(&two, &g, "via two"), 200);
    rt.block_on(async {
        for ws in [&mut a, &mut b] {
            let mut got = vec![next_text(ws).await, next_text(ws).await];
            got.sort();
            assert_eq!(got, ["via one", "via two"]);
            quiet(ws).await; // exactly once: nothing more arrives
        }
    });
}

#[test]
fn garbage_on_the_queue_is_counted_and_survived() {
    if !rabbitmq_available() {
        return;
    }
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "a", Bind::Tcp(free_port()));
    let cg = start(dir.path(), &app);
    let g = unique("garbage");
    let rt = rt();
    let mut ws = rt.block_on(connect(&cg.addr(), &format!("/ws/{g}/")));
    wait_bound(&cg, 1.0);
    amqp_publish(&["--group", &g, "--raw-hex", "c1c1c1"]); // not msgpack
    amqp_publish(&["--group", &g, "--raw-hex", "9201 02"]); // a msgpack list
    amqp_publish(&["--group", &g, "--raw-hex", "810102"]); // map with an int key
    amqp_publish(&["--group", &g, "--raw-hex", "81a474797065a3782e79"]); // {"type": "x.y"}, no target
    amqp_publish(&["--group", &g, "--raw-size", "10485760"]); // 10 MiB
    amqp_publish(&[
        "--group",
        &g,
        "--raw-hex",
        "5b315d",
        "--content-type",
        "application/json",
    ]); // JSON [1]
    amqp_publish(&["--group", &g, "--text", "still alive"]);
    assert_eq!(rt.block_on(next_text(&mut ws)), "still alive");
    for kind in ["not_msgpack", "not_a_map", "non_string_key", "no_target"] {
        assert!(
            cg.metric(&format!(
                "channelgate_broker_decode_failures_total{{kind=\"{kind}\"}}"
            )) >= 1.0,
            "{kind} counted"
        );
    }
    let log = cg.proc.output();
    assert_eq!(
        log.matches("kind=not_msgpack").count(),
        1,
        "each kind is logged once:\n{log}"
    );
}

#[test]
fn daphne_consumers_and_channelgate_clients_share_a_group() {
    if !rabbitmq_available() {
        return;
    }
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "a", Bind::Tcp(free_port()));
    let cg = start(dir.path(), &app);
    let daphne_port = free_port();
    let mut cmd = std::process::Command::new(venv_bin("daphne"));
    cmd.current_dir(repo().join("tests/daphne_app")).args([
        "-b",
        "127.0.0.1",
        "-p",
        &daphne_port.to_string(),
        "daphneapp.asgi:application",
    ]);
    let _daphne = Proc::spawn("daphne", &mut cmd, dir.path());
    let daphne_addr = format!("127.0.0.1:{daphne_port}");
    wait_for("daphne", Duration::from_secs(30), || {
        std::net::TcpStream::connect(&daphne_addr).is_ok()
    });
    let g = unique("mixed");
    let rt = rt();
    let (mut on_daphne, mut on_cg) = rt.block_on(async {
        (
            connect(&daphne_addr, &format!("/ws/{g}/")).await,
            connect(&cg.addr(), &format!("/ws/{g}/")).await,
        )
    });
    wait_bound(&cg, 1.0);
    // The daphne consumer binds its queue in group_add before accept(); connected means bound.
    assert_eq!(publish_admin(&cg, &g, "from channelgate"), 200);
    rt.block_on(async {
        assert_eq!(next_text(&mut on_daphne).await, "from channelgate");
        assert_eq!(next_text(&mut on_cg).await, "from channelgate");
        // group_send from the daphne side (channels_rabbitmq) reaches the channelgate client.
        on_daphne
            .send(Message::Text("send:from daphne".into()))
            .await
            .unwrap();
        assert_eq!(next_text(&mut on_cg).await, "from daphne");
        assert_eq!(next_text(&mut on_daphne).await, "from daphne");
    });
}

#[test]
fn one_connection_is_addressed_by_its_channel_name() {
    if !rabbitmq_available() {
        return;
    }
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "a", Bind::Tcp(free_port()));
    let cg = start_amqp(dir.path(), &app, "inbound = { http = \"/ws/my-channel/\" }");
    let g = unique("chan");
    let rt = rt();
    let (mut me, mut other) = rt.block_on(async {
        (
            connect(&cg.addr(), &format!("/ws/{g}/")).await,
            connect(&cg.addr(), &format!("/ws/{g}/")).await,
        )
    });
    rt.block_on(me.send(Message::Text("who am i".into())))
        .unwrap();
    let channel = rt.block_on(next_text(&mut me));
    assert!(
        channel.starts_with("channels_") && channel.contains('!'),
        "{channel}"
    );
    // channels_rabbitmq's send(channel, msg), by hand, and channelgate's /send/{channel}.
    amqp_publish(&["--channel", &channel, "--text", "just for you"]);
    assert_eq!(rt.block_on(next_text(&mut me)), "just for you");
    let r = client()
        .post(format!("http://127.0.0.1:{}/send/{channel}", cg.admin_port))
        .body("again")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(rt.block_on(next_text(&mut me)), "again");
    rt.block_on(quiet(&mut other));
}

#[test]
fn a_message_rabbitmq_refuses_is_reported_as_507() {
    if !rabbitmq_available() {
        return;
    }
    let dir = tempdir();
    let app = Gunicorn::start(dir.path(), "a", Bind::Tcp(free_port()));
    let cg = start(dir.path(), &app);
    let g = unique("full");
    // Another layer's queue for the same group, full and not consumed: RabbitMQ rejects
    // publishes routed to it (x-overflow = reject-publish), and confirms with a nack.
    let queue = format!("{g}-stuck");
    let script = format!(
        "import pika\nc = pika.BlockingConnection(pika.URLParameters('amqp://guest:guest@127.0.0.1:5672/%2f'))\nch = c.channel()\nch.queue_declare('{queue}', auto_delete=True, arguments={{'x-max-length': 1, 'x-overflow': 'reject-publish'}})\nch.queue_bind('{queue}', 'groups', routing_key='{g}')\nprint('bound', flush=True)\nimport time; time.sleep(30)\n"
    );
    let mut cmd = std::process::Command::new(venv_bin("python"));
    cmd.args(["-c", &script]);
    let holder = Proc::spawn("stuck-queue", &mut cmd, dir.path());
    wait_for("stuck queue bound", Duration::from_secs(15), || {
        holder.output().contains("bound")
    });
    assert_eq!(publish_admin(&cg, &g, "fills the stuck queue"), 200);
    let r = client()
        .post(format!("http://127.0.0.1:{}/publish/{g}", cg.admin_port))
        .body("refused")
        .send()
        .unwrap();
    assert_eq!(r.status(), 507, "RabbitMQ's refusal reaches the publisher");
    assert!(r.text().unwrap().contains("refused"));
    assert_eq!(
        cg.metric("channelgate_broker_published_total{outcome=\"refused\"}"),
        1.0
    );
}
