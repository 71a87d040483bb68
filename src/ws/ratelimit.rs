//! Inbound rate limits per connection (`inbound_rate`, `inbound_burst`): a token bucket
//! like nginx's `limit_req rate=20r/s burst=40 nodelay`, but per WebSocket connection and
//! counting messages (text and binary) rather than requests.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// A sustained rate: `count` messages per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// Parses "20/s", "600/m", "3600/h" (also "/sec", "/min", "/hour").
    pub fn parse(raw: &str) -> Result<Rate, String> {
        let bad =
            || format!("`{raw}` is not a rate; write it like \"20/s\", \"600/m\" or \"3600/h\"");
        let (n, unit) = raw.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" => Duration::from_secs(1),
            "m" | "min" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!("`{raw}`: the rate must be at least 1 per period"));
        }
        Ok(Rate { count, per })
    }

    fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// One connection's bucket: holds up to `burst` tokens, refilled at `rate`; each message
/// takes one. 24 bytes, so it costs idle connections next to nothing.
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    per_second: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: Rate, burst: u32, now: Instant) -> Bucket {
        let burst = f64::from(burst.max(1));
        Bucket {
            tokens: burst,
            per_second: rate.per_second(),
            burst,
            last: now,
        }
    }

    /// Takes a token for one message; false when the client is over its rate.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        let r = Rate::parse("20/s").unwrap();
        assert_eq!((r.count, r.per), (20, Duration::from_secs(1)));
        assert_eq!(r.to_string(), "20/s");
        assert_eq!(Rate::parse("600 / min").unwrap().to_string(), "600/m");
        assert_eq!(Rate::parse("10/h").unwrap().per, Duration::from_secs(3600));
        for bad in ["20", "x/s", "20/fortnight", "0/s", "-1/s", ""] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Rate::parse("20/s").unwrap(), 40, t0);
        // 50,000 messages in one write: the burst passes, nothing more.
        let passed = (0..50_000).filter(|_| b.take(t0)).count();
        assert_eq!(passed, 40);
        // A second later, 20 more.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| b.take(t1)).count(), 20);
        // Half a second: 10.
        let t2 = t1 + Duration::from_millis(500);
        assert_eq!((0..100).filter(|_| b.take(t2)).count(), 10);
        // A long pause refills to the burst, not beyond.
        let t3 = t2 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.take(t3)).count(), 40);
    }

    #[test]
    fn slow_rates_and_a_burst_of_one() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Rate::parse("60/m").unwrap(), 1, t0);
        assert!(b.take(t0));
        assert!(!b.take(t0 + Duration::from_millis(500)));
        assert!(b.take(t0 + Duration::from_millis(1000)));
    }
}
