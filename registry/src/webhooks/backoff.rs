//! When a failed delivery is tried again: exponential backoff with full jitter.

use std::time::Duration;

/// The delay before attempt `failed_attempts + 1`: a uniformly random duration between zero and
/// `min(cap, base · 2^(failed_attempts − 1))`.
///
/// Full jitter (rather than a fixed exponential schedule) spreads the retries of many deliveries
/// that failed together — a receiver that was down for a minute — so they do not hit it again in
/// one burst. `unit` is a uniform sample from `[0, 1]`, passed in so the schedule is testable.
pub fn retry_delay(base: Duration, cap: Duration, failed_attempts: u32, unit: f64) -> Duration {
    // Past 2^62 the ceiling is the cap anyway; the bound keeps the power finite.
    let exponent = failed_attempts.saturating_sub(1).min(62);
    let ceiling = Duration::try_from_secs_f64(base.as_secs_f64() * 2f64.powi(exponent as i32))
        .unwrap_or(cap)
        .min(cap);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// [`retry_delay`] with a random sample.
pub fn random_retry_delay(base: Duration, cap: Duration, failed_attempts: u32) -> Duration {
    retry_delay(
        base,
        cap,
        failed_attempts,
        rand::Rng::random::<f64>(&mut rand::rng()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(1);
    const CAP: Duration = Duration::from_secs(300);

    #[test]
    fn the_ceiling_doubles_per_failure_up_to_the_cap() {
        let ceilings: Vec<u64> = (1..=12)
            .map(|n| retry_delay(BASE, CAP, n, 1.0).as_secs())
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn jitter_spans_zero_to_the_ceiling() {
        assert_eq!(retry_delay(BASE, CAP, 4, 0.0), Duration::ZERO);
        assert_eq!(retry_delay(BASE, CAP, 4, 0.5), Duration::from_secs(4));
        assert_eq!(retry_delay(BASE, CAP, 4, 7.0), Duration::from_secs(8));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        assert_eq!(retry_delay(BASE, CAP, u32::MAX, 1.0), CAP);
        assert_eq!(retry_delay(CAP, CAP, 40, 1.0), CAP);
    }

    #[test]
    fn random_delays_stay_within_the_ceiling() {
        for _ in 0..1000 {
            assert!(random_retry_delay(BASE, CAP, 3) <= Duration::from_secs(4));
        }
    }
}
