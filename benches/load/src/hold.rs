//! `connect` and `hold`: open N connections, report connect times; `hold` keeps them open
//! (answering pings, counting anything received) for S seconds or until SIGINT/SIGTERM.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::clients::{self, Client, ClientOpts};
use crate::raw::{Recv, WireStats};
use crate::util::{self, parse_duration};

#[derive(Args, Debug)]
pub struct HoldArgs {
    #[command(flatten)]
    pub client: ClientOpts,

    /// How long to keep the connections open after READY.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub seconds: Duration,
}

struct HoldOut {
    frames: u64,
    /// What the raw client counted (--raw, --deflate).
    wire: Option<WireStats>,
    /// Why the connection ended before the stop, if it did.
    ended: Option<String>,
}

async fn body(mut c: Client) -> HoldOut {
    let mut out = HoldOut {
        frames: 0,
        wire: None,
        ended: None,
    };
    loop {
        tokio::select! {
            _ = c.stop.wait_for(|s| *s) => break,
            m = c.ws.recv() => match m {
                Recv::Eof => { out.ended = Some("eof".into()); break; }
                Recv::Error(e) => { out.ended = Some(e.chars().take(60).collect()); break; }
                Recv::Close(code) => { out.ended = Some(format!("close {code}")); break; }
                Recv::Data(_) | Recv::Compressed => out.frames += 1,
            }
        }
    }
    if out.ended.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.ws.close()).await;
    }
    out.wire = c.ws.wire().cloned();
    let _ = c.index;
    out
}

pub fn short_err(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Io(io) => format!("io {:?}", io.kind()),
        E::ConnectionClosed | E::AlreadyClosed => "closed".into(),
        E::Protocol(p) => format!("protocol: {p}").chars().take(60).collect(),
        other => other.to_string().chars().take(60).collect(),
    }
}

/// `connect` (hold = None: close right after READY) and `hold`.
pub async fn run(opts: &ClientOpts, hold: Option<Duration>) -> Result<(), String> {
    let mode = if hold.is_some() { "hold" } else { "connect" };
    let t0 = Instant::now();
    let (phase, handles, stop) = clients::open_all(opts, body).await?;
    let connect_wall = t0.elapsed();
    let held_from = Instant::now();
    let mut interrupted = false;
    if let Some(d) = hold {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = clients::terminated() => { interrupted = true; }
        }
    }
    let held = held_from.elapsed();
    let _ = stop.send(true);
    let (outs, late) = clients::collect(handles, Duration::from_secs(15)).await;
    let mut ended: BTreeMap<String, u64> = BTreeMap::new();
    let mut frames = 0;
    let mut wire: Option<WireStats> = None;
    for o in &outs {
        frames += o.frames;
        if let Some(w) = &o.wire {
            wire.get_or_insert_with(WireStats::default).add(w);
        }
        if let Some(e) = &o.ended {
            *ended.entry(e.clone()).or_default() += 1;
        }
    }
    let ended_total: u64 = ended.values().sum();
    let mut params = clients::client_params(opts);
    if let Some(d) = hold {
        params["seconds"] = json!(d.as_secs_f64());
    }
    util::emit(&json!({
        "tool": "cg-load",
        "mode": mode,
        "label": opts.label,
        "timestamp_ns": util::now_ns(),
        "params": params,
        "connect": clients::connect_report(opts, &phase, connect_wall),
        "results": {
            "held_s": util::round3(held.as_secs_f64()),
            "interrupted": interrupted,
            "ended_early": ended_total,
            "ended_early_by": ended,
            "open_at_end": outs.len() as u64 - ended_total,
            "frames_received": frames,
            "late_tasks": late,
            "wire": wire.as_ref().map(crate::fanout::wire_json),
        },
        "client_process": {
            "cpu_s": util::round3(util::self_cpu_seconds()),
            "peak_rss_kib": util::self_peak_rss_kib(),
        },
    }));
    Ok(())
}
