//! The time source, behind a trait so tests drive expiry and cache ageing by hand instead of
//! sleeping.
//!
//! One clock serves both purposes: token expiry (wall time, compared with `expires_at` written
//! by other nodes) and cache age. If the wall clock steps backwards, the cache simply counts as
//! stale and reloads.

use std::fmt::Debug;

use chrono::{DateTime, Utc};

/// A source of the current UTC time.
pub trait Clock: Debug + Send + Sync + 'static {
    /// Returns the current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[cfg(any(test, feature = "testsuite"))]
pub use manual::ManualClock;

#[cfg(any(test, feature = "testsuite"))]
mod manual {
    use std::sync::Mutex;
    use std::time::Duration;

    use chrono::{DateTime, Utc};

    use super::Clock;

    /// A clock that only moves when told to (tests only).
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
        pub fn advance(&self, step: Duration) {
            let step = chrono::TimeDelta::from_std(step).expect("test step fits a TimeDelta");
            let mut now = self.now.lock().expect("manual clock lock poisoned");
            *now += step;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            *self.now.lock().expect("manual clock lock poisoned")
        }
    }
}
