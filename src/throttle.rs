//! Rate-limited warnings: a failure that repeats in bursts (every client's retry while a
//! primary is replaced, every tick of a stalled failover) gets one log line per interval.

use std::time::{Duration, Instant};

/// A warning that comes in bursts, logged at most once per interval with how many like it
/// were left out since the last one logged.
pub(crate) struct Throttle {
    last: std::sync::Mutex<Option<Instant>>,
    left_out: std::sync::atomic::AtomicU64,
}

impl Throttle {
    /// A throttle that lets the first line through.
    pub(crate) const fn new() -> Self {
        Self {
            last: std::sync::Mutex::new(None),
            left_out: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(left out since the last one)` if a line is due now, else `None` (counted).
    pub(crate) fn due(&self, every: Duration) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < every) {
            self.left_out.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(Instant::now());
        Some(self.left_out.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_log_a_burst_once_per_interval_with_the_count_left_out() {
        let throttle = Throttle::new();
        let hour = Duration::from_secs(3600);
        assert_eq!(throttle.due(hour), Some(0));
        assert_eq!(throttle.due(hour), None);
        assert_eq!(throttle.due(hour), None);
        // The interval over: due again, with the two left out meanwhile.
        assert_eq!(throttle.due(Duration::ZERO), Some(2));
        assert_eq!(throttle.due(hour), None);
    }
}
