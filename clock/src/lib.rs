//! The time source of arc-node, behind a trait so that code reads the time only through an
//! injected [`Clock`] and tests move time by hand instead of sleeping.
//!
//! - [`Clock`]: the trait; `now` plus the Unix-millisecond and [`SystemTime`] views of it.
//! - [`SystemClock`]: the operating system's wall clock, for production.
//! - `ManualClock` (cargo feature `manual`): a clock that moves only when told to, for tests.
//!
//! This is wall time, which can jump (NTP steps, operators). Code that measures elapsed time
//! for scheduling may keep using the monotonic `Instant`.

#![warn(missing_docs)]

use std::fmt::Debug;
use std::time::SystemTime;

use chrono::{DateTime, Utc};

/// A source of the current wall-clock time, in UTC.
///
/// Shared as `Arc<dyn Clock>`; implementors only provide [`Clock::now`].
pub trait Clock: Debug + Send + Sync + 'static {
    /// Returns the current time.
    fn now(&self) -> DateTime<Utc>;

    /// Returns the current time in whole milliseconds since the Unix epoch (rounded down), or
    /// 0 before 1970.
    fn unix_ms(&self) -> u64 {
        u64::try_from(self.now().timestamp_millis()).unwrap_or(0)
    }

    /// Returns the current time as a [`SystemTime`].
    fn system_time(&self) -> SystemTime {
        SystemTime::from(self.now())
    }
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[cfg(any(test, feature = "manual"))]
pub use manual::ManualClock;

#[cfg(any(test, feature = "manual"))]
mod manual {
    use std::sync::{Mutex, MutexGuard, PoisonError};
    use std::time::Duration;

    use chrono::{DateTime, TimeDelta, Utc};

    use super::Clock;

    /// A clock that stands still until moved with [`ManualClock::advance`] or
    /// [`ManualClock::set`] (tests only; cargo feature `manual`).
    ///
    /// Share it as `Arc<ManualClock>` and hand the code under test a clone as `Arc<dyn Clock>`.
    #[derive(Debug)]
    pub struct ManualClock {
        now: Mutex<DateTime<Utc>>,
    }

    impl ManualClock {
        /// Returns a clock standing at `start`.
        pub fn new(start: DateTime<Utc>) -> Self {
            Self {
                now: Mutex::new(start),
            }
        }

        /// Moves the clock forward by `step`.
        ///
        /// # Panics
        ///
        /// If `step` or the resulting time is out of chrono's range (hundreds of thousands of
        /// years).
        pub fn advance(&self, step: Duration) {
            let step = TimeDelta::from_std(step).expect("manual clock step fits a TimeDelta");
            let mut now = self.lock();
            *now = now
                .checked_add_signed(step)
                .expect("manual clock stays within chrono's range");
        }

        /// Puts the clock at `at`, forwards or backwards.
        pub fn set(&self, at: DateTime<Utc>) {
            *self.lock() = at;
        }

        fn lock(&self) -> MutexGuard<'_, DateTime<Utc>> {
            // Holds a plain value: a panic while it was locked can't leave it half-written.
            self.now.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            *self.lock()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at_ms(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn test_should_read_the_system_clock() {
        let before = SystemTime::now();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let read = clock.system_time();
        let after = SystemTime::now();
        assert!(before <= read && read <= after);
        let ms = clock.unix_ms();
        let after_ms = after.duration_since(UNIX_EPOCH).unwrap().as_millis();
        assert!(u128::from(ms) <= after_ms + 1 && u128::from(ms) + 60_000 > after_ms);
    }

    /// A clock fixed at one time, to test the provided methods on a foreign implementation.
    #[derive(Debug)]
    struct Fixed(DateTime<Utc>);

    impl Clock for Fixed {
        fn now(&self) -> DateTime<Utc> {
            self.0
        }
    }

    #[test]
    fn test_should_derive_unix_ms_and_system_time_from_now() {
        let clock = Fixed(at_ms(1_767_225_600_123) + chrono::TimeDelta::microseconds(999));
        assert_eq!(clock.unix_ms(), 1_767_225_600_123);
        assert_eq!(
            clock.system_time(),
            UNIX_EPOCH + Duration::from_micros(1_767_225_600_123_999)
        );
        assert_eq!(Fixed(at_ms(0)).unix_ms(), 0);
        // Before 1970: clamped to 0 in milliseconds, exact as a SystemTime.
        let before_epoch = Fixed(at_ms(-1_500));
        assert_eq!(before_epoch.unix_ms(), 0);
        assert_eq!(
            before_epoch.system_time(),
            UNIX_EPOCH - Duration::from_millis(1_500)
        );
    }

    #[test]
    fn test_should_move_the_manual_clock_only_when_told() {
        let clock = Arc::new(ManualClock::new(at_ms(1_000)));
        let shared: Arc<dyn Clock> = clock.clone();
        assert_eq!(shared.unix_ms(), 1_000);
        assert_eq!(shared.unix_ms(), 1_000);

        clock.advance(Duration::from_millis(1_500));
        assert_eq!(shared.now(), at_ms(2_500));
        clock.advance(Duration::ZERO);
        assert_eq!(shared.unix_ms(), 2_500);

        // `set` goes anywhere, backwards included.
        clock.set(at_ms(500));
        assert_eq!(shared.unix_ms(), 500);
        clock.set(at_ms(86_400_000));
        assert_eq!(
            shared.system_time(),
            UNIX_EPOCH + Duration::from_secs(86_400)
        );
    }

    #[test]
    #[should_panic(expected = "manual clock")]
    fn test_should_panic_when_advanced_out_of_range() {
        let clock = ManualClock::new(DateTime::<Utc>::MAX_UTC - chrono::TimeDelta::seconds(1));
        clock.advance(Duration::from_secs(2));
    }
}
