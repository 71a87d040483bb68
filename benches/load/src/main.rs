//! cg-load: the WebSocket load tool behind channelgate's benchmarks (benches/fanout,
//! benches/idle). Every mode prints exactly one JSON line on stdout at the end; client
//! modes print a `READY` line first, once every connection attempt has finished.
//!
//!   cg-load connect --url ws://127.0.0.1:8000/ws/g/ -n 10000
//!   cg-load hold    --url ws://127.0.0.1:8000/ws/g/ -n 10000 --seconds 30 --ready-file /tmp/r
//!   cg-load fanout  --url ws://127.0.0.1:8000/ws/g/ -n 1000 -m 100 --ready-file /tmp/r
//!   cg-load fanout  --url ws://127.0.0.1:8000/ws/g/ -n 1000 -m 100 --deflate   (raw client, offers deflate)
//!   cg-load publish --target http-admin --admin http://127.0.0.1:9100 --group g -m 100 --rate 100
//!   cg-load publish --target amqp --group g -m 100
//!   cg-load publish --target http-admin --group g -m 1000 --rate 100 --payload awx
//!   cg-load publish --target http-post --post-url http://127.0.0.1:8080/pub/{group} --group g
//!   cg-load publish --target pushpin --pushpin-url http://127.0.0.1:5561/publish/ --group g
//!
//! Only loopback addresses (127.0.0.0/8, ::1) are accepted as targets.

mod awx;
mod clients;
mod fanout;
mod hold;
mod publish;
mod raw;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cg-load",
    version,
    about = "WebSocket fan-out / idle load tool for channelgate benchmarks (loopback only)"
)]
struct Cli {
    /// Tokio worker threads (default: one per CPU).
    #[arg(long, global = true)]
    threads: Option<usize>,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Open N connections, report connect times and failures, close them.
    Connect(clients::ClientOpts),
    /// Open N connections and keep them idle for --seconds (memory per connection).
    Hold(hold::HoldArgs),
    /// Open N connections, then count messages until each client has M.
    Fanout(fanout::FanoutArgs),
    /// Publish M timestamped messages: channelgate's admin API, RabbitMQ, or an HTTP POST URL (nchan).
    Publish(publish::PublishArgs),
}

fn main() {
    let cli = Cli::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = cli.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cg-load: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let res = rt.block_on(async {
        match &cli.cmd {
            Cmd::Connect(o) => hold::run(o, None).await,
            Cmd::Hold(a) => hold::run(&a.client, Some(a.seconds)).await,
            Cmd::Fanout(a) => fanout::run(a).await,
            Cmd::Publish(a) => publish::run(a).await,
        }
    });
    // Do not wait for stragglers (e.g. connections still closing).
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Err(e) = res {
        eprintln!("cg-load: {e}");
        std::process::exit(1);
    }
}
