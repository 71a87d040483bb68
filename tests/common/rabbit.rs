//! Dedicated RabbitMQ nodes (tests/peers/rabbitmq_node.sh) for tests that stop, kill or
//! cluster RabbitMQ. The shared node on 127.0.0.1:5672 is never touched: each node has its
//! own name, AMQP and distribution ports, data directory and Erlang cookie.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{repo, wait_for};

/// One dedicated node; stopped when dropped.
pub struct RabbitNode {
    pub port: u16,
    dir: PathBuf,
}

fn script() -> PathBuf {
    repo().join("tests/peers/rabbitmq_node.sh")
}

/// Whether a dedicated node can be started here. Under CI its absence fails the test;
/// elsewhere the test is skipped with a loud message.
pub fn rabbitmq_installed() -> bool {
    let installed = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server").exists()
        || Command::new("sh")
            .args(["-c", "command -v rabbitmq-server"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "rabbitmq-server is not installed and CI is set: the outage and cluster tests must run (scripts/setup installs it)"
        );
        eprintln!("\n********\n*** SKIPPED: rabbitmq-server is not installed; run scripts/setup ***\n********\n");
    }
    installed
}

/// An AMQP port whose distribution port (+10000) is free too, away from the shared node
/// and the ephemeral range other tests draw from.
fn node_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let seed = (std::process::id() % 500) as u16 * 17;
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 21000 + (seed.wrapping_add(n.wrapping_mul(7))) % 9000;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10000) {
            return port;
        }
    }
    panic!("no free port pair for a RabbitMQ node");
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(script())
        .arg(args[0])
        .arg(dir)
        .args(&args[1..])
        .output()
        .expect("run tests/peers/rabbitmq_node.sh")
}

fn check(what: &str, out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "rabbitmq_node.sh {what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RabbitNode {
    /// Starts a node with its data under `dir` (nodes of one `dir` can form a cluster);
    /// returns once it accepts AMQP connections.
    pub fn start(dir: &Path) -> RabbitNode {
        let node = RabbitNode {
            port: node_port(),
            dir: dir.to_path_buf(),
        };
        node.boot();
        node
    }

    /// Starts the node again (after [`kill9`](Self::kill9) or [`stop`](Self::stop)).
    pub fn boot(&self) {
        let port = self.port.to_string();
        check("start", run(&self.dir, &["start", &port]));
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Runs `rabbitmqctl args` against this node.
    pub fn ctl(&self, args: &[&str]) -> String {
        let port = self.port.to_string();
        let mut all = vec!["ctl", &port];
        all.extend_from_slice(args);
        check(&args.join(" "), run(&self.dir, &all))
    }

    /// `rabbitmqctl stop_app`, then waits until the AMQP port refuses connections.
    pub fn stop_app(&self) {
        self.ctl(&["stop_app"]);
        self.wait_closed();
    }

    /// `rabbitmqctl start_app` (returns once the app runs).
    pub fn start_app(&self) {
        self.ctl(&["start_app"]);
    }

    /// Kills the node's Erlang VM with SIGKILL, as a crash or the OOM killer would.
    pub fn kill9(&self) {
        let port = self.port.to_string();
        let pid = check("pid", run(&self.dir, &["pid", &port]));
        let ok = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -9 of RabbitMQ node {} failed", pid.trim());
        self.wait_closed();
    }

    /// Makes this (started) node join `seed`'s cluster.
    pub fn join(&self, seed: &RabbitNode) {
        let (port, seed) = (self.port.to_string(), seed.port.to_string());
        check("join", run(&self.dir, &["join", &port, &seed]));
    }

    fn wait_closed(&self) {
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for("RabbitMQ node port closed", Duration::from_secs(60), || {
            std::net::TcpStream::connect(&addr).is_err()
        });
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let _ = run(&self.dir, &["stop", &self.port.to_string()]);
    }
}
