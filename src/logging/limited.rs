//! Log lines a client can cause, at a bounded rate: the first event of a kind is logged,
//! later ones within the interval only counted, and the next line that gets through says
//! how many were suppressed. A client repeating a bad request cannot decide the log volume.
//!
//! ```ignore
//! channelgate::client_warn!("inbound_refused", channel = %c, status = s, "the app refused an inbound frame");
//! ```
//! The kind must be a `&'static str` (a bounded set, like a metric label); it is logged as
//! the field `kind`, with `suppressed` the number of events of that kind not logged since
//! the previous line.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often one kind of client-caused event is logged at most, by [`client_warn!`].
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Decides which events of each kind are logged: one per interval per kind.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    kinds: Mutex<HashMap<&'static str, Slot>>,
}

#[derive(Debug)]
struct Slot {
    logged_at: Instant,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` when this event should be logged, `n` being the events of `kind` not
    /// logged since the last line; `None` when it should only be counted.
    pub fn admit(&self, kind: &'static str) -> Option<u64> {
        self.admit_at(kind, Instant::now())
    }

    fn admit_at(&self, kind: &'static str, now: Instant) -> Option<u64> {
        // A poisoned lock only means another thread panicked while holding it; the map
        // is still consistent (every update is a single assignment).
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        match kinds.get_mut(kind) {
            Some(slot) if now.duration_since(slot.logged_at) < self.interval => {
                slot.suppressed += 1;
                None
            }
            Some(slot) => {
                let n = std::mem::take(&mut slot.suppressed);
                slot.logged_at = now;
                Some(n)
            }
            None => {
                kinds.insert(
                    kind,
                    Slot {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// The process-wide limiter [`client_warn!`] uses.
pub fn global() -> &'static LogLimiter {
    static LIMITER: OnceLock<LogLimiter> = OnceLock::new();
    LIMITER.get_or_init(|| LogLimiter::new(INTERVAL))
}

/// `tracing::warn!` at most once per [`INTERVAL`] per kind, with fields `kind` and
/// `suppressed`. Use it for every warning a client can trigger at will.
#[macro_export]
macro_rules! client_warn {
    ($kind:expr, $($rest:tt)+) => {
        if let Some(suppressed) = $crate::logging::limited::global().admit($kind) {
            ::tracing::warn!(kind = $kind, suppressed, $($rest)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_interval_with_the_count() {
        let l = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.admit_at("a", t0), Some(0));
        assert_eq!(l.admit_at("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(l.admit_at("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(l.admit_at("b", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(l.admit_at("a", t0 + Duration::from_secs(11)), Some(2));
        assert_eq!(l.admit_at("a", t0 + Duration::from_secs(12)), None);
    }

    #[test]
    fn macro_compiles_with_fields() {
        let code = 7;
        crate::client_warn!("test_kind", code, detail = %"x", "a client did something");
        crate::client_warn!("test_kind", "again");
    }
}
