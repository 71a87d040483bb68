//! When to renew, and how long to wait after a failure.
//!
//! - A certificate is renewed `renew_before` ahead of its expiry. When `renew_before` is not
//!   shorter than the certificate's whole lifetime (short-lived certificates, or a large
//!   setting), it is renewed after two thirds of its lifetime instead, so a renewal never
//!   starts again as soon as the previous one ended.
//! - After a failed attempt the next one waits 1 min, then 2, 4, 8 ... up to 6 h (±10 %
//!   jitter so that instances restarted together do not order in step). The current
//!   certificate keeps being served meanwhile; a success resets the delay.

use std::time::{Duration, SystemTime};

/// The first retry delay after a failure.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(60);
/// The longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(6 * 3600);
/// How often an instance that does not hold the lock looks at state_dir for the
/// certificate the holder obtains.
pub const LOCK_RETRY: Duration = Duration::from_secs(10);
/// The longest sleep between two looks at state_dir, even when the renewal is far away:
/// picks up a certificate another instance renewed early, and copes with clock jumps.
pub const RECHECK_MAX: Duration = Duration::from_secs(3600);

/// The moment a certificate valid from `not_before` to `not_after` is due for renewal.
pub fn renew_at(
    not_before: SystemTime,
    not_after: SystemTime,
    renew_before: Duration,
) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    if renew_before < lifetime {
        not_after - renew_before
    } else {
        not_before + lifetime * 2 / 3
    }
}

/// The delay before attempt number `failures + 1`, `failures` ≥ 1, with `jitter` in
/// [-1, 1] scaling ±10 %.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let base = BACKOFF_FIRST.saturating_mul(1u32 << exp).min(BACKOFF_MAX);
    let factor = 1.0 + 0.1 * jitter.clamp(-1.0, 1.0);
    base.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86400);

    #[test]
    fn renews_renew_before_ahead_of_expiry() {
        let nb = SystemTime::UNIX_EPOCH + DAY;
        let na = nb + 90 * DAY;
        assert_eq!(renew_at(nb, na, 30 * DAY), na - 30 * DAY);
    }

    #[test]
    fn short_lifetimes_renew_after_two_thirds() {
        let nb = SystemTime::UNIX_EPOCH + DAY;
        let na = nb + Duration::from_secs(30);
        assert_eq!(renew_at(nb, na, 30 * DAY), nb + Duration::from_secs(20));
        assert_eq!(
            renew_at(nb, na, Duration::from_secs(30)),
            nb + Duration::from_secs(20)
        );
        // A broken certificate (expires before it starts) is due at once, not in a panic.
        assert_eq!(renew_at(na, nb, DAY), na);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1, 0.0), BACKOFF_FIRST);
        assert_eq!(backoff(2, 0.0), 2 * BACKOFF_FIRST);
        assert_eq!(backoff(4, 0.0), 8 * BACKOFF_FIRST);
        assert_eq!(backoff(30, 0.0), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX, 1.0), BACKOFF_MAX.mul_f64(1.1));
        assert_eq!(backoff(1, -5.0), BACKOFF_FIRST.mul_f64(0.9));
    }
}
