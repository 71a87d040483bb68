//! `fanout`: N clients count the messages they receive until each has M (or a deadline,
//! or nothing arrived for a while), and report deliveries/s, loss and publish→receive
//! latency. A message's text starts with "<ns since the epoch> <seq> " (what `publish`
//! sends) or is a JSON object with "t" (ns) and optionally "seq" (`publish --payload
//! awx` puts them first). With the raw client (--raw, --deflate) the JSON line also has
//! `wire`: every frame's bytes as received, and the bytes per delivery.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use crate::clients::{self, Client, ClientOpts};
use crate::raw::{Recv, WireStats};
use crate::util::{self, now_ns, parse_duration, round3};

#[derive(Args, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub client: ClientOpts,

    /// Messages each client expects (M).
    #[arg(short = 'm', long, default_value_t = 100)]
    pub messages: u64,

    /// Give up this long after READY even if messages are missing.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Once messages have started arriving, stop when none has arrived for this long
    /// (lost messages would otherwise hold the run until --duration). 0s: never.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
}

#[derive(Default)]
struct Shared {
    done: AtomicUsize,
    ended: AtomicUsize,
    received: AtomicU64,
    last_recv_ns: AtomicU64,
}

#[derive(Default)]
struct RxStats {
    frames: u64,
    unique: u64,
    duplicates: u64,
    out_of_order: u64,
    unparsable: u64,
    beyond_m: u64,
    /// Compressed messages this client counted without inflating (--inflate-every).
    not_inflated: u64,
    /// The highest sequence number seen so far, plus one (0: none yet).
    high: u64,
    lat_ns: Vec<u64>,
    first_sent_ns: u64,
    first_recv_ns: u64,
    last_recv_ns: u64,
    ended: Option<String>,
    wire: Option<WireStats>,
}

/// The digits right after `key` (e.g. `"t":`) in `text`, spaces allowed in between.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let i = text.find(key)? + key.len();
    let rest = text[i..].trim_start();
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// (sender timestamp ns, sequence number) from a message text.
pub fn parse_payload(text: &str) -> Option<(u64, Option<u64>)> {
    let t = text.trim_start();
    if t.starts_with('{') {
        // Fast path for the texts `publish --payload awx` sends: {"t": <ns>, "seq": <n>, ...
        // (a full JSON parse of a 2 KB event per delivery would cost the clients dearly).
        if t[1..].trim_start().starts_with("\"t\":") {
            let ts = number_after(t, "\"t\":")?;
            let head = t.get(..64).unwrap_or(t);
            return Some((ts, number_after(head, "\"seq\":")));
        }
        let v: serde_json::Value = serde_json::from_str(t).ok()?;
        let ts = v.get("t")?.as_u64()?;
        return Some((ts, v.get("seq").and_then(|s| s.as_u64())));
    }
    let mut it = t.splitn(3, ' ');
    let ts = it.next()?.parse::<u64>().ok()?;
    let seq = it.next().and_then(|s| s.parse::<u64>().ok());
    Some((ts, seq))
}

/// A message that cannot be read (left compressed): it counts as delivered.
fn count_opaque(st: &mut RxStats) {
    let now = now_ns();
    st.frames += 1;
    if st.first_recv_ns == 0 {
        st.first_recv_ns = now;
    }
    st.last_recv_ns = now;
    st.unique += 1;
}

fn record(st: &mut RxStats, seen: &mut [u64], m: u64, text: &str) -> bool {
    let now = now_ns();
    st.frames += 1;
    if st.first_recv_ns == 0 {
        st.first_recv_ns = now;
    }
    st.last_recv_ns = now;
    let Some((ts, seq)) = parse_payload(text) else {
        st.unparsable += 1;
        return false;
    };
    if st.first_sent_ns == 0 || ts < st.first_sent_ns {
        st.first_sent_ns = ts;
    }
    st.lat_ns.push(now.saturating_sub(ts));
    match seq {
        Some(s) if s < m => {
            let (w, b) = ((s / 64) as usize, s % 64);
            if seen[w] & (1 << b) != 0 {
                st.duplicates += 1;
                return false;
            }
            seen[w] |= 1 << b;
            // Arriving after a higher sequence number: out of order (a loss does not count).
            if s + 1 < st.high {
                st.out_of_order += 1;
            }
            st.high = st.high.max(s + 1);
            st.unique += 1;
            true
        }
        Some(_) => {
            st.beyond_m += 1;
            false
        }
        None => {
            st.unique += 1;
            true
        }
    }
}

async fn body(mut c: Client, m: u64, shared: Arc<Shared>) -> RxStats {
    let mut st = RxStats {
        lat_ns: Vec::with_capacity(m.min(100_000) as usize),
        ..Default::default()
    };
    let mut seen = vec![0u64; m.div_ceil(64) as usize];
    let mut done = false;
    loop {
        tokio::select! {
            _ = c.stop.wait_for(|s| *s) => break,
            msg = c.ws.recv() => {
                let payload = match msg {
                    Recv::Data(b) => b,
                    Recv::Compressed => {
                        // Not inflated: one delivery, without a timestamp or sequence number.
                        st.not_inflated += 1;
                        count_opaque(&mut st);
                        shared.received.fetch_add(1, Ordering::Relaxed);
                        shared.last_recv_ns.fetch_max(st.last_recv_ns, Ordering::Relaxed);
                        if !done && st.unique >= m {
                            done = true;
                            shared.done.fetch_add(1, Ordering::SeqCst);
                        }
                        continue;
                    }
                    Recv::Close(code) => { st.ended = Some(format!("close {code}")); break; }
                    Recv::Error(e) => { st.ended = Some(e.chars().take(60).collect()); break; }
                    Recv::Eof => { st.ended = Some("eof".into()); break; }
                };
                let text = String::from_utf8_lossy(&payload);
                let counted = record(&mut st, &mut seen, m, &text);
                shared.received.fetch_add(1, Ordering::Relaxed);
                shared.last_recv_ns.fetch_max(st.last_recv_ns, Ordering::Relaxed);
                if counted && !done && st.unique >= m {
                    done = true;
                    shared.done.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }
    if st.ended.is_some() {
        shared.ended.fetch_add(1, Ordering::SeqCst);
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.ws.close()).await;
    }
    st.wire = c.ws.wire().cloned();
    st
}

/// The `wire` part of the JSON line: what the raw clients counted.
pub fn wire_json(w: &WireStats) -> Value {
    json!({
        "handshake_bytes": w.handshake_bytes,
        "data_frames": w.data_frames,
        "data_bytes": w.data_bytes,
        "control_frames": w.control_frames,
        "control_bytes": w.control_bytes,
        "messages": w.messages,
        "compressed_messages": w.compressed_messages,
        "message_bytes": w.message_bytes,
        "not_inflated": w.not_inflated,
        "inflate_errors": w.inflate_errors,
    })
}

pub async fn run(a: &FanoutArgs) -> Result<(), String> {
    if a.messages == 0 || a.messages > 10_000_000 {
        return Err("--messages must be 1..=10000000".into());
    }
    let shared = Arc::new(Shared::default());
    let m = a.messages;
    let sh = shared.clone();
    let t0 = Instant::now();
    let (phase, handles, stop) = clients::open_all(&a.client, move |c| body(c, m, sh.clone())).await?;
    let connect_wall = t0.elapsed();
    let connected = phase.connected.load(Ordering::SeqCst);

    // Wait for: every client complete (or ended), the deadline, idle after traffic, or a signal.
    let ready_at = Instant::now();
    let deadline = ready_at + a.duration;
    let stop_reason;
    let term = clients::terminated();
    tokio::pin!(term);
    loop {
        let done = shared.done.load(Ordering::SeqCst);
        let ended = shared.ended.load(Ordering::SeqCst);
        if connected == 0 {
            stop_reason = "no connections";
            break;
        }
        if done + ended >= connected {
            stop_reason = if ended == 0 { "complete" } else { "complete or closed" };
            break;
        }
        if Instant::now() >= deadline {
            stop_reason = "deadline";
            break;
        }
        let last = shared.last_recv_ns.load(Ordering::Relaxed);
        if !a.idle_timeout.is_zero() && last > 0 && now_ns().saturating_sub(last) > a.idle_timeout.as_nanos() as u64 {
            stop_reason = "idle timeout";
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = &mut term => { stop_reason = "signal"; break; }
        }
    }
    let waited = ready_at.elapsed();
    let _ = stop.send(true);
    let (outs, late) = clients::collect(handles, Duration::from_secs(20)).await;

    let expected = connected as u64 * m;
    let (mut frames, mut unique, mut dups, mut ooo, mut unparsable, mut beyond) = (0, 0, 0, 0, 0, 0);
    let mut not_inflated = 0;
    let (mut first_sent, mut first_recv, mut last_recv) = (u64::MAX, u64::MAX, 0u64);
    let (mut min_c, mut max_c, mut complete) = (u64::MAX, 0u64, 0u64);
    let mut ended: BTreeMap<String, u64> = BTreeMap::new();
    let mut lat = Vec::with_capacity(outs.iter().map(|o| o.lat_ns.len()).sum());
    let mut wire: Option<WireStats> = None;
    for o in &outs {
        if let Some(w) = &o.wire {
            wire.get_or_insert_with(WireStats::default).add(w);
        }
        frames += o.frames;
        unique += o.unique;
        dups += o.duplicates;
        ooo += o.out_of_order;
        unparsable += o.unparsable;
        beyond += o.beyond_m;
        not_inflated += o.not_inflated;
        if o.first_sent_ns > 0 {
            first_sent = first_sent.min(o.first_sent_ns);
        }
        if o.first_recv_ns > 0 {
            first_recv = first_recv.min(o.first_recv_ns);
        }
        last_recv = last_recv.max(o.last_recv_ns);
        min_c = min_c.min(o.unique);
        max_c = max_c.max(o.unique);
        if o.unique >= m {
            complete += 1;
        }
        if let Some(e) = &o.ended {
            *ended.entry(e.clone()).or_default() += 1;
        }
        lat.extend_from_slice(&o.lat_ns);
    }
    if outs.is_empty() {
        min_c = 0;
    }
    let span = |a: u64, b: u64| {
        if b > a && a != u64::MAX {
            (b - a) as f64 / 1e9
        } else {
            0.0
        }
    };
    let send_to_last = span(first_sent, last_recv);
    let recv_window = span(first_recv, last_recv);
    let rate = |n: u64, s: f64| if s > 0.0 { round3(n as f64 / s) } else { 0.0 };
    let lost = expected.saturating_sub(unique);
    let wire = wire.map(|w| {
        let mut v = wire_json(&w);
        let per = |x: u64, n: u64| {
            if n > 0 {
                round3(x as f64 / n as f64)
            } else {
                0.0
            }
        };
        // Per delivery: every data frame's bytes (header + payload as received) over the
        // messages counted as delivered; per message: over every message received.
        v["data_bytes_per_delivery"] = json!(per(w.data_bytes, unique));
        v["data_bytes_per_message"] = json!(per(w.data_bytes, w.messages));
        v["message_bytes_per_message"] = json!(per(w.message_bytes, w.messages - w.not_inflated));
        v["compressed_pct"] = json!(if w.messages > 0 {
            round3(100.0 * w.compressed_messages as f64 / w.messages as f64)
        } else {
            0.0
        });
        v
    });
    util::emit(&json!({
        "tool": "cg-load",
        "mode": "fanout",
        "label": a.client.label,
        "timestamp_ns": now_ns(),
        "params": {
            "client": clients::client_params(&a.client),
            "messages": m,
            "duration_s": a.duration.as_secs_f64(),
            "idle_timeout_s": a.idle_timeout.as_secs_f64(),
        },
        "connect": clients::connect_report(&a.client, &phase, connect_wall),
        "results": {
            "stop": stop_reason,
            "waited_s": round3(waited.as_secs_f64()),
            "expected": expected,
            "delivered": unique,
            "lost": lost,
            "loss_pct": if expected > 0 { round3(100.0 * lost as f64 / expected as f64) } else { 0.0 },
            "frames": frames,
            "duplicates": dups,
            "out_of_order": ooo,
            "unparsable": unparsable,
            "seq_beyond_m": beyond,
            // Counted as delivered without a timestamp or sequence number (--inflate-every).
            "not_inflated": not_inflated,
            "clients_complete": complete,
            "clients_incomplete": connected as u64 - complete,
            "per_client_min": min_c,
            "per_client_max": max_c,
            "ended_early": ended.values().sum::<u64>(),
            "ended_early_by": ended,
            "late_tasks": late,
            "first_send_to_last_recv_s": round3(send_to_last),
            "recv_window_s": round3(recv_window),
            "deliveries_per_s": rate(unique, send_to_last),
            "deliveries_per_s_recv_window": rate(unique, recv_window),
            "latency_ms": util::summary_ms(&mut lat),
            "wire": wire,
        },
        "client_process": {
            "cpu_s": round3(util::self_cpu_seconds()),
            "peak_rss_kib": util::self_peak_rss_kib(),
        },
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(parse_payload("123 7 xxxx"), Some((123, Some(7))));
        assert_eq!(parse_payload("123 hello"), Some((123, None)));
        assert_eq!(parse_payload("123"), Some((123, None)));
        assert_eq!(parse_payload(r#"{"t": 5, "seq": 2}"#), Some((5, Some(2))));
        assert_eq!(parse_payload(r#"{"t":5,"seq":2,"x":"\"t\": 9"}"#), Some((5, Some(2))));
        assert_eq!(parse_payload(r#"{"seq": 2, "t": 5}"#), Some((5, Some(2))));
        assert_eq!(parse_payload(r#"{"t": 5, "type": "job_event"}"#), Some((5, None)));
        assert_eq!(parse_payload("hello"), None);
    }

    #[test]
    fn counting() {
        let mut st = RxStats::default();
        let mut seen = vec![0u64; 1];
        assert!(record(&mut st, &mut seen, 3, "1 1 x"));
        assert!(record(&mut st, &mut seen, 3, "1 0 x"));
        assert!(!record(&mut st, &mut seen, 3, "1 0 x"));
        assert!(record(&mut st, &mut seen, 3, "1 2 x"));
        assert!(!record(&mut st, &mut seen, 3, "1 9 x"));
        assert_eq!((st.unique, st.duplicates, st.out_of_order, st.beyond_m), (3, 1, 1, 1));
    }
}
