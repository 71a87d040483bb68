//! Client timeouts and connection limits (`[server]` keys), enforced where a client
//! connection enters: [`edge::Edge`] accepts it, admits it or refuses it, reads every
//! request head itself under `header_timeout` / `keepalive_timeout`, and only then hands
//! the request to Pingora. What nginx does with `client_header_timeout`,
//! `keepalive_timeout`, `keepalive_requests`, `client_body_timeout`, `send_timeout`,
//! `worker_connections` and `limit_conn`.

pub mod edge;
pub mod h2;
mod head;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::values;
use crate::config::{Errors, KeyPath};
use crate::metrics::EdgeMetrics;

/// How long a client may take, and how many connections it may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// The whole request head must arrive within this, counted from accept (first
    /// request) or from its first byte (later requests): else 408 and close. Also bounds a
    /// WebSocket's opening request. Default 60s (nginx `client_header_timeout`).
    pub header_timeout: Duration,
    /// An idle keep-alive connection is closed after this. Default 75s; 0 turns
    /// keep-alive off (nginx `keepalive_timeout`).
    pub keepalive_timeout: Duration,
    /// Requests served on one connection before it is closed. Default 1000 (nginx
    /// `keepalive_requests`).
    pub keepalive_requests: u32,
    /// Longest wait between two reads of a request body: else 408 and close. Default 60s
    /// (nginx `client_body_timeout`).
    pub body_timeout: Duration,
    /// Longest wait between two successful writes of a response to a client: else the
    /// connection is closed. Default 60s (nginx `send_timeout`).
    pub send_timeout: Duration,
    /// Open client connections (WebSockets included); more are refused at once. Default
    /// 90% of the process's open-files limit (nginx `worker_connections`).
    pub max_connections: usize,
    /// Open connections per client address; `None` (the default) is unlimited (nginx
    /// `limit_conn` with a `$binary_remote_addr` zone).
    pub max_connections_per_ip: Option<usize>,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            keepalive_requests: 1000,
            body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_connections: default_max_connections(),
            max_connections_per_ip: None,
        }
    }
}

/// The `[server]` keys of [`ClientLimits`] as written.
#[derive(Default)]
pub(crate) struct RawClientLimits {
    pub header_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub keepalive_requests: Option<u32>,
    pub body_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
}

impl RawClientLimits {
    pub(crate) fn validate(self, path: &KeyPath, errs: &mut Errors) -> ClientLimits {
        let d = ClientLimits::default();
        let dur = |raw: Option<String>, key: &str, default, zero, errs: &mut Errors| {
            values::duration(raw.as_deref(), default, zero, &path.key(key), errs)
        };
        let at_least_one = |v: Option<usize>, key: &str, errs: &mut Errors| match v {
            Some(0) => {
                errs.add(&path.key(key), "must be at least 1");
                None
            }
            v => v,
        };
        let keepalive_requests = match self.keepalive_requests {
            Some(0) => {
                errs.add(&path.key("keepalive_requests"), "must be at least 1");
                d.keepalive_requests
            }
            v => v.unwrap_or(d.keepalive_requests),
        };
        ClientLimits {
            header_timeout: dur(
                self.header_timeout,
                "header_timeout",
                d.header_timeout,
                false,
                errs,
            ),
            keepalive_timeout: dur(
                self.keepalive_timeout,
                "keepalive_timeout",
                d.keepalive_timeout,
                true,
                errs,
            ),
            keepalive_requests,
            body_timeout: dur(
                self.body_timeout,
                "body_timeout",
                d.body_timeout,
                false,
                errs,
            ),
            send_timeout: dur(
                self.send_timeout,
                "send_timeout",
                d.send_timeout,
                false,
                errs,
            ),
            max_connections: at_least_one(self.max_connections, "max_connections", errs)
                .unwrap_or(d.max_connections),
            max_connections_per_ip: at_least_one(
                self.max_connections_per_ip,
                "max_connections_per_ip",
                errs,
            ),
        }
    }
}

/// 90% of the soft open-files limit (from /proc/self/limits), so that accepting never
/// stalls on "Too many open files": the rest is left for upstream connections, temp
/// files and logs. 921 when the limit cannot be read (90% of the usual 1024).
pub fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<usize>().ok())
        })
        .unwrap_or(1024);
    (soft / 10 * 9).max(1)
}

/// Why a connection was refused: the `reason` label of
/// `channelgate_connections_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    MaxConnectionsPerIp,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerIp => "max_connections_per_ip",
        }
    }
}

/// Counts open client connections, overall and per address.
pub struct Admission {
    max: usize,
    max_per_ip: Option<usize>,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    metrics: EdgeMetrics,
}

impl Admission {
    pub fn new(limits: &ClientLimits, metrics: EdgeMetrics) -> Arc<Admission> {
        Arc::new(Admission {
            max: limits.max_connections,
            max_per_ip: limits.max_connections_per_ip,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// A permit for one more connection from `ip`, held for the connection's life.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Permit, Refusal> {
        let prev = self.open.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::MaxConnections);
        }
        let counted_ip = match (self.max_per_ip, ip) {
            (Some(max), Some(ip)) => {
                let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
                let n = map.entry(ip).or_insert(0);
                if *n >= max {
                    drop(map);
                    self.open.fetch_sub(1, Ordering::AcqRel);
                    return Err(Refusal::MaxConnectionsPerIp);
                }
                *n += 1;
                Some(ip)
            }
            _ => None,
        };
        self.metrics.connections_open.inc();
        Ok(Permit {
            admission: self.clone(),
            ip: counted_ip,
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("open", &self.open())
            .finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let a = &self.admission;
        if let Some(ip) = self.ip {
            let mut map = a.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
        a.open.fetch_sub(1, Ordering::AcqRel);
        a.metrics.connections_open.dec();
    }
}

/// Logs an event kind at most once a minute, whatever number of clients cause it; the
/// events in between are only counted (in their metric) and reported with the next line.
pub struct RateLog {
    start: Instant,
    /// Milliseconds since `start` of the last line, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for RateLog {
    fn default() -> Self {
        RateLog {
            start: Instant::now(),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }
}

const LOG_EVERY: Duration = Duration::from_secs(60);

impl RateLog {
    /// `Some(n)` when a line may be logged now (`n` events were not logged since the
    /// last one); `None` when this one is only counted.
    pub fn ready(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Acquire);
        let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::AcqRel);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, per_ip: Option<usize>) -> Arc<Admission> {
        let limits = ClientLimits {
            max_connections: max,
            max_connections_per_ip: per_ip,
            ..ClientLimits::default()
        };
        Admission::new(&limits, crate::metrics::Metrics::new().edge)
    }

    #[test]
    fn total_limit_refuses_then_frees() {
        let a = admission(2, None);
        let p1 = a.admit(None).unwrap();
        let _p2 = a.admit(None).unwrap();
        assert_eq!(a.admit(None).unwrap_err(), Refusal::MaxConnections);
        drop(p1);
        assert!(a.admit(None).is_ok());
    }

    #[test]
    fn per_ip_limit_counts_each_address() {
        let a = admission(100, Some(1));
        let ip1: IpAddr = "10.0.0.1".parse().unwrap();
        let ip2: IpAddr = "10.0.0.2".parse().unwrap();
        let p = a.admit(Some(ip1)).unwrap();
        assert_eq!(
            a.admit(Some(ip1)).unwrap_err(),
            Refusal::MaxConnectionsPerIp
        );
        assert!(a.admit(Some(ip2)).is_ok());
        assert_eq!(a.open(), 1);
        drop(p);
        assert!(a.admit(Some(ip1)).is_ok());
        assert!(a.per_ip.lock().unwrap().is_empty());
    }

    #[test]
    fn rate_log_lets_one_line_through() {
        let r = RateLog::default();
        assert_eq!(r.ready(), Some(0));
        assert_eq!(r.ready(), None);
        assert_eq!(r.ready(), None);
    }

    #[test]
    fn default_connection_limit_is_below_the_file_limit() {
        assert!(default_max_connections() >= 1);
    }

    #[test]
    fn validation_names_the_key() {
        let mut errs = Errors::new("");
        let raw = RawClientLimits {
            keepalive_requests: Some(0),
            header_timeout: Some("0s".into()),
            max_connections_per_ip: Some(0),
            ..RawClientLimits::default()
        };
        let l = raw.validate(&KeyPath::root().key("server"), &mut errs);
        assert_eq!(l.keepalive_requests, 1000);
        let all = errs.into_errors("t").errors;
        assert_eq!(all.len(), 3, "{all:?}");
    }
}
