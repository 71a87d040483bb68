//! `scripts/demo` stops what it started when it gets SIGTERM or SIGINT itself (not only
//! its process group): channelgate drains, gunicorn stops, and the demo's ports are free
//! again. It runs the test binary's channelgate (CHANNELGATE_DEMO_BIN) rather than
//! building a release one.

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

const PORTS: [u16; 3] = [8000, 8050, 9100];

fn taken(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn the_demo_stops_channelgate_and_gunicorn_on_sigterm_and_sigint() {
    if PORTS.iter().any(|p| taken(*p)) {
        assert!(
            std::env::var_os("CI").is_none(),
            "the demo's ports {PORTS:?} are in use and CI is set"
        );
        eprintln!(
            "\n********\n*** SKIPPED: one of the demo's ports {PORTS:?} is in use ***\n********\n"
        );
        return;
    }
    let dir = tempdir();
    for sig in ["TERM", "INT"] {
        let mut cmd = Command::new(repo().join("scripts/demo"));
        cmd.env("CHANNELGATE_DEMO_BIN", env!("CARGO_BIN_EXE_channelgate"));
        let mut demo = Proc::spawn(&format!("demo-{sig}"), &mut cmd, dir.path());
        wait_for("the demo serving", Duration::from_secs(60), || {
            assert!(demo.is_running(), "the demo exited:\n{}", demo.output());
            http_get_raw("127.0.0.1:9100", "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
                && taken(8000)
        });
        // The script only, as `kill $!` would: not its process group.
        demo.signal(sig);
        let exit = demo.wait_exit(Duration::from_secs(60));
        assert_eq!(
            exit.code(),
            Some(0),
            "SIG{sig}: channelgate drained\n{}",
            demo.output()
        );
        for p in PORTS {
            assert!(
                !taken(p),
                "SIG{sig}: port {p} still taken after the demo exited\n{}",
                demo.output()
            );
        }
        assert!(
            demo.output().contains("stopping gunicorn"),
            "{}",
            demo.output()
        );
    }
}
