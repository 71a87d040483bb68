//! Small shared pieces: durations, loopback checks, percentiles, clocks, JSON output.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// "250ms", "5s", "2m", "1h", or a bare number of seconds ("1.5").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; write it like 250ms, 5s, 2m"))?;
    if !(0.0..=86400.0).contains(&(v * mult)) {
        return Err(format!("`{s}`: durations must be between 0 and 24h"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

/// "Name: value" or "Name:value".
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once(':')
        .ok_or_else(|| format!("header `{s}` must look like Name:value"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("header `{s}` has an empty name"));
    }
    Ok((k.to_string(), v.trim().to_string()))
}

/// Resolves host:port and insists that every address is on 127.0.0.0/8 (or ::1):
/// this tool only ever sends traffic to the local machine.
pub fn loopback_addr(host: &str, port: u16) -> Result<SocketAddr, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else if host.eq_ignore_ascii_case("localhost") {
        vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)]
    } else {
        (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect()
    };
    let ok = |a: &SocketAddr| match a.ip() {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => v6.is_loopback(),
    };
    match addrs.iter().find(|a| ok(a)) {
        Some(a) if addrs.iter().all(ok) => Ok(*a),
        _ => Err(format!(
            "{host}:{port} is not a loopback address; cg-load only sends traffic to 127.0.0.0/8"
        )),
    }
}

/// Splits "scheme://[user@]host[:port]/rest" into (scheme, host, port, rest starting with '/').
pub fn split_url(url: &str, default_port: u16) -> Result<(String, String, u16, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not a URL (scheme://host:port/path)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(stripped) = hostport.strip_prefix('[') {
        let (h, after) = stripped
            .split_once(']')
            .ok_or_else(|| format!("bad IPv6 host in `{url}`"))?;
        let port = after.strip_prefix(':').map(|p| p.parse::<u16>());
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.parse::<u16>())),
            None => (hostport.to_string(), None),
        }
    };
    let port = match port {
        None => default_port,
        Some(Ok(p)) => p,
        Some(Err(_)) => return Err(format!("bad port in `{url}`")),
    };
    Ok((scheme.to_ascii_lowercase(), host, port, path.to_string()))
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summary of nanosecond samples, in milliseconds. Sorts `v`.
pub fn summary_ms(v: &mut [u64]) -> Value {
    v.sort_unstable();
    let ms = |ns: u64| round3(ns as f64 / 1e6);
    let mean = if v.is_empty() {
        0.0
    } else {
        v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 / 1e6
    };
    json!({
        "count": v.len(),
        "p50": ms(pct(v, 50.0)),
        "p90": ms(pct(v, 90.0)),
        "p95": ms(pct(v, 95.0)),
        "p99": ms(pct(v, 99.0)),
        "p999": ms(pct(v, 99.9)),
        "max": ms(v.last().copied().unwrap_or(0)),
        "mean": round3(mean),
    })
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat.
pub fn self_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the ")" that ends the command name; utime and stime are fields 14, 15.
    let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else {
        return 0.0;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // f[0] is field 3 (state): utime = field 14 -> f[11], stime = field 15 -> f[12].
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of this process in KiB (VmHWM).
pub fn self_peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Writes `content` to `path` atomically (temporary file, then rename).
pub fn write_atomic(path: &Path, content: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp-cg-load");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

/// Prints the run's one JSON line on stdout.
pub fn emit(v: &Value) {
    println!("{}", serde_json::to_string(v).unwrap_or_else(|_| "{}".into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn loopback_only() {
        assert!(loopback_addr("127.0.0.1", 80).is_ok());
        assert!(loopback_addr("127.3.4.5", 80).is_ok());
        assert!(loopback_addr("localhost", 80).is_ok());
        assert!(loopback_addr("::1", 80).is_ok());
        assert!(loopback_addr("10.0.0.1", 80).is_err());
        assert!(loopback_addr("8.8.8.8", 80).is_err());
    }

    #[test]
    fn urls() {
        let (s, h, p, r) = split_url("ws://127.0.0.1:8000/ws/g/", 80).unwrap();
        assert_eq!(
            (s.as_str(), h.as_str(), p, r.as_str()),
            ("ws", "127.0.0.1", 8000, "/ws/g/")
        );
        let (_, h, p, r) = split_url("amqp://guest:guest@127.0.0.1:5672/%2f", 5672).unwrap();
        assert_eq!((h.as_str(), p, r.as_str()), ("127.0.0.1", 5672, "/%2f"));
        let (_, h, p, _) = split_url("http://localhost", 80).unwrap();
        assert_eq!((h.as_str(), p), ("localhost", 80));
    }

    #[test]
    fn percentiles() {
        let mut v: Vec<u64> = (1..=100).map(|x| x * 1_000_000).collect();
        let s = summary_ms(&mut v);
        assert_eq!(s["p50"], 50.0);
        assert_eq!(s["p99"], 99.0);
        assert_eq!(s["max"], 100.0);
    }
}
